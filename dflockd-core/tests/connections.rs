//! Connections: pooling, resets, stalled callers, pipelined answers.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, behind_proxy, bounded, builder, stalled, wait_stats};
use dflockd_core::{Client, LossReason};
use dflockd_testkit::{TestServer, TestServers, unique_key};

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

/// The server's id of the connection that holds `key` (from its stats).
async fn owner(client: &Client, key: &str) -> u64 {
    let stats = wait_stats(client, key, |s| s.lock(key).is_some()).await;
    stats.lock(key).unwrap().owner_conn_id
}

/// Acquires `key` and releases it; returns the connection the server saw it acquired on.
async fn acquired_on(client: &Client, key: &str) -> u64 {
    let guard = client.lock(key).acquire().await.unwrap();
    let conn = owner(client, key).await;
    guard.release().await.unwrap();
    conn
}

/// A task that goes on with its next request right after an answer keeps using the connection
/// that answered (as a connection of its own would be used) rather than the pool's first free
/// one: whichever of three pooled connections answered last carries the next acquire.
#[tokio::test]
async fn the_next_request_goes_on_the_connection_that_just_answered() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    let prefix = unique_key("affinity");
    for last in 0..3 {
        // Three acquires at once: three connections, one lock on each.
        let keys: Vec<String> = (0..3).map(|i| format!("{prefix}-{last}-{i}")).collect();
        let locks: Vec<_> = keys.iter().map(|k| client.lock(k)).collect();
        let (a, b, c) = tokio::join!(locks[0].acquire(), locks[1].acquire(), locks[2].acquire());
        let mut guards = [Some(a.unwrap()), Some(b.unwrap()), Some(c.unwrap())];
        let mut owners = Vec::new();
        for key in &keys {
            owners.push(owner(&client, key).await);
        }
        assert!(
            owners[0] != owners[1] && owners[1] != owners[2] && owners[0] != owners[2],
            "round {last}: three locks on three connections: {owners:?}"
        );
        assert_eq!(client.open_connections(), 3, "round {last}");
        // Released in an order that ends with lock `last`: its connection answered last.
        for i in (0..3).filter(|&i| i != last).chain([last]) {
            guards[i].take().unwrap().release().await.unwrap();
        }
        assert_eq!(
            acquired_on(&client, &format!("{prefix}-{last}-next")).await,
            owners[last],
            "round {last}: the acquire after the last release goes on that release's connection"
        );
    }
}

/// The connection a thread just used is preferred only for a moment (half a second from its
/// last request): a thread whose requests are further apart takes the first free connection,
/// so that light load after a burst gathers on the first and the others retire.
#[tokio::test]
async fn after_a_pause_the_next_request_goes_on_the_first_free_connection() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    let prefix = unique_key("gather");
    // The pool's first connection, holding a lock (and free: nothing in flight on it).
    let first_key = format!("{prefix}-first");
    let held = client.lock(&first_key).acquire().await.unwrap();
    let first = owner(&client, &first_key).await;
    // Two at once: the first connection and a second one.
    let (k1, k2) = (format!("{prefix}-1"), format!("{prefix}-2"));
    let (l1, l2) = (client.lock(&k1), client.lock(&k2));
    let (g1, g2) = tokio::join!(l1.acquire(), l2.acquire());
    let (g1, g2) = (g1.unwrap(), g2.unwrap());
    let (o1, o2) = (owner(&client, &k1).await, owner(&client, &k2).await);
    assert_ne!(o1, o2, "two acquires at once, two connections");
    // Released so that the one not on the first connection answers last.
    let (other, last, last_conn) = if o2 == first {
        (g2, g1, o1)
    } else {
        (g1, g2, o2)
    };
    assert_ne!(last_conn, first);
    other.release().await.unwrap();
    last.release().await.unwrap();
    // Right after: the connection that just answered.
    assert_eq!(
        acquired_on(&client, &format!("{prefix}-3")).await,
        last_conn,
        "right after an answer: that connection"
    );
    // After a pause: the first free connection again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        acquired_on(&client, &format!("{prefix}-4")).await,
        first,
        "after a pause: the first connection"
    );
    held.release().await.unwrap();
}
