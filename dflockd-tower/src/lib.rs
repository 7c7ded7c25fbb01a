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
//! `SemaphoreLayer::new(client, 5, |req: &Request<_>| header(req, "x-tenant"))`. With the
//! `axum` feature, the key can come from the route axum matched instead:
//! `LockLayer::new(client, RouteKey::new("order:{id}")?)` under `Router::route_layer`, and
//! handlers take their lock as an extractor, `Locked(lock): Locked`.
//!
//! # Cargo features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `axum` | no (yes through the `dflockd` facade) | `RouteKey` (keys from the matched route's parameters) and the `Locked` extractor, for axum 0.8 |
//!
//! # Capabilities
//!
//! | capability | API |
//! |---|---|
//! | one request per key at a time | [`LockLayer`] |
//! | at most N requests per key at once | [`SemaphoreLayer`] |
//! | key from the request | [`KeyExtractor`] (any `Fn(&Req) -> Option<String>`), [`PathKey`], [`key_from_path`], [`header`] |
//! | key from the route axum matched (feature `axum`) | `RouteKey::new("order:{id}")` under `Router::route_layer` |
//! | a limit per request (premium tenants get more) | an extractor returning [`Slot`]s (`Fn(&Req) -> Option<Slot>`) |
//! | a limit changed during a rolling deploy | queue under the limit the server has for the key (see [`SemaphoreLayer`]) |
//! | requests without a key | rejected (500) by default; 400, or unguarded, by choice: [`on_missing_key`](LockLayer::on_missing_key), [`OnMissingKey`] |
//! | lock server unreachable | fail closed (503 / `unavailable`) by default, or run unguarded: [`on_unreachable`](LockLayer::on_unreachable), [`OnUnreachable`] |
//! | wait in FIFO order, or reject at once | [`wait`](LockLayer::wait) (zero = reject when busy) |
//! | the request's deadline bounds the wait | [`use_request_deadline`](LockLayer::use_request_deadline) (`grpc-timeout`) |
//! | lease | [`lease_ttl`](LockLayer::lease_ttl), renewed in the background |
//! | hold the lock while a streaming body is sent | [`hold_for_body`](LockLayer::hold_for_body), [`GuardedBody`] |
//! | rejections as HTTP responses (503/429, `Retry-After`) | [`RejectResponse`], [`busy_status`](LockLayer::busy_status), [`retry_after`](LockLayer::retry_after), [`reject_with`](LockLayer::reject_with) |
//! | rejections as gRPC statuses (tonic) | [`grpc`](LockLayer::grpc), [`GrpcCode`] |
//! | rejections as typed errors (other tower stacks) | [`typed_errors`](LockLayer::typed_errors), [`Error`] |
//! | lease lost during a request | [`OnLeaseLoss`]: drop the request (503 / `unavailable`), or finish and record |
//! | the handler sees its lock (fence, loss) | [`HeldLock`] in the request extensions; with the `axum` feature the `Locked` extractor, which refuses requests no layer guarded |
//! | logs and counters | the layer's [`name`](LockLayer::name); [`counters`](LockLayer::counters) ([`Counters`]): requests without a key, failed open, under an adopted limit |
//! | tracing | span `dflockd_guard` with `key`, `limit`, `server_limit`, `fence`, `wait_ms`, `outcome` (the field names of the macro's `dflockd_exclusive` span and of the client's events) |
//!
//! # How a request goes through
//!
//! `poll_ready` asks the inner service only. `call` extracts the key (and the request's own
//! limit, if the extractor gives one); without a key the request is rejected, or by choice
//! passes through ([`OnMissingKey`]). With one, the response future acquires the lock
//! (queueing FIFO on the server up to the wait; on a semaphore limit mismatch, under the
//! limit the server has for the key), inserts a [`HeldLock`] into the request, calls the
//! inner service (the ready instance, a clone being left in its place) and keeps the guard
//! while the inner future runs, watching the lease. When the inner future completes the
//! lock is released and the response passed on once the server has answered the release
//! (one round trip, so that a client's next request finds the key free); with
//! [`hold_for_body`](LockLayer::hold_for_body), the lock is released in the background when
//! the response body ends or is dropped. If the lock server cannot be reached, the request
//! is rejected, or with [`OnUnreachable::FailOpen`] runs unguarded, without a `HeldLock`.
//!
//! | what went wrong | [`Error`] | HTTP (default) | gRPC |
//! |---|---|---|---|
//! | key busy for the whole wait, or its queue full | [`Busy`](Error::Busy) | 503 + `Retry-After` (or 429 …) | `resource_exhausted` |
//! | lock server unreachable or draining (unless the layer [fails open](OnUnreachable::FailOpen)); auth rejected, key table full, a semaphore idle on the server with another limit, … | [`Unavailable`](Error::Unavailable) | 503 + `Retry-After` | `unavailable` |
//! | lease lost during the request | [`LeaseLost`](Error::LeaseLost) | 503 + `Retry-After` | `unavailable` |
//! | no key in the request (a renamed route? [`OnMissingKey::Reject`]) | [`MissingKey`](Error::MissingKey) | 500 | `internal` |
//! | no key, blamed on the client ([`OnMissingKey::BadRequest`]), or a key that cannot be sent | [`KeyNotInRequest`](Error::KeyNotInRequest), [`InvalidKey`](Error::InvalidKey) | 400 | `invalid_argument` |
//! | a zero lease or limit | [`Config`](Error::Config) | 500 | `internal` |
//! | a handler takes `Locked` but no layer guarded the request (feature `axum`) | — (`NotLocked`) | 500 | — |
//!
//! Requests that run unguarded by choice (failing open, passing without a key) are counted
//! in [`Counters`] and logged at `warn`; rejections for a missing key are logged at `error`
//! with the layer's name. Both are rate limited (once per layer, or once per 10 s with a
//! count of the others), so a misconfiguration is visible without flooding the log.
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
