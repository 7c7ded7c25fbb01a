//! The tower examples, run in their quick mode against the embedded test server (or
//! `DFLOCKD_SERVERS`).
// Each example brings its own copy of `examples/common` (they are separate programs).
#![allow(clippy::duplicate_mod)]

#[allow(dead_code)]
#[path = "../examples/axum_orders.rs"]
mod axum_orders;
#[allow(dead_code)]
#[path = "../examples/axum_tenants.rs"]
mod axum_tenants;
#[allow(dead_code)]
#[path = "../examples/tonic_guard.rs"]
mod tonic_guard;

use std::time::Duration;

use http::StatusCode;

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("example did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn axum_orders_pays_each_order_once() {
    bounded(async {
        let (client, _servers) = axum_orders::common::client().unwrap();
        let report = axum_orders::quick(client).await.unwrap();
        assert_eq!(report.per_order.len(), 2, "{report:?}");
        for (order, counts) in &report.per_order {
            // Without the lock, concurrent requests would all see "not paid yet".
            assert_eq!(*counts, (1, 4, 0), "order {order}: {report:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn axum_tenants_limits_each_tenant_by_plan_and_fails_open() {
    bounded(async {
        let (client, _servers) = axum_tenants::common::client().unwrap();
        let report = axum_tenants::quick(client).await.unwrap();
        for (tenant, limit) in [
            ("acme", axum_tenants::PREMIUM_LIMIT),
            ("globex", axum_tenants::FREE_LIMIT),
        ] {
            let statuses = &report.statuses[tenant];
            let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
            let refused = statuses
                .iter()
                .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
                .count();
            assert_eq!(ok + refused, 6, "{tenant}: {report:?}");
            assert!(ok >= 1 && refused >= 1, "{tenant}: {report:?}");
            let max = report.max_in_flight[tenant];
            assert!(max <= limit as usize, "{tenant}: {report:?}");
        }
        // The premium tenant ran more at once than the free tier allows.
        assert!(
            report.max_in_flight["acme"] > axum_tenants::FREE_LIMIT as usize,
            "{report:?}"
        );
        assert_eq!(report.statuses[""], [StatusCode::BAD_REQUEST]);
        assert_eq!(report.retry_after.as_deref(), Some("1"));
        assert_eq!(report.unreachable, Some(StatusCode::OK), "{report:?}");
        assert_eq!(report.failed_open, 1, "{report:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tonic_guard_refuses_a_busy_account() {
    bounded(async {
        let (client, _servers) = tonic_guard::common::client().unwrap();
        let report = tonic_guard::quick(client).await.unwrap();
        assert_eq!(
            report.busy,
            Err(tonic::Code::ResourceExhausted),
            "{report:?}"
        );
        assert_eq!(report.other, Ok(()), "{report:?}");
        assert_eq!(report.after, Ok(()), "{report:?}");
    })
    .await;
}
