//! Safety checkers for fault-injection tests: a [`History`] of critical sections, a
//! [`FencedRegister`] standing for the protected resource, and the analysis that finds
//! mutual-exclusion violations in them.
//!
//! Each critical section records its key, token, fence, start (when the acquire returned),
//! end (when the holder stopped, before releasing) and, if the holder was told that its lease
//! was lost, the moment it was told; all on the monotonic clock. Writes of lock holders go to
//! a fenced register that rejects a write whose fence is lower than the highest it has seen
//! for the key, as a storage system guarded by fencing tokens would.
//!
//! [`History::check`] then verifies:
//! * per key, no token is used twice and fences are unique; for locks, fences strictly
//!   increase in the order the grants were observed;
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
//! ```
//! use dflockd_testkit::checker::History;
//! use dflockd_core::Token;
//!
//! let history = History::new();
//! let first = history.begin("k", 1, Token::from_parts(1, 7), 1);
//! assert!(first.write(10));
//! first.end();
//! let second = history.begin("k", 1, Token::from_parts(2, 9), 2);
//! assert!(second.write(20));
//! assert!(!first.write(11), "a lower fence is rejected");
//! second.end();
//! let report = history.check();
//! assert_eq!(report.grants, 2);
//! assert_eq!(report.stale_writes, 0);
//! assert_eq!(report.rejected_writes, 1);
//! assert!(report.violations.is_empty(), "{report}");
//! ```

use std::collections::{HashMap, HashSet};
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
    /// The grant's fence.
    pub fence: u64,
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
    fence: u64,
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
            })),
            register: Arc::new(FencedRegister::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the start of a critical section, now: call it as soon as the acquire returns.
    pub fn begin(&self, key: &str, limit: u64, token: Token, fence: u64) -> Section {
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
        analyse(&inner, Instant::now())
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
    /// `true` is returned). `false` when the register rejected the write.
    pub fn write(&self, value: u64) -> bool {
        let mut inner = self.history.lock();
        let record = &inner.sections[self.index];
        if record.limit != 1 {
            return true;
        }
        let fence = record.fence;
        let accepted = self.history.register.write(&record.key, fence, value);
        inner.writes.push(WriteRecord {
            section: self.index,
            fence,
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
    pub fn fence(&self) -> u64 {
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
        /// The fence of the holder that learnt late.
        fence: u64,
        /// How long after the hand-over it learnt.
        late_by: Duration,
    },
    /// The register accepted a write from a holder whose lock was already granted to a later
    /// holder.
    StaleWrite {
        /// The key.
        key: String,
        /// The fence of the stale writer.
        fence: u64,
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
                "{key}: holder with fence {fence} learnt of its loss {late_by:?} after the hand-over"
            ),
            Violation::StaleWrite { key, fence } => {
                write!(f, "{key}: stale write with fence {fence} accepted")
            }
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
    /// Every broken property (stale writes included).
    pub violations: Vec<Violation>,
}

impl Report {
    /// The one-line summary scenarios print: `violations=N stale_writes=N grants=N faults=N
    /// lost_notices=N`.
    #[must_use]
    pub fn summary(&self, faults: u64) -> String {
        format!(
            "violations={} stale_writes={} grants={} faults={} lost_notices={}",
            self.violations.len(),
            self.stale_writes,
            self.grants,
            faults,
            self.lost_notices
        )
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
        for v in self.violations.iter().take(20) {
            write!(f, "\n  {v}")?;
        }
        if self.violations.len() > 20 {
            write!(f, "\n  … and {} more", self.violations.len() - 20)?;
        }
        Ok(())
    }
}

fn analyse(inner: &Inner, now: Instant) -> Report {
    let sections = &inner.sections;
    let mut report = Report {
        grants: sections.len(),
        lost_notices: sections.iter().filter(|s| s.lost_at.is_some()).count(),
        refused_releases: sections.iter().filter(|s| s.release_refused).count(),
        writes: inner.writes.len(),
        rejected_writes: inner.writes.iter().filter(|w| !w.accepted).count(),
        ..Report::default()
    };
    let mut tokens = HashSet::new();
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in sections.iter().enumerate() {
        if !tokens.insert(s.token) {
            report
                .violations
                .push(Violation::TokenReused { key: s.key.clone() });
        }
        by_key.entry(&s.key).or_default().push(i);
    }
    let since = |t: Instant| t.saturating_duration_since(inner.created);
    // Disconnect races: the interval of such a holder ends at the hand-over.
    let mut cut: HashMap<usize, Instant> = HashMap::new();
    for idx in by_key.values() {
        for &i in idx {
            let a = &sections[i];
            let Some(lost) = a.lost_at.filter(|_| a.disconnected) else {
                continue;
            };
            if a.believed_until(now) != lost {
                continue;
            }
            let handover = idx
                .iter()
                .map(|&j| &sections[j])
                .filter(|b| {
                    b.fence > a.fence && b.start < lost && b.start + DISCONNECT_TOLERANCE >= lost
                })
                .map(|b| b.start)
                .min();
            if let Some(at) = handover {
                cut.insert(i, at.max(a.start));
                report.disconnect_races += 1;
            }
        }
    }
    let until = |i: usize| {
        cut.get(&i)
            .copied()
            .unwrap_or_else(|| sections[i].believed_until(now))
    };
    // Per key: the sections in fence order, for the stale-write check.
    let mut fence_order: HashMap<&str, (Vec<u64>, Vec<Instant>)> = HashMap::new();
    for (key, idx) in &by_key {
        let mut order: Vec<usize> = idx.clone();
        order.sort_by_key(|&i| sections[i].fence);
        let by_fence: Vec<&SectionRecord> = order.iter().map(|&i| &sections[i]).collect();
        for pair in by_fence.windows(2) {
            if pair[0].fence == pair[1].fence {
                report.violations.push(Violation::FenceReused {
                    key: (*key).to_owned(),
                    fence: pair[0].fence,
                });
            }
        }
        let limit = by_fence.iter().map(|s| s.limit).max().unwrap_or(1);
        if limit == 1 {
            // Fences increase in the order grants were observed.
            let mut by_start = by_fence.clone();
            by_start.sort_by_key(|s| (s.start, s.fence));
            for pair in by_start.windows(2) {
                if pair[1].fence <= pair[0].fence {
                    report.violations.push(Violation::FenceOrder {
                        key: (*key).to_owned(),
                        earlier: pair[0].fence,
                        later: pair[1].fence,
                    });
                }
            }
            // Every loss notice before the hand-over to the next holder.
            for pair in order.windows(2) {
                let (a, b) = (&sections[pair[0]], &sections[pair[1]]);
                if let Some(lost) = a.lost_at {
                    let noticed = lost == a.believed_until(now) && !cut.contains_key(&pair[0]);
                    if noticed && lost > b.start {
                        report.violations.push(Violation::LateLossNotice {
                            key: (*key).to_owned(),
                            fence: a.fence,
                            late_by: lost - b.start,
                        });
                    }
                }
            }
            // Suffix minimum of starts: the earliest moment any later fence was granted.
            let fences: Vec<u64> = by_fence.iter().map(|s| s.fence).collect();
            let mut earliest_later = vec![now + Duration::from_secs(1 << 30); fences.len()];
            let mut min = earliest_later[0];
            for i in (0..by_fence.len()).rev() {
                earliest_later[i] = min;
                min = min.min(by_fence[i].start);
            }
            fence_order.insert(key, (fences, earliest_later));
        }
        // At most `limit` believed holders at once.
        let mut events: Vec<(Instant, i64)> = Vec::with_capacity(order.len() * 2);
        for &i in &order {
            let (start, end) = (sections[i].start, until(i));
            if end > start {
                events.push((start, 1));
                events.push((end, -1));
            }
        }
        // Ends sort before starts at the same instant: touching intervals do not overlap.
        events.sort();
        let mut holders: i64 = 0;
        let mut reported = false;
        for (at, delta) in events {
            holders += delta;
            if holders > limit as i64 {
                if !reported {
                    report.violations.push(Violation::Overlap {
                        key: (*key).to_owned(),
                        holders: holders as u64,
                        limit,
                        at: since(at),
                    });
                    reported = true;
                }
            } else {
                reported = false;
            }
        }
    }
    for w in &inner.writes {
        if !w.accepted || cut.get(&w.section).is_some_and(|&at| w.at >= at) {
            continue;
        }
        let key = sections[w.section].key.as_str();
        let Some((fences, earliest_later)) = fence_order.get(key) else {
            continue;
        };
        let pos = fences.partition_point(|&f| f <= w.fence);
        // `earliest_later[pos - 1]` is the earliest start among fences above `w.fence`.
        if pos > 0 && earliest_later[pos - 1] <= w.at {
            report.stale_writes += 1;
            report.violations.push(Violation::StaleWrite {
                key: key.to_owned(),
                fence: w.fence,
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u64) -> Token {
        Token::from_parts(n, n.wrapping_mul(0x9e37_79b9))
    }

    #[test]
    fn clean_history_has_no_violation() {
        let h = History::new();
        for fence in 1..=5 {
            let s = h.begin("k", 1, token(fence), fence);
            assert!(s.write(fence));
            s.end();
        }
        let report = h.check();
        assert_eq!(report.grants, 5);
        assert!(report.violations.is_empty(), "{report}");
        assert_eq!(
            report.summary(3),
            "violations=0 stale_writes=0 grants=5 faults=3 lost_notices=0"
        );
    }

    #[test]
    fn overlap_and_stale_write_are_found() {
        let h = History::new();
        let a = h.begin("k", 1, token(1), 1);
        let b = h.begin("k", 1, token(2), 2);
        // `a` writes after `b` was granted but before `b` wrote: accepted, and stale.
        assert!(a.write(1));
        assert!(b.write(2));
        assert!(!a.write(3));
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.stale_writes, 1);
        assert_eq!(report.rejected_writes, 1);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Overlap { holders: 2, .. }))
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::StaleWrite { fence: 1, .. }))
        );
    }

    #[test]
    fn loss_notice_ends_the_interval() {
        let h = History::new();
        let a = h.begin("k", 1, token(1), 1);
        a.lost();
        std::thread::sleep(Duration::from_millis(2));
        let b = h.begin("k", 1, token(2), 2);
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.lost_notices, 1);
        assert!(report.violations.is_empty(), "{report}");

        // Told after the next holder started: late.
        let h = History::new();
        let a = h.begin("k", 1, token(1), 1);
        let b = h.begin("k", 1, token(2), 2);
        std::thread::sleep(Duration::from_millis(2));
        a.lost();
        a.end();
        b.end();
        let report = h.check();
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::LateLossNotice { .. }))
        );
    }

    #[test]
    fn fence_order_and_reuse() {
        let h = History::new();
        h.begin("k", 1, token(5), 5).end();
        h.begin("k", 1, token(4), 4).end();
        h.begin("k", 1, token(5), 5).end();
        let report = h.check();
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::FenceOrder { .. }))
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::TokenReused { .. }))
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::FenceReused { fence: 5, .. }))
        );
    }

    #[test]
    fn semaphores_allow_their_limit() {
        let h = History::new();
        let held: Vec<_> = (1..=3).map(|f| h.begin("s", 3, token(f), f)).collect();
        assert!(h.check().violations.is_empty());
        let fourth = h.begin("s", 3, token(4), 4);
        assert!(matches!(
            h.check().violations.as_slice(),
            [Violation::Overlap {
                holders: 4,
                limit: 3,
                ..
            }]
        ));
        fourth.end();
        held.iter().for_each(Section::end);
    }

    #[test]
    fn a_disconnect_race_is_counted_apart_within_the_tolerance() {
        let h = History::new();
        let a = h.begin("k", 1, token(1), 1);
        let b = h.begin("k", 1, token(2), 2);
        std::thread::sleep(Duration::from_millis(2));
        a.lost_by_disconnect();
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.disconnect_races, 1);
        assert!(report.violations.is_empty(), "{report}");

        // Beyond the tolerance it is a violation again.
        let h = History::new();
        let a = h.begin("k", 1, token(1), 1);
        let b = h.begin("k", 1, token(2), 2);
        std::thread::sleep(DISCONNECT_TOLERANCE + Duration::from_millis(5));
        a.lost_by_disconnect();
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.disconnect_races, 0);
        assert!(!report.violations.is_empty(), "{report}");
    }

    #[test]
    fn register_rejects_lower_fences_only() {
        let r = FencedRegister::new();
        assert!(r.write("k", 5, 1));
        assert!(r.write("k", 5, 2));
        assert!(!r.write("k", 4, 3));
        assert!(r.write("k", 6, 4));
        assert!(r.write("other", 1, 5));
        assert_eq!(r.read("k"), Some((6, 4)));
    }
}
