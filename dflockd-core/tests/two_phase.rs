//! Two-phase acquisition: enqueue, then wait.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use std::time::Duration;

use common::{LIMIT, bounded, builder, default_client, wait_stats};
use dflockd_core::{Enqueued, Error, LossReason};
use dflockd_testkit::{TestServer, unique_key};

#[tokio::test]
async fn two_phase_acquired_queued_and_timeout() {
    let (_servers, client) = default_client().await;
    let key = unique_key("two-phase");
    let lock = client.lock(&key).lease_ttl(Duration::from_secs(10));
    let first = lock.enqueue().await.unwrap();
    assert_eq!(first.status(), "acquired");
    let first = first.wait(Duration::from_secs(1)).await.unwrap();
    let second = lock.enqueue().await.unwrap();
    assert_eq!(second.status(), "queued");
    let Enqueued::Queued(queued) = second else {
        unreachable!()
    };
    wait_stats(&client, &key, |s| s.usage(&key).1 == 1).await;
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.release().await.unwrap();
    });
    let second = bounded(LIMIT, queued.wait(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(second.is_held());
    releaser.await.unwrap();
    // A wait that times out gives up its place in the queue.
    let third = lock.enqueue().await.unwrap();
    let err = third.wait(Duration::from_secs(1)).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    wait_stats(&client, &key, |s| s.usage(&key) == (1, 0)).await;
    // Dropping a queued handle leaves the queue too.
    let fourth = lock.enqueue().await.unwrap();
    assert!(!fourth.is_acquired());
    wait_stats(&client, &key, |s| s.usage(&key).1 == 1).await;
    drop(fourth);
    wait_stats(&client, &key, |s| s.usage(&key) == (1, 0)).await;
    second.release().await.unwrap();
}

#[tokio::test]
async fn enqueued_grant_expiring_before_wait_is_lease_expired() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let client = builder(&[server.addr().to_string()]).build().unwrap();
    let key = unique_key("stale");
    let holder = client.lock(&key).acquire().await.unwrap();
    let queued = client
        .lock(&key)
        .lease_ttl(Duration::from_secs(1))
        .enqueue()
        .await
        .unwrap();
    holder.release().await.unwrap();
    // Granted now, but nobody waits: the lease runs out.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let err = queued.wait(Duration::from_secs(1)).await.unwrap_err();
    if server.version() == dflockd_testkit::ServerVersion::V1_10 {
        // v1.10.0 answers the wait with the stale grant; the client confirms it with a renew,
        // which the server refuses: never handed out.
        assert!(
            matches!(
                err,
                Error::LeaseLost {
                    reason: LossReason::RenewRefused,
                    ..
                }
            ),
            "{err:?}"
        );
    } else {
        assert!(
            matches!(err, Error::LeaseExpired { .. } | Error::NotEnqueued { .. }),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn a_wait_beyond_what_the_protocol_carries_is_an_error_and_leaves_the_queue() {
    let (_servers, client) = default_client().await;
    let key = unique_key("two-phase-huge");
    let holder = client.lock(&key).acquire().await.unwrap();
    let Enqueued::Queued(queued) = client.lock(&key).enqueue().await.unwrap() else {
        panic!("the key is held: queued");
    };
    let err = queued.wait(Duration::MAX).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // Nothing is left queued for the key.
    wait_stats(&client, &key, |s| s.usage(&key).1 == 0).await;
    holder.release().await.unwrap();
    let again = client.lock(&key).try_acquire().await.unwrap();
    assert!(again.is_some());
}
