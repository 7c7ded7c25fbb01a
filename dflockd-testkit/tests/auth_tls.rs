//! Authentication, TLS and mutual TLS, for every server version.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Conn, builder, connect, each_version, grant};
use dflockd_testkit::tls::{TestCa, TlsIdentity};
use dflockd_testkit::{ServerVersion, TestServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[tokio::test]
async fn auth_flow() {
    each_version(|v| async move {
        let server = builder(v).auth_token("s3cret").start().await.unwrap();
        let addr = server.addr();

        let mut ok = connect(addr).await;
        assert_eq!(ok.req("auth", "_", "  s3cret \t").await, "ok\n");
        grant(&ok.req("l", "k", "0").await, "ok");
        // A second `auth` is an error; the connection stays.
        assert_eq!(ok.req("auth", "_", "s3cret").await, "error\n");
        assert!(ok.req("stats", "_", "").await.starts_with("ok {"));

        let mut wrong = connect(addr).await;
        let started = Instant::now();
        assert_eq!(wrong.req("auth", "_", "nope").await, "error_auth\n");
        wrong.expect_eof().await;
        assert!(started.elapsed() >= Duration::from_millis(90));

        for (cmd, key, arg) in [("stats", "_", ""), ("l", "k", "0"), ("bogus", "k", "")] {
            let mut first = connect(addr).await;
            assert_eq!(first.req(cmd, key, arg).await, "error_auth\n", "{cmd}");
            first.expect_eof().await;
        }
        // `ping` first is an auth failure too (since v1.14 a known command, but not `auth`).
        let mut ping = connect(addr).await;
        assert_eq!(ping.req("ping", "_", "_").await, "error_auth\n");
        ping.expect_eof().await;
        // An over-long first line is an auth failure too.
        for len in [300, 70_000] {
            let mut long = connect(addr).await;
            long.send(format!("auth\n_\n{}\n", "x".repeat(len)).as_bytes())
                .await;
            assert_eq!(long.line().await, "error_auth\n");
            long.expect_eof().await;
        }
        let mut long_key = connect(addr).await;
        long_key
            .send(format!("auth\n{}\ns3cret\n", "k".repeat(300)).as_bytes())
            .await;
        assert_eq!(long_key.line().await, "error_auth\n");
        long_key.expect_eof().await;
    })
    .await;
}

#[tokio::test]
async fn long_auth_tokens() {
    each_version(|v| async move {
        // The argument of `auth` may be 64 KiB since v1.15 (256 bytes before, like any line).
        for len in [256, 1000, 65536] {
            let secret = "t".repeat(len);
            let server = builder(v).auth_token(secret.clone()).start().await.unwrap();
            let mut c = connect(server.addr()).await;
            let answer = c.req("auth", "_", &secret).await;
            if len <= 256 || v == ServerVersion::V2_1 {
                assert_eq!(answer, "ok\n", "{len}");
                grant(&c.req("l", "k", "0").await, "ok");
            } else {
                assert_eq!(answer, "error_auth\n", "{len}");
                c.expect_eof().await;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn auth_read_timeout_is_an_auth_failure() {
    each_version(|v| async move {
        let server = builder(v)
            .auth_token("s3cret")
            .read_timeout(Duration::from_millis(200))
            .start()
            .await
            .unwrap();
        let mut idle = connect(server.addr()).await;
        assert_eq!(idle.line().await, "error_auth\n");
        idle.expect_eof().await;
    })
    .await;
}

fn client_config(ca: &TestCa, identity: Option<&TlsIdentity>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    Arc::new(config)
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<Conn<TlsStream<TcpStream>>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let stream = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Conn::new(stream))
}

#[tokio::test]
async fn tls() {
    each_version(|v| async move {
        let ca = TestCa::new();
        let identity = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let server = builder(v).tls(identity).start().await.unwrap();
        let config = client_config(&ca, None);
        for name in ["localhost", "127.0.0.1"] {
            let mut c = tls_connect(server.addr(), name, config.clone())
                .await
                .unwrap();
            let (t, _) = grant(&c.req("l", name, "0").await, "ok");
            assert_eq!(c.req("r", name, &t).await, "ok\n");
            // The line rules are the same under TLS.
            c.send(format!("l\n{}\n0\n", "k".repeat(257)).as_bytes())
                .await;
            assert_eq!(c.line().await, "error\n");
        }
        // A name the certificate does not cover is rejected by the client.
        let err = tls_connect(server.addr(), "example.com", config.clone())
            .await
            .err()
            .expect("wrong name accepted");
        assert!(err.to_string().contains("certificate"), "{err}");
        // A CA the client does not trust.
        let other = client_config(&TestCa::new(), None);
        assert!(
            tls_connect(server.addr(), "localhost", other)
                .await
                .is_err()
        );
        // Plain TCP to a TLS server gets nothing useful back.
        let mut plain = connect(server.addr()).await;
        plain.send(b"l\nk\n0\n").await;
        let line = plain.line().await;
        assert!(!line.starts_with("ok"), "{line:?}");
    })
    .await;
}

#[tokio::test]
async fn mutual_tls() {
    each_version(|v| async move {
        let ca = TestCa::new();
        let server = builder(v)
            .tls(ca.issue_server(&["localhost"]).unwrap())
            .tls_client_ca(ca.cert_pem())
            .start()
            .await
            .unwrap();
        let client = ca.issue_client("worker-1").unwrap();
        let mut c = tls_connect(
            server.addr(),
            "localhost",
            client_config(&ca, Some(&client)),
        )
        .await
        .unwrap();
        grant(&c.req("l", "k", "0").await, "ok");

        // Without a client certificate: refused (during or right after the handshake).
        match tls_connect(server.addr(), "localhost", client_config(&ca, None)).await {
            Err(_) => {}
            Ok(mut c) => {
                c.send(b"stats\n_\n\n").await;
                let mut buf = [0u8; 16];
                let read = tokio::io::AsyncReadExt::read(c.get_mut(), &mut buf).await;
                assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
            }
        }
        // A certificate from another CA: refused as well.
        let stranger = TestCa::new();
        let foreign = stranger.issue_client("intruder").unwrap();
        match tls_connect(
            server.addr(),
            "localhost",
            client_config(&ca, Some(&foreign)),
        )
        .await
        {
            Err(_) => {}
            Ok(mut c) => {
                c.send(b"stats\n_\n\n").await;
                let mut buf = [0u8; 16];
                let read = tokio::io::AsyncReadExt::read(c.get_mut(), &mut buf).await;
                assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn bad_tls_settings_are_errors() {
    let ca = TestCa::new();
    let id = ca.issue_server(&["localhost"]).unwrap();
    let err = TestServer::builder()
        .tls(TlsIdentity::from_pem("not pem", id.key_pem.clone()))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, dflockd_testkit::Error::Tls(_)), "{err}");
    let err = TestServer::builder()
        .tls_client_ca(ca.cert_pem())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, dflockd_testkit::Error::Config(_)), "{err}");
    assert!(ca.issue_server(&["ключ"]).is_err());
    assert!(!format!("{id:?}").contains("PRIVATE"));
}
