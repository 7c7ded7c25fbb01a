//! What a handler learns about the lock it runs under: the core's [`HeldLock`].

/// The lock (or semaphore slot) a request runs under, inserted into the request's
/// extensions by the HTTP and gRPC modes before the inner service is called.
///
/// In axum, take it with `Extension<HeldLock>`; pass [`fence`](HeldLock::fence) to the
/// resource you write to, or watch [`lost`](HeldLock::lost) in long handlers.
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
