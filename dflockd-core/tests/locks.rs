//! Locks: acquire, try-once, FIFO, renewals, fences, release, cancellation, statuses.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{LIMIT, bounded, builder, default_client, usage, wait_stats};
use dflockd_core::{Client, Error};
use dflockd_testkit::{TestServer, unique_key};

#[tokio::test]
async fn acquire_release_and_guard_fields() {
    let (_servers, client) = default_client().await;
    let key = unique_key("basic");
    let guard = client
        .lock(&key)
        .lease_ttl(Duration::from_millis(1500))
        .acquire()
        .await
        .unwrap();
    assert_eq!(guard.key(), key);
    assert_eq!(
        guard.lease(),
        Duration::from_secs(2),
        "sub-second rounds up"
    );
    assert_eq!(guard.token().as_str().len(), 32);
    assert!(guard.is_held());
    assert_eq!(guard.loss_reason(), None);
    assert_eq!(usage(&client, &key).await.0, 1);
    guard.release().await.unwrap();
    assert_eq!(usage(&client, &key).await, (0, 0));
}

#[tokio::test]
async fn try_acquire_and_timeout_are_not_errors_to_parse() {
    let (_servers, client) = default_client().await;
    let key = unique_key("busy");
    let held = client.lock(&key).acquire().await.unwrap();
    assert!(client.lock(&key).try_acquire().await.unwrap().is_none());
    let started = Instant::now();
    let err = client
        .lock(&key)
        .acquire_timeout(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.is_busy() && err.is_retryable());
    assert!(started.elapsed() >= Duration::from_millis(900));
    held.release().await.unwrap();
    assert!(client.lock(&key).try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn fifo_order_of_nine_waiters() {
    let (_servers, client) = default_client().await;
    let key = unique_key("fifo");
    let holder = client.lock(&key).acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..9u64 {
        tasks.push({
            let (client, key, order) = (client.clone(), key.clone(), order.clone());
            tokio::spawn(async move {
                let guard = client
                    .lock(&key)
                    .acquire_timeout(Duration::from_secs(20))
                    .acquire()
                    .await
                    .unwrap();
                order.lock().unwrap().push(i);
                guard.release().await.unwrap();
            })
        });
        // Each waiter is queued before the next one starts: the queue order is 0..9.
        wait_stats(&client, &key, |s| s.usage(&key).1 == i + 1).await;
    }
    holder.release().await.unwrap();
    for task in tasks {
        bounded(LIMIT, task).await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..9).collect::<Vec<_>>());
}

#[tokio::test]
async fn short_lease_is_held_for_many_periods() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let client = builder(&[server.addr().to_string()]).build().unwrap();
    let key = unique_key("renewed");
    let guard = client
        .lock(&key)
        .lease_ttl(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        assert!(guard.is_held());
        assert!(client.lock(&key).try_acquire().await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert!(client.lock(&key).try_acquire().await.unwrap().is_some());
}

/// Fences grow with every grant on servers that issue them (v2.1 and later), and are `None`
/// on older ones.
#[tokio::test]
async fn explicit_renew_and_fences_increase() {
    let (_servers, client) = default_client().await;
    let key = unique_key("fence");
    let first = client
        .lock(&key)
        .lease_ttl(Duration::from_secs(5))
        .acquire()
        .await
        .unwrap();
    assert_eq!(first.renew().await.unwrap(), Duration::from_secs(5));
    let f1 = first.fence();
    first.release().await.unwrap();
    let second = client.lock(&key).acquire().await.unwrap();
    if common::server_version().issues_fences() {
        let (f1, f2) = (f1.expect("a fence"), second.fence().expect("a fence"));
        assert!(f2 > f1, "{f2} > {f1}");
    } else {
        assert_eq!((f1, second.fence()), (None, None));
    }
    second.release().await.unwrap();
}

#[tokio::test]
async fn dropped_guard_releases_in_the_background() {
    let (_servers, client) = default_client().await;
    let key = unique_key("dropped");
    let guard = client.lock(&key).acquire().await.unwrap();
    drop(guard);
    wait_stats(&client, &key, |s| s.usage(&key) == (0, 0)).await;
}

#[tokio::test]
async fn cancelled_acquires_leave_no_holder_or_waiter() {
    let (_servers, client) = default_client().await;
    let key = unique_key("cancel");
    let holder = client.lock(&key).acquire().await.unwrap();
    // A waiter that is cancelled while queued server-side.
    let waiter = {
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move {
            client
                .lock(&key)
                .acquire_timeout(Duration::from_secs(20))
                .acquire()
                .await
        })
    };
    wait_stats(&client, &key, |s| s.usage(&key).1 == 1).await;
    waiter.abort();
    if dflockd_testkit::version_under_test() == dflockd_testkit::ServerVersion::V1_10 {
        // v1.10 does not read a connection blocked in a wait: the closed waiter stays queued
        // until its turn, when the grant to it fails and the key passes on.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(usage(&client, &key).await, (1, 1));
        holder.release().await.unwrap();
        wait_stats(&client, &key, |s| s.usage(&key) == (0, 0)).await;
    } else {
        // Since v1.15 the server notices at once.
        wait_stats(&client, &key, |s| s.usage(&key) == (1, 0)).await;
        holder.release().await.unwrap();
    }
    // Acquires cancelled at random points, on a free key and on a busy one.
    for round in 0..200u64 {
        let cancel_after = Duration::from_micros(fastrand::u64(0..3000));
        let _ = tokio::time::timeout(
            cancel_after,
            client
                .lock(&key)
                .acquire_timeout(Duration::from_secs(5))
                .acquire(),
        )
        .await;
        if round % 50 == 0 {
            // Keep the key busy for a moment so that some attempts queue.
            let _busy = client.lock(&key).try_acquire().await.unwrap();
        }
    }
    wait_stats(&client, &key, |s| s.usage(&key) == (0, 0)).await;
    assert!(client.lock(&key).try_acquire().await.unwrap().is_some());
}

#[tokio::test]
async fn bad_input_is_rejected_before_anything_is_sent() {
    // Nothing listens here: any attempt to connect would fail with a connect error.
    let client = Client::builder().servers(["127.0.0.1:1"]).build().unwrap();
    let bad_keys = ["", "a b", "a\nl", "tab\t", "nul\0", &"k".repeat(300)];
    for key in bad_keys {
        let err = client.lock(key).acquire().await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{key:?}: {err:?}");
    }
    let err = client
        .lock("k")
        .lease_ttl(Duration::ZERO)
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = client.semaphore("k", 0).acquire().await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // Durations beyond the protocol's 2^32 seconds: an error, not a panic.
    for lock in [
        client.lock("k").acquire_timeout(Duration::MAX),
        client.lock("k").lease_ttl(Duration::MAX),
    ] {
        let err = lock.acquire().await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    let err = client
        .semaphore("k", 2)
        .lease_ttl(Duration::MAX)
        .enqueue()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(client.open_connections(), 0);
}

#[tokio::test]
async fn server_statuses_are_typed() {
    let (_servers, client) = default_client().await;
    let key = unique_key("mismatch");
    let sem = client.semaphore(&key, 2).acquire().await.unwrap();
    let err = client.semaphore(&key, 3).try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::LimitMismatch { .. }), "{err:?}");
    // A lock of the same name: the same resource before v1.14, another one since.
    let lock = client.lock(&key).try_acquire().await;
    if common::server_version().separate_namespaces() {
        lock.unwrap()
            .expect("a lock of its own")
            .release()
            .await
            .unwrap();
    } else {
        let err = lock.unwrap_err();
        assert!(matches!(err, Error::LimitMismatch { .. }), "{err:?}");
    }
    sem.release().await.unwrap();

    let capped = TestServer::builder()
        .max_locks(1)
        .max_waiters(1)
        .start()
        .await
        .unwrap();
    let client = builder(&[capped.addr().to_string()]).build().unwrap();
    let a = client.lock("a").acquire().await.unwrap();
    let err = client.lock("b").try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::MaxLocks { .. }), "{err:?}");
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .lock("a")
                .acquire_timeout(Duration::from_secs(20))
                .acquire()
                .await
        })
    };
    wait_stats(&client, "a", |s| s.usage("a").1 == 1).await;
    let err = client
        .lock("a")
        .acquire_timeout(Duration::from_secs(5))
        .acquire()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MaxWaiters { .. }), "{err:?}");
    a.release().await.unwrap();
    bounded(LIMIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_hand_over_never_queues_a_release_behind_a_wait() {
    // Sixteen tasks cycling on one key: each release must reach the server while the other
    // fifteen wait, or the hand-over stalls until timeouts fire.
    let (_servers, client) = default_client().await;
    let key = unique_key("hot");
    let stop = Instant::now() + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let lock = client.lock(&key).acquire_timeout(Duration::from_secs(5));
        tasks.push(tokio::spawn(async move {
            let mut done = 0u32;
            while Instant::now() < stop {
                let guard = lock.acquire().await.expect("acquire");
                guard.release().await.expect("release");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += bounded(LIMIT, task).await.unwrap();
    }
    assert!(total >= 16, "{total}");
    wait_stats(&client, &key, |s| s.usage(&key) == (0, 0)).await;
}
