//! Authentication with a shared secret: the client sends it as the first request of every
//! connection it opens.
//!
//! ```text
//! cargo run --example auth              # (-- --quick is accepted; it is quick anyway)
//! DFLOCKD_SERVERS=host:6388 DFLOCKD_AUTH_TOKEN=... cargo run --example auth
//! ```
//!
//! Without `DFLOCKD_SERVERS`, an embedded server started with the token `shared-secret` is
//! used. The thread version is `auth_blocking`.

mod common;

use dflockd::Client;

const SECRET: &str = "shared-secret";

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers_with(1, |server| server.auth_token(SECRET))?;
    let secret = if servers.is_external() {
        std::env::var("DFLOCKD_AUTH_TOKEN").map_err(|_| "set DFLOCKD_AUTH_TOKEN")?
    } else {
        SECRET.to_owned()
    };

    let client = Client::builder()
        .servers(servers.addrs())
        .auth_token(secret) // never shown: Debug prints <redacted>
        .build()?;
    let guard = client.lock("my-key").acquire().await?;
    println!(
        "with the token: acquired {} (fence {})",
        guard.key(),
        common::fence(guard.fence())
    );
    guard.release().await?;

    // A wrong (or missing) token is `Error::AuthRejected`; `is_permission_denied()` says so.
    let intruder = Client::builder()
        .servers(servers.addrs())
        .auth_token("not-the-secret")
        .build()?;
    match intruder.lock("my-key").acquire().await {
        Err(e) if e.is_permission_denied() => println!("with a wrong token: refused ({e})"),
        Err(e) => return Err(e.into()),
        Ok(_) => println!("with a wrong token: accepted (this server does not check tokens)"),
    }
    Ok(())
}
