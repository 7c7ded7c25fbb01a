//! Keyed, distributed concurrency guards for tower services (axum, tonic, hyper): "one
//! request per order at a time" or "at most N requests per tenant at once", across every
//! replica that talks to the same [dflockd](https://github.com/mtingers/dflockd) lock server.
//!
//! Most users reach this crate through the `dflockd` facade, as `dflockd::tower`.
//!
//! # Quick start
//!
//! ```
//! use axum::{Router, body::Body, http::{Request, StatusCode}, routing::post};
//! use dflockd_tower::{LockLayer, key_from_path};
//! use std::time::Duration;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = dflockd_testkit::TestServer::start().await?;
//! let client = dflockd_core::Client::builder()
//!     .servers([server.addr().to_string()])
//!     .build()?;
//!
//! async fn pay() -> &'static str { "paid" }
//!
//! let app = Router::new()
//!     .route("/orders/{id}/pay", post(pay))
//!     .route_layer(
//!         LockLayer::new(client, |req: &Request<Body>| {
//!             key_from_path(req, "/orders/{id}/pay", "order:{id}")
//!         })
//!         .wait(Duration::from_secs(5)),
//!     );
//!
//! let response = app
//!     .oneshot(Request::post("/orders/42/pay").body(Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! A per-tenant limit is one line too:
//! `SemaphoreLayer::new(client, 5, |req: &Request<_>| header(req, "x-tenant"))`.
//!
//! # Features
//!
//! | capability | API |
//! |---|---|
//! | one request per key at a time | [`LockLayer`] |
//! | at most N requests per key at once | [`SemaphoreLayer`] |
//! | key from the request | [`KeyExtractor`] (any `Fn(&Req) -> Option<String>`), [`PathKey`], [`key_from_path`], [`header`] |
//! | key from the route axum matched (feature `axum`) | `RouteKey::new("order:{id}")` with `Router::route_layer` |
//! | per-request limits (premium tenants get more) | an extractor returning [`Slot`]s |
//! | requests without a key | rejected (500) by default; 400 or unguarded by choice: [`on_missing_key`](LockLayer::on_missing_key), [`OnMissingKey`] |
//! | lock server unreachable | fail closed (503 / `unavailable`) by default, or run unguarded: [`on_unreachable`](LockLayer::on_unreachable), [`OnUnreachable`] |
//! | counters (requests without a key, ...) | [`counters`](LockLayer::counters), [`Counters`] |
//! | wait in FIFO order, or reject at once | [`wait`](LockLayer::wait) (zero = reject when busy) |
//! | the request's deadline bounds the wait | [`use_request_deadline`](LockLayer::use_request_deadline) (`grpc-timeout`) |
//! | lease | [`lease_ttl`](LockLayer::lease_ttl), renewed in the background |
//! | hold the lock while a streaming body is sent | [`hold_for_body`](LockLayer::hold_for_body), [`GuardedBody`] |
//! | rejections as HTTP responses (503/429, `Retry-After`) | [`RejectResponse`], [`busy_status`](LockLayer::busy_status), [`retry_after`](LockLayer::retry_after), [`reject_with`](LockLayer::reject_with) |
//! | rejections as gRPC statuses (tonic) | [`grpc`](LockLayer::grpc), [`GrpcCode`] |
//! | rejections as typed errors (other tower stacks) | [`typed_errors`](LockLayer::typed_errors), [`Error`] |
//! | lease lost during a request | [`OnLeaseLoss`]: drop the request (503 / `unavailable`), or finish and record |
//! | the handler sees its lock (fence, loss) | [`HeldLock`] in the request extensions; the `Locked` axum extractor (feature `axum`) |
//! | tracing | span `dflockd_guard` with `key`, `limit`, `wait_ms`, `outcome` |
//!
//! # How a request goes through
//!
//! `poll_ready` asks the inner service only. `call` extracts the key; without one the
//! request is rejected (or, by choice, passes through: [`OnMissingKey`]). With one, the response future acquires the lock
//! (queueing FIFO on the server up to the wait), inserts a [`HeldLock`] into the request,
//! calls the inner service (the ready instance, a clone being left in its place) and keeps
//! the guard while the inner future runs, watching the lease. When the inner future
//! completes the lock is released and the response passed on once the server has answered
//! the release (one round trip, so that a client's next request finds the key free); with
//! [`hold_for_body`](LockLayer::hold_for_body), the lock is released in the background when
//! the response body ends or is dropped.
//!
//! | what went wrong | [`Error`] | HTTP (default) | gRPC |
//! |---|---|---|---|
//! | key busy for the whole wait, or its queue full | [`Busy`](Error::Busy) | 503 + `Retry-After` (or 429 …) | `resource_exhausted` |
//! | lock server down, draining, auth rejected, … (unless it [fails open](OnUnreachable::FailOpen)) | [`Unavailable`](Error::Unavailable) | 503 + `Retry-After` | `unavailable` |
//! | lease lost during the request | [`LeaseLost`](Error::LeaseLost) | 503 + `Retry-After` | `unavailable` |
//! | no key in the request (a renamed route?) | [`MissingKey`](Error::MissingKey) | 500 | `internal` |
//! | no key, blamed on the client ([`OnMissingKey::BadRequest`]), or a key that cannot be sent | [`KeyNotInRequest`](Error::KeyNotInRequest), [`InvalidKey`](Error::InvalidKey) | 400 | `invalid_argument` |
//!
//! # tonic
//!
//! Add the layer to the server with rejections in gRPC form; the key can come from the
//! method path or from metadata (request headers):
//!
//! ```no_run
//! # fn f(client: dflockd_core::Client) {
//! use dflockd_tower::{LockLayer, OnMissingKey, header};
//! use http::Request;
//! let layer = LockLayer::new(client, |req: &Request<tonic::body::Body>| {
//!     header(req, "x-account").map(|a| format!("account:{a}"))
//! })
//! .grpc()
//! // A call without `x-account` is the caller's mistake: `invalid_argument`.
//! .on_missing_key(OnMissingKey::BadRequest);
//! let server = tonic::transport::Server::builder().layer(layer);
//! # let _ = server; }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod deadline;
mod error;
mod held;
mod key;
mod limits;
mod lock;
mod observe;
mod policy;
mod reject;
#[cfg(feature = "axum")]
mod route_key;

pub use body::{BoxError, GuardedBody};
pub use error::Error;
pub use held::HeldLock;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use held::{Locked, NotLocked};
pub use key::{KeyExtractor, PathKey, Slot, header, key_from_path};
pub use lock::future::{ErrorFuture, ResponseFuture};
pub use lock::layer::{LockLayer, SemaphoreLayer};
pub use lock::service::LockService;
pub use observe::Counters;
pub use policy::{OnLeaseLoss, OnMissingKey, OnUnreachable};
pub use reject::{GrpcCode, RejectError, RejectResponse};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use route_key::RouteKey;
