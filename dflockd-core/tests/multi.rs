//! Several keys at once: one global order (no deadlock whatever order callers name them in),
//! all or nothing, one guard, a loss on any key cancels the section.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, bounded, builder, proxy::Proxy};
use dflockd_core::{Error, LossReason};
use dflockd_testkit::{TestServer, TestServers, unique_key};

/// Counts holders per key; panics when a key has two.
#[derive(Clone, Default)]
struct Exclusive(Arc<Mutex<HashMap<String, u32>>>);

impl Exclusive {
    fn enter(&self, key: &str) {
        let mut held = self.0.lock().unwrap();
        let n = held.entry(key.to_owned()).or_default();
        *n += 1;
        assert_eq!(*n, 1, "{key} held twice");
    }

    fn leave(&self, key: &str) {
        *self.0.lock().unwrap().get_mut(key).unwrap() -= 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_orders_from_fifty_tasks_each_never_deadlock() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    let (a, b) = (unique_key("acct-a"), unique_key("acct-b"));
    let probe = Exclusive::default();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let keys = if i % 2 == 0 {
            [a.clone(), b.clone()]
        } else {
            [b.clone(), a.clone()]
        };
        let (client, probe) = (client.clone(), probe.clone());
        tasks.push(tokio::spawn(async move {
            client
                .multi_lock(keys.clone())
                .acquire_timeout(Duration::from_secs(60))
                .run(|held| async move {
                    assert_eq!(held.len(), 2);
                    for k in &keys {
                        probe.enter(k);
                    }
                    tokio::task::yield_now().await;
                    for k in &keys {
                        probe.leave(k);
                    }
                })
                .await
        }));
    }
    bounded(Duration::from_secs(90), async {
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn all_or_nothing_within_the_timeout() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    let (a, b) = (unique_key("m-a"), unique_key("m-b"));
    let held_b = client.lock(&b).acquire().await.unwrap();
    let err = client
        .multi_lock([a.clone(), b.clone()])
        .semaphore(unique_key("m-sem"), 2)
        .acquire_timeout(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { key } if *key == b),
        "{err:?}"
    );
    // `a` was taken first and given back.
    common::wait_stats(&client, &a, |s| s.usage(&a) == (0, 0)).await;
    assert!(client.lock(&a).try_acquire().await.unwrap().is_some());
    held_b.release().await.unwrap();
    // A key named twice is taken once; the order is the global one.
    let multi = client.multi_lock([b.clone(), a.clone(), b.clone()]);
    let mut sorted = vec![a.as_str(), b.as_str()];
    sorted.sort_unstable();
    assert_eq!(multi.keys(), sorted);
    let guard = multi.acquire().await.unwrap();
    assert!(guard.is_held());
    assert_eq!(guard.guards().len(), 2);
    guard.release().await.unwrap();
}

#[tokio::test]
async fn a_lost_lease_on_one_key_cancels_the_section() {
    // Two servers: each key on its own, one of them behind a proxy that is cut.
    let direct = TestServer::start().await.unwrap();
    let far = TestServer::start().await.unwrap();
    let proxy = Arc::new(Proxy::start(far.addr()).await);
    let servers = [direct.addr_string(), proxy.addr.to_string()];
    let client = builder(&servers).build().unwrap();
    // A key that lands on each server.
    let find = |server: usize| loop {
        let key = unique_key("multi-loss");
        if client.server_for(&key).unwrap() == server {
            return key;
        }
    };
    let (near_key, far_key) = (find(0), find(1));
    let cut = proxy.clone();
    let result = bounded(
        LIMIT,
        client
            .multi_lock([near_key.clone(), far_key.clone()])
            .run(|_| async move {
                cut.reset();
                std::future::pending::<()>().await;
            }),
    )
    .await;
    match result {
        Err(Error::LeaseLost { key, reason, .. }) => {
            assert_eq!(key, far_key);
            assert_eq!(reason, LossReason::ConnectionLost);
        }
        other => panic!("{other:?}"),
    }
    // The other key was released.
    common::wait_stats(&client, &near_key, |s| s.usage(&near_key) == (0, 0)).await;
}
