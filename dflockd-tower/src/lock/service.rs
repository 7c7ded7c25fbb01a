//! The service: the inner service plus the shared settings; acquisition starts in `call`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dflockd_core::Guard;
use http::{Request, Response};
use tower_service::Service;

use super::acquire::acquire;
use super::config::Shared;
use super::future::{ErrorFuture, Machine, Options, ResponseFuture};
use crate::body::{BoxError, GuardedBody};
use crate::deadline::request_deadline;
use crate::observe::Meter;
use crate::reject::{RejectError, RejectResponse};
use crate::{Error, KeyExtractor, OnLeaseLoss, OnMissingKey, Slot};

/// The service made by [`LockLayer`](crate::LockLayer) and
/// [`SemaphoreLayer`](crate::SemaphoreLayer).
///
/// `poll_ready` only asks the inner service; the key depends on the request, so the lock is
/// acquired in `call`, in the response future, before the (ready) inner service is called.
pub struct LockService<S, K, R = RejectResponse> {
    inner: S,
    shared: Arc<Shared<K, R>>,
}

impl<S, K, R> LockService<S, K, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K, R>>) -> Self {
        LockService { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, R> Clone for LockService<S, K, R> {
    fn clone(&self) -> Self {
        LockService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, K, R: fmt::Debug> fmt::Debug for LockService<S, K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockService")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K, R> LockService<S, K, R> {
    /// Starts a keyed request: the span, the acquisition, and the ready inner service taken
    /// out of `self` (a clone is left in its place, as tower's docs recommend).
    fn start<Req>(
        &mut self,
        slot: Slot,
        request: Req,
        deadline: Option<Duration>,
        hold_for_body: bool,
        grpc: bool,
        on_acquired: fn(&mut Req, &Guard),
    ) -> Machine<S, Req>
    where
        S: Service<Req> + Clone,
        K: KeyExtractor<Req>,
    {
        let settings = &self.shared.settings;
        let (key, own_limit) = slot.into_parts();
        let limit = own_limit.or(settings.limit);
        let wait = match deadline {
            Some(deadline) if settings.use_request_deadline => settings.wait.min(deadline),
            _ => settings.wait,
        };
        let span = tracing::info_span!(
            "dflockd_guard",
            key = %key,
            limit = limit.unwrap_or(1),
            server_limit = tracing::field::Empty,
            fence = tracing::field::Empty,
            wait_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let shared = &self.shared;
        let acquire = acquire(
            settings,
            &shared.observed,
            &shared.limits,
            key.clone(),
            limit,
            wait,
        );
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let options = Options {
            abort_on_loss: settings.on_loss == OnLeaseLoss::Abort,
            hold_for_body,
            grpc,
            meter: self.meter(),
        };
        Machine::acquire(acquire, key, inner, request, options, span, on_acquired)
    }
}

fn insert_held<B>(request: &mut Request<B>, guard: &Guard) {
    request.extensions_mut().insert(guard.held());
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for LockService<S, K, RejectResponse>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyExtractor<Request<ReqBody>>,
    ResBody: http_body::Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<GuardedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let reject = self.shared.reject.clone();
        let machine = match self.shared.extractor.extract_mut(&mut request) {
            Some(key) => {
                let deadline = request_deadline(request.headers());
                let hold = self.shared.settings.hold_for_body;
                let grpc = self.shared.reject.grpc;
                self.start(key.into(), request, deadline, hold, grpc, insert_held)
            }
            None => self.without_key(request),
        };
        ResponseFuture::new(machine, reject)
    }
}

impl<S, K, Req> Service<Req> for LockService<S, K, RejectError>
where
    S: Service<Req> + Clone,
    S::Error: From<Error>,
    K: KeyExtractor<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ErrorFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        let machine = match self.shared.extractor.extract_mut(&mut request) {
            Some(key) => self.start(key.into(), request, None, false, false, |_, _| {}),
            None => self.without_key(request),
        };
        ErrorFuture::new(machine)
    }
}

impl<S, K, R> LockService<S, K, R> {
    /// A request in which the extractor found no key: the layer's [`OnMissingKey`] policy.
    fn without_key<Req>(&mut self, request: Req) -> Machine<S, Req>
    where
        S: Service<Req>,
        K: KeyExtractor<Req>,
    {
        let observed = &self.shared.observed;
        match self.shared.settings.on_missing_key {
            OnMissingKey::PassThrough => {
                if observed.passed_unguarded() {
                    tracing::warn!(
                        layer = %self.name(),
                        "a request without a lock key runs unguarded (OnMissingKey::PassThrough); \
                         logged once per layer, counted in Counters::passed_unguarded"
                    );
                }
                self.meter().unguarded(false);
                Machine::pass(self.inner.call(request))
            }
            OnMissingKey::BadRequest => {
                observed.missing_key_rejected();
                let layer = self.name();
                tracing::debug!(%layer, "request without a lock key rejected as a bad request");
                let error = Error::KeyNotInRequest { layer };
                self.meter().rejected(&error);
                Machine::reject(error)
            }
            OnMissingKey::Reject => {
                observed.missing_key_rejected();
                let layer = self.name();
                if let Some(held_back) = observed.missing_key_log.admit(Instant::now()) {
                    tracing::error!(
                        %layer,
                        similar_since_last = held_back,
                        "request without a lock key rejected (HTTP 500 / gRPC internal): the \
                         layer's key extractor found no key in it; a renamed route? A layer \
                         meant for Router::route_layer? To run such requests unguarded, set \
                         on_missing_key(OnMissingKey::PassThrough)"
                    );
                }
                let error = Error::MissingKey { layer };
                self.meter().rejected(&error);
                Machine::reject(error)
            }
        }
    }

    /// What records this layer's requests in the metrics.
    fn meter<Req>(&self) -> Meter
    where
        K: KeyExtractor<Req>,
    {
        Meter::new(&self.shared.observed, || self.name())
    }

    /// The layer's name: the configured one, or the extractor's description.
    fn name<Req>(&self) -> String
    where
        K: KeyExtractor<Req>,
    {
        match &self.shared.settings.name {
            Some(name) => name.to_string(),
            None => self.shared.extractor.describe(),
        }
    }
}
