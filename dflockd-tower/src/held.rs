//! What a handler learns about the lock it runs under: the core's [`HeldLock`], and with the
//! `axum` feature the [`Locked`] extractor.

/// The lock (or semaphore slot) a request runs under, inserted into the request's
/// extensions by the HTTP and gRPC modes before the inner service is called.
///
/// In axum, take it with the `Locked` extractor (feature `axum`) or
/// `Extension<HeldLock>`; pass [`fence`](HeldLock::fence) to the resource you write to, or
/// watch [`lost`](HeldLock::lost) in long handlers.
///
/// ```
/// # use axum::Extension;
/// # use dflockd_tower::HeldLock;
/// async fn pay(Extension(lock): Extension<HeldLock>) -> String {
///     // `None` unless the client was told its servers issue fences (dflockd 2.1 and later).
///     format!("paid under {} (fence {:?})", lock.key(), lock.fence())
/// }
/// ```
pub use dflockd_core::HeldLock;

#[cfg(feature = "axum")]
pub use self::axum_extractor::{Locked, NotLocked};

#[cfg(feature = "axum")]
mod axum_extractor {
    use std::convert::Infallible;
    use std::fmt;
    use std::ops::Deref;

    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::HeldLock;

    /// The lock a request runs under, as an axum extractor: handlers take
    /// `Locked(lock): Locked` (or `lock: Locked`, which derefs to [`HeldLock`]).
    ///
    /// A request that no layer guarded (a route outside the layer, a request that
    /// [failed open](crate::OnUnreachable::FailOpen) or [passed without a
    /// key](crate::OnMissingKey::PassThrough)) is refused with [`NotLocked`] (HTTP 500):
    /// a handler that takes `Locked` never runs unguarded. Take `Option<Locked>` where
    /// running unguarded is fine.
    ///
    /// ```
    /// use dflockd_tower::Locked;
    ///
    /// async fn pay(Locked(lock): Locked) -> String {
    ///     format!("paid under {} (fence {:?})", lock.key(), lock.fence())
    /// }
    ///
    /// async fn report(lock: Option<Locked>) -> &'static str {
    ///     if lock.is_some() { "guarded" } else { "unguarded" }
    /// }
    /// ```
    #[derive(Clone, Debug)]
    pub struct Locked(pub HeldLock);

    impl Deref for Locked {
        type Target = HeldLock;

        fn deref(&self) -> &HeldLock {
            &self.0
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Locked {
        type Rejection = NotLocked;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, NotLocked> {
            let held = parts.extensions.get::<HeldLock>().cloned();
            held.map(Locked).ok_or(NotLocked(()))
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Locked {
        type Rejection = Infallible;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
            Ok(parts.extensions.get::<HeldLock>().cloned().map(Locked))
        }
    }

    /// The rejection of [`Locked`]: no lock layer guarded the request. HTTP 500 (the
    /// handler was put where no layer guards it), logged at `error`.
    #[derive(Debug)]
    pub struct NotLocked(());

    impl fmt::Display for NotLocked {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "the handler takes dflockd_tower::Locked, but no lock layer guarded this \
                 request (a route outside the layer, or a request that ran unguarded)",
            )
        }
    }

    impl std::error::Error for NotLocked {}

    impl IntoResponse for NotLocked {
        fn into_response(self) -> Response {
            tracing::error!("{self}");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("{self}\n")).into_response()
        }
    }
}
