//! Hold a lock while its lease renews in the background.
//!
//! ```text
//! cargo run --example hold_lock              # lease 20 s, held for 45 s
//! cargo run --example hold_lock -- --quick   # lease 2 s, held for 5 s
//! ```
//!
//! Uses `DFLOCKD_SERVERS` when set, an embedded test server otherwise. The same with threads
//! instead of async: `hold_lock_blocking`.

mod common;

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.client_builder()?.build()?;

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
        .acquire()
        .await?;
    println!(
        "acquired key={} token={} lease={:?} fence={}",
        guard.key(),
        guard.token(), // shows a prefix only: the token is a credential
        guard.lease(),
        common::fence(guard.fence())
    );

    // The lease renews in the background. `lost()` completes only if it is lost anyway
    // (server unreachable, connection dropped), so the work can stop in time.
    tokio::select! {
        () = tokio::time::sleep(hold) => {}
        reason = guard.lost() => return Err(format!("lease lost: {reason}").into()),
    }
    println!(
        "still held after {hold:?} with a {lease:?} lease: {}",
        guard.is_held()
    );

    guard.release().await?;
    println!("released");
    Ok(())
}
