//! The client against a scripted, misbehaving server: every bad answer is a typed error,
//! memory stays bounded, nothing panics, nothing hangs past the configured timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dflockd_core::{Client, Error};
use dflockd_testkit::scripted::{self, Act, say};

const TOKEN: &str = "00000000000000070123456789abcdef";

fn client(addr: &str) -> Client {
    Client::builder()
        .servers([addr])
        .request_timeout(Duration::from_millis(400))
        .release_timeout(Duration::from_millis(400))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Runs a try-once acquire against a server that answers it with `act`; returns the error.
async fn try_once_error(act: Act) -> Error {
    let (addr, _) = scripted::serve(move |_, _| act.clone()).await;
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        client(&addr).lock("k").try_acquire(),
    )
    .await
    .expect("the client must not hang");
    assert!(started.elapsed() < Duration::from_secs(3));
    match result {
        Ok(g) => panic!("expected an error, got {g:?}"),
        Err(e) => e,
    }
}

fn is_protocol(e: &Error) -> bool {
    matches!(e, Error::Protocol { .. })
}

#[tokio::test]
async fn malformed_grants_are_protocol_errors() {
    let bad_answers = [
        "OK\n".to_owned(),
        "okay\n".to_owned(),
        "queued\n".to_owned(),
        "acquired 00000000000000070123456789abcdef 5\n".to_owned(),
        "ok\n".to_owned(),
        format!("ok {TOKEN}\n"),
        format!("ok {TOKEN} 0\n"),
        format!("ok {TOKEN} -1\n"),
        format!("ok {TOKEN} +5\n"),
        format!("ok {TOKEN} 5.0\n"),
        format!("ok {TOKEN} 99999999999999999999\n"),
        format!("ok {TOKEN} {}\n", "9".repeat(200)),
        "ok 0123 5\n".to_owned(),
        "ok 00000000000000070123456789ABCDEF 5\n".to_owned(),
        "ok 0000000000000007012345678zzzzzzz 5\n".to_owned(),
        format!("ok {TOKEN}00 5\n"),
        "ok\0\n".to_owned(),
        "\n".to_owned(),
        "error_\n".to_owned(),
    ];
    for answer in bad_answers {
        let e = try_once_error(say(&answer)).await;
        assert!(is_protocol(&e), "{answer:?} gave {e:?}");
        assert!(!e.is_retryable(), "{answer:?}");
    }
}

#[tokio::test]
async fn invalid_utf8_and_nul_are_protocol_errors() {
    for bytes in [
        b"ok \xff\xfe 5\n".to_vec(),
        b"\xc3\x28\n".to_vec(),
        b"ok \x0000000000000070123456789abcdef 5\n".to_vec(),
    ] {
        let e = try_once_error(Act::Say(bytes.clone())).await;
        assert!(is_protocol(&e), "{bytes:?} gave {e:?}");
    }
}

#[tokio::test]
async fn overlong_line_and_endless_stream_are_cut_off() {
    let two_mib = vec![b'a'; 2 << 20];
    let e = try_once_error(Act::Say(two_mib)).await;
    assert!(is_protocol(&e), "{e:?}");
    let e = try_once_error(Act::Flood).await;
    assert!(is_protocol(&e), "{e:?}");
}

#[tokio::test]
async fn no_newline_ever_times_out() {
    let e = try_once_error(say("ok 00000000000000070123456789abcdef 5")).await;
    assert!(matches!(e, Error::RequestTimeout { .. }), "{e:?}");
    let e = try_once_error(Act::Silence).await;
    assert!(matches!(e, Error::RequestTimeout { .. }), "{e:?}");
}

#[tokio::test]
async fn a_late_answer_never_reaches_the_next_request() {
    // Request 0 is answered (with a grant) after the client gave up; request 1, on a new
    // connection, gets `timeout`. The late grant must not be taken for request 1's answer.
    let grant = format!("ok {TOKEN} 5\n").into_bytes();
    let (addr, connections) = scripted::serve(move |n, _| match n {
        0 => Act::Late(Duration::from_millis(700), grant.clone()),
        _ => say("timeout\n"),
    })
    .await;
    let client = client(&addr);
    let first = client.lock("k").try_acquire().await;
    assert!(
        matches!(first, Err(Error::RequestTimeout { .. })),
        "{first:?}"
    );
    let second = client.lock("k").try_acquire().await.unwrap();
    assert!(second.is_none());
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_answers_to_one_request_poison_the_connection() {
    let (addr, connections) = scripted::serve(|n, _| match n {
        0 => say("timeout\ntimeout\n"),
        _ => say("timeout\n"),
    })
    .await;
    let client = client(&addr);
    assert!(client.lock("k").try_acquire().await.unwrap().is_none());
    // The stray second answer closes that connection; the next request uses a new one and
    // gets its own answer.
    tokio::time::timeout(Duration::from_secs(2), async {
        while client.open_connections() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the poisoned connection must close");
    assert!(client.lock("k").try_acquire().await.unwrap().is_none());
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn every_status_word_is_typed() {
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        ("error_max_locks\n", |e| matches!(e, Error::MaxLocks { .. })),
        ("error_max_waiters\n", |e| {
            matches!(e, Error::MaxWaiters { .. })
        }),
        ("error_limit_mismatch\n", |e| {
            matches!(e, Error::LimitMismatch { .. })
        }),
        ("error_draining\n", |e| matches!(e, Error::Draining { .. })),
        ("error_auth\n", |e| e.is_permission_denied()),
        ("error\n", |e| {
            matches!(e, Error::Refused { command: "l", .. })
        }),
        (
            "error_quota\n",
            |e| matches!(e, Error::Server { status, .. } if status == "error_quota"),
        ),
        ("error_not_leader\n", |e| {
            matches!(e, Error::NotLeader { leader: None, .. })
        }),
        (
            "error_not_leader 10.9.9.9:6388\n",
            |e| matches!(e, Error::NotLeader { leader: Some(l), .. } if l == "10.9.9.9:6388"),
        ),
        ("error_not_leader \u{1b}[2J\n", |e| {
            matches!(e, Error::NotLeader { leader: None, .. })
        }),
    ];
    for (answer, check) in cases {
        let e = try_once_error(say(answer)).await;
        assert!(check(&e), "{answer:?} gave {e:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[tokio::test]
async fn auth_ok_then_error_auth_is_typed() {
    let (addr, _) = scripted::serve(|n, _| match n {
        0 => say("ok\n"),
        _ => say("error_auth\n"),
    })
    .await;
    let client = Client::builder()
        .servers([addr])
        .auth_token("secret")
        .request_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let e = client.lock("k").try_acquire().await.unwrap_err();
    assert!(e.is_permission_denied(), "{e:?}");
}

#[tokio::test]
async fn wrong_auth_is_permission_denied() {
    let (addr, _) = scripted::serve(|_, _| say("error_auth\n")).await;
    let client = Client::builder()
        .servers([addr])
        .auth_token("wrong")
        .build()
        .unwrap();
    let e = client.lock("k").acquire().await.unwrap_err();
    assert!(e.is_permission_denied(), "{e:?}");
    assert_eq!(e.io_kind(), std::io::ErrorKind::PermissionDenied);
    assert!(!format!("{e} {e:?}").contains("wrong"));
}

#[tokio::test]
async fn renew_answers_are_checked_too() {
    // Grant with a 1 s lease, then answer the renew with garbage: the connection is closed
    // and the lease is reported lost instead of trusted.
    let grant = format!("ok {TOKEN} 1\n");
    let (addr, _) = scripted::serve(move |n, cmd| match (n, cmd) {
        (0, _) => say(&grant),
        (_, "n") => say("ok -5\n"),
        _ => say("ok\n"),
    })
    .await;
    let client = client(&addr);
    let guard = client.lock("k").acquire().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("loss must be reported");
    assert_eq!(reason, dflockd_core::LossReason::ConnectionLost);
    assert!(!guard.is_held());
    assert!(guard.release().await.unwrap_err().is_lease_lost());
}

#[tokio::test]
async fn a_stats_answer_too_long_to_read_is_skipped_and_the_connection_kept() {
    // The answer to `stats` from a server that knows very many keys: longer than the client
    // reads. The call fails with a typed error; the lock held on the same connection stays
    // held, and the next request on that connection gets its own answer.
    let mut huge = vec![b' '; dflockd_core::proto::MAX_STATS_LINE + 1];
    huge[..3].copy_from_slice(b"ok ");
    huge.push(b'\n');
    let (addr, connections) = scripted::serve(move |n, _| match n {
        0 => Act::Say(format!("ok {TOKEN} 30\n").into_bytes()),
        1 => Act::Say(huge.clone()),
        _ => say("ok\n"),
    })
    .await;
    // 32 MiB through a debug build on a busy machine can take longer than `client`'s 400 ms
    // request timeout; this test is about what happens after the answer, not how fast it comes.
    let client = Client::builder()
        .servers([addr])
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let guard = client.lock("k").try_acquire().await.unwrap().unwrap();
    let e = client.server_stats(0).await.unwrap_err();
    assert!(matches!(e, Error::StatsTooLarge { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_request_queued_behind_a_skipped_stats_answer_is_answered_and_the_connection_kept() {
    // One connection carries a held lock, a `stats` request whose answer is too long to read
    // and comes slowly (48 MiB over 4.75 s), and a request sent right after it. That
    // request's answer cannot come before the server has sent all of the `stats` one: its
    // request timeout (1 s) counts from the failed `stats` answer, and moves while the rest
    // of that answer (16 MiB over 1.5 s) is skipped, the server still answering. Nothing is
    // taken for a dead server.
    let mut huge = vec![b' '; 48 << 20];
    huge[..3].copy_from_slice(b"ok ");
    huge.push(b'\n');
    let (addr, connections) = scripted::serve(move |n, _| match n {
        0 => Act::Say(format!("ok {TOKEN} 30\n").into_bytes()),
        1 => Act::Trickle {
            bytes: huge.clone(),
            pieces: 96,
            pause: Duration::from_millis(50),
        },
        2 => say("timeout\n"),
        _ => say("ok\n"),
    })
    .await;
    let client = Client::builder()
        .servers([addr])
        .max_shared_connections(1)
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let guard = client.lock("k").try_acquire().await.unwrap().unwrap();
    let stats = tokio::spawn({
        let client = client.clone();
        async move { client.server_stats(0).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let busy = client.lock("k2").try_acquire().await.unwrap();
    assert!(busy.is_none());
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "answered after {:?}: not queued behind the long answer",
        started.elapsed()
    );
    let e = stats.await.unwrap().unwrap_err();
    assert!(matches!(e, Error::StatsTooLarge { .. }), "{e:?}");
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// A `stats` answer listing `locks` locks.
fn stats_answer(locks: usize) -> Vec<u8> {
    let locks: Vec<String> = (0..locks)
        .map(|i| {
            format!(
                r#"{{"key":"tenant-{i:05}-job","owner_conn_id":{i},"lease_expires_in_s":29.5,"waiters":0}}"#
            )
        })
        .collect();
    (format!(
        r#"ok {{"connections":3,"locks":[{}],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}}"#,
        locks.join(",")
    ) + "\n")
        .into_bytes()
}

/// A client with `request_timeout` holding a lock from a server that answers the next
/// request (`stats`) with 2,000 locks' JSON in `pieces` pieces `pause` apart; and the
/// server's count of accepted connections.
async fn lock_then_trickled_stats(
    pieces: usize,
    pause: Duration,
    request_timeout: Duration,
) -> (Client, dflockd_core::Guard, Arc<AtomicUsize>) {
    let answer = stats_answer(2_000);
    let (addr, connections) = scripted::serve(move |n, _| match n {
        0 => Act::Say(format!("ok {TOKEN} 30\n").into_bytes()),
        1 => Act::Trickle {
            bytes: answer.clone(),
            pieces,
            pause,
        },
        _ => say("ok\n"),
    })
    .await;
    let client = Client::builder()
        .servers([addr])
        .request_timeout(request_timeout)
        .build()
        .unwrap();
    let guard = client.lock("k").try_acquire().await.unwrap().unwrap();
    (client, guard, connections)
}

#[tokio::test]
async fn a_stats_answer_arriving_slowly_is_read_and_the_connection_kept() {
    // A server that knows many keys, on a slow link: its answer comes in pieces over longer
    // than the request timeout. While pieces arrive the server is answering: the answer is
    // read, and the lock held on the same connection stays held.
    let (client, guard, connections) =
        lock_then_trickled_stats(8, Duration::from_millis(250), Duration::from_secs(1)).await;
    let started = Instant::now();
    let stats = client.server_stats(0).await.unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.locks.len(), 2_000);
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stats_answer_that_keeps_trickling_is_cut_off_after_twelve_request_timeouts() {
    // Pieces every 50 ms for 2 s: each within the 100 ms request timeout, but the whole past
    // 12 of them. The connection is closed as one whose server does not answer, and the
    // lock held on it is reported lost.
    let (client, guard, _) =
        lock_then_trickled_stats(40, Duration::from_millis(50), Duration::from_millis(100)).await;
    let started = Instant::now();
    let e = client.server_stats(0).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, Error::RequestTimeout { .. }), "{e:?}");
    assert!(took >= Duration::from_millis(1_100), "{took:?}");
    let reason = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("loss must be reported");
    assert_eq!(reason, dflockd_core::LossReason::ConnectionLost);
}

#[tokio::test]
async fn a_large_stats_answer_is_read() {
    // 20,000 locks: over a mebibyte of JSON, within what the client reads.
    let answer = stats_answer(20_000);
    assert!(answer.len() > 1 << 20);
    let (addr, _) = scripted::serve(move |_, _| Act::Say(answer.clone())).await;
    let stats = client(&addr).server_stats(0).await.unwrap();
    assert_eq!(stats.locks.len(), 20_000);
}

/// `n` try-once acquires of keys `k0`, `k1`, ... at once, each answered "busy".
async fn try_acquire_at_once(client: &Client, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.lock(format!("k{i}")).try_acquire().await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_up_to_64_concurrent_requests_each_get_a_connection() {
    // Every answer takes 2 s (so that no request is answered, and no connection freed,
    // before the last of them is sent, even on a loaded machine); 40 requests at once, on a
    // client built with the defaults: each gets a connection of its own (more than the 16 of
    // earlier versions), none is pipelined behind another.
    let (addr, connections) =
        scripted::serve(|_, _| Act::Late(Duration::from_secs(2), b"timeout\n".to_vec())).await;
    let client = Client::builder()
        .servers([addr.as_str()])
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    try_acquire_at_once(&client, 40).await;
    assert_eq!(connections.load(Ordering::SeqCst), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_a_connection_and_sequential_ones_share_one() {
    // Every answer takes 150 ms. Six requests at once: each on its own connection (none
    // waits behind another's answer), up to the shared maximum. Then requests one after the
    // other: all on the first free one, so the others go idle and retire.
    let (addr, connections) =
        scripted::serve(|_, _| Act::Late(Duration::from_millis(150), b"timeout\n".to_vec())).await;
    let client = Client::builder()
        .servers([addr.as_str()])
        .max_shared_connections(6)
        .idle_timeout(Duration::from_millis(600))
        .build()
        .unwrap();
    let started = Instant::now();
    try_acquire_at_once(&client, 6).await;
    assert_eq!(connections.load(Ordering::SeqCst), 6);
    // Side by side, not one after another (6 × 150 ms).
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    // More at once than the maximum: the extra ones are pipelined, no connection is opened.
    try_acquire_at_once(&client, 12).await;
    assert_eq!(connections.load(Ordering::SeqCst), 6);
    for i in 0..10 {
        assert!(
            client
                .lock(format!("s{i}"))
                .try_acquire()
                .await
                .unwrap()
                .is_none()
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 6);
    assert_eq!(client.open_connections(), 1);
}
