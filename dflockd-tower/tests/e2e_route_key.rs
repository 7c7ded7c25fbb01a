//! Keys from the route axum matched, and the `Locked` extractor, end to end (feature `axum`).

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use dflockd_testkit::{TestServer, TestServers, unique_key};
use dflockd_tower::{LockLayer, Locked, OnUnreachable, RouteKey};
use http::StatusCode;
use util::{bounded, http, lock_client, send, serve};

async fn pay(Locked(lock): Locked) -> String {
    format!("paid under {}", lock.key())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_come_from_the_matched_route_and_handlers_take_the_lock() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let app = Router::new()
            .route("/orders/{id}/pay", post(pay))
            .route("/orders/{id}/refund", post(pay))
            .route_layer(
                LockLayer::new(
                    lock_client(&lock_addr),
                    RouteKey::new("order:{id}").unwrap(),
                )
                .wait(Duration::ZERO),
            );
        let addr = serve(app).await;
        let http = http();
        let id = unique_key("o");

        // Both routes lock the order the path names: busy while another replica holds it.
        let holder = lock_client(&lock_addr)
            .lock(format!("order:{id}"))
            .acquire()
            .await
            .unwrap();
        for action in ["pay", "refund"] {
            let reply = send(&http, addr, "POST", &format!("/orders/{id}/{action}"), &[]).await;
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
            assert!(reply.body.contains("busy"), "{reply:?}");
        }
        holder.release().await.unwrap();
        let reply = send(&http, addr, "POST", &format!("/orders/{id}/pay"), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, format!("paid under order:{id}"));
        // Paths no route matches never reach the route layer.
        let reply = send(&http, addr, "POST", "/nowhere", &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_parameter_cannot_run_unguarded() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let layer = LockLayer::new(
            lock_client(&lock_addr),
            RouteKey::new("order:{id}").unwrap(),
        );
        // The parameter was renamed, the key template was not.
        let app = Router::new()
            .route(
                "/orders/{order_id}/pay",
                post(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    async { "paid" }
                }),
            )
            .route_layer(layer.clone());
        let addr = serve(app).await;
        let reply = send(&http(), addr, "POST", "/orders/7/pay", &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        assert!(reply.body.contains("route key order:{id}"), "{reply:?}");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the handler ran unguarded");
        assert_eq!(layer.counters().missing_key_rejected, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_router_layer_unmatched_paths_have_no_key() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let app = Router::new()
            .route("/orders/{id}/pay", post(pay))
            .layer(LockLayer::new(
                lock_client(&lock_addr),
                RouteKey::new("order:{id}").unwrap(),
            ));
        let addr = serve(app).await;
        let http = http();
        // Matched routes have their parameters under `layer` too...
        let reply = send(&http, addr, "POST", "/orders/7/pay", &[]).await;
        assert_eq!(reply.body, "paid under order:7");
        // ...but the fallback runs under it as well: no route, no key, 500 instead of 404.
        // Hence `route_layer`.
        let reply = send(&http, addr, "POST", "/nowhere", &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locked_refuses_requests_no_layer_guarded() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let lock_addr = server.addr_string();
        let maybe = |lock: Option<Locked>| async move {
            match lock {
                Some(lock) => format!("guarded {}", lock.key()),
                None => "unguarded".to_owned(),
            }
        };
        let app = Router::new()
            .route("/orders/{id}/pay", post(pay))
            .route("/orders/{id}/status", get(maybe))
            .route_layer(
                LockLayer::new(
                    lock_client(&lock_addr),
                    RouteKey::new("order:{id}").unwrap(),
                )
                .on_unreachable(OnUnreachable::FailOpen),
            )
            // Added after the route layer: not guarded.
            .route("/orders/{id}/cancel", post(pay))
            .route("/orders/{id}/note", get(maybe));
        let addr = serve(app).await;
        let http = http();

        let reply = send(&http, addr, "POST", "/orders/1/cancel", &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        assert!(reply.body.contains("no lock layer guarded"), "{reply:?}");
        let reply = send(&http, addr, "GET", "/orders/1/note", &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "unguarded")
        );
        let reply = send(&http, addr, "GET", "/orders/1/status", &[]).await;
        assert_eq!(reply.body, "guarded order:1");

        // Failing open: a handler that insists on the lock does not run; one that can do
        // without runs unguarded.
        server.kill();
        let reply = send(&http, addr, "POST", "/orders/1/pay", &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        let reply = send(&http, addr, "GET", "/orders/1/status", &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "unguarded")
        );
    })
    .await;
}
