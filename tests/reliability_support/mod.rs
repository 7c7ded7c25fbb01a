//! Fault-injection scenarios shared by the CI tests (`tests/chaos_smoke.rs`,
//! `tests/reliability.rs`) and the long-run command (`examples/chaos.rs`).
//!
//! Every scenario runs the real client against in-process test servers over real sockets,
//! with [`ChaosProxy`]s in between, and judges the outcome with the checkers of
//! `dflockd_testkit::checker`.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dflockd::{Client, Error, Guard, LossReason};
use dflockd_testkit::checker::{Attempt, History, Report, Section};
use dflockd_testkit::{ChaosProxy, TestServer, unique_key};

/// Settings of a chaos run.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// How long faults are injected.
    pub fault_phase: Duration,
    /// Client tasks.
    pub tasks: usize,
    /// Lock keys.
    pub lock_keys: usize,
    /// Semaphore keys.
    pub semaphore_keys: usize,
    /// Limit of each semaphore key.
    pub semaphore_limit: u32,
    /// Leases are drawn from this range, in whole seconds.
    pub lease_s: (u64, u64),
    /// A fault starts every so often (drawn from this range).
    pub fault_every: (Duration, Duration),
    /// After the faults heal, every key must be granted again within this.
    pub regrant_within: Duration,
    /// Inject faults; `false` runs the same workload on a healthy network and server, where
    /// every acquire must either get its key or time out behind busy holders.
    pub inject_faults: bool,
    /// Print each fault as it is injected.
    pub verbose: bool,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            fault_phase: Duration::from_secs(50),
            tasks: 32,
            lock_keys: 4,
            semaphore_keys: 2,
            semaphore_limit: 3,
            lease_s: (2, 3),
            fault_every: (Duration::from_secs(2), Duration::from_secs(5)),
            regrant_within: Duration::from_secs(10),
            inject_faults: true,
            verbose: false,
        }
    }
}

/// What a chaos run produced.
#[derive(Debug)]
pub struct ChaosOutcome {
    /// The checkers' verdict.
    pub report: Report,
    /// Faults injected.
    pub faults: u64,
    /// Faults by kind.
    pub fault_kinds: HashMap<&'static str, u64>,
    /// Per key, how long after the final heal it was first granted again (`None`: never
    /// within the limit).
    pub regrant_after: Vec<(String, Option<Duration>)>,
    /// Errors seen by the workers, by kind.
    pub errors: HashMap<String, u64>,
    /// Protocol violations reported by the client (a desynchronised connection would show
    /// up here).
    pub protocol_errors: u64,
}

impl ChaosOutcome {
    /// The closing line (see [`Report::summary`]).
    pub fn summary(&self) -> String {
        self.report.summary()
    }
}

#[derive(Clone)]
struct KeySpec {
    key: String,
    limit: u32,
}

/// Everything the workers share.
struct Work {
    history: History,
    keys: Vec<KeySpec>,
    lease_s: (u64, u64),
    stop: AtomicBool,
    errors: Mutex<HashMap<String, u64>>,
    protocol_errors: AtomicU64,
}

impl Work {
    fn count_error(&self, e: &Error) {
        if matches!(e, Error::Protocol { .. }) {
            self.protocol_errors.fetch_add(1, Ordering::Relaxed);
        }
        let kind = format!("{e:?}");
        let kind = kind.split([' ', '{', '(']).next().unwrap_or("?").to_owned();
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }
}

fn client_for(addr: &str) -> Client {
    Client::builder()
        .servers([addr])
        // Fences when the servers under test issue them.
        .server_version(dflockd_testkit::version_under_test().into())
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// Holds a grant for a random while, writing to the fenced register while it believes it
/// holds it, then releases (or drops) it.
async fn critical_section(work: &Work, attempt: Attempt, guard: Guard) {
    let section = attempt.granted(*guard.token(), guard.fence());
    let watcher = {
        let section = section.clone();
        let watch = guard.watch();
        tokio::spawn(async move {
            let reason = watch.lost().await;
            record_loss(&section, Some(reason));
        })
    };
    let steps = fastrand::u32(1..=5);
    for step in 0..steps {
        if !guard.is_held() {
            break;
        }
        section.write(u64::from(step));
        let pause = Duration::from_millis(fastrand::u64(5..=300));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = guard.lost() => break,
        }
    }
    finish(work, section, guard).await;
    watcher.abort();
}

/// Records a loss notice; a closed connection is told apart (see
/// `dflockd_testkit::checker::DISCONNECT_TOLERANCE`).
fn record_loss(section: &Section, reason: Option<LossReason>) {
    if reason == Some(LossReason::ConnectionLost) {
        section.lost_by_disconnect();
    } else {
        section.lost();
    }
}

async fn finish(work: &Work, section: Section, guard: Guard) {
    if !guard.is_held() {
        // The watcher may not have run yet: the loss is known now at the latest.
        record_loss(&section, guard.loss_reason());
    }
    section.end();
    if fastrand::u8(0..10) == 0 {
        drop(guard);
        return;
    }
    match guard.release().await {
        Ok(()) => {}
        Err(Error::LeaseLost {
            reason: LossReason::Expired,
            ..
        }) => section.release_refused(),
        Err(e) => work.count_error(&e),
    }
}

async fn worker(work: Arc<Work>, client: Client) {
    while !work.stop.load(Ordering::Acquire) {
        let spec = work.keys[fastrand::usize(..work.keys.len())].clone();
        let lease = Duration::from_secs(fastrand::u64(work.lease_s.0..=work.lease_s.1));
        let wait = Duration::from_millis(fastrand::u64(500..=4000));
        let mode = fastrand::u8(0..10);
        let attempt = work.history.attempt(&spec.key, u64::from(spec.limit));
        let result: Result<Option<Guard>, Error> = if spec.limit == 1 {
            let lock = client
                .lock(&spec.key)
                .lease_ttl(lease)
                .acquire_timeout(wait);
            match mode {
                0..=5 => lock.acquire().await.map(Some),
                6..=7 => lock.try_acquire().await,
                _ => match lock.enqueue().await {
                    Ok(enqueued) => enqueued.wait(wait).await.map(Some),
                    Err(e) => Err(e),
                },
            }
        } else {
            let sem = client
                .semaphore(&spec.key, spec.limit)
                .lease_ttl(lease)
                .acquire_timeout(wait);
            match mode {
                0..=5 => sem.acquire().await.map(Some),
                6..=7 => sem.try_acquire().await,
                _ => match sem.enqueue().await {
                    Ok(enqueued) => enqueued.wait(wait).await.map(Some),
                    Err(e) => Err(e),
                },
            }
        };
        match result {
            Ok(Some(guard)) => critical_section(&work, attempt, guard).await,
            Ok(None) => {
                attempt.busy();
                tokio::time::sleep(Duration::from_millis(fastrand::u64(5..50))).await;
            }
            Err(e) => {
                if e.is_timeout() {
                    attempt.timed_out();
                } else {
                    work.count_error(&e);
                    if e.is_lease_lost() {
                        // Granted, then not handed out (its confirmation failed, or a
                        // two-phase grant expired before the wait).
                        attempt.grant_discarded(&e);
                    } else {
                        attempt.failed(&e);
                    }
                }
                tokio::time::sleep(Duration::from_millis(fastrand::u64(10..100))).await;
            }
        }
    }
}

/// The network and server faults of a chaos run. Exactly one is in force at a time, and
/// each is healed before the next starts: a server restart while a client is partitioned
/// would hand out locks that client cannot know it lost (the restarted server has no
/// memory), which no client can prevent.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Blackhole,
    Reset,
    Latency,
    Slicing,
    Bandwidth,
    SlowClose,
    Pause,
    KillRestart,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::Blackhole,
        Fault::Reset,
        Fault::Latency,
        Fault::Slicing,
        Fault::Bandwidth,
        Fault::SlowClose,
        Fault::Pause,
        Fault::KillRestart,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::Blackhole => "blackhole",
            Fault::Reset => "reset",
            Fault::Latency => "latency",
            Fault::Slicing => "slicing",
            Fault::Bandwidth => "bandwidth",
            Fault::SlowClose => "slow_close",
            Fault::Pause => "pause",
            Fault::KillRestart => "kill_restart",
        }
    }
}

/// Injects one fault, lets it last, heals it; the history records when it was in force.
async fn inject(
    fault: Fault,
    history: &History,
    server: &TestServer,
    proxies: &[ChaosProxy],
    max: Duration,
) {
    let record = history.fault(fault.name());
    inject_one(fault, server, proxies, max).await;
    record.healed();
}

async fn inject_one(fault: Fault, server: &TestServer, proxies: &[ChaosProxy], max: Duration) {
    let proxy = &proxies[fastrand::usize(..proxies.len())];
    let lasting = Duration::from_millis(fastrand::u64(300..=max.as_millis().max(301) as u64));
    match fault {
        Fault::Blackhole => {
            proxy.set_blackhole(true);
            tokio::time::sleep(lasting).await;
            proxy.heal();
        }
        Fault::Reset => proxy.reset(),
        Fault::Latency => {
            let base = Duration::from_millis(fastrand::u64(10..=250));
            proxy.set_latency(base, base / 4);
            tokio::time::sleep(lasting).await;
            proxy.heal();
        }
        Fault::Slicing => {
            let pause = Duration::from_millis(fastrand::u64(0..=2));
            proxy.set_slicing(Some((fastrand::usize(1..=4), pause)));
            tokio::time::sleep(lasting).await;
            proxy.heal();
        }
        Fault::Bandwidth => {
            proxy.set_bandwidth(Some(fastrand::u64(300..=3000)));
            tokio::time::sleep(lasting).await;
            proxy.heal();
        }
        Fault::SlowClose => {
            proxy.set_slow_close(Duration::from_millis(fastrand::u64(200..=1500)));
            // Cut the connections so that closes happen under the fault.
            proxy.reset();
            tokio::time::sleep(lasting).await;
            proxy.heal();
        }
        Fault::Pause => {
            server.pause();
            tokio::time::sleep(lasting).await;
            server.resume();
        }
        Fault::KillRestart => {
            server.kill();
            tokio::time::sleep(lasting.min(Duration::from_millis(1500))).await;
            server.restart().await.expect("restart on the same port");
        }
    }
}

/// The chaos scenario: `tasks` workers on lock and semaphore keys, spread over four clients
/// (two behind one proxy, one behind another, one direct), while faults come and go.
pub async fn chaos_run(cfg: ChaosConfig) -> ChaosOutcome {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .expect("server");
    let proxies = vec![
        ChaosProxy::start(server.addr()).expect("proxy"),
        ChaosProxy::start(server.addr()).expect("proxy"),
    ];
    let clients = vec![
        client_for(&proxies[0].addr_string()),
        client_for(&proxies[0].addr_string()),
        client_for(&proxies[1].addr_string()),
        client_for(&server.addr_string()),
    ];
    let mut keys = Vec::new();
    for _ in 0..cfg.lock_keys {
        keys.push(KeySpec {
            key: unique_key("chaos-lock"),
            limit: 1,
        });
    }
    for _ in 0..cfg.semaphore_keys {
        keys.push(KeySpec {
            key: unique_key("chaos-sem"),
            limit: cfg.semaphore_limit,
        });
    }
    let work = Arc::new(Work {
        history: History::new(),
        keys: keys.clone(),
        lease_s: cfg.lease_s,
        stop: AtomicBool::new(false),
        errors: Mutex::default(),
        protocol_errors: AtomicU64::new(0),
    });
    let mut workers = Vec::new();
    for i in 0..cfg.tasks {
        workers.push(tokio::spawn(worker(
            work.clone(),
            clients[i % clients.len()].clone(),
        )));
    }

    let mut faults = 0u64;
    let mut fault_kinds: HashMap<&'static str, u64> = HashMap::new();
    let started = Instant::now();
    loop {
        let (lo, hi) = cfg.fault_every;
        let gap =
            Duration::from_millis(fastrand::u64(lo.as_millis() as u64..=hi.as_millis() as u64));
        tokio::time::sleep(gap / 2).await;
        if started.elapsed() + gap >= cfg.fault_phase {
            break;
        }
        if !cfg.inject_faults {
            continue;
        }
        let fault = Fault::ALL[fastrand::usize(..Fault::ALL.len())];
        if cfg.verbose {
            println!(
                "[{:7.1}s] fault {}",
                started.elapsed().as_secs_f64(),
                fault.name()
            );
        }
        inject(fault, &work.history, &server, &proxies, gap / 2).await;
        faults += 1;
        *fault_kinds.entry(fault.name()).or_default() += 1;
    }
    for proxy in &proxies {
        proxy.heal();
    }
    server.resume();
    let healed = Instant::now();
    let history = work.history.clone();
    // Every key is granted again soon after the faults heal.
    let regrant = |key: &str| {
        history
            .sections()
            .iter()
            .filter(|s| s.key == key && s.start >= healed)
            .map(|s| s.start - healed)
            .min()
    };
    let deadline = healed + cfg.regrant_within;
    while Instant::now() < deadline && keys.iter().any(|k| regrant(&k.key).is_none()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let regrant_after = keys
        .iter()
        .map(|k| {
            (
                k.key.clone(),
                regrant(&k.key).filter(|d| *d <= cfg.regrant_within),
            )
        })
        .collect();
    work.stop.store(true, Ordering::Release);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("workers stop in time")
            .expect("worker panicked");
    }
    let report = work.history.check();
    drop(clients);
    ChaosOutcome {
        report,
        faults,
        fault_kinds,
        regrant_after,
        errors: std::mem::take(&mut *work.errors.lock().unwrap()),
        protocol_errors: work.protocol_errors.load(Ordering::Relaxed),
    }
}

/// The result of [`loss_notice_trials`].
#[derive(Debug, Default)]
pub struct LossNotice {
    /// Trials run.
    pub trials: usize,
    /// Trials where the holder was told before the server could have let the lease expire
    /// (before the renew's start plus the lease).
    pub noticed_before_expiry: usize,
    /// Trials where the holder was told before the next holder got the lock.
    pub noticed_before_handover: usize,
    /// Smallest lead of the notice over the earliest possible server-side expiry.
    pub min_lead: Option<Duration>,
    /// Largest lead.
    pub max_lead: Option<Duration>,
}

/// One trial: hold a lock through a proxy, renew it explicitly, blackhole the proxy at once,
/// and see whether the holder is told before the server lets the lease expire (a second
/// client, direct, waits for the lock and marks the hand-over).
async fn loss_notice_trial(server: Arc<TestServer>, lease: Duration) -> (bool, bool, Duration) {
    let proxy = ChaosProxy::start(server.addr()).expect("proxy");
    let holder = client_for(&proxy.addr_string());
    let other = client_for(&server.addr_string());
    let key = unique_key("loss-notice");
    let guard = holder
        .lock(&key)
        .lease_ttl(lease)
        .acquire()
        .await
        .expect("acquire");
    // Let a background renewal or two happen first.
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..800))).await;
    let renew_started = Instant::now();
    guard.renew().await.expect("renew");
    proxy.set_blackhole(true);
    let watch = guard.watch();
    let lost = tokio::spawn(async move {
        watch.lost().await;
        Instant::now()
    });
    let next = other
        .lock(&key)
        .acquire_timeout(Duration::from_secs(15))
        .acquire()
        .await
        .expect("the next holder gets the lock");
    let handed_over = Instant::now();
    let lost_at = tokio::time::timeout(Duration::from_secs(15), lost)
        .await
        .expect("loss noticed")
        .expect("watcher");
    let earliest_expiry = renew_started + lease;
    let before_expiry = lost_at < earliest_expiry;
    let before_handover = lost_at < handed_over;
    let lead = earliest_expiry.saturating_duration_since(lost_at);
    next.release().await.expect("release");
    drop(guard);
    proxy.reset();
    (before_expiry, before_handover, lead)
}

/// `trials` loss-notice trials, `parallel` at a time, each with its own proxy and key.
pub async fn loss_notice_trials(trials: usize, parallel: usize, lease: Duration) -> LossNotice {
    let server = Arc::new(
        TestServer::builder()
            .lease_sweep_interval(Duration::from_millis(20))
            .start()
            .await
            .expect("server"),
    );
    let mut out = LossNotice::default();
    let mut done = 0;
    while done < trials {
        let batch = parallel.min(trials - done);
        let runs: Vec<_> = (0..batch)
            .map(|_| tokio::spawn(loss_notice_trial(server.clone(), lease)))
            .collect();
        for run in runs {
            let (before_expiry, before_handover, lead) = run.await.expect("trial");
            out.trials += 1;
            out.noticed_before_expiry += usize::from(before_expiry);
            out.noticed_before_handover += usize::from(before_handover);
            out.min_lead = Some(out.min_lead.map_or(lead, |m| m.min(lead)));
            out.max_lead = Some(out.max_lead.map_or(lead, |m| m.max(lead)));
        }
        done += batch;
    }
    out
}

/// Holds locks through a proxy adding `latency ± jitter` each way for `duration`, with 3 s
/// leases, some held throughout and some taken and released over and over; returns the
/// number of loss notices (all of them spurious: nothing else is wrong with the network).
pub async fn false_alarms(duration: Duration, latency: Duration, jitter: Duration) -> (u64, u64) {
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .expect("server");
    let proxy = ChaosProxy::start(server.addr()).expect("proxy");
    proxy.set_latency(latency, jitter);
    let client = client_for(&proxy.addr_string());
    let lease = Duration::from_secs(3);
    let losses = Arc::new(AtomicU64::new(0));
    let grants = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (client, losses, grants) = (client.clone(), losses.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let key = unique_key("steady");
            let semaphore = i % 4 == 3;
            while Instant::now() < until {
                let guard = if semaphore {
                    client.semaphore(&key, 2).lease_ttl(lease).acquire().await
                } else {
                    client.lock(&key).lease_ttl(lease).acquire().await
                }
                .expect("acquire under latency");
                grants.fetch_add(1, Ordering::Relaxed);
                // Half the tasks hold for the whole run, the others churn.
                let hold = if i % 2 == 0 {
                    until.saturating_duration_since(Instant::now())
                } else {
                    Duration::from_millis(fastrand::u64(100..2000))
                };
                tokio::select! {
                    () = tokio::time::sleep(hold) => {}
                    _ = guard.lost() => {}
                }
                if !guard.is_held() {
                    losses.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if guard.release().await.is_err() {
                    losses.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (
        losses.load(Ordering::Relaxed),
        grants.load(Ordering::Relaxed),
    )
}
