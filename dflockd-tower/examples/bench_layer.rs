//! Cost of the lock layer on an axum "hello" handler, over real HTTP and a real lock server.
//!
//! ```text
//! cargo run --release -p dflockd-tower --example bench_layer [-- --seconds 3 --concurrency 32]
//! ```
//!
//! Runs, one after the other: the handler without the layer (`plain`), with a
//! [`LockLayer`] and a key per worker, so that requests in flight never share a key
//! (`lock_distinct`), the same with a [`SemaphoreLayer`] of limit 4 (`semaphore_distinct`),
//! and with a `LockLayer` and one hot key that every request queues for (`lock_hot`). Prints `figure NAME VALUE UNIT` and `ratio NAME VALUE`
//! lines. The lock server is `DFLOCKD_SERVERS` when set, otherwise an embedded test server.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use dflockd_tower::{LockLayer, PathKey, SemaphoreLayer};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn Error + Send + Sync>;

struct Args {
    seconds: f64,
    concurrency: usize,
}

fn args() -> Result<Args, BoxError> {
    let mut args = Args {
        seconds: 3.0,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => args.seconds = value()?.parse()?,
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--quick" => args.seconds = 0.5,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

async fn hello() -> &'static str {
    "hello"
}

fn key(prefix: &str) -> PathKey {
    PathKey::new("/hello/{id}", &format!("{prefix}:{{id}}")).expect("valid pattern")
}

async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i]
    }
}

/// `concurrency` workers send requests back to back for `seconds`; `path(worker, n)` is the
/// path of a worker's n-th request.
async fn load(
    addr: SocketAddr,
    args: &Args,
    path: fn(usize, u64) -> String,
) -> Result<Run, BoxError> {
    let http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http::<Empty<Bytes>>();
    // Warm up: connections to the HTTP server and the lock server.
    for w in 0..args.concurrency {
        let req = Request::get(format!("http://{addr}{}", path(w, u64::MAX))).body(Empty::new())?;
        http.request(req).await?.into_body().collect().await?;
    }
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.concurrency {
        let (http, errors) = (http.clone(), errors.clone());
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            let mut n = 0;
            while Instant::now() < deadline {
                let req = Request::get(format!("http://{addr}{}", path(w, n)))
                    .body(Empty::new())
                    .expect("request");
                let sent = Instant::now();
                let ok = match http.request(req).await {
                    Ok(response) => {
                        let status = response.status();
                        match response.into_body().collect().await {
                            Ok(_) if status == StatusCode::OK => true,
                            Ok(body) => {
                                if errors.load(Ordering::Relaxed) == 0 {
                                    let body = body.to_bytes();
                                    eprintln!(
                                        "first error: {status} {}",
                                        String::from_utf8_lossy(&body).trim()
                                    );
                                }
                                false
                            }
                            Err(e) => {
                                eprintln!("body error: {e}");
                                false
                            }
                        }
                    }
                    Err(e) => {
                        if errors.load(Ordering::Relaxed) == 0 {
                            eprintln!("first error: {e}");
                        }
                        false
                    }
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Run {
        requests: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latencies,
    })
}

fn report(name: &str, run: &Run) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("figure {name}_rps {:.0} req/s", run.rps());
    println!("figure {name}_p50 {:.3} ms", ms(run.percentile(0.50)));
    println!("figure {name}_p99 {:.3} ms", ms(run.percentile(0.99)));
    println!("figure {name}_errors {} count", run.errors);
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = args()?;
    let (client, _server) = if std::env::var("DFLOCKD_SERVERS").is_ok_and(|s| !s.trim().is_empty())
    {
        (dflockd_core::Client::from_env()?, None)
    } else {
        let server = dflockd_testkit::TestServer::start().await?;
        eprintln!(
            "DFLOCKD_SERVERS is not set: using an embedded test server at {}",
            server.addr()
        );
        let client = dflockd_core::Client::builder()
            .servers([server.addr_string()])
            .build()?;
        (client, Some(server))
    };
    eprintln!(
        "{} workers, {} s per run, debug build: {}",
        args.concurrency,
        args.seconds,
        cfg!(debug_assertions)
    );

    let plain = serve(Router::new().route("/hello/{id}", get(hello))).await?;
    let lock =
        serve(Router::new().route("/hello/{id}", get(hello)).layer(
            LockLayer::new(client.clone(), key("bench-lock")).wait(Duration::from_secs(30)),
        ))
        .await?;
    let semaphore = serve(Router::new().route("/hello/{id}", get(hello)).layer(
        SemaphoreLayer::new(client.clone(), 4, key("bench-sem")).wait(Duration::from_secs(30)),
    ))
    .await?;

    // A key per worker: no two requests in flight share one (and the server's key table,
    // which keeps idle keys for a minute, does not fill up).
    let distinct: fn(usize, u64) -> String = |w, _| format!("/hello/{}-{w}", std::process::id());
    let hot: fn(usize, u64) -> String = |_, _| format!("/hello/{}-hot", std::process::id());

    let plain_run = load(plain, &args, distinct).await?;
    report("plain", &plain_run);
    let lock_run = load(lock, &args, distinct).await?;
    report("lock_distinct", &lock_run);
    let semaphore_run = load(semaphore, &args, distinct).await?;
    report("semaphore_distinct", &semaphore_run);
    let hot_run = load(lock, &args, hot).await?;
    report("lock_hot", &hot_run);

    let base = plain_run.rps();
    println!(
        "ratio lock_distinct_rps_vs_plain {:.3}",
        lock_run.rps() / base
    );
    println!(
        "ratio semaphore_distinct_rps_vs_plain {:.3}",
        semaphore_run.rps() / base
    );
    println!("ratio lock_hot_rps_vs_plain {:.3}", hot_run.rps() / base);
    let p50 = |r: &Run| r.percentile(0.5).as_secs_f64();
    println!(
        "ratio lock_distinct_p50_vs_plain {:.2}",
        p50(&lock_run) / p50(&plain_run)
    );
    Ok(())
}
