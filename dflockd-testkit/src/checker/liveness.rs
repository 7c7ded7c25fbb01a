//! The liveness analysis: grants thrown away, failed acquires, waiters starving behind a key
//! with room, keys never granted (see the module documentation of [`checker`](super)).

use std::time::{Duration, Instant};

use super::{AttemptRecord, Inner, Liveness, Outcome, Report, SectionRecord};

/// Adds every liveness finding in `inner` to `report` (sections still open count as held
/// until `now`), and the starved waits to its count.
pub(super) fn analyse(inner: &Inner, now: Instant, report: &mut Report) {
    let since = |t: Instant| t.saturating_duration_since(inner.created);
    // When faults, and their aftermath, were in force.
    let never = now + Duration::from_secs(1 << 30);
    let windows: Vec<(Instant, Instant)> = inner
        .faults
        .iter()
        .map(|f| (f.start, f.end.map_or(never, |end| end + inner.aftermath)))
        .collect();
    let in_fault = |a: &AttemptRecord| {
        let end = a.end.unwrap_or(now);
        windows
            .iter()
            .any(|&(from, to)| a.start <= to && from <= end)
    };
    if inner.sections.is_empty() {
        report.liveness.push(Liveness::NothingGranted);
    }
    let mut tried: Vec<&str> = inner.attempts.iter().map(|a| a.key.as_str()).collect();
    tried.sort_unstable();
    tried.dedup();
    for key in tried {
        if !inner.sections.iter().any(|s| s.key == key) {
            report.liveness.push(Liveness::KeyNeverGranted {
                key: key.to_owned(),
            });
        }
    }
    for a in &inner.attempts {
        let at = since(a.end.unwrap_or(now));
        let key = a.key.clone();
        let finding = match &a.outcome {
            Outcome::GrantDiscarded(why) => Liveness::GrantDiscarded {
                key,
                at,
                why: why.clone(),
            },
            Outcome::Failed(error) => Liveness::Failed {
                key,
                at,
                error: error.clone(),
            },
            Outcome::TimedOut => {
                let holders: Vec<&SectionRecord> =
                    inner.sections.iter().filter(|s| s.key == a.key).collect();
                let free_for = longest_room(&holders, a.limit, a.start, a.end.unwrap_or(now), now);
                if free_for < inner.starvation_tolerance {
                    continue;
                }
                report.starved_waits += 1;
                Liveness::Starved { key, at, free_for }
            }
            Outcome::Pending | Outcome::Granted | Outcome::Busy => continue,
        };
        if !in_fault(a) {
            report.liveness.push(finding);
        }
    }
}

/// The longest stretch within `from..to` during which fewer than `limit` of `sections`
/// believed they held the key.
fn longest_room(
    sections: &[&SectionRecord],
    limit: u64,
    from: Instant,
    to: Instant,
    now: Instant,
) -> Duration {
    let mut events: Vec<(Instant, i64)> = Vec::with_capacity(sections.len() * 2);
    for s in sections {
        let (start, end) = (s.start.max(from), s.believed_until(now).min(to));
        if start < end {
            events.push((start, 1));
            events.push((end, -1));
        }
    }
    // Starts before ends at the same instant: a hand-over at one instant leaves no room.
    events.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut holders = 0i64;
    let mut room_since = Some(from);
    let mut longest = Duration::ZERO;
    for (at, delta) in events {
        holders += delta;
        match (room_since, holders < limit) {
            (Some(since), false) => {
                longest = longest.max(at - since);
                room_since = None;
            }
            (None, true) => room_since = Some(at),
            _ => {}
        }
    }
    if let Some(since) = room_since {
        longest = longest.max(to.saturating_duration_since(since));
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::analyse;
    use std::time::{Duration, Instant};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A history built by hand, with made-up instants counted from `t0`.
    struct Script {
        t0: Instant,
        inner: Inner,
    }

    impl Script {
        fn new() -> Self {
            let t0 = Instant::now();
            Script {
                t0,
                inner: Inner {
                    created: t0,
                    sections: Vec::new(),
                    writes: Vec::new(),
                    attempts: Vec::new(),
                    faults: Vec::new(),
                    aftermath: DEFAULT_AFTERMATH,
                    starvation_tolerance: DEFAULT_STARVATION_TOLERANCE,
                },
            }
        }

        fn section(&mut self, key: &str, limit: u64, from: u64, to: u64) -> &mut Self {
            let n = self.inner.sections.len() as u64 + 1;
            self.inner.sections.push(SectionRecord {
                key: key.to_owned(),
                limit,
                token: Token::from_parts(n, n),
                fence: Some(n),
                start: self.t0 + ms(from),
                end: Some(self.t0 + ms(to)),
                lost_at: None,
                release_refused: false,
                disconnected: false,
            });
            self
        }

        fn attempt(&mut self, key: &str, limit: u64, from: u64, to: u64, o: Outcome) -> &mut Self {
            self.inner.attempts.push(AttemptRecord {
                key: key.to_owned(),
                limit,
                start: self.t0 + ms(from),
                end: Some(self.t0 + ms(to)),
                outcome: o,
            });
            self
        }

        fn fault(&mut self, from: u64, to: u64) -> &mut Self {
            self.inner.faults.push(FaultRecord {
                kind: "test".to_owned(),
                start: self.t0 + ms(from),
                end: Some(self.t0 + ms(to)),
            });
            self
        }

        fn check(&self) -> Report {
            let mut report = Report::default();
            analyse(&self.inner, self.t0 + ms(60_000), &mut report);
            report
        }
    }

    #[test]
    fn a_history_without_grants_fails() {
        let report = Script::new().check();
        assert_eq!(report.liveness, vec![Liveness::NothingGranted]);
        // Tried over and over, all timed out with the key free: never granted, and starved.
        let report = Script::new()
            .attempt("k", 1, 0, 2000, Outcome::TimedOut)
            .attempt("k", 1, 2000, 4000, Outcome::TimedOut)
            .check();
        assert_eq!(report.starved_waits, 2);
        assert!(report.liveness.contains(&Liveness::NothingGranted));
        assert!(
            report
                .liveness
                .contains(&Liveness::KeyNeverGranted { key: "k".into() })
        );
    }

    #[test]
    fn thrown_away_grants_and_failures_count_against_liveness_outside_faults_only() {
        let why = || "lease lost".to_owned();
        let report = Script::new()
            .section("k", 1, 0, 100)
            .attempt("k", 1, 0, 10, Outcome::Granted)
            .attempt("k", 1, 200, 300, Outcome::GrantDiscarded(why()))
            .attempt("k", 1, 400, 500, Outcome::Failed("connection reset".into()))
            .check();
        assert_eq!(report.liveness.len(), 2, "{:?}", report.liveness);
        assert!(matches!(
            report.liveness[0],
            Liveness::GrantDiscarded { .. }
        ));
        assert!(matches!(report.liveness[1], Liveness::Failed { .. }));

        // During a fault, or within its aftermath, they are the fault's doing.
        let report = Script::new()
            .section("k", 1, 0, 100)
            .fault(150, 250)
            .attempt("k", 1, 200, 300, Outcome::GrantDiscarded(why()))
            .attempt("k", 1, 4000, 4100, Outcome::Failed("reset".into()))
            .attempt("k", 1, 5300, 5400, Outcome::Failed("late".into()))
            .check();
        assert_eq!(report.liveness.len(), 1, "{:?}", report.liveness);
        assert!(matches!(&report.liveness[0], Liveness::Failed { error, .. } if error == "late"));
    }

    #[test]
    fn a_wait_that_times_out_behind_busy_holders_is_not_starved() {
        let report = Script::new()
            .section("k", 1, 0, 1000)
            .section("k", 1, 1000, 2100)
            .section("k", 1, 2300, 4000)
            .attempt("k", 1, 500, 3500, Outcome::TimedOut)
            .check();
        assert_eq!(report.starved_waits, 0);
        assert!(report.liveness.is_empty(), "{:?}", report.liveness);
    }

    #[test]
    fn a_wait_that_times_out_while_its_key_has_room_is_starved() {
        let report = Script::new()
            .section("k", 1, 0, 1000)
            .attempt("k", 1, 500, 3500, Outcome::TimedOut)
            .check();
        assert_eq!(report.starved_waits, 1);
        assert!(
            matches!(&report.liveness[..], [Liveness::Starved { free_for, .. }] if *free_for == ms(2500)),
            "{:?}",
            report.liveness
        );
        // A semaphore with one of its two slots free all along.
        let report = Script::new()
            .section("s", 2, 0, 5000)
            .attempt("s", 2, 500, 3500, Outcome::TimedOut)
            .check();
        assert_eq!(report.starved_waits, 1);
        // Both slots taken: no room.
        let report = Script::new()
            .section("s", 2, 0, 5000)
            .section("s", 2, 100, 5000)
            .attempt("s", 2, 500, 3500, Outcome::TimedOut)
            .check();
        assert_eq!(report.starved_waits, 0);
    }
}
