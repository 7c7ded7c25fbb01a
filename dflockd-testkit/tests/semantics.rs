//! Leases, disconnects, timeouts and caps: servers configured with short intervals, for every
//! server version (one body per test, the expected answers per version).

mod common;

use std::time::Duration;

use common::{builder, connect, each_version, grant, s, wait_until, wait_waiters, wire_stats};
use dflockd_testkit::{ServerVersion, unique_key};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn expired_lease_passes_to_the_next_waiter() {
    each_version(|v| async move {
        let server = builder(v)
            .lease_sweep_interval(ms(50))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (t1, lease) = grant(&a.req("l", "k", "0 1").await, "ok");
        assert_eq!(lease, 1);
        let started = std::time::Instant::now();
        let (t2, _) = grant(&b.req("l", "k", "5").await, "ok");
        let waited = started.elapsed();
        assert!(waited >= ms(900) && waited < ms(2000), "{waited:?}");
        assert_ne!(t1, t2);
        // The expired token is dead for good.
        assert_eq!(a.req("n", "k", &t1).await, "error\n");
        assert_eq!(a.req("r", "k", &t1).await, "error\n");
        assert_eq!(b.req("r", "k", &t2).await, "ok\n");
    })
    .await;
}

#[tokio::test]
async fn expired_but_not_swept() {
    each_version(|v| async move {
        // The sweep never runs during the test.
        let server = builder(v)
            .default_lease(ms(100))
            .lease_sweep_interval(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        // A sub-second default lease is reported as 0 whole seconds.
        let (t, lease) = grant(&a.req("l", "r", "0").await, "ok");
        assert_eq!(lease, 0);
        let (tn, _) = grant(&a.req("l", "n", "0").await, "ok");
        tokio::time::sleep(ms(150)).await;
        // `r` does not check expiry; `n` does (and evicts).
        assert_eq!(a.req("r", "r", &t).await, "ok\n");
        assert_eq!(a.req("n", "n", &tn).await, "error\n");
        assert_eq!(a.req("r", "n", &tn).await, "error\n");
        // `l` on a key whose holder expired evicts it.
        let (t, _) = grant(&a.req("l", "x", "0").await, "ok");
        tokio::time::sleep(ms(150)).await;
        let mut b = connect(&addr).await;
        grant(&b.req("l", "x", "0").await, "ok");
        assert_eq!(a.req("r", "x", &t).await, "error\n");
    })
    .await;
}

#[tokio::test]
async fn two_phase_grant_expiring_before_wait() {
    each_version(|v| async move {
        let unswept = builder(v)
            .default_lease(ms(100))
            .lease_sweep_interval(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();
        let addr = s(unswept.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        // Acquired at `e`, expired before `w`, not swept: error_lease_expired.
        grant(&a.req("e", "k", "").await, "acquired");
        tokio::time::sleep(ms(150)).await;
        assert_eq!(a.req("w", "k", "1").await, "error_lease_expired\n");
        assert_eq!(a.req("w", "k", "0").await, "error_not_enqueued\n");
        // Queued, granted on release, expired before `w`: the same since v1.10.1; v1.10.0
        // hands out the token and gives the expired (unswept) holder a fresh lease.
        let (t, _) = grant(&a.req("l", "q", "0 60").await, "ok");
        assert_eq!(b.req("e", "q", "").await, "queued\n");
        assert_eq!(a.req("r", "q", &t).await, "ok\n");
        tokio::time::sleep(ms(150)).await;
        let answer = b.req("w", "q", "1").await;
        if v == ServerVersion::V1_10 {
            let (t, lease) = grant(&answer, "ok");
            assert_eq!(lease, 0, "a sub-second lease");
            assert_eq!(b.req("r", "q", &t).await, "ok\n");
        } else {
            assert_eq!(answer, "error_lease_expired\n");
        }
        assert_eq!(b.req("w", "q", "1").await, "error_not_enqueued\n");
        // `w` after `acquired` restarts the lease from that moment.
        let (t, _) = grant(&a.req("e", "fresh", "").await, "acquired");
        tokio::time::sleep(ms(60)).await;
        assert_eq!(grant(&a.req("w", "fresh", "1").await, "ok").0, t);
        tokio::time::sleep(ms(60)).await;
        assert_eq!(a.req("n", "fresh", &t).await, "ok 0\n");

        // With the sweep running, the expired grant and its two-phase state are gone.
        let swept = builder(v)
            .default_lease(ms(100))
            .lease_sweep_interval(ms(20))
            .start()
            .await
            .unwrap();
        let mut c = connect(s(swept.addr())).await;
        grant(&c.req("e", "k", "").await, "acquired");
        tokio::time::sleep(ms(200)).await;
        assert_eq!(c.req("w", "k", "1").await, "error_not_enqueued\n");
    })
    .await;
}

#[tokio::test]
async fn disconnect_releases_locks_and_drops_waits() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let mut c = connect(&addr).await;
        let (_t, _) = grant(&a.req("l", "held", "0").await, "ok");
        let (tc, _) = grant(&c.req("l", "busy", "0").await, "ok");
        assert_eq!(a.req("e", "busy", "").await, "queued\n");
        b.send_req("l", "held", "10").await;
        wait_waiters(&addr, "held", 1).await;
        drop(a);
        // b gets the lock a held; a's queued `e` is gone.
        grant(&b.line().await, "ok");
        assert_eq!(
            server
                .stats()
                .locks
                .iter()
                .find(|l| l.key == "busy")
                .unwrap()
                .waiters,
            0
        );
        assert_eq!(c.req("r", "busy", &tc).await, "ok\n");
        assert!(server.stats().idle_locks.iter().any(|l| l.key == "busy"));
    })
    .await;
}

#[tokio::test]
async fn disconnect_while_blocked() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut holder = connect(&addr).await;
        let (t, _) = grant(&holder.req("l", "k", "0").await, "ok");
        let mut a = connect(&addr).await;
        grant(&a.req("l", "mine", "0").await, "ok");
        a.send_req("l", "k", "20").await;
        wait_waiters(&addr, "k", 1).await;
        let mut next = connect(&addr).await;
        next.send_req("l", "k", "20").await;
        wait_waiters(&addr, "k", 2).await;
        drop(a);
        if v == ServerVersion::V1_10 {
            // Nobody reads the socket during the wait: the waiter stays queued and counted,
            // its connection too, its lock held.
            tokio::time::sleep(ms(300)).await;
            let st = server.stats();
            assert_eq!(st.connections, 3);
            assert_eq!(st.locks.iter().find(|l| l.key == "k").unwrap().waiters, 2);
            assert!(st.locks.iter().any(|l| l.key == "mine"));
            // A release grants the dead waiter; its answer goes to the closed socket, the
            // next read sees the end, and the cleanup hands the key on at once.
            let released = std::time::Instant::now();
            assert_eq!(holder.req("r", "k", &t).await, "ok\n");
            let (t, _) = grant(&next.line().await, "ok");
            let took = released.elapsed();
            assert!(took < ms(500), "{took:?}");
            assert_eq!(next.req("r", "k", &t).await, "ok\n");
        } else {
            // Noticed at once: the wait is dropped, the connection's lock released.
            wait_until("the blocked client's cleanup", || async {
                let st = server.stats();
                st.connections == 2
                    && st.locks.iter().all(|l| l.key != "mine")
                    && st.locks.iter().find(|l| l.key == "k").unwrap().waiters == 1
            })
            .await;
            assert_eq!(holder.req("r", "k", &t).await, "ok\n");
            let (t, _) = grant(&next.line().await, "ok");
            assert_eq!(next.req("r", "k", &t).await, "ok\n");
        }
        wait_until("no lock", || async { server.stats().locks.is_empty() }).await;

        // The same for a blocked `w`, and for a client that only shuts down its sending half.
        let (t, _) = grant(&holder.req("l", "k", "0").await, "ok");
        let mut b = connect(&addr).await;
        assert_eq!(b.req("e", "k", "").await, "queued\n");
        b.send_req("w", "k", "20").await;
        let mut c = connect(&addr).await;
        c.send_req("l", "k", "20").await;
        wait_waiters(&addr, "k", 2).await;
        tokio::io::AsyncWriteExt::shutdown(b.get_mut())
            .await
            .unwrap();
        if v == ServerVersion::V1_10 {
            tokio::time::sleep(ms(300)).await;
            assert_eq!(waiters(&server, "k"), 2);
            assert_eq!(holder.req("r", "k", &t).await, "ok\n");
            // The answer still reaches the half-closed client; then its end is read.
            grant(&b.line().await, "ok");
            b.expect_eof().await;
        } else {
            wait_waiters(&addr, "k", 1).await;
            assert_eq!(holder.req("r", "k", &t).await, "ok\n");
            b.expect_eof().await;
        }
        let (t, _) = grant(&c.line().await, "ok");
        assert_eq!(c.req("r", "k", &t).await, "ok\n");
        wait_until("no lock", || async { server.stats().locks.is_empty() }).await;
    })
    .await;
}

fn waiters(server: &dflockd_testkit::TestServer, key: &str) -> u64 {
    server
        .stats()
        .locks
        .iter()
        .find(|l| l.key == key)
        .map_or(0, |l| l.waiters)
}

#[tokio::test]
async fn dead_waiter_stays_until_its_timeout_in_v1_10() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut holder = connect(&addr).await;
        grant(&holder.req("l", "k", "0").await, "ok");
        let mut a = connect(&addr).await;
        a.send_req("l", "k", "1").await;
        wait_waiters(&addr, "k", 1).await;
        drop(a);
        if v == ServerVersion::V1_10 {
            tokio::time::sleep(ms(400)).await;
            assert_eq!((waiters(&server, "k"), server.stats().connections), (1, 2));
        }
        // Its wait times out (v1.10) or was dropped at once: either way it is gone.
        wait_until("the dead waiter to go", || async {
            waiters(&server, "k") == 0 && server.stats().connections == 1
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn auto_release_off() {
    each_version(|v| async move {
        let server = builder(v)
            .auto_release_on_disconnect(false)
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let (t, _) = grant(&a.req("l", "kept", "0 60").await, "ok");
        let (tb, _) = grant(&b.req("l", "other", "0").await, "ok");
        assert_eq!(a.req("e", "other", "").await, "queued\n");
        drop(a);
        wait_until("the connection to close", || async {
            server.stats().connections == 1
        })
        .await;
        if v == ServerVersion::V1_10 {
            // v1.10 cleans up nothing: the queued `e` stays.
            tokio::time::sleep(ms(100)).await;
            assert_eq!(waiters(&server, "other"), 1);
        } else {
            // Since v1.15 the queued wait and two-phase state go; only held slots stay.
            wait_until("a's queued wait to go", || async {
                waiters(&server, "other") == 0
            })
            .await;
        }
        assert_eq!(b.req("l", "kept", "0").await, "timeout\n");
        // The token still works from elsewhere.
        assert_eq!(b.req("r", "kept", &t).await, "ok\n");
        assert_eq!(b.req("r", "other", &tb).await, "ok\n");
        // v1.10: the dead connection's `e` got the key and keeps it until its lease ends.
        let answer = if v == ServerVersion::V1_10 {
            "timeout\n"
        } else {
            "ok "
        };
        assert!(b.req("l", "other", "0").await.starts_with(answer));
    })
    .await;
}

#[tokio::test]
async fn idle_read_timeout_closes_and_releases() {
    each_version(|v| async move {
        let server = builder(v).read_timeout(ms(300)).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        grant(&a.req("l", "k", "0").await, "ok");
        let started = std::time::Instant::now();
        assert_eq!(a.line().await, "error\n");
        assert!(started.elapsed() >= ms(250), "{:?}", started.elapsed());
        a.expect_eof().await;
        let mut b = connect(&addr).await;
        grant(&b.req("l", "k", "0").await, "ok");
        // The timeout is per line: a slow but steady request is fine; a stalled line is not.
        b.send(b"stats\n").await;
        tokio::time::sleep(ms(200)).await;
        b.send(b"_\n").await;
        tokio::time::sleep(ms(200)).await;
        b.send(b"\n").await;
        assert!(b.line().await.starts_with("ok {"));
        // A blocking wait is not cut by the read timeout (here: waiting for a lock the same
        // connection holds).
        let mut c = connect(&addr).await;
        grant(&c.req("l", "x", "0").await, "ok");
        assert_eq!(c.req("l", "x", "1").await, "timeout\n");
    })
    .await;
}

#[tokio::test]
async fn max_locks_counts_locks_semaphores_and_idle_keys() {
    each_version(|v| async move {
        let server = builder(v).max_locks(2).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let (t, _) = grant(&a.req("l", "a", "0").await, "ok");
        grant(&a.req("sl", "b", "0 2").await, "ok");
        // A semaphore named like a lock: the same resource in v1.10, one more since v1.14.
        let answer = if v == ServerVersion::V1_10 {
            "error_limit_mismatch\n"
        } else {
            "error_max_locks\n"
        };
        assert_eq!(a.req("sl", "a", "0 2").await, answer);
        assert_eq!(a.req("e", "b", "").await, answer);
        assert_eq!(a.req("l", "c", "0").await, "error_max_locks\n");
        assert_eq!(a.req("sl", "c", "0 2").await, "error_max_locks\n");
        assert_eq!(a.req("e", "c", "").await, "error_max_locks\n");
        assert_eq!(a.req("se", "c", "2").await, "error_max_locks\n");
        assert_eq!(a.req("r", "a", &t).await, "ok\n");
        // "a" is idle but still counts; existing keys are still served.
        assert_eq!(a.req("l", "c", "0").await, "error_max_locks\n");
        grant(&a.req("l", "a", "0").await, "ok");
        grant(&a.req("sl", "b", "0 2").await, "ok");
        // `r`, `n`, `w` and `stats` never create keys.
        assert_eq!(a.req("r", "c", "x").await, "error\n");
        assert_eq!(a.req("w", "c", "0").await, "error_not_enqueued\n");
        assert_eq!(
            server.stats().locks.len() + server.stats().semaphores.len(),
            2
        );
    })
    .await;
}

#[tokio::test]
async fn max_waiters_counts_queued_waiters_only() {
    each_version(|v| async move {
        let server = builder(v).max_waiters(1).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let mut c = connect(&addr).await;
        let (t, _) = grant(&a.req("l", "k", "0").await, "ok");
        assert_eq!(b.req("e", "k", "").await, "queued\n");
        assert_eq!(c.req("l", "k", "5").await, "error_max_waiters\n");
        assert_eq!(c.req("l", "k", "0").await, "error_max_waiters\n");
        assert_eq!(c.req("e", "k", "").await, "error_max_waiters\n");
        // Holders do not count: a semaphore with two holders and one waiter.
        let (s1, _) = grant(&a.req("sl", "p", "0 2").await, "ok");
        grant(&b.req("sl", "p", "0 2").await, "ok");
        c.send_req("sl", "p", "5 2").await;
        wait_waiters(&addr, "p", 1).await;
        assert_eq!(a.req("sl", "p", "5 2").await, "error_max_waiters\n");
        assert_eq!(a.req("sr", "p", &s1).await, "ok\n");
        grant(&c.line().await, "ok");
        assert_eq!(a.req("r", "k", &t).await, "ok\n");
    })
    .await;
}

#[tokio::test]
async fn max_connections_closes_extra_sockets_without_a_byte() {
    each_version(|v| async move {
        let server = builder(v).max_connections(1).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        assert!(
            a.req("stats", "_", "")
                .await
                .starts_with("ok {\"connections\":1,")
        );
        let mut b = connect(&addr).await;
        b.expect_eof().await;
        drop(a);
        wait_until("the first connection to close", || async {
            server.stats().connections == 0
        })
        .await;
        let mut c = connect(&addr).await;
        // Rejected sockets do not use up connection ids: this is connection 2.
        grant(&c.req("l", "k", "0").await, "ok");
        assert_eq!(server.stats().locks[0].owner_conn_id, 2);
    })
    .await;
}

#[tokio::test]
async fn max_connections_per_ip() {
    each_version(|v| async move {
        let started = builder(v).max_connections_per_ip(2).start().await;
        if v == ServerVersion::V1_10 {
            // The option came in v1.16.
            let err = started.unwrap_err();
            assert!(matches!(err, dflockd_testkit::Error::Config(_)), "{err}");
            return;
        }
        let server = started.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        grant(&a.req("l", "k", "0").await, "ok");
        assert!(
            b.req("stats", "_", "")
                .await
                .starts_with("ok {\"connections\":2,")
        );
        // A third from the same address: closed without a byte.
        let mut c = connect(&addr).await;
        c.expect_eof().await;
        drop(b);
        wait_until("a free slot", || async { server.stats().connections == 1 }).await;
        let mut d = connect(&addr).await;
        // Rejected sockets take no connection id: this is connection 3.
        grant(&d.req("l", "d", "0").await, "ok");
        let owner = server
            .stats()
            .locks
            .iter()
            .find(|l| l.key == "d")
            .unwrap()
            .owner_conn_id;
        assert_eq!(owner, 3);
    })
    .await;
}

#[tokio::test]
async fn idle_keys_are_collected() {
    each_version(|v| async move {
        let server = builder(v)
            .gc_interval(ms(20))
            .gc_max_idle(ms(200))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let (t, _) = grant(&a.req("l", "k", "0").await, "ok");
        let (ts, _) = grant(&a.req("sl", "s", "0 3").await, "ok");
        assert_eq!(a.req("r", "k", &t).await, "ok\n");
        assert_eq!(a.req("sr", "s", &ts).await, "ok\n");
        let stats = wire_stats(&addr).await;
        assert_eq!(stats["idle_locks"][0]["key"], "k");
        assert_eq!(stats["idle_semaphores"][0]["key"], "s");
        wait_until("GC", || async {
            let st = server.stats();
            st.idle_locks.is_empty() && st.idle_semaphores.is_empty()
        })
        .await;
        // A held key is never collected.
        grant(&a.req("l", "held", "0").await, "ok");
        tokio::time::sleep(ms(300)).await;
        assert_eq!(server.stats().locks.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn slow_reader_hits_the_write_timeout_without_stalling_others() {
    each_version(|v| async move {
        let server = builder(v)
            .write_timeout(ms(200))
            .max_locks(10_000)
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut setup = connect(&addr).await;
        let mut batch = String::new();
        for i in 0..300 {
            batch.push_str(&format!("l\nkey-with-a-longish-name-{i:04}\n0\n"));
        }
        setup.send(batch.as_bytes()).await;
        for _ in 0..300 {
            grant(&setup.line().await, "ok");
        }
        // Never reads: ~16 MB of stats answers cannot all fit in socket buffers.
        let mut slow = connect(&addr).await;
        let stats_req = "stats\n_\n\n".repeat(800);
        let writer = tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(slow.get_mut(), stats_req.as_bytes()).await;
            slow
        });
        // Others are served meanwhile.
        let mut other = connect(&addr).await;
        for _ in 0..20 {
            grant(&other.req("l", &unique_key("free"), "0").await, "ok");
        }
        wait_until("the slow reader to be dropped", || async {
            server.stats().connections == 2
        })
        .await;
        drop(writer.await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn pipelining_behind_a_blocked_request() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut holder = connect(&addr).await;
        let (t, _) = grant(&holder.req("l", "k", "0").await, "ok");
        let mut a = connect(&addr).await;
        a.send_req("l", "k", "10").await;
        wait_waiters(&addr, "k", 1).await;
        // 4800 bytes of requests behind the blocked one.
        a.send("r\nk\nx\n".repeat(800).as_bytes()).await;
        tokio::time::sleep(ms(100)).await;
        if v == ServerVersion::V1_10 {
            // Nobody reads them before the wait ends; then they are answered in order.
            assert_eq!(holder.req("r", "k", &t).await, "ok\n");
            grant(&a.line().await, "ok");
            for _ in 0..800 {
                assert_eq!(a.line().await, "error\n");
            }
        } else {
            // A full read buffer behind a blocked request: the client is disconnected.
            a.expect_eof().await;
            wait_waiters(&addr, "k", 0).await;
            assert_eq!(holder.req("r", "k", &t).await, "ok\n");
        }
    })
    .await;
}
