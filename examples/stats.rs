//! Server statistics: connections, held locks and semaphores with their queues, idle keys.
//!
//! ```text
//! cargo run --example stats             # (-- --quick is accepted; it is quick anyway)
//! ```
//!
//! Makes a little activity first so that there is something to see: a held lock with one
//! more contender queued, two of the three slots of a semaphore, and a lock released a moment
//! ago. Uses `DFLOCKD_SERVERS` when set, an embedded test server otherwise. The thread version
//! is `stats_blocking`.

mod common;

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.client_builder()?.build()?;

    client.lock("stats-idle").acquire().await?.release().await?;
    let lock = client.lock("stats-lock").lease_ttl(Duration::from_secs(20));
    let _held = lock.acquire().await?;
    let _queued = lock.enqueue().await?; // busy: waits in the queue
    let pool = client.semaphore("stats-pool", 3);
    let _slots = (pool.acquire().await?, pool.acquire().await?);

    let all = client.stats().await?; // one `Stats` per server; `server_stats(i)` for one
    for (addr, stats) in client.servers().iter().zip(&all) {
        println!("{addr}: {} connections", stats.connections);
        for lock in &stats.locks {
            println!(
                "  lock {}: lease ends in {:.0} s, {} waiting",
                lock.key, lock.lease_expires_in_s, lock.waiters
            );
        }
        for sem in &stats.semaphores {
            println!(
                "  semaphore {}: {}/{} held, {} waiting",
                sem.key, sem.holders, sem.limit, sem.waiters
            );
        }
        for idle in stats.idle_locks.iter().chain(&stats.idle_semaphores) {
            println!("  idle {}: unused for {:.1} s", idle.key, idle.idle_s);
        }
    }
    Ok(())
}
