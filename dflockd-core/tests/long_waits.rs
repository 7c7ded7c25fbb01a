//! Waits longer than the lease: a grant that comes after any wait is usable.
//!
//! A queue's waiters routinely wait far longer than their own lease (jobs of minutes, leases of
//! 30 s renewed in the background). Each test here has a holder keep a key for some multiple of
//! the waiter's lease, then checks that the waiter gets a guard that is held, stays held past
//! its lease (renewals work from the confirmation on), and releases cleanly. Against real
//! servers too (`DFLOCKD_TEST_SERVERS`): nothing here depends on a server release.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, builder, wait_stats};
use dflockd_core::{Client, Guard};
use dflockd_testkit::{ChaosProxy, TestServer, TestServers, unique_key};

const LEASE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Lock,
    /// A semaphore of limit 2, both slots taken.
    Semaphore,
    /// Two-phase: enqueue, then wait.
    TwoPhase,
}

async fn acquire(
    client: &Client,
    kind: Kind,
    key: &str,
    lease: Duration,
) -> dflockd_core::Result<Guard> {
    let wait = Duration::from_secs(30);
    match kind {
        Kind::Lock => {
            client
                .lock(key)
                .lease_ttl(lease)
                .acquire_timeout(wait)
                .acquire()
                .await
        }
        Kind::Semaphore => {
            client
                .semaphore(key, 2)
                .lease_ttl(lease)
                .acquire_timeout(wait)
                .acquire()
                .await
        }
        Kind::TwoPhase => {
            client
                .lock(key)
                .lease_ttl(lease)
                .enqueue()
                .await?
                .wait(wait)
                .await
        }
    }
}

/// Holders of `key` fill it, a waiter queues, the holders keep it for `hold`, then release:
/// the waiter must get a held guard that outlives its own lease. Returns how long it waited.
async fn wait_behind(client: Client, kind: Kind, lease: Duration, hold: Duration) -> Duration {
    let key = unique_key("long-wait");
    let holders = match kind {
        Kind::Semaphore => 2,
        Kind::Lock | Kind::TwoPhase => 1,
    };
    let mut held = Vec::new();
    for _ in 0..holders {
        held.push(acquire(&client, kind, &key, lease).await.expect("holder"));
    }
    let waiter = {
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let guard = acquire(&client, kind, &key, lease).await;
            (guard, started.elapsed())
        })
    };
    wait_stats(&client, &key, |s| s.usage(&key).1 == 1).await;
    tokio::time::sleep(hold).await;
    for guard in held {
        assert!(guard.is_held(), "{kind:?}: the holder kept its lease");
        guard.release().await.expect("holder's release");
    }
    let (guard, waited) = bounded(Duration::from_secs(20), waiter).await.unwrap();
    let guard = guard.unwrap_or_else(|e| panic!("{kind:?} lease {lease:?} hold {hold:?}: {e}"));
    assert!(guard.is_held(), "{kind:?} hold {hold:?}");
    // Held past its own lease: the renewals run from the confirmation on.
    tokio::select! {
        () = tokio::time::sleep(lease + lease / 2) => {}
        reason = guard.lost() => panic!("{kind:?} hold {hold:?}: lost after the grant: {reason}"),
    }
    guard.release().await.expect("the waiter's release");
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_of_one_two_and_five_leases_are_granted() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    let mut runs = Vec::new();
    for kind in [Kind::Lock, Kind::Semaphore, Kind::TwoPhase] {
        for times in [1, 2, 5] {
            let hold = LEASE * times;
            runs.push((
                kind,
                hold,
                tokio::spawn(wait_behind(client.clone(), kind, LEASE, hold)),
            ));
        }
    }
    for (kind, hold, run) in runs {
        let waited = run.await.unwrap();
        assert!(
            waited >= hold,
            "{kind:?}: waited {waited:?}, less than {hold:?}"
        );
    }
}

/// The table: one holder, one waiter with the same lease; every row is `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_the_lock_whatever_the_holder_keeps_it_for() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    let rows = [
        (2, 1000),
        (2, 1700),
        (2, 1900),
        (2, 2500),
        (2, 5000),
        (10, 12_000),
    ];
    let runs: Vec<_> = rows
        .iter()
        .map(|&(lease_s, hold_ms)| {
            let lease = Duration::from_secs(lease_s);
            let hold = Duration::from_millis(hold_ms);
            tokio::spawn(wait_behind(client.clone(), Kind::Lock, lease, hold))
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
}

/// Eight workers queue one after the other on one key; each job outlasts its lease (renewed in
/// the background). All of them get the key, in the order they queued, and every section is
/// protected from its grant to its release.
async fn fifo_queue_of_jobs_longer_than_their_lease(workers: &Client, observer: &Client) {
    let key = unique_key("job-queue");
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = workers.lock(&key).lease_ttl(LEASE).acquire().await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..8u64 {
        let (client, task_key, order) = (workers.clone(), key.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let guard = client
                .lock(&task_key)
                .lease_ttl(LEASE)
                .acquire_timeout(Duration::from_secs(60))
                .acquire()
                .await
                .unwrap_or_else(|e| panic!("worker {n}: {e}"));
            order.lock().unwrap().push(n);
            tokio::select! {
                () = tokio::time::sleep(LEASE + LEASE / 4) => {}
                reason = guard.lost() => panic!("worker {n} lost its lease: {reason}"),
            }
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("worker {n}'s release: {e}"));
        }));
        // The next worker queues only once this one is in the queue.
        let queued = n + 1;
        wait_stats(observer, &key, |s| s.usage(&key).1 == queued).await;
    }
    tokio::time::sleep(LEASE + LEASE / 2).await;
    assert!(first.is_held());
    first.release().await.unwrap();
    for task in tasks {
        bounded(Duration::from_secs(40), task).await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_eight_long_jobs_finishes_in_fifo_order() {
    let servers = TestServers::default_config(1).await.unwrap();
    let client = builder(&servers.addrs()).build().unwrap();
    fifo_queue_of_jobs_longer_than_their_lease(&client, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_eight_long_jobs_finishes_in_fifo_order_under_50_ms_latency() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    proxy.set_latency(Duration::from_millis(50), Duration::ZERO);
    let slow = builder(&[proxy.addr_string()]).build().unwrap();
    let observer = builder(&[server.addr_string()]).build().unwrap();
    fifo_queue_of_jobs_longer_than_their_lease(&slow, &observer).await;
    // And a single long wait through the same latency.
    wait_behind(slow, Kind::TwoPhase, LEASE, LEASE * 3).await;
}

/// The same waits with the blocking client, on plain threads.
#[cfg(feature = "blocking")]
#[test]
fn blocking_waits_of_one_two_and_five_leases_are_granted() {
    use dflockd_core::blocking;
    use std::thread;

    let servers = TestServers::default_config_blocking(1).unwrap();
    let client = blocking::Client::builder()
        .servers(servers.addrs())
        .request_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    fn acquire(
        client: &blocking::Client,
        kind: Kind,
        key: &str,
    ) -> dflockd_core::Result<blocking::Guard> {
        let wait = Duration::from_secs(30);
        match kind {
            Kind::Lock => client
                .lock(key)
                .lease_ttl(LEASE)
                .acquire_timeout(wait)
                .acquire(),
            Kind::Semaphore => client
                .semaphore(key, 2)
                .lease_ttl(LEASE)
                .acquire_timeout(wait)
                .acquire(),
            Kind::TwoPhase => client
                .lock(key)
                .lease_ttl(LEASE)
                .enqueue()
                .and_then(|e| e.wait(wait)),
        }
    }
    let mut runs = Vec::new();
    for kind in [Kind::Lock, Kind::Semaphore, Kind::TwoPhase] {
        for times in [1, 2, 5] {
            let client = client.clone();
            runs.push(thread::spawn(move || {
                let key = unique_key("blocking-long-wait");
                let holders = if matches!(kind, Kind::Semaphore) {
                    2
                } else {
                    1
                };
                let held: Vec<_> = (0..holders)
                    .map(|_| acquire(&client, kind, &key).expect("holder"))
                    .collect();
                let waiter = {
                    let (client, key) = (client.clone(), key.clone());
                    thread::spawn(move || acquire(&client, kind, &key))
                };
                let until = Instant::now() + Duration::from_secs(10);
                while client.stats_for_key(&key).unwrap().usage(&key).1 != 1 {
                    assert!(Instant::now() < until, "{kind:?}: the waiter never queued");
                    thread::sleep(Duration::from_millis(10));
                }
                thread::sleep(LEASE * times);
                for guard in held {
                    guard.release().expect("holder's release");
                }
                let guard = waiter
                    .join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{kind:?} x{times}: {e}"));
                assert!(guard.is_held());
                assert_eq!(
                    guard.wait_lost(LEASE + LEASE / 2),
                    None,
                    "{kind:?} x{times}"
                );
                guard.release().expect("the waiter's release");
            }));
        }
    }
    for run in runs {
        run.join().unwrap();
    }
}
