//! The leases held through one connection: until when each is known to be held, when to renew
//! it, and which are lost. Pure bookkeeping: every method takes `now` (and the jitter it
//! should apply), so each rule is unit-tested with made-up instants.
//!
//! A lease's *deadline* is the send time of the request that last vouched for it (the acquire
//! or the last successful renew) plus the lease, minus a margin ([`LeasePolicy`]): the server
//! started counting later, when it received that request. Passing the deadline without a
//! newer successful renew loses the lease.
//!
//! A grant that comes after a server-side wait is the one exception. The server granted it
//! some time between the request's send time and its answer, and after a long wait nothing
//! tells when: the lease may have run out at the server already, or have most of its time
//! left. So when a wait lasted past the point where the first renewal would be due, the grant
//! is *confirming*: its owner sends a renew before handing it out, no deadline applies while
//! that renew is in flight (the renew's request timeout bounds it, and a refused renew means
//! the lease was gone), and the renew's answer dates the lease from the renew's send time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lease::{LeasePolicy, LeaseShared};
use crate::proto::{Family, Request, Token};

/// Where the renewal of one lease stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewal {
    /// Nothing in flight: the next renew goes out at `next_renew`.
    Idle,
    /// A background renew was sent; its answer moves the deadline.
    InFlight,
    /// A grant after a long wait, not vouched for until its confirming renew is answered
    /// (see the module docs): no deadline and no background renew meanwhile.
    Confirming,
}

/// One lease held through the connection.
pub(crate) struct Held {
    pub(crate) key: Arc<str>,
    pub(crate) family: Family,
    pub(crate) token: Token,
    /// The lease the server applied last, asked for again by every renew.
    pub(crate) lease: Duration,
    /// Shared with the guard: marked released by its owner (no more renewals from then on,
    /// although it stays here until the release is answered), or lost.
    pub(crate) shared: Arc<LeaseShared>,
    deadline: Instant,
    next_renew: Instant,
    renewal: Renewal,
    /// Bumped whenever the schedule changes, so older schedule entries are recognised as
    /// stale.
    seq: u64,
}

impl Held {
    /// Its owner is releasing it.
    fn releasing(&self) -> bool {
        !self.shared.is_held()
    }

    /// When the schedule must look at it next: the renew, or the deadline while a renew is
    /// in flight. `None` while confirming.
    fn next_event(&self) -> Option<Instant> {
        match self.renewal {
            Renewal::Idle => Some(self.next_renew.min(self.deadline)),
            Renewal::InFlight => Some(self.deadline),
            Renewal::Confirming => None,
        }
    }

    /// Whether a request sent at `sent` went out while the lease was vouched for (before the
    /// local deadline): a release sent then ended a fully protected section, even if the
    /// server had let the lease go by the time the release reached it.
    pub(crate) fn vouched_for_at(&self, sent: Instant) -> bool {
        self.renewal != Renewal::Confirming && sent <= self.deadline
    }
}

/// What a grant's registration decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    /// The grant needs a confirming renew before it is handed out.
    pub(crate) unconfirmed: bool,
    /// When the schedule must look at it first (`None` while confirming).
    pub(crate) wake_at: Option<Instant>,
}

/// What a look at the schedule found due.
#[derive(Default)]
pub(crate) struct Due {
    /// Leases whose deadline passed without a successful renew: no longer registered.
    pub(crate) lost: Vec<Held>,
    /// Leases to renew now (see [`Leases::start_renew`]).
    pub(crate) renew: Vec<u64>,
}

/// The leases of one connection and their renewal schedule.
pub(crate) struct Leases {
    policy: LeasePolicy,
    held: HashMap<u64, Held, BuildHasherDefault<IdHasher>>,
    /// `(when, lock id, seq)`, earliest first; entries whose `seq` is not the lease's current
    /// one are stale and skipped.
    schedule: BinaryHeap<Reverse<(Instant, u64, u64)>>,
}

impl Leases {
    pub(crate) fn new(policy: LeasePolicy) -> Self {
        Leases {
            policy,
            held: HashMap::default(),
            schedule: BinaryHeap::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub(crate) fn get(&self, lock_id: u64) -> Option<&Held> {
        self.held.get(&lock_id)
    }

    /// When the schedule must be looked at next.
    pub(crate) fn next_event(&self) -> Option<Instant> {
        self.schedule.peek().map(|Reverse((at, _, _))| *at)
    }

    fn schedule(&mut self, lock_id: u64) -> Option<Instant> {
        let h = self.held.get_mut(&lock_id)?;
        h.seq += 1;
        let at = h.next_event()?;
        self.schedule.push(Reverse((at, lock_id, h.seq)));
        Some(at)
    }

    /// Registers a grant whose request was sent at `sent` and answered at `now`. `after_wait`:
    /// the request waited server-side (a blocking acquire or a two-phase wait). `jitter` is in
    /// `[-1, 1]` (see [`LeasePolicy::after_success`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &mut self,
        lock_id: u64,
        family: Family,
        key: Arc<str>,
        token: Token,
        lease: Duration,
        shared: Arc<LeaseShared>,
        sent: Instant,
        now: Instant,
        after_wait: bool,
        jitter: f64,
    ) -> Registered {
        let times = self.policy.after_success(sent, now, lease, jitter);
        // Waited past the first renewal: the renew that would be due now confirms the grant.
        let unconfirmed = after_wait && now >= sent + self.policy.interval(lease);
        self.held.insert(
            lock_id,
            Held {
                key,
                family,
                token,
                lease,
                shared,
                deadline: times.deadline,
                next_renew: times.next_renew,
                renewal: if unconfirmed {
                    Renewal::Confirming
                } else {
                    Renewal::Idle
                },
                seq: 0,
            },
        );
        Registered {
            unconfirmed,
            wake_at: self.schedule(lock_id),
        }
    }

    /// A renew sent at `sent` was answered at `now` with `lease`: the deadline counts from
    /// `sent`. Returns when the schedule must look at the lease next (`None`: not held here).
    pub(crate) fn renewed(
        &mut self,
        lock_id: u64,
        sent: Instant,
        now: Instant,
        lease: Duration,
        jitter: f64,
    ) -> Option<Instant> {
        let h = self.held.get_mut(&lock_id)?;
        let times = self.policy.after_success(sent, now, lease, jitter);
        h.lease = lease;
        h.deadline = times.deadline;
        h.next_renew = times.next_renew;
        h.renewal = Renewal::Idle;
        h.shared.set_lease(lease);
        self.schedule(lock_id)
    }

    /// A renew was refused for now (draining, not the leader, an unknown status): retry soon,
    /// before the deadline, which does not move. A confirming lease stays as it is: its owner
    /// got the refusal and gives the grant up. Returns when to look at the lease next.
    pub(crate) fn retry_later(&mut self, lock_id: u64, now: Instant) -> Option<Instant> {
        let policy = self.policy;
        let h = self.held.get_mut(&lock_id)?;
        if h.renewal == Renewal::Confirming {
            return None;
        }
        h.renewal = Renewal::Idle;
        h.next_renew = policy.retry_at(now, h.lease, h.deadline);
        self.schedule(lock_id)
    }

    /// Forgets a lease (released, refused, or its guard dropped). Its schedule entries go
    /// stale (skipped, and pruned when they pile up); once nothing is held they are all
    /// stale, and dropped at once: a connection that takes and gives back one lock after
    /// another keeps an empty schedule.
    pub(crate) fn forget(&mut self, lock_id: u64) -> Option<Held> {
        let held = self.held.remove(&lock_id);
        if self.held.is_empty() {
            self.schedule.clear();
        }
        held
    }

    /// Every lease, forgotten (the connection died).
    pub(crate) fn take_all(&mut self) -> Vec<Held> {
        self.schedule.clear();
        self.held.drain().map(|(_, h)| h).collect()
    }

    /// What is due at `now`: lost leases (taken out) and renewals to send, counting as due
    /// what falls within `coalesce` from now (sent together in one write).
    pub(crate) fn due(&mut self, now: Instant, coalesce: Duration) -> Due {
        let mut due = Due::default();
        let mut later = Vec::new();
        while let Some(&Reverse(entry)) = self.schedule.peek() {
            let (at, lock_id, seq) = entry;
            if at > now + coalesce {
                break;
            }
            self.schedule.pop();
            let Some(h) = self.held.get(&lock_id) else {
                continue;
            };
            if h.seq != seq || h.releasing() || h.renewal == Renewal::Confirming {
                continue;
            }
            if h.deadline <= now {
                if let Some(h) = self.held.remove(&lock_id) {
                    due.lost.push(h);
                }
            } else {
                if h.renewal == Renewal::Idle && h.next_renew <= now + coalesce {
                    due.renew.push(lock_id);
                }
                later.push(entry);
            }
        }
        self.schedule.extend(later.into_iter().map(Reverse));
        // Forgotten and renewed leases leave stale entries behind; drop them when they
        // dominate.
        if self.schedule.len() > 64 && self.schedule.len() > 4 * self.held.len() {
            let held = &self.held;
            self.schedule.retain(|Reverse((_, id, seq))| {
                held.get(id)
                    .is_some_and(|h| h.seq == *seq && !h.releasing())
            });
        }
        due
    }

    /// Encodes a background renew of `lock_id` into `out` and marks it in flight; returns the
    /// lease's deadline (the write must be done by then), or `None` when the lease is not
    /// (or no longer) one to renew.
    pub(crate) fn start_renew(&mut self, lock_id: u64, out: &mut Vec<u8>) -> Option<Instant> {
        let h = self.held.get_mut(&lock_id)?;
        if h.renewal != Renewal::Idle || h.releasing() {
            return None;
        }
        let request = Request::Renew {
            family: h.family,
            key: &h.key,
            token: h.token.as_str(),
            lease_s: Some(h.lease.as_secs()),
        };
        request.encode(out).ok()?;
        h.renewal = Renewal::InFlight;
        let deadline = h.deadline;
        self.schedule(lock_id);
        Some(deadline)
    }
}

/// Hashes the sequential lock ids: a multiply spreads them well enough, far cheaper than
/// SipHash (they come from this process, so there is nothing to defend against).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LossReason;

    const COALESCE: Duration = Duration::from_millis(25);

    fn leases() -> Leases {
        Leases::new(LeasePolicy {
            renew_ratio: 1.0 / 3.0,
            max_renew_interval: Duration::from_millis(11_500),
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Registers lock `id` with a `lease_s` lease, sent at `sent`, answered at `now`.
    fn grant(
        l: &mut Leases,
        id: u64,
        lease_s: u64,
        sent: Instant,
        now: Instant,
        after_wait: bool,
    ) -> Registered {
        let lease = Duration::from_secs(lease_s);
        l.register(
            id,
            Family::Lock,
            "k".into(),
            Token::from_parts(id, 7),
            lease,
            LeaseShared::new(lease),
            sent,
            now,
            after_wait,
            0.0,
        )
    }

    #[test]
    fn a_quick_grant_is_vouched_for_from_its_send_time() {
        let t0 = Instant::now();
        let mut l = leases();
        let r = grant(&mut l, 1, 3, t0, t0 + ms(5), true);
        assert!(!r.unconfirmed);
        // First renew after a third of the lease.
        assert_eq!(r.wake_at, Some(t0 + ms(1000)));
        let h = l.get(1).unwrap();
        assert!(h.vouched_for_at(t0 + ms(2700)));
        assert!(!h.vouched_for_at(t0 + ms(2701)));
    }

    #[test]
    fn a_grant_after_a_long_wait_waits_for_its_confirmation_and_is_never_lost_meanwhile() {
        let t0 = Instant::now();
        for waited in [ms(1000), ms(2000), ms(5000), ms(60_000)] {
            let mut l = leases();
            let granted_at = t0 + waited;
            let r = grant(&mut l, 1, 2, t0, granted_at, true);
            assert!(r.unconfirmed, "{waited:?}");
            assert_eq!(r.wake_at, None);
            // However long the confirmation takes, nothing is lost or renewed behind it.
            for later in [0, 100, 1_900, 10_000] {
                let due = l.due(granted_at + ms(later), COALESCE);
                assert!(due.lost.is_empty() && due.renew.is_empty(), "{waited:?}");
            }
            assert!(!l.get(1).unwrap().vouched_for_at(granted_at));
            // The confirming renew, sent 10 ms after the grant, answered 50 ms later.
            let sent = granted_at + ms(10);
            let next = l.renewed(1, sent, sent + ms(50), Duration::from_secs(2), 0.0);
            assert_eq!(next, Some(sent + ms(666) + Duration::from_nanos(666_666)));
            let h = l.get(1).unwrap();
            assert!(h.vouched_for_at(sent + ms(1800)));
            assert!(!h.vouched_for_at(sent + ms(1801)));
            // From now on the usual rules: renewals come due, a deadline is enforced.
            let due = l.due(sent + ms(700), COALESCE);
            assert_eq!(due.renew, vec![1]);
            let mut buf = Vec::new();
            assert_eq!(l.start_renew(1, &mut buf), Some(sent + ms(1800)));
            assert!(buf.starts_with(b"n\nk\n"));
            let due = l.due(sent + ms(1800), COALESCE);
            assert_eq!(due.lost.len(), 1);
            assert!(l.is_empty());
        }
    }

    #[test]
    fn the_wait_that_needs_a_confirmation_is_the_first_renew_interval() {
        let t0 = Instant::now();
        let mut l = leases();
        // 3 s lease: renew every second. A grant 999 ms after its request is used as it is.
        assert!(!grant(&mut l, 1, 3, t0, t0 + ms(999), true).unconfirmed);
        assert!(grant(&mut l, 2, 3, t0, t0 + ms(1000), true).unconfirmed);
        // A try-once answered late (no server-side wait) is never confirmed: its lease is
        // dated from the send time, and a late answer just renews at once.
        let r = grant(&mut l, 3, 3, t0, t0 + ms(1500), false);
        assert!(!r.unconfirmed);
        assert_eq!(r.wake_at, Some(t0 + ms(1500)));
    }

    #[test]
    fn a_renew_in_flight_past_the_deadline_loses_the_lease() {
        let t0 = Instant::now();
        let mut l = leases();
        grant(&mut l, 1, 1, t0, t0, false);
        let due = l.due(t0 + ms(340), COALESCE);
        assert_eq!(due.renew, vec![1]);
        let mut buf = Vec::new();
        let deadline = l.start_renew(1, &mut buf).unwrap();
        assert_eq!(deadline, t0 + ms(900));
        // Not due again while in flight.
        assert!(l.due(t0 + ms(600), COALESCE).renew.is_empty());
        assert!(l.start_renew(1, &mut buf).is_none());
        let due = l.due(t0 + ms(900), COALESCE);
        assert_eq!(due.lost.len(), 1);
        assert!(due.lost[0].shared.mark_lost(LossReason::DeadlineExceeded));
        assert!(l.is_empty() && l.next_event().is_none());
    }

    #[test]
    fn a_transient_refusal_retries_before_the_deadline_which_stays() {
        let t0 = Instant::now();
        let mut l = leases();
        grant(&mut l, 1, 1, t0, t0, false);
        l.due(t0 + ms(340), COALESCE);
        l.start_renew(1, &mut Vec::new());
        let at = l.retry_later(1, t0 + ms(400)).unwrap();
        // A quarter of the renew interval later.
        assert_eq!(at, t0 + ms(400) + Duration::from_nanos(83_333_333));
        assert_eq!(l.due(at, COALESCE).renew, vec![1]);
        // A confirming grant is left to its owner, who got the refusal.
        grant(&mut l, 2, 1, t0, t0 + ms(5000), true);
        assert_eq!(l.retry_later(2, t0 + ms(5000)), None);
    }

    #[test]
    fn released_and_forgotten_leases_leave_nothing_behind() {
        let t0 = Instant::now();
        let mut l = leases();
        for id in 1..=100 {
            grant(&mut l, id, 1, t0, t0, false);
        }
        // Owners releasing: no more renewals.
        for id in 1..=100 {
            assert!(l.get(id).unwrap().shared.mark_released());
        }
        let due = l.due(t0 + ms(2000), COALESCE);
        assert!(due.renew.is_empty() && due.lost.is_empty());
        for id in 1..=100 {
            assert!(l.forget(id).is_some());
        }
        assert!(l.is_empty());
        assert_eq!(l.next_event(), None);
        assert!(l.forget(1).is_none());
    }

    #[test]
    fn stale_schedule_entries_are_pruned() {
        let t0 = Instant::now();
        let mut l = leases();
        grant(&mut l, 0, 600, t0, t0, false);
        for id in 1..=300 {
            grant(&mut l, id, 1, t0, t0, false);
            l.forget(id);
        }
        assert!(l.schedule.len() > 64);
        l.due(t0, COALESCE);
        assert_eq!(l.schedule.len(), 1);
        assert_eq!(l.take_all().len(), 1);
        assert!(l.is_empty() && l.next_event().is_none());
    }
}
