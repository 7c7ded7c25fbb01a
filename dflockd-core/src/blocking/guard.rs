//! The guard of a held lock or semaphore slot (blocking).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Rt, run};
use crate::error::LossReason;
use crate::error::Result;

/// A held lock or semaphore slot (blocking). Renewed in the background; released by
/// [`release`](Guard::release) or, in the background, on drop.
#[must_use = "dropping the guard releases the lock"]
pub struct Guard {
    inner: Option<crate::Guard>,
    rt: Arc<Rt>,
}

impl Guard {
    pub(crate) fn new(inner: crate::Guard, rt: Arc<Rt>) -> Self {
        Guard {
            inner: Some(inner),
            rt,
        }
    }

    /// The async guard inside.
    pub(crate) fn into_inner(mut self) -> crate::Guard {
        self.inner.take().expect("present until consumed")
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.guard().fmt(f)
    }
}

impl Guard {
    fn guard(&self) -> &crate::Guard {
        self.inner.as_ref().expect("present until consumed")
    }

    /// The lease the server applied.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.guard().lease()
    }

    /// The address of the server that holds it.
    #[must_use]
    pub fn server(&self) -> &str {
        self.guard().server()
    }

    /// Blocks until the lease is lost or `timeout` passes: `Some(reason)` if it was lost.
    #[must_use]
    pub fn wait_lost(&self, timeout: Duration) -> Option<LossReason> {
        let watch = self.watch();
        run(&self.rt, async move {
            Ok(tokio::time::timeout(timeout, watch.lost()).await.ok())
        })
        .ok()
        .flatten()
    }

    /// Renews now. See [`crate::Guard::renew`].
    ///
    /// # Errors
    /// As [`crate::Guard::renew`].
    pub fn renew(&self) -> Result<Duration> {
        run(&self.rt, self.guard().renew_owned())
    }

    /// Releases and waits for the answer. See [`crate::Guard::release`].
    ///
    /// # Errors
    /// As [`crate::Guard::release`].
    pub fn release(mut self) -> Result<()> {
        let guard = self.inner.take().expect("present until consumed");
        run(&self.rt, async move { guard.release().await })
    }

    /// Keeps the lock for `hold` more, then releases it, without blocking. See
    /// [`crate::Guard::release_after`].
    pub fn release_after(mut self, hold: Duration) {
        let guard = self.inner.take().expect("present until consumed");
        let _enter = self.rt.handle().enter();
        guard.release_after(hold);
    }
}

impl std::ops::Deref for Guard {
    type Target = crate::HeldLock;

    /// Key, token, fence, limit and lease state (`is_held`, `loss_reason`, `watch`): see
    /// [`crate::HeldLock`].
    fn deref(&self) -> &crate::HeldLock {
        self.guard()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The async guard's drop only queues a release for its connection: it never blocks
        // and needs no runtime.
        self.inner.take();
    }
}
