//! [`Semaphore`]: a distributed counting semaphore on one key.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::acquire::{Enqueued, Spec};
#[cfg(doc)]
use crate::error::LossReason;
use crate::error::{Error, Result};
use crate::guard::{Guard, HeldLock};
use crate::inner::ClientInner;
use crate::proto::Family;
use crate::section::OnLeaseLoss;

/// A distributed counting semaphore: up to `limit` holders of one key at once, the rest
/// queued in FIFO order.
///
/// Made by [`Client::semaphore`](crate::Client::semaphore); the same surface as
/// [`Lock`](crate::Lock), and a limit.
///
/// ```no_run
/// # async fn f(client: dflockd_core::Client) -> Result<(), dflockd_core::Error> {
/// // At most 3 exports at once, across every replica.
/// let slot = client.semaphore("exports", 3).acquire().await?;
/// assert_eq!(slot.limit(), 3);
/// slot.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Semaphore {
    spec: Spec,
}

impl Semaphore {
    pub(crate) fn new(client: Arc<ClientInner>, key: String, limit: u32) -> Self {
        Semaphore {
            spec: Spec::new(client, Family::Semaphore, key, limit),
        }
    }

    #[cfg(feature = "blocking")]
    pub(crate) fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Holders allowed at once.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.spec.limit
    }

    /// How long [`acquire`](Self::acquire) queues for a slot before giving up
    /// ([`Error::Timeout`]); rounded up to whole seconds on the wire. Zero means try
    /// once. Default is the client's (10 s unless configured).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.spec.set_acquire_timeout(timeout);
        self
    }

    /// The lease: how long the server keeps the slot without a renew. Renewed in the
    /// background while the guard lives; rounded up to whole seconds. Default is the
    /// client's (the server's default, 33 s, unless configured).
    #[must_use]
    pub fn lease_ttl(mut self, lease: Duration) -> Self {
        self.spec.set_lease(lease);
        self
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.spec.key
    }

    /// Acquires, queueing (FIFO) up to the acquire timeout.
    ///
    /// An uncontended acquire costs one round trip on a shared, already open
    /// connection. When the key is busy the request joins the server's queue on a
    /// connection of its own, so that its wait cannot hold up anything else.
    ///
    /// The wait may be far longer than the lease: a grant that arrives after a wait
    /// past its first renewal is confirmed with a renew (one more round trip) before
    /// it is handed out, and its lease then counts from that renew.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no slot opened in time ([`Error::is_timeout`]);
    /// [`Error::InvalidArgument`] for a bad key or a zero lease (nothing is sent);
    /// [`Error::LimitMismatch`], [`Error::MaxLocks`], [`Error::MaxWaiters`],
    /// [`Error::Draining`], [`Error::AuthRejected`] from the server; connection and
    /// protocol errors; [`Error::LeaseLost`] when the renew confirming a grant after
    /// a long wait was refused ([`LossReason::RenewRefused`]: the grant's lease had
    /// run out at the server before the answer reached this client, which only a
    /// network or process stall makes possible) or its connection failed
    /// ([`LossReason::ConnectionLost`]); [`Error::NotFenced`] when the client was told its
    /// servers issue fences and the grant carries none; [`Error::PoolExhausted`] when every
    /// connection the client may open to the server is in use.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future never leaves the lock held or a wait queued.
    /// A grant that arrives after cancellation is released at once; a server-side
    /// wait is abandoned by closing its connection.
    pub async fn acquire(&self) -> Result<Guard> {
        self.spec.acquire(self.spec.acquire_timeout).await
    }

    /// Tries once without waiting: `Ok(None)` when the key is busy.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), except that a busy key is `Ok(None)`.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`acquire`](Self::acquire).
    pub async fn try_acquire(&self) -> Result<Option<Guard>> {
        match self.spec.acquire(Duration::ZERO).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Two-phase acquisition, first half: joins the queue without waiting.
    ///
    /// Returns [`Enqueued::Acquired`] when a slot was free (the guard is renewing
    /// already) or [`Enqueued::Queued`], whose [`wait`](crate::Queued::wait) blocks
    /// server-side. Do the work you need between the two (notify another system,
    /// record telemetry). The connection is kept for the wait, as the protocol
    /// requires; call `wait` before the server's read timeout (23 s by default)
    /// closes it for idleness.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire) (there is no timeout here).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the connection, which leaves the
    /// queue (and releases a grant that raced with the cancellation).
    pub async fn enqueue(&self) -> Result<Enqueued> {
        self.spec.enqueue().await
    }

    /// What [`run`](Self::run) does when the lease is lost while the work runs. Default is
    /// [`OnLeaseLoss::Cancel`]: the work is dropped and `run` returns [`Error::LeaseLost`].
    #[must_use]
    pub fn on_lease_loss(mut self, on_loss: OnLeaseLoss) -> Self {
        self.spec.policy.on_lease_loss = on_loss;
        self
    }

    /// [`run`](Self::run) keeps the slot at least this long from the grant, even when the
    /// work ends sooner (it is released in the background once the time is up), so that a fast
    /// job does not run again on a replica whose schedule fires a moment later. Default is
    /// zero.
    #[must_use]
    pub fn hold_at_least(mut self, hold: Duration) -> Self {
        self.spec.policy.hold_at_least = hold;
        self
    }

    /// A scoped critical section: acquires, runs `work` with the held slot, and releases
    /// when it ends; returns the work's output.
    ///
    /// ```no_run
    /// # async fn f(client: dflockd_core::Client) -> Result<(), dflockd_core::Error> {
    /// # async fn charge(_: u64, _: Option<u64>) {}
    /// let charged = client
    ///     .semaphore("payments", 4)
    ///     .run(|held| async move {
    ///         charge(42, held.fence()).await;
    ///         "charged"
    ///     })
    ///     .await?;
    /// # let _ = charged; Ok(()) }
    /// ```
    ///
    /// While the work runs, the lease is watched: when it is lost, the work is cancelled
    /// (dropped at its next `.await`) and `run` returns [`Error::LeaseLost`] with the fence
    /// the work held ([`on_lease_loss`](Self::on_lease_loss) can let it finish instead).
    /// Inside the work, [`current_lock`](crate::current_lock) returns the held slot, and
    /// acquiring the same key again in the same task fails at once with
    /// [`Error::Reentrant`] instead of waiting for itself.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire); [`Error::Reentrant`] when this task already runs in a
    /// section holding the key (nothing is sent); [`Error::LeaseLost`] when the lease was
    /// lost before the work ended, or when the release shows that the section was not fully
    /// protected (both with [`OnLeaseLoss::Cancel`]; with [`OnLeaseLoss::Finish`] the loss is
    /// logged and the output returned). A release that fails otherwise (the server is
    /// unreachable) is logged, and the output returned: the lease ends at the server.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the work and releases the slot in the
    /// background.
    pub async fn run<F, Fut>(&self, work: F) -> Result<Fut::Output>
    where
        F: FnOnce(HeldLock) -> Fut,
        Fut: Future,
    {
        self.spec.run(work).await
    }
}
