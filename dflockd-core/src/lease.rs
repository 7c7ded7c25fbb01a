//! Lease timing and lease-loss signalling.
//!
//! [`LeasePolicy`] is a small pure state machine fed with [`Instant`]s: when to renew, and
//! until when the lease is known to be held. [`LeaseWatch`] is how a critical section learns
//! that its lease is gone.
//!
//! The rules:
//! * the local deadline is computed from the moment the last *successful* renew (or the
//!   acquire) was **sent**, minus a safety margin, on the monotonic clock; the server's expiry
//!   is always later (it starts counting when it *receives* the request);
//! * renewals happen at a fraction of the lease ([`ClientBuilder::renew_ratio`], jittered by
//!   ±10 %), never later than half the server's idle read timeout (the server drops a
//!   connection it read nothing from for that long, releasing its locks);
//! * a renew refused by the server, the death of the connection that holds the lock, or the
//!   deadline passing without a successful renew all mark the lease lost, whichever comes
//!   first. Nothing is ever re-acquired silently.
//!
//! [`ClientBuilder::renew_ratio`]: crate::ClientBuilder::renew_ratio

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::error::LossReason;
use crate::metrics;

const HELD: u8 = 0;
const RELEASED: u8 = 1;
const LOST: u8 = 2;
/// Being marked lost: still held to everyone until its metrics are recorded, so that whoever
/// sees the loss also sees it counted.
const LOSING: u8 = 3;

/// State shared between a guard, its watches and the connection that renews it.
#[derive(Debug)]
pub(crate) struct LeaseShared {
    state: AtomicU8,
    reason: OnceLock<LossReason>,
    lease_ms: AtomicU64,
    /// Created by the first watch: most grants are never watched.
    notify: OnceLock<Arc<Notify>>,
    /// Counted as held until it leaves the held state (nothing without the feature).
    pub(crate) metrics: metrics::Lease,
}

impl LeaseShared {
    /// The state of a grant that is not counted in the metrics (nobody holds it).
    pub(crate) fn new(lease: Duration) -> Arc<Self> {
        Self::with_metrics(lease, metrics::Lease::untracked())
    }

    /// The state of a grant registered on its connection: held by this process from now on.
    pub(crate) fn held(lease: Duration, labels: &metrics::Labels) -> Arc<Self> {
        Self::with_metrics(lease, metrics::Lease::held(labels))
    }

    fn with_metrics(lease: Duration, metrics: metrics::Lease) -> Arc<Self> {
        Arc::new(LeaseShared {
            state: AtomicU8::new(HELD),
            reason: OnceLock::new(),
            lease_ms: AtomicU64::new(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)),
            notify: OnceLock::new(),
            metrics,
        })
    }

    fn notify(&self) -> Arc<Notify> {
        self.notify.get_or_init(Arc::default).clone()
    }

    /// Wakes the watches (a watch created before this call is woken even if not yet polled).
    fn notify_watches(&self) {
        if let Some(notify) = self.notify.get() {
            notify.notify_waiters();
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), HELD | LOSING)
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn set_lease(&self, lease: Duration) {
        self.lease_ms.store(
            u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Marks the lease lost; returns false when it was not held any more.
    pub(crate) fn mark_lost(&self, reason: LossReason) -> bool {
        let _ = self.reason.set(reason);
        let was_held = self
            .state
            .compare_exchange(HELD, LOSING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if was_held {
            self.metrics.ended();
            self.metrics.lost(reason);
            self.state.store(LOST, Ordering::Release);
            self.notify_watches();
        }
        was_held
    }

    /// Marks the lease released by its owner; returns false when it was lost before.
    pub(crate) fn mark_released(&self) -> bool {
        let ok = self
            .state
            .compare_exchange(HELD, RELEASED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.metrics.ended();
            self.notify_watches();
        }
        ok
    }

    /// Why it is lost, once a loss has begun to be marked (for an owner whose release found
    /// it no longer held; [`loss`](Self::loss) waits for the marking to end).
    pub(crate) fn loss_begun(&self) -> Option<LossReason> {
        match self.state.load(Ordering::Acquire) {
            LOSING | LOST => self.reason.get().copied(),
            _ => None,
        }
    }

    pub(crate) fn loss(&self) -> Option<LossReason> {
        if self.state.load(Ordering::Acquire) == LOST {
            self.reason.get().copied()
        } else {
            None
        }
    }
}

impl Drop for LeaseShared {
    /// Leaves the held state, for the metrics, if nothing marked it released or lost (every
    /// path does; this keeps the count exact if one is added that does not).
    fn drop(&mut self) {
        if *self.state.get_mut() == HELD {
            self.metrics.ended();
        }
    }
}

/// A handle that tells whether a lease is still held, and wakes when it is lost.
///
/// Cheap to clone and `'static`, so it can be moved into the task doing the protected work
/// (or polled in a `select!` next to it). Obtained from a guard's `watch()`.
#[derive(Clone, Debug)]
pub struct LeaseWatch {
    shared: Arc<LeaseShared>,
}

impl LeaseWatch {
    pub(crate) fn new(shared: Arc<LeaseShared>) -> Self {
        LeaseWatch { shared }
    }

    /// The state it watches (which a guard also releases through).
    pub(crate) fn shared(&self) -> &Arc<LeaseShared> {
        &self.shared
    }

    /// Whether the lease is still held: not lost, not released.
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.shared.is_held()
    }

    /// Why the lease was lost, if it was.
    #[must_use]
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.shared.loss()
    }

    /// Completes when the lease is lost, with the reason.
    ///
    /// If the lock is released by its owner instead, the future never completes (there is
    /// nothing to react to); drop it together with the guard.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it has no effect on the lease.
    pub fn lost(&self) -> Lost {
        Lost {
            shared: self.shared.clone(),
            notified: Box::pin(self.shared.notify().notified_owned()),
        }
    }
}

/// Future returned by [`LeaseWatch::lost`] and the guards' `lost()`.
#[must_use = "futures do nothing unless polled"]
pub struct Lost {
    shared: Arc<LeaseShared>,
    notified: Pin<Box<OwnedNotified>>,
}

impl fmt::Debug for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lost")
            .field("held", &self.shared.is_held())
            .finish()
    }
}

impl Future for Lost {
    type Output = LossReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LossReason> {
        loop {
            // Register interest before checking, so a loss between the check and the wait
            // cannot be missed.
            self.notified.as_mut().enable();
            if let Some(reason) = self.shared.loss() {
                return Poll::Ready(reason);
            }
            match self.notified.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let notify = self.shared.notify();
                    self.notified = Box::pin(notify.notified_owned());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Lease timing rules (pure: no clock of its own).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LeasePolicy {
    /// Renew after this fraction of the lease.
    pub(crate) renew_ratio: f64,
    /// Never wait longer than this between renewals (half the server's idle read timeout).
    pub(crate) max_renew_interval: Duration,
}

/// When the next things happen for one held lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseTimes {
    /// Until when the lease is certainly held (a margin before the server's expiry).
    pub(crate) deadline: Instant,
    /// When to send the next renew.
    pub(crate) next_renew: Instant,
}

impl LeasePolicy {
    /// The safety margin subtracted from the lease: a tenth of it, between 20 ms and 2 s.
    pub(crate) fn margin(lease: Duration) -> Duration {
        (lease / 10).clamp(Duration::from_millis(20), Duration::from_secs(2))
    }

    /// The renew interval before jitter.
    pub(crate) fn interval(&self, lease: Duration) -> Duration {
        scale(lease, self.renew_ratio)
            .min(self.max_renew_interval)
            .max(Duration::from_millis(10))
    }

    /// Times after a grant or a successful renew whose request was sent at `sent`.
    /// `jitter` is in `[-1, 1]` and moves the renew by up to ±10 % of the interval.
    pub(crate) fn after_success(
        &self,
        sent: Instant,
        now: Instant,
        lease: Duration,
        jitter: f64,
    ) -> LeaseTimes {
        let deadline = sent + lease.saturating_sub(Self::margin(lease));
        let interval = self.interval(lease);
        let jittered = scale(interval, 1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
        // Renew no later than the deadline allows, and at least a little later than now.
        let next_renew = (sent + jittered).min(deadline).max(now);
        LeaseTimes {
            deadline,
            next_renew,
        }
    }

    /// When to retry after a transient refusal (draining, unknown status): soon, but not in a
    /// tight loop, and before the deadline.
    pub(crate) fn retry_at(&self, now: Instant, lease: Duration, deadline: Instant) -> Instant {
        let pause =
            (self.interval(lease) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        (now + pause).min(deadline).max(now)
    }
}

/// `d * factor` for a factor in `0..=2` and durations of at most years, to the nanosecond
/// (`Duration::mul_f64` is exact to the last bit, and many times slower: this runs for every
/// grant and renewal).
fn scale(d: Duration, factor: f64) -> Duration {
    // Through `u64` (centuries of nanoseconds): converting a `u128` to a float is a library
    // call. Saturating float-to-int cast: a negative or NaN product becomes 0.
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos((nanos as f64 * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LeasePolicy {
        LeasePolicy {
            renew_ratio: 1.0 / 3.0,
            max_renew_interval: Duration::from_millis(11_500),
        }
    }

    #[test]
    fn deadline_counts_from_send_time() {
        let t0 = Instant::now();
        let sent = t0;
        let now = t0 + Duration::from_millis(300);
        let times = policy().after_success(sent, now, Duration::from_secs(20), 0.0);
        assert_eq!(times.deadline, sent + Duration::from_secs(18));
        assert!(times.next_renew > now);
        assert!(times.next_renew <= sent + Duration::from_secs(7));
    }

    #[test]
    fn long_leases_renew_under_the_read_timeout() {
        let t0 = Instant::now();
        for lease in [60, 120, 3600] {
            let times = policy().after_success(t0, t0, Duration::from_secs(lease), 1.0);
            // Half of the 23 s read timeout plus 10 % jitter stays well below 23 s.
            assert!(
                times.next_renew - t0 <= Duration::from_millis(12_650),
                "{lease}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let t0 = Instant::now();
        let lease = Duration::from_secs(3);
        for jitter in [-1.0, -0.5, 0.0, 0.5, 1.0, 7.0] {
            let t = policy().after_success(t0, t0, lease, jitter);
            let d = (t.next_renew - t0).as_secs_f64();
            assert!((0.9..=1.1 + 1e-9).contains(&d), "{jitter} {d}");
        }
    }

    #[test]
    fn short_leases_keep_a_margin() {
        let t0 = Instant::now();
        let t = policy().after_success(t0, t0, Duration::from_secs(1), 0.0);
        assert_eq!(t.deadline, t0 + Duration::from_millis(900));
        assert!(t.next_renew < t.deadline);
        assert_eq!(
            LeasePolicy::margin(Duration::from_millis(100)),
            Duration::from_millis(20)
        );
        assert_eq!(
            LeasePolicy::margin(Duration::from_secs(600)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn late_answer_renews_immediately_not_in_the_past() {
        let t0 = Instant::now();
        // The answer to a renew sent at t0 arrives 2 s later with a 1 s lease.
        let now = t0 + Duration::from_secs(2);
        let t = policy().after_success(t0, now, Duration::from_secs(1), 0.0);
        assert!(t.deadline < now);
        assert_eq!(t.next_renew, now);
    }

    #[test]
    fn retry_is_bounded() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(30);
        let at = policy().retry_at(t0, Duration::from_secs(1), deadline);
        assert_eq!(at, deadline);
        let at = policy().retry_at(t0, Duration::from_secs(60), t0 + Duration::from_secs(50));
        assert_eq!(at, t0 + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn watch_wakes_on_loss_and_not_on_release() {
        let shared = LeaseShared::new(Duration::from_secs(1));
        let watch = LeaseWatch::new(shared.clone());
        let lost = watch.lost();
        assert!(watch.is_held());
        let waiter = tokio::spawn(lost);
        tokio::task::yield_now().await;
        assert!(shared.mark_lost(LossReason::ConnectionLost));
        assert!(!shared.mark_lost(LossReason::RenewRefused));
        assert_eq!(waiter.await.unwrap(), LossReason::ConnectionLost);
        assert_eq!(watch.loss_reason(), Some(LossReason::ConnectionLost));
        // Already lost: completes at once.
        assert_eq!(watch.lost().await, LossReason::ConnectionLost);

        let shared = LeaseShared::new(Duration::from_secs(1));
        let watch = LeaseWatch::new(shared.clone());
        assert!(shared.mark_released());
        assert!(!shared.mark_lost(LossReason::DeadlineExceeded));
        assert!(!watch.is_held());
        assert_eq!(watch.loss_reason(), None);
        let pending = tokio::time::timeout(Duration::from_millis(20), watch.lost()).await;
        assert!(pending.is_err());
    }
}
