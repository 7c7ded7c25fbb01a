//! [`Lock`] and [`Semaphore`] for plain threads, and two-phase acquisition.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::guard::Guard;
use super::{Rt, run};
#[cfg(doc)]
use crate::error::Error;
use crate::error::LossReason;
use crate::error::Result;
use crate::section::{self, OnLeaseLoss};

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

    /// See [`crate::Lock::on_lease_loss`]. Default is [`OnLeaseLoss::Cancel`].
    #[must_use]
    pub fn on_lease_loss(self, on_loss: OnLeaseLoss) -> Self {
        Self {
            inner: self.inner.on_lease_loss(on_loss),
            rt: self.rt,
        }
    }

    /// See [`crate::Lock::hold_at_least`]. Default is zero.
    #[must_use]
    pub fn hold_at_least(self, hold: Duration) -> Self {
        Self {
            inner: self.inner.hold_at_least(hold),
            rt: self.rt,
        }
    }

    /// A scoped critical section on this thread: acquires, calls `work` with a
    /// [`CancelFlag`], and releases when it returns; returns its output.
    ///
    /// A thread cannot be interrupted, so the work checks the flag: it turns on when the
    /// lease is lost (see [`CancelFlag::is_cancelled`], [`CancelFlag::wait`]), and the work
    /// should stop then. If the lease was lost before the work returned, `run` returns
    /// [`Error::LeaseLost`] instead of the output (with [`OnLeaseLoss::Cancel`], the
    /// default). Inside the work, [`crate::current_lock`] returns the held lock, and
    /// acquiring the same key again on this thread fails at once with [`Error::Reentrant`].
    ///
    /// ```no_run
    /// # fn f(client: dflockd_core::blocking::Client) -> Result<(), dflockd_core::Error> {
    /// use std::time::Duration;
    /// let rows = client.lock("report").run(|flag| {
    ///     let mut rows = 0;
    ///     while rows < 1000 && !flag.is_cancelled() {
    ///         rows += 1; // one unit of work
    ///     }
    ///     rows
    /// })?;
    /// # let _ = rows; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`crate::Lock::run`].
    pub fn run<T>(&self, work: impl FnOnce(&CancelFlag) -> T) -> Result<T> {
        self.inner.spec().check_reentry()?;
        let guard = self.acquire()?.into_inner();
        run_section(&self.rt, guard, self.inner.spec().policy, work)
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

    /// See [`crate::Semaphore::on_lease_loss`]. Default is [`OnLeaseLoss::Cancel`].
    #[must_use]
    pub fn on_lease_loss(self, on_loss: OnLeaseLoss) -> Self {
        Self {
            inner: self.inner.on_lease_loss(on_loss),
            rt: self.rt,
        }
    }

    /// See [`crate::Semaphore::hold_at_least`]. Default is zero.
    #[must_use]
    pub fn hold_at_least(self, hold: Duration) -> Self {
        Self {
            inner: self.inner.hold_at_least(hold),
            rt: self.rt,
        }
    }

    /// A scoped critical section on this thread: acquires, calls `work` with a
    /// [`CancelFlag`], and releases when it returns; returns its output.
    ///
    /// A thread cannot be interrupted, so the work checks the flag: it turns on when the
    /// lease is lost (see [`CancelFlag::is_cancelled`], [`CancelFlag::wait`]), and the work
    /// should stop then. If the lease was lost before the work returned, `run` returns
    /// [`Error::LeaseLost`] instead of the output (with [`OnLeaseLoss::Cancel`], the
    /// default). Inside the work, [`crate::current_lock`] returns the held slot, and
    /// acquiring the same key again on this thread fails at once with [`Error::Reentrant`].
    ///
    /// ```no_run
    /// # fn f(client: dflockd_core::blocking::Client) -> Result<(), dflockd_core::Error> {
    /// use std::time::Duration;
    /// let rows = client.semaphore("exports", 3).run(|flag| {
    ///     let mut rows = 0;
    ///     while rows < 1000 && !flag.is_cancelled() {
    ///         rows += 1; // one unit of work
    ///     }
    ///     rows
    /// })?;
    /// # let _ = rows; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`crate::Semaphore::run`].
    pub fn run<T>(&self, work: impl FnOnce(&CancelFlag) -> T) -> Result<T> {
        self.inner.spec().check_reentry()?;
        let guard = self.acquire()?.into_inner();
        run_section(&self.rt, guard, self.inner.spec().policy, work)
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

/// Tells the work of a blocking section ([`Lock::run`], [`Semaphore::run`]) that it must
/// stop: its lease was lost. Cheap to clone, to hand to helper threads.
#[derive(Clone)]
pub struct CancelFlag {
    held: crate::HeldLock,
    rt: Arc<Rt>,
}

impl fmt::Debug for CancelFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelFlag")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl CancelFlag {
    /// Whether the work must stop: the lease was lost.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.held.loss_reason().is_some()
    }

    /// Sleeps up to `timeout`, waking early when the lease is lost: `Some(reason)` then.
    #[must_use]
    pub fn wait(&self, timeout: Duration) -> Option<LossReason> {
        let watch = self.held.watch();
        run(&self.rt, async move {
            Ok(tokio::time::timeout(timeout, watch.lost()).await.ok())
        })
        .ok()
        .flatten()
    }

    /// The lock the work runs under: key, token, fence, lease state.
    #[must_use]
    pub fn held(&self) -> &crate::HeldLock {
        &self.held
    }
}

/// Runs blocking `work` as a section of `guard` (see [`Lock::run`]).
fn run_section<T>(
    rt: &Arc<Rt>,
    guard: crate::Guard,
    policy: section::Policy,
    work: impl FnOnce(&CancelFlag) -> T,
) -> Result<T> {
    let granted = std::time::Instant::now();
    let flag = CancelFlag {
        held: guard.held(),
        rt: rt.clone(),
    };
    let output = section::run_on_thread(&[&guard], || work(&flag));
    if let Some(reason) = guard.loss_reason() {
        if policy.on_lease_loss == OnLeaseLoss::Cancel {
            // Dropping the guard stops its renewals; there is nothing left to release.
            return Err(guard.held().lost_error(reason));
        }
        tracing::warn!(key = %guard.key(), %reason, "lease lost while the section ran; it ran to its end");
    }
    run(rt, async move {
        section::release(vec![guard], policy, granted).await
    })?;
    Ok(output)
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
