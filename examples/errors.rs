//! Handling specific errors: every refusal from the server is its own `dflockd::Error`
//! variant, so callers `match` on it instead of comparing strings.
//!
//! ```text
//! cargo run --example errors              # or with -- --quick: the same, about 2 s
//! ```
//!
//! Without `DFLOCKD_SERVERS`, an embedded server is set up so that each case happens: it
//! wants an auth token, keeps at most one key, and is shut down at the end. With
//! `DFLOCKD_SERVERS`, only the timeout is shown. The thread version is `errors_blocking`.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use dflockd::{Client, ClientBuilder, Error, Lock};

const SECRET: &str = "shared-secret";

/// The part to copy: what a job does with each outcome of `acquire`.
async fn run_job(lock: &Lock) -> Result<(), Error> {
    match lock.acquire().await {
        Ok(guard) => {
            println!("acquired {}: doing the work", guard.key());
            guard.release().await
        }
        // No slot opened within the acquire timeout (`try_acquire` says `Ok(None)` instead).
        Err(Error::Timeout { key }) => {
            println!("timeout: {key:?} stayed busy; skip this run");
            Ok(())
        }
        Err(Error::MaxLocks { key }) => {
            println!("max locks: the server's cap on distinct keys is reached; {key:?} refused");
            Ok(())
        }
        Err(Error::Draining { server }) => {
            println!("draining: {server} is shutting down; retry later");
            Ok(())
        }
        Err(Error::AuthRejected { server }) => {
            println!("auth: {server} rejected the token; check DFLOCKD_AUTH_TOKEN");
            Ok(())
        }
        // Groups of errors have predicates: is_retryable, is_busy, is_lease_lost, ...
        Err(e) if e.is_retryable() => {
            println!("retryable: {e}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers_with(1, |server| {
        server
            .auth_token(SECRET)
            .max_locks(1)
            .shutdown_timeout(Duration::from_secs(1))
    })?;
    let mut builder = ClientBuilder::from_env()?
        .servers(servers.addrs())
        .acquire_timeout(Duration::from_secs(1));
    if !servers.is_external() {
        builder = builder.auth_token(SECRET);
    }
    let client = builder.build()?;

    println!("-- a key held by someone else, acquire timeout 1 s");
    let holder = client.lock("my-key").acquire().await?;
    run_job(&client.lock("my-key")).await?;
    holder.release().await?;

    let [server] = servers.embedded() else {
        println!("(max locks, auth and draining need the embedded server: unset DFLOCKD_SERVERS)");
        return Ok(());
    };

    println!("-- a second key on a server that keeps one");
    run_job(&client.lock("another-key")).await?;

    println!("-- a wrong auth token");
    let intruder = Client::builder()
        .servers(servers.addrs())
        .auth_token("not-the-secret")
        .build()?;
    run_job(&intruder.lock("my-key")).await?;

    println!("-- a server shutting down");
    let probe = async {
        wait_until_refusing(&server.addr_string()).await?;
        run_job(&client.lock("my-key")).await?;
        drop(client); // closes its connections, so that the drain can end
        Ok::<_, common::BoxError>(())
    };
    let ((), probed) = tokio::join!(server.shutdown(), probe);
    Ok(probed?)
}

/// Waits until `addr` refuses new connections: a draining server has closed its listener.
async fn wait_until_refusing(addr: &str) -> Result<(), common::BoxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        if Instant::now() > deadline {
            return Err("the server did not start draining".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
