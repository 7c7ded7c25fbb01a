//! The response futures: a small state machine (acquiring → calling with the guard held →
//! done), and its two faces, HTTP responses and typed errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use dflockd_core::{Guard, Lost};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;
use tracing::Span;

use super::acquire::{AcquireFuture, Acquired};
use crate::Error;
use crate::body::{GuardedBody, Hold};
use crate::observe::Meter;
use crate::reject::RejectResponse;

/// The release of a guard whose request is complete.
type ReleaseFuture = Pin<Box<dyn Future<Output = dflockd_core::Result<()>> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F, O> {
        Acquiring {
            acquire: AcquireFuture,
            service: S,
            request: Option<Req>,
            started: Instant,
        },
        Calling {
            // Declared before the guard: on loss the inner future is dropped first.
            #[pin]
            future: F,
            guard: Option<Guard>,
            lost: Option<Lost>,
        },
        // The inner service is done; the response waits for the release, so that a client
        // that sends its next request on seeing this response finds the key free.
        Releasing {
            release: ReleaseFuture,
            output: Option<O>,
        },
        Rejected {
            error: Option<Error>,
        },
        Done,
    }
}

/// How a request ended, before the mode decides what the client sees.
pub(crate) enum Step<R, E> {
    /// The inner service answered; `Some` when the lock goes on with the body.
    Response(R, Option<Hold>),
    /// Not let through, or cut short.
    Rejected(Error),
    /// The inner service failed.
    Failed(E),
}

/// Per-request options the machine needs after `call`.
#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) abort_on_loss: bool,
    pub(crate) hold_for_body: bool,
    pub(crate) grpc: bool,
    /// What records the request's rejection (or its running unguarded) in the metrics.
    pub(crate) meter: Meter,
}

pin_project! {
    pub(crate) struct Machine<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future, Result<S::Response, S::Error>>,
        key: String,
        options: Options,
        span: Span,
        on_acquired: fn(&mut Req, &Guard),
    }
}

impl<S: Service<Req>, Req> Machine<S, Req> {
    /// Acquire first, then call `service` (which is ready) with `request`.
    pub(crate) fn acquire(
        acquire: AcquireFuture,
        key: String,
        service: S,
        request: Req,
        options: Options,
        span: Span,
        on_acquired: fn(&mut Req, &Guard),
    ) -> Self {
        Machine {
            state: State::Acquiring {
                acquire,
                service,
                request: Some(request),
                started: Instant::now(),
            },
            key,
            options,
            span,
            on_acquired,
        }
    }

    /// No lock: the inner call runs as it is.
    pub(crate) fn pass(future: S::Future) -> Self {
        Machine {
            state: State::Calling {
                future,
                guard: None,
                lost: None,
            },
            ..Self::shell()
        }
    }

    /// Rejected before anything was sent.
    pub(crate) fn reject(error: Error) -> Self {
        Machine {
            state: State::Rejected { error: Some(error) },
            ..Self::shell()
        }
    }

    fn shell() -> Self {
        Machine {
            state: State::Done,
            key: String::new(),
            options: Options {
                abort_on_loss: false,
                hold_for_body: false,
                grpc: false,
                meter: Meter::default(),
            },
            span: Span::none(),
            on_acquired: |_, _| {},
        }
    }

    pub(crate) fn poll_step(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Step<S::Response, S::Error>> {
        let mut this = self.project();
        let _enter = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring {
                    acquire,
                    service,
                    request,
                    started,
                } => {
                    let acquired = ready!(acquire.as_mut().poll(cx));
                    let waited = started.elapsed();
                    this.span.record("wait_ms", millis(waited));
                    let guard = match acquired {
                        Ok(Acquired::Held(guard)) => guard,
                        Ok(Acquired::Unguarded) => {
                            this.options.meter.unguarded(true);
                            this.span.record("outcome", "failed_open");
                            let request = request.take().expect("request taken twice");
                            let future = service.call(request);
                            this.state.set(State::Calling {
                                future,
                                guard: None,
                                lost: None,
                            });
                            continue;
                        }
                        Err(failure) => {
                            let key = std::mem::take(this.key);
                            let error = match failure {
                                None => Error::Busy { key, waited },
                                Some(e) => Error::from_acquire(key, waited, e),
                            };
                            record_rejection(this.span, &error);
                            this.options.meter.rejected(&error);
                            this.state.set(State::Done);
                            return Poll::Ready(Step::Rejected(error));
                        }
                    };
                    let mut request = request.take().expect("request taken twice");
                    (this.on_acquired)(&mut request, &guard);
                    if let Some(fence) = guard.fence() {
                        this.span.record("fence", fence);
                    }
                    tracing::debug!(
                        fence = guard.fence(),
                        waited_ms = millis(waited),
                        "acquired"
                    );
                    let future = service.call(request);
                    let lost = this.options.abort_on_loss.then(|| guard.lost());
                    this.state.set(State::Calling {
                        future,
                        guard: Some(guard),
                        lost,
                    });
                }
                StateProj::Calling {
                    future,
                    guard,
                    lost,
                } => {
                    if let Some(lost) = lost {
                        if let Poll::Ready(reason) = Pin::new(lost).poll(cx) {
                            // Drops the inner future, then releases what is left of the lock.
                            this.state.set(State::Done);
                            tracing::warn!(key = %this.key, %reason, "lease lost during the request; request dropped");
                            this.span.record("outcome", "lease_lost");
                            let error = Error::LeaseLost {
                                key: std::mem::take(this.key),
                                reason,
                            };
                            this.options.meter.rejected(&error);
                            return Poll::Ready(Step::Rejected(error));
                        }
                    }
                    let output = ready!(future.poll(cx));
                    let guard = guard.take();
                    this.state.set(State::Done);
                    let Some(guard) = guard else {
                        // Not locked: passed through.
                        return Poll::Ready(self::output(output));
                    };
                    match output {
                        Ok(response) if this.options.hold_for_body => {
                            this.span.record("outcome", "response");
                            let hold = Hold::new(
                                guard,
                                this.options.abort_on_loss,
                                this.options.grpc,
                                this.span.clone(),
                            );
                            return Poll::Ready(Step::Response(response, Some(hold)));
                        }
                        output => {
                            if let Some(reason) = guard.loss_reason() {
                                // Only with `OnLeaseLoss::Finish`: nothing left to release.
                                tracing::warn!(key = %this.key, %reason, "lease lost during the request; finished anyway");
                                this.span.record("outcome", "completed_lease_lost");
                                return Poll::Ready(self::output(output));
                            }
                            this.state.set(State::Releasing {
                                release: Box::pin(guard.release()),
                                output: Some(output),
                            });
                        }
                    }
                }
                StateProj::Releasing { release, output } => {
                    let released = ready!(release.as_mut().poll(cx));
                    let output = output.take().expect("polled after completion");
                    this.state.set(State::Done);
                    let outcome = match (&output, released) {
                        (_, Err(e)) if e.is_lease_lost() => {
                            tracing::warn!(key = %this.key, error = %e, "lease lost during the request; finished anyway");
                            "completed_lease_lost"
                        }
                        (output, Err(e)) => {
                            // The lease ends with the guard anyway; nothing to undo.
                            tracing::debug!(key = %this.key, error = %e, "release failed");
                            if output.is_ok() {
                                "completed"
                            } else {
                                "inner_error"
                            }
                        }
                        (Ok(_), Ok(())) => "completed",
                        (Err(_), Ok(())) => "inner_error",
                    };
                    this.span.record("outcome", outcome);
                    return Poll::Ready(self::output(output));
                }
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Step::Rejected(error));
                }
                StateProj::Done => panic!("response future polled after completion"),
            }
        }
    }
}

fn output<R, E>(output: Result<R, E>) -> Step<R, E> {
    match output {
        Ok(response) => Step::Response(response, None),
        Err(error) => Step::Failed(error),
    }
}

fn record_rejection(span: &Span, error: &Error) {
    let outcome = match error {
        Error::Busy { .. } => "busy",
        Error::Unavailable { .. } => "unavailable",
        Error::InvalidKey { .. } => "invalid_key",
        _ => "config",
    };
    span.record("outcome", outcome);
    match error {
        Error::Busy { .. } => tracing::debug!(%error, "rejected"),
        _ => {
            tracing::warn!(error = %error, source = ?std::error::Error::source(error).map(ToString::to_string), "rejected")
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pin_project! {
    /// Response future of [`LockService`](crate::LockService) in the HTTP and gRPC modes.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        machine: Machine<S, Request<ReqBody>>,
        reject: Arc<RejectResponse>,
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn new(machine: Machine<S, Request<ReqBody>>, reject: Arc<RejectResponse>) -> Self {
        ResponseFuture { machine, reject }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("key", &self.machine.key)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<GuardedBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.machine.poll_step(cx)) {
            Step::Response(response, hold) => Ok(response.map(|body| GuardedBody::new(body, hold))),
            Step::Rejected(error) => Ok(this.reject.respond(&error).map(GuardedBody::fixed)),
            Step::Failed(error) => Err(error),
        })
    }
}

pin_project! {
    /// Response future of [`LockService`](crate::LockService) in the typed-error mode.
    pub struct ErrorFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        machine: Machine<S, Req>,
    }
}

impl<S: Service<Req>, Req> ErrorFuture<S, Req> {
    pub(crate) fn new(machine: Machine<S, Req>) -> Self {
        ErrorFuture { machine }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ErrorFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorFuture")
            .field("key", &self.machine.key)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Future for ErrorFuture<S, Req>
where
    S: Service<Req>,
    S::Error: From<Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().machine.poll_step(cx)) {
            // No body to hold in this mode: the guard is gone already.
            Step::Response(response, _) => Ok(response),
            Step::Rejected(error) => Err(error.into()),
            Step::Failed(error) => Err(error),
        })
    }
}
