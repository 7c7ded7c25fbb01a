//! Server statistics from a plain thread: connections, held locks and semaphores with their
//! queues, idle keys.
//!
//! ```text
//! cargo run --example stats_blocking    # (-- --quick is accepted; it is quick anyway)
//! ```
//!
//! Makes a little activity first so that there is something to see: a held lock with one
//! more contender queued, two of the three slots of a semaphore, and a lock released a moment
//! ago. Uses `DFLOCKD_SERVERS` when set, an embedded test server otherwise. The async version
//! is `stats`.

mod common;

use std::time::Duration;

fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.blocking_client_builder()?.build()?;

    client.lock("stats-idle").acquire()?.release()?;
    let lock = client.lock("stats-lock").lease_ttl(Duration::from_secs(20));
    let _held = lock.acquire()?;
    let _queued = lock.enqueue()?; // busy: waits in the queue
    let pool = client.semaphore("stats-pool", 3);
    let _slots = (pool.acquire()?, pool.acquire()?);

    let all = client.stats()?; // one `Stats` per server; `server_stats(i)` for one
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
