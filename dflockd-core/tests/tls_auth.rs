//! Auth and TLS.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use std::time::Duration;

use common::builder;
use dflockd_core::Error;
use dflockd_testkit::TestServer;

#[tokio::test]
async fn auth_right_wrong_and_missing() {
    let server = TestServer::builder()
        .auth_token("s3cret")
        .start()
        .await
        .unwrap();
    let addrs = [server.addr().to_string()];
    let right = builder(&addrs).auth_token("s3cret").build().unwrap();
    right
        .lock("k")
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let wrong = builder(&addrs).auth_token("nope").build().unwrap();
    let err = wrong.lock("k").acquire().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
    assert!(!format!("{err:?}").contains("nope"));
    let missing = builder(&addrs).build().unwrap();
    let err = missing.lock("k").acquire().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
}

#[tokio::test]
async fn tls_with_a_test_ca_and_a_wrong_name() {
    let ca = dflockd_testkit::tls::TestCa::new();
    let identity = ca.issue_server(&["localhost"]).unwrap();
    let server = TestServer::builder().tls(identity).start().await.unwrap();
    let addr = format!("localhost:{}", server.addr().port());
    let tls = dflockd_core::TlsOptions::ca_pem(ca.cert_pem()).unwrap();
    let client = builder(std::slice::from_ref(&addr))
        .tls(tls.clone())
        .build()
        .unwrap();
    let guard = client.lock("tls").acquire().await.unwrap();
    guard.release().await.unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.len(), 1);

    let wrong = builder(std::slice::from_ref(&addr))
        .tls(tls.server_name("other.example"))
        .build()
        .unwrap();
    let err = wrong.lock("tls").acquire().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tls {
                problem: dflockd_core::TlsProblem::NameMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // A plain client cannot talk to the TLS server.
    let plain = builder(&[addr])
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = plain.lock("tls").acquire().await.unwrap_err();
    assert!(matches!(err, Error::TlsRequired { .. }), "{err:?}");
}
