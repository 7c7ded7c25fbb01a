//! Health and fail-fast: `Client::check` reports every server, `ClientBuilder::connect`
//! refuses an unreachable server, a wrong token and a TLS name mismatch with distinct typed
//! errors within the connect timeout, and `Client::status` counts each pool's connections.

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, bounded, builder};
use dflockd_core::{Error, TlsOptions, TlsProblem};
use dflockd_testkit::tls::TlsIdentity;
use dflockd_testkit::{TestServer, unique_key};

/// An address where nothing listens (bound, then closed).
async fn refused_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn check_reports_every_server_up_or_down_with_its_reason() {
    bounded(LIMIT, async {
        let server = TestServer::start().await.unwrap();
        let down = refused_addr().await;
        let client = builder(&[server.addr_string(), down.clone()])
            .build()
            .unwrap();
        let health = client.check().await;
        assert!(!health.is_healthy());
        let [up, gone] = health.servers() else {
            panic!("two servers: {health:?}")
        };
        assert_eq!(up.server(), server.addr_string());
        assert!(up.is_up() && up.latency().is_some() && up.error().is_none());
        assert_eq!(gone.server(), down);
        assert!(
            matches!(gone.error(), Some(Error::Connect { .. })),
            "{gone:?}"
        );
        assert_eq!(health.down().count(), 1);
        let text = health.to_string();
        assert!(
            text.starts_with(&format!("{} up (", server.addr_string())),
            "{text}"
        );
        assert!(
            text.contains(&format!("{down} down: cannot connect to {down}: ")),
            "{text}"
        );
        assert!(matches!(
            health.into_result(),
            Err(Error::Connect { server, .. }) if server == down
        ));

        let healthy = builder(&[server.addr_string()])
            .build()
            .unwrap()
            .check()
            .await;
        assert!(healthy.is_healthy(), "{healthy}");
        healthy.into_result().unwrap();
    })
    .await;
}

#[tokio::test]
async fn connect_fails_fast_with_a_distinct_error_for_each_cause() {
    bounded(LIMIT, async {
        let timed = |builder: dflockd_core::ClientBuilder| async move {
            let started = Instant::now();
            let result = builder.connect_timeout(CONNECT_TIMEOUT).connect().await;
            let took = started.elapsed();
            assert!(took < CONNECT_TIMEOUT, "took {took:?}");
            result
        };

        // Unreachable.
        let down = refused_addr().await;
        let err = timed(builder(std::slice::from_ref(&down)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Connect { server, .. } if *server == down),
            "{err:?}"
        );

        // A wrong token.
        let guarded = TestServer::builder()
            .auth_token("right-token")
            .start()
            .await
            .unwrap();
        let err = timed(builder(&[guarded.addr_string()]).auth_token("wrong-token"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
        let err = timed(builder(&[guarded.addr_string()])).await.unwrap_err();
        assert!(matches!(err, Error::AuthRequired { .. }), "{err:?}");

        // A certificate for another name.
        let cert = TlsIdentity::self_signed(&["localhost"]).unwrap();
        let tls = TestServer::builder()
            .tls(cert.clone())
            .start()
            .await
            .unwrap();
        let err = timed(
            builder(&[tls.addr_string()])
                .tls(TlsOptions::pinned_certificate_pem(&cert.cert_pem).unwrap()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Tls {
                    problem: TlsProblem::NameMismatch { .. },
                    ..
                }
            ),
            "{err:?}"
        );

        // And when everything is right: connected, the connections kept in the pool.
        let client = timed(builder(&[guarded.addr_string()]).auth_token("right-token"))
            .await
            .unwrap();
        assert_eq!(client.open_connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_server_that_stops_answering_fails_the_check_within_its_timeouts() {
    bounded(LIMIT, async {
        let server = TestServer::start().await.unwrap();
        let proxy = common::proxy::Proxy::start(server.addr()).await;
        let client = builder(&[proxy.addr.to_string()])
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        assert!(client.check().await.is_healthy());
        proxy.blackhole(true);
        let started = Instant::now();
        let health = client.check().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(!health.is_healthy(), "{health}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_holding_parked_and_idle_connections() {
    bounded(LIMIT, async {
        let server = TestServer::start().await.unwrap();
        let client = builder(&[server.addr_string()]).build().unwrap();
        let [empty] = &client.status()[..] else {
            panic!("one server")
        };
        assert_eq!((empty.open, empty.in_use(), empty.opening), (0, 0, 0));
        assert_eq!(empty.server, server.addr_string());

        let key = unique_key("status");
        let held = client.lock(&key).acquire().await.unwrap();
        // A waiter queued behind it: its own parked connection.
        let waiter = {
            let client = client.clone();
            let key = key.clone();
            tokio::spawn(async move { client.lock(&key).acquire().await })
        };
        common::wait_stats(&client, &key, |s| {
            s.locks.iter().any(|l| l.key == key && l.waiters == 1)
        })
        .await;
        let status = &client.status()[0];
        assert_eq!(status.parked, 1, "{status:?}");
        assert!(status.holding >= 1, "{status:?}");
        assert_eq!(
            status.in_use(),
            status.parked + status.holding + status.busy
        );
        assert!(status.in_flight >= 1, "the waiter's request: {status:?}");

        held.release().await.unwrap();
        let second = waiter.await.unwrap().unwrap();
        second.release().await.unwrap();
        let status = &client.status()[0];
        assert_eq!((status.parked, status.holding), (0, 0), "{status:?}");
        assert_eq!(status.idle, status.open, "{status:?}");
        assert_eq!(status.max, 512);
    })
    .await;
}

/// The events logged while `f` runs, as text.
fn logged(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buffer = buffer.clone();
        move || Capture(buffer.clone())
    };
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // Callsites first reached by another test's thread while this subscriber was being
        // installed would keep a cached "not wanted": recompute with this one present.
        tracing::callsite::rebuild_interest_cache();
        f()
    });
    String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
}

#[test]
fn building_a_client_names_its_servers_and_where_they_came_from() {
    let text = logged(|| {
        dflockd_core::Client::builder()
            .servers(["10.0.0.7:6388"])
            .build()
            .unwrap();
    });
    assert!(text.contains("INFO"), "{text}");
    assert!(text.contains("dflockd client built"), "{text}");
    assert!(
        text.contains("servers=10.0.0.7:6388 source=\"builder\""),
        "{text}"
    );

    let text = logged(|| {
        dflockd_core::Client::builder().build().unwrap();
    });
    assert!(
        text.contains("servers=127.0.0.1:6388 source=\"default\""),
        "{text}"
    );
}

#[test]
fn an_environment_without_servers_is_a_warning_at_build() {
    // A child process: the environment cannot be changed safely in a threaded test binary.
    const CHILD: &str = "DFLOCKD_HEALTH_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let text = logged(|| {
            dflockd_core::Client::from_env().unwrap();
        });
        assert!(text.contains("WARN"), "{text}");
        assert!(
            text.contains("DFLOCKD_SERVERS is not set: the client uses the default server address"),
            "{text}"
        );
        assert!(text.contains("servers=127.0.0.1:6388"), "{text}");
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "an_environment_without_servers_is_a_warning_at_build",
            "--exact",
            "--test-threads=1",
        ])
        .env(CHILD, "1");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("DFLOCKD_") {
            child.env_remove(var);
        }
    }
    let output = child.env(CHILD, "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
