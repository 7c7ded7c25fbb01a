//! The response body of the HTTP modes, which can keep the lock until it has been sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use dflockd_core::{Guard, Lost};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tracing::Span;

use crate::Error;
use crate::reject::{GrpcCode, add_grpc_status};

/// The error type of [`GuardedBody`]: the inner body's error, boxed, or an [`Error`] when
/// the lease was lost while the body was being sent.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A lock kept until the response body has been sent; dropping it releases the lock in the
/// background.
pub(crate) struct Hold {
    guard: Guard,
    /// Polled to cut the body short when the lease is lost; `None` to only record the loss.
    lost: Option<Lost>,
    span: Span,
    /// End a cut-short body with `grpc-status` trailers rather than an error.
    grpc: bool,
    /// The loss was acted upon already.
    reported: bool,
}

impl Hold {
    pub(crate) fn new(guard: Guard, abort_on_loss: bool, grpc: bool, span: Span) -> Self {
        let lost = abort_on_loss.then(|| guard.lost());
        Hold {
            guard,
            lost,
            span,
            grpc,
            reported: false,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        let _enter = self.span.enter();
        match self.guard.loss_reason() {
            Some(reason) => {
                tracing::warn!(key = self.guard.key(), %reason, "lease lost while the response was sent; finished anyway");
                self.span.record("outcome", "completed_lease_lost");
            }
            None => tracing::debug!(key = self.guard.key(), "released after the body"),
        }
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("key", &self.guard.key())
            .finish()
    }
}

pin_project! {
    /// The response body of the HTTP and gRPC modes: the inner service's body, or the body of
    /// a rejection.
    ///
    /// With [`hold_for_body`](crate::LockLayer::hold_for_body) it owns the lock until the body
    /// ends (its last frame was read, or it reports end of stream) or is dropped (the client
    /// went away). If the lease is lost meanwhile, the body ends with an [`Error::LeaseLost`]
    /// error (the connection or stream is reset) or, in the gRPC mode, with `grpc-status:
    /// 14` (`unavailable`) trailers, unless the layer lets requests
    /// [finish](crate::OnLeaseLoss::Finish).
    pub struct GuardedBody<B> {
        #[pin]
        inner: Option<B>,
        fixed: Option<Bytes>,
        hold: Option<Hold>,
        failed: bool,
    }
}

impl<B> fmt::Debug for GuardedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("rejection", &self.inner.is_none())
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

impl<B> GuardedBody<B> {
    pub(crate) fn new(body: B, hold: Option<Hold>) -> Self {
        GuardedBody {
            inner: Some(body),
            fixed: None,
            hold,
            failed: false,
        }
    }

    pub(crate) fn fixed(bytes: Bytes) -> Self {
        GuardedBody {
            inner: None,
            fixed: Some(bytes).filter(|b| !b.is_empty()),
            hold: None,
            failed: false,
        }
    }

    /// Whether the body still holds a lock.
    #[must_use]
    pub fn holds_lock(&self) -> bool {
        self.hold.is_some()
    }
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        if let Some(hold) = this.hold.as_mut() {
            if let Some(lost) = hold.lost.as_mut() {
                if let Poll::Ready(reason) = Pin::new(lost).poll(cx) {
                    let mut hold = this.hold.take().expect("checked above");
                    // Stop the inner body before the lock goes.
                    this.inner.set(None);
                    *this.failed = true;
                    hold.reported = true;
                    let key = hold.guard.key().to_owned();
                    {
                        let _enter = hold.span.enter();
                        tracing::warn!(%key, %reason, "lease lost while the response was sent; body cut short");
                        hold.span.record("outcome", "lease_lost");
                    }
                    let grpc = hold.grpc;
                    drop(hold);
                    let error = Error::LeaseLost { key, reason };
                    if grpc {
                        let mut trailers = http::HeaderMap::new();
                        add_grpc_status(&mut trailers, GrpcCode::Unavailable, &error.to_string());
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
            }
        }
        let Some(mut body) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(this.fixed.take().map(|b| Ok(Frame::data(b))));
        };
        let polled = body.as_mut().poll_frame(cx);
        let end = match &polled {
            Poll::Pending => false,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || body.is_end_stream(),
            Poll::Ready(None | Some(Err(_))) => true,
        };
        if end {
            // Releases in the background.
            this.hold.take();
        }
        polled.map(|frame| frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        if self.failed {
            return true;
        }
        match &self.inner {
            Some(body) => body.is_end_stream(),
            None => self.fixed.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.fixed) {
            (Some(body), _) => body.size_hint(),
            (None, Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn rejection_bodies() {
        let empty = GuardedBody::<Full<Bytes>>::fixed(Bytes::new());
        assert!(
            empty.is_end_stream(),
            "a trailers-only gRPC answer has no body"
        );
        assert_eq!(empty.size_hint().exact(), Some(0));

        let text = GuardedBody::<Full<Bytes>>::fixed(Bytes::from_static(b"busy\n"));
        assert!(!text.is_end_stream());
        assert_eq!(text.size_hint().exact(), Some(5));
        assert_eq!(&text.collect().await.unwrap().to_bytes()[..], b"busy\n");
    }

    #[tokio::test]
    async fn inner_bodies_pass_through() {
        let body = GuardedBody::new(Full::new(Bytes::from_static(b"hello")), None);
        assert!(!body.holds_lock());
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
    }
}
