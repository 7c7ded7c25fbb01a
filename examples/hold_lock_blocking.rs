//! Hold a lock while its lease renews in the background, from a plain thread.
//!
//! ```text
//! cargo run --example hold_lock_blocking              # lease 20 s, held for 45 s
//! cargo run --example hold_lock_blocking -- --quick   # lease 2 s, held for 5 s
//! ```
//!
//! Uses `DFLOCKD_SERVERS` when set, an embedded test server otherwise. The async version is
//! `hold_lock`.

mod common;

use std::time::Duration;

fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.blocking_client_builder()?.build()?;

    // In quick mode the hold is still longer than the lease, so renewals must happen.
    let (lease, hold) = if common::quick() {
        (Duration::from_secs(2), Duration::from_secs(5))
    } else {
        (Duration::from_secs(20), Duration::from_secs(45))
    };

    let guard = client
        .lock("foo")
        .acquire_timeout(Duration::from_secs(10))
        .lease_ttl(lease)
        .acquire()?;
    println!(
        "acquired key={} token={} lease={:?} fence={}",
        guard.key(),
        guard.token(), // shows a prefix only: the token is a credential
        guard.lease(),
        common::fence(guard.fence())
    );

    // The lease renews in the background. `wait_lost` sleeps like `thread::sleep`, but
    // returns early if the lease is lost anyway (server unreachable, connection dropped).
    if let Some(reason) = guard.wait_lost(hold) {
        return Err(format!("lease lost: {reason}").into());
    }
    println!(
        "still held after {hold:?} with a {lease:?} lease: {}",
        guard.is_held()
    );

    guard.release()?;
    println!("released");
    Ok(())
}
