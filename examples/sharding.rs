//! Sharding over several servers: each key belongs to one server, chosen by CRC-32 of the
//! key, as in every dflockd client (so a mixed fleet of Go, Python, TypeScript and Rust
//! clients agrees on where each key lives).
//!
//! ```text
//! cargo run --example sharding          # three embedded servers (-- --quick is accepted)
//! DFLOCKD_SERVERS=a:6388,b:6388,c:6388 cargo run --example sharding
//! ```
//!
//! The thread version is `sharding_blocking`.

mod common;

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(3)?;
    let client = servers.client_builder()?.build()?;
    let n = client.servers().len();

    let key = "user:42:profile";
    let index = client.server_for(key)?;
    println!(
        "{key} -> server {index} of {n} ({})",
        client.servers()[index]
    );

    // Locks on the key always go to that server.
    let guard = client.lock(key).acquire().await?;
    println!("acquired {key} on {}", guard.server());
    for (i, stats) in client.stats().await?.iter().enumerate() {
        let held = stats.lock(key).is_some();
        println!("  server {i}: {}", if held { "holds it" } else { "-" });
    }
    guard.release().await?;

    for key in ["foo", "my-key", "pool", "tenant-7"] {
        println!("{key} -> server {} of {n}", client.server_for(key)?);
    }
    Ok(())
}
