//! One request per order at a time, across every replica: a per-entity lock around an axum
//! route, so that "check, then pay" cannot run twice at once for the same order. The key comes
//! from the route axum matched (`RouteKey`), and the handler takes its lock as an extractor
//! (`Locked`).
//!
//! ```text
//! cargo run --example axum_orders              # serves http://127.0.0.1:3000
//! curl -X POST http://127.0.0.1:3000/orders/42/pay
//! cargo run --example axum_orders -- --quick   # drives itself with a few requests, exits
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
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use dflockd::tower::{LockLayer, Locked, RouteKey};

use common::BoxError;

/// Paid orders and the fence of the lock each was paid under.
#[derive(Clone, Default)]
pub(crate) struct Ledger {
    paid: Arc<Mutex<HashMap<String, Option<u64>>>>,
}

/// The application: `POST /orders/{id}/pay` runs under the lock `order:{id}`.
pub(crate) fn app(client: dflockd::Client, ledger: Ledger) -> Result<Router, BoxError> {
    // `{id}` is the route's parameter: the key follows the route, whatever its path.
    let per_order = LockLayer::new(client, RouteKey::new("order:{id}")?)
        // Queue up to 5 s behind a payment in progress, then answer 503 + Retry-After.
        .wait(Duration::from_secs(5))
        .lease_ttl(Duration::from_secs(30));
    Ok(Router::new()
        .route("/orders/{id}/pay", post(pay))
        .with_state(ledger)
        // A route layer runs once axum has matched a route (so its parameters are known);
        // other paths get their 404 without a lock. A payment must not run unguarded: the
        // defaults fail closed when the lock server cannot be reached (503), and a route
        // without `{id}` would be refused (500), not run unlocked.
        .route_layer(per_order))
}

/// Check, then act: safe only because no other request for this order runs meanwhile.
async fn pay(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    Locked(lock): Locked,
) -> (StatusCode, String) {
    if let Some(fence) = ledger.paid.lock().unwrap().get(&id) {
        return (
            StatusCode::CONFLICT,
            format!(
                "order {id} already paid (fence {})\n",
                common::fence(*fence)
            ),
        );
    }
    // The call to the payment provider.
    tokio::time::sleep(Duration::from_millis(50)).await;
    ledger.paid.lock().unwrap().insert(id.clone(), lock.fence());
    (
        StatusCode::OK,
        format!("order {id} paid (fence {})\n", common::fence(lock.fence())),
    )
}

/// What the quick run saw, per order: (paid, already paid, other statuses).
#[derive(Debug, Default)]
pub(crate) struct QuickReport {
    pub(crate) per_order: HashMap<String, (usize, usize, usize)>,
}

/// Serves the app on a free port and pays two orders five times each, concurrently.
pub(crate) async fn quick(client: dflockd::Client) -> Result<QuickReport, BoxError> {
    let addr = common::serve_axum(app(client, Ledger::default())?).await?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let mut requests = tokio::task::JoinSet::new();
    for order in ["1001", "1002"] {
        for _ in 0..5 {
            let http = http.clone();
            let uri = format!("http://{addr}/orders/{order}/pay");
            requests.spawn(async move {
                let req = axum::http::Request::post(uri).body(http_body_util::Empty::new())?;
                let status = http.request(req).await?.status();
                Ok::<_, BoxError>((order, status))
            });
        }
    }
    let mut report = QuickReport::default();
    while let Some(done) = requests.join_next().await {
        let (order, status) = done??;
        let entry = report.per_order.entry(order.to_owned()).or_default();
        match status {
            StatusCode::OK => entry.0 += 1,
            StatusCode::CONFLICT => entry.1 += 1,
            _ => entry.2 += 1,
        }
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    common::log_to_stderr();
    let (client, _servers) = common::client()?;
    if common::quick() {
        let report = quick(client).await?;
        let mut orders: Vec<_> = report.per_order.into_iter().collect();
        orders.sort();
        for (order, (paid, already, other)) in orders {
            println!("order {order}: paid {paid}, already paid {already}, other {other}");
        }
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    eprintln!(
        "listening on http://127.0.0.1:3000; try: curl -X POST http://127.0.0.1:3000/orders/42/pay"
    );
    axum::serve(listener, app(client, Ledger::default())?).await?;
    Ok(())
}
