//! What the client does per declared server release: fences only from releases that issue
//! them (and never a random number), and a health check that works on every release.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dflockd_core::{Client, Error, ServerVersion};
use dflockd_testkit::scripted::{self, say};
use dflockd_testkit::{TestServer, unique_key};

fn client(addr: &str, version: Option<ServerVersion>) -> Client {
    let mut builder = Client::builder()
        .servers([addr])
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2));
    if let Some(version) = version {
        builder = builder.server_version(version);
    }
    builder.build().unwrap()
}

/// A server that grants every acquire with `token` and records every command it gets.
async fn granting(token: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let (addr, _) = scripted::serve(move |_, command| {
        log.lock().unwrap().push(command.to_owned());
        match command {
            "l" | "sl" => say(&format!("ok {token} 30\n")),
            _ => say("ok\n"),
        }
    })
    .await;
    (addr, seen)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn a_fence_is_read_only_from_releases_that_issue_them() {
    // A v2.1 token: a fence counted from the server's start time, then 16 random digits.
    let fence = now_ns() - 5_000_000_000;
    let (addr, _) = granting(format!("{fence:016x}0123456789abcdef")).await;
    for (version, want) in [
        (None, None),
        (Some(ServerVersion::V1_10), None),
        (Some(ServerVersion::new(2, 0, 1)), None),
        (Some(ServerVersion::V2_1), Some(fence)),
        (Some(ServerVersion::new(2, 1, 1)), Some(fence)),
    ] {
        let guard = client(&addr, version).lock("k").acquire().await.unwrap();
        assert_eq!(guard.fence(), want, "declared {version:?}");
        guard.release().await.unwrap();
    }
}

#[tokio::test]
async fn a_grant_without_a_fence_from_a_declared_v2_1_server_is_refused_and_released() {
    // A v1.10 token: 32 random hex digits; these make a prefix no v2.1 server can send.
    for token in [
        "0000000000000001ffffffffffffffff",
        "ffffffffffffffff0000000000000001",
    ] {
        let (addr, seen) = granting(token.to_owned()).await;
        let client = client(&addr, Some(ServerVersion::V2_1));
        for semaphore in [false, true] {
            let key = unique_key("unfenced");
            let result = if semaphore {
                client.semaphore(&key, 2).acquire().await
            } else {
                client.lock(&key).acquire().await
            };
            match result {
                Err(Error::NotFenced {
                    key: k, declared, ..
                }) => {
                    assert_eq!((k, declared), (key.clone(), ServerVersion::V2_1));
                }
                other => panic!("{token}: {other:?}"),
            }
        }
        let message = client.lock("k").acquire().await.unwrap_err().to_string();
        assert!(message.contains("without a fence"), "{message}");
        assert!(message.contains("2.1.0"), "{message}");
        // Each refused grant was released, not left to expire.
        common::bounded(Duration::from_secs(5), async {
            loop {
                let releases = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|c| *c == "r" || *c == "sr")
                    .count();
                if releases == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

#[tokio::test]
async fn an_explicit_fence_field_is_the_fence_whatever_the_release() {
    let (addr, _) = scripted::serve(|_, command| match command {
        "l" => say("ok 0123456789abcdef0123456789abcdef 30 77\n"),
        _ => say("ok\n"),
    })
    .await;
    for version in [None, Some(ServerVersion::V1_10), Some(ServerVersion::V2_1)] {
        let guard = client(&addr, version).lock("k").acquire().await.unwrap();
        assert_eq!(guard.fence(), Some(77), "{version:?}");
        guard.release().await.unwrap();
    }
}

#[tokio::test]
async fn ping_takes_ok_and_a_pre_1_14_error_as_alive() {
    for answer in ["ok\n", "error\n"] {
        let (addr, _) = scripted::serve(move |_, command| {
            assert_eq!(command, "ping");
            say(answer)
        })
        .await;
        let client = client(&addr, None);
        let took = client.ping().await.unwrap();
        assert!(took < Duration::from_secs(2), "{took:?}");
        // The connection is kept and used again.
        client.ping().await.unwrap();
        assert_eq!(client.open_connections(), 1);
    }
}

#[tokio::test]
async fn ping_reports_what_is_wrong_as_typed_errors() {
    // Draining.
    let (addr, _) = scripted::serve(|_, _| say("error_draining\n")).await;
    assert!(matches!(
        client(&addr, None).ping().await,
        Err(Error::Draining { .. })
    ));
    // Nobody listening.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = client(&format!("127.0.0.1:{port}"), None)
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    // A wrong token.
    let server = TestServer::builder()
        .auth_token("right")
        .start()
        .await
        .unwrap();
    let wrong = Client::builder()
        .servers([server.addr_string()])
        .auth_token("wrong")
        .build()
        .unwrap();
    assert!(matches!(
        wrong.ping().await,
        Err(Error::AuthRejected { .. })
    ));
    // A good one, against every server of a client.
    let right = Client::builder()
        .servers([server.addr_string(), server.addr_string()])
        .auth_token("right")
        .build()
        .unwrap();
    right.ping().await.unwrap();
    right.ping_server(1).await.unwrap();
    assert!(matches!(
        right.ping_server(2).await,
        Err(Error::Shard { index: 2, .. })
    ));
}
