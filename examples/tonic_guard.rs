//! A keyed lock in front of a tonic server: one call per account at a time, across every
//! replica. The key comes from the `x-account` metadata; a busy account is refused at once
//! with `RESOURCE_EXHAUSTED`, a lock server that cannot be reached gives `UNAVAILABLE`.
//! The service is tonic-health's, so that nothing needs `protoc`.
//!
//! ```text
//! cargo run --example tonic_guard              # serves grpc on 127.0.0.1:50051
//! cargo run --example tonic_guard -- --quick   # drives itself with a few calls, exits
//! ```
//!
//! The lock server comes from `DFLOCKD_SERVERS` (and the other `DFLOCKD_*` variables); when it
//! is unset, an embedded test server is started. `DFLOCKD_QUICK=1` is the same as `--quick`.

#[path = "common/mod.rs"]
pub(crate) mod common;

use std::net::SocketAddr;
use std::time::Duration;

use dflockd::tower::{LockLayer, OnMissingKey, header};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use common::BoxError;
type GrpcRequest = http::Request<tonic::body::Body>;

/// The lock layer: `account:{x-account}`; calls without the metadata (health checkers) run
/// unguarded, by explicit choice.
pub(crate) fn layer(
    client: dflockd::Client,
) -> LockLayer<impl Fn(&GrpcRequest) -> Option<String> + Clone + Send + Sync + 'static> {
    LockLayer::new(client, |req: &GrpcRequest| {
        header(req, "x-account").map(|account| format!("account:{account}"))
    })
    .grpc()
    .on_missing_key(OnMissingKey::PassThrough)
    .wait(Duration::ZERO)
    .lease_ttl(Duration::from_secs(30))
}

/// Serves the health service behind the layer on `listener`.
pub(crate) async fn serve(
    client: dflockd::Client,
    listener: tokio::net::TcpListener,
) -> Result<(), BoxError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("accounts", ServingStatus::Serving)
        .await;
    Server::builder()
        .layer(layer(client))
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}

/// A health check for `account`: `Ok` or the gRPC code the server answered.
pub(crate) async fn check(
    addr: SocketAddr,
    account: &str,
) -> Result<Result<(), tonic::Code>, BoxError> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: "accounts".into(),
    });
    req.metadata_mut().insert("x-account", account.parse()?);
    Ok(HealthClient::new(channel)
        .check(req)
        .await
        .map(|_| ())
        .map_err(|status| status.code()))
}

/// What the quick run saw.
#[derive(Debug)]
pub(crate) struct QuickReport {
    /// `acme` while another replica holds its lock.
    pub(crate) busy: Result<(), tonic::Code>,
    /// `globex` meanwhile.
    pub(crate) other: Result<(), tonic::Code>,
    /// `acme` once the lock is released.
    pub(crate) after: Result<(), tonic::Code>,
}

/// Serves on a free port; holds `account:acme` as another replica would, and calls.
pub(crate) async fn quick(client: dflockd::Client) -> Result<QuickReport, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(client.clone(), listener));

    let other_replica = client.lock("account:acme").acquire().await?;
    let busy = check(addr, "acme").await?;
    let other = check(addr, "globex").await?;
    other_replica.release().await?;
    let after = check(addr, "acme").await?;
    Ok(QuickReport { busy, other, after })
}

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    common::log_to_stderr();
    let (client, _servers) = common::client()?;
    if common::quick() {
        let report = quick(client).await?;
        println!("acme while held elsewhere: {:?}", report.busy);
        println!("globex meanwhile:          {:?}", report.other);
        println!("acme after the release:    {:?}", report.after);
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    eprintln!("serving grpc.health.v1.Health on 127.0.0.1:50051 (metadata x-account: <id>)");
    Ok(serve(client, listener).await?)
}
