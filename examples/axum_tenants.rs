//! At most N concurrent requests per tenant, across every replica: a distributed semaphore
//! per `x-tenant` header around an axum API, with a larger limit for premium tenants. Over the
//! limit a request is refused at once with `429 Too Many Requests` and `Retry-After`; a
//! request without a tenant gets `400`.
//!
//! The limit protects capacity, not correctness, so when the lock server cannot be reached
//! the API keeps serving, unguarded (`OnUnreachable::FailOpen`: counted and logged), rather
//! than refusing everyone.
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
use dflockd::tower::{OnMissingKey, OnUnreachable, SemaphoreLayer, Slot, header};

use common::BoxError;

/// Concurrent requests allowed per premium tenant.
pub(crate) const PREMIUM_LIMIT: u32 = 4;
/// Concurrent requests allowed per tenant of the free tier.
pub(crate) const FREE_LIMIT: u32 = 2;
/// The premium tenants (in a real service: a lookup in the tenant's plan).
pub(crate) const PREMIUM: &[&str] = &["acme"];

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

/// The key and the limit of a request: `tenant:{x-tenant}`, with the tenant's plan's limit.
fn tenant_slot(req: &Request<Body>) -> Option<Slot> {
    let tenant = header(req, "x-tenant")?;
    let limit = if PREMIUM.contains(&tenant.as_str()) {
        PREMIUM_LIMIT
    } else {
        FREE_LIMIT
    };
    Some(Slot::new(format!("tenant:{tenant}"), limit))
}

/// How the per-tenant layer finds a request's key and limit.
pub(crate) type TenantSlot = fn(&Request<Body>) -> Option<Slot>;

/// The per-tenant limit. Keep a clone to read its counters.
pub(crate) fn layer(client: dflockd::Client) -> SemaphoreLayer<TenantSlot> {
    let slot: TenantSlot = tenant_slot;
    // The limit given here is for keys without one of their own; every slot has one.
    SemaphoreLayer::new(client, FREE_LIMIT, slot)
        .wait(Duration::ZERO)
        .busy_status(StatusCode::TOO_MANY_REQUESTS)
        .retry_after(Some(Duration::from_secs(1)))
        // A request without a tenant is the client's mistake: 400.
        .on_missing_key(OnMissingKey::BadRequest)
        // Lock server down: serve unguarded rather than refuse everyone.
        .on_unreachable(OnUnreachable::FailOpen)
}

/// The application: every route under `/api` is limited per tenant; `report_time` is how
/// long a report takes.
pub(crate) fn app(
    per_tenant: SemaphoreLayer<TenantSlot>,
    load: Load,
    report_time: Duration,
) -> Router {
    let api = Router::new()
        .route("/report", get(report))
        .with_state((load, report_time));
    Router::new().nest("/api", api.route_layer(per_tenant))
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
    /// The most requests of each tenant seen running at once.
    pub(crate) max_in_flight: HashMap<String, usize>,
    /// A request while the lock server cannot be reached.
    pub(crate) unreachable: Option<StatusCode>,
    /// Requests the layer let through unguarded.
    pub(crate) failed_open: u64,
}

/// Serves the app on a free port; six concurrent reports for `acme` (premium: four run, two
/// are refused) and for `globex` (free: two run, four are refused), and one without a
/// tenant. Then one report through a replica whose lock server cannot be reached.
pub(crate) async fn quick(client: dflockd::Client) -> Result<QuickReport, BoxError> {
    let load = Load::default();
    let report_time = Duration::from_millis(500);
    let addr = common::serve_axum(app(layer(client), load.clone(), report_time)).await?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let get = |addr: std::net::SocketAddr, tenant: &'static str| {
        let http = http.clone();
        async move {
            let mut req = axum::http::Request::get(format!("http://{addr}/api/report"));
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
        }
    };
    let mut requests = tokio::task::JoinSet::new();
    for tenant in ["acme", "globex"] {
        for _ in 0..6 {
            requests.spawn(get(addr, tenant));
        }
    }
    requests.spawn(get(addr, ""));
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
    for tenant in ["acme", "globex"] {
        report
            .max_in_flight
            .insert(tenant.to_owned(), load.max(tenant));
    }

    // A replica whose lock server is down (nothing listens on its address).
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let down_client = dflockd::Client::builder()
        .servers([down.to_string()])
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    let down_layer = layer(down_client);
    let down_addr = common::serve_axum(app(down_layer.clone(), load, report_time)).await?;
    let (_, status, _) = get(down_addr, "acme").await?;
    report.unreachable = Some(status);
    report.failed_open = down_layer.counters().failed_open;
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), common::Report> {
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
            "acme (premium) ran at most {} at once (limit {PREMIUM_LIMIT}), globex at most {} (limit {FREE_LIMIT})",
            report.max_in_flight["acme"], report.max_in_flight["globex"]
        );
        println!(
            "lock server down: {:?}, served unguarded: {}",
            report.unreachable, report.failed_open
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    eprintln!(
        "listening on http://127.0.0.1:3000; try: curl -H 'x-tenant: acme' http://127.0.0.1:3000/api/report"
    );
    axum::serve(
        listener,
        app(layer(client), Load::default(), Duration::from_secs(2)),
    )
    .await?;
    Ok(())
}
