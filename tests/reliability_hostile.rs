//! Hostile servers and bad user input, beyond `dflockd-core/tests/hostile.rs`: bad answers on
//! the blocking path, to renewals, enqueues, waits, releases, stats and auth; a redirect to an
//! address that is not configured is never followed; bad keys, tokens and durations are
//! refused before a single byte is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dflockd::{Client, Error, Token};
use dflockd_testkit::scripted::{self, Act};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const TOKEN: &str = "00000000000000070123456789abcdef";

fn client(addr: &str) -> Client {
    Client::builder()
        .servers([addr])
        .request_timeout(Duration::from_millis(500))
        .release_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(800))
        .build()
        .unwrap()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("no hang past the configured timeouts");
    assert!(started.elapsed() < Duration::from_secs(4));
    out
}

#[tokio::test]
async fn wrong_statuses_on_the_blocking_path_are_protocol_errors() {
    for answer in [
        "queued\n",
        "OK\n",
        "okay\n",
        "acquired 00000000000000070123456789abcdef 5\n",
    ] {
        // The try-once answer says busy; the blocking request gets the bad answer.
        let (addr, _) = scripted::serve(move |n, _| {
            Some(if n == 0 {
                b"timeout\n".to_vec()
            } else {
                answer.as_bytes().to_vec()
            })
        })
        .await;
        let lock = client(&addr)
            .lock("k")
            .acquire_timeout(Duration::from_secs(1));
        let err = bounded(lock.acquire()).await.unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{answer:?}: {err:?}");
    }
    // The blocking answer never comes: bounded by the wait plus the request timeout.
    let (addr, _) = scripted::serve(|n, _| (n == 0).then(|| b"timeout\n".to_vec())).await;
    let lock = client(&addr)
        .lock("k")
        .acquire_timeout(Duration::from_secs(1));
    let err = bounded(lock.acquire()).await.unwrap_err();
    assert!(matches!(err, Error::RequestTimeout { .. }), "{err:?}");
}

#[tokio::test]
async fn hostile_leases_in_every_answer_that_carries_one() {
    let leases = [
        "0",
        "-1",
        "+5",
        "5.0",
        "99999999999999999999",
        " ",
        "5e0",
        "0x5",
    ];
    for lease in leases {
        // Enqueue answered with a bad grant.
        let (addr, _) =
            scripted::serve(move |_, _| Some(format!("acquired {TOKEN} {lease}\n").into_bytes()))
                .await;
        let err = bounded(client(&addr).lock("k").enqueue())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Protocol { .. }),
            "enqueue {lease:?}: {err:?}"
        );
        // Wait answered with a bad grant.
        let (addr, _) = scripted::serve(move |n, _| {
            Some(if n == 0 {
                b"queued\n".to_vec()
            } else {
                format!("ok {TOKEN} {lease}\n").into_bytes()
            })
        })
        .await;
        let queued = bounded(client(&addr).lock("k").enqueue()).await.unwrap();
        let err = bounded(queued.wait(Duration::from_secs(1)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Protocol { .. }),
            "wait {lease:?}: {err:?}"
        );
        // A good grant whose renewal is answered with a bad lease: the lease is lost.
        let (addr, _) = scripted::serve(move |n, cmd| {
            Some(match (n, cmd) {
                (0, _) => format!("ok {TOKEN} 5\n").into_bytes(),
                (_, "n") => format!("ok {lease}\n").into_bytes(),
                _ => b"ok\n".to_vec(),
            })
        })
        .await;
        let guard = bounded(client(&addr).lock("k").acquire()).await.unwrap();
        let err = bounded(guard.renew()).await.unwrap_err();
        assert!(
            matches!(err, Error::Protocol { .. }),
            "renew {lease:?}: {err:?}"
        );
        assert!(!guard.is_held());
    }
}

#[tokio::test]
async fn hostile_answers_to_release_and_stats() {
    // A release answered with garbage or not at all still returns, typed.
    for answer in [Some(b"released\n".to_vec()), Some(b"\xff\n".to_vec()), None] {
        let expected = answer.clone();
        let (addr, _) = scripted::serve(move |n, _| {
            if n == 0 {
                Some(format!("ok {TOKEN} 5\n").into_bytes())
            } else {
                expected.clone()
            }
        })
        .await;
        let guard = bounded(client(&addr).lock("k").acquire()).await.unwrap();
        let err = bounded(guard.release()).await.unwrap_err();
        assert!(
            matches!(err, Error::Protocol { .. } | Error::RequestTimeout { .. }),
            "{answer:?}: {err:?}"
        );
    }
    // Stats: longer than the client reads, an endless stream (both skipped, typed, the
    // connection kept), JSON that is not stats (a protocol error).
    let too_long = {
        let mut v = b"ok {\"connections\":1,\"x\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'a', dflockd::proto::MAX_STATS_LINE));
        v.extend_from_slice(b"\"}\n");
        v
    };
    for answer in [Act::Say(too_long), Act::Flood] {
        let (addr, _) = scripted::serve(move |_, _| answer.clone()).await;
        let err = bounded(client(&addr).stats()).await.unwrap_err();
        assert!(matches!(err, Error::StatsTooLarge { .. }), "{err:?}");
    }
    for answer in [b"ok [1,2,3]\n".to_vec(), b"ok\n".to_vec()] {
        let (addr, _) = scripted::serve(move |_, _| Some(answer.clone())).await;
        let err = bounded(client(&addr).stats()).await.unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    }
    // A large answer within the cap is read: unknown fields are ignored.
    let two_mib = {
        let mut v = b"ok {\"connections\":1,\"x\":\"".to_vec();
        v.extend(std::iter::repeat_n(b'a', 2 << 20));
        v.extend_from_slice(b"\"}\n");
        v
    };
    let (addr, _) = scripted::serve(move |_, _| Some(two_mib.clone())).await;
    let stats = bounded(client(&addr).stats()).await.unwrap();
    assert_eq!(stats[0].connections, 1);
}

#[tokio::test]
async fn hostile_auth_answers() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(Option<Vec<u8>>, Check)> = vec![
        (None, |e| matches!(e, Error::Connect { .. })),
        (Some(b"ok".to_vec()), |e| matches!(e, Error::Connect { .. })),
        (Some(vec![b'x'; 1 << 20]), |e| {
            matches!(e, Error::Protocol { .. })
        }),
        (Some(b"okay\n".to_vec()), |e| {
            matches!(e, Error::Protocol { .. })
        }),
        (Some(b"error_auth\n".to_vec()), |e| e.is_permission_denied()),
    ];
    for (answer, check) in cases {
        let shown = format!("{answer:?}").chars().take(40).collect::<String>();
        let (addr, _) = scripted::serve(move |_, _| answer.clone()).await;
        let client = Client::builder()
            .servers([addr])
            .auth_token("s3cret")
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let err = bounded(client.lock("k").try_acquire()).await.unwrap_err();
        assert!(check(&err), "{shown}: {err:?}");
    }
}

#[tokio::test]
async fn a_redirect_to_an_unconfigured_address_is_never_followed() {
    let bait = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bait_addr = bait.local_addr().unwrap().to_string();
    let visits = Arc::new(AtomicUsize::new(0));
    let counter = visits.clone();
    tokio::spawn(async move {
        while bait.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let answer = format!("error_not_leader {bait_addr}\n");
    let (addr, accepted) = scripted::serve(move |_, _| Some(answer.clone().into_bytes())).await;
    let client = client(&addr);
    for _ in 0..3 {
        let err = bounded(client.lock("k").acquire()).await.unwrap_err();
        assert!(
            matches!(&err, Error::NotLeader { leader: Some(l), .. } if *l == bait_addr),
            "{err:?}"
        );
        let err = bounded(client.lock("k").try_acquire()).await.unwrap_err();
        assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "the client followed the redirect"
    );
    assert!(accepted.load(Ordering::SeqCst) >= 1);
}

/// A listener that counts connections and bytes: proof that nothing was sent.
async fn witness() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn bad_user_input_is_rejected_before_anything_is_sent() {
    let (addr, seen) = witness().await;
    let client = Client::builder().servers([addr.clone()]).build().unwrap();
    let long_ascii = "k".repeat(257);
    // 129 two-byte characters: 258 bytes, although only 129 characters.
    let long_bytes = "ж".repeat(129);
    assert_eq!(long_bytes.chars().count(), 129);
    let bad_keys = [
        "",
        " ",
        "a b",
        "tab\there",
        "smuggled\nl",
        "smuggled\r\nl",
        "cr\r",
        "nul\0",
        "esc\u{1b}[2J",
        "del\u{7f}",
        "nbsp\u{a0}x",
        "em\u{2003}space",
        "line\u{2028}sep",
        long_ascii.as_str(),
        long_bytes.as_str(),
    ];
    for key in bad_keys {
        let shown = format!("{key:?}").chars().take(30).collect::<String>();
        let invalid = |r: Result<(), Error>| {
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{shown}: {r:?}"
            );
        };
        invalid(client.lock(key).acquire().await.map(drop));
        invalid(client.lock(key).try_acquire().await.map(drop));
        invalid(client.lock(key).enqueue().await.map(drop));
        invalid(client.semaphore(key, 2).acquire().await.map(drop));
        invalid(client.semaphore(key, 2).enqueue().await.map(drop));
    }
    // The longest key that fits is fine on the client side (it would be sent).
    assert_eq!("ж".repeat(128).len(), 256);
    // Zero leases and limits.
    let zero_lease = client.lock("k").lease_ttl(Duration::ZERO).acquire().await;
    assert!(
        matches!(zero_lease, Err(Error::InvalidArgument(_))),
        "{zero_lease:?}"
    );
    let zero_lease = client
        .semaphore("k", 2)
        .lease_ttl(Duration::ZERO)
        .enqueue()
        .await;
    assert!(
        matches!(zero_lease, Err(Error::InvalidArgument(_))),
        "{zero_lease:?}"
    );
    let zero_limit = client.semaphore("k", 0).try_acquire().await;
    assert!(
        matches!(zero_limit, Err(Error::InvalidArgument(_))),
        "{zero_limit:?}"
    );
    // Zero durations in the configuration.
    for b in [
        Client::builder().lease_ttl(Duration::ZERO),
        Client::builder().request_timeout(Duration::ZERO),
        Client::builder().connect_timeout(Duration::ZERO),
        Client::builder().release_timeout(Duration::ZERO),
        Client::builder().auth_token("two\nlines"),
        Client::builder().auth_token(""),
        Client::builder().servers(["host:notaport"]),
    ] {
        assert!(matches!(b.build(), Err(Error::Config(_))));
    }
    // Bad tokens (as handed over from another process).
    for bad in [
        "",
        "0123",
        "000000000000002A0123456789abcdef",
        "000000000000002a0123456789abcdeg",
        "000000000000002a0123456789abcdef0",
        "000000000000002a0123456789abcde\n",
        "000000000000002a 123456789abcdef",
    ] {
        assert!(Token::parse(bad).is_err(), "{bad:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "something was sent");
    assert_eq!(client.open_connections(), 0);
}
