//! A semaphore limit changed during a rolling deploy: the lock server keeps one limit per key
//! while the key is in use, and the layer queues under it rather than refusing every request.

mod util;

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use dflockd_testkit::{TestServer, unique_key};
use dflockd_tower::{HeldLock, KeyExtractor, SemaphoreLayer};
use http::{Request, StatusCode};
use tokio::sync::{Semaphore, mpsc};
use util::{bounded, http, lock_client, send, serve};

/// Every request has the same key.
struct OneKey(String);

impl KeyExtractor<Request<Body>> for OneKey {
    type Key = String;

    fn extract(&self, _: &Request<Body>) -> Option<String> {
        Some(self.0.clone())
    }
}

type Layer = SemaphoreLayer<OneKey>;

/// A replica's semaphore layer on `key` with `limit`.
fn layer(lock_addr: &str, key: &str, limit: u32, wait: Duration) -> Layer {
    SemaphoreLayer::new(lock_client(lock_addr), limit, OneKey(key.to_owned())).wait(wait)
}

/// Serves `/work` behind `layer`; the handler reports the limit it runs under, then waits
/// for `gate` (closed by the test to let every handler finish).
async fn replica(
    layer: Layer,
    gate: &std::sync::Arc<Semaphore>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<u32>) {
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let gate = gate.clone();
    let app = Router::new()
        .route(
            "/work",
            get(move |Extension(lock): Extension<HeldLock>| {
                let (gate, tx) = (gate.clone(), entered_tx.clone());
                async move {
                    let _ = tx.send(lock.limit());
                    let _ = gate.acquire().await;
                    format!("limit {}", lock.limit())
                }
            }),
        )
        .route_layer(layer);
    (serve(app).await, entered)
}

/// The server's (limit, holders, waiters) of a semaphore key in use.
fn usage(server: &TestServer, key: &str) -> Option<(u64, u64, u64)> {
    let stats = server.stats();
    let s = stats.semaphores.into_iter().find(|s| s.key == key)?;
    Some((s.limit, s.holders, s.waiters))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_changed_while_the_key_is_in_use_queues_under_the_servers_limit() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let lock_addr = server.addr_string();
        let key = unique_key("tenant");
        // A replica of the old release allows 2 and holds one slot.
        let old = lock_client(&lock_addr);
        let old_slot = old.semaphore(&key, 2).acquire().await.unwrap();

        // The new release allows 8.
        let gate = std::sync::Arc::new(Semaphore::new(0));
        let new_layer = layer(&lock_addr, &key, 8, Duration::from_secs(20));
        let (addr, mut entered) = replica(new_layer.clone(), &gate).await;
        let first = tokio::spawn(async move { send(&http(), addr, "GET", "/work", &[]).await });
        assert_eq!(
            entered.recv().await,
            Some(2),
            "runs under the server's limit"
        );
        let second = tokio::spawn(async move { send(&http(), addr, "GET", "/work", &[]).await });
        // The second queues: never more holders than the server's limit.
        while usage(&server, &key) != Some((2, 2, 1)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(entered.try_recv().is_err());

        old_slot.release().await.unwrap();
        assert_eq!(entered.recv().await, Some(2));
        // The old release is not refused either: it queues under the same limit.
        let old_again = old.semaphore(&key, 2).try_acquire().await.unwrap();
        assert!(
            old_again.is_none(),
            "both slots are taken by the new release"
        );

        gate.close();
        for request in [first, second] {
            let reply = request.await.unwrap();
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "limit 2")
            );
        }
        assert_eq!(new_layer.counters().adopted_limit, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_configured_limit_applies_once_the_key_is_idle_and_collected() {
    bounded(async {
        let server = TestServer::builder()
            .gc_interval(Duration::from_millis(50))
            .gc_max_idle(Duration::from_secs(2))
            .start()
            .await
            .unwrap();
        let lock_addr = server.addr_string();
        let key = unique_key("tenant");
        let gate = std::sync::Arc::new(Semaphore::new(0));
        gate.close();
        let (new_addr, _) = replica(layer(&lock_addr, &key, 8, Duration::ZERO), &gate).await;
        let old_layer = layer(&lock_addr, &key, 2, Duration::ZERO);
        let (old_addr, _) = replica(old_layer.clone(), &gate).await;
        let http = http();

        // The old release used the key last: it idles on the server with limit 2, which
        // the server does not list for idle keys. Refused until the server collects it.
        let old = lock_client(&lock_addr);
        old.semaphore(&key, 2)
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let reply = send(&http, new_addr, "GET", "/work", &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.headers.contains_key("retry-after"));

        // Collected: the new limit applies.
        while server.stats().idle_semaphores.iter().any(|s| s.key == key) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let reply = send(&http, new_addr, "GET", "/work", &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "limit 8")
        );

        // While the new release holds the key, a replica of the old release queues under 8.
        let new_slot = lock_client(&lock_addr)
            .semaphore(&key, 8)
            .acquire()
            .await
            .unwrap();
        let reply = send(&http, old_addr, "GET", "/work", &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "limit 8")
        );
        assert_eq!(old_layer.counters().adopted_limit, 1);
        new_slot.release().await.unwrap();
    })
    .await;
}
