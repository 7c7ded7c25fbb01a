//! End-to-end tests of the blocking client, with threads in place of tasks.
#![cfg(feature = "blocking")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dflockd_core::blocking::{Client, Enqueued};
use dflockd_core::{Error, LossReason};
use dflockd_testkit::{TestServer, TestServers, unique_key};

fn client(addrs: &[String]) -> Client {
    Client::builder()
        .servers(addrs.iter().cloned())
        .server_version(common::server_version())
        .request_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

fn default_client() -> (TestServers, Client) {
    let servers = TestServers::default_config_blocking(1).unwrap();
    let client = client(&servers.addrs());
    (servers, client)
}

/// Polls until `check` holds on the usage (holders, waiters) of `key`, at most 10 s.
fn wait_usage(client: &Client, key: &str, check: impl Fn((u64, u64)) -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = client.stats_for_key(key).unwrap().usage(key);
        if check(usage) {
            return;
        }
        assert!(Instant::now() < until, "usage of {key} stuck at {usage:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn acquire_try_release_and_timeout() {
    let (_servers, client) = default_client();
    let key = unique_key("blocking");
    let guard = client
        .lock(&key)
        .lease_ttl(Duration::from_secs(5))
        .acquire()
        .unwrap();
    assert_eq!(guard.key(), key);
    assert_eq!(guard.lease(), Duration::from_secs(5));
    assert!(guard.is_held());
    assert_eq!(guard.renew().unwrap(), Duration::from_secs(5));
    assert!(client.lock(&key).try_acquire().unwrap().is_none());
    let err = client
        .lock(&key)
        .acquire_timeout(Duration::from_secs(1))
        .acquire()
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let fence = guard.fence();
    guard.release().unwrap();
    let again = client.lock(&key).try_acquire().unwrap().unwrap();
    if common::server_version().issues_fences() {
        assert!(again.fence().expect("a fence") > fence.expect("a fence"));
    } else {
        assert_eq!((fence, again.fence()), (None, None));
    }
    drop(again);
    wait_usage(&client, &key, |u| u == (0, 0));
}

#[test]
fn fifo_with_threads() {
    let (_servers, client) = default_client();
    let key = unique_key("blocking-fifo");
    let holder = client.lock(&key).acquire().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..9u64 {
        threads.push({
            let (client, key, order) = (client.clone(), key.clone(), order.clone());
            thread::spawn(move || {
                let guard = client
                    .lock(&key)
                    .acquire_timeout(Duration::from_secs(20))
                    .acquire()
                    .unwrap();
                order.lock().unwrap().push(i);
                guard.release().unwrap();
            })
        });
        wait_usage(&client, &key, |u| u.1 == i + 1);
    }
    holder.release().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..9).collect::<Vec<_>>());
}

#[test]
fn semaphore_with_threads() {
    let (_servers, client) = default_client();
    let key = unique_key("blocking-pool");
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..9)
        .map(|_| {
            let (client, key) = (client.clone(), key.clone());
            let (inside, peak) = (inside.clone(), peak.clone());
            thread::spawn(move || {
                let guard = client
                    .semaphore(&key, 3)
                    .acquire_timeout(Duration::from_secs(20))
                    .acquire()
                    .unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(150));
                inside.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[test]
fn two_phase_with_threads() {
    let (_servers, client) = default_client();
    let key = unique_key("blocking-2p");
    let first = client.lock(&key).enqueue().unwrap();
    assert_eq!(first.status(), "acquired");
    let first = first.wait(Duration::from_secs(1)).unwrap();
    let second = client.lock(&key).enqueue().unwrap();
    let Enqueued::Queued(queued) = second else {
        panic!("expected queued")
    };
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        first.release().unwrap();
    });
    let second = queued.wait(Duration::from_secs(10)).unwrap();
    assert!(second.is_held());
    releaser.join().unwrap();
}

#[test]
fn loss_is_seen_from_a_thread() {
    let server = TestServer::builder().start_blocking().unwrap();
    let client = client(&[server.addr().to_string()]);
    let guard = client
        .lock("blocking-loss")
        .lease_ttl(Duration::from_secs(2))
        .acquire()
        .unwrap();
    assert_eq!(guard.wait_lost(Duration::from_millis(100)), None);
    server.kill();
    assert_eq!(
        guard.wait_lost(Duration::from_secs(10)),
        Some(LossReason::ConnectionLost)
    );
    assert!(!guard.is_held());
    assert!(guard.release().unwrap_err().is_lease_lost());
}

#[test]
fn auth_and_errors_are_typed() {
    let server = TestServer::builder()
        .auth_token("s3cret")
        .start_blocking()
        .unwrap();
    let addrs = [server.addr().to_string()];
    let ok = Client::builder()
        .servers(addrs.clone())
        .auth_token("s3cret")
        .build()
        .unwrap();
    ok.lock("k").acquire().unwrap().release().unwrap();
    let wrong = Client::builder()
        .servers(addrs)
        .auth_token("nope")
        .build()
        .unwrap();
    let err = wrong.lock("k").acquire().unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
    let err = ok.lock("bad key").acquire().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[test]
fn tls_sharding_and_stats() {
    let ca = dflockd_testkit::tls::TestCa::new();
    let servers: Vec<TestServer> = (0..3)
        .map(|_| {
            TestServer::builder()
                .tls(ca.issue_server(&["localhost"]).unwrap())
                .start_blocking()
                .unwrap()
        })
        .collect();
    let addrs: Vec<String> = servers
        .iter()
        .map(|s| format!("localhost:{}", s.addr().port()))
        .collect();
    let client = Client::builder()
        .servers(addrs.clone())
        .tls(dflockd_core::TlsOptions::ca_pem(ca.cert_pem()).unwrap())
        .build()
        .unwrap();
    let guard = client.lock("user:42:profile").acquire().unwrap();
    assert_eq!(guard.server(), addrs[0]);
    let stats = client.stats().unwrap();
    assert_eq!(stats.len(), 3);
    assert!(stats[0].lock("user:42:profile").is_some());
    assert!(stats[1].lock("user:42:profile").is_none());
    guard.release().unwrap();
}

#[test]
fn works_when_called_inside_an_async_runtime() {
    let (_servers, client) = default_client();
    let key = unique_key("inside-runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let guard = client.lock(&key).acquire().unwrap();
        assert!(guard.is_held());
        guard.release().unwrap();
        // Dropping the last clone inside the runtime must not panic either.
        let other = client.clone();
        drop(other);
    });
    drop(rt);
    drop(client);
}

#[test]
fn connect_check_and_status_on_threads() {
    let (servers, client) = default_client();
    assert!(client.check().is_healthy());
    let guard = client
        .lock(unique_key("blocking-status"))
        .acquire()
        .unwrap();
    let status = &client.status()[0];
    assert!(status.holding >= 1, "{status:?}");
    guard.release().unwrap();

    let connected = Client::builder()
        .servers(servers.addrs())
        .connect()
        .unwrap();
    assert!(connected.as_async().open_connections() >= 1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = Client::builder().servers([down]).connect().unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
}
