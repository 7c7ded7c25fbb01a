//! [`MultiLock`]: several keys (locks or semaphore slots) taken together, in one global order,
//! all or nothing, held by one [`MultiGuard`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::acquire::Spec;
use crate::error::LossReason;
use crate::error::Result;
use crate::guard::{Guard, HeldLock};
use crate::inner::ClientInner;
use crate::proto::Family;
use crate::section::{self, OnLeaseLoss, Policy};

/// Several keys acquired together: a transfer between two accounts, a job that needs a tenant
/// slot and a resource lock. Made by [`Client::multi_lock`](crate::Client::multi_lock).
///
/// The keys are always taken in one global order (by key, then locks before semaphores), so
/// two callers asking for `[a, b]` and `[b, a]` cannot hold one each and wait for the other.
/// Either every key is granted within the acquire timeout, or none stays held: the ones taken
/// so far are released.
///
/// ```no_run
/// # async fn f(client: dflockd_core::Client) -> Result<(), dflockd_core::Error> {
/// use std::time::Duration;
/// let moved = client
///     .multi_lock(["account:17", "account:4"])
///     .acquire_timeout(Duration::from_secs(5))
///     .run(|held| async move {
///         // Both accounts are locked; `held` lists them in the order they were taken.
///         held.len()
///     })
///     .await?;
/// # let _ = moved; Ok(()) }
/// ```
#[derive(Clone)]
pub struct MultiLock {
    client: Arc<ClientInner>,
    /// In the global order, without duplicates.
    items: Vec<Spec>,
    acquire_timeout: Duration,
    lease: Option<Duration>,
    policy: Policy,
}

impl fmt::Debug for MultiLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiLock")
            .field("keys", &self.keys())
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl MultiLock {
    pub(crate) fn new(client: Arc<ClientInner>) -> Self {
        MultiLock {
            acquire_timeout: client.acquire_timeout,
            lease: client.lease,
            client,
            items: Vec::new(),
            policy: Policy::default(),
        }
    }

    fn add(mut self, family: Family, key: String, limit: u32) -> Self {
        let order = |s: &Spec| (s.key.clone(), s.family == Family::Semaphore);
        let spec = Spec::new(self.client.clone(), family, key, limit);
        let at = self.items.partition_point(|s| order(s) < order(&spec));
        let duplicate = self.items.get(at).is_some_and(|s| order(s) == order(&spec));
        if !duplicate {
            self.items.insert(at, spec);
        }
        self
    }

    /// Adds a lock on `key` (a key given twice is taken once).
    #[must_use]
    pub fn lock(self, key: impl Into<String>) -> Self {
        self.add(Family::Lock, key.into(), 1)
    }

    /// Adds a slot of the semaphore `key` of `limit` holders.
    #[must_use]
    pub fn semaphore(self, key: impl Into<String>, limit: u32) -> Self {
        self.add(Family::Semaphore, key.into(), limit)
    }

    /// How long [`acquire`](Self::acquire) may take for all the keys together
    /// ([`Error::Timeout`](crate::Error::Timeout) for the first key still busy then). Default
    /// is the client's (10 s unless configured).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The lease of every key, renewed in the background. Default is the client's.
    #[must_use]
    pub fn lease_ttl(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// What [`run`](Self::run) does when a lease is lost: see [`OnLeaseLoss`]. Default is
    /// [`OnLeaseLoss::Cancel`].
    #[must_use]
    pub fn on_lease_loss(mut self, on_loss: OnLeaseLoss) -> Self {
        self.policy.on_lease_loss = on_loss;
        self
    }

    /// [`run`](Self::run) keeps the keys at least this long from the grant. Default is zero.
    #[must_use]
    pub fn hold_at_least(mut self, hold: Duration) -> Self {
        self.policy.hold_at_least = hold;
        self
    }

    /// The keys, in the order they are taken.
    #[must_use]
    pub fn keys(&self) -> Vec<&str> {
        self.items.iter().map(|s| &*s.key).collect()
    }

    /// Acquires every key, in the global order, within the acquire timeout.
    ///
    /// # Errors
    /// The first key's error ([`Error::Timeout`](crate::Error::Timeout) when it stayed busy
    /// until the timeout); the keys taken before it are released (in the background) first.
    ///
    /// # Cancel safety
    /// Cancel safe: what was taken is released in the background.
    pub async fn acquire(&self) -> Result<MultiGuard> {
        let deadline = Instant::now().checked_add(self.acquire_timeout);
        let mut guards = Vec::with_capacity(self.items.len());
        for spec in &self.items {
            let mut spec = spec.clone();
            if let Some(lease) = self.lease {
                spec.set_lease(lease);
            }
            let left = deadline.map_or(self.acquire_timeout, |d| {
                d.saturating_duration_since(Instant::now())
            });
            // Dropping `guards` on an error releases what was taken.
            guards.push(spec.acquire(left).await?);
        }
        Ok(MultiGuard { guards })
    }

    /// A scoped section over every key: acquires them, runs `work` with their
    /// [`HeldLock`]s (in the order taken), releases them; cancels the work when any lease is
    /// lost, as [`Lock::run`](crate::Lock::run) does for one.
    ///
    /// # Errors
    /// [`Error::Reentrant`](crate::Error::Reentrant) when this task already holds one of the
    /// keys in an enclosing section; otherwise as [`acquire`](Self::acquire) and
    /// [`Lock::run`](crate::Lock::run).
    ///
    /// # Cancel safety
    /// Cancel safe: the work is dropped and the keys released in the background.
    pub async fn run<F, Fut>(&self, work: F) -> Result<Fut::Output>
    where
        F: FnOnce(Vec<HeldLock>) -> Fut,
        Fut: Future,
    {
        for spec in &self.items {
            let server = &self.client.pool_for(&spec.key)?.addr;
            section::check_reentry(server, spec.family, &spec.key)?;
        }
        let guard = self.acquire().await?;
        let work = work(guard.held());
        section::run(guard.guards, self.policy, work).await
    }
}

/// Every key of a [`MultiLock`], held: renewed in the background until released (or
/// dropped, which releases them in the background).
#[derive(Debug)]
#[must_use = "dropping the guard releases the locks"]
pub struct MultiGuard {
    guards: Vec<Guard>,
}

impl MultiGuard {
    /// The guard of each key, in the order taken.
    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// What the work needs to know of each key, in the order taken.
    #[must_use]
    pub fn held(&self) -> Vec<HeldLock> {
        self.guards.iter().map(Guard::held).collect()
    }

    /// Whether every lease is still held.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.guards.iter().all(|g| g.is_held())
    }

    /// Why a lease was lost, if one was (the first in the order taken).
    #[must_use]
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.guards.iter().find_map(|g| g.loss_reason())
    }

    /// Completes when any lease is lost, with its key and the reason.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn lost(&self) -> (String, LossReason) {
        let mut losses: Vec<_> = self.guards.iter().map(|g| Box::pin(g.lost())).collect();
        std::future::poll_fn(|cx| {
            for (i, lost) in losses.iter_mut().enumerate() {
                if let std::task::Poll::Ready(reason) = lost.as_mut().poll(cx) {
                    return std::task::Poll::Ready((self.guards[i].key().to_owned(), reason));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Releases every key and waits for the answers.
    ///
    /// # Errors
    /// The first error of [`Guard::release`]; every key is released either way.
    ///
    /// # Cancel safety
    /// Cancel safe: what is not released yet is released in the background.
    pub async fn release(self) -> Result<()> {
        let mut outcome = Ok(());
        for guard in self.guards {
            let released = guard.release().await;
            if outcome.is_ok() {
                outcome = released;
            }
        }
        outcome
    }
}
