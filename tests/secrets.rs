//! Secrets: the auth token and whole lock tokens never appear in `Debug`, `Display`, error
//! messages or tracing output (captured at TRACE while acquiring, renewing, releasing, losing
//! leases and failing auth), and TLS certificate verification cannot be turned off by any
//! setting.
//!
//! One test in its own binary: it installs the global tracing subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dflockd::{Client, Error, LossReason};
use dflockd_testkit::{ChaosProxy, TestServer, unique_key};

const SECRET: &str = "hunter2-Sup3r-Secret";
const WRONG: &str = "wr0ng-Secret-Guess";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every run of 32 or more lowercase hex characters: a whole token.
fn whole_tokens(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || ('a'..='f').contains(&c) {
            run.push(c);
        } else {
            if run.len() >= 32 {
                found.push(run.clone());
            }
            run.clear();
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leak() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        // Every event of the client crates, at TRACE (rustls's own handshake traces and the
        // test server's are not the client's output).
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "dflockd=trace,dflockd_core=trace,dflockd_tower=trace",
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let server = TestServer::builder()
        .auth_token(SECRET)
        .lease_sweep_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let proxy = ChaosProxy::start(server.addr()).unwrap();
    let builder = || {
        Client::builder()
            .servers([proxy.addr_string()])
            .auth_token(SECRET)
            .request_timeout(Duration::from_secs(1))
            .release_timeout(Duration::from_millis(500))
    };
    // What the program could print: Debug and Display of everything it holds.
    let mut shown = Vec::new();
    let mut tokens = Vec::new();
    shown.push(format!("{:?}", builder()));
    let client = builder().build().unwrap();
    shown.push(format!("{client:?}"));

    // Acquire, renew, release; a semaphore; a two-phase acquisition.
    let guard = client
        .lock(unique_key("secret"))
        .lease_ttl(Duration::from_secs(2))
        .acquire()
        .await
        .unwrap();
    tokens.push(guard.token().as_str().to_owned());
    shown.push(format!("{guard:?} {} {:?}", guard.token(), guard.token()));
    guard.renew().await.unwrap();
    guard.release().await.unwrap();
    let sem = client
        .semaphore(unique_key("secret"), 2)
        .acquire()
        .await
        .unwrap();
    tokens.push(sem.token().as_str().to_owned());
    let enqueued = client.lock(unique_key("secret")).enqueue().await.unwrap();
    shown.push(format!("{enqueued:?}"));
    let two_phase = enqueued.wait(Duration::from_secs(1)).await.unwrap();
    tokens.push(two_phase.token().as_str().to_owned());
    drop(two_phase);

    // Loss by deadline (blackhole) and by reset, with their errors.
    let lost = client
        .lock(unique_key("secret"))
        .lease_ttl(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    tokens.push(lost.token().as_str().to_owned());
    proxy.set_blackhole(true);
    assert_eq!(lost.lost().await, LossReason::DeadlineExceeded);
    proxy.heal();
    proxy.reset();
    let err = lost.release().await.unwrap_err();
    shown.push(format!("{err} {err:?}"));
    assert_eq!(sem.lost().await, LossReason::ConnectionLost);
    let err = sem.renew().await.unwrap_err();
    shown.push(format!("{err} {err:?}"));
    // A lease left to run out. (Right after the reset, a pooled connection may not have
    // seen it yet: that attempt fails with a retryable error.)
    let mut attempts = 0;
    let expiring = loop {
        let lock = client
            .lock(unique_key("secret"))
            .lease_ttl(Duration::from_secs(1));
        match lock.acquire().await {
            Ok(guard) => break guard,
            Err(e) if e.is_retryable() && attempts < 5 => {
                shown.push(format!("{e} {e:?}"));
                attempts += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    tokens.push(expiring.token().as_str().to_owned());
    shown.push(format!("{:?}", expiring.watch()));
    drop(expiring);

    // Auth failures: a wrong secret, no secret, a secret that cannot be sent.
    let wrong = Client::builder()
        .servers([proxy.addr_string()])
        .auth_token(WRONG)
        .build()
        .unwrap();
    shown.push(format!("{wrong:?}"));
    let err = wrong.lock("k").acquire().await.unwrap_err();
    assert!(err.is_permission_denied(), "{err:?}");
    shown.push(format!(
        "{err} {err:?} {:?}",
        std::error::Error::source(&err)
    ));
    let io: std::io::Error = err.into();
    shown.push(format!("{io} {io:?}"));
    let missing = Client::builder()
        .servers([proxy.addr_string()])
        .build()
        .unwrap();
    let err = missing.stats().await.unwrap_err();
    shown.push(format!("{err} {err:?}"));
    let bad = format!("{SECRET}\nl");
    match Client::builder().auth_token(bad).build() {
        Err(e @ Error::Config(_)) => shown.push(format!("{e} {e:?}")),
        other => panic!("a secret with a line break must be refused: {other:?}"),
    }
    drop((client, wrong, missing));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let client_logs = logs;
    // The capture works and sees the client's events (with short token prefixes).
    assert!(client_logs.contains("dflockd_core"), "nothing captured");
    assert!(
        client_logs.contains(&tokens[0][..8]),
        "token prefixes are logged"
    );
    let everything = format!("{client_logs}\n{}", shown.join("\n"));
    for needle in [SECRET, WRONG] {
        assert!(!everything.contains(needle), "the auth token leaked");
    }
    for token in &tokens {
        assert!(!everything.contains(token.as_str()), "a whole token leaked");
    }
    let leaked = whole_tokens(&everything);
    assert!(leaked.is_empty(), "token-like text leaked: {leaked:?}");
    println!(
        "checked {} log lines and {} Debug/Display strings",
        client_logs.lines().count(),
        shown.len()
    );
}

/// Certificate verification has no off switch: a certificate from an untrusted CA, or for
/// another name, is refused with every setting the client has (a private CA, system roots,
/// a server-name override). The only way to change verification is handing over a complete
/// rustls configuration ([`dflockd::TlsOptions::from_config`]), where turning it off takes
/// rustls's own explicitly named `dangerous()` API.
#[tokio::test]
async fn tls_verification_cannot_be_turned_off() {
    let trusted = dflockd_testkit::tls::TestCa::new();
    let other = dflockd_testkit::tls::TestCa::new();
    let server = TestServer::builder()
        .tls(other.issue_server(&["localhost"]).unwrap())
        .start()
        .await
        .unwrap();
    let addr = format!("localhost:{}", server.addr().port());
    let attempts = [
        dflockd::TlsOptions::ca_pem(trusted.cert_pem()).unwrap(),
        dflockd::TlsOptions::system_roots(),
        dflockd::TlsOptions::ca_pem(other.cert_pem())
            .unwrap()
            .server_name("not-localhost.example"),
    ];
    for tls in attempts {
        let shown = format!("{tls:?}");
        let client = Client::builder()
            .servers([addr.clone()])
            .tls(tls)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let err = client.lock("k").try_acquire().await.unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{shown}: {err:?}");
    }
    // The right CA and name do connect: the failures above are verification failures.
    let client = Client::builder()
        .servers([addr])
        .tls(dflockd::TlsOptions::ca_pem(other.cert_pem()).unwrap())
        .build()
        .unwrap();
    assert!(client.lock("k").try_acquire().await.unwrap().is_some());
}
