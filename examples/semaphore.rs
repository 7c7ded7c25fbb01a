//! Bounded concurrency: nine workers through a semaphore of limit 3. At most three run at
//! once; the others queue in FIFO order.
//!
//! ```text
//! cargo run --example semaphore              # each worker holds its slot 1 s
//! cargo run --example semaphore -- --quick   # 200 ms
//! ```
//!
//! Uses `DFLOCKD_SERVERS` when set, an embedded test server otherwise. The thread version is
//! `semaphore_blocking`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const LIMIT: u32 = 3;

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.client_builder()?.build()?;
    let work = common::pick(Duration::from_secs(1), Duration::from_millis(200));

    let pool = client
        .semaphore("pool", LIMIT)
        .acquire_timeout(Duration::from_secs(30));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));

    let mut workers = Vec::new();
    for n in 0..9 {
        let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
        workers.push(tokio::spawn(async move {
            let slot = pool.acquire().await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            println!(
                "acquired ({n}): fence {}, {now} running",
                common::fence(slot.fence())
            );
            tokio::time::sleep(work).await;
            running.fetch_sub(1, Ordering::SeqCst);
            slot.release().await
        }));
    }
    for worker in workers {
        worker.await??;
    }
    println!(
        "9 workers done, at most {} at once (limit {LIMIT})",
        most.load(Ordering::SeqCst)
    );
    Ok(())
}
