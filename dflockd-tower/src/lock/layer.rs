//! The layers: configuration only. Both layers have the same setters, written out for each
//! (so that each is found by its name); what they set lives in one struct, `Shared`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dflockd_core::Client;
use http::{Response, StatusCode};
use tower_layer::Layer;

use super::config::Shared;
use super::service::LockService;
use crate::reject::{GrpcCode, RejectError, RejectResponse};
use crate::{Counters, Error, OnLeaseLoss, OnMissingKey, OnUnreachable};

/// A layer that runs each request under a distributed lock on a key derived from the
/// request: one request per key at a time, across every replica that uses the same lock
/// server.
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use dflockd_tower::{LockLayer, PathKey};
/// use std::time::Duration;
///
/// # fn app(client: dflockd_core::Client) -> Result<Router, dflockd_tower::Error> {
/// async fn pay() -> &'static str { "paid" }
/// let app = Router::new()
///     .route("/orders/{id}/pay", post(pay))
///     // Only the routes above; other paths get their 404 without a lock.
///     .route_layer(
///         LockLayer::new(client, PathKey::new("/orders/{id}/pay", "order:{id}")?)
///             .wait(Duration::from_secs(5))
///             .lease_ttl(Duration::from_secs(30)),
///     );
/// # Ok(app) }
/// ```
///
/// Defaults: wait 10 s, the client's lease, the request's `grpc-timeout` bounds the wait,
/// requests without a key are rejected (HTTP 500, [`OnMissingKey`]), the inner future is dropped on lease loss, the lock
/// is released before the response is passed on, rejections are HTTP responses
/// ([`RejectResponse`]).
pub struct LockLayer<K, R = RejectResponse> {
    shared: Shared<K, R>,
}

impl<K> LockLayer<K> {
    /// A lock per key, the key made by `extractor` (a closure `Fn(&Request) -> Option<String>`
    /// or any [`KeyExtractor`](crate::KeyExtractor)). A [`Slot`](crate::Slot) with a limit of
    /// its own makes that request's key a semaphore of that limit.
    pub fn new(client: Client, extractor: K) -> Self {
        LockLayer {
            shared: Shared::new(client, None, extractor, RejectResponse::default()),
        }
    }
}

impl<K, R> LockLayer<K, R> {
    /// The lease of each lock, renewed in the background while the request (or its
    /// body) holds it; rounded up to whole seconds. Default is the client's (the
    /// server's default, 33 s, unless configured).
    #[must_use]
    pub fn lease_ttl(mut self, lease: Duration) -> Self {
        self.shared.settings.lease = Some(lease);
        self
    }

    /// How long a request waits in the key's FIFO queue before it is rejected as busy.
    /// Zero rejects at once when the key is busy; `Duration::MAX` waits as long as the
    /// protocol can say (`u32::MAX` seconds). Default is 10 s.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.shared.settings.wait = wait;
        self
    }

    /// Whether the request's own deadline (its `grpc-timeout` header) bounds the wait,
    /// so a request is not kept waiting after its client gave up. HTTP and gRPC modes
    /// only. Default is true.
    #[must_use]
    pub fn use_request_deadline(mut self, on: bool) -> Self {
        self.shared.settings.use_request_deadline = on;
        self
    }

    /// What happens to a request in which the extractor finds no key: rejected as a
    /// configuration mistake (HTTP 500), rejected as the client's (HTTP 400), or run
    /// unguarded; see [`OnMissingKey`]. Default is [`OnMissingKey::Reject`].
    #[must_use]
    pub fn on_missing_key(mut self, policy: OnMissingKey) -> Self {
        self.shared.settings.on_missing_key = policy;
        self
    }

    /// What happens to a request when the lock server cannot be reached: rejected (503 /
    /// `unavailable`) or run unguarded; see [`OnUnreachable`] for what counts as
    /// unreachable. Default is [`OnUnreachable::FailClosed`].
    #[must_use]
    pub fn on_unreachable(mut self, policy: OnUnreachable) -> Self {
        self.shared.settings.on_unreachable = policy;
        self
    }

    /// The layer's name in logs and in [`Error::MissingKey`]. Default is the extractor's
    /// [description](crate::KeyExtractor::describe): a [`PathKey`](crate::PathKey)'s pattern
    /// and template, a closure's type name (which names the function it was written in).
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.shared.settings.name = Some(name.into());
        self
    }

    /// What the layer has counted so far (requests without a key, ...), shared by its
    /// clones and every service it made: keep a clone of the layer to read them.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.shared.observed.snapshot()
    }

    /// What happens when the lease is lost during a request. Default is
    /// [`OnLeaseLoss::Abort`].
    #[must_use]
    pub fn on_lease_loss(mut self, on_loss: OnLeaseLoss) -> Self {
        self.shared.settings.on_loss = on_loss;
        self
    }
}

impl<K> LockLayer<K, RejectResponse> {
    /// Keeps the lock until the response body has been sent (or dropped), for
    /// streaming responses; see [`GuardedBody`](crate::GuardedBody). Default is false:
    /// the lock is released when the inner service has produced the response, which
    /// is passed on once the server has answered the release.
    #[must_use]
    pub fn hold_for_body(mut self, hold: bool) -> Self {
        self.shared.settings.hold_for_body = hold;
        self
    }

    /// The HTTP status of a busy rejection, e.g. `429 Too Many Requests`.
    /// Default is `503 Service Unavailable`.
    #[must_use]
    pub fn busy_status(mut self, status: StatusCode) -> Self {
        self.shared.reject_mut().busy_status = status;
        self
    }

    /// The HTTP status when the lock server cannot be used or the lease was lost.
    /// Default is `503 Service Unavailable`.
    #[must_use]
    pub fn unavailable_status(mut self, status: StatusCode) -> Self {
        self.shared.reject_mut().unavailable_status = status;
        self
    }

    /// The `Retry-After` of busy and unavailable rejections (whole seconds, rounded
    /// up, at least 1); `None` leaves it out. Default is 1 s.
    #[must_use]
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.shared.reject_mut().retry_after = after;
        self
    }

    /// Rejections become gRPC statuses (a trailers-only response that tonic clients
    /// read as a `Status`), for tonic servers. See [`RejectResponse`].
    /// Default is plain HTTP.
    #[must_use]
    pub fn grpc(mut self) -> Self {
        self.shared.reject_mut().grpc = true;
        self
    }

    /// The gRPC code of a busy rejection (with [`grpc`](Self::grpc)).
    /// Default is [`GrpcCode::ResourceExhausted`].
    #[must_use]
    pub fn grpc_busy_code(mut self, code: GrpcCode) -> Self {
        self.shared.reject_mut().grpc_busy = code;
        self
    }

    /// Builds every rejection response with `f` instead (HTTP or gRPC alike; with
    /// tonic, `|e| tonic::Status::unavailable(e.to_string()).into_http()` works).
    /// Default is the table in [`RejectResponse`].
    #[must_use]
    pub fn reject_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Error) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.shared.reject_mut().custom = Some(Arc::new(f));
        self
    }

    /// Rejections become errors of the inner service's error type (which must
    /// implement `From<Error>`) instead of responses, for tower stacks that handle
    /// errors themselves. Requests need not be HTTP in this mode; the response is
    /// passed through untouched and the lock is released when the inner future
    /// completes.
    #[must_use]
    pub fn typed_errors(self) -> LockLayer<K, RejectError> {
        LockLayer {
            shared: self.shared.with_reject(RejectError),
        }
    }
}

impl<K, R> Clone for LockLayer<K, R> {
    fn clone(&self) -> Self {
        LockLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K, R: fmt::Debug> fmt::Debug for LockLayer<K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K, R> Layer<S> for LockLayer<K, R> {
    type Service = LockService<S, K, R>;

    fn layer(&self, inner: S) -> Self::Service {
        LockService::new(inner, Arc::new(self.shared.clone()))
    }
}

/// A layer that lets at most `limit` requests per key run at once, across every replica that
/// uses the same lock server (a distributed counting semaphore per key); the rest wait in
/// FIFO order.
///
/// ```no_run
/// use axum::{Router, routing::get, http::{Request, StatusCode}};
/// use dflockd_tower::{OnMissingKey, SemaphoreLayer, header};
/// use std::time::Duration;
///
/// # fn app(client: dflockd_core::Client) -> Router {
/// async fn report() -> &'static str { "report" }
/// let app = Router::new()
///     .route("/reports", get(report))
///     .layer(
///         SemaphoreLayer::new(client, 5, |req: &Request<_>| header(req, "x-tenant"))
///             .wait(Duration::ZERO)
///             .busy_status(StatusCode::TOO_MANY_REQUESTS)
///             // No tenant header: the client's mistake.
///             .on_missing_key(OnMissingKey::BadRequest),
///     );
/// # app }
/// ```
///
/// Defaults are those of [`LockLayer`].
///
/// # Changing a limit
///
/// The lock server keeps one limit per key while the key is in use (held, queued for, or
/// idle and not yet collected) and refuses another (`error_limit_mismatch`). So when a
/// limit changes in a rolling deploy, replicas of the old and the new release would refuse
/// each other's requests. Instead, on a mismatch the layer reads the key's limit from the
/// server's statistics and queues under it, which keeps the server's bound (there is only
/// ever one semaphore per key, never one per limit, which would add the two up):
///
/// * while a key is in use, every replica queues under the limit it has on the server,
///   the old one (or, once the new release created the key, the new one);
/// * the configured limit applies once the key has been idle long enough for the server to
///   collect it (dflockd's `--gc-max-idle`), and a key that is never idle keeps its limit;
/// * each adoption is logged at `warn` once per key and limit and counted
///   ([`Counters::adopted_limit`]); an adopted limit is used for 2 s before the configured
///   one is tried again;
/// * a key that is idle on the server with another limit does not list it: its requests
///   are refused ([`Error::Unavailable`], 503) until the server collects the key, unless
///   this layer learnt the limit while the key was in use.
///
/// A semaphore key must not be used as a lock key elsewhere (the server refuses:
/// [`Error::Unavailable`]).
pub struct SemaphoreLayer<K, R = RejectResponse> {
    shared: Shared<K, R>,
}

impl<K> SemaphoreLayer<K> {
    /// At most `limit` requests at once per key, the key made by `extractor`: a closure
    /// `Fn(&Request) -> Option<String>` or any [`KeyExtractor`](crate::KeyExtractor).
    ///
    /// An extractor that returns [`Slot`](crate::Slot)s gives each request's key a limit of
    /// its own (premium tenants 8, others 2); `limit` is then the limit of slots made
    /// without one. A limit of zero makes every request that uses it fail with
    /// [`Error::Config`] (HTTP 500).
    pub fn new(client: Client, limit: u32, extractor: K) -> Self {
        SemaphoreLayer {
            shared: Shared::new(client, Some(limit), extractor, RejectResponse::default()),
        }
    }
}

impl<K, R> SemaphoreLayer<K, R> {
    /// The lease of each lock, renewed in the background while the request (or its
    /// body) holds it; rounded up to whole seconds. Default is the client's (the
    /// server's default, 33 s, unless configured).
    #[must_use]
    pub fn lease_ttl(mut self, lease: Duration) -> Self {
        self.shared.settings.lease = Some(lease);
        self
    }

    /// How long a request waits in the key's FIFO queue before it is rejected as busy.
    /// Zero rejects at once when the key is busy; `Duration::MAX` waits as long as the
    /// protocol can say (`u32::MAX` seconds). Default is 10 s.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.shared.settings.wait = wait;
        self
    }

    /// Whether the request's own deadline (its `grpc-timeout` header) bounds the wait,
    /// so a request is not kept waiting after its client gave up. HTTP and gRPC modes
    /// only. Default is true.
    #[must_use]
    pub fn use_request_deadline(mut self, on: bool) -> Self {
        self.shared.settings.use_request_deadline = on;
        self
    }

    /// What happens to a request in which the extractor finds no key: rejected as a
    /// configuration mistake (HTTP 500), rejected as the client's (HTTP 400), or run
    /// unguarded; see [`OnMissingKey`]. Default is [`OnMissingKey::Reject`].
    #[must_use]
    pub fn on_missing_key(mut self, policy: OnMissingKey) -> Self {
        self.shared.settings.on_missing_key = policy;
        self
    }

    /// What happens to a request when the lock server cannot be reached: rejected (503 /
    /// `unavailable`) or run unguarded; see [`OnUnreachable`] for what counts as
    /// unreachable. Default is [`OnUnreachable::FailClosed`].
    #[must_use]
    pub fn on_unreachable(mut self, policy: OnUnreachable) -> Self {
        self.shared.settings.on_unreachable = policy;
        self
    }

    /// The layer's name in logs and in [`Error::MissingKey`]. Default is the extractor's
    /// [description](crate::KeyExtractor::describe): a [`PathKey`](crate::PathKey)'s pattern
    /// and template, a closure's type name (which names the function it was written in).
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.shared.settings.name = Some(name.into());
        self
    }

    /// What the layer has counted so far (requests without a key, ...), shared by its
    /// clones and every service it made: keep a clone of the layer to read them.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.shared.observed.snapshot()
    }

    /// What happens when the lease is lost during a request. Default is
    /// [`OnLeaseLoss::Abort`].
    #[must_use]
    pub fn on_lease_loss(mut self, on_loss: OnLeaseLoss) -> Self {
        self.shared.settings.on_loss = on_loss;
        self
    }
}

impl<K> SemaphoreLayer<K, RejectResponse> {
    /// Keeps the lock until the response body has been sent (or dropped), for
    /// streaming responses; see [`GuardedBody`](crate::GuardedBody). Default is false:
    /// the lock is released when the inner service has produced the response, which
    /// is passed on once the server has answered the release.
    #[must_use]
    pub fn hold_for_body(mut self, hold: bool) -> Self {
        self.shared.settings.hold_for_body = hold;
        self
    }

    /// The HTTP status of a busy rejection, e.g. `429 Too Many Requests`.
    /// Default is `503 Service Unavailable`.
    #[must_use]
    pub fn busy_status(mut self, status: StatusCode) -> Self {
        self.shared.reject_mut().busy_status = status;
        self
    }

    /// The HTTP status when the lock server cannot be used or the lease was lost.
    /// Default is `503 Service Unavailable`.
    #[must_use]
    pub fn unavailable_status(mut self, status: StatusCode) -> Self {
        self.shared.reject_mut().unavailable_status = status;
        self
    }

    /// The `Retry-After` of busy and unavailable rejections (whole seconds, rounded
    /// up, at least 1); `None` leaves it out. Default is 1 s.
    #[must_use]
    pub fn retry_after(mut self, after: Option<Duration>) -> Self {
        self.shared.reject_mut().retry_after = after;
        self
    }

    /// Rejections become gRPC statuses (a trailers-only response that tonic clients
    /// read as a `Status`), for tonic servers. See [`RejectResponse`].
    /// Default is plain HTTP.
    #[must_use]
    pub fn grpc(mut self) -> Self {
        self.shared.reject_mut().grpc = true;
        self
    }

    /// The gRPC code of a busy rejection (with [`grpc`](Self::grpc)).
    /// Default is [`GrpcCode::ResourceExhausted`].
    #[must_use]
    pub fn grpc_busy_code(mut self, code: GrpcCode) -> Self {
        self.shared.reject_mut().grpc_busy = code;
        self
    }

    /// Builds every rejection response with `f` instead (HTTP or gRPC alike; with
    /// tonic, `|e| tonic::Status::unavailable(e.to_string()).into_http()` works).
    /// Default is the table in [`RejectResponse`].
    #[must_use]
    pub fn reject_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&Error) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.shared.reject_mut().custom = Some(Arc::new(f));
        self
    }

    /// Rejections become errors of the inner service's error type (which must
    /// implement `From<Error>`) instead of responses, for tower stacks that handle
    /// errors themselves. Requests need not be HTTP in this mode; the response is
    /// passed through untouched and the lock is released when the inner future
    /// completes.
    #[must_use]
    pub fn typed_errors(self) -> SemaphoreLayer<K, RejectError> {
        SemaphoreLayer {
            shared: self.shared.with_reject(RejectError),
        }
    }
}

impl<K, R> Clone for SemaphoreLayer<K, R> {
    fn clone(&self) -> Self {
        SemaphoreLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K, R: fmt::Debug> fmt::Debug for SemaphoreLayer<K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K, R> Layer<S> for SemaphoreLayer<K, R> {
    type Service = LockService<S, K, R>;

    fn layer(&self, inner: S) -> Self::Service {
        LockService::new(inner, Arc::new(self.shared.clone()))
    }
}
