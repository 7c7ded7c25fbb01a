//! Framing and the answer to every command, over real sockets, for every server version (one
//! body per test, the expected answers per version). These tests need only a
//! default-configured server, so they also run against a real one (`DFLOCKD_TEST_SERVERS`,
//! with `DFLOCKD_TEST_SERVERS_VERSION` naming its release).

mod common;

use std::time::Duration;

use common::{connect, default_server, each_version, grant, wait_waiters, wire_stats};
use dflockd_testkit::{ServerVersion, unique_key};
use tokio::io::AsyncWriteExt;

/// Whether locks and semaphores share one namespace (v1.10) or not (v1.14+).
fn one_namespace(v: ServerVersion) -> bool {
    v == ServerVersion::V1_10
}

#[tokio::test]
async fn lock_release_renew() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("lrn");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;

        let (token, lease) = grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(lease, 33);
        assert_eq!(b.req("l", &key, "0").await, "timeout\n");
        assert_eq!(a.req("n", &key, &token).await, "ok 33\n");
        assert_eq!(a.req("n", &key, &format!("{token} 60")).await, "ok 60\n");
        assert_eq!(
            a.req("n", &key, "0123456789abcdef0123456789abcdef").await,
            "error\n"
        );
        assert_eq!(
            a.req("r", &key, "0123456789abcdef0123456789abcdef").await,
            "error\n"
        );
        assert_eq!(a.req("r", &key, &token).await, "ok\n");
        assert_eq!(a.req("r", &key, &token).await, "error\n");
        assert_eq!(a.req("n", &key, &token).await, "error\n");
        assert_eq!(a.req("r", &unique_key("unknown"), &token).await, "error\n");
        assert_eq!(a.req("n", &unique_key("unknown"), &token).await, "error\n");

        let (t, lease) = grant(&b.req("l", &key, "0 7").await, "ok");
        assert_eq!(lease, 7);
        // A renew without a lease applies the server default, not the acquired lease.
        assert_eq!(b.req("n", &key, &t).await, "ok 33\n");
    })
    .await;
}

#[tokio::test]
async fn tokens_per_release() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let mut a = connect(&addr).await;
        let mut fences = Vec::new();
        for i in 0..8 {
            let (t, _) = grant(
                &a.req("l", &unique_key(&format!("tok{i}")), "0").await,
                "ok",
            );
            fences.push(common::fence(&t));
        }
        let consecutive = fences.windows(2).all(|w| w[1] == w[0] + 1);
        match v {
            // 32 random hex digits: no counter in the first half.
            ServerVersion::V1_10 => assert!(!consecutive, "{fences:x?}"),
            // Nobody else uses this server: one fence step per grant.
            _ if !common::external() => assert!(consecutive, "{fences:x?}"),
            _ => assert!(fences.windows(2).all(|w| w[1] > w[0]), "{fences:x?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn timeout_zero_is_a_try_and_a_wait_times_out() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("try");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (token, _) = grant(&a.req("l", &key, "0").await, "ok");
        let started = std::time::Instant::now();
        assert_eq!(b.req("l", &key, "0").await, "timeout\n");
        assert!(started.elapsed() < Duration::from_millis(500));
        let started = std::time::Instant::now();
        assert_eq!(b.req("l", &key, "1").await, "timeout\n");
        assert!(started.elapsed() >= Duration::from_millis(900));
        // A timed-out waiter left the queue.
        assert_eq!(common::waiters_of(&wire_stats(&addr).await, &key), 0);
        assert_eq!(a.req("r", &key, &token).await, "ok\n");
        grant(&b.req("l", &key, "0").await, "ok");
    })
    .await;
}

#[tokio::test]
async fn locks_are_not_reentrant() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("reentrant");
        let mut a = connect(&addr).await;
        grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(a.req("l", &key, "0").await, "timeout\n");
    })
    .await;
}

#[tokio::test]
async fn release_and_renew_from_another_connection() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("foreign");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (token, _) = grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(b.req("n", &key, &format!("{token} 9")).await, "ok 9\n");
        assert_eq!(b.req("r", &key, &token).await, "ok\n");
        let (token, _) = grant(&b.req("l", &key, "0").await, "ok");
        // One namespace: the lock and semaphore commands are interchangeable for renew and
        // release. Two namespaces: `sn`/`sr` look for a semaphore of that name.
        if one_namespace(v) {
            assert_eq!(a.req("sn", &key, &token).await, "ok 33\n");
            assert_eq!(a.req("sr", &key, &token).await, "ok\n");
        } else {
            assert_eq!(a.req("sn", &key, &token).await, "error\n");
            assert_eq!(a.req("sr", &key, &token).await, "error\n");
            assert_eq!(a.req("r", &key, &token).await, "ok\n");
        }
        let sem = unique_key("foreign-sem");
        let (token, _) = grant(&a.req("sl", &sem, "0 3").await, "ok");
        let answer = if one_namespace(v) { "ok\n" } else { "error\n" };
        assert_eq!(b.req("r", &sem, &token).await, answer);
    })
    .await;
}

#[tokio::test]
async fn semaphores_and_namespaces() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("pool");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let mut c = connect(&addr).await;
        let mut d = connect(&addr).await;
        let (t1, lease) = grant(&a.req("sl", &key, "0 2").await, "ok");
        assert_eq!(lease, 33);
        let (t2, lease) = grant(&b.req("sl", &key, "0 2 5").await, "ok");
        assert_eq!(lease, 5);
        assert_eq!(c.req("sl", &key, "0 2").await, "timeout\n");
        assert_eq!(c.req("sl", &key, "0 3").await, "error_limit_mismatch\n");
        assert_eq!(c.req("se", &key, "3").await, "error_limit_mismatch\n");
        if one_namespace(v) {
            // A lock is a semaphore of limit 1: the limits do not match.
            assert_eq!(c.req("l", &key, "0").await, "error_limit_mismatch\n");
            assert_eq!(c.req("e", &key, "").await, "error_limit_mismatch\n");
        } else {
            // The lock of the same name is another resource.
            let (t, _) = grant(&c.req("l", &key, "0").await, "ok");
            assert_eq!(d.req("e", &key, "").await, "queued\n");
            assert_eq!(c.req("r", &key, &t).await, "ok\n");
            let (t, _) = grant(&d.req("w", &key, "1").await, "ok");
            assert_eq!(d.req("r", &key, &t).await, "ok\n");
        }
        assert_eq!(a.req("sn", &key, &t1).await, "ok 33\n");
        assert_eq!(a.req("sn", &key, &format!("{t1} 4")).await, "ok 4\n");
        assert_eq!(a.req("sr", &key, &t1).await, "ok\n");
        assert_eq!(a.req("sr", &key, &t1).await, "error\n");
        grant(&c.req("sl", &key, "0 2").await, "ok");
        assert_eq!(b.req("sr", &key, &t2).await, "ok\n");

        // A semaphore of limit 1 on a lock's key.
        let lock = unique_key("lock");
        let (t, _) = grant(&a.req("l", &lock, "0").await, "ok");
        if one_namespace(v) {
            // The same resource: it waits like `l`, and `sr` releases the lock.
            assert_eq!(b.req("sl", &lock, "0 1").await, "timeout\n");
            assert_eq!(b.req("sl", &lock, "0 2").await, "error_limit_mismatch\n");
            assert_eq!(b.req("se", &lock, "2").await, "error_limit_mismatch\n");
            assert_eq!(a.req("sr", &lock, &t).await, "ok\n");
            let (t, _) = grant(&b.req("sl", &lock, "0 1").await, "ok");
            assert_eq!(a.req("l", &lock, "0").await, "timeout\n");
            assert_eq!(a.req("r", &lock, &t).await, "ok\n");
        } else {
            let (ts, _) = grant(&b.req("sl", &lock, "0 1").await, "ok");
            assert_eq!(b.req("sl", &lock, "0 2").await, "error_limit_mismatch\n");
            assert_eq!(a.req("sr", &lock, &t).await, "error\n");
            assert_eq!(a.req("r", &lock, &t).await, "ok\n");
            assert_eq!(a.req("r", &lock, &ts).await, "error\n");
            assert_eq!(b.req("sr", &lock, &ts).await, "ok\n");
        }
    })
    .await;
}

#[tokio::test]
async fn semaphore_two_phase() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("sem2p");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (t1, _) = grant(&a.req("se", &key, "1 8").await, "acquired");
        assert_eq!(a.req("se", &key, "1").await, "error_already_enqueued\n");
        assert_eq!(b.req("se", &key, "1").await, "queued\n");
        let (same, lease) = grant(&a.req("sw", &key, "1").await, "ok");
        assert_eq!((same.as_str(), lease), (t1.as_str(), 8));
        b.send_req("sw", &key, "5").await;
        assert_eq!(a.req("sr", &key, &t1).await, "ok\n");
        let (t2, lease) = grant(&b.line().await, "ok");
        assert_eq!(lease, 33);
        assert_ne!(t1, t2);
        // `w` and `sw` find the same two-phase state only when there is one namespace.
        assert_eq!(a.req("se", &key, "1").await, "queued\n");
        let answer = if one_namespace(v) {
            "timeout\n"
        } else {
            "error_not_enqueued\n"
        };
        assert_eq!(a.req("w", &key, "0").await, answer);
    })
    .await;
}

#[tokio::test]
async fn fifo_per_key() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("fifo");
        let mut holder = connect(&addr).await;
        let (mut token, _) = grant(&holder.req("l", &key, "0").await, "ok");
        let mut waiters = Vec::new();
        for i in 0..4u64 {
            let mut c = connect(&addr).await;
            c.send_req("l", &key, "10").await;
            wait_waiters(&addr, &key, i + 1).await;
            waiters.push(c);
        }
        let mut releaser = holder;
        for (i, mut next) in waiters.into_iter().enumerate() {
            assert_eq!(releaser.req("r", &key, &token).await, "ok\n");
            token = grant(&next.line().await, "ok").0;
            wait_waiters(&addr, &key, 3 - i as u64).await;
            releaser = next;
        }
        assert_eq!(releaser.req("r", &key, &token).await, "ok\n");
    })
    .await;
}

#[tokio::test]
async fn fifo_mixes_blocking_and_two_phase_waiters() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("fifo2");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let mut c = connect(&addr).await;
        let (t, _) = grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(b.req("e", &key, "").await, "queued\n");
        c.send_req("l", &key, "10").await;
        wait_waiters(&addr, &key, 2).await;
        // A new try does not jump the queue.
        assert_eq!(a.req("l", &key, "0").await, "timeout\n");
        assert_eq!(a.req("r", &key, &t).await, "ok\n");
        // b was first: granted while not even waiting yet; c still waits.
        c.expect_silence(Duration::from_millis(100)).await;
        let (tb, _) = grant(&b.req("w", &key, "1").await, "ok");
        assert_eq!(b.req("r", &key, &tb).await, "ok\n");
        grant(&c.line().await, "ok");
    })
    .await;
}

#[tokio::test]
async fn two_phase_rules() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("2p");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;

        assert_eq!(a.req("w", &key, "0").await, "error_not_enqueued\n");
        let (t, lease) = grant(&a.req("e", &key, "").await, "acquired");
        assert_eq!(lease, 33);
        assert_eq!(a.req("e", &key, "").await, "error_already_enqueued\n");
        assert_eq!(a.req("e", &key, "5").await, "error_already_enqueued\n");
        // `w` belongs to the connection that sent `e`.
        assert_eq!(b.req("w", &key, "0").await, "error_not_enqueued\n");
        assert_eq!(b.req("e", &key, "").await, "queued\n");
        assert_eq!(b.req("e", &key, "").await, "error_already_enqueued\n");
        // `w` after `acquired`: the same token.
        let (same, lease) = grant(&a.req("w", &key, "5").await, "ok");
        assert_eq!((same.as_str(), lease), (t.as_str(), 33));
        assert_eq!(a.req("w", &key, "0").await, "error_not_enqueued\n");
        // A queued `w 0` times out and leaves the queue.
        assert_eq!(b.req("w", &key, "0").await, "timeout\n");
        assert_eq!(b.req("w", &key, "0").await, "error_not_enqueued\n");
        assert_eq!(common::waiters_of(&wire_stats(&addr).await, &key), 0);
        // A queued `w` that times out after waiting leaves it too.
        assert_eq!(b.req("e", &key, "").await, "queued\n");
        assert_eq!(b.req("w", &key, "1").await, "timeout\n");
        assert_eq!(b.req("w", &key, "1").await, "error_not_enqueued\n");
        // Queued, then granted while waiting.
        assert_eq!(b.req("e", &key, "9").await, "queued\n");
        b.send_req("w", &key, "5").await;
        assert_eq!(a.req("r", &key, &t).await, "ok\n");
        let (tb, lease) = grant(&b.line().await, "ok");
        assert_eq!(lease, 9);
        // `e` on a key this connection holds (its state cleared by `w`) queues.
        assert_eq!(b.req("e", &key, "").await, "queued\n");
        assert_eq!(b.req("r", &key, &tb).await, "ok\n");
        let (tb2, _) = grant(&b.req("w", &key, "1").await, "ok");
        assert_ne!(tb, tb2);
        // Releasing an `acquired` grant before `w` clears the two-phase state.
        let other = unique_key("2p-released");
        let (t, _) = grant(&a.req("e", &other, "").await, "acquired");
        assert_eq!(a.req("r", &other, &t).await, "ok\n");
        assert_eq!(a.req("w", &other, "0").await, "error_not_enqueued\n");
    })
    .await;
}

#[tokio::test]
async fn queued_grant_expiring_before_wait() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("2p-stale");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (t, _) = grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(b.req("e", &key, "1").await, "queued\n");
        // b is granted from the queue (a one-second lease) but does not `w` in time: the
        // lease ends and the sweep (every second) removes the holder.
        assert_eq!(a.req("r", &key, &t).await, "ok\n");
        common::wait_until("the grant to expire", || async {
            wire_stats(&addr).await["locks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["key"] != key.as_str())
        })
        .await;
        let answer = b.req("w", &key, "0").await;
        if v == ServerVersion::V1_10 {
            // v1.10.0 hands out the stale token (fixed in v1.10.1); it holds nothing.
            let (stale, lease) = grant(&answer, "ok");
            assert_eq!(lease, 1);
            assert_eq!(a.req("r", &key, &stale).await, "error\n");
        } else {
            assert_eq!(answer, "error_not_enqueued\n");
        }
        assert_eq!(b.req("w", &key, "0").await, "error_not_enqueued\n");
        grant(&a.req("l", &key, "0").await, "ok");
    })
    .await;
}

#[tokio::test]
async fn auth_without_auth_server_is_an_error() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let mut a = connect(&addr).await;
        assert_eq!(a.req("auth", "_", "secret").await, "error\n");
        assert!(
            a.req("stats", "_", "")
                .await
                .starts_with("ok {\"connections\":")
        );
        // The argument of `auth` may be 64 KiB since v1.15; before, 256 bytes like any line.
        let long = "s".repeat(1000);
        a.send_req("auth", "_", &long).await;
        assert_eq!(a.line().await, "error\n");
        if v == ServerVersion::V1_10 {
            a.expect_eof().await;
        } else {
            assert!(a.req("stats", "_", "").await.starts_with("ok {"));
            a.send_req("auth", "_", &"s".repeat(65536)).await;
            assert_eq!(a.line().await, "error\n");
            assert!(a.req("stats", "_", "").await.starts_with("ok {"));
            a.send_req("auth", "_", &"s".repeat(65537)).await;
            assert_eq!(a.line().await, "error\n");
            a.expect_eof().await;
            // Only the argument of `auth`: a long key is over the line cap.
            let mut b = connect(&addr).await;
            b.send_req("auth", &long, "x").await;
            assert_eq!(b.line().await, "error\n");
            b.expect_eof().await;
        }
    })
    .await;
}

#[tokio::test]
async fn ping() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let mut a = connect(&addr).await;
        // Key and argument are not validated.
        for (key, arg) in [("_", "_"), ("", ""), ("a b", "x y z"), ("k", "-1")] {
            let want = if v == ServerVersion::V1_10 {
                // An unknown command: `error`, and the connection stays.
                "error\n"
            } else {
                "ok\n"
            };
            assert_eq!(a.req("ping", key, arg).await, want, "{key:?} {arg:?}");
        }
        assert_eq!(a.req("PING", "_", "_").await, "error\n");
        assert!(a.req("stats", "_", "").await.starts_with("ok {"));
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_keep_the_connection() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("bad");
        let mut a = connect(&addr).await;
        let cases: &[(&str, &str, &str)] = &[
            ("x", &key, "1"),
            ("L", &key, "1"),
            (" l", &key, "1"),
            ("listen", &key, ""),
            ("", &key, "1"),
            ("l", "", "1"),
            ("l", "a b", "1"),
            ("l", "a\tb", "1"),
            ("l", &key, ""),
            ("l", &key, "-1"),
            ("l", &key, "x"),
            ("l", &key, "1.5"),
            ("l", &key, "0x10"),
            ("l", &key, "1 0"),
            ("l", &key, "1 -5"),
            ("l", &key, "1 2 3"),
            ("l", &key, "99999999999999999999"),
            ("sl", &key, "1"),
            ("sl", &key, "1 0"),
            ("se", &key, ""),
            ("se", &key, "0"),
            ("e", &key, "0"),
            ("e", &key, "30 junk"),
            ("w", &key, ""),
            ("w", &key, "1 2"),
            ("w", &key, "-1"),
            ("r", &key, ""),
            ("r", &key, "   "),
            ("n", &key, ""),
            ("n", &key, "tok 0"),
            ("n", &key, "tok 1 2"),
        ];
        for (cmd, k, arg) in cases {
            assert_eq!(a.req(cmd, k, arg).await, "error\n", "{cmd:?} {k:?} {arg:?}");
        }
        // Whitespace the server tolerates, and Go integers.
        grant(&a.req("l", &key, " +0 \t007 ").await, "ok");
        assert_eq!(
            grant(&a.req("e", &unique_key("ws"), " 12 ").await, "acquired").1,
            12
        );
        // Still usable.
        assert!(a.req("stats", "", "").await.starts_with("ok {"));
    })
    .await;
}

#[tokio::test]
async fn seconds_beyond_a_go_duration() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("huge");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        // The largest number of seconds a Go duration holds is fine everywhere.
        let (t, lease) = grant(&a.req("l", &key, "9223372036 9223372036").await, "ok");
        assert_eq!(lease, 9_223_372_036);
        assert_eq!(
            a.req("n", &key, &format!("{t} 9223372036")).await,
            "ok 9223372036\n"
        );
        if v == ServerVersion::V1_10 {
            // Seconds times 10^9 wraps around: a timeout that wraps negative does not wait,
            let started = std::time::Instant::now();
            assert_eq!(b.req("l", &key, "9223372037").await, "timeout\n");
            assert!(started.elapsed() < Duration::from_millis(500));
            // one that wraps to 0.29 s waits that long,
            let started = std::time::Instant::now();
            assert_eq!(b.req("l", &key, "18446744074").await, "timeout\n");
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
                "{waited:?}"
            );
            // a lease that wraps negative is refused, and one that wraps to 0.29 s is
            // granted as 0 whole seconds, which the answer writes as the default lease.
            let other = unique_key("huge-lease");
            assert_eq!(b.req("l", &other, "0 9223372037").await, "error\n");
            let (_, lease) = grant(&b.req("l", &other, "0 18446744074").await, "ok");
            assert_eq!(lease, 33);
            assert_eq!(
                b.req("w", &unique_key("huge-w"), "9223372037").await,
                "error_not_enqueued\n"
            );
        } else {
            // Refused since v1.15: every timeout and lease field.
            let cases: &[(&str, String)] = &[
                ("l", "9223372037".into()),
                ("l", "0 9223372037".into()),
                ("sl", "9223372037 2".into()),
                ("sl", "0 2 9223372037".into()),
                ("e", "9223372037".into()),
                ("se", "2 9223372037".into()),
                ("w", "9223372037".into()),
                ("sw", "9223372037".into()),
                ("n", format!("{t} 9223372037")),
                ("sn", format!("{t} 9223372037")),
            ];
            for (cmd, arg) in cases {
                let other = unique_key("huge-other");
                assert_eq!(b.req(cmd, &other, arg).await, "error\n", "{cmd} {arg}");
            }
            // A huge limit is not seconds.
            grant(
                &b.req("sl", &unique_key("huge-limit"), "0 9223372037").await,
                "ok",
            );
        }
        assert_eq!(a.req("r", &key, &t).await, "ok\n");
    })
    .await;
}

#[tokio::test]
async fn crlf_and_every_trailing_cr_are_stripped() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("crlf");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        a.send(format!("l\r\n{key}\r\n0\r\n").as_bytes()).await;
        let (token, _) = grant(&a.line().await, "ok");
        // `key\r\r` is the same key.
        b.send(format!("l\n{key}\r\r\n0\r\n").as_bytes()).await;
        assert_eq!(b.line().await, "timeout\n");
        a.send(format!("r\r\n{key}\r\n{token}\r\r\n").as_bytes())
            .await;
        assert_eq!(a.line().await, "ok\n");
    })
    .await;
}

#[tokio::test]
async fn utf8_keys() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let key = unique_key("ключ");
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (token, _) = grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(b.req("l", &key, "0").await, "timeout\n");
        let stats = wire_stats(&addr).await;
        assert!(
            stats["locks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["key"] == key.as_str()),
            "{stats}"
        );
        assert_eq!(a.req("r", &key, &token).await, "ok\n");
    })
    .await;
}

#[tokio::test]
async fn line_limit_256_bytes() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        // Exactly 256 bytes: accepted.
        let mut key = unique_key("k");
        key.push_str(&"k".repeat(256 - key.len()));
        let mut a = connect(&addr).await;
        let (token, _) = grant(&a.req("l", &key, "0").await, "ok");
        assert_eq!(a.req("r", &key, &token).await, "ok\n");
        // A 256-byte key counted in bytes: 128 two-byte characters.
        let wide = "ж".repeat(128);
        assert_eq!(wide.len(), 256);
        let (token, _) = grant(&a.req("l", &wide, "0 1").await, "ok");
        assert_eq!(a.req("r", &wide, &token).await, "ok\n");

        // 257 bytes: `error`, then the connection closes.
        let mut b = connect(&addr).await;
        b.send(format!("l\n{key}x\n0\n").as_bytes()).await;
        assert_eq!(b.line().await, "error\n");
        b.expect_eof().await;

        // 256 bytes plus `\r\n`: the `\r` counts.
        let mut c = connect(&addr).await;
        c.send(format!("l\n{key}\r\n0\n").as_bytes()).await;
        assert_eq!(c.line().await, "error\n");
        c.expect_eof().await;

        // An over-long command line: the rest is not read.
        let mut d = connect(&addr).await;
        d.send(format!("{}\n", "l".repeat(300)).as_bytes()).await;
        assert_eq!(d.line().await, "error\n");
        d.expect_eof().await;

        // An over-long argument of another command than `auth`.
        let mut e = connect(&addr).await;
        e.send(format!("n\n{key}\n{}\n", "0".repeat(300)).as_bytes())
            .await;
        assert_eq!(e.line().await, "error\n");
        e.expect_eof().await;
    })
    .await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let k1 = unique_key("p1");
        let k2 = unique_key("p2");
        let mut a = connect(&addr).await;
        a.send(
            format!("l\n{k1}\n0\nl\n{k2}\n0 5\nbogus\n{k1}\n\nl\n{k1}\n0\nstats\n_\n\n").as_bytes(),
        )
        .await;
        let (t1, _) = grant(&a.line().await, "ok");
        let (t2, lease) = grant(&a.line().await, "ok");
        assert_eq!(lease, 5);
        assert_eq!(a.line().await, "error\n");
        assert_eq!(a.line().await, "timeout\n");
        assert!(a.line().await.starts_with("ok {"));
        a.send(format!("r\n{k1}\n{t1}\nr\n{k2}\n{t2}\n").as_bytes())
            .await;
        assert_eq!(a.line().await, "ok\n");
        assert_eq!(a.line().await, "ok\n");

        // Requests behind a blocking one wait for it, then run in order.
        let mut b = connect(&addr).await;
        let (t1, _) = grant(&b.req("l", &k1, "0").await, "ok");
        a.send(format!("l\n{k1}\n10\nl\n{k2}\n0\nr\n{k1}\nnot-a-token\n").as_bytes())
            .await;
        wait_waiters(&addr, &k1, 1).await;
        a.expect_silence(Duration::from_millis(50)).await;
        assert_eq!(b.req("r", &k1, &t1).await, "ok\n");
        grant(&a.line().await, "ok");
        grant(&a.line().await, "ok");
        assert_eq!(a.line().await, "error\n");
    })
    .await;
}

#[tokio::test]
async fn partial_request_then_eof_closes_silently() {
    each_version(|v| async move {
        let (_servers, addr) = default_server(v).await;
        let mut a = connect(&addr).await;
        a.send(b"l\nsome-key\n").await;
        a.get_mut().shutdown().await.unwrap();
        a.expect_eof().await;
    })
    .await;
}
