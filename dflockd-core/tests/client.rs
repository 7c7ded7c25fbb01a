//! End-to-end tests of the async client against the test server, over real sockets.
//!
//! Tests that need only a default-configured server use `TestServers::default_config`, so
//! they run against `DFLOCKD_TEST_SERVERS` when it is set; the others start their own.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, builder, proxy::Proxy, usage, wait_stats};
use dflockd_core::{Client, Enqueued, Error, LossReason};
use dflockd_testkit::{TestServer, TestServers, unique_key};

const LIMIT: Duration = Duration::from_secs(30);

async fn default_client() -> (TestServers, Client) {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    (servers, client)
}

/// A test server behind a chaos proxy, and a client builder for the proxy.
async fn behind_proxy() -> (TestServers, Proxy, dflockd_core::ClientBuilder) {
    let servers = TestServers::default_config(1).await.unwrap();
    let proxy = Proxy::start(servers.addrs()[0].parse().unwrap()).await;
    let builder = builder(&[proxy.addr.to_string()]);
    (servers, proxy, builder)
}

/// Polls `future` once (it sends its request and starts reading), as a task that never runs
/// again: its waker is a no-op.
fn stalled<F: std::future::Future>(future: F) -> std::pin::Pin<Box<F>> {
    let mut future = Box::pin(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    future
}

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
async fn semaphore_never_exceeds_its_limit() {
    let (_servers, client) = default_client().await;
    let key = unique_key("pool");
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..9 {
        let (client, key) = (client.clone(), key.clone());
        let (inside, peak) = (inside.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            let guard = client
                .semaphore(&key, 3)
                .acquire_timeout(Duration::from_secs(20))
                .acquire()
                .await
                .unwrap();
            assert_eq!(guard.limit(), 3);
            let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            guard.release().await.unwrap();
        }));
    }
    for task in tasks {
        bounded(LIMIT, task).await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
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
    wait_stats(&client, &key, |s| s.usage(&key) == (1, 0)).await;
    holder.release().await.unwrap();
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
async fn dropped_guard_releases_in_the_background() {
    let (_servers, client) = default_client().await;
    let key = unique_key("dropped");
    let guard = client.lock(&key).acquire().await.unwrap();
    drop(guard);
    wait_stats(&client, &key, |s| s.usage(&key) == (0, 0)).await;
}

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
    assert!(
        matches!(err, Error::LeaseExpired { .. } | Error::NotEnqueued { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_statuses_are_typed() {
    let (_servers, client) = default_client().await;
    let key = unique_key("mismatch");
    let sem = client.semaphore(&key, 2).acquire().await.unwrap();
    let err = client.lock(&key).try_acquire().await.unwrap_err();
    assert!(matches!(err, Error::LimitMismatch { .. }), "{err:?}");
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

#[tokio::test]
async fn draining_server_answers_draining() {
    let server = TestServer::builder()
        .shutdown_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let client = builder(&[server.addr().to_string()]).build().unwrap();
    let guard = client.lock("held").acquire().await.unwrap();
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

#[tokio::test]
async fn auth_right_wrong_and_missing() {
    let server = TestServer::builder()
        .auth_token("s3cret")
        .start()
        .await
        .unwrap();
    let addrs = [server.addr().to_string()];
    let right = builder(&addrs).auth_token("s3cret").build().unwrap();
    right
        .lock("k")
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let wrong = builder(&addrs).auth_token("nope").build().unwrap();
    let err = wrong.lock("k").acquire().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
    assert!(!format!("{err:?}").contains("nope"));
    let missing = builder(&addrs).build().unwrap();
    let err = missing.lock("k").acquire().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
}

#[tokio::test]
async fn tls_with_a_test_ca_and_a_wrong_name() {
    let ca = dflockd_testkit::tls::TestCa::new();
    let identity = ca.issue_server(&["localhost"]).unwrap();
    let server = TestServer::builder().tls(identity).start().await.unwrap();
    let addr = format!("localhost:{}", server.addr().port());
    let tls = dflockd_core::TlsOptions::ca_pem(ca.cert_pem()).unwrap();
    let client = builder(std::slice::from_ref(&addr))
        .tls(tls.clone())
        .build()
        .unwrap();
    let guard = client.lock("tls").acquire().await.unwrap();
    guard.release().await.unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.len(), 1);

    let wrong = builder(std::slice::from_ref(&addr))
        .tls(tls.server_name("other.example"))
        .build()
        .unwrap();
    let err = wrong.lock("tls").acquire().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    // A plain client cannot talk to the TLS server.
    let plain = builder(&[addr])
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(plain.lock("tls").acquire().await.is_err());
}

#[tokio::test]
async fn keys_are_routed_by_crc32_across_three_servers() {
    let servers = TestServers::default_config(3).await.unwrap();
    let addrs = servers.addrs();
    let client = builder(&addrs).build().unwrap();
    let mut guards = Vec::new();
    let keys: Vec<String> = (0..12).map(|i| unique_key(&format!("shard{i}"))).collect();
    for key in &keys {
        guards.push(client.lock(key).acquire().await.unwrap());
    }
    let stats = client.stats().await.unwrap();
    for (key, guard) in keys.iter().zip(&guards) {
        let index = (crc32fast::hash(key.as_bytes()) % 3) as usize;
        assert_eq!(client.server_for(key).unwrap(), index);
        assert_eq!(guard.server(), addrs[index]);
        for (i, s) in stats.iter().enumerate() {
            assert_eq!(s.lock(key).is_some(), i == index, "{key} on server {i}");
        }
    }
    // `user:42:profile` lands on server 0 of 3, as with every dflockd client.
    assert_eq!(client.server_for("user:42:profile").unwrap(), 0);
}

#[tokio::test]
async fn connections_are_pooled_and_closed_with_the_client() {
    let server = TestServer::builder().start().await.unwrap();
    let client = builder(&[server.addr().to_string()]).build().unwrap();
    for i in 0..100 {
        let guard = client.lock(format!("pooled-{i}")).acquire().await.unwrap();
        guard.release().await.unwrap();
    }
    assert_eq!(client.open_connections(), 1);
    assert_eq!(server.stats().connections, 1);
    drop(client);
    bounded(LIMIT, async {
        while server.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
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
    assert_eq!(client.open_connections(), 0);
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

#[tokio::test]
async fn an_acquire_right_after_a_reset_uses_a_fresh_connection() {
    let (_servers, proxy, builder) = behind_proxy().await;
    let client = builder.build().unwrap();
    for round in 0..20 {
        // Warm the pool, cut every connection, and acquire at once: the pooled connection
        // may not have noticed the reset yet.
        let key = unique_key(&format!("after-reset-{round}"));
        client
            .lock(&key)
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        proxy.reset();
        let guard = bounded(LIMIT, client.lock(&key).acquire())
            .await
            .expect("an acquire after a reset must not fail");
        guard.release().await.unwrap();
    }
}

/// A lock handle waits again on the connection it waited on last (found without looking at the
/// whole pool). When a reset killed every pooled connection, that one and any other the pool
/// offers may not have noticed yet: the wait goes on to a live one instead of failing (it
/// failed after the second dead connection, before).
#[tokio::test]
async fn a_wait_after_every_pooled_connection_was_reset_gets_a_live_one() {
    let (_servers, proxy, builder) = behind_proxy().await;
    let client = builder.build().unwrap();
    let key = unique_key("hint-reset");
    let holder = client.lock(&key);
    // One handle for every round (shared, not cloned: a clone remembers on its own).
    let waiter = std::sync::Arc::new(client.lock(&key).acquire_timeout(Duration::from_secs(5)));
    for round in 0..10 {
        // The waiter queues behind the holder (on a connection of its own, which it
        // remembers), gets the lock when the holder lets go, and releases it. Odd rounds
        // wait right after a reset.
        let held = bounded(LIMIT, holder.acquire()).await.unwrap();
        let wait = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        held.release().await.unwrap();
        let guard = bounded(LIMIT, wait)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: the waiter gets the lock: {e}"));
        guard.release().await.unwrap();
        if round % 2 == 0 {
            // Every connection is cut; the remembered one may not have noticed yet.
            proxy.reset();
        }
    }
}

/// A caller waiting for an answer reads the socket itself; one whose task stops running (busy,
/// or never polled again) must not hide the server closing the connection from the locks held
/// through it: the connection's maintenance reads what the socket signalled.
#[tokio::test]
async fn a_stalled_waiting_caller_does_not_hide_a_reset() {
    let (_servers, proxy, builder) = behind_proxy().await;
    let client = builder.max_shared_connections(1).build().unwrap();
    let guard = client.lock(unique_key("stalled")).acquire().await.unwrap();
    assert_eq!(client.open_connections(), 1);
    // A request on the same connection, polled once, then never again.
    let other = client.lock(unique_key("stalled-other"));
    let stuck = stalled(other.try_acquire());
    assert_eq!(client.open_connections(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    proxy.reset();
    let reason = bounded(LIMIT, guard.lost()).await;
    assert_eq!(reason, LossReason::ConnectionLost);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(stuck);
}

/// After the maintenance read for a stalled caller once, the connection's reader task is the
/// one woken: a later reset is noticed at once, not a maintenance tick later.
#[tokio::test]
async fn after_a_stalled_caller_the_reader_task_takes_over() {
    let (_servers, proxy, builder) = behind_proxy().await;
    let client = builder.max_shared_connections(1).build().unwrap();
    let guard = client.lock(unique_key("takeover")).acquire().await.unwrap();
    let other = client.lock(unique_key("takeover-other"));
    let stuck = stalled(other.try_acquire());
    // Its answer arrives and wakes no one who reads; a maintenance round reads it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(client.open_connections(), 1);
    let started = Instant::now();
    proxy.reset();
    assert_eq!(
        bounded(LIMIT, guard.lost()).await,
        LossReason::ConnectionLost
    );
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    // The stalled request got its answer meanwhile (read for it): a grant, released at once
    // when the future is dropped.
    drop(stuck);
}

/// Requests pipelined on one shared connection: most answers are read by another caller (or
/// the reader task) and left for their caller in the connection's state. Each reaches its
/// caller, and callers cancelled at random points leave nothing held: a grant read for a
/// caller that went away is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_answers_reach_their_callers_and_cancelled_ones_leave_nothing_held() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs())
        .max_shared_connections(1)
        .build()
        .unwrap();
    let prefix = unique_key("piped");
    let keys: Vec<String> = (0..32).map(|i| format!("{prefix}-{i}")).collect();
    for round in 0..40u64 {
        let tasks: Vec<_> = keys
            .iter()
            .map(|key| {
                let (client, key) = (client.clone(), key.clone());
                tokio::spawn(async move {
                    let guard = client.lock(&key).try_acquire().await.unwrap();
                    let guard =
                        guard.unwrap_or_else(|| panic!("round {round}: a free key is granted"));
                    assert_eq!(guard.key(), key);
                    guard.release().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            bounded(LIMIT, task).await.unwrap();
        }
        // A burst on a cold pool opened one connection, not one per caller.
        assert_eq!(client.open_connections(), 1, "round {round}");
        // The same, cancelled at random points (before sending, after, after the grant).
        let tasks: Vec<_> = keys
            .iter()
            .map(|key| {
                let (client, key) = (client.clone(), key.clone());
                let cancel_after = Duration::from_micros(fastrand::u64(0..(200 + round * 50)));
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(cancel_after, client.lock(&key).try_acquire()).await;
                })
            })
            .collect();
        for task in tasks {
            bounded(LIMIT, task).await.unwrap();
        }
        // Grants whose callers went away are released in the background: soon, all of them.
        for key in &keys {
            wait_stats(&client, key, |s| s.usage(key) == (0, 0)).await;
        }
    }
    assert_eq!(client.open_connections(), 1);
}
