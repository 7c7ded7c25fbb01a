//! The metrics example in its quick mode, against the embedded test server (or
//! `DFLOCKD_SERVERS`): the lines it prints from its own `/metrics`. Alone in its binary, since
//! the example installs the process's recorder.

#[allow(dead_code)]
#[path = "../examples/metrics.rs"]
mod metrics_example;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_example_serves_what_its_traffic_did() {
    let (client, _servers) = metrics_example::common::client().unwrap();
    let lines = tokio::time::timeout(Duration::from_secs(30), metrics_example::quick(client))
        .await
        .expect("the example did not finish in time")
        .unwrap();
    let value = |sample: &str| -> f64 {
        let line = lines
            .iter()
            .find(|line| line.starts_with(sample))
            .unwrap_or_else(|| panic!("no {sample} in {lines:#?}"));
        line[sample.len()..].trim().parse().unwrap()
    };
    // The lock and the semaphore slots granted directly, the payment the layer let through
    // and the job that ran; a busy try-once, two payments and a job refused.
    let lock_granted = value(r#"dflockd_acquires_total{kind="lock",outcome="granted"}"#);
    assert_eq!(lock_granted, 3.0, "{lines:#?}");
    let sem_granted = value(r#"dflockd_acquires_total{kind="semaphore",outcome="granted"}"#);
    assert_eq!(sem_granted, 2.0, "{lines:#?}");
    assert_eq!(
        value(r#"dflockd_acquires_total{kind="lock",outcome="busy"}"#),
        4.0
    );
    // The slot kept while `/metrics` was fetched.
    assert_eq!(value(r#"dflockd_held{kind="lock"}"#), 0.0);
    assert_eq!(value(r#"dflockd_held{kind="semaphore"}"#), 1.0);
    assert_eq!(
        value(r#"dflockd_releases_total{kind="lock",outcome="ok"}"#),
        3.0
    );
    let busy = value(r#"dflockd_layer_rejections_total{layer="orders",reason="busy"}"#);
    assert_eq!(busy, 2.0, "{lines:#?}");
    let skipped = lines
        .iter()
        .find(|line| line.starts_with("dflockd_exclusive_skipped_total{"))
        .unwrap_or_else(|| panic!("no skipped job in {lines:#?}"));
    assert!(
        skipped.contains(r#"::nightly_report""#)
            && skipped.contains(r#"reason="busy""#)
            && skipped.ends_with(" 1"),
        "{skipped}"
    );
}
