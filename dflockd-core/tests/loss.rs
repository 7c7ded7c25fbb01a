//! Lease loss: blocked renewals, resets, a killed or draining server.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, behind_proxy, bounded, builder, proxy::Proxy};
use dflockd_core::{Error, LossReason};
use dflockd_testkit::{TestServer, unique_key};

#[tokio::test]
async fn blocked_renewals_report_loss_before_the_next_holder_gets_the_lock() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let proxy = Proxy::start(server.addr()).await;
    let holder_client = builder(&[proxy.addr.to_string()]).build().unwrap();
    let other = builder(&[server.addr().to_string()]).build().unwrap();
    let key = unique_key("blackholed");
    let guard = holder_client
        .lock(&key)
        .lease_ttl(Duration::from_secs(2))
        .acquire()
        .await
        .unwrap();
    let watch = guard.watch();
    let lost_at = tokio::spawn(async move {
        let reason = watch.lost().await;
        (reason, Instant::now())
    });
    proxy.blackhole(true);
    let granted = other
        .lock(&key)
        .acquire_timeout(Duration::from_secs(10))
        .acquire()
        .await
        .unwrap();
    let granted_at = Instant::now();
    let (reason, lost_at) = bounded(LIMIT, lost_at).await.unwrap();
    assert_eq!(reason, LossReason::DeadlineExceeded);
    assert!(
        lost_at < granted_at,
        "loss noticed {:?} after the hand-over",
        lost_at - granted_at
    );
    assert!(!guard.is_held());
    granted.release().await.unwrap();
}

#[tokio::test]
async fn a_reset_connection_reports_loss_at_once() {
    let (_servers, proxy, builder) = behind_proxy().await;
    let client = builder.build().unwrap();
    let guard = client.lock(unique_key("reset")).acquire().await.unwrap();
    let started = Instant::now();
    proxy.reset();
    let reason = bounded(LIMIT, guard.lost()).await;
    assert_eq!(reason, LossReason::ConnectionLost);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let err = guard.release().await.unwrap_err();
    assert!(err.is_lease_lost(), "{err:?}");
}

#[tokio::test]
async fn killing_the_server_reports_loss() {
    let server = TestServer::builder().start().await.unwrap();
    let client = builder(&[server.addr().to_string()]).build().unwrap();
    let guard = client.lock(unique_key("killed")).acquire().await.unwrap();
    server.kill();
    assert_eq!(
        bounded(LIMIT, guard.lost()).await,
        LossReason::ConnectionLost
    );
}

#[tokio::test]
async fn draining_server_answers_draining() {
    let server = TestServer::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let client = builder(&[server.addr().to_string()]).build().unwrap();
    let guard = client.lock("held").acquire().await.unwrap();
    if server.version() == dflockd_testkit::ServerVersion::V1_10 {
        // v1.10 has no `error_draining`: it serves open connections until they close (or the
        // shutdown timeout), new connections are refused.
        let probe = async {
            let fresh = client.lock("new").try_acquire().await.unwrap();
            assert!(fresh.is_some(), "still served while draining");
            drop(fresh);
            drop(guard);
        };
        bounded(LIMIT, async { tokio::join!(server.shutdown(), probe) }).await;
        return;
    }
    // The shared connection is still open while the server drains.
    let probe = async {
        let err = loop {
            match client.lock("new").try_acquire().await {
                Err(e @ Error::Draining { .. }) => break e,
                Ok(Some(g)) => drop(g),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        assert!(err.is_retryable());
        drop(guard);
    };
    bounded(LIMIT, async { tokio::join!(server.shutdown(), probe) }).await;
}
