//! The tower layers in a tonic server, end to end: tonic-health's service behind the layer,
//! called with its generated client over a real socket.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use dflockd_testkit::{TestServer, TestServers, unique_key};
use dflockd_tower::{GrpcCode, KeyExtractor, LockLayer, OnMissingKey, header};
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;
use util::{bounded, lock_client};

type GrpcRequest = http::Request<tonic::body::Body>;

/// The lock key comes from the `x-lock-key` metadata entry.
fn by_metadata() -> impl KeyExtractor<GrpcRequest> + Clone + Send + Sync + 'static {
    |req: &GrpcRequest| header(req, "x-lock-key")
}

async fn serve_grpc<K>(layer: LockLayer<K>) -> (SocketAddr, HealthReporter)
where
    K: KeyExtractor<GrpcRequest> + Send + Sync + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("orders", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, reporter)
}

fn check_request(key: &str) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: "orders".into(),
    });
    req.metadata_mut()
        .insert("x-lock-key", key.parse().unwrap());
    req
}

async fn grpc_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn check(addr: SocketAddr, key: &str) -> Result<HealthCheckResponse, tonic::Status> {
    let mut client = grpc_client(addr).await;
    client
        .check(check_request(key))
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_gives_the_configured_status() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let layer = |code: Option<GrpcCode>| {
            let layer = LockLayer::new(lock_client(&lock_addr), by_metadata())
                .grpc()
                .wait(Duration::ZERO);
            match code {
                Some(code) => layer.grpc_busy_code(code),
                None => layer,
            }
        };
        let (default_addr, _r1) = serve_grpc(layer(None)).await;
        let (unavailable_addr, _r2) = serve_grpc(layer(Some(GrpcCode::Unavailable))).await;

        let key = unique_key("grpc");
        let ok = check(default_addr, &key).await.unwrap();
        assert_eq!(ok.status, PbStatus::Serving as i32);

        let holder = lock_client(&lock_addr).lock(&key).acquire().await.unwrap();
        let busy = check(default_addr, &key).await.unwrap_err();
        assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
        assert!(busy.message().contains("busy"), "{busy:?}");
        let busy = check(unavailable_addr, &key).await.unwrap_err();
        assert_eq!(busy.code(), Code::Unavailable, "{busy:?}");
        // Other keys are not affected.
        check(default_addr, &unique_key("grpc")).await.unwrap();

        holder.release().await.unwrap();
        let ok = check(default_addr, &key).await.unwrap();
        assert_eq!(ok.status, PbStatus::Serving as i32);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_server_down_gives_unavailable() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let lock_addr = server.addr_string();
        server.kill();
        let layer = LockLayer::new(lock_client(&lock_addr), by_metadata()).grpc();
        let (addr, _reporter) = serve_grpc(layer).await;
        let started = std::time::Instant::now();
        let status = check(addr, &unique_key("grpc")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_loss_ends_a_held_stream_with_unavailable() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let layer = LockLayer::new(lock_client(&server.addr_string()), by_metadata())
            .grpc()
            .hold_for_body(true);
        let (addr, _reporter) = serve_grpc(layer).await;
        let key = unique_key("grpc");
        let mut client = grpc_client(addr).await;
        let mut stream = client
            .watch(check_request(&key))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.status, PbStatus::Serving as i32);

        // While the stream is open the lock is held.
        let other = lock_client(&server.addr_string());
        assert!(other.lock(&key).try_acquire().await.unwrap().is_none());

        server.kill();
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("lost"), "{status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_without_a_key_is_internal_unless_passing_through_is_chosen() {
    bounded(async {
        let servers = TestServers::default_config(1).await.unwrap();
        let lock_addr = servers.addrs()[0].clone();
        let layer = || LockLayer::new(lock_client(&lock_addr), by_metadata()).grpc();
        let (strict, _r1) = serve_grpc(layer().name("by x-lock-key")).await;
        let (lenient, _r2) = serve_grpc(layer().on_missing_key(OnMissingKey::PassThrough)).await;
        let without_key = || {
            tonic::Request::new(HealthCheckRequest {
                service: "orders".into(),
            })
        };
        let status = grpc_client(strict)
            .await
            .check(without_key())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(status.message().contains("by x-lock-key"), "{status:?}");
        grpc_client(lenient)
            .await
            .check(without_key())
            .await
            .unwrap();
    })
    .await;
}
