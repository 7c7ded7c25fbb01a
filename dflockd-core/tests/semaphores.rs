//! Semaphores: never more holders than the limit.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{LIMIT, bounded, default_client};
use dflockd_testkit::unique_key;

#[tokio::test]
async fn semaphore_never_exceeds_its_limit() {
    let (_servers, client) = default_client().await;
    let key = unique_key("pool");
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..9 {
        let (client, key) = (client.clone(), key.clone());
        let (inside, peak) = (inside.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let guard = client
                .semaphore(&key, 3)
                .acquire_timeout(Duration::from_secs(20))
                .acquire()
                .await
                .unwrap();
            assert_eq!(guard.limit(), 3);
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            guard.release().await.unwrap();
        }));
    }
    for task in tasks {
        bounded(LIMIT, task).await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}
