//! The `stats` answer, byte for byte, for every server version.

mod common;

use std::time::Duration;

use common::{builder, connect, each_version, grant, s, wait_waiters};
use dflockd_testkit::ServerVersion;

/// Replaces every float after `"lease_expires_in_s":` and `"idle_s":` by `#`, checking that it
/// is written the way Go writes a float64; returns the floats too.
fn mask_floats(json: &str) -> (String, Vec<f64>) {
    let mut out = String::new();
    let mut floats = Vec::new();
    let mut rest = json;
    loop {
        let next = ["\"lease_expires_in_s\":", "\"idle_s\":"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min();
        let Some((at, len)) = next else {
            out.push_str(rest);
            return (out, floats);
        };
        out.push_str(&rest[..at + len]);
        rest = &rest[at + len..];
        let end = rest.find([',', '}']).unwrap();
        let number = &rest[..end];
        assert!(
            !number.ends_with(".0") && !number.contains(".0e"),
            "{number}"
        );
        assert!(
            number
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'-'),
            "{number}"
        );
        floats.push(number.parse().unwrap());
        out.push('#');
        rest = &rest[end..];
    }
}

#[tokio::test]
async fn stats_json_exact() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let weird = "<x>&\"\\\u{1}\u{2028}é";
        grant(&a.req("l", "job", "0").await, "ok");
        grant(&a.req("sl", "one", "0 1 5").await, "ok");
        grant(&a.req("l", weird, "0").await, "ok");
        a.send(b"l\nbad\xff\n0\n").await;
        grant(&a.line().await, "ok");
        grant(&a.req("sl", "pool", "0 3").await, "ok");
        let (t, _) = grant(&a.req("l", "old", "0").await, "ok");
        assert_eq!(a.req("r", "old", &t).await, "ok\n");
        let (t, _) = grant(&a.req("se", "isem", "2").await, "acquired");
        assert_eq!(a.req("sr", "isem", &t).await, "ok\n");
        b.send_req("l", "job", "10").await;
        wait_waiters(&addr, "job", 1).await;
        // The helper's own connections are gone.
        common::wait_until("2 connections", || async { server.stats().connections == 2 }).await;

        let line = a.req("stats", "ignored key", "ignored arg").await;
        let json = line.strip_prefix("ok ").unwrap().strip_suffix('\n').unwrap();
        let (masked, floats) = mask_floats(json);
        let want = concat!(
            r#"{"connections":2,"locks":["#,
            r#"{"key":"\u003cx\u003e\u0026\"\\\u0001\u2028é","owner_conn_id":1,"lease_expires_in_s":#,"waiters":0},"#,
            r#"{"key":"bad\ufffd","owner_conn_id":1,"lease_expires_in_s":#,"waiters":0},"#,
            r#"{"key":"job","owner_conn_id":1,"lease_expires_in_s":#,"waiters":1},"#,
            r#"{"key":"one","owner_conn_id":1,"lease_expires_in_s":#,"waiters":0}],"#,
            r#""semaphores":[{"key":"pool","limit":3,"holders":1,"waiters":0}],"#,
            r#""idle_locks":[{"key":"old","idle_s":#}],"#,
            r#""idle_semaphores":[{"key":"isem","idle_s":#}]}"#
        );
        assert_eq!(masked, want);
        assert_eq!(floats.len(), 6);
        for lease in &floats[..3] {
            assert!((32.0..33.0).contains(lease), "{floats:?}");
        }
        assert!((4.0..5.0).contains(&floats[3]), "{floats:?}");
        for idle in &floats[4..] {
            assert!((0.0..5.0).contains(idle), "{floats:?}");
        }

        // The handle's view is the same data.
        let (masked_local, _) = mask_floats(&server.stats_json());
        assert_eq!(masked_local, want);
        let typed = server.stats();
        assert_eq!(typed.connections, 2);
        assert_eq!(typed.locks[1].key, "bad\u{fffd}");
        assert_eq!(typed.locks[2].waiters, 1);
        assert_eq!(typed.semaphores[0].limit, 3);
        assert_eq!(typed.idle_semaphores[0].key, "isem");
    })
    .await;
}

#[tokio::test]
async fn stats_json_empty_and_zero_lease() {
    each_version(|v| async move {
        let server = builder(v)
            .default_lease(Duration::from_millis(50))
            .lease_sweep_interval(Duration::from_secs(3600))
            .start()
            .await
            .unwrap();
        let mut a = connect(server.addr()).await;
        assert_eq!(
            a.req("stats", "_", "").await,
            "ok {\"connections\":1,\"locks\":[],\"semaphores\":[],\"idle_locks\":[],\"idle_semaphores\":[]}\n"
        );
        grant(&a.req("l", "k", "0").await, "ok");
        tokio::time::sleep(Duration::from_millis(80)).await;
        // Expired but not swept: zero seconds left, written as Go writes 0.
        assert_eq!(
            a.req("stats", "_", "").await,
            "ok {\"connections\":1,\"locks\":[{\"key\":\"k\",\"owner_conn_id\":1,\"lease_expires_in_s\":0,\"waiters\":0}],\"semaphores\":[],\"idle_locks\":[],\"idle_semaphores\":[]}\n"
        );
    })
    .await;
}

#[tokio::test]
async fn stats_list_by_limit_and_namespace() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        grant(&a.req("l", "k", "0").await, "ok");
        let answer = b.req("sl", "k", "0 1").await;
        let stats = server.stats();
        if v == ServerVersion::V1_10 {
            // One resource: the semaphore request of limit 1 waits for the lock.
            assert_eq!(answer, "timeout\n");
            assert_eq!(stats.locks.len(), 1);
        } else {
            // Two resources of limit 1, both listed under `locks` by their limit.
            grant(&answer, "ok");
            let keys: Vec<_> = stats.locks.iter().map(|l| l.key.as_str()).collect();
            assert_eq!(keys, ["k", "k"]);
            assert_eq!(
                stats
                    .locks
                    .iter()
                    .map(|l| l.owner_conn_id)
                    .collect::<Vec<_>>(),
                [1, 2]
            );
        }
        assert!(stats.semaphores.is_empty());
    })
    .await;
}

#[tokio::test]
async fn bogus_tokens_and_idle_time() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let mut a = connect(server.addr()).await;
        let (t, _) = grant(&a.req("l", "k", "0").await, "ok");
        assert_eq!(a.req("r", "k", &t).await, "ok\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bogus = "0123456789abcdef0123456789abcdef";
        assert_eq!(a.req("r", "k", bogus).await, "error\n");
        assert_eq!(a.req("n", "k", bogus).await, "error\n");
        let idle = Duration::from_secs_f64(server.stats().idle_locks[0].idle_s);
        if v == ServerVersion::V1_10 {
            // Any `r`/`n` counts as activity before v1.16.1.
            assert!(idle < Duration::from_millis(200), "{idle:?}");
        } else {
            assert!(idle >= Duration::from_millis(300), "{idle:?}");
        }
    })
    .await;
}
