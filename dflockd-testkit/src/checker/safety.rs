//! The safety analysis: mutual exclusion, fencing, loss notices (see the module
//! documentation of [`checker`](super)).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{DISCONNECT_TOLERANCE, Inner, Report, SectionRecord, Violation};

/// The order in which the server granted a key's sections: by fence when they carry one,
/// otherwise by the moment the holders saw their grant.
fn grant_order(s: &SectionRecord) -> (Option<u64>, Instant) {
    (s.fence, s.start)
}

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
    // Per key, the sections in grant order, and each section's place in it.
    let mut place: HashMap<usize, usize> = HashMap::new();
    for idx in by_key.values_mut() {
        idx.sort_by_key(|&i| grant_order(&sections[i]));
        place.extend(idx.iter().enumerate().map(|(p, &i)| (i, p)));
    }
    let since = |t: Instant| t.saturating_duration_since(inner.created);
    // Disconnect races: the interval of such a holder ends at the hand-over.
    let mut cut: HashMap<usize, Instant> = HashMap::new();
    for order in by_key.values() {
        for (p, &i) in order.iter().enumerate() {
            let a = &sections[i];
            let Some(lost) = a.lost_at.filter(|_| a.disconnected) else {
                continue;
            };
            if a.believed_until(now) != lost {
                continue;
            }
            let handover = order[p + 1..]
                .iter()
                .map(|&j| &sections[j])
                .filter(|b| b.start < lost && b.start + DISCONNECT_TOLERANCE >= lost)
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
    // Per key (locks only): for each place in grant order, the earliest start of any later
    // grant, for the stale-write check.
    let mut earliest_later: HashMap<&str, Vec<Instant>> = HashMap::new();
    for (key, order) in &by_key {
        let in_order: Vec<&SectionRecord> = order.iter().map(|&i| &sections[i]).collect();
        for pair in in_order.windows(2) {
            if let (Some(a), Some(b)) = (pair[0].fence, pair[1].fence) {
                if a == b {
                    report.violations.push(Violation::FenceReused {
                        key: (*key).to_owned(),
                        fence: a,
                    });
                }
            }
        }
        let limit = in_order.iter().map(|s| s.limit).max().unwrap_or(1);
        if limit == 1 {
            // Fences increase in the order grants were observed.
            let mut by_start: Vec<&SectionRecord> = in_order
                .iter()
                .copied()
                .filter(|s| s.fence.is_some())
                .collect();
            by_start.sort_by_key(|s| (s.start, s.fence));
            for pair in by_start.windows(2) {
                let (earlier, later) = (pair[0].fence.unwrap_or(0), pair[1].fence.unwrap_or(0));
                if later <= earlier {
                    report.violations.push(Violation::FenceOrder {
                        key: (*key).to_owned(),
                        earlier,
                        later,
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
            // Suffix minimum of starts: the earliest moment any later grant was seen.
            let mut later = vec![now + Duration::from_secs(1 << 30); in_order.len()];
            let mut min = later[0];
            for p in (0..in_order.len()).rev() {
                later[p] = min;
                min = min.min(in_order[p].start);
            }
            earliest_later.insert(key, later);
        }
        // At most `limit` believed holders at once.
        let mut events: Vec<(Instant, i64)> = Vec::with_capacity(order.len() * 2);
        for &i in order {
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
        let section = &sections[w.section];
        let Some(later) = earliest_later.get(section.key.as_str()) else {
            continue;
        };
        // A later holder had been granted the key when this write went through.
        if later[place[&w.section]] <= w.at {
            report.stale_writes += 1;
            report.violations.push(Violation::StaleWrite {
                key: section.key.clone(),
                fence: section.fence,
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
            let s = h.begin("k", 1, token(fence), Some(fence));
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
        let a = h.begin("k", 1, token(1), Some(1));
        let b = h.begin("k", 1, token(2), Some(2));
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
                .any(|v| matches!(v, Violation::StaleWrite { fence: Some(1), .. }))
        );
    }

    #[test]
    fn loss_notice_ends_the_interval() {
        let h = History::new();
        let a = h.begin("k", 1, token(1), Some(1));
        a.lost();
        std::thread::sleep(Duration::from_millis(2));
        let b = h.begin("k", 1, token(2), Some(2));
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.lost_notices, 1);
        assert!(report.violations.is_empty(), "{report}");

        // Told after the next holder started: late.
        let h = History::new();
        let a = h.begin("k", 1, token(1), Some(1));
        let b = h.begin("k", 1, token(2), Some(2));
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
        h.begin("k", 1, token(5), Some(5)).end();
        h.begin("k", 1, token(4), Some(4)).end();
        h.begin("k", 1, token(5), Some(5)).end();
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
        let held: Vec<_> = (1..=3)
            .map(|f| h.begin("s", 3, token(f), Some(f)))
            .collect();
        assert!(h.check().violations.is_empty());
        let fourth = h.begin("s", 3, token(4), Some(4));
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
        let a = h.begin("k", 1, token(1), Some(1));
        let b = h.begin("k", 1, token(2), Some(2));
        std::thread::sleep(Duration::from_millis(2));
        a.lost_by_disconnect();
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.disconnect_races, 1);
        assert!(report.violations.is_empty(), "{report}");

        // Beyond the tolerance it is a violation again.
        let h = History::new();
        let a = h.begin("k", 1, token(1), Some(1));
        let b = h.begin("k", 1, token(2), Some(2));
        std::thread::sleep(DISCONNECT_TOLERANCE + Duration::from_millis(5));
        a.lost_by_disconnect();
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.disconnect_races, 0);
        assert!(!report.violations.is_empty(), "{report}");
    }

    #[test]
    fn unfenced_sections_are_ordered_by_their_start_and_their_writes_go_through() {
        // A v1.10 server: no fences. Two holders at once, and a write from the first after the
        // second was granted: nothing can reject it, so it is stale.
        let h = History::new();
        let a = h.begin("k", 1, token(1), None);
        let b = h.begin("k", 1, token(2), None);
        assert!(a.write(1), "an unfenced write cannot be rejected");
        a.end();
        b.end();
        let report = h.check();
        assert_eq!(report.stale_writes, 1);
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::StaleWrite { fence: None, .. }))
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::Overlap { .. }))
        );

        // One after the other: clean, and no fence check applies.
        let h = History::new();
        for n in 1..=3 {
            let s = h.begin("k", 1, token(n), None);
            assert!(s.write(n));
            s.end();
            std::thread::sleep(Duration::from_millis(1));
        }
        let report = h.check();
        assert!(report.violations.is_empty(), "{report}");
        assert_eq!(report.writes, 3);
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
