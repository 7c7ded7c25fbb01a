//! Connection and TLS set-up failures: each one a typed error whose message says what is
//! wrong and what to change. End-to-end against the test server over real sockets, with
//! certificates made here with the defects under test.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use common::{LIMIT, bounded, builder};
use dflockd_core::{Error, TlsEvidence, TlsOptions, TlsProblem};
use dflockd_testkit::TestServer;
use dflockd_testkit::tls::{TestCa, TlsIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// A CA of our own (the testkit's `TestCa` issues only good certificates).
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A CA named `name`.
fn ca_named(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A CA with a name of its own.
fn ca() -> Ca {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ca_named(&format!("test CA {n}"))
}

/// A client certificate issued by `ca`.
fn client_cert(ca: &Ca) -> TlsIdentity {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "worker");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    TlsIdentity::from_pem(cert.pem(), key.serialize_pem())
}

/// A server certificate for `names`, changed by `tweak`, issued by `ca` (self-signed when
/// `None`).
fn server_cert(
    ca: Option<&Ca>,
    names: &[&str],
    tweak: impl FnOnce(&mut CertificateParams),
) -> TlsIdentity {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    tweak(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => params.signed_by(&key, &ca.issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    TlsIdentity::from_pem(cert.pem(), key.serialize_pem())
}

/// What `openssl req -x509 -newkey ec -subj /CN=localhost -addext subjectAltName=...` makes:
/// self-signed, `CA:TRUE`, no key usage extensions.
fn openssl_quick_cert(names: &[&str]) -> TlsIdentity {
    server_cert(None, names, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.extended_key_usages = Vec::new();
    })
}

async fn tls_server(identity: &TlsIdentity) -> TestServer {
    TestServer::builder()
        .tls(identity.clone())
        .start()
        .await
        .unwrap()
}

/// The error of a try-once acquire through a client for `addr` with `tls`.
async fn tls_failure(addr: &str, tls: TlsOptions) -> Error {
    let client = builder(&[addr.to_owned()]).tls(tls).build().unwrap();
    bounded(LIMIT, client.lock("k").try_acquire())
        .await
        .expect_err("the connection should fail")
}

/// Whether a try-once acquire through a client for `addr` with `tls` works.
async fn tls_works(addr: &str, tls: TlsOptions) {
    let client = builder(&[addr.to_owned()]).tls(tls).build().unwrap();
    let guard = bounded(LIMIT, client.lock("k").try_acquire())
        .await
        .unwrap()
        .expect("the key is free");
    guard.release().await.unwrap();
}

fn problem(err: &Error) -> &TlsProblem {
    match err {
        Error::Tls { problem, .. } => problem,
        other => panic!("expected Error::Tls, got {other:?}"),
    }
}

fn prefix(addr: &str, name: &str) -> String {
    format!("cannot connect to {addr} with TLS (server name {name}): ")
}

#[tokio::test]
async fn a_self_signed_ca_true_certificate_given_as_the_ca_or_pinned_works() {
    let cert = openssl_quick_cert(&["localhost", "127.0.0.1"]);
    let server = tls_server(&cert).await;
    let addr = server.addr_string();
    // Given as the CA (what DFLOCKD_TLS_CA_FILE does), as Go's and Python's clients accept.
    tls_works(&addr, TlsOptions::ca_pem(&cert.cert_pem).unwrap()).await;
    // Pinned.
    tls_works(
        &addr,
        TlsOptions::pinned_certificate_pem(&cert.cert_pem).unwrap(),
    )
    .await;
    // By name.
    let by_name = format!("localhost:{}", server.addr().port());
    tls_works(
        &by_name,
        TlsOptions::pinned_certificate_pem(&cert.cert_pem).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_pinned_or_self_signed_certificate_must_still_name_the_server() {
    let cert = openssl_quick_cert(&["localhost"]);
    let server = tls_server(&cert).await;
    let addr = server.addr_string();
    for tls in [
        TlsOptions::ca_pem(&cert.cert_pem).unwrap(),
        TlsOptions::pinned_certificate_pem(&cert.cert_pem).unwrap(),
    ] {
        let err = tls_failure(&addr, tls.clone()).await;
        assert_eq!(
            problem(&err),
            &TlsProblem::NameMismatch {
                presented: vec!["localhost".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            prefix(&addr, "127.0.0.1")
                + "the server's certificate is not valid for this name (it names localhost): \
                   set DFLOCKD_TLS_SERVER_NAME=localhost (TlsOptions::server_name), or reissue \
                   the certificate with this name in its subjectAltName"
        );
        // The fix the message gives.
        tls_works(&addr, tls.server_name("localhost")).await;
    }
}

#[tokio::test]
async fn a_pinned_certificate_is_the_only_one_trusted() {
    let pinned = openssl_quick_cert(&["127.0.0.1"]);
    let other = openssl_quick_cert(&["127.0.0.1"]);
    let server = tls_server(&other).await;
    let addr = server.addr_string();
    let err = tls_failure(
        &addr,
        TlsOptions::pinned_certificate_pem(&pinned.cert_pem).unwrap(),
    )
    .await;
    assert_eq!(problem(&err), &TlsProblem::NotPinned);
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server's certificate is not the pinned one (DFLOCKD_TLS_PINNED_CERT_FILE, \
               TlsOptions::pinned_certificate): if it was replaced on purpose, pin the new one"
    );
    // A certificate issued by a trusted CA is not trusted by a pin either.
    let test_ca = TestCa::new();
    let server = tls_server(&test_ca.issue_server(&["127.0.0.1"]).unwrap()).await;
    let err = tls_failure(
        &server.addr_string(),
        TlsOptions::pinned_certificate_pem(test_ca.cert_pem()).unwrap(),
    )
    .await;
    assert_eq!(problem(&err), &TlsProblem::NotPinned);
}

#[tokio::test]
async fn unknown_issuer() {
    let (trusted, other) = (ca(), ca());
    let server = tls_server(&server_cert(Some(&other), &["127.0.0.1"], |_| {})).await;
    let addr = server.addr_string();
    let err = tls_failure(&addr, TlsOptions::ca_pem(&trusted.pem).unwrap()).await;
    assert_eq!(problem(&err), &TlsProblem::UnknownIssuer);
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server's certificate is not signed by a CA this client trusts: set \
               DFLOCKD_TLS_CA_FILE to the CA certificate that issued it (TlsOptions::ca_file), \
               or, for a self-signed certificate, DFLOCKD_TLS_PINNED_CERT_FILE to the \
               certificate itself (TlsOptions::pinned_certificate)"
    );
    // rustls's error is kept as the source.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.to_string().contains("UnknownIssuer"), "{source}");
    // A self-signed certificate with the system's roots: the same problem.
    let cert = openssl_quick_cert(&["127.0.0.1"]);
    let server = tls_server(&cert).await;
    if let Ok(system) = builder(&[server.addr_string()])
        .tls(TlsOptions::system_roots())
        .build()
    {
        let err = bounded(LIMIT, system.lock("k").try_acquire())
            .await
            .unwrap_err();
        assert!(
            matches!(
                problem(&err),
                TlsProblem::UnknownIssuer | TlsProblem::CaUsedAsEndEntity
            ),
            "{err}"
        );
    }
    tls_works(&addr, TlsOptions::ca_pem(&other.pem).unwrap()).await;
}

/// Mozilla's roots (compiled in) do not include a private CA.
#[cfg(feature = "tls-webpki-roots")]
#[tokio::test]
async fn webpki_roots_trust_public_cas_only() {
    let test_ca = TestCa::new();
    let server = tls_server(&test_ca.issue_server(&["127.0.0.1"]).unwrap()).await;
    let err = tls_failure(&server.addr_string(), TlsOptions::webpki_roots()).await;
    assert_eq!(problem(&err), &TlsProblem::UnknownIssuer);
}

#[tokio::test]
async fn a_regenerated_ca_of_the_same_name_is_an_unknown_issuer() {
    let (old, new) = (ca_named("dev CA"), ca_named("dev CA"));
    let server = tls_server(&server_cert(Some(&new), &["127.0.0.1"], |_| {})).await;
    let err = tls_failure(&server.addr_string(), TlsOptions::ca_pem(&old.pem).unwrap()).await;
    assert_eq!(problem(&err), &TlsProblem::UnknownIssuer);
}

#[tokio::test]
async fn name_mismatch_lists_the_names_of_the_certificate() {
    let ca = ca();
    let server = tls_server(&server_cert(
        Some(&ca),
        &["db.internal", "10.1.2.3"],
        |_| {},
    ))
    .await;
    let addr = server.addr_string();
    let err = tls_failure(&addr, TlsOptions::ca_pem(&ca.pem).unwrap()).await;
    assert_eq!(
        problem(&err),
        &TlsProblem::NameMismatch {
            presented: vec!["db.internal".into(), "10.1.2.3".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server's certificate is not valid for this name (it names db.internal, \
               10.1.2.3): set DFLOCKD_TLS_SERVER_NAME to one of those \
               (TlsOptions::server_name), or reissue the certificate with this name in its \
               subjectAltName"
    );
    // A certificate with a common name only: no name at all for TLS.
    let server = tls_server(&server_cert(Some(&ca), &[], |_| {})).await;
    let addr = server.addr_string();
    let err = tls_failure(&addr, TlsOptions::ca_pem(&ca.pem).unwrap()).await;
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server's certificate names no host (it has no subjectAltName, and the \
               common name is not used): reissue it with the server's names in its \
               subjectAltName (openssl: -addext subjectAltName=DNS:host,IP:10.0.0.1)"
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid() {
    let ca = ca();
    let expired = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    };
    let early = |p: &mut CertificateParams| {
        p.not_before = rcgen::date_time_ymd(4000, 1, 1);
        p.not_after = rcgen::date_time_ymd(4001, 1, 1);
    };
    let at = |y| {
        let days = match y {
            2021 => 18_628,
            4000 => 741_442,
            _ => unreachable!(),
        };
        SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400)
    };
    // Issued by a trusted CA, and self-signed and pinned: checked the same way.
    let issued = server_cert(Some(&ca), &["127.0.0.1"], expired);
    let pinned = server_cert(None, &["127.0.0.1"], expired);
    for (cert, tls) in [
        (&issued, TlsOptions::ca_pem(&ca.pem).unwrap()),
        (
            &pinned,
            TlsOptions::pinned_certificate_pem(&pinned.cert_pem).unwrap(),
        ),
    ] {
        let server = tls_server(cert).await;
        let addr = server.addr_string();
        let err = tls_failure(&addr, tls).await;
        assert_eq!(
            problem(&err),
            &TlsProblem::Expired {
                not_after: Some(at(2021))
            }
        );
        assert_eq!(
            err.to_string(),
            prefix(&addr, "127.0.0.1")
                + "the server's certificate has expired (on 2021-01-01 00:00:00 UTC): renew it \
                   on the server, or correct this machine's clock if it is wrong"
        );
    }
    let issued = server_cert(Some(&ca), &["127.0.0.1"], early);
    let pinned = server_cert(None, &["127.0.0.1"], early);
    for (cert, tls) in [
        (&issued, TlsOptions::ca_pem(&ca.pem).unwrap()),
        (
            &pinned,
            TlsOptions::pinned_certificate_pem(&pinned.cert_pem).unwrap(),
        ),
    ] {
        let server = tls_server(cert).await;
        let addr = server.addr_string();
        let err = tls_failure(&addr, tls).await;
        assert_eq!(
            problem(&err),
            &TlsProblem::NotYetValid {
                not_before: Some(at(4000))
            }
        );
        assert_eq!(
            err.to_string(),
            prefix(&addr, "127.0.0.1")
                + "the server's certificate is not valid yet (from 4000-01-01 00:00:00 UTC): \
                   check the clocks of this machine and of the one that issued it"
        );
    }
}

#[tokio::test]
async fn a_ca_certificate_used_as_the_servers_own() {
    let ca = ca();
    // CA:TRUE, issued by the trusted CA (not the CA itself, which would be trusted as is).
    let cert = server_cert(Some(&ca), &["127.0.0.1"], |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    });
    let server = tls_server(&cert).await;
    let addr = server.addr_string();
    let err = tls_failure(&addr, TlsOptions::ca_pem(&ca.pem).unwrap()).await;
    assert_eq!(problem(&err), &TlsProblem::CaUsedAsEndEntity);
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server presents a CA certificate (CA:TRUE, as openssl req -x509 makes) as \
               its own: trust exactly that certificate with DFLOCKD_TLS_PINNED_CERT_FILE \
               (TlsOptions::pinned_certificate), or give the server a certificate without \
               CA:TRUE issued by the CA of DFLOCKD_TLS_CA_FILE"
    );
    // The fix the message gives.
    tls_works(
        &addr,
        TlsOptions::pinned_certificate_pem(&cert.cert_pem).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_certificate_not_meant_for_servers() {
    let ca = ca();
    let cert = server_cert(Some(&ca), &["127.0.0.1"], |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let server = tls_server(&cert).await;
    let addr = server.addr_string();
    let err = tls_failure(&addr, TlsOptions::ca_pem(&ca.pem).unwrap()).await;
    assert_eq!(problem(&err), &TlsProblem::WrongKeyUsage);
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server's certificate is not meant for TLS servers (its extended key usage \
               lacks serverAuth): reissue it with extendedKeyUsage=serverAuth, or without that \
               extension"
    );
}

#[tokio::test]
async fn a_client_certificate_the_server_wants() {
    let test_ca = TestCa::new();
    let server = TestServer::builder()
        .tls(test_ca.issue_server(&["127.0.0.1"]).unwrap())
        .tls_client_ca(test_ca.cert_pem())
        .start()
        .await
        .unwrap();
    let addr = server.addr_string();
    let tls = TlsOptions::ca_pem(test_ca.cert_pem()).unwrap();
    let expected = prefix(&addr, "127.0.0.1")
        + "the server refused this client's certificate, or requires one: set \
           DFLOCKD_TLS_CLIENT_CERT_FILE and DFLOCKD_TLS_CLIENT_KEY_FILE \
           (TlsOptions::client_auth_files) to a certificate the server trusts";
    // Noticed on the first request, or while authenticating (TLS 1.3 sends the refusal after
    // the handshake).
    for token in [None, Some("s3cret")] {
        let mut b = builder(std::slice::from_ref(&addr)).tls(tls.clone());
        if let Some(token) = token {
            b = b.auth_token(token);
        }
        let client = b.build().unwrap();
        let err = bounded(LIMIT, client.lock("k").try_acquire())
            .await
            .unwrap_err();
        assert_eq!(problem(&err), &TlsProblem::ClientCertificateRejected);
        assert_eq!(err.to_string(), expected);
    }
    let stranger = client_cert(&ca());
    let err = tls_failure(
        &addr,
        tls.clone()
            .client_auth_pem(&stranger.cert_pem, &stranger.key_pem)
            .unwrap(),
    )
    .await;
    assert_eq!(problem(&err), &TlsProblem::ClientCertificateRejected);
    let mine = test_ca.issue_client("worker").unwrap();
    tls_works(
        &addr,
        tls.client_auth_pem(&mine.cert_pem, &mine.key_pem).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_tls_client_and_a_plaintext_server() {
    // The server answers `error` to the handshake's bytes: at once when they hold three
    // line breaks, or when its read timeout ends.
    let server = TestServer::builder()
        .read_timeout(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let addr = server.addr_string();
    let tls = TlsOptions::ca_pem(TestCa::new().cert_pem()).unwrap();
    let err = tls_failure(&addr, tls.clone()).await;
    assert_eq!(
        problem(&err),
        &TlsProblem::NotTls {
            answered: "error".into()
        }
    );
    assert_eq!(
        err.to_string(),
        prefix(&addr, "127.0.0.1")
            + "the server does not speak TLS (it answered \"error\"): connect without TLS \
               (unset DFLOCKD_TLS, DFLOCKD_TLS_CA_FILE and DFLOCKD_TLS_PINNED_CERT_FILE; no \
               ClientBuilder::tls), or start the server with --tls-cert and --tls-key"
    );
    assert!(!err.is_retryable());

    // A server that says nothing back within the connect timeout.
    let (silent, _) = listen(Then::Wait).await;
    let client = builder(&[silent.to_string()])
        .tls(tls)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = bounded(LIMIT, client.lock("k").try_acquire())
        .await
        .unwrap_err();
    assert_eq!(
        problem(&err),
        &TlsProblem::NoAnswer {
            waited: Duration::from_millis(300)
        }
    );
    assert_eq!(
        err.to_string(),
        prefix(&silent.to_string(), "127.0.0.1")
            + "the server sent nothing back to the TLS handshake within 300ms, as a server \
               without TLS does: if it has no TLS, connect without TLS (unset DFLOCKD_TLS, \
               DFLOCKD_TLS_CA_FILE and DFLOCKD_TLS_PINNED_CERT_FILE; no ClientBuilder::tls); \
               otherwise it is overloaded or the address is wrong"
    );
    assert!(err.is_retryable());
}

const TLS_REQUIRED: &str = "serves TLS and this client connected without it: set DFLOCKD_TLS=1, \
    with DFLOCKD_TLS_CA_FILE or DFLOCKD_TLS_PINNED_CERT_FILE unless the system trusts its \
    certificate (ClientBuilder::tls)";

#[tokio::test]
async fn a_plaintext_client_and_a_tls_server() {
    let test_ca = TestCa::new();
    let server = tls_server(&test_ca.issue_server(&["127.0.0.1"]).unwrap()).await;
    let addr = server.addr_string();
    // The test server answers the plaintext request with a TLS alert; noticed on the first
    // request, or while authenticating.
    for token in [None, Some("s3cret")] {
        let mut b = builder(std::slice::from_ref(&addr));
        if let Some(token) = token {
            b = b.auth_token(token);
        }
        let client = b.build().unwrap();
        let err = bounded(LIMIT, client.lock("k").try_acquire())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TlsRequired {
                    evidence: TlsEvidence::AnsweredTls,
                    ..
                }
            ),
            "{token:?}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("server {addr} {TLS_REQUIRED}"));
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn a_plaintext_client_and_a_server_that_closes_without_a_word() {
    // The dflockd server (Go) closes a connection whose first bytes are not TLS without
    // sending anything.
    let (addr, _) = listen(Then::Close).await;
    let addr = addr.to_string();
    let expected = format!(
        "server {addr} closed the connection before its first answer, as a server with TLS \
         does to a client without: if it serves TLS, set DFLOCKD_TLS=1, with \
         DFLOCKD_TLS_CA_FILE or DFLOCKD_TLS_PINNED_CERT_FILE unless the system trusts its \
         certificate (ClientBuilder::tls); otherwise it may be at its connection cap \
         (--max-connections), or a proxy in front of it could not reach it"
    );
    for token in [None, Some("s3cret")] {
        let mut b = builder(std::slice::from_ref(&addr));
        if let Some(token) = token {
            b = b.auth_token(token);
        }
        let client = b.build().unwrap();
        let err = bounded(LIMIT, client.lock("k").try_acquire())
            .await
            .unwrap_err();
        assert!(closed_silently(&err), "{token:?}: {err:?}");
        assert_eq!(err.to_string(), expected);
    }
}

#[tokio::test]
async fn a_silent_close_from_a_server_that_answered_in_plaintext_before_is_no_tls_evidence() {
    // A server that answers the first connection in plaintext, then closes every connection
    // without a word (as a proxy does whose server went down, or a TLS server does to a
    // plaintext client). The client it answered before is told the connection closed, not
    // that the server wants TLS, whether the close comes before the auth answer or after; a
    // client meeting it for the first time gets the TLS hint.
    for token in [None, Some("s3cret")] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = std::mem::take(&mut first);
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = socket.read(&mut buf).await {
                        if !answer {
                            return;
                        }
                        let said = if buf[..n].starts_with(b"auth") {
                            "ok\n"
                        } else {
                            "timeout\n"
                        };
                        let _ = socket.write_all(said.as_bytes()).await;
                        if said == "timeout\n" {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                    }
                });
            }
        });
        let build = || {
            let mut b = builder(std::slice::from_ref(&addr));
            if let Some(token) = token {
                b = b.auth_token(token);
            }
            b.build().unwrap()
        };
        let client = build();
        assert!(client.lock("k").try_acquire().await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..3 {
            let err = bounded(LIMIT, client.lock("k").try_acquire())
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::ConnectionClosed { .. } | Error::Connect { .. }),
                "{token:?}: {err:?}"
            );
            assert!(err.is_retryable());
        }
        let err = bounded(LIMIT, build().lock("k").try_acquire())
            .await
            .unwrap_err();
        assert!(closed_silently(&err), "{token:?}: {err:?}");
    }
}

#[tokio::test]
async fn a_client_without_the_token_the_server_requires() {
    let server = TestServer::builder()
        .auth_token("s3cret")
        .start()
        .await
        .unwrap();
    let addr = server.addr_string();
    let client = builder(std::slice::from_ref(&addr)).build().unwrap();
    let err = bounded(LIMIT, client.lock("k").try_acquire())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthRequired { .. }), "{err:?}");
    assert!(err.is_permission_denied());
    assert_eq!(
        err.to_string(),
        format!(
            "server {addr} requires an auth token and this client has none (error_auth): set \
             DFLOCKD_AUTH_TOKEN or DFLOCKD_AUTH_TOKEN_FILE (ClientBuilder::auth_token)"
        )
    );
    let wrong = builder(std::slice::from_ref(&addr))
        .auth_token("nope")
        .build()
        .unwrap();
    let err = bounded(LIMIT, wrong.lock("k").try_acquire())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "server {addr} rejected the auth token (error_auth): check DFLOCKD_AUTH_TOKEN or \
             DFLOCKD_AUTH_TOKEN_FILE (ClientBuilder::auth_token) against the server's \
             --auth-token"
        )
    );
}

/// What [`listen`]'s server does once it has read something.
#[derive(Clone, Copy)]
enum Then {
    /// Close the connection without a byte.
    Close,
    /// Keep it open, saying nothing.
    Wait,
}

/// A server that reads what comes and answers nothing; returns its address and the number of
/// connections it accepted.
async fn listen(then: Then) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match then {
                    Then::Close => drop(socket),
                    Then::Wait => while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {},
                }
            });
        }
    });
    (addr, accepted)
}

/// Whether `err` says the server closed a plaintext connection without a word, taken for TLS.
fn closed_silently(err: &Error) -> bool {
    matches!(
        err,
        Error::TlsRequired {
            evidence: TlsEvidence::ClosedSilently,
            ..
        }
    )
}
