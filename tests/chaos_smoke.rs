//! Chaos smoke tests: 32 client tasks on 4 lock keys and 2 semaphore keys (limit 3), leases of
//! 2-3 s and waits of 0.5-4 s (so waits often outlast leases).
//!
//! * With a random network or server fault every 2-5 s, the checkers must find no safety
//!   violation, no liveness finding outside the faults and their aftermath, and every key must
//!   be granted again within 10 s after the faults heal.
//! * With no fault at all, every acquire must get its key or time out behind busy holders:
//!   no grant thrown away, no failed acquire, no waiter starving behind a key with room.
//!
//! The long form is `cargo run --release --example chaos -- --minutes 10`.

mod reliability_support;

use std::time::Duration;

use reliability_support::{ChaosConfig, ChaosOutcome, chaos_run};

async fn run(cfg: ChaosConfig) -> ChaosOutcome {
    let outcome = tokio::time::timeout(Duration::from_secs(90), chaos_run(cfg))
        .await
        .expect("the chaos run ends in time");
    println!("{}", outcome.report);
    println!("faults by kind: {:?}", outcome.fault_kinds);
    println!("errors by kind: {:?}", outcome.errors);
    println!("regrant after heal: {:?}", outcome.regrant_after);
    println!("{}", outcome.summary());
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_smoke() {
    let outcome = run(ChaosConfig {
        fault_phase: Duration::from_secs(45),
        ..ChaosConfig::default()
    })
    .await;
    let report = &outcome.report;
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.stale_writes, 0);
    assert!(report.liveness.is_empty(), "{report}");
    assert_eq!(outcome.protocol_errors, 0, "{:?}", outcome.errors);
    assert!(outcome.faults >= 5, "only {} faults", outcome.faults);
    assert!(report.grants > 100, "only {} grants", report.grants);
    for (key, after) in &outcome.regrant_after {
        assert!(
            after.is_some(),
            "{key} was not granted again within 10 s of the heal"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_faults_every_acquire_is_granted_or_times_out_behind_holders() {
    let outcome = run(ChaosConfig {
        fault_phase: Duration::from_secs(20),
        inject_faults: false,
        ..ChaosConfig::default()
    })
    .await;
    let report = &outcome.report;
    assert_eq!(report.faults, 0);
    assert!(report.violations.is_empty(), "{report}");
    assert_eq!(report.discarded_grants, 0, "{report}");
    assert_eq!(report.failures, 0, "{report}\n{:?}", outcome.errors);
    assert_eq!(report.starved_waits, 0, "{report}");
    assert!(report.liveness.is_empty(), "{report}");
    assert_eq!(report.lost_notices, 0, "{report}");
    assert!(report.grants > 100, "only {} grants", report.grants);
    assert!(
        report.timeouts > 0,
        "no wait ever timed out: the load was too light to judge"
    );
}
