//! FIFO ordering with threads: nine workers want the same lock; the server grants it in
//! queue order.
//!
//! ```text
//! cargo run --example fifo_blocking              # each worker holds the lock 500 ms
//! cargo run --example fifo_blocking -- --quick   # 50 ms
//! ```
//!
//! To make the queue order visible, the lock is held while the workers line up, and each
//! worker starts once the previous one is in the server's queue. Uses `DFLOCKD_SERVERS` when
//! set, an embedded test server otherwise. The async version is `fifo`.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "fifo-demo";

fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.blocking_client_builder()?.build()?;
    let work = common::pick(Duration::from_millis(500), Duration::from_millis(50));

    let lock = client.lock(KEY).acquire_timeout(Duration::from_secs(30));
    let order = Arc::new(Mutex::new(Vec::new()));

    let gate = lock.acquire()?;
    let mut workers = Vec::new();
    for n in 0..9 {
        let (lock, order) = (lock.clone(), order.clone());
        workers.push(thread::spawn(move || {
            let guard = lock.acquire()?;
            println!("acquired ({n}): fence {}", common::fence(guard.fence()));
            order.lock().unwrap().push(n);
            thread::sleep(work);
            guard.release()
        }));
        wait_until_queued(&client, n + 1)?;
    }
    gate.release()?;

    for worker in workers {
        worker.join().expect("worker panicked")?;
    }
    let order: Vec<String> = order.lock().unwrap().iter().map(u32::to_string).collect();
    println!("grant order: {}", order.join(" "));
    Ok(())
}

/// Waits until `KEY` has `waiters` requests in the server's queue (from `stats`).
fn wait_until_queued(
    client: &dflockd::blocking::Client,
    waiters: u32,
) -> Result<(), common::BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.stats_for_key(KEY)?;
        if stats
            .lock(KEY)
            .is_some_and(|l| l.waiters >= u64::from(waiters))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("worker {} never queued", waiters - 1).into());
        }
        thread::sleep(Duration::from_millis(5));
    }
}
