//! What a handler learns about the lock it runs under.

use std::sync::Arc;

use dflockd_core::{Guard, LeaseWatch, LossReason, Lost};

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
///     format!("paid under {} (fence {})", lock.key(), lock.fence())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct HeldLock {
    key: Arc<str>,
    fence: u64,
    watch: LeaseWatch,
}

impl HeldLock {
    pub(crate) fn new(guard: &Guard) -> Self {
        HeldLock {
            key: guard.key().into(),
            fence: guard.fence(),
            watch: guard.watch(),
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token of the grant (see [`Guard::fence`]).
    #[must_use]
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether the lease is still held.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.watch.is_held()
    }

    /// Why the lease was lost, if it was.
    #[must_use]
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.watch.loss_reason()
    }

    /// Completes when the lease is lost (never, if it is released first).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> Lost {
        self.watch.lost()
    }

    /// The lease watch itself, to move into other tasks.
    #[must_use]
    pub fn watch(&self) -> &LeaseWatch {
        &self.watch
    }
}
