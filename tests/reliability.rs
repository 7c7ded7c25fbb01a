//! Reliability scenarios in their CI-sized forms: loss notice after a blackhole, loss notice
//! on a reset, no false alarms under latency, a dead server, cancellation at random await
//! points. The long forms run with `cargo run --release --example chaos -- ...` (see the
//! example's `--help`).

mod reliability_support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use dflockd::{Client, Error, Guard, LossReason};
use dflockd_testkit::checker::History;
use dflockd_testkit::{ChaosProxy, TestServer, TestServers, unique_key};

fn client(addr: &str) -> Client {
    Client::builder()
        .servers([addr])
        // Fences when the servers under test issue them.
        .server_version(dflockd_testkit::version_under_test().into())
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// 20 trials in parallel of a blackhole right after a successful renew: the holder must be
/// told every time before the server can let the lease expire, and before the next holder
/// gets the lock. The 200-trial form: `--loss-trials 200` of the chaos example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_is_noticed_before_server_expiry_after_a_blackhole() {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        reliability_support::loss_notice_trials(20, 20, Duration::from_secs(2)),
    )
    .await
    .expect("trials end in time");
    println!("{out:?}");
    assert_eq!(out.trials, 20);
    assert_eq!(out.noticed_before_expiry, 20, "{out:?}");
    assert_eq!(out.noticed_before_handover, 20, "{out:?}");
}

/// A reset connection is reported lost within 100 ms (20 trials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_is_noticed_within_100_ms() {
    let servers = TestServers::default_config(1).await.unwrap();
    let proxy = ChaosProxy::start(servers.addrs()[0].parse().unwrap()).unwrap();
    let client = client(&proxy.addr_string());
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let guards = vec![
            client.lock(unique_key("reset")).acquire().await.unwrap(),
            client
                .semaphore(unique_key("reset"), 2)
                .acquire()
                .await
                .unwrap(),
        ];
        let watches: Vec<_> = guards.iter().map(|g| g.watch()).collect();
        let started = Instant::now();
        proxy.reset();
        for watch in watches {
            let reason = tokio::time::timeout(Duration::from_secs(2), watch.lost())
                .await
                .expect("loss reported");
            assert_eq!(reason, LossReason::ConnectionLost);
        }
        worst = worst.max(started.elapsed());
        for guard in guards {
            assert!(guard.release().await.unwrap_err().is_lease_lost());
        }
    }
    println!("worst reset notice: {worst:?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
}

/// 50 ± 10 ms latency each way with 3 s leases: no loss notice at all. 15 s here; the
/// two-minute form is `--false-alarm-minutes 2` of the chaos example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_raises_no_false_alarm() {
    let (losses, grants) = reliability_support::false_alarms(
        Duration::from_secs(15),
        Duration::from_millis(50),
        Duration::from_millis(10),
    )
    .await;
    println!("grants={grants} spurious_loss_notices={losses}");
    assert!(grants >= 16, "{grants}");
    assert_eq!(losses, 0);
}

/// 100 locks held, then the server goes dark (blackholed, then paused): every release and
/// every close returns within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_does_not_hold_up_release_or_close() {
    let server = TestServer::start().await.unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    for dark in ["blackhole", "pause"] {
        let client = Client::builder()
            .servers([proxy.addr_string()])
            .build()
            .unwrap();
        let mut guards = Vec::new();
        for i in 0..100 {
            let key = unique_key("dead");
            let guard = if i % 4 == 0 {
                client.semaphore(key, 2).acquire().await.unwrap()
            } else {
                client.lock(key).acquire().await.unwrap()
            };
            guards.push(guard);
        }
        match dark {
            "blackhole" => proxy.set_blackhole(true),
            _ => server.pause(),
        }
        let started = Instant::now();
        let dropped: Vec<Guard> = guards.drain(..10).collect();
        drop(dropped);
        let releases: Vec<_> = guards
            .into_iter()
            .map(|g| {
                tokio::spawn(async move {
                    let started = Instant::now();
                    let result = g.release().await;
                    (started.elapsed(), result)
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for r in releases {
            let (took, result) = r.await.unwrap();
            slowest = slowest.max(took);
            assert!(
                matches!(result, Err(Error::RequestTimeout { .. })),
                "{result:?}"
            );
        }
        let close = Instant::now();
        drop(client);
        let close = close.elapsed();
        println!(
            "{dark}: slowest release {slowest:?}, close {close:?}, all {:?}",
            started.elapsed()
        );
        // The release timeout (1.5 s by default) plus at most one maintenance tick (a quarter
        // of it): within the 2 s the issue asks for.
        assert!(slowest < Duration::from_secs(2), "{slowest:?}");
        assert!(close < Duration::from_millis(100), "{close:?}");
        proxy.heal();
        server.resume();
    }
}

/// A critical section whose loss notice is recorded by a watcher task.
struct Watched {
    section: dflockd_testkit::Section,
    watcher: tokio::task::JoinHandle<()>,
}

impl Watched {
    fn new(history: &History, guard: &Guard, limit: u64) -> Self {
        let section = history.begin(guard.key(), limit, *guard.token(), guard.fence());
        let watch = guard.watch();
        let on_loss = section.clone();
        let watcher = tokio::spawn(async move {
            if watch.lost().await == LossReason::ConnectionLost {
                on_loss.lost_by_disconnect();
            } else {
                on_loss.lost();
            }
        });
        Watched { section, watcher }
    }

    fn write(&self, value: u64) {
        self.section.write(value);
    }

    fn lost(&self) {
        self.section.lost();
    }

    fn end(self) {
        self.section.end();
        self.watcher.abort();
    }
}

/// Polls `fut` at most `polls` times, letting the runtime run between polls, then drops it.
async fn poll_then_drop<F: Future>(fut: F, polls: usize, pause: Duration) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let step = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = step {
            return Some(out);
        }
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
    None
}

/// Drops a future at a random await point: after a random number of polls, or after a random
/// few milliseconds; one in four runs to completion.
async fn cancel_randomly<F: Future>(fut: F) -> Option<F::Output> {
    match fastrand::u8(0..4) {
        0 => Some(fut.await),
        1 => {
            let pause = Duration::from_micros(fastrand::u64(0..300));
            poll_then_drop(fut, fastrand::usize(1..40), pause).await
        }
        _ => {
            let limit = Duration::from_micros(fastrand::u64(0..8000));
            tokio::time::timeout(limit, fut).await.ok()
        }
    }
}

/// 10,000 acquires, two-phase waits, releases and renewals dropped at random await points
/// (through a proxy that slices writes, so there are more of them): no answer ever reaches
/// the wrong request, the checkers see no overlap or reused token, and afterwards the server
/// shows no holder or waiter for the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_at_random_await_points_never_desynchronises() {
    let server = TestServer::start().await.unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    proxy.set_slicing(Some((8, Duration::ZERO)));
    let client = client(&proxy.addr_string());
    let keys: Arc<Vec<String>> = Arc::new((0..6).map(|_| unique_key("cancel")).collect());
    let history = History::new();
    let ops = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let protocol_errors = Arc::new(AtomicU64::new(0));
    const OPS: u64 = 10_000;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, keys, history) = (client.clone(), keys.clone(), history.clone());
        let (ops, cancelled, protocol_errors) =
            (ops.clone(), cancelled.clone(), protocol_errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut held: Option<(Guard, Watched)> = None;
            while ops.fetch_add(1, Ordering::Relaxed) < OPS {
                let key = &keys[fastrand::usize(..keys.len())];
                let semaphore = key == &keys[0];
                let lock = client
                    .lock(key)
                    .acquire_timeout(Duration::from_millis(fastrand::u64(0..400)))
                    .lease_ttl(Duration::from_secs(5));
                let outcome: Option<Result<Option<Guard>, Error>> =
                    match (fastrand::u8(0..6), held.take()) {
                        (0, Some((guard, section))) => {
                            section.end();
                            let r = cancel_randomly(guard.release()).await;
                            Some(r.map_or(Ok(None), |r| r.map(|()| None)))
                        }
                        (1, Some((guard, section))) => {
                            let r = cancel_randomly(guard.renew()).await;
                            if let Some(Ok(lease)) = &r {
                                assert_eq!(*lease, Duration::from_secs(5));
                            }
                            if guard.is_held() {
                                held = Some((guard, section));
                            } else {
                                section.lost();
                                section.end();
                            }
                            r.map(|r| r.map(|_| None))
                        }
                        (op, current) => {
                            if let Some((guard, section)) = current {
                                section.end();
                                drop(guard);
                            }
                            if semaphore {
                                let sem =
                                    client.semaphore(key, 2).lease_ttl(Duration::from_secs(5));
                                cancel_randomly(sem.try_acquire()).await
                            } else {
                                match op % 3 {
                                    0 => cancel_randomly(lock.acquire()).await.map(|r| r.map(Some)),
                                    1 => cancel_randomly(lock.try_acquire()).await,
                                    _ => cancel_randomly(async {
                                        lock.enqueue().await?.wait(Duration::from_millis(500)).await
                                    })
                                    .await
                                    .map(|r| r.map(Some)),
                                }
                            }
                        }
                    };
                match outcome {
                    None => {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Some(guard))) => {
                        let limit = if semaphore { 2 } else { 1 };
                        let section = Watched::new(&history, &guard, limit);
                        assert!(guard.is_held());
                        section.write(1);
                        held = Some((guard, section));
                    }
                    Some(Ok(None)) => {}
                    Some(Err(e)) => {
                        if matches!(e, Error::Protocol { .. }) {
                            protocol_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        assert!(
                            e.is_timeout() || e.is_lease_lost() || e.is_retryable(),
                            "unexpected error {e:?}"
                        );
                    }
                }
            }
            if let Some((guard, section)) = held {
                section.end();
                guard.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("cancellation tasks end in time")
            .unwrap();
    }
    let report = history.check();
    println!(
        "ops={OPS} cancelled={} protocol_errors={} {report}",
        cancelled.load(Ordering::Relaxed),
        protocol_errors.load(Ordering::Relaxed)
    );
    assert_eq!(protocol_errors.load(Ordering::Relaxed), 0);
    assert!(report.violations.is_empty(), "{report}");
    assert!(cancelled.load(Ordering::Relaxed) > 3000);
    assert!(report.grants > 500, "{report}");
    // No holder or waiter left behind for the test keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.stats().await.unwrap().remove(0);
        let left: Vec<_> = keys
            .iter()
            .map(|k| (k, stats.usage(k)))
            .filter(|(_, usage)| *usage != (0, 0))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for key in keys.iter().skip(1) {
        assert!(client.lock(key).try_acquire().await.unwrap().is_some());
    }
}

/// A grant whose answer is held up in the network until its lease has run out at the server
/// (which has handed the lock on meanwhile) must never reach the caller as a held guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_arrives_after_its_lease_ran_out_is_not_handed_out() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    let direct = client(&server.addr_string());
    let late = client(&proxy.addr_string());
    let key = unique_key("late-grant");
    let history = History::new();
    let holder = direct.lock(&key).acquire().await.unwrap();
    let waiter = {
        let (late, key) = (late.clone(), key.clone());
        tokio::spawn(async move {
            late.lock(&key)
                .lease_ttl(Duration::from_secs(1))
                .acquire_timeout(Duration::from_secs(20))
                .acquire()
                .await
        })
    };
    // The waiter is queued; then its network goes dark and the lock is handed to it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while direct.stats_for_key(&key).await.unwrap().usage(&key).1 != 1 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set_blackhole(true);
    holder.release().await.unwrap();
    // Its 1 s lease runs out at the server; a third client takes the lock.
    let next = direct
        .lock(&key)
        .acquire_timeout(Duration::from_secs(10))
        .acquire()
        .await
        .unwrap();
    let next_section = history.begin(&key, 1, *next.token(), next.fence());
    // Now the stale grant is delivered.
    proxy.heal();
    match tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter returns")
        .unwrap()
    {
        Ok(guard) => {
            let section = history.begin(&key, 1, *guard.token(), guard.fence());
            if !guard.is_held() {
                section.lost();
            }
            section.end();
            println!("stale grant handed out, held={}", guard.is_held());
        }
        Err(e) => println!("stale grant refused: {e}"),
    }
    next_section.end();
    next.release().await.unwrap();
    let report = history.check();
    assert!(report.violations.is_empty(), "{report}");
}

/// A release sent while the lease was vouched for ends a fully protected section, even when it
/// reaches the server after the lease ran out there (held up in the network): `Ok`, not a
/// lease-lost error (which would say the section was not protected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_held_up_in_the_network_after_a_protected_section_is_ok() {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    let client = Client::builder()
        .servers([proxy.addr_string()])
        .request_timeout(Duration::from_secs(6))
        .release_timeout(Duration::from_secs(6))
        .build()
        .unwrap();
    let observer = client_for_stats(&server);
    for family in ["lock", "semaphore"] {
        let key = unique_key("late-release");
        let guard = if family == "lock" {
            client
                .lock(&key)
                .lease_ttl(Duration::from_secs(1))
                .acquire()
                .await
        } else {
            client
                .semaphore(&key, 2)
                .lease_ttl(Duration::from_secs(1))
                .acquire()
                .await
        }
        .unwrap();
        // Renewed a few times, then the section ends and the release leaves at once, while
        // the network holds everything up for longer than the lease.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(guard.is_held());
        proxy.set_latency(Duration::from_millis(1300), Duration::ZERO);
        let released = guard.release().await;
        // The server had let the lease go before the release arrived.
        assert_eq!(observer.stats_for_key(&key).await.unwrap().usage(&key).0, 0);
        assert!(released.is_ok(), "{family}: {released:?}");
        proxy.heal();
    }
}

fn client_for_stats(server: &TestServer) -> Client {
    client(&server.addr_string())
}
