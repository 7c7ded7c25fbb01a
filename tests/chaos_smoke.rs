//! Chaos smoke test: 32 client tasks on 4 lock keys and 2 semaphore keys (limit 3), leases of
//! 2-3 s, a random network or server fault every 2-5 s. The checkers must find nothing, and
//! every key must be granted again within 10 s after the faults heal.
//!
//! The long form is `cargo run --release --example chaos -- --minutes 10`.

mod reliability_support;

use std::time::Duration;

use reliability_support::{ChaosConfig, chaos_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_smoke() {
    let cfg = ChaosConfig {
        fault_phase: Duration::from_secs(45),
        ..ChaosConfig::default()
    };
    let outcome = tokio::time::timeout(Duration::from_secs(90), chaos_run(cfg))
        .await
        .expect("the chaos run ends in time");
    println!("{}", outcome.report);
    println!("faults by kind: {:?}", outcome.fault_kinds);
    println!("errors by kind: {:?}", outcome.errors);
    println!("regrant after heal: {:?}", outcome.regrant_after);
    println!("{}", outcome.summary());
    assert!(outcome.report.violations.is_empty(), "{}", outcome.report);
    assert_eq!(outcome.report.stale_writes, 0);
    assert_eq!(outcome.protocol_errors, 0, "{:?}", outcome.errors);
    assert!(outcome.faults >= 5, "only {} faults", outcome.faults);
    assert!(
        outcome.report.grants > 100,
        "only {} grants",
        outcome.report.grants
    );
    for (key, after) in &outcome.regrant_after {
        assert!(
            after.is_some(),
            "{key} was not granted again within 10 s of the heal"
        );
    }
}
