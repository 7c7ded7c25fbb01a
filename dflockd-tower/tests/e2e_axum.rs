//! The tower layers in axum, end to end: a real lock server, an axum server on a real socket,
//! requests over real HTTP.

mod util;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Extension, Router};
use dflockd_testkit::{TestServer, TestServers, unique_key};
use dflockd_tower::{
    HeldLock, LockLayer, OnLeaseLoss, OnMissingKey, OnUnreachable, PathKey, SemaphoreLayer, Slot,
    header,
};
use http::{Request, StatusCode};
use http_body_util::channel::{Channel, Sender};
use http_body_util::{BodyExt, Empty};
use tokio::sync::{Barrier, Semaphore, mpsc};
use tokio::task::JoinSet;
use util::{InFlight, Probe, bounded, http, lock_client, send, serve};

fn order_key() -> PathKey {
    PathKey::new("/orders/{id}/pay", "order:{id}").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_is_serialized() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let client = lock_client(&servers.addrs()[0]);
        let probe = Probe::default();
        let p = probe.clone();
        let app = Router::new()
            .route(
                "/orders/{id}/pay",
                post(
                    move |Path(id): Path<String>, Extension(lock): Extension<HeldLock>| {
                        let p = p.clone();
                        async move {
                            let _in = InFlight::new(&p, &id);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            format!("{} {}", lock.key(), lock.token().as_str())
                        }
                    },
                ),
            )
            .layer(LockLayer::new(client, order_key()).wait(Duration::from_secs(30)));
        let addr = serve(app).await;
        let http = http();
        let id = unique_key("o");
        let mut requests = JoinSet::new();
        for _ in 0..8 {
            let (http, path) = (http.clone(), format!("/orders/{id}/pay"));
            requests.spawn(async move { send(&http, addr, "POST", &path, &[]).await });
        }
        let mut tokens = Vec::new();
        while let Some(reply) = requests.join_next().await {
            let reply = reply.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            let (key, token) = reply.body.split_once(' ').unwrap();
            assert_eq!(key, format!("order:{id}"));
            tokens.push(token.to_owned());
        }
        assert_eq!(probe.max(&id), 1, "requests for one key overlapped");
        tokens.sort_unstable();
        tokens.dedup();
        assert_eq!(tokens.len(), 8, "every request ran under its own grant");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_keys_run_in_parallel() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let client = lock_client(&servers.addrs()[0]);
        // Both handlers must be inside at once to get past the barrier.
        let barrier = Arc::new(Barrier::new(2));
        let app = Router::new()
            .route(
                "/orders/{id}/pay",
                post(move || {
                    let barrier = barrier.clone();
                    async move {
                        barrier.wait().await;
                        "paid"
                    }
                }),
            )
            .layer(LockLayer::new(client, order_key()));
        let addr = serve(app).await;
        let http = http();
        let a = format!("/orders/{}/pay", unique_key("a"));
        let b = format!("/orders/{}/pay", unique_key("b"));
        let both = async {
            tokio::join!(
                send(&http, addr, "POST", &a, &[]),
                send(&http, addr, "POST", &b, &[]),
            )
        };
        let (ra, rb) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("requests for different keys were serialized");
        assert_eq!((ra.status, rb.status), (StatusCode::OK, StatusCode::OK));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_limits_each_tenant_and_not_the_others() {
    bounded(async {
        const LIMIT: usize = 3;
        let servers = TestServers::default_config(1).await.unwrap();
        let client = lock_client(&servers.addrs()[0]);
        let probe = Probe::default();
        let gate = Arc::new(Semaphore::new(0));
        let (entered_tx, mut entered) = mpsc::unbounded_channel::<String>();
        let (a, b) = (unique_key("tenant-a"), unique_key("tenant-b"));
        let (p, g, gated) = (probe.clone(), gate.clone(), a.clone());
        let app = Router::new()
            .route(
                "/work",
                get(move |headers: http::HeaderMap| {
                    let (p, g, tx, gated) =
                        (p.clone(), g.clone(), entered_tx.clone(), gated.clone());
                    async move {
                        let tenant = headers["x-tenant"].to_str().unwrap().to_owned();
                        let _in = InFlight::new(&p, &tenant);
                        tx.send(tenant.clone()).unwrap();
                        if tenant == gated {
                            // Closed at the end of the test: then everyone goes on.
                            let _ = g.acquire().await;
                        }
                        "done"
                    }
                }),
            )
            .layer(
                SemaphoreLayer::new(client, LIMIT as u32, |req: &Request<Body>| {
                    header(req, "x-tenant")
                })
                .wait(Duration::from_secs(30)),
            );
        let addr = serve(app).await;
        let http = http();

        let mut tenant_a = JoinSet::new();
        for _ in 0..LIMIT + 2 {
            let (http, a) = (http.clone(), a.clone());
            tenant_a
                .spawn(async move { send(&http, addr, "GET", "/work", &[("x-tenant", &a)]).await });
        }
        for _ in 0..LIMIT {
            assert_eq!(entered.recv().await.unwrap(), a);
        }
        // The others queue: nobody else of tenant A gets in while the gate is shut.
        let extra = tokio::time::timeout(Duration::from_millis(300), entered.recv()).await;
        assert!(
            extra.is_err(),
            "more than {LIMIT} requests of one tenant ran: {extra:?}"
        );
        assert_eq!(probe.in_flight(&a), LIMIT);

        // Another tenant is not held up by tenant A's full slots.
        let reply = send(&http, addr, "GET", "/work", &[("x-tenant", &b)]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(entered.recv().await.unwrap(), b);

        gate.close();
        while let Some(reply) = tenant_a.join_next().await {
            assert_eq!(reply.unwrap().status, StatusCode::OK);
        }
        assert_eq!(probe.max(&a), LIMIT);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_is_rejected_at_once_with_the_configured_status() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let client = lock_client(&servers.addrs()[0]);
        let gate = Arc::new(Semaphore::new(0));
        let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
        let g = gate.clone();
        let app = Router::new()
            .route(
                "/orders/{id}/pay",
                post(move || {
                    let (g, tx) = (g.clone(), entered_tx.clone());
                    async move {
                        tx.send(()).unwrap();
                        let _ = g.acquire().await;
                        "paid"
                    }
                }),
            )
            .layer(
                LockLayer::new(client, order_key())
                    .wait(Duration::ZERO)
                    .busy_status(StatusCode::TOO_MANY_REQUESTS)
                    .retry_after(Some(Duration::from_secs(2))),
            );
        let addr = serve(app).await;
        let http = http();
        let path = format!("/orders/{}/pay", unique_key("o"));

        let first = {
            let (http, path) = (http.clone(), path.clone());
            tokio::spawn(async move { send(&http, addr, "POST", &path, &[]).await })
        };
        entered.recv().await.unwrap();
        let started = Instant::now();
        let busy = send(&http, addr, "POST", &path, &[]).await;
        assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS, "{busy:?}");
        assert_eq!(busy.headers["retry-after"], "2");
        assert!(busy.body.contains("busy"), "{busy:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a zero wait waited"
        );

        gate.close();
        assert_eq!(first.await.unwrap().status, StatusCode::OK);
        // Free again.
        let again = send(&http, addr, "POST", &path, &[]).await;
        assert_eq!(again.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_request_deadline_bounds_the_wait() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let addr0 = &servers.addrs()[0];
        let app = Router::new()
            .route("/orders/{id}/pay", post(|| async { "paid" }))
            .layer(LockLayer::new(lock_client(addr0), order_key()).wait(Duration::from_secs(30)));
        let addr = serve(app).await;
        let id = unique_key("o");
        let holder = lock_client(addr0)
            .lock(format!("order:{id}"))
            .acquire()
            .await
            .unwrap();

        let started = Instant::now();
        let reply = send(
            &http(),
            addr,
            "POST",
            &format!("/orders/{id}/pay"),
            &[("grpc-timeout", "300m")],
        )
        .await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.body.contains("busy"), "{reply:?}");
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(
            took < Duration::from_secs(3),
            "waited past the deadline: {took:?}"
        );
        holder.release().await.unwrap();
    })
    .await;
}

/// Serves a handler that reports entering and then never completes by itself.
async fn stuck_app(
    layer: LockLayer<PathKey>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (entered_tx, entered) = mpsc::unbounded_channel::<()>();
    let app = Router::new()
        .route(
            "/orders/{id}/pay",
            post(move || {
                let tx = entered_tx.clone();
                async move {
                    tx.send(()).unwrap();
                    std::future::pending::<()>().await;
                    "unreachable"
                }
            }),
        )
        .layer(layer);
    (serve(app).await, entered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_loss_mid_request_gives_503() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let layer = LockLayer::new(lock_client(&server.addr_string()), order_key());
        let (addr, mut entered) = stuck_app(layer).await;
        let path = format!("/orders/{}/pay", unique_key("o"));
        let request = tokio::spawn(async move { send(&http(), addr, "POST", &path, &[]).await });
        entered.recv().await.unwrap();
        let killed = Instant::now();
        // The connection holding the lock dies with the server: the lease is lost.
        server.kill();
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.body.contains("lost"), "{reply:?}");
        assert!(reply.headers.contains_key("retry-after"));
        assert!(killed.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_loss_can_let_the_request_finish() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let (entered_tx, mut entered) = mpsc::unbounded_channel::<HeldLock>();
        let g = gate.clone();
        let app = Router::new()
            .route(
                "/orders/{id}/pay",
                post(move |Extension(lock): Extension<HeldLock>| {
                    let (g, tx) = (g.clone(), entered_tx.clone());
                    async move {
                        tx.send(lock.clone()).unwrap();
                        let _ = g.acquire().await;
                        format!("held={}", lock.is_held())
                    }
                }),
            )
            .layer(
                LockLayer::new(lock_client(&server.addr_string()), order_key())
                    .on_lease_loss(OnLeaseLoss::Finish),
            );
        let addr = serve(app).await;
        let path = format!("/orders/{}/pay", unique_key("o"));
        let request = tokio::spawn(async move { send(&http(), addr, "POST", &path, &[]).await });
        let lock = entered.recv().await.unwrap();
        server.kill();
        // The handler goes on only once the loss is known.
        lock.lost().await;
        gate.close();
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, "held=false");
    })
    .await;
}

fn streaming_app(
    client: dflockd_core::Client,
    hold_for_body: bool,
) -> (Router, mpsc::UnboundedReceiver<Sender<Bytes, Infallible>>) {
    let (senders_tx, senders) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/orders/{id}/pay",
            post(move || {
                let senders_tx = senders_tx.clone();
                async move {
                    let (mut sender, body) = Channel::<Bytes, Infallible>::new(4);
                    sender
                        .send_data(Bytes::from_static(b"first "))
                        .await
                        .unwrap();
                    senders_tx.send(sender).unwrap();
                    Body::new(body)
                }
            }),
        )
        .layer(
            LockLayer::new(client, order_key())
                .lease_ttl(Duration::from_secs(30))
                .hold_for_body(hold_for_body),
        );
    (app, senders)
}

/// Acquires `key` through another client, waiting at most 5 s: well under the 30 s lease,
/// so it succeeds only if the lock was released.
async fn acquire_elsewhere(addr: &str, key: &str) -> dflockd_core::Guard {
    lock_client(addr)
        .lock(key)
        .acquire_timeout(Duration::from_secs(5))
        .acquire()
        .await
        .expect("the lock was not released")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_is_released_after_the_response_head_by_default() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let (app, mut senders) = streaming_app(lock_client(&lock_addr), false);
        let addr = serve(app).await;
        let id = unique_key("o");
        let req = Request::post(format!("http://{addr}/orders/{id}/pay"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = http().request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut sender = senders.recv().await.unwrap();

        // The body is still open, the lock is free already.
        let guard = acquire_elsewhere(&lock_addr, &format!("order:{id}")).await;
        guard.release().await.unwrap();

        sender.send_data(Bytes::from_static(b"last")).await.unwrap();
        drop(sender);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"first last");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_for_body_releases_after_the_body() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let (app, mut senders) = streaming_app(lock_client(&lock_addr), true);
        let addr = serve(app).await;
        let id = unique_key("o");
        let key = format!("order:{id}");
        let req = Request::post(format!("http://{addr}/orders/{id}/pay"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = http().request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut sender = senders.recv().await.unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first ");

        // Mid-body: still held.
        let other = lock_client(&lock_addr);
        assert!(other.lock(&key).try_acquire().await.unwrap().is_none());

        sender.send_data(Bytes::from_static(b"last")).await.unwrap();
        drop(sender);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"last");
        let guard = acquire_elsewhere(&lock_addr, &key).await;
        guard.release().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_loss_while_holding_for_the_body_cuts_it_short() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let (app, mut senders) = streaming_app(lock_client(&server.addr_string()), true);
        let addr = serve(app).await;
        let req = Request::post(format!("http://{addr}/orders/{}/pay", unique_key("o")))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = http().request(req).await.unwrap();
        let _sender = senders.recv().await.unwrap();
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        server.kill();
        // The body never ends by itself (the sender is kept): only the loss ends it.
        let rest = body.collect().await;
        assert!(rest.is_err(), "the body was not cut short: {rest:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_server_down_gives_503_quickly() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let lock_addr = server.addr_string();
        server.kill();
        let app = Router::new()
            .route("/orders/{id}/pay", post(|| async { "paid" }))
            .route_layer(LockLayer::new(lock_client(&lock_addr), order_key()));
        let addr = serve(app).await;
        let started = Instant::now();
        let reply = send(&http(), addr, "POST", "/orders/1/pay", &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.body.contains("unavailable"), "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // Paths the router does not know never reach a route layer.
        let other = send(&http(), addr, "POST", "/orders/1/refund", &[]).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_without_a_key_are_rejected_unless_told_otherwise() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let handler = |lock: Option<Extension<HeldLock>>| async move {
            match lock {
                Some(Extension(lock)) => format!("locked {}", lock.key()),
                None => "unlocked".to_owned(),
            }
        };
        let by_header = |req: &Request<Body>| header(req, "x-key");
        let layer = || LockLayer::new(lock_client(&lock_addr), by_header);
        let app = |layer| Router::new().route("/", get(handler)).layer(layer);
        let strict = layer().name("by x-key");
        let client_error = layer().on_missing_key(OnMissingKey::BadRequest);
        let lenient = layer().on_missing_key(OnMissingKey::PassThrough);
        let counters = (strict.clone(), client_error.clone(), lenient.clone());
        let strict = serve(app(strict)).await;
        let client_error = serve(app(client_error)).await;
        let lenient = serve(app(lenient)).await;
        let http = http();
        let key = unique_key("k");

        let reply = send(&http, strict, "GET", "/", &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        assert!(reply.body.contains("by x-key"), "{reply:?}");
        let reply = send(&http, client_error, "GET", "/", &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
        for _ in 0..2 {
            let reply = send(&http, lenient, "GET", "/", &[]).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "unlocked")
            );
        }
        for addr in [strict, client_error, lenient] {
            let reply = send(&http, addr, "GET", "/", &[("x-key", &key)]).await;
            assert_eq!(reply.body, format!("locked {key}"));
        }
        assert_eq!(counters.0.counters().missing_key_rejected, 1);
        assert_eq!(counters.1.counters().missing_key_rejected, 1);
        assert_eq!(counters.2.counters().passed_unguarded, 2);
        assert_eq!(counters.2.counters().missing_key_rejected, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renamed_route_cannot_run_unguarded() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The route was renamed from `/orders/{id}/pay`; the layer's key was not.
        let app = |layer: LockLayer<PathKey>| {
            let ran = ran.clone();
            Router::new()
                .route(
                    "/orders/{id}/checkout",
                    post(move || {
                        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async { "paid" }
                    }),
                )
                .route_layer(layer)
        };
        let layer = LockLayer::new(lock_client(&lock_addr), order_key());
        let strict = serve(app(layer.clone())).await;
        let reply = send(&http(), strict, "POST", "/orders/7/checkout", &[]).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{reply:?}");
        assert!(
            reply.body.contains("/orders/{id}/pay -> order:{id}"),
            "the rejection names the layer: {reply:?}"
        );
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(layer.counters().missing_key_rejected, 1);

        // Unguarded only with the opt-in.
        let lenient = serve(app(layer.on_missing_key(OnMissingKey::PassThrough))).await;
        let reply = send(&http(), lenient, "POST", "/orders/7/checkout", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
    })
    .await;
}

/// A handler that says whether it runs under a lock.
async fn locked_or_not(lock: Option<Extension<HeldLock>>) -> &'static str {
    if lock.is_some() {
        "locked"
    } else {
        "unguarded"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_server_fails_closed_or_open_as_configured() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let lock_addr = server.addr_string();
        let app = |layer| {
            Router::new()
                .route("/orders/{id}/pay", post(locked_or_not))
                .route_layer(layer)
        };
        let closed = LockLayer::new(lock_client(&lock_addr), order_key());
        let open = LockLayer::new(lock_client(&lock_addr), order_key())
            .on_unreachable(OnUnreachable::FailOpen);
        let closed_addr = serve(app(closed.clone())).await;
        let open_addr = serve(app(open.clone())).await;
        let http = http();
        let path = format!("/orders/{}/pay", unique_key("o"));

        // While the server is up, both guard.
        for addr in [closed_addr, open_addr] {
            assert_eq!(send(&http, addr, "POST", &path, &[]).await.body, "locked");
        }
        server.kill();
        let reply = send(&http, closed_addr, "POST", &path, &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.body.contains("unavailable"), "{reply:?}");
        assert!(reply.headers.contains_key("retry-after"));
        for _ in 0..2 {
            let reply = send(&http, open_addr, "POST", &path, &[]).await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "unguarded")
            );
        }
        assert_eq!(closed.counters().failed_open, 0);
        assert_eq!(open.counters().failed_open, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_open_covers_neither_a_busy_key_nor_rejected_credentials() {
    bounded(async {
        let server = TestServer::builder()
            .auth_token("secret")
            .start()
            .await
            .unwrap();
        let lock_addr = server.addr_string();
        let authed = dflockd_core::Client::builder()
            .servers([lock_addr.clone()])
            .auth_token("secret")
            .build()
            .unwrap();
        let app = |layer: LockLayer<PathKey>| {
            Router::new()
                .route("/orders/{id}/pay", post(locked_or_not))
                .route_layer(layer.on_unreachable(OnUnreachable::FailOpen))
        };
        let busy_layer = LockLayer::new(authed.clone(), order_key()).wait(Duration::ZERO);
        // No token: the server answers error_auth.
        let unauthed_layer = LockLayer::new(lock_client(&lock_addr), order_key());
        let busy_addr = serve(app(busy_layer.clone())).await;
        let unauthed_addr = serve(app(unauthed_layer.clone())).await;
        let http = http();
        let id = unique_key("o");
        let path = format!("/orders/{id}/pay");

        let holder = authed.lock(format!("order:{id}")).acquire().await.unwrap();
        let reply = send(&http, busy_addr, "POST", &path, &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.body.contains("busy"), "{reply:?}");
        holder.release().await.unwrap();

        let reply = send(&http, unauthed_addr, "POST", &path, &[]).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(reply.body.contains("unavailable"), "{reply:?}");
        assert_eq!(busy_layer.counters().failed_open, 0);
        assert_eq!(unauthed_layer.counters().failed_open, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_premium_tenant_gets_its_larger_limit() {
    bounded(async {
        const PREMIUM: u32 = 8;
        const FREE: u32 = 2;
        let servers = TestServers::default_config(1).await.unwrap();
        let client = lock_client(&servers.addrs()[0]);
        let probe = Probe::default();
        let gate = Arc::new(Semaphore::new(0));
        let (entered_tx, mut entered) = mpsc::unbounded_channel::<String>();
        let (premium, free) = (unique_key("premium"), unique_key("free"));
        let (p, g, is_premium) = (probe.clone(), gate.clone(), premium.clone());
        let app = Router::new()
            .route(
                "/work",
                get(
                    move |headers: http::HeaderMap, Extension(lock): Extension<HeldLock>| {
                        let (p, g, tx) = (p.clone(), g.clone(), entered_tx.clone());
                        async move {
                            let tenant = headers["x-tenant"].to_str().unwrap().to_owned();
                            let _in = InFlight::new(&p, &tenant);
                            tx.send(tenant).unwrap();
                            // Closed at the end of the test: then everyone goes on.
                            let _ = g.acquire().await;
                            format!("limit {}", lock.limit())
                        }
                    },
                ),
            )
            .route_layer(
                SemaphoreLayer::new(client, FREE, move |req: &Request<Body>| {
                    let tenant = header(req, "x-tenant")?;
                    let limit = if tenant == is_premium { PREMIUM } else { FREE };
                    Some(Slot::new(tenant, limit))
                })
                // Over the limit: refused at once, so that what runs is exactly the limit.
                .wait(Duration::ZERO),
            );
        let addr = serve(app).await;
        let http = http();

        let mut requests = JoinSet::new();
        for (tenant, n) in [(&premium, PREMIUM + 2), (&free, FREE + 2)] {
            for _ in 0..n {
                let (http, tenant) = (http.clone(), tenant.clone());
                requests.spawn(async move {
                    let reply = send(&http, addr, "GET", "/work", &[("x-tenant", &tenant)]).await;
                    (tenant, reply)
                });
            }
        }
        // Every request either runs (and waits for the gate) or is refused at once.
        let mut refused: Vec<String> = Vec::new();
        while refused.len() < 4 {
            let (tenant, reply) = requests.join_next().await.unwrap().unwrap();
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
            refused.push(tenant);
        }
        for _ in 0..PREMIUM + FREE {
            entered.recv().await.unwrap();
        }
        assert_eq!(probe.in_flight(&premium), PREMIUM as usize);
        assert_eq!(probe.in_flight(&free), FREE as usize);
        let count = |t: &String| refused.iter().filter(|r| *r == t).count();
        assert_eq!((count(&premium), count(&free)), (2, 2), "{refused:?}");

        gate.close();
        while let Some(done) = requests.join_next().await {
            let (tenant, reply) = done.unwrap();
            let limit = if tenant == premium { PREMIUM } else { FREE };
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body, format!("limit {limit}"));
        }
        assert_eq!(probe.max(&premium), PREMIUM as usize);
        assert_eq!(probe.max(&free), FREE as usize);
    })
    .await;
}
