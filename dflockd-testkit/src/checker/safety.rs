//! The safety analysis: mutual exclusion, fencing, loss notices (see the module
//! documentation of [`checker`](super)).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{DISCONNECT_TOLERANCE, Inner, Report, SectionRecord, Violation};

/// Finds every broken safety property in `inner` (sections still open count as held until
/// `now`) and adds it to `report`.
pub(super) fn analyse(inner: &Inner, now: Instant, report: &mut Report) {
    let sections = &inner.sections;
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
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::time::Duration;

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
            report.summary(),
            "violations=0 stale_writes=0 grants=5 faults=0 lost_notices=0 liveness=0 discarded_grants=0 failures=0 starved_waits=0"
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
