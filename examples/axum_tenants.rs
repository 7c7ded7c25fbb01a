//! At most N concurrent requests per tenant, across every replica: a distributed semaphore
//! per `x-tenant` header around an axum API. Over the limit a request is refused at once with
//! `429 Too Many Requests` and `Retry-After`; a request without a tenant gets `400`.
//!
//! ```text
//! cargo run --example axum_tenants              # serves http://127.0.0.1:3000
//! curl -H 'x-tenant: acme' http://127.0.0.1:3000/api/report
//! cargo run --example axum_tenants -- --quick   # drives itself with a few requests, exits
//! ```
//!
//! The lock server comes from `DFLOCKD_SERVERS` (and the other `DFLOCKD_*` variables); when it
//! is unset, an embedded test server is started. `DFLOCKD_QUICK=1` is the same as `--quick`.

#[path = "common/mod.rs"]
pub(crate) mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::get;
use dflockd::tower::{OnMissingKey, SemaphoreLayer, header};

use common::BoxError;

/// Concurrent requests allowed per tenant.
pub(crate) const PER_TENANT: u32 = 2;

/// Requests in flight per tenant, and the most seen at once.
#[derive(Clone, Default)]
pub(crate) struct Load {
    tenants: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

impl Load {
    pub(crate) fn max(&self, tenant: &str) -> usize {
        self.tenants.lock().unwrap().get(tenant).map_or(0, |t| t.1)
    }
}

/// The application: every route under `/api` is limited per tenant; `report_time` is how
/// long a report takes.
pub(crate) fn app(client: dflockd::Client, load: Load, report_time: Duration) -> Router {
    let per_tenant = SemaphoreLayer::new(client, PER_TENANT, |req: &Request<Body>| {
        header(req, "x-tenant").map(|tenant| format!("tenant:{tenant}"))
    })
    .wait(Duration::ZERO)
    .busy_status(StatusCode::TOO_MANY_REQUESTS)
    .retry_after(Some(Duration::from_secs(1)))
    // A request without a tenant is the client's mistake: 400.
    .on_missing_key(OnMissingKey::BadRequest);
    let api = Router::new()
        .route("/report", get(report))
        .with_state((load, report_time));
    Router::new().nest("/api", api).layer(per_tenant)
}

async fn report(State((load, report_time)): State<(Load, Duration)>, headers: HeaderMap) -> String {
    let tenant = headers["x-tenant"].to_str().unwrap_or_default().to_owned();
    {
        let mut tenants = load.tenants.lock().unwrap();
        let (now, max) = tenants.entry(tenant.clone()).or_default();
        *now += 1;
        *max = (*max).max(*now);
    }
    tokio::time::sleep(report_time).await;
    load.tenants.lock().unwrap().get_mut(&tenant).unwrap().0 -= 1;
    format!("report for {tenant}\n")
}

/// What the quick run saw.
#[derive(Debug, Default)]
pub(crate) struct QuickReport {
    /// Statuses per tenant (`""` for the request without one).
    pub(crate) statuses: HashMap<String, Vec<StatusCode>>,
    /// A `Retry-After` of a refused request.
    pub(crate) retry_after: Option<String>,
    /// The most requests of `acme` seen running at once.
    pub(crate) acme_max_in_flight: usize,
}

/// Serves the app on a free port; five concurrent reports for `acme` (two run, three are
/// refused), one for `globex` meanwhile, and one without a tenant.
pub(crate) async fn quick(client: dflockd::Client) -> Result<QuickReport, BoxError> {
    let load = Load::default();
    let addr = common::serve_axum(app(client, load.clone(), Duration::from_millis(500))).await?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let mut requests = tokio::task::JoinSet::new();
    for tenant in ["acme", "acme", "acme", "acme", "acme", "globex", ""] {
        let http = http.clone();
        let uri = format!("http://{addr}/api/report");
        requests.spawn(async move {
            let mut req = axum::http::Request::get(uri);
            if !tenant.is_empty() {
                req = req.header("x-tenant", tenant);
            }
            let response = http
                .request(req.body(http_body_util::Empty::new())?)
                .await?;
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            Ok::<_, BoxError>((tenant, response.status(), retry))
        });
    }
    let mut report = QuickReport::default();
    while let Some(done) = requests.join_next().await {
        let (tenant, status, retry) = done??;
        report
            .statuses
            .entry(tenant.to_owned())
            .or_default()
            .push(status);
        report.retry_after = report.retry_after.or(retry);
    }
    report.acme_max_in_flight = load.max("acme");
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    common::log_to_stderr();
    let (client, _servers) = common::client()?;
    if common::quick() {
        let report = quick(client).await?;
        let mut tenants: Vec<_> = report.statuses.into_iter().collect();
        tenants.sort();
        for (tenant, mut statuses) in tenants {
            statuses.sort();
            let statuses: Vec<u16> = statuses.iter().map(StatusCode::as_u16).collect();
            println!("tenant {tenant:?}: {statuses:?}");
        }
        println!(
            "acme ran at most {} at once (limit {PER_TENANT})",
            report.acme_max_in_flight
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    eprintln!(
        "listening on http://127.0.0.1:3000; try: curl -H 'x-tenant: acme' http://127.0.0.1:3000/api/report"
    );
    axum::serve(
        listener,
        app(client, Load::default(), Duration::from_secs(2)),
    )
    .await?;
    Ok(())
}
