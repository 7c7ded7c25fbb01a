//! The metrics (feature `metrics`): one scripted scenario over real sockets against the test
//! server, with `metrics-util`'s debugging recorder installed for the whole process, so that
//! what the connections' background tasks record on other threads is seen too. One test in
//! this binary: the recorder is global, and every value asserted is exact.

use std::collections::HashMap;
use std::time::Duration;

use dflockd_core::metrics::*;
use dflockd_core::{Client, Error, LossReason};
use dflockd_testkit::{ChaosProxy, TestServer};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Every metric's value since the recorder was installed. The debugging recorder's snapshots
/// hand out what changed since the previous one (counters and gauges are reset, histogram
/// samples drained): added up here. The client only moves gauges up and down, so the sum of
/// the changes is the gauge.
struct Recorded {
    snapshotter: Snapshotter,
    values: HashMap<(String, Vec<(String, String)>), Value>,
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

impl Recorded {
    fn install() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        Recorded {
            snapshotter,
            values: HashMap::new(),
        }
    }

    fn refresh(&mut self) {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let entry = (key.name().to_owned(), labels);
            match (self.values.get_mut(&entry), value) {
                (Some(Value::Counter(n)), DebugValue::Counter(more)) => *n += more,
                (Some(Value::Gauge(g)), DebugValue::Gauge(delta)) => *g += delta.into_inner(),
                (Some(Value::Histogram(h)), DebugValue::Histogram(more)) => {
                    h.extend(more.into_iter().map(|f| f.into_inner()));
                }
                (None, DebugValue::Counter(n)) => {
                    self.values.insert(entry, Value::Counter(n));
                }
                (None, DebugValue::Gauge(g)) => {
                    self.values.insert(entry, Value::Gauge(g.into_inner()));
                }
                (None, DebugValue::Histogram(h)) => {
                    let samples = h.into_iter().map(|f| f.into_inner()).collect();
                    self.values.insert(entry, Value::Histogram(samples));
                }
                (Some(old), new) => panic!("{entry:?} was {old:?}, now {new:?}"),
            }
        }
    }

    fn get(&mut self, name: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        self.refresh();
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.values.get(&(name.to_owned(), labels))
    }

    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(name, labels) {
            None => 0,
            Some(Value::Counter(n)) => *n,
            Some(other) => panic!("{name} {labels:?} is {other:?}"),
        }
    }

    fn gauge(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(name, labels) {
            None => 0.0,
            Some(Value::Gauge(g)) => *g,
            Some(other) => panic!("{name} {labels:?} is {other:?}"),
        }
    }

    fn samples(&mut self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(name, labels) {
            None => Vec::new(),
            Some(Value::Histogram(h)) => h.clone(),
            Some(other) => panic!("{name} {labels:?} is {other:?}"),
        }
    }

    /// Waits (at most 10 s) until `check` holds: for what background tasks record.
    async fn until(&mut self, what: &str, mut check: impl FnMut(&mut Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.values
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

const LOCK: (&str, &str) = ("kind", "lock");
const SEM: (&str, &str) = ("kind", "semaphore");
const TENANT: (&str, &str) = ("key", "tenant");

/// The key label of the scenario: the prefix of keys under `tenant:`, none for the others.
fn key_label(key: &str) -> Option<String> {
    key.strip_prefix("tenant:").map(|_| "tenant".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_counts_what_happened() {
    tokio::time::timeout(Duration::from_secs(60), scenario())
        .await
        .expect("the scenario took too long");
}

async fn scenario() {
    let mut m = Recorded::install();
    describe();
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    let at = proxy.addr_string();
    let server_label = ("server", at.as_str());
    let client = Client::builder()
        .servers([at.clone()])
        .lease_ttl(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(2))
        .metrics_key_label(key_label)
        .build()
        .unwrap();

    // A grant: acquired, held, its connection in use with nothing in flight.
    let guard = client.lock("a").acquire().await.unwrap();
    let granted = [LOCK, ("outcome", "granted")];
    assert_eq!(m.counter(ACQUIRES_TOTAL, &granted), 1);
    assert_eq!(m.samples(ACQUIRE_DURATION_SECONDS, &granted).len(), 1);
    assert_eq!(m.gauge(HELD, &[LOCK]), 1.0);
    assert_eq!(m.gauge(CONNECTIONS_OPEN, &[server_label]), 1.0);
    assert_eq!(m.gauge(CONNECTIONS_IN_USE, &[server_label]), 1.0);
    // Renewals go on in the background (a 1 s lease renews about every 330 ms).
    m.until("renewals", |m| {
        m.counter(RENEWALS_TOTAL, &[("outcome", "ok")]) >= 2
    })
    .await;

    // Busy on a try-once, then a timeout after a wait in the queue.
    assert!(client.lock("a").try_acquire().await.unwrap().is_none());
    assert_eq!(m.counter(ACQUIRES_TOTAL, &[LOCK, ("outcome", "busy")]), 1);
    let err = client
        .lock("a")
        .acquire_timeout(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let timeout = [LOCK, ("outcome", "timeout")];
    assert_eq!(m.counter(ACQUIRES_TOTAL, &timeout), 1);
    let waited = m.samples(ACQUIRE_DURATION_SECONDS, &timeout);
    assert!(waited.len() == 1 && waited[0] >= 0.9, "{waited:?}");
    assert_eq!(m.gauge(HELD, &[LOCK]), 1.0);

    // A grant after a wait in the queue: the holder releases 300 ms into the wait.
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.lock("a").acquire().await })
    };
    m.until("the waiter's request in flight", |m| {
        m.gauge(REQUESTS_IN_FLIGHT, &[server_label]) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    guard.release().await.unwrap();
    assert_eq!(m.counter(RELEASES_TOTAL, &[LOCK, ("outcome", "ok")]), 1);
    let guard = waiter.await.unwrap().unwrap();
    assert_eq!(m.counter(ACQUIRES_TOTAL, &granted), 2);
    let queued = m.samples(QUEUED_DURATION_SECONDS, &[LOCK]);
    assert!(queued.len() == 1 && queued[0] >= 0.25, "{queued:?}");
    assert_eq!(m.gauge(HELD, &[LOCK]), 1.0);

    // Semaphore slots, with the key label: two held, one dropped (released in the
    // background), one lost with its connection.
    let sem = client.semaphore("tenant:pool", 2);
    let first = sem.acquire().await.unwrap();
    let second = sem.acquire().await.unwrap();
    let sem_granted = [SEM, TENANT, ("outcome", "granted")];
    assert_eq!(m.counter(ACQUIRES_TOTAL, &sem_granted), 2);
    assert_eq!(m.gauge(HELD, &[SEM, TENANT]), 2.0);
    drop(first);
    assert_eq!(m.gauge(HELD, &[SEM, TENANT]), 1.0);
    m.until("the background release", |m| {
        m.counter(RELEASES_TOTAL, &[SEM, TENANT, ("outcome", "ok")]) == 1
    })
    .await;

    // Every connection reset: the held lock and slot are lost once, and counted so.
    let open_before = m.gauge(CONNECTIONS_OPEN, &[server_label]);
    assert!(open_before >= 1.0);
    proxy.reset();
    assert_eq!(guard.lost().await, LossReason::ConnectionLost);
    assert_eq!(second.lost().await, LossReason::ConnectionLost);
    assert_eq!(m.gauge(HELD, &[LOCK]), 0.0);
    assert_eq!(m.gauge(HELD, &[SEM, TENANT]), 0.0);
    let lost = ("reason", "connection_lost");
    assert_eq!(m.counter(LEASE_LOSSES_TOTAL, &[LOCK, lost]), 1);
    assert_eq!(m.counter(LEASE_LOSSES_TOTAL, &[SEM, TENANT, lost]), 1);
    // Its release reports the loss (and the gauge does not move again).
    assert!(second.release().await.unwrap_err().is_lease_lost());
    drop(guard);
    let sem_lost = [SEM, TENANT, ("outcome", "lease_lost")];
    assert_eq!(m.counter(RELEASES_TOTAL, &sem_lost), 1);
    assert_eq!(m.gauge(HELD, &[SEM, TENANT]), 0.0);
    assert_eq!(m.gauge(HELD, &[LOCK]), 0.0);
    m.until("the reset connections closed", |m| {
        m.gauge(CONNECTIONS_OPEN, &[server_label]) == 0.0
    })
    .await;

    // No renew within the lease (the proxy swallows everything): lost to the deadline.
    let guard = client.lock("b").acquire().await.unwrap();
    proxy.set_blackhole(true);
    assert_eq!(guard.lost().await, LossReason::DeadlineExceeded);
    let deadline = ("reason", "deadline_exceeded");
    assert_eq!(m.counter(LEASE_LOSSES_TOTAL, &[LOCK, deadline]), 1);
    assert_eq!(m.gauge(HELD, &[LOCK]), 0.0);
    drop(guard);
    // The unanswered renewal kills its connection within the request timeout.
    m.until("the unanswered renewal", |m| {
        m.counter(RENEWALS_TOTAL, &[("outcome", "error")]) >= 1
    })
    .await;
    proxy.heal();
    proxy.reset();

    // A server error status: the key table of a second server is full.
    let small = TestServer::builder().max_locks(1).start().await.unwrap();
    let small_at = small.addr_string();
    let other = Client::builder()
        .servers([small_at.clone()])
        .build()
        .unwrap();
    let kept = other.lock("x").acquire().await.unwrap();
    let err = other.lock("y").acquire().await.unwrap_err();
    assert!(matches!(err, Error::MaxLocks { .. }), "{err:?}");
    let status = [("server", small_at.as_str()), ("status", "error_max_locks")];
    assert_eq!(m.counter(SERVER_ERRORS_TOTAL, &status), 1);
    assert_eq!(m.counter(ACQUIRES_TOTAL, &[LOCK, ("outcome", "error")]), 1);
    kept.release().await.unwrap();
    assert_eq!(m.counter(RELEASES_TOTAL, &[LOCK, ("outcome", "ok")]), 2);

    // At the end: nothing held, nothing in flight, and once the clients are gone, no
    // connection open or in use.
    drop((client, other));
    for server in [at.as_str(), small_at.as_str()] {
        let server = [("server", server)];
        m.until("every connection closed", |m| {
            m.gauge(CONNECTIONS_OPEN, &server) == 0.0
        })
        .await;
        assert_eq!(m.gauge(CONNECTIONS_IN_USE, &server), 0.0, "{server:?}");
        assert_eq!(m.gauge(REQUESTS_IN_FLIGHT, &server), 0.0, "{server:?}");
    }
    assert_eq!(m.gauge(HELD, &[LOCK]), 0.0);
    assert_eq!(m.gauge(HELD, &[SEM, TENANT]), 0.0);
    // Nothing labelled with a key the label function left out, and no other label values.
    for (name, labels) in m.values.keys() {
        for (label, value) in labels {
            let allowed: &[&str] = match label.as_str() {
                "kind" => &["lock", "semaphore"],
                "key" => &["tenant"],
                "outcome" => &["granted", "busy", "timeout", "error", "ok", "lease_lost"],
                "reason" => &["connection_lost", "deadline_exceeded"],
                "server" => &[at.as_str(), small_at.as_str()],
                "status" => &["error_max_locks"],
                other => panic!("{name}: unexpected label {other}"),
            };
            assert!(allowed.contains(&value.as_str()), "{name}: {label}={value}");
        }
    }
}
