//! Checkers for fault-injection tests: a [`History`] of acquire attempts, critical sections and
//! faults, a [`FencedRegister`] standing for the protected resource, and the analysis that
//! finds what went wrong: safety ([`Report::violations`]: two holders at once, a stale write)
//! and liveness ([`Report::liveness`]: work that should have been granted and was not). A
//! client that never grants anything is perfectly safe; only the liveness checks catch it.
//!
//! Each critical section records its key, token, fence (if the server issues them: dflockd
//! 2.1 and later), start (when the acquire returned),
//! end (when the holder stopped, before releasing) and, if the holder was told that its lease
//! was lost, the moment it was told; all on the monotonic clock. Writes of lock holders go to
//! a fenced register that rejects a write whose fence is lower than the highest it has seen
//! for the key, as a storage system guarded by fencing tokens would.
//!
//! [`History::check`] then verifies:
//! * per key, no token is used twice and fences are unique; for locks, fences strictly
//!   increase in the order the grants were observed (sections without a fence are ordered by
//!   their start, and their writes cannot be fenced: a write goes through, and counts as stale
//!   when a later holder had been granted the key before it);
//! * the intervals during which holders believed they held the key (from the start to the end
//!   or to the loss notice, whichever came first) never overlap for a lock, and never exceed
//!   the limit for a semaphore;
//! * every loss notice came before the next holder of the lock was granted it (the server
//!   hands a lock on at the latest when the next holder sees its grant);
//! * the register accepted no stale write: no write by a holder whose lock had already been
//!   granted to a later holder (a higher fence) at the moment of the write.
//!
//! One race is inherent and counted apart, as [`Report::disconnect_races`]: when a holder's
//! connection is cut (a reset), the server releases its locks the moment it sees the close,
//! and the client sees the close at that same moment. A holder told of such a loss at most
//! [`DISCONNECT_TOLERANCE`] after the next holder's grant is a race, not a violation; its
//! interval is taken to end at the hand-over. Anything later is a violation as usual.
//!
//! # Liveness
//!
//! Each acquire attempt records when it started and ended and how it ended
//! ([`History::attempt`]): granted, busy (a try-once), timed out, a grant thrown away (the
//! server granted, the client did not hand the grant out), or failed with an error. Each fault
//! records when it was in force ([`History::fault`]). [`History::check`] then reports as
//! [`Liveness`] findings, outside the faults (and their [`aftermath`](History::aftermath)):
//! * every grant thrown away and every failed attempt: with no fault in force, an acquire
//!   either gets the key or times out;
//! * every wait that timed out although its key had room (fewer believed holders than its
//!   limit) for longer than the [`starvation tolerance`](History::starvation_tolerance) while
//!   it waited: a waiter starving behind a free key;
//! * every key that was tried but never granted, and a history without any grant.
//!
//! ```
//! use dflockd_testkit::checker::History;
//! use dflockd_core::Token;
//!
//! let history = History::new();
//! let first = history.begin("k", 1, Token::from_parts(1, 7), Some(1));
//! assert!(first.write(10));
//! first.end();
//! let second = history.begin("k", 1, Token::from_parts(2, 9), Some(2));
//! assert!(second.write(20));
//! assert!(!first.write(11), "a lower fence is rejected");
//! second.end();
//! let report = history.check();
//! assert_eq!(report.grants, 2);
//! assert_eq!(report.stale_writes, 0);
//! assert_eq!(report.rejected_writes, 1);
//! assert!(report.violations.is_empty(), "{report}");
//! // Two sections, but no attempt recorded: nothing to judge liveness by.
//! assert!(report.liveness.is_empty(), "{report}");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dflockd_core::Token;

/// How late a loss notice caused by a closed connection may come after the hand-over and
/// still count as a [`Report::disconnect_races`] rather than a violation.
pub const DISCONNECT_TOLERANCE: Duration = Duration::from_millis(50);

/// One recorded critical section.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SectionRecord {
    /// The key.
    pub key: String,
    /// Holders allowed at once (1 for a lock).
    pub limit: u64,
    /// The grant's token.
    pub token: Token,
    /// The grant's fence (`None`: the server issues none).
    pub fence: Option<u64>,
    /// When the holder got the grant (the acquire returned).
    pub start: Instant,
    /// When the holder stopped using it (before its release), if it did.
    pub end: Option<Instant>,
    /// When the holder was told its lease was lost, if it was.
    pub lost_at: Option<Instant>,
    /// The server refused the release (it no longer knew the token).
    pub release_refused: bool,
    /// The loss was the connection closing (a reset, a crash): the server hands the lock on
    /// the moment it sees the close, which is also the moment the client sees it.
    pub disconnected: bool,
}

impl SectionRecord {
    /// The end of the time during which the holder believed it held the key: the end or the
    /// loss notice, whichever came first (`now` for a section still open).
    #[must_use]
    pub fn believed_until(&self, now: Instant) -> Instant {
        let end = self.end.unwrap_or(now);
        self.lost_at.map_or(end, |lost| lost.min(end))
    }
}

/// One write to the fenced register.
#[derive(Clone, Copy, Debug)]
struct WriteRecord {
    section: usize,
    at: Instant,
    accepted: bool,
}

/// An in-memory register per key that rejects a write whose fence is lower than the highest
/// fence it has seen for that key: the model of a resource protected by fencing tokens.
#[derive(Debug, Default)]
pub struct FencedRegister {
    cells: Mutex<HashMap<String, (u64, u64)>>,
}

impl FencedRegister {
    /// An empty register.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` for `key` with `fence`; `false` (and nothing written) when a higher
    /// fence was seen for the key before. Equal fences are accepted (one holder writing
    /// several times).
    pub fn write(&self, key: &str, fence: u64, value: u64) -> bool {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        match cells.get_mut(key) {
            Some((highest, _)) if fence < *highest => false,
            Some(cell) => {
                *cell = (fence, value);
                true
            }
            None => {
                cells.insert(key.to_owned(), (fence, value));
                true
            }
        }
    }

    /// The last accepted value and its fence.
    #[must_use]
    pub fn read(&self, key: &str) -> Option<(u64, u64)> {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells.get(key).copied()
    }
}

#[derive(Debug)]
struct Inner {
    created: Instant,
    sections: Vec<SectionRecord>,
    writes: Vec<WriteRecord>,
    attempts: Vec<AttemptRecord>,
    faults: Vec<FaultRecord>,
    aftermath: Duration,
    starvation_tolerance: Duration,
}

/// How long after a fault heals its effects may still show (connections it killed, leases it
/// lost, a restarted server's empty table): findings then are not counted against liveness.
pub const DEFAULT_AFTERMATH: Duration = Duration::from_secs(5);

/// How long a timed-out waiter's key may have had room, while it waited, before the wait
/// counts as starved (a hand-over takes a round trip or two, far less).
pub const DEFAULT_STARVATION_TOLERANCE: Duration = Duration::from_secs(1);

/// How an acquire attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Not yet ended.
    Pending,
    /// The holder got its grant (a [`Section`] began).
    Granted,
    /// A try-once found the key busy.
    Busy,
    /// The wait ran out its whole timeout.
    TimedOut,
    /// The server granted, and the client threw the grant away instead of handing it out.
    GrantDiscarded(String),
    /// Any other error.
    Failed(String),
}

/// One recorded acquire attempt.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// The key.
    pub key: String,
    /// Holders allowed at once (1 for a lock).
    pub limit: u64,
    /// When the attempt began.
    pub start: Instant,
    /// When it ended, if it did.
    pub end: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
}

/// One recorded fault: when it began and when it healed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FaultRecord {
    /// What it was.
    pub kind: String,
    /// When it began.
    pub start: Instant,
    /// When it healed (`None`: still in force).
    pub end: Option<Instant>,
}

/// The record of every critical section of a test, and the register they write to.
///
/// Cheap to clone; clones share the record.
#[derive(Clone, Debug)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    register: Arc<FencedRegister>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history; its clock starts now.
    #[must_use]
    pub fn new() -> Self {
        History {
            inner: Arc::new(Mutex::new(Inner {
                created: Instant::now(),
                sections: Vec::new(),
                writes: Vec::new(),
                attempts: Vec::new(),
                faults: Vec::new(),
                aftermath: DEFAULT_AFTERMATH,
                starvation_tolerance: DEFAULT_STARVATION_TOLERANCE,
            })),
            register: Arc::new(FencedRegister::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how long after a fault heals findings are still put down to it. Default is
    /// [`DEFAULT_AFTERMATH`].
    #[must_use]
    pub fn aftermath(self, aftermath: Duration) -> Self {
        self.lock().aftermath = aftermath;
        self
    }

    /// Sets how long a timed-out waiter's key may have had room before the wait counts as
    /// starved. Default is [`DEFAULT_STARVATION_TOLERANCE`].
    #[must_use]
    pub fn starvation_tolerance(self, tolerance: Duration) -> Self {
        self.lock().starvation_tolerance = tolerance;
        self
    }

    /// Records the start of an acquire attempt, now: call it just before the acquire.
    pub fn attempt(&self, key: &str, limit: u64) -> Attempt {
        let mut inner = self.lock();
        inner.attempts.push(AttemptRecord {
            key: key.to_owned(),
            limit,
            start: Instant::now(),
            end: None,
            outcome: Outcome::Pending,
        });
        Attempt {
            history: self.clone(),
            index: inner.attempts.len() - 1,
        }
    }

    /// Records that a fault began, now; it is in force until [`Fault::healed`] (or for ever,
    /// if that is never called).
    pub fn fault(&self, kind: &str) -> Fault {
        let mut inner = self.lock();
        inner.faults.push(FaultRecord {
            kind: kind.to_owned(),
            start: Instant::now(),
            end: None,
        });
        Fault {
            history: self.clone(),
            index: inner.faults.len() - 1,
        }
    }

    /// A copy of every attempt recorded so far.
    #[must_use]
    pub fn attempts(&self) -> Vec<AttemptRecord> {
        self.lock().attempts.clone()
    }

    /// Records the start of a critical section, now: call it as soon as the acquire returns.
    pub fn begin(&self, key: &str, limit: u64, token: Token, fence: Option<u64>) -> Section {
        let mut inner = self.lock();
        inner.sections.push(SectionRecord {
            key: key.to_owned(),
            limit,
            token,
            fence,
            start: Instant::now(),
            end: None,
            lost_at: None,
            release_refused: false,
            disconnected: false,
        });
        Section {
            history: self.clone(),
            index: inner.sections.len() - 1,
        }
    }

    /// The register the sections write to.
    #[must_use]
    pub fn register(&self) -> &FencedRegister {
        &self.register
    }

    /// A copy of every section recorded so far.
    #[must_use]
    pub fn sections(&self) -> Vec<SectionRecord> {
        self.lock().sections.clone()
    }

    /// When the history was created (the origin of the times in [`Report`]).
    #[must_use]
    pub fn created(&self) -> Instant {
        self.lock().created
    }

    /// Runs every check on what was recorded so far; sections still open count as held
    /// until now.
    #[must_use]
    pub fn check(&self) -> Report {
        let inner = self.lock();
        let now = Instant::now();
        let sections = &inner.sections;
        let attempts = &inner.attempts;
        let count = |o: fn(&Outcome) -> bool| attempts.iter().filter(|a| o(&a.outcome)).count();
        let mut report = Report {
            grants: sections.len(),
            lost_notices: sections.iter().filter(|s| s.lost_at.is_some()).count(),
            refused_releases: sections.iter().filter(|s| s.release_refused).count(),
            writes: inner.writes.len(),
            rejected_writes: inner.writes.iter().filter(|w| !w.accepted).count(),
            attempts: attempts.len(),
            timeouts: count(|o| *o == Outcome::TimedOut),
            busy: count(|o| *o == Outcome::Busy),
            discarded_grants: count(|o| matches!(o, Outcome::GrantDiscarded(_))),
            failures: count(|o| matches!(o, Outcome::Failed(_))),
            faults: inner.faults.len(),
            ..Report::default()
        };
        safety::analyse(&inner, now, &mut report);
        liveness::analyse(&inner, now, &mut report);
        report
    }
}

/// The handle of one acquire attempt in a [`History`]: end it with one of its methods.
#[derive(Debug)]
pub struct Attempt {
    history: History,
    index: usize,
}

impl Attempt {
    fn finish(&self, outcome: Outcome) {
        let mut inner = self.history.lock();
        let record = &mut inner.attempts[self.index];
        record.end = Some(Instant::now());
        record.outcome = outcome;
    }

    /// The acquire returned a grant: the critical section begins now (see [`History::begin`]).
    pub fn granted(self, token: Token, fence: Option<u64>) -> Section {
        self.finish(Outcome::Granted);
        let (key, limit) = {
            let inner = self.history.lock();
            let record = &inner.attempts[self.index];
            (record.key.clone(), record.limit)
        };
        self.history.begin(&key, limit, token, fence)
    }

    /// A try-once found the key busy.
    pub fn busy(self) {
        self.finish(Outcome::Busy);
    }

    /// The wait ran out its timeout.
    pub fn timed_out(self) {
        self.finish(Outcome::TimedOut);
    }

    /// The server granted, and the client threw the grant away (for example an acquire that
    /// returned a lease-lost error): `why` is shown in the report.
    pub fn grant_discarded(self, why: impl fmt::Display) {
        self.finish(Outcome::GrantDiscarded(why.to_string()));
    }

    /// The acquire failed with an error other than a timeout: `error` is shown in the report.
    pub fn failed(self, error: impl fmt::Display) {
        self.finish(Outcome::Failed(error.to_string()));
    }
}

/// The handle of one fault in a [`History`].
#[derive(Debug)]
#[must_use = "a fault is in force until healed"]
pub struct Fault {
    history: History,
    index: usize,
}

impl Fault {
    /// The fault healed, now.
    pub fn healed(self) {
        let mut inner = self.history.lock();
        inner.faults[self.index].end = Some(Instant::now());
    }
}

/// The handle of one critical section in a [`History`]. Cheap to clone, so a task watching
/// for the loss notice can hold one.
#[derive(Clone, Debug)]
pub struct Section {
    history: History,
    index: usize,
}

impl Section {
    fn update(&self, f: impl FnOnce(&mut SectionRecord)) {
        let mut inner = self.history.lock();
        f(&mut inner.sections[self.index]);
    }

    /// Writes `value` to the register under this section's key and fence (locks only: a
    /// semaphore's holders are concurrent by design, so nothing is written for them and
    /// `true` is returned). `false` when the register rejected the write. A section without
    /// a fence cannot be fenced: its write always goes through.
    pub fn write(&self, value: u64) -> bool {
        let mut inner = self.history.lock();
        let record = &inner.sections[self.index];
        if record.limit != 1 {
            return true;
        }
        let accepted = record
            .fence
            .is_none_or(|fence| self.history.register.write(&record.key, fence, value));
        inner.writes.push(WriteRecord {
            section: self.index,
            at: Instant::now(),
            accepted,
        });
        accepted
    }

    /// Records that the holder was told, now, that its lease was lost (only the first call
    /// counts).
    pub fn lost(&self) {
        self.lost_at(Instant::now());
    }

    /// Records that the holder was told at `at` that its lease was lost (only the first call
    /// counts).
    pub fn lost_at(&self, at: Instant) {
        self.update(|r| {
            if r.lost_at.is_none() {
                r.lost_at = Some(at);
            }
        });
    }

    /// Records that the holder was told, now, that its lease was lost because its connection
    /// closed (see [`SectionRecord::disconnected`]).
    pub fn lost_by_disconnect(&self) {
        let now = Instant::now();
        self.update(|r| {
            if r.lost_at.is_none() {
                r.lost_at = Some(now);
                r.disconnected = true;
            }
        });
    }

    /// Records that the holder stopped using the key, now (call it before releasing).
    pub fn end(&self) {
        let now = Instant::now();
        self.update(|r| {
            if r.end.is_none() {
                r.end = Some(now);
            }
        });
    }

    /// Records that the server refused the release.
    pub fn release_refused(&self) {
        self.update(|r| r.release_refused = true);
    }

    /// The section's fence.
    #[must_use]
    pub fn fence(&self) -> Option<u64> {
        self.history.lock().sections[self.index].fence
    }
}

/// A broken safety property.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The same token was seen in two grants.
    TokenReused {
        /// The key of the second grant.
        key: String,
    },
    /// Two grants of one key carried the same fence.
    FenceReused {
        /// The key.
        key: String,
        /// The fence.
        fence: u64,
    },
    /// A lock grant observed later carried a fence that is not higher.
    FenceOrder {
        /// The key.
        key: String,
        /// The fence of the grant observed first.
        earlier: u64,
        /// The fence of the grant observed after it.
        later: u64,
    },
    /// More holders believed they held the key at once than its limit allows.
    Overlap {
        /// The key.
        key: String,
        /// Holders at once.
        holders: u64,
        /// The limit.
        limit: u64,
        /// When, since the history was created.
        at: Duration,
    },
    /// A holder was told of its loss only after the next holder had been granted the lock.
    LateLossNotice {
        /// The key.
        key: String,
        /// The fence of the holder that learnt late (`None`: unfenced).
        fence: Option<u64>,
        /// How long after the hand-over it learnt.
        late_by: Duration,
    },
    /// The register accepted a write from a holder whose lock was already granted to a later
    /// holder.
    StaleWrite {
        /// The key.
        key: String,
        /// The fence of the stale writer (`None`: unfenced).
        fence: Option<u64>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::TokenReused { key } => write!(f, "{key}: a token was granted twice"),
            Violation::FenceReused { key, fence } => {
                write!(f, "{key}: fence {fence} was granted twice")
            }
            Violation::FenceOrder {
                key,
                earlier,
                later,
            } => write!(f, "{key}: fence {later} observed after fence {earlier}"),
            Violation::Overlap {
                key,
                holders,
                limit,
                at,
            } => write!(
                f,
                "{key}: {holders} holders at once (limit {limit}) at {:.3} s",
                at.as_secs_f64()
            ),
            Violation::LateLossNotice {
                key,
                fence,
                late_by,
            } => write!(
                f,
                "{key}: holder with fence {} learnt of its loss {late_by:?} after the hand-over",
                shown(*fence)
            ),
            Violation::StaleWrite { key, fence } => {
                write!(
                    f,
                    "{key}: stale write with fence {} accepted",
                    shown(*fence)
                )
            }
        }
    }
}

fn shown(fence: Option<u64>) -> String {
    fence.map_or_else(|| "none".to_owned(), |f| f.to_string())
}

/// A liveness finding: something that should have been granted and was not, with no fault in
/// force (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// The history holds no grant at all.
    NothingGranted,
    /// A key was tried and never granted.
    KeyNeverGranted {
        /// The key.
        key: String,
    },
    /// A grant was thrown away instead of handed out.
    GrantDiscarded {
        /// The key.
        key: String,
        /// When the attempt ended, since the history was created.
        at: Duration,
        /// What the client said.
        why: String,
    },
    /// An attempt failed with an error.
    Failed {
        /// The key.
        key: String,
        /// When the attempt ended, since the history was created.
        at: Duration,
        /// The error.
        error: String,
    },
    /// A wait timed out although its key had room for this long while it waited.
    Starved {
        /// The key.
        key: String,
        /// When the wait ended, since the history was created.
        at: Duration,
        /// The longest stretch during which the key had room.
        free_for: Duration,
    },
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Liveness::NothingGranted => f.write_str("nothing was granted"),
            Liveness::KeyNeverGranted { key } => write!(f, "{key}: tried, never granted"),
            Liveness::GrantDiscarded { key, at, why } => write!(
                f,
                "{key}: a grant was thrown away at {:.3} s with no fault in force: {why}",
                at.as_secs_f64()
            ),
            Liveness::Failed { key, at, error } => write!(
                f,
                "{key}: an acquire failed at {:.3} s with no fault in force: {error}",
                at.as_secs_f64()
            ),
            Liveness::Starved { key, at, free_for } => write!(
                f,
                "{key}: a wait timed out at {:.3} s although the key had room for {free_for:?}",
                at.as_secs_f64()
            ),
        }
    }
}

/// The outcome of [`History::check`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// Critical sections recorded (grants that reached their holder).
    pub grants: usize,
    /// Sections whose holder was told of a loss.
    pub lost_notices: usize,
    /// Releases the server refused (the lease was gone there already).
    pub refused_releases: usize,
    /// Writes to the register.
    pub writes: usize,
    /// Writes the register accepted although a later holder had been granted the lock.
    pub stale_writes: usize,
    /// Writes the register rejected (a higher fence had written before): fencing at work.
    pub rejected_writes: usize,
    /// Holders told of a closed connection within [`DISCONNECT_TOLERANCE`] after the server
    /// had handed their lock on (see the module documentation).
    pub disconnect_races: usize,
    /// Every broken safety property (stale writes included).
    pub violations: Vec<Violation>,
    /// Acquire attempts recorded.
    pub attempts: usize,
    /// Attempts whose wait timed out.
    pub timeouts: usize,
    /// Try-once attempts that found the key busy.
    pub busy: usize,
    /// Attempts whose grant was thrown away, faults or not.
    pub discarded_grants: usize,
    /// Attempts that failed with an error, faults or not.
    pub failures: usize,
    /// Timed-out waits whose key had room for longer than the tolerance, faults or not.
    pub starved_waits: usize,
    /// Faults recorded.
    pub faults: usize,
    /// Every liveness finding (with no fault in force).
    pub liveness: Vec<Liveness>,
}

impl Report {
    /// The one-line summary scenarios print: `violations=N stale_writes=N grants=N faults=N
    /// lost_notices=N liveness=N discarded_grants=N failures=N starved_waits=N`.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "violations={} stale_writes={} grants={} faults={} lost_notices={} liveness={} discarded_grants={} failures={} starved_waits={}",
            self.violations.len(),
            self.stale_writes,
            self.grants,
            self.faults,
            self.lost_notices,
            self.liveness.len(),
            self.discarded_grants,
            self.failures,
            self.starved_waits,
        )
    }

    /// Whether the run is both safe and live: no violation, no liveness finding.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.liveness.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "grants={} lost_notices={} refused_releases={} writes={} stale_writes={} rejected_writes={} disconnect_races={} violations={}",
            self.grants,
            self.lost_notices,
            self.refused_releases,
            self.writes,
            self.stale_writes,
            self.rejected_writes,
            self.disconnect_races,
            self.violations.len()
        )?;
        write!(
            f,
            "\nattempts={} timeouts={} busy={} discarded_grants={} failures={} starved_waits={} faults={} liveness={}",
            self.attempts,
            self.timeouts,
            self.busy,
            self.discarded_grants,
            self.failures,
            self.starved_waits,
            self.faults,
            self.liveness.len()
        )?;
        for v in self.violations.iter().take(20) {
            write!(f, "\n  {v}")?;
        }
        if self.violations.len() > 20 {
            write!(f, "\n  … and {} more", self.violations.len() - 20)?;
        }
        for l in self.liveness.iter().take(20) {
            write!(f, "\n  {l}")?;
        }
        if self.liveness.len() > 20 {
            write!(f, "\n  … and {} more", self.liveness.len() - 20)?;
        }
        Ok(())
    }
}

mod liveness;
mod safety;
