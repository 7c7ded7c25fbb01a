//! What a connection knows, behind its state lock: the requests waiting for answers, answers
//! waiting for their callers, the leases held, background releases to send, the reservation,
//! and whether it is dead. Its transitions are plain methods fed with `now`, unit-tested
//! without sockets; the I/O code in the other files calls them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use super::call::{Answer, CallerId, Pending, PendingCall};
use super::leases::Leases;
use crate::error::{Error, Result};
use crate::lease::LeasePolicy;
use crate::metrics;
use crate::proto::{Expect, Family, Token};

/// How many request timeouts a `stats` answer that keeps arriving may take in all (see
/// [`State::stats_arriving`]).
pub(crate) const STATS_TIMEOUTS: u32 = 12;

pub(crate) struct State {
    /// Requests sent, oldest first: answers come in this order.
    pub(crate) pending: VecDeque<Pending>,
    /// Answers read by someone other than their caller, until the caller takes them (no
    /// channel per request).
    pub(crate) delivered: Vec<(CallerId, Result<Answer>)>,
    /// The leases held through this connection and their renewal schedule.
    pub(crate) leases: Leases,
    /// Releases to send in the background (dropped guards, abandoned grants, lost leases),
    /// and what each counts with in the metrics.
    pub(crate) releases: Vec<(Family, Arc<str>, Token, metrics::Release)>,
    /// The id of the reservation for a blocking request, if any.
    pub(crate) parked: Option<u64>,
    /// Why the connection died, once it has.
    pub(crate) dead: Option<String>,
    /// When a request was last written.
    pub(crate) last_used: Instant,
    /// When the maintenance task will look at the connection next (it sleeps until then).
    pub(crate) maint_at: Option<Instant>,
    /// The client that owns the connection is gone: close once idle.
    pub(crate) client_gone: bool,
    /// The connection's slot in the pool's connection cap, given back when it dies.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// What [`State::expire`] found.
#[derive(Default)]
pub(crate) struct Expired {
    /// The oldest request went unanswered past its deadline: the connection is dead.
    pub(crate) kill: Option<&'static str>,
    /// Callers to wake: their answer is a timeout now.
    pub(crate) wake: Vec<Waker>,
}

impl State {
    pub(crate) fn new(
        policy: LeasePolicy,
        parked: Option<u64>,
        permit: Option<OwnedSemaphorePermit>,
        now: Instant,
    ) -> Self {
        State {
            pending: VecDeque::new(),
            delivered: Vec::new(),
            leases: Leases::new(policy),
            releases: Vec::new(),
            parked,
            dead: None,
            last_used: now,
            maint_at: None,
            client_gone: false,
            permit,
        }
    }

    /// Takes the answer delivered to `caller`, if any.
    pub(crate) fn take_delivered(&mut self, caller: CallerId) -> Option<Result<Answer>> {
        let at = self.delivered.iter().position(|(c, _)| *c == caller)?;
        Some(self.delivered.swap_remove(at).1)
    }

    /// The waker slot of `caller`'s pending request, if it is still pending.
    pub(crate) fn waiter_of(&mut self, caller: CallerId) -> Option<&mut Option<Waker>> {
        self.pending.iter_mut().find_map(|p| match p {
            Pending::Call(call) if call.caller == caller => Some(&mut call.waiter),
            _ => None,
        })
    }

    /// Nothing pending, nothing held, no reservation.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.leases.is_empty() && self.parked.is_none()
    }

    /// Whether the connection can be reserved for a blocking request: alive, not reserved,
    /// holding nothing, carrying nothing (a request queued behind a blocking one would wait
    /// for it).
    pub(crate) fn parkable(&self) -> bool {
        self.dead.is_none()
            && self.parked.is_none()
            && self.leases.is_empty()
            && self.pending.is_empty()
            && self.releases.is_empty()
    }

    /// Requests that went unanswered past their deadline, and callers whose patience ran out,
    /// at `now`. The oldest request past its deadline kills the connection (answers come in
    /// order: none will come now), its caller learning of it as a timeout. A caller whose
    /// patience ran out gets its timeout and stops waiting; its answer, when it comes, is
    /// dropped (a grant in it released).
    pub(crate) fn expire(&mut self, now: Instant, server: &str) -> Expired {
        let mut expired = Expired::default();
        let timeout = |since: Instant, at: Instant| Error::RequestTimeout {
            server: server.to_owned(),
            after: at.saturating_duration_since(since),
        };
        if self.pending.front().is_some_and(|p| p.deadline() <= now) {
            expired.kill = Some("no answer within the request timeout");
            if let Some(Pending::Call(PendingCall {
                waiter: Some(waker),
                sent,
                deadline,
                caller,
                ..
            })) = self.pending.pop_front()
            {
                self.delivered.push((caller, Err(timeout(sent, deadline))));
                expired.wake.push(waker);
            }
        }
        for p in &mut self.pending {
            let Pending::Call(call) = p else { continue };
            let Some(at) = call.give_up.filter(|at| *at <= now) else {
                continue;
            };
            if let Some(waker) = call.waiter.take() {
                self.delivered
                    .push((call.caller, Err(timeout(call.sent, at))));
                expired.wake.push(waker);
            }
        }
        expired
    }

    /// Takes the oldest request, answered (or failed) at `now()`. The server answers in
    /// order, so the next request's answer could not come before this one's: its request
    /// timeout counts from now if it was sent earlier (a request queued behind a slow
    /// answer is not taken for one the server ignores). The clock is read only when another
    /// request waits.
    #[inline]
    pub(crate) fn take_answered(
        &mut self,
        now: impl FnOnce() -> Instant,
        request_timeout: Duration,
    ) -> Option<Pending> {
        let answered = self.pending.pop_front();
        if let Some(next) = self.pending.front_mut() {
            next.deadline_not_before(now() + request_timeout);
        }
        answered
    }

    /// A piece of an answer too long to read, being skipped, arrived at `now`: the server is
    /// still answering the requests before the oldest one, which gets `request_timeout` more
    /// from now, but no later than `until` (the skip takes at most as long as reading the
    /// answer could have).
    pub(crate) fn skipped_arriving(
        &mut self,
        now: Instant,
        request_timeout: Duration,
        until: Instant,
    ) {
        if let Some(next) = self.pending.front_mut() {
            next.deadline_not_before((now + request_timeout).min(until));
        }
    }

    /// A piece of the answer to the oldest request, a `stats` answer too long for one read,
    /// arrived at `now`: the server is answering, so the request gets `request_timeout` more
    /// from now, up to [`STATS_TIMEOUTS`] request timeouts since it was sent (a server that
    /// knows very many keys, on a slow link, is not taken for a dead one).
    pub(crate) fn stats_arriving(&mut self, now: Instant, request_timeout: Duration) {
        if let Some(Pending::Call(call)) = self.pending.front_mut() {
            if call.expect == Expect::Stats {
                let limit = call.sent + request_timeout * STATS_TIMEOUTS;
                call.deadline = call.deadline.max((now + request_timeout).min(limit));
            }
        }
    }

    /// Why to close the connection at `now`, if it should be: idle while its client is gone,
    /// or idle for `idle_timeout` since its last request.
    pub(crate) fn retire(&self, now: Instant, idle_timeout: Duration) -> Option<&'static str> {
        if !self.is_idle() {
            None
        } else if self.client_gone {
            Some("client dropped")
        } else if now.duration_since(self.last_used) >= idle_timeout {
            Some("idle")
        } else {
            None
        }
    }

    /// When the maintenance task must look again: the next lease event, the oldest request's
    /// deadline, the idle retirement; at the latest one `tick` from `now`, so that requests
    /// never need to wake it to have their deadline or their caller's patience watched.
    pub(crate) fn next_look(
        &self,
        now: Instant,
        idle_timeout: Duration,
        tick: Duration,
    ) -> Instant {
        let mut next = now + tick;
        if let Some(at) = self.leases.next_event() {
            next = next.min(at);
        }
        if let Some(p) = self.pending.front() {
            next = next.min(p.deadline());
        }
        if self.is_idle() {
            next = next.min(self.last_used + idle_timeout);
        }
        next
    }

    /// The summary flags of this state (see [`Summary`]).
    fn flags(&self) -> u8 {
        let mut flags = IDLE;
        if self.parked.is_some() {
            flags |= PARKED;
        }
        if self.dead.is_some() {
            flags |= DEAD;
        }
        if !self.leases.is_empty() || !self.releases.is_empty() {
            flags |= BUSY;
        }
        flags
    }
}

/// A lock-free copy of what the pool and the callers look at, refreshed whenever the state
/// lock is released.
#[derive(Default)]
pub(crate) struct Summary {
    pub(crate) pending: AtomicUsize,
    /// Shared requests the pool handed this connection that have not ended: counted from
    /// the pick, before they are sent, so that two callers picking at once do not both take
    /// a connection that looks free.
    pub(crate) claims: AtomicUsize,
    pub(crate) flags: AtomicU8,
    /// Answers in [`State::delivered`]: callers look without the lock (usually there are none).
    pub(crate) delivered: AtomicUsize,
    /// The connection's gauges in the metrics (nothing without the feature).
    pub(crate) gauges: metrics::ConnGauges,
}

pub(crate) const IDLE: u8 = 0;
pub(crate) const PARKED: u8 = 1;
pub(crate) const DEAD: u8 = 2;
/// Holds locks or has background releases queued: not parkable.
pub(crate) const BUSY: u8 = 4;

/// Load figures used by the pool to pick a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    /// Requests in flight, or handed to callers that are about to send them.
    pub(crate) pending: usize,
    pub(crate) parked: bool,
    pub(crate) dead: bool,
    /// Holds locks or has background releases queued.
    pub(crate) holding: bool,
}

impl Summary {
    pub(crate) fn load(&self) -> Load {
        let flags = self.flags.load(Ordering::Acquire);
        Load {
            pending: self
                .pending
                .load(Ordering::Acquire)
                .max(self.claims.load(Ordering::Acquire)),
            parked: flags & PARKED != 0,
            dead: flags & DEAD != 0,
            holding: flags & BUSY != 0,
        }
    }

    /// The summary of a new connection, with its gauges.
    pub(crate) fn new(gauges: metrics::ConnGauges) -> Self {
        Summary {
            gauges,
            ..Summary::default()
        }
    }

    /// Stores what changed (every thread that picks a connection reads these; a store takes
    /// the cache line away from all of them), and reports it to the gauges. Called under the
    /// state lock.
    pub(crate) fn publish(&self, st: &State) {
        let flags = st.flags();
        self.gauges.report(
            st.dead.is_some(),
            !st.pending.is_empty() || flags & (PARKED | BUSY) != 0,
            st.pending.len(),
        );
        if self.flags.load(Ordering::Relaxed) != flags {
            self.flags.store(flags, Ordering::Release);
        }
        if self.pending.load(Ordering::Relaxed) != st.pending.len() {
            self.pending.store(st.pending.len(), Ordering::Release);
        }
        if self.delivered.load(Ordering::Relaxed) != st.delivered.len() {
            self.delivered.store(st.delivered.len(), Ordering::Release);
        }
    }
}

/// The state lock; publishes the [`Summary`] when released.
pub(crate) struct StateGuard<'a> {
    pub(crate) guard: MutexGuard<'a, State>,
    pub(crate) summary: &'a Summary,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.summary.publish(&self.guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseShared;
    use crate::proto::{Command, Expect};

    fn state(now: Instant) -> State {
        let policy = LeasePolicy {
            renew_ratio: 1.0 / 3.0,
            max_renew_interval: Duration::from_millis(11_500),
        };
        State::new(policy, None, None, now)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn call(
        caller: CallerId,
        sent: Instant,
        deadline: Instant,
        give_up: Option<Instant>,
    ) -> Pending {
        Pending::Call(PendingCall {
            expect: Expect::Release,
            waiter: Some(Waker::noop().clone()),
            sent,
            deadline,
            give_up,
            grant: None,
            blocking: false,
            command: Command::Release,
            key: None,
            caller,
            forget: None,
        })
    }

    #[test]
    fn a_request_past_its_deadline_kills_the_connection_and_times_its_caller_out() {
        let t0 = Instant::now();
        let mut st = state(t0);
        st.pending.push_back(call(7, t0, t0 + ms(100), None));
        st.pending.push_back(call(8, t0, t0 + ms(200), None));
        let expired = st.expire(t0 + ms(99), "s:1");
        assert!(expired.kill.is_none() && expired.wake.is_empty());
        let expired = st.expire(t0 + ms(100), "s:1");
        assert_eq!(expired.kill, Some("no answer within the request timeout"));
        assert_eq!(expired.wake.len(), 1);
        assert!(matches!(
            st.take_delivered(7),
            Some(Err(Error::RequestTimeout { after, .. })) if after == ms(100)
        ));
        assert!(st.take_delivered(8).is_none());
        assert_eq!(st.pending.len(), 1);
    }

    #[test]
    fn a_stats_answer_arriving_moves_its_deadline_up_to_twelve_request_timeouts() {
        let t0 = Instant::now();
        let mut st = state(t0);
        let mut stats = call(1, t0, t0 + ms(100), None);
        if let Pending::Call(c) = &mut stats {
            c.expect = Expect::Stats;
        }
        st.pending.push_back(stats);
        st.stats_arriving(t0 + ms(50), ms(100));
        assert_eq!(st.pending[0].deadline(), t0 + ms(150));
        // Never earlier than it was, never past 12 request timeouts from the send.
        st.stats_arriving(t0 + ms(20), ms(100));
        assert_eq!(st.pending[0].deadline(), t0 + ms(150));
        st.stats_arriving(t0 + ms(1_150), ms(100));
        assert_eq!(st.pending[0].deadline(), t0 + ms(1_200));
        assert!(st.expire(t0 + ms(1_199), "s:1").kill.is_none());
        assert!(st.expire(t0 + ms(1_200), "s:1").kill.is_some());
        // Only a `stats` answer: another request's deadline stays.
        st.pending.push_back(call(2, t0, t0 + ms(100), None));
        st.stats_arriving(t0 + ms(50), ms(100));
        assert_eq!(st.pending[0].deadline(), t0 + ms(100));
    }

    #[test]
    fn a_request_queued_behind_an_answer_gets_its_request_timeout_from_that_answer() {
        let t0 = Instant::now();
        let mut st = state(t0);
        st.pending.push_back(call(1, t0, t0 + ms(100), None));
        st.pending.push_back(call(2, t0, t0 + ms(100), None));
        st.pending.push_back(call(3, t0, t0 + ms(5_000), None));
        // The first is answered late (its own deadline was 100 ms): the second, sent with it,
        // counts its 100 ms from that answer.
        assert!(st.take_answered(|| t0 + ms(90), ms(100)).is_some());
        assert_eq!(st.pending[0].deadline(), t0 + ms(190));
        assert!(st.expire(t0 + ms(189), "s:1").kill.is_none());
        // A later deadline (a request that waits server-side) is never moved earlier.
        assert!(st.take_answered(|| t0 + ms(150), ms(100)).is_some());
        assert_eq!(st.pending[0].deadline(), t0 + ms(5_000));
        // Nothing behind it: the clock is not read.
        assert!(
            st.take_answered(|| panic!("no clock read needed"), ms(100))
                .is_some()
        );
        assert!(st.pending.is_empty());
    }

    #[test]
    fn pieces_of_a_skipped_answer_move_the_next_deadline_up_to_the_skip_limit() {
        let t0 = Instant::now();
        let mut st = state(t0);
        st.pending.push_back(call(1, t0, t0 + ms(100), None));
        st.skipped_arriving(t0 + ms(80), ms(100), t0 + ms(1_000));
        assert_eq!(st.pending[0].deadline(), t0 + ms(180));
        st.skipped_arriving(t0 + ms(950), ms(100), t0 + ms(1_000));
        assert_eq!(st.pending[0].deadline(), t0 + ms(1_000));
        assert!(st.expire(t0 + ms(1_000), "s:1").kill.is_some());
    }

    #[test]
    fn a_caller_out_of_patience_gets_its_timeout_and_its_answer_will_be_dropped() {
        let t0 = Instant::now();
        let mut st = state(t0);
        st.pending.push_back(call(1, t0, t0 + ms(5000), None));
        st.pending
            .push_back(call(2, t0, t0 + ms(5000), Some(t0 + ms(300))));
        let expired = st.expire(t0 + ms(300), "s:1");
        assert!(expired.kill.is_none());
        assert_eq!(expired.wake.len(), 1);
        assert!(matches!(
            st.take_delivered(2),
            Some(Err(Error::RequestTimeout { .. }))
        ));
        // Still pending (its answer will come and be dropped), nobody waits for it now.
        assert_eq!(st.pending.len(), 2);
        assert!(matches!(st.waiter_of(2), Some(None)));
        assert!(matches!(st.waiter_of(1), Some(Some(_))));
        // Timed out once only.
        assert!(st.expire(t0 + ms(400), "s:1").wake.is_empty());
    }

    #[test]
    fn an_idle_connection_retires_after_the_idle_timeout_or_with_its_client() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(15);
        let mut st = state(t0);
        assert_eq!(st.retire(t0 + ms(14_999), idle), None);
        assert_eq!(st.retire(t0 + idle, idle), Some("idle"));
        st.client_gone = true;
        assert_eq!(st.retire(t0, idle), Some("client dropped"));
        // Reserved, or holding a lease: never retired.
        st.parked = Some(1);
        assert_eq!(st.retire(t0 + idle, idle), None);
        st.parked = None;
        let lease = Duration::from_secs(10);
        let key: Arc<str> = "k".into();
        let token = Token::from_parts(1, 2);
        st.leases.register(
            1,
            Family::Lock,
            key,
            token,
            lease,
            LeaseShared::new(lease),
            t0,
            t0,
            false,
            0.0,
        );
        assert_eq!(st.retire(t0 + idle, idle), None);
        assert!(!st.parkable());
    }

    #[test]
    fn the_next_look_is_the_earliest_event_within_a_tick() {
        let t0 = Instant::now();
        let (idle, tick) = (Duration::from_secs(15), ms(375));
        let mut st = state(t0);
        // Idle: retirement is far, the tick is next.
        assert_eq!(st.next_look(t0, idle, tick), t0 + tick);
        assert_eq!(st.next_look(t0 + idle, idle, tick), t0 + idle);
        st.pending.push_back(call(1, t0, t0 + ms(100), None));
        assert_eq!(st.next_look(t0, idle, tick), t0 + ms(100));
        assert!(!st.parkable());
        st.pending.clear();
        st.releases.push((
            Family::Lock,
            "k".into(),
            Token::from_parts(1, 1),
            metrics::Release::untracked(),
        ));
        assert!(!st.parkable());
        st.releases.clear();
        assert!(st.parkable());
        st.dead = Some("closed".into());
        assert!(!st.parkable());
    }

    #[test]
    fn the_summary_shows_what_the_pool_looks_at() {
        let t0 = Instant::now();
        let mut st = state(t0);
        let summary = Summary::default();
        st.parked = Some(3);
        st.pending.push_back(call(1, t0, t0 + ms(100), None));
        summary.publish(&st);
        let load = summary.load();
        assert!(load.parked && !load.dead && load.pending == 1);
        st.parked = None;
        st.dead = Some("x".into());
        st.releases.push((
            Family::Lock,
            "k".into(),
            Token::from_parts(1, 1),
            metrics::Release::untracked(),
        ));
        summary.publish(&st);
        assert_eq!(summary.flags.load(Ordering::Relaxed), DEAD | BUSY);
    }
}
