//! Leader election: one leader at a time, a new one within a lease when the leader's
//! connection dies, terms (fences) that only grow, resignation hands over at once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{LIMIT, bounded, builder, proxy::Proxy};
use dflockd_core::{Campaign, LossReason, Term};
use dflockd_testkit::checker::History;
use dflockd_testkit::{TestServer, unique_key};

/// Records a term in the history for as long as the lead work runs.
async fn lead(history: History, term: Term) {
    let held = term.held().clone();
    let section = history.begin(held.key(), 1, *held.token(), held.fence());
    /// Ends the section when the campaign drops the work: as a loss when the term ended by
    /// one (a cut connection is a race with the hand-over, counted apart by the checker).
    struct End(dflockd_testkit::checker::Section, dflockd_core::HeldLock);
    impl Drop for End {
        fn drop(&mut self) {
            match self.1.loss_reason() {
                Some(LossReason::ConnectionLost) => self.0.lost_by_disconnect(),
                Some(_) => self.0.lost(),
                None => {}
            }
            self.0.end();
        }
    }
    let _end = End(section, held.clone());
    std::future::pending::<()>().await;
}

fn leader(campaigns: &[Campaign]) -> Option<usize> {
    let leaders: Vec<usize> = (0..campaigns.len())
        .filter(|&i| campaigns[i].is_leader())
        .collect();
    assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
    leaders.first().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_new_one_within_a_lease() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let group = unique_key("leader");
    let history = History::new();
    let lease = Duration::from_secs(2);
    let mut proxies = Vec::new();
    let mut campaigns = Vec::new();
    for _ in 0..3 {
        let proxy = Proxy::start(server.addr()).await;
        let client = builder(&[proxy.addr.to_string()]).build().unwrap();
        let history = history.clone();
        campaigns.push(
            client
                .election(&group)
                .lease_ttl(lease)
                .campaign(move |term| lead(history.clone(), term)),
        );
        proxies.push(Arc::new(proxy));
    }
    for _ in 0..3 {
        let current = bounded(LIMIT, async {
            loop {
                match leader(&campaigns) {
                    Some(i) => return i,
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await;
        // Kill the leader's connection: another takes over within a lease.
        let cut = Instant::now();
        proxies[current].reset();
        // The server frees the lock as soon as the connection resets, and may grant the next
        // replica before the cut one has read its reset: for that moment both flags are up
        // (the checker counts the race apart). One at a time holds from when it knows.
        bounded(LIMIT, async {
            while campaigns[current].is_leader() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let next = bounded(LIMIT, async {
            loop {
                match leader(&campaigns) {
                    Some(i) if i != current => return i,
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        })
        .await;
        let took = cut.elapsed();
        assert!(took < lease, "took {took:?}");
        assert_ne!(next, current);
    }
    // Resigning hands over at once.
    let now_leading = leader(&campaigns).unwrap();
    let resigning = campaigns.remove(now_leading);
    let resigned = Instant::now();
    resigning.resign().await;
    bounded(LIMIT, async {
        while leader(&campaigns).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(resigned.elapsed() < lease);
    for campaign in campaigns {
        campaign.resign().await;
    }
    let report = history.check();
    assert!(report.grants >= 5, "{report}");
    assert!(report.violations.is_empty(), "{report}");
    if common::server_version().issues_fences() {
        let fences: Vec<u64> = history
            .sections()
            .iter()
            .map(|s| s.fence.unwrap())
            .collect();
        assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    }
}
