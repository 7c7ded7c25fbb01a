//! Two-phase acquisition: join the queue, do something else (tell another system), then wait
//! for the grant.
//!
//! ```text
//! cargo run --example two_phase              # the queued case waits about 2 s
//! cargo run --example two_phase -- --quick   # about 300 ms
//! ```
//!
//! Runs the same function twice: once on a free key (`enqueue` answers "acquired" and `wait`
//! returns at once, without I/O), once while another holder has the key ("queued", and `wait`
//! blocks server-side until the holder lets go). Uses `DFLOCKD_SERVERS` when set, an embedded
//! test server otherwise. The thread version is `two_phase_blocking`.

mod common;

use std::time::{Duration, Instant};

use dflockd::{Error, Lock};

/// Your code: record the status somewhere, tell another service, ...
async fn notify_external_system(key: &str, status: &str) {
    println!("notify: {key} is {status}");
}

async fn two_phase(lock: &Lock) -> Result<(), Error> {
    let started = Instant::now();
    let enqueued = lock.enqueue().await?; // "acquired" or "queued"
    notify_external_system(lock.key(), enqueued.status()).await;

    let guard = match enqueued.wait(Duration::from_secs(10)).await {
        Ok(guard) => guard,
        Err(e) if e.is_timeout() => {
            println!("not granted within 10 s; gave up our place in the queue");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    println!(
        "granted after {} ms (fence {})",
        started.elapsed().as_millis(),
        common::fence(guard.fence())
    );
    // ... the critical section ...
    guard.release().await
}

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.client_builder()?.build()?;
    let lock = client
        .lock("my-key")
        .acquire_timeout(Duration::from_secs(10))
        .lease_ttl(Duration::from_secs(20));

    println!("-- the key is free: fast path");
    two_phase(&lock).await?;

    println!("-- another holder has the key: queued path");
    let other = lock.acquire().await?;
    // That holder lets go after a while, in the background.
    other.release_after(common::pick(
        Duration::from_secs(2),
        Duration::from_millis(300),
    ));
    two_phase(&lock).await?;
    Ok(())
}
