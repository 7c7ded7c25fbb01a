//! Benchmarks: what the client costs compared with the raw protocol, and what holding many
//! locks costs.
//!
//! ```text
//! cargo run --release -p dflockd --example bench            # full run (about 2 minutes)
//! cargo run --release -p dflockd --example bench -- --quick # a few seconds per figure
//! cargo run --release -p dflockd --example bench --features metrics -- --quick # metrics on
//! ```
//!
//! The server runs in a child process (the `dflockd-testkit` binary, built on demand) so that
//! the figures for CPU and memory are the client's alone; with `DFLOCKD_SERVERS` set, that
//! server is used instead (it needs `--max-locks` of at least 20000 for the many-locks part).
//!
//! Output: `figure NAME VALUE UNIT` and, for comparisons measured in this run,
//! `ratio NAME VALUE`.

use std::io::{BufRead, BufReader as StdBufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dflockd::Client;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

const KEYS_PER_WORKER: usize = 32;

struct Settings {
    run_for: Duration,
    hold_for: Duration,
    many: usize,
    /// Run only the parts whose names are listed (`single`, `parallel` or one of
    /// `parallel16`, `parallel64`, `parallel256`, `parallel64narrow`, `parallel64pipe`, `noise`,
    /// `hot`, `tls`, `layer`, `many`; `bound` runs only when named).
    only: Vec<String>,
}

impl Settings {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.named(part)
    }

    /// Whether `--only` names `part`: for the parts a full run leaves out.
    fn named(&self, part: &str) -> bool {
        self.only.iter().any(|p| p == part)
    }
}

/// Latencies of one measured loop, in microseconds.
#[derive(Default)]
struct Sample {
    ops: u64,
    elapsed: Duration,
    latencies: Vec<u32>,
    /// CPU time of this process (the client side) while the sample ran.
    cpu: Duration,
}

impl Sample {
    /// Counts one operation that started at `started`.
    fn record(&mut self, started: Instant) {
        self.latencies.push(started.elapsed().as_micros() as u32);
        self.ops += 1;
    }

    fn merge(samples: Vec<Sample>, elapsed: Duration) -> Sample {
        let mut all = Sample {
            elapsed,
            ..Sample::default()
        };
        for s in samples {
            all.ops += s.ops;
            all.cpu += s.cpu;
            all.latencies.extend(s.latencies);
        }
        all.latencies.sort_unstable();
        all
    }

    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[i])
    }

    fn print(&self, name: &str) {
        println!("figure {name}_ops {:.0} ops/s", self.ops_per_s());
        println!("figure {name}_p50 {:.0} us", self.pct(0.50));
        println!("figure {name}_p99 {:.0} us", self.pct(0.99));
        println!("figure {name}_p999 {:.0} us", self.pct(0.999));
        // On a loaded 2-core machine the tail is mostly threads waiting out a scheduler tick
        // (4 ms at HZ=250): how many operations it caught says more than one percentile.
        let slow = self.latencies.iter().filter(|&&us| us > 2000).count();
        println!(
            "figure {name}_over_2ms {:.2} %",
            100.0 * slow as f64 / self.latencies.len().max(1) as f64
        );
        if !self.cpu.is_zero() {
            println!(
                "figure {name}_client_cpu_per_op {:.1} us",
                self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
            );
        }
    }
}

/// Throughput of `a` over `b` (above 1: `a` is faster).
fn ratio(name: &str, a: &Sample, b: &Sample) {
    println!("ratio {name} {:.3}", a.ops_per_s() / b.ops_per_s());
}

/// The 99th percentile of `a` over `b`'s (below 1: `a`'s tail is shorter).
fn p99_ratio(name: &str, a: &Sample, b: &Sample) {
    println!("ratio {name} {:.3}", a.pct(0.99) / b.pct(0.99).max(1.0));
}

/// Rounds in which the two sides of a comparison alternate, so that load from elsewhere on a
/// shared machine falls on both alike.
const ROUNDS: u32 = 6;

/// Runs `a` and `b` alternately for `ROUNDS` rounds of `run / ROUNDS` each and sums them.
async fn alternate_fn(
    run: Duration,
    mut a: impl AsyncFnMut(Duration) -> Sample,
    mut b: impl AsyncFnMut(Duration) -> Sample,
) -> (Sample, Sample, Option<Spread>) {
    let slice = run / ROUNDS;
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    // For profiling one side alone: DFLOCKD_BENCH_SIDE=raw or =client.
    let side = std::env::var("DFLOCKD_BENCH_SIDE").unwrap_or_default();
    for _ in 0..ROUNDS {
        if side != "client" {
            let cpu = cpu_time();
            let mut s = a(slice).await;
            s.cpu = cpu_time().saturating_sub(cpu);
            ta += s.elapsed;
            sa.push(s);
        }
        if side != "raw" {
            let cpu = cpu_time();
            let mut s = b(slice).await;
            s.cpu = cpu_time().saturating_sub(cpu);
            tb += s.elapsed;
            sb.push(s);
        }
    }
    let spread = Spread::of(&mut sa, &mut sb);
    ta = ta.max(Duration::from_nanos(1));
    tb = tb.max(Duration::from_nanos(1));
    (Sample::merge(sa, ta), Sample::merge(sb, tb), spread)
}

/// The lowest and highest of a comparison's per-round ratios (`b` over `a`, round by round).
/// A run's ratio is that of its merged rounds; how far single rounds fall from it shows how
/// much of one run's ratio is noise.
struct Spread {
    throughput: (f64, f64),
    p99: (f64, f64),
}

impl Spread {
    fn of(a: &mut [Sample], b: &mut [Sample]) -> Option<Spread> {
        if a.is_empty() || a.len() != b.len() {
            return None;
        }
        for s in a.iter_mut().chain(b.iter_mut()) {
            s.latencies.sort_unstable();
        }
        let range = |ratio: fn(&Sample, &Sample) -> f64| {
            a.iter()
                .zip(b.iter())
                .map(|(a, b)| ratio(a, b))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                })
        };
        Some(Spread {
            throughput: range(|a, b| b.ops_per_s() / a.ops_per_s()),
            p99: range(|a, b| b.pct(0.99) / a.pct(0.99).max(1.0)),
        })
    }

    fn print(&self, throughput_name: &str, p99_name: &str) {
        for (name, (lo, hi)) in [(throughput_name, self.throughput), (p99_name, self.p99)] {
            println!("figure {name}_rounds_min {lo:.3} ratio");
            println!("figure {name}_rounds_max {hi:.3} ratio");
        }
    }
}

/// Measures the raw loop against the client, alternating, and prints both and their ratio.
async fn compare(
    name: &str,
    raw: &str,
    run: Duration,
    a: impl AsyncFnMut(Duration) -> Sample,
    b: impl AsyncFnMut(Duration) -> Sample,
) {
    compare_with(name, raw, "raw", run, a, b).await;
}

/// [`compare`], naming the ratios `{name}_vs_{against}` and `{name}_p99_vs_{against}`.
async fn compare_with(
    name: &str,
    raw: &str,
    against: &str,
    run: Duration,
    a: impl AsyncFnMut(Duration) -> Sample,
    b: impl AsyncFnMut(Duration) -> Sample,
) {
    let (raw_sample, client_sample, spread) = alternate_fn(run, a, b).await;
    raw_sample.print(raw);
    client_sample.print(name);
    let (throughput, p99) = (
        format!("{name}_vs_{against}"),
        format!("{name}_p99_vs_{against}"),
    );
    ratio(&throughput, &client_sample, &raw_sample);
    p99_ratio(&p99, &client_sample, &raw_sample);
    if let Some(spread) = spread {
        spread.print(&throughput, &p99);
    }
}

// ---- raw protocol ---------------------------------------------------------------------------

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection speaking the protocol by hand: no client library.
struct Raw {
    io: BufReader<Box<dyn Stream>>,
    line: String,
    out: Vec<u8>,
    /// Rounds of [`busy_work`] before each request (0 in every part but `bound`).
    work: u32,
}

impl Raw {
    async fn connect(addr: &str, tls: Option<&Tls>) -> Raw {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let io: Box<dyn Stream> = match tls {
            Some(tls) => Box::new(
                tls.connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .expect("tls"),
            ),
            None => Box::new(tcp),
        };
        Raw {
            io: BufReader::new(io),
            line: String::new(),
            out: Vec::with_capacity(128),
            work: 0,
        }
    }

    async fn ask(&mut self, cmd: &str, key: &str, arg: &str) -> &str {
        busy_work(self.work);
        self.out.clear();
        for part in [cmd, key, arg] {
            self.out.extend_from_slice(part.as_bytes());
            self.out.push(b'\n');
        }
        self.io.get_mut().write_all(&self.out).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
        self.line.clear();
        self.io.read_line(&mut self.line).await.unwrap();
        self.line.trim_end()
    }

    /// Acquire + release of `key`.
    async fn cycle(&mut self, key: &str) {
        let token = grant_token(self.ask("l", key, "10").await);
        let answer = self.ask("r", key, &token).await;
        assert_eq!(answer, "ok");
    }
}

/// The token of a grant (`ok TOKEN LEASE ...`).
fn grant_token(answer: &str) -> String {
    answer
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("bad grant {answer:?}"))
        .to_owned()
}

/// `rounds` of work the optimizer cannot remove, about 4 instructions each: what a client
/// doing more per request than the raw loop costs, in the `bound` part.
fn busy_work(rounds: u32) {
    let mut acc = 0u32;
    for i in 0..rounds {
        acc = std::hint::black_box(acc.wrapping_add(i));
    }
    std::hint::black_box(acc);
}

async fn raw_loop(
    addr: &str,
    tls: Option<&Tls>,
    workers: usize,
    hot: bool,
    run_for: Duration,
) -> Sample {
    raw_loop_working(addr, tls, workers, hot, 0, run_for).await
}

/// [`raw_loop`] with `work` rounds of [`busy_work`] before each request.
async fn raw_loop_working(
    addr: &str,
    tls: Option<&Tls>,
    workers: usize,
    hot: bool,
    work: u32,
    run_for: Duration,
) -> Sample {
    let prefix = key_prefix(if tls.is_some() { "rawtls" } else { "raw" }, workers, hot);
    // Connected before the clock starts, as the client's pool is warm before it is timed:
    // connecting (a TLS handshake above all) would otherwise count against the raw loop.
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut raw = Raw::connect(addr, tls).await;
        raw.work = work;
        conns.push(raw);
    }
    // Handed out one per worker (the closure is called once for each).
    let conns = std::sync::Mutex::new(conns);
    run_workers(workers, run_for, |w, stop| {
        let prefix = prefix.clone();
        let raw = conns.lock().unwrap().pop();
        async move {
            let mut raw = raw.expect("one connection per worker");
            let keys = worker_keys(&prefix, w, hot);
            let mut sample = Sample::default();
            for key in keys.iter().cycle() {
                let t = Instant::now();
                if t >= stop {
                    break;
                }
                raw.cycle(key).await;
                sample.record(t);
            }
            sample
        }
    })
    .await
}

/// A connection shared by several tasks, by hand: each request is written under a lock and
/// its answer is the next line the reader task reads (the server answers a connection's
/// requests in order). What pipelining costs by itself, without the client library.
struct RawShared {
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    waiting: Arc<std::sync::Mutex<std::collections::VecDeque<oneshot::Sender<String>>>>,
}

impl RawShared {
    async fn connect(addr: &str) -> RawShared {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let (read, write) = tcp.into_split();
        let waiting: Arc<std::sync::Mutex<std::collections::VecDeque<oneshot::Sender<String>>>> =
            Arc::default();
        let answered = waiting.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let next = answered.lock().unwrap().pop_front();
                let _ = next.expect("an answer nobody asked for").send(line);
            }
        });
        RawShared {
            write: tokio::sync::Mutex::new(write),
            waiting,
        }
    }

    async fn ask(&self, cmd: &str, key: &str, arg: &str) -> String {
        let request = format!("{cmd}\n{key}\n{arg}\n");
        let (tx, rx) = oneshot::channel();
        {
            let mut write = self.write.lock().await;
            self.waiting.lock().unwrap().push_back(tx);
            write.write_all(request.as_bytes()).await.unwrap();
        }
        rx.await.expect("connection closed")
    }

    /// Acquire + release of `key`.
    async fn cycle(&self, key: &str) {
        let token = grant_token(&self.ask("l", key, "10").await);
        let answer = self.ask("r", key, &token).await;
        assert_eq!(answer, "ok");
    }
}

/// `workers` tasks sharing `conns` raw connections, requests pipelined.
async fn raw_pipelined_loop(addr: &str, conns: usize, workers: usize, run_for: Duration) -> Sample {
    let prefix = key_prefix(&format!("rawpipe{conns}"), workers, false);
    let mut shared = Vec::new();
    for _ in 0..conns {
        shared.push(Arc::new(RawShared::connect(addr).await));
    }
    run_workers(workers, run_for, |w, stop| {
        let (conn, prefix) = (shared[w % conns].clone(), prefix.clone());
        async move {
            let keys = worker_keys(&prefix, w, false);
            let mut sample = Sample::default();
            for key in keys.iter().cycle() {
                let t = Instant::now();
                if t >= stop {
                    break;
                }
                conn.cycle(key).await;
                sample.record(t);
            }
            sample
        }
    })
    .await
}

/// Spawns `workers` tasks made by `worker(index, stop)`, each timing its operations until
/// `stop`, and merges what they measured.
async fn run_workers<F, Fut>(workers: usize, run_for: Duration, worker: F) -> Sample
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = Sample> + Send + 'static,
{
    let started = Instant::now();
    let stop = started + run_for;
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(w, stop)))
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.push(t.await.unwrap());
    }
    Sample::merge(samples, started.elapsed())
}

/// The key prefix of one side of one comparison: the same in each of its rounds, so that a
/// run creates no more keys on the server than one round does (the server caps them).
fn key_prefix(side: &str, workers: usize, hot: bool) -> String {
    static RUN: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| fastrand::u32(..));
    format!("{side}{run}-{workers}{}", if hot { "hot" } else { "" })
}

fn worker_keys(prefix: &str, worker: usize, hot: bool) -> Vec<String> {
    if hot {
        vec![format!("{prefix}-hot")]
    } else {
        (0..KEYS_PER_WORKER)
            .map(|i| format!("{prefix}-{worker}-{i}"))
            .collect()
    }
}

/// What any client could reach at 16 and 64 tasks on this machine, measured with the raw
/// loop alone (`--only bound`; not part of a full run): how busy the machine is, what extra
/// work per request costs in throughput, and what pipelining some of the tasks (on fewer
/// connections than tasks) buys in throughput and costs the tail, without a client library.
async fn bound(addr: &str, run: Duration) {
    for (tasks, pipelined_on) in [(16, &[8, 12, 14][..]), (64, &[32, 48, 56, 60][..])] {
        let raw = format!("raw_{tasks}conn");
        let (ticks, started) = (machine_ticks(), Instant::now());
        let sample = raw_loop(addr, None, tasks, false, run).await;
        let (busy, total) = machine_ticks()
            .zip(ticks)
            .map(|(after, before)| (after.0 - before.0, after.1 - before.1))
            .unwrap_or((0, 1));
        println!(
            "figure {raw}_alone_ops {:.0} ops/s",
            sample.ops as f64 / started.elapsed().as_secs_f64()
        );
        println!(
            "figure {raw}_machine_busy {:.1} %",
            100.0 * busy as f64 / total.max(1) as f64
        );
        for work in [250, 500] {
            compare(
                &format!("{raw}_plus{work}rounds"),
                &raw,
                run,
                async |d| raw_loop(addr, None, tasks, false, d).await,
                async |d| raw_loop_working(addr, None, tasks, false, work, d).await,
            )
            .await;
        }
        for &conns in pipelined_on {
            compare(
                &format!("raw_{tasks}tasks_{conns}pipelined"),
                &raw,
                run,
                async |d| raw_loop(addr, None, tasks, false, d).await,
                async |d| raw_pipelined_loop(addr, conns, tasks, d).await,
            )
            .await;
        }
    }
}

/// Busy and total CPU ticks of the whole machine, all processes, from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

// ---- the client -----------------------------------------------------------------------------

async fn client_loop(client: &Client, workers: usize, hot: bool, run_for: Duration) -> Sample {
    let prefix = key_prefix("hl", workers, hot);
    run_workers(workers, run_for, |w, stop| {
        let (client, prefix) = (client.clone(), prefix.clone());
        async move {
            let locks: Vec<_> = worker_keys(&prefix, w, hot)
                .into_iter()
                .map(|k| client.lock(k).acquire_timeout(Duration::from_secs(10)))
                .collect();
            let mut sample = Sample::default();
            for lock in locks.iter().cycle() {
                let t = Instant::now();
                if t >= stop {
                    break;
                }
                let guard = lock.acquire().await.expect("acquire");
                guard.release().await.expect("release");
                sample.record(t);
            }
            sample
        }
    })
    .await
}

// ---- the tower layer -----------------------------------------------------------------------

mod layer {
    //! What the lock layer adds to a request: the same trivial service called by 16 tasks,
    //! without the layer and with a `LockLayer` keyed per task (so requests never wait for
    //! each other's keys). Called in process, without HTTP, so the difference is the layer's:
    //! its acquire and release round trips and its bookkeeping.

    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use dflockd::Client;
    use dflockd::tower::LockLayer;
    use http::{Request, Response};
    use tower::{Layer, Service, ServiceExt};

    use super::{Sample, alternate_fn, run_workers};

    const TASKS: usize = 16;

    async fn handler(_: Request<()>) -> Result<Response<String>, Infallible> {
        Ok(Response::new(String::new()))
    }

    async fn drive<S>(service: S, run_for: Duration) -> Sample
    where
        S: Service<Request<()>> + Clone + Send + 'static,
        S::Future: Send,
        S::Response: Send,
        S::Error: std::fmt::Debug + Send,
    {
        run_workers(TASKS, run_for, |worker, stop| {
            let mut service = service.clone();
            async move {
                let mut sample = Sample::default();
                loop {
                    let t = Instant::now();
                    if t >= stop {
                        break;
                    }
                    let request = Request::builder()
                        .header("x-worker", worker)
                        .body(())
                        .expect("request");
                    service
                        .ready()
                        .await
                        .expect("ready")
                        .call(request)
                        .await
                        .expect("call");
                    sample.record(t);
                }
                sample
            }
        })
        .await
    }

    pub(super) async fn compare(client: &Client, run: Duration) {
        let prefix = format!("layer{}", fastrand::u32(..));
        let plain = tower::service_fn(handler);
        let locked = LockLayer::new(client.clone(), move |req: &Request<()>| {
            let worker = req.headers().get("x-worker")?.to_str().ok()?;
            Some(format!("{prefix}:{worker}"))
        })
        .layer(tower::service_fn(handler));
        let (without, with, _) = alternate_fn(
            run,
            async |d| drive(plain, d).await,
            async |d| drive(locked.clone(), d).await,
        )
        .await;
        without.print("layer_without_16tasks");
        with.print("layer_with_16tasks");
        for (name, p) in [("p50", 0.50), ("p99", 0.99)] {
            println!(
                "figure layer_added_{name} {:.0} us",
                with.pct(p) - without.pct(p)
            );
        }
    }
}

// ---- many locks -----------------------------------------------------------------------------

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

async fn many_locks(client: &Client, n: usize, hold_for: Duration) {
    let prefix = format!("many{}", fastrand::u32(..));
    let lease = Duration::from_secs(10);
    let rss_before = rss_kib();
    let started = Instant::now();
    let guards: Vec<_> = {
        let mut tasks = Vec::new();
        let per = n.div_ceil(16);
        for w in 0..16 {
            let client = client.clone();
            let prefix = prefix.clone();
            tasks.push(tokio::spawn(async move {
                let mut guards = Vec::with_capacity(per);
                for i in (w * per)..((w + 1) * per).min(n) {
                    let guard = client
                        .lock(format!("{prefix}-{i}"))
                        .lease_ttl(lease)
                        .acquire()
                        .await
                        .expect("acquire");
                    guards.push(guard);
                }
                guards
            }));
        }
        let mut all = Vec::with_capacity(n);
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    };
    println!(
        "figure many_acquire_time {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let cpu_before = cpu_time();
    let hold_started = Instant::now();
    tokio::time::sleep(hold_for).await;
    let held_for = hold_started.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let lost = guards.iter().filter(|g| !g.is_held()).count();
    let rss_after = rss_kib();
    println!("figure many_locks_held {} locks", guards.len());
    println!("figure many_hold_time {:.0} s", held_for.as_secs_f64());
    println!(
        "figure many_renewals_per_lock {:.1} renewals",
        held_for.as_secs_f64() / (lease.as_secs_f64() / 3.0)
    );
    println!("figure many_locks_lost {lost} locks");
    println!(
        "figure many_client_connections {} connections",
        client.open_connections()
    );
    // Open ones may include idle ones from the parts before, not yet retired.
    let holding: usize = client.status().iter().map(|p| p.holding).sum();
    println!("figure many_connections_holding {holding} connections");
    let server_connections = client.stats().await.map(|s| s[0].connections).unwrap_or(0);
    println!("figure many_server_connections {server_connections} connections (all clients)");
    println!(
        "figure many_rss_growth {:.1} MiB",
        rss_after.saturating_sub(rss_before) as f64 / 1024.0
    );
    println!(
        "figure many_client_cpu {:.1} %core",
        100.0 * cpu.as_secs_f64() / held_for.as_secs_f64()
    );
    let release_started = Instant::now();
    let mut tasks = Vec::new();
    let mut guards = guards;
    while !guards.is_empty() {
        let batch: Vec<_> = guards.drain(..guards.len().min(n.div_ceil(16))).collect();
        tasks.push(tokio::spawn(async move {
            for g in batch {
                g.release().await.expect("release");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "figure many_release_time {:.2} s",
        release_started.elapsed().as_secs_f64()
    );
}

// ---- TLS ------------------------------------------------------------------------------------

#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

// ---- the server -----------------------------------------------------------------------------

struct ChildServer {
    child: Child,
    addr: String,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn testkit_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/bench -> target/<profile>/dflockd-testkit
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let bin = dir.join("dflockd-testkit");
    if !bin.exists() {
        eprintln!("building the dflockd-testkit binary for the benchmark server...");
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "dflockd-testkit", "--bin", "dflockd-testkit"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo");
        assert!(status.success(), "building dflockd-testkit failed");
    }
    bin
}

fn spawn_server(extra: &[&str]) -> ChildServer {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(testkit_binary())
        .args(["--port", &port.to_string(), "--max-locks", "100000"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dflockd-testkit");
    let addr = format!("127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < until, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in StdBufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[server] {line}");
            }
        });
    }
    ChildServer { child, addr }
}

fn parse_args() -> Settings {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("DFLOCKD_QUICK").is_ok_and(|v| v == "1");
    let mut settings = if quick {
        Settings {
            run_for: Duration::from_secs(2),
            hold_for: Duration::from_secs(8),
            many: 10_000,
            only: Vec::new(),
        }
    } else {
        Settings {
            run_for: Duration::from_secs(5),
            hold_for: Duration::from_secs(60),
            many: 10_000,
            only: Vec::new(),
        }
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        match pair[0].as_str() {
            "--seconds" => {
                settings.run_for = Duration::from_secs_f64(pair[1].parse().expect("--seconds N"))
            }
            "--hold-seconds" => {
                settings.hold_for =
                    Duration::from_secs_f64(pair[1].parse().expect("--hold-seconds N"))
            }
            "--many" => settings.many = pair[1].parse().expect("--many N"),
            "--only" => settings.only = pair[1].split(',').map(str::to_owned).collect(),
            _ => {}
        }
    }
    settings
}

#[tokio::main]
async fn main() {
    let settings = parse_args();
    // With the `metrics` feature, the client records into a Prometheus recorder meanwhile:
    // the figures then include what metrics cost.
    #[cfg(feature = "metrics")]
    let _metrics = {
        eprintln!("metrics: recorded into a Prometheus recorder");
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the process's only recorder")
    };
    let external = std::env::var("DFLOCKD_SERVERS")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let ca = dflockd_testkit::tls::TestCa::new();
    let (plain, tls_server, _guard_dir) = match &external {
        Some(_) => (None, None, None),
        None => {
            let dir = std::env::temp_dir().join(format!("dflockd-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let identity = ca.issue_server(&["localhost"]).unwrap();
            let cert = dir.join("cert.pem");
            let key = dir.join("key.pem");
            std::fs::write(&cert, &identity.cert_pem).unwrap();
            std::fs::write(&key, &identity.key_pem).unwrap();
            let plain = spawn_server(&[]);
            let tls = spawn_server(&[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ]);
            (Some(plain), Some(tls), Some(dir))
        }
    };
    let addr = match (&external, &plain) {
        (Some(servers), _) => servers.split(',').next().unwrap().trim().to_owned(),
        (None, Some(p)) => p.addr.clone(),
        _ => unreachable!(),
    };
    if external.is_some() {
        eprintln!("benchmarking against {addr} (DFLOCKD_SERVERS); the TLS part is skipped");
    } else {
        eprintln!("benchmarking against dflockd-testkit child processes on {addr}");
    }
    println!(
        "figure machine_cpus {} cpus",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let client = Client::builder().servers([addr.clone()]).build().unwrap();
    let run = settings.run_for;

    // Warm up both paths (connections, allocator, server state).
    let _ = raw_loop(&addr, None, 1, false, Duration::from_millis(300)).await;
    let _ = client_loop(&client, 1, false, Duration::from_millis(300)).await;

    if settings.wants("single") {
        compare(
            "highlevel_1task",
            "raw_1conn",
            run,
            async |d| raw_loop(&addr, None, 1, false, d).await,
            async |d| client_loop(&client, 1, false, d).await,
        )
        .await;
    }
    // Halves of `single`, for profiling one side at a time.
    if settings.only.iter().any(|p| p == "single-raw") {
        let cpu = cpu_time();
        let s = raw_loop(&addr, None, 1, false, run).await;
        s.print("raw_1conn");
        println!(
            "figure raw_1conn_cpu_per_op {:.1} us",
            (cpu_time() - cpu).as_secs_f64() * 1e6 / s.ops as f64
        );
    }
    if settings.only.iter().any(|p| p == "single-client") {
        let cpu = cpu_time();
        let s = client_loop(&client, 1, false, run).await;
        s.print("highlevel_1task");
        println!(
            "figure highlevel_1task_cpu_per_op {:.1} us",
            (cpu_time() - cpu).as_secs_f64() * 1e6 / s.ops as f64
        );
    }
    // Distinct keys from many tasks: the raw loop has a connection per task, the client its
    // pool (`client_connections` says how many it opened).
    for tasks in [16, 64, 256] {
        if !(settings.wants("parallel") || settings.wants(&format!("parallel{tasks}"))) {
            continue;
        }
        compare(
            &format!("highlevel_{tasks}tasks"),
            &format!("raw_{tasks}conn"),
            run,
            async |d| raw_loop(&addr, None, tasks, false, d).await,
            async |d| client_loop(&client, tasks, false, d).await,
        )
        .await;
        println!(
            "figure highlevel_{tasks}tasks_client_connections {} connections",
            client.open_connections()
        );
    }
    // The same 64 tasks on at most 16 shared connections (the default is 64): what
    // pipelining four requests deep on each costs the tail, and buys in throughput.
    let narrow = Client::builder()
        .servers([addr.clone()])
        .max_shared_connections(16)
        .build()
        .unwrap();
    if settings.wants("parallel") || settings.wants("parallel64narrow") {
        compare(
            "highlevel_64tasks_16shared",
            "raw_64conn",
            run,
            async |d| raw_loop(&addr, None, 64, false, d).await,
            async |d| client_loop(&narrow, 64, false, d).await,
        )
        .await;
        println!(
            "figure highlevel_64tasks_16shared_client_connections {} connections",
            narrow.open_connections()
        );
    }
    // The raw loop against itself: how far apart two measurements of the same thing come out
    // on this machine, the noise floor of the ratios above.
    for tasks in [16, 64] {
        if !(settings.wants("parallel") || settings.wants("noise")) {
            break;
        }
        compare_with(
            &format!("raw_{tasks}conn_again"),
            &format!("raw_{tasks}conn"),
            "itself",
            run,
            async |d| raw_loop(&addr, None, tasks, false, d).await,
            async |d| raw_loop(&addr, None, tasks, false, d).await,
        )
        .await;
    }
    // What 64 tasks on 16 connections cost by themselves: the same raw loop, its requests
    // pipelined by hand on 16 connections, against a connection per task; and the client
    // kept to 16 against that.
    if settings.wants("parallel") || settings.wants("parallel64pipe") {
        compare(
            "raw_64tasks_16pipelined",
            "raw_64conn",
            run,
            async |d| raw_loop(&addr, None, 64, false, d).await,
            async |d| raw_pipelined_loop(&addr, 16, 64, d).await,
        )
        .await;
        compare_with(
            "highlevel_64tasks_16shared",
            "raw_64tasks_16pipelined",
            "raw_16pipelined",
            run,
            async |d| raw_pipelined_loop(&addr, 16, 64, d).await,
            async |d| client_loop(&narrow, 64, false, d).await,
        )
        .await;
    }
    if settings.named("bound") {
        bound(&addr, run).await;
    }
    if settings.wants("hot") {
        compare(
            "highlevel_hotkey_16tasks",
            "raw_hotkey_16conn",
            run,
            async |d| raw_loop(&addr, None, 16, true, d).await,
            async |d| client_loop(&client, 16, true, d).await,
        )
        .await;
    }

    if let Some(tls_server) = tls_server.as_ref().filter(|_| settings.wants("tls")) {
        let tls_addr = format!("localhost:{}", tls_server.addr.rsplit(':').next().unwrap());
        let options = dflockd::TlsOptions::ca_pem(ca.cert_pem()).unwrap();
        let tls_client = Client::builder()
            .servers([tls_addr.clone()])
            .tls(options)
            .build()
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        };
        let _ = client_loop(&tls_client, 1, false, Duration::from_millis(300)).await;
        compare(
            "highlevel_tls_1task",
            "raw_tls_1conn",
            run,
            async |d| raw_loop(&tls_addr, Some(&tls), 1, false, d).await,
            async |d| client_loop(&tls_client, 1, false, d).await,
        )
        .await;
        compare(
            "highlevel_tls_16tasks",
            "raw_tls_16conn",
            run,
            async |d| raw_loop(&tls_addr, Some(&tls), 16, false, d).await,
            async |d| client_loop(&tls_client, 16, false, d).await,
        )
        .await;
        println!(
            "figure highlevel_tls_connections {} connections",
            tls_client.open_connections()
        );
    }

    if settings.wants("layer") {
        layer::compare(&client, run).await;
    }

    if settings.wants("many") {
        many_locks(&client, settings.many, settings.hold_for).await;
    }
}
