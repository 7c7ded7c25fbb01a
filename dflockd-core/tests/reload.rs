//! Credentials replaced while the client runs: new connections use the new auth token or TLS
//! settings, and locks held over connections opened before are not disturbed.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{LIMIT, bounded, builder};
use dflockd_core::{Client, Error, Guard};
use dflockd_testkit::TestServer;

const LEASE: Duration = Duration::from_secs(1);
/// Idle connections close this soon, so that each attempt opens a new one.
const IDLE: Duration = Duration::from_millis(100);

/// Holds `key` on `addr` through a client of its own (authenticated with `token`).
async fn hold_elsewhere(addr: &str, token: Option<&str>, key: &str) -> (Client, Guard) {
    let mut b = builder(&[addr.to_owned()]);
    if let Some(token) = token {
        b = b.auth_token(token);
    }
    let other = b.build().unwrap();
    let guard = bounded(LIMIT, other.lock(key).acquire()).await.unwrap();
    (other, guard)
}

/// An acquire of a key held elsewhere: it waits on a connection of its own, opened for it
/// (once the idle ones have closed: the client holds a lock over one connection only).
/// `Error::Timeout` shows that connection authenticated; anything else is returned.
async fn through_a_new_connection(client: &Client, busy: &str) -> Error {
    bounded(LIMIT, async {
        while client.open_connections() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bounded(
        LIMIT,
        client
            .lock(busy)
            .acquire_timeout(Duration::from_millis(300))
            .acquire(),
    )
    .await
    .expect_err("the key is held elsewhere")
}

/// The lock is still held, by the server's account too, after several leases.
async fn still_held(guard: &Guard, observer: &Client) {
    tokio::time::sleep(LEASE * 3).await;
    assert!(guard.is_held(), "{:?}", guard.loss_reason());
    let stats = observer.stats_for_key(guard.key()).await.unwrap();
    assert_eq!(stats.usage(guard.key()).0, 1, "{stats:?}");
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dflockd-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
async fn set_auth_token_applies_to_new_connections_only() {
    let server = TestServer::builder()
        .auth_token("first")
        .start()
        .await
        .unwrap();
    let addr = server.addr_string();
    let (observer, _busy) = hold_elsewhere(&addr, Some("first"), "busy").await;
    let client = builder(std::slice::from_ref(&addr))
        .auth_token("first")
        .lease_ttl(LEASE)
        .idle_timeout(IDLE)
        .build()
        .unwrap();
    let held = bounded(LIMIT, client.lock("held").acquire()).await.unwrap();

    client.set_auth_token("rotated").unwrap();
    // The server still wants "first": a new connection is refused, so it sent "rotated".
    let err = through_a_new_connection(&client, "busy").await;
    assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
    // The lock held over the connection opened with "first" is renewed all along.
    still_held(&held, &observer).await;

    client.set_auth_token("first").unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(err.is_timeout(), "{err:?}");
    // A token the servers would not take is refused, and the one in use is kept.
    assert!(matches!(
        client.set_auth_token("two\nlines"),
        Err(Error::Config(_))
    ));
    let err = through_a_new_connection(&client, "busy").await;
    assert!(err.is_timeout(), "{err:?}");
    held.release().await.unwrap();
}

#[tokio::test]
async fn a_token_file_is_read_again_for_new_connections() {
    let server = TestServer::builder()
        .auth_token("first")
        .start()
        .await
        .unwrap();
    let addr = server.addr_string();
    let (observer, _busy) = hold_elsewhere(&addr, Some("first"), "busy").await;
    let file = temp_file("token");
    std::fs::write(&file, "first\n").unwrap();
    let client = builder(std::slice::from_ref(&addr))
        .auth_token_file(&file)
        .lease_ttl(LEASE)
        .idle_timeout(IDLE)
        .build()
        .unwrap();
    let held = bounded(LIMIT, client.lock("held").acquire()).await.unwrap();

    std::fs::write(&file, "rotated\n").unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(matches!(err, Error::AuthRejected { .. }), "{err:?}");
    still_held(&held, &observer).await;

    std::fs::write(&file, "first\n").unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(err.is_timeout(), "{err:?}");
    // While the file is being replaced (gone for a moment), the last token read is used.
    std::fs::remove_file(&file).unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(err.is_timeout(), "{err:?}");
    held.release().await.unwrap();

    // From the environment too.
    std::fs::write(&file, "first").unwrap();
    let from_env = dflockd_core::ClientBuilder::from_env()
        .unwrap()
        .auth_token_file(&file)
        .servers([addr])
        .build()
        .unwrap();
    assert!(format!("{from_env:?}").contains("auth: true"));
    let _ = std::fs::remove_file(&file);
}

#[cfg(feature = "tls-base")]
#[tokio::test]
async fn reload_tls_applies_to_new_connections_only() {
    use dflockd_core::{TlsOptions, TlsProblem};
    use dflockd_testkit::tls::TestCa;

    let ca = TestCa::new();
    let server = TestServer::builder()
        .tls(ca.issue_server(&["127.0.0.1"]).unwrap())
        .tls_client_ca(ca.cert_pem())
        .start()
        .await
        .unwrap();
    let addr = server.addr_string();
    let identity = |name: &str| {
        let id = ca.issue_client(name).unwrap();
        TlsOptions::ca_pem(ca.cert_pem())
            .unwrap()
            .client_auth_pem(id.cert_pem, id.key_pem)
            .unwrap()
    };
    let observer = builder(std::slice::from_ref(&addr))
        .tls(identity("observer"))
        .build()
        .unwrap();
    let _busy = bounded(LIMIT, observer.lock("busy").acquire())
        .await
        .unwrap();
    let client = builder(std::slice::from_ref(&addr))
        .tls(identity("worker-old"))
        .lease_ttl(LEASE)
        .idle_timeout(IDLE)
        .build()
        .unwrap();
    let held = bounded(LIMIT, client.lock("held").acquire()).await.unwrap();

    // A renewed client certificate: new connections present it.
    client.reload_tls(identity("worker-new")).unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(err.is_timeout(), "{err:?}");
    // Settings the server refuses (no client certificate): new connections fail, the lock
    // held over the connection opened before is not disturbed.
    client
        .reload_tls(TlsOptions::ca_pem(ca.cert_pem()).unwrap())
        .unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(
        matches!(
            err,
            Error::Tls {
                problem: TlsProblem::ClientCertificateRejected,
                ..
            }
        ),
        "{err:?}"
    );
    still_held(&held, &observer).await;
    // Options that cannot be used are refused, and the ones in use are kept.
    assert!(matches!(
        client.reload_tls(
            TlsOptions::ca_pem(ca.cert_pem())
                .unwrap()
                .server_name("not a name")
        ),
        Err(Error::Config(_))
    ));
    client.reload_tls(identity("worker-new")).unwrap();
    let err = through_a_new_connection(&client, "busy").await;
    assert!(err.is_timeout(), "{err:?}");
    held.release().await.unwrap();
}
