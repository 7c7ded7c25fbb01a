//! Helpers for the tower layer tests: lock servers, an axum server on a real socket, an HTTP
//! client, and a probe that counts requests in flight.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Every test runs under this bound.
pub const TEST_BOUND: Duration = Duration::from_secs(60);

/// Runs `f` with a time bound.
pub async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .expect("test did not finish in time")
}

/// A client of `addr` with short timeouts.
pub fn lock_client(addr: &str) -> dflockd_core::Client {
    dflockd_core::Client::builder()
        .servers([addr.to_owned()])
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Serves `app` on 127.0.0.1:0; the server task ends with the runtime.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub type Http = HttpClient<HttpConnector, Empty<Bytes>>;

pub fn http() -> Http {
    HttpClient::builder(TokioExecutor::new()).build_http()
}

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends `method path` with `headers` and reads the whole response.
pub async fn send(
    http: &Http,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = http
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("http request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Counts requests in flight, per label, and remembers the maximum.
#[derive(Clone, Default)]
pub struct Probe {
    inner: Arc<Mutex<HashMap<String, (usize, usize)>>>,
}

impl Probe {
    pub fn enter(&self, label: &str) {
        let mut map = self.inner.lock().unwrap();
        let (now, max) = map.entry(label.to_owned()).or_default();
        *now += 1;
        *max = (*max).max(*now);
    }

    pub fn leave(&self, label: &str) {
        let mut map = self.inner.lock().unwrap();
        map.get_mut(label).unwrap().0 -= 1;
    }

    pub fn in_flight(&self, label: &str) -> usize {
        self.inner.lock().unwrap().get(label).map_or(0, |e| e.0)
    }

    pub fn max(&self, label: &str) -> usize {
        self.inner.lock().unwrap().get(label).map_or(0, |e| e.1)
    }
}

/// Leaves the probe on drop (also when the handler's future is dropped).
pub struct InFlight {
    probe: Probe,
    label: String,
}

impl InFlight {
    pub fn new(probe: &Probe, label: &str) -> Self {
        probe.enter(label);
        InFlight {
            probe: probe.clone(),
            label: label.to_owned(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.probe.leave(&self.label);
    }
}
