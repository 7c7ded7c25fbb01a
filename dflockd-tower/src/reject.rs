//! How a rejection reaches the client: an HTTP response, a gRPC status, or a typed error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::Error;

/// A closure that turns a rejection into a response (see
/// [`reject_with`](crate::LockLayer::reject_with)).
pub(crate) type Custom = Arc<dyn Fn(&Error) -> Response<Bytes> + Send + Sync>;

/// Rejections are responses (the default mode): the service keeps the inner service's error
/// type, so it composes with axum routers and tonic servers whose error is `Infallible`.
///
/// Plain HTTP by default:
///
/// | [`Error`] | status | `Retry-After` |
/// |---|---|---|
/// | [`Busy`](Error::Busy) | 503, or [`busy_status`](crate::LockLayer::busy_status) | yes |
/// | [`Unavailable`](Error::Unavailable) | 503, or [`unavailable_status`](crate::LockLayer::unavailable_status) | yes |
/// | [`LeaseLost`](Error::LeaseLost) | as unavailable | yes |
/// | [`KeyNotInRequest`](Error::KeyNotInRequest), [`InvalidKey`](Error::InvalidKey) | 400 | no |
/// | [`MissingKey`](Error::MissingKey), [`Config`](Error::Config) | 500 | no |
///
/// The body is the error's message as `text/plain`. With [`grpc`](crate::LockLayer::grpc)
/// the rejection is a gRPC "trailers-only" response instead (HTTP 200, `content-type:
/// application/grpc`, `grpc-status` and `grpc-message` headers), which tonic clients read as
/// a `Status`: busy is [`GrpcCode::ResourceExhausted`] (or
/// [`grpc_busy_code`](crate::LockLayer::grpc_busy_code)), unavailable and lease lost
/// [`GrpcCode::Unavailable`], client errors [`GrpcCode::InvalidArgument`], configuration
/// errors (a missing key among them) [`GrpcCode::Internal`]. [`reject_with`](crate::LockLayer::reject_with) replaces
/// all of this with a closure.
#[derive(Clone)]
pub struct RejectResponse {
    pub(crate) grpc: bool,
    pub(crate) busy_status: StatusCode,
    pub(crate) unavailable_status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) grpc_busy: GrpcCode,
    pub(crate) custom: Option<Custom>,
}

impl Default for RejectResponse {
    fn default() -> Self {
        RejectResponse {
            grpc: false,
            busy_status: StatusCode::SERVICE_UNAVAILABLE,
            unavailable_status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: Some(Duration::from_secs(1)),
            grpc_busy: GrpcCode::ResourceExhausted,
            custom: None,
        }
    }
}

impl fmt::Debug for RejectResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectResponse")
            .field("grpc", &self.grpc)
            .field("busy_status", &self.busy_status)
            .field("unavailable_status", &self.unavailable_status)
            .field("retry_after", &self.retry_after)
            .field("grpc_busy", &self.grpc_busy)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl RejectResponse {
    /// The response for `error`.
    pub(crate) fn respond(&self, error: &Error) -> Response<Bytes> {
        if let Some(custom) = &self.custom {
            return custom(error);
        }
        if self.grpc {
            return grpc_response(self.grpc_code(error), &error.to_string());
        }
        let (status, retry) = match error {
            Error::Busy { .. } => (self.busy_status, true),
            Error::Unavailable { .. } | Error::LeaseLost { .. } => (self.unavailable_status, true),
            Error::KeyNotInRequest { .. } | Error::InvalidKey { .. } => {
                (StatusCode::BAD_REQUEST, false)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, false),
        };
        let mut response = Response::new(Bytes::from(format!("{error}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(after) = self.retry_after.filter(|_| retry) {
            headers.insert(header::RETRY_AFTER, retry_after_value(after));
        }
        response
    }

    fn grpc_code(&self, error: &Error) -> GrpcCode {
        match error {
            Error::Busy { .. } => self.grpc_busy,
            Error::Unavailable { .. } | Error::LeaseLost { .. } => GrpcCode::Unavailable,
            Error::KeyNotInRequest { .. } | Error::InvalidKey { .. } => GrpcCode::InvalidArgument,
            _ => GrpcCode::Internal,
        }
    }
}

/// Rejections are errors (the typed mode, [`typed_errors`](crate::LockLayer::typed_errors)):
/// the service's error type is the inner service's, which must implement `From<Error>`
/// (`tower::BoxError` does).
#[derive(Clone, Copy, Debug, Default)]
pub struct RejectError;

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

/// A gRPC status code, as carried in `grpc-status`.
///
/// The codes a rejection can sensibly carry; tonic's `Code` has the same numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 1: the operation was cancelled.
    Cancelled,
    /// 3: the client specified an invalid argument.
    InvalidArgument,
    /// 4: the deadline expired before the operation could complete.
    DeadlineExceeded,
    /// 7: the caller may not execute the operation.
    PermissionDenied,
    /// 8: a resource (a quota, a slot) is exhausted.
    ResourceExhausted,
    /// 9: the system is not in a state required for the operation.
    FailedPrecondition,
    /// 10: the operation was aborted, typically by a concurrency conflict.
    Aborted,
    /// 13: an internal error.
    Internal,
    /// 14: the service is currently unavailable; retrying may succeed.
    Unavailable,
}

impl GrpcCode {
    /// The numeric code.
    #[must_use]
    pub fn as_i32(self) -> i32 {
        match self {
            GrpcCode::Cancelled => 1,
            GrpcCode::InvalidArgument => 3,
            GrpcCode::DeadlineExceeded => 4,
            GrpcCode::PermissionDenied => 7,
            GrpcCode::ResourceExhausted => 8,
            GrpcCode::FailedPrecondition => 9,
            GrpcCode::Aborted => 10,
            GrpcCode::Internal => 13,
            GrpcCode::Unavailable => 14,
        }
    }
}

/// A gRPC "trailers-only" response: the status travels in the headers and the body is empty.
pub(crate) fn grpc_response(code: GrpcCode, message: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    add_grpc_status(headers, code, message);
    response
}

/// Adds `grpc-status` and `grpc-message` (to response headers or trailers).
pub(crate) fn add_grpc_status(headers: &mut HeaderMap, code: GrpcCode, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(code.as_i32()));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
}

/// Percent-encodes `grpc-message` as the gRPC spec asks: everything outside printable ASCII,
/// and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> Error {
        Error::Busy {
            key: "order:1".into(),
            waited: Duration::ZERO,
        }
    }

    #[test]
    fn http_defaults() {
        let r = RejectResponse::default();
        let resp = r.respond(&busy());
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert!(std::str::from_utf8(resp.body()).unwrap().contains("busy"));
        let layer = || "order:{id}".to_owned();
        let resp = r.respond(&Error::KeyNotInRequest { layer: layer() });
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        let resp = r.respond(&Error::MissingKey { layer: layer() });
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
        assert!(
            std::str::from_utf8(resp.body())
                .unwrap()
                .contains("order:{id}")
        );
        let config = Error::Config {
            source: dflockd_core::proto::InvalidInput::ZeroLimit.into(),
        };
        assert_eq!(
            r.respond(&config).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::from_secs(30)), "30");
    }

    #[test]
    fn grpc_trailers_only() {
        let r = RejectResponse {
            grpc: true,
            ..RejectResponse::default()
        };
        let resp = r.respond(&busy());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert!(resp.body().is_empty());
        let lost = Error::LeaseLost {
            key: "k".into(),
            reason: dflockd_core::LossReason::ConnectionLost,
        };
        assert_eq!(r.respond(&lost).headers()["grpc-status"], "14");
        let missing = Error::MissingKey { layer: "l".into() };
        assert_eq!(r.respond(&missing).headers()["grpc-status"], "13");
        let not_sent = Error::KeyNotInRequest { layer: "l".into() };
        assert_eq!(r.respond(&not_sent).headers()["grpc-status"], "3");
        assert_eq!(percent_encode("a%b é\n"), "a%25b %C3%A9%0A");
    }
}
