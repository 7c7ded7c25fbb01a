//! FIFO ordering: nine workers want the same lock; the server grants it in queue order.
//!
//! ```text
//! cargo run --example fifo              # each worker holds the lock 500 ms
//! cargo run --example fifo -- --quick   # 50 ms
//! ```
//!
//! To make the queue order visible, the lock is held while the workers line up, and each
//! worker starts once the previous one is in the server's queue. Uses `DFLOCKD_SERVERS` when
//! set, an embedded test server otherwise. The thread version is `fifo_blocking`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "fifo-demo";

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.client_builder()?.build()?;
    let work = common::pick(Duration::from_millis(500), Duration::from_millis(50));

    let lock = client.lock(KEY).acquire_timeout(Duration::from_secs(30));
    let order = Arc::new(Mutex::new(Vec::new()));

    let gate = lock.acquire().await?;
    let mut workers = Vec::new();
    for n in 0..9 {
        let (lock, order) = (lock.clone(), order.clone());
        workers.push(tokio::spawn(async move {
            let guard = lock.acquire().await?;
            println!("acquired ({n}): fence {}", common::fence(guard.fence()));
            order.lock().unwrap().push(n);
            tokio::time::sleep(work).await;
            guard.release().await
        }));
        wait_until_queued(&client, n + 1).await?;
    }
    gate.release().await?;

    for worker in workers {
        worker.await??;
    }
    let order: Vec<String> = order.lock().unwrap().iter().map(u32::to_string).collect();
    println!("grant order: {}", order.join(" "));
    Ok(())
}

/// Waits until `KEY` has `waiters` requests in the server's queue (from `stats`).
async fn wait_until_queued(client: &dflockd::Client, waiters: u32) -> Result<(), common::BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.stats_for_key(KEY).await?;
        if stats
            .lock(KEY)
            .is_some_and(|l| l.waiters >= u64::from(waiters))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("worker {} never queued", waiters - 1).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
