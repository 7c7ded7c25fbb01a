//! [`Lock`] and [`Semaphore`] for plain threads, and two-phase acquisition.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::guard::Guard;
use super::{Rt, run};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// A lock on one key to acquire (blocking). Made by [`Client::lock`](super::Client::lock);
/// see [`crate::Lock`].
#[derive(Clone)]
pub struct Lock {
    inner: crate::Lock,
    rt: Arc<Rt>,
}

/// A counting semaphore on one key to acquire (blocking). Made by
/// [`Client::semaphore`](super::Client::semaphore); see [`crate::Semaphore`].
#[derive(Clone)]
pub struct Semaphore {
    inner: crate::Semaphore,
    rt: Arc<Rt>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Lock {
    pub(crate) fn new(inner: crate::Lock, rt: Arc<Rt>) -> Self {
        Lock { inner, rt }
    }

    /// See [`crate::Lock::acquire_timeout`]. Default is the client's (10 s).
    #[must_use]
    pub fn acquire_timeout(self, timeout: Duration) -> Self {
        Lock {
            inner: self.inner.acquire_timeout(timeout),
            rt: self.rt,
        }
    }

    /// See [`crate::Lock::lease_ttl`]. Default is the client's.
    #[must_use]
    pub fn lease_ttl(self, lease: Duration) -> Self {
        Lock {
            inner: self.inner.lease_ttl(lease),
            rt: self.rt,
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// Acquires, waiting up to the acquire timeout. See [`crate::Lock::acquire`].
    ///
    /// # Errors
    /// As [`crate::Lock::acquire`]: [`Error::Timeout`] when busy for the whole timeout.
    pub fn acquire(&self) -> Result<Guard> {
        let inner = self.inner.clone();
        let guard = run(&self.rt, async move { inner.acquire().await })?;
        Ok(Guard::new(guard, self.rt.clone()))
    }

    /// Tries once: `Ok(None)` when busy. See [`crate::Lock::try_acquire`].
    ///
    /// # Errors
    /// As [`crate::Lock::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Guard>> {
        let inner = self.inner.clone();
        let guard = run(&self.rt, async move { inner.try_acquire().await })?;
        Ok(guard.map(|g| Guard::new(g, self.rt.clone())))
    }

    /// Two-phase acquisition, first half. See [`crate::Lock::enqueue`].
    ///
    /// # Errors
    /// As [`crate::Lock::enqueue`].
    pub fn enqueue(&self) -> Result<Enqueued> {
        let inner = self.inner.clone();
        let enqueued = run(&self.rt, async move { inner.enqueue().await })?;
        Ok(Enqueued::new(enqueued, &self.rt))
    }
}

impl Semaphore {
    pub(crate) fn new(inner: crate::Semaphore, rt: Arc<Rt>) -> Self {
        Semaphore { inner, rt }
    }

    /// See [`crate::Semaphore::acquire_timeout`]. Default is the client's (10 s).
    #[must_use]
    pub fn acquire_timeout(self, timeout: Duration) -> Self {
        Semaphore {
            inner: self.inner.acquire_timeout(timeout),
            rt: self.rt,
        }
    }

    /// See [`crate::Semaphore::lease_ttl`]. Default is the client's.
    #[must_use]
    pub fn lease_ttl(self, lease: Duration) -> Self {
        Semaphore {
            inner: self.inner.lease_ttl(lease),
            rt: self.rt,
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// Holders allowed at once.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.inner.limit()
    }

    /// Acquires a slot, waiting up to the acquire timeout. See [`crate::Semaphore::acquire`].
    ///
    /// # Errors
    /// As [`crate::Semaphore::acquire`]: [`Error::Timeout`] when full for the whole timeout.
    pub fn acquire(&self) -> Result<Guard> {
        let inner = self.inner.clone();
        let guard = run(&self.rt, async move { inner.acquire().await })?;
        Ok(Guard::new(guard, self.rt.clone()))
    }

    /// Tries once: `Ok(None)` when full. See [`crate::Semaphore::try_acquire`].
    ///
    /// # Errors
    /// As [`crate::Semaphore::try_acquire`].
    pub fn try_acquire(&self) -> Result<Option<Guard>> {
        let inner = self.inner.clone();
        let guard = run(&self.rt, async move { inner.try_acquire().await })?;
        Ok(guard.map(|g| Guard::new(g, self.rt.clone())))
    }

    /// Two-phase acquisition, first half. See [`crate::Semaphore::enqueue`].
    ///
    /// # Errors
    /// As [`crate::Semaphore::enqueue`].
    pub fn enqueue(&self) -> Result<Enqueued> {
        let inner = self.inner.clone();
        let enqueued = run(&self.rt, async move { inner.enqueue().await })?;
        Ok(Enqueued::new(enqueued, &self.rt))
    }
}

/// The result of [`Lock::enqueue`] and [`Semaphore::enqueue`].
#[derive(Debug)]
#[must_use = "a queued acquisition must be waited for (or dropped to leave the queue)"]
pub enum Enqueued {
    /// Held at once, renewing already.
    Acquired(Guard),
    /// In the queue: call [`Queued::wait`].
    Queued(Queued),
}

impl Enqueued {
    fn new(enqueued: crate::Enqueued, rt: &Arc<Rt>) -> Self {
        match enqueued {
            crate::Enqueued::Acquired(g) => Enqueued::Acquired(Guard::new(g, rt.clone())),
            crate::Enqueued::Queued(q) => Enqueued::Queued(Queued {
                inner: q,
                rt: rt.clone(),
            }),
        }
    }

    /// Whether the slot was granted at once.
    #[must_use]
    pub fn is_acquired(&self) -> bool {
        matches!(self, Enqueued::Acquired(_))
    }

    /// `"acquired"` or `"queued"`.
    #[must_use]
    pub fn status(&self) -> &'static str {
        match self {
            Enqueued::Acquired(_) => "acquired",
            Enqueued::Queued(_) => "queued",
        }
    }

    /// The guard: at once when acquired, otherwise after waiting up to `timeout`.
    ///
    /// # Errors
    /// As [`Queued::wait`].
    pub fn wait(self, timeout: Duration) -> Result<Guard> {
        match self {
            Enqueued::Acquired(guard) => Ok(guard),
            Enqueued::Queued(queued) => queued.wait(timeout),
        }
    }
}

/// A place in a key's queue. Dropping it without [`wait`](Queued::wait) leaves the queue.
#[must_use = "dropping it leaves the queue"]
pub struct Queued {
    inner: crate::Queued,
    rt: Arc<Rt>,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Queued {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// Waits up to `timeout` for the grant. See [`crate::Queued::wait`].
    ///
    /// # Errors
    /// As [`crate::Queued::wait`].
    pub fn wait(self, timeout: Duration) -> Result<Guard> {
        let Queued { inner, rt } = self;
        let guard = run(&rt, async move { inner.wait(timeout).await })?;
        Ok(Guard::new(guard, rt))
    }
}
