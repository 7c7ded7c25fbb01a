//! Metrics (feature `metrics`): the client, the tower layer and the attribute macro record
//! through the `metrics` facade, here into a Prometheus recorder whose text an axum route
//! serves at `/metrics`. Some lock traffic runs meanwhile: grants, a busy try-once, a
//! semaphore, requests refused by a per-order lock layer, a skipped `#[exclusive]` job.
//!
//! ```text
//! cargo run --example metrics --features metrics   # serves http://127.0.0.1:9000/metrics
//! curl http://127.0.0.1:9000/metrics
//! cargo run --example metrics --features metrics -- --quick   # one round, prints a few lines
//! ```
//!
//! The lock server comes from `DFLOCKD_SERVERS` (and the other `DFLOCKD_*` variables); when it
//! is unset, an embedded test server is started. `DFLOCKD_QUICK=1` is the same as `--quick`.

#[path = "common/mod.rs"]
pub(crate) mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use dflockd::tower::LockLayer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::BoxError;

/// Installs the Prometheus recorder for the process (before the client's first request) and
/// describes the metrics, so that `/metrics` has their `# HELP` lines.
pub(crate) fn install_recorder() -> Result<PrometheusHandle, BoxError> {
    let handle = PrometheusBuilder::new()
        // Histograms with buckets (the default is a summary): lock waits, up to a minute.
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0],
        )?
        .install_recorder()?;
    dflockd::metrics::describe();
    Ok(handle)
}

/// `/metrics`, and `/orders/{id}/pay` under a per-order lock that refuses at once when the
/// order is busy (503): the layer's rejections are counted.
pub(crate) fn app(client: dflockd::Client, handle: PrometheusHandle) -> Router {
    let order = |req: &Request<Body>| {
        let id = req
            .uri()
            .path()
            .strip_prefix("/orders/")?
            .split('/')
            .next()?;
        Some(format!("order:{id}"))
    };
    let per_order = LockLayer::new(client, order)
        .name("orders")
        .wait(Duration::ZERO);
    let pay = post(|| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        "paid\n"
    });
    Router::new()
        .route("/orders/{id}/pay", pay.route_layer(per_order))
        .route("/metrics", get(move || async move { handle.render() }))
}

/// A nightly job that runs on one replica at a time; the others skip it (`wait = "0s"`).
#[dflockd::exclusive(key = "nightly-report", wait = "0s", client = client)]
async fn nightly_report(client: &dflockd::Client) {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One round of lock traffic, through the client, the layer at `addr` and the macro. Returns
/// a semaphore slot still held (`dflockd_held` shows it until it is dropped).
pub(crate) async fn traffic(
    client: &dflockd::Client,
    addr: std::net::SocketAddr,
) -> Result<dflockd::Guard, BoxError> {
    // A grant and its release; a try-once on a key held meanwhile finds it busy.
    let guard = client.lock("invoice:42").acquire().await?;
    assert!(client.lock("invoice:42").try_acquire().await?.is_none());
    guard.release().await?;

    // Two slots of a semaphore, one of them kept.
    let exports = client.semaphore("exports", 2);
    let kept = exports.acquire().await?;
    exports.acquire().await?.release().await?;

    // Three payments of one order at once: one runs, the layer refuses the others.
    let mut payments = tokio::task::JoinSet::new();
    for _ in 0..3 {
        payments.spawn(http(addr, "POST", "/orders/7/pay"));
    }
    while let Some(done) = payments.join_next().await {
        done??;
    }

    // Two replicas' schedules fire together: one of them runs the job.
    tokio::join!(nightly_report(client), nightly_report(client));
    Ok(kept)
}

/// A plain HTTP/1.1 request to `addr`: the response's status line and body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> Result<String, BoxError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    Ok(format!("{status}\n{body}"))
}

/// The lines of `/metrics` that the quick run prints: the samples of these metrics.
pub(crate) const SHOWN: &[&str] = &[
    "dflockd_acquires_total",
    "dflockd_held",
    "dflockd_releases_total",
    "dflockd_layer_rejections_total",
    "dflockd_exclusive_skipped_total",
];

/// The quick run: installs the recorder, serves the app on a free port, one round of
/// traffic, then fetches its own `/metrics` and returns the lines of [`SHOWN`].
pub(crate) async fn quick(client: dflockd::Client) -> Result<Vec<String>, BoxError> {
    let handle = install_recorder()?;
    let addr = common::serve_axum(app(client.clone(), handle)).await?;
    let kept = traffic(&client, addr).await?;
    let page = http(addr, "GET", "/metrics").await?;
    drop(kept);
    Ok(page
        .lines()
        .filter(|line| {
            SHOWN.iter().any(|name| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
            })
        })
        .map(str::to_owned)
        .collect())
}

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    common::log_to_stderr();
    let (client, _servers) = common::client()?;
    if common::quick() {
        for line in quick(client).await? {
            println!("{line}");
        }
        return Ok(());
    }
    let handle = install_recorder()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
    let addr = listener.local_addr()?;
    eprintln!(
        "serving http://{addr}/metrics, with a round of lock traffic every 5 s; Ctrl-C stops"
    );
    let app = app(client.clone(), handle);
    tokio::spawn(async move { axum::serve(listener, app).await });
    loop {
        let kept = traffic(&client, addr).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(kept);
    }
}
