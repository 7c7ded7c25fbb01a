//! `examples/scheduled_job.rs` in quick mode: three replicas, each tick run exactly once.
#![cfg(feature = "macros")]

#[path = "../examples/scheduled_job.rs"]
#[allow(dead_code)]
mod scheduled_job;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_job_runs_each_tick_exactly_once() {
    let servers = dflockd_testkit::TestServers::default_config(1)
        .await
        .unwrap();
    let schedule = scheduled_job::Schedule::new(true);
    let job = dflockd_testkit::unique_key("example-job");
    let runs = tokio::time::timeout(
        Duration::from_secs(30),
        scheduled_job::run_replicas(&servers.addrs(), &job, &schedule),
    )
    .await
    .expect("bounded")
    .unwrap();
    for tick in 0..schedule.ticks {
        let by = runs.get(&tick).cloned().unwrap_or_default();
        assert_eq!(by.len(), 1, "tick {tick} ran on {by:?}");
    }
}
