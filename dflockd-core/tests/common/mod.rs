//! Shared helpers for the end-to-end tests.
#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::future::Future;
use std::time::Duration;

use dflockd_core::{Client, ClientBuilder, ServerVersion, Stats};
use dflockd_testkit::TestServers;

/// Upper bound for a test step.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The release of the servers under test, as the client knows it (see
/// `dflockd_testkit::version_under_test`): the embedded test server's profile, or
/// `DFLOCKD_TEST_SERVERS_VERSION` for external servers.
pub fn server_version() -> ServerVersion {
    dflockd_testkit::version_under_test().into()
}

/// Runs `f` with a time limit, so no test can hang.
pub async fn bounded<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .expect("test step took too long")
}

/// A builder for `addrs` with short timeouts suited to tests.
pub fn builder(addrs: &[String]) -> ClientBuilder {
    Client::builder()
        .servers(addrs.iter().cloned())
        .server_version(server_version())
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3))
}

/// Polls `check` on the stats of the server owning `key` until it holds (at most 10 s).
pub async fn wait_stats(client: &Client, key: &str, check: impl Fn(&Stats) -> bool) -> Stats {
    bounded(Duration::from_secs(10), async {
        loop {
            let stats = client.stats_for_key(key).await.expect("stats");
            if check(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Holders and waiters of `key` on its server.
pub async fn usage(client: &Client, key: &str) -> (u64, u64) {
    client.stats_for_key(key).await.expect("stats").usage(key)
}

/// One default-configured server (see `TestServers::default_config`) and a client for it.
pub async fn default_client() -> (TestServers, Client) {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    (servers, client)
}

/// A test server behind a proxy, and a client builder for the proxy.
pub async fn behind_proxy() -> (TestServers, proxy::Proxy, ClientBuilder) {
    let servers = TestServers::default_config(1).await.unwrap();
    let proxy = proxy::Proxy::start(servers.addrs()[0].parse().unwrap()).await;
    let builder = builder(&[proxy.addr.to_string()]);
    (servers, proxy, builder)
}

/// Polls `future` once (it sends its request and starts reading), as a task that never runs
/// again: its waker is a no-op.
pub fn stalled<F: Future>(future: F) -> std::pin::Pin<Box<F>> {
    let mut future = Box::pin(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    future
}
