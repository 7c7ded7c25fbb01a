//! Lifecycle: tokens and fences, draining (per server version), pause, kill/restart,
//! dropping, runtimes, choosing the version.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bounded, builder, connect, each_version, fence, grant, s, wait_until, wait_waiters};
use dflockd_testkit::{ServerVersion, TestServer, TestServers};

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn tokens_and_fences() {
    each_version(|v| async move {
        let before = unix_nanos();
        let server = builder(v).start().await.unwrap();
        assert_eq!(server.version(), v);
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut b = connect(&addr).await;
        let mut fences = Vec::new();
        let (t, _) = grant(&a.req("l", "one", "0").await, "ok");
        fences.push(fence(&t));
        let (t2, _) = grant(&a.req("sl", "pool", "0 3").await, "ok");
        fences.push(fence(&t2));
        let (t3, _) = grant(&a.req("e", "two", "").await, "acquired");
        fences.push(fence(&t3));
        // `w` after `acquired` returns the same token: no new fence.
        assert_eq!(grant(&a.req("w", "two", "1").await, "ok").0, t3);
        b.send_req("l", "one", "5").await;
        wait_waiters(&addr, "one", 1).await;
        assert_eq!(a.req("r", "one", &t).await, "ok\n");
        fences.push(fence(&grant(&b.line().await, "ok").0));
        for i in 0..20 {
            fences.push(fence(
                &grant(&a.req("l", &format!("k{i}"), "0").await, "ok").0,
            ));
        }
        if v == ServerVersion::V1_10 {
            // 32 random hex digits.
            assert!(fences.windows(2).any(|p| p[1] != p[0] + 1), "{fences:?}");
            return;
        }
        assert!(
            fences[0] > before,
            "the counter starts at the Unix time in ns"
        );
        assert!(fences[0] < unix_nanos());
        for pair in fences.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "one step per grant: {fences:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains() {
    each_version(|v| async move {
        let server = builder(v)
            .shutdown_timeout(Duration::from_millis(500))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut idle = connect(&addr).await;
        let mut holder = connect(&addr).await;
        let mut blocked = connect(&addr).await;
        let mut late = connect(&addr).await;
        let (t, _) = grant(&holder.req("l", "k", "0").await, "ok");
        blocked.send_req("l", "k", "10").await;
        wait_waiters(&addr, "k", 1).await;

        let started = std::time::Instant::now();
        let checks = async {
            // Both: a blocked wait ends with `error`, the listener closes.
            assert_eq!(blocked.line().await, "error\n");
            wait_until("the listener to close", || async {
                tokio::net::TcpStream::connect(&addr).await.is_err()
            })
            .await;
            if v == ServerVersion::V1_10 {
                // v1.10 keeps serving open connections.
                grant(&idle.req("l", "x", "0").await, "ok");
                assert!(idle.req("stats", "_", "").await.starts_with("ok {"));
                assert_eq!(holder.req("n", "k", &t).await, "ok 33\n");
                // A request that would wait ends at once.
                assert_eq!(blocked.req("l", "k", "10").await, "error\n");
                assert_eq!(blocked.req("l", "k", "0").await, "timeout\n");
                assert_eq!(holder.req("r", "k", &t).await, "ok\n");
                grant(&late.req("l", "k", "0").await, "ok");
                // After the shutdown timeout, open connections are closed without an answer.
                for c in [&mut idle, &mut holder, &mut blocked, &mut late] {
                    c.expect_eof().await;
                }
            } else {
                // Since v1.16: a malformed request is still `error` (the connection stays),
                // the next well-formed one `error_draining`, and the connection closes.
                assert_eq!(holder.req("bogus", "_", "").await, "error\n");
                assert_eq!(holder.req("r", "k", &t).await, "error_draining\n");
                holder.expect_eof().await;
                assert_eq!(idle.req("ping", "_", "").await, "error_draining\n");
                idle.expect_eof().await;
                assert_eq!(blocked.req("stats", "_", "").await, "error_draining\n");
                blocked.expect_eof().await;
                assert_eq!(late.req("auth", "_", "x").await, "error_draining\n");
                late.expect_eof().await;
            }
        };
        tokio::join!(server.shutdown(), checks);
        let took = started.elapsed();
        if v == ServerVersion::V1_10 {
            assert!(took >= Duration::from_millis(450), "{took:?}");
        }
        assert!(!server.is_running());
        assert_eq!(server.stats().connections, 0);
        // A second shutdown is a no-op.
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn drain_stops_lease_expiry() {
    each_version(|v| async move {
        let server = builder(v)
            .lease_sweep_interval(Duration::from_millis(20))
            .shutdown_timeout(Duration::from_secs(5))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let mut watcher = connect(&addr).await;
        grant(&a.req("l", "k", "0 1").await, "ok");
        let stopped = async {
            wait_until("the listener to close", || async {
                tokio::net::TcpStream::connect(&addr).await.is_err()
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1300)).await;
            // The lease ran out but nothing swept it (v1.10 still answers `stats`).
            if v == ServerVersion::V1_10 {
                let stats = watcher.req("stats", "_", "").await;
                assert!(stats.contains("\"key\":\"k\""), "{stats}");
            } else {
                assert_eq!(server.stats().locks.len(), 1);
            }
            drop((a, watcher));
        };
        tokio::join!(server.shutdown(), stopped);
    })
    .await;
}

#[tokio::test]
async fn drain_never_refuses_the_auth_handshake() {
    each_version(|v| async move {
        let server = builder(v)
            .auth_token("s3cret")
            .shutdown_timeout(Duration::from_secs(5))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut good = connect(&addr).await;
        let mut bad = connect(&addr).await;
        let mut long = connect(&addr).await;
        // Accepted, not yet authenticated.
        wait_until("3 connections", || async {
            server.stats().connections == 3
        })
        .await;
        let checks = async {
            wait_until("the listener to close", || async {
                tokio::net::TcpStream::connect(&addr).await.is_err()
            })
            .await;
            assert_eq!(good.req("auth", "_", "s3cret").await, "ok\n");
            let answer = if v == ServerVersion::V1_10 {
                "ok {"
            } else {
                "error_draining\n"
            };
            assert!(good.req("stats", "_", "").await.starts_with(answer));
            assert_eq!(bad.req("auth", "_", "nope").await, "error_auth\n");
            bad.expect_eof().await;
            long.send(format!("auth\n_\n{}\n", "x".repeat(70_000)).as_bytes())
                .await;
            assert_eq!(long.line().await, "error_auth\n");
            long.expect_eof().await;
            drop(good);
        };
        tokio::join!(server.shutdown(), checks);
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_early_when_clients_leave() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let mut a = connect(server.addr()).await;
        grant(&a.req("l", "k", "0").await, "ok");
        let started = std::time::Instant::now();
        let addr = server.addr();
        tokio::join!(server.shutdown(), async move {
            wait_until("the listener to close", || async {
                tokio::net::TcpStream::connect(addr).await.is_err()
            })
            .await;
            let answer = a.req("l", "k2", "0").await;
            if v == ServerVersion::V1_10 {
                grant(&answer, "ok");
            } else {
                assert_eq!(answer, "error_draining\n");
            }
            drop(a);
        });
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn pause_and_resume() {
    each_version(|v| async move {
        let server = builder(v)
            .read_timeout(Duration::from_millis(300))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let (t, _) = grant(&a.req("l", "k", "0").await, "ok");
        server.pause();
        a.send_req("r", "k", &t).await;
        a.send_req("l", "k", "0").await;
        // Nothing is answered, and the idle read timeout does not fire while paused.
        a.expect_silence(Duration::from_millis(500)).await;
        let mut b = connect(&addr).await;
        b.send_req("stats", "_", "").await;
        b.expect_silence(Duration::from_millis(50)).await;
        assert_eq!(
            server.stats().locks.len(),
            1,
            "the request was not processed"
        );
        server.resume();
        assert_eq!(a.line().await, "ok\n");
        grant(&a.line().await, "ok");
        assert!(b.line().await.starts_with("ok {\"connections\":2,"));
    })
    .await;
}

#[tokio::test]
async fn kill_and_restart_on_the_same_port() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut a = connect(&addr).await;
        let (t, _) = grant(&a.req("l", "k", "0").await, "ok");
        a.send_req("l", "k", "10").await;
        server.kill();
        a.expect_eof().await;
        assert!(!server.is_running());
        assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
        assert_eq!(server.stats(), dflockd_testkit::Stats::default());
        server.kill();

        server.restart().await.unwrap();
        assert_eq!(s(server.addr()), addr);
        let mut b = connect(&addr).await;
        // Fresh state: the key is free, and (since v2.1) fences continue upwards.
        let (t2, _) = grant(&b.req("l", "k", "0").await, "ok");
        if v == ServerVersion::V2_1 {
            assert!(fence(&t2) > fence(&t));
        }
        assert_eq!(b.req("r", "k", &t).await, "error\n");

        // Restart after a shutdown (the drain ends as soon as the clients are gone), and
        // restart of a running server.
        drop(b);
        drop(a);
        server.shutdown().await;
        server.restart().await.unwrap();
        let mut c = connect(&addr).await;
        grant(&c.req("l", "k", "0").await, "ok");
        server.restart().await.unwrap();
        c.expect_eof().await;
        grant(&connect(&addr).await.req("l", "k", "0").await, "ok");
    })
    .await;
}

#[tokio::test]
async fn drop_frees_the_port() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let addr = server.addr();
        let mut a = connect(addr).await;
        grant(&a.req("l", "k", "0").await, "ok");
        drop(server);
        a.expect_eof().await;
        std::net::TcpListener::bind(addr).expect("port still taken");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_in_a_multi_thread_runtime() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let mut a = connect(server.addr()).await;
        grant(&a.req("l", "k", "0").await, "ok");
        let addr = server.addr();
        drop(server);
        std::net::TcpListener::bind(addr).expect("port still taken");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_callers_paused_clock_does_not_affect_the_server() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    // No timeouts around I/O here: with a paused clock they would fire at once.
    async fn req(c: &mut tokio::io::BufReader<tokio::net::TcpStream>, r: &str) -> String {
        c.get_mut().write_all(r.as_bytes()).await.unwrap();
        let mut line = String::new();
        c.read_line(&mut line).await.unwrap();
        line
    }
    let server = TestServer::start().await.unwrap();
    let connect = || async {
        tokio::io::BufReader::new(tokio::net::TcpStream::connect(server.addr()).await.unwrap())
    };
    let mut a = connect().await;
    let mut b = connect().await;
    grant(&req(&mut a, "l\nk\n0 1\n").await, "ok");
    // An hour passes for the caller in no time; the server's clock is real.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(req(&mut b, "l\nk\n0\n").await, "timeout\n");
    assert!(req(&mut a, "stats\n_\n\n").await.starts_with("ok {"));
    drop((a, b));
    server.shutdown().await;
}

#[test]
fn works_without_a_runtime() {
    let handle = std::thread::spawn(|| {
        let server = TestServer::builder().start_blocking().unwrap();
        let stream = std::net::TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        (&stream).write_all(b"l\nk\n0 9\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("ok ") && line.ends_with(" 9\n"),
            "{line:?}"
        );
        server.pause();
        server.resume();
        drop((reader, stream));
        server.shutdown_blocking();
        assert!(!server.is_running());
        server.restart_blocking().unwrap();
        let addr = server.addr();
        drop(server);
        std::net::TcpListener::bind(addr).unwrap();
    });
    handle.join().unwrap();
    let servers = TestServers::default_config_blocking(2).unwrap();
    assert_eq!(servers.addrs().len(), 2);
    assert_eq!(servers.servers().len(), 2);
}

/// Runs the test `name` of this binary in a child process with these variables set (`Some`)
/// or removed (`None`); panics unless it succeeds and prints `<name>-ran`.
fn run_child(name: &str, env: &[(&str, Option<&str>)]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("DFLOCKD_TESTKIT_CHILD", "1");
    for (var, value) in env {
        match value {
            Some(value) => cmd.env(var, value),
            None => cmd.env_remove(var),
        };
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{name}-ran")), "{stdout}");
}

fn in_child() -> bool {
    std::env::var_os("DFLOCKD_TESTKIT_CHILD").is_some()
}

const SERVERS: &str = "DFLOCKD_TEST_SERVERS";
const SERVERS_VERSION: &str = "DFLOCKD_TEST_SERVERS_VERSION";
const VERSION: &str = "DFLOCKD_TESTKIT_SERVER_VERSION";

#[test]
fn test_servers_from_the_environment() {
    run_child(
        "external_child",
        &[
            (SERVERS, Some(" 127.0.0.1:1 ,127.0.0.1:2,,")),
            (SERVERS_VERSION, Some("v1.10.0")),
            (VERSION, None),
        ],
    );
    run_child(
        "external_without_version_child",
        &[
            (SERVERS, Some("127.0.0.1:1")),
            (SERVERS_VERSION, None),
            (VERSION, None),
        ],
    );
}

#[test]
fn external_child() {
    if !in_child() {
        return;
    }
    assert_eq!(dflockd_testkit::version_under_test(), ServerVersion::V1_10);
    let two = TestServers::default_config_blocking(2).unwrap();
    assert!(two.is_external());
    assert_eq!(two.addrs(), ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!(two.version(), ServerVersion::V1_10);
    let one = TestServers::default_config_blocking(1).unwrap();
    assert_eq!(one.addrs(), ["127.0.0.1:1"]);
    // Not enough external servers: start our own (of the newest version).
    let three = TestServers::default_config_blocking(3).unwrap();
    assert!(!three.is_external());
    assert_eq!(three.servers().len(), 3);
    assert_eq!(three.version(), ServerVersion::NEWEST);
    println!("external_child-ran");
}

#[test]
fn external_without_version_child() {
    if !in_child() {
        return;
    }
    let panic = std::panic::catch_unwind(dflockd_testkit::version_under_test).unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("DFLOCKD_TEST_SERVERS is set, so DFLOCKD_TEST_SERVERS_VERSION must name"),
        "{msg}"
    );
    let servers = TestServers::default_config_blocking(1).unwrap();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| servers.version())).is_err());
    println!("external_without_version_child-ran");
}

#[test]
fn version_from_the_environment() {
    run_child(
        "version_env_child",
        &[(SERVERS, None), (VERSION, Some("1.10"))],
    );
    run_child(
        "bad_version_env_child",
        &[(SERVERS, None), (VERSION, Some("2.0"))],
    );
}

#[test]
fn version_env_child() {
    if !in_child() {
        return;
    }
    assert_eq!(dflockd_testkit::version_under_test(), ServerVersion::V1_10);
    let server = TestServer::start_blocking().unwrap();
    assert_eq!(server.version(), ServerVersion::V1_10);
    // The builder's setting wins.
    let server = TestServer::builder()
        .version(ServerVersion::V2_1)
        .start_blocking()
        .unwrap();
    assert_eq!(server.version(), ServerVersion::V2_1);
    let servers = TestServers::default_config_blocking(1).unwrap();
    assert_eq!(servers.version(), ServerVersion::V1_10);
    println!("version_env_child-ran");
}

#[test]
fn bad_version_env_child() {
    if !in_child() {
        return;
    }
    let err = TestServer::start_blocking().unwrap_err();
    let dflockd_testkit::Error::Version { variable, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*variable, "DFLOCKD_TESTKIT_SERVER_VERSION");
    assert!(source.to_string().contains("\"2.0\""), "{source}");
    assert_eq!(err.to_string(), "invalid DFLOCKD_TESTKIT_SERVER_VERSION");
    assert!(std::panic::catch_unwind(dflockd_testkit::version_under_test).is_err());
    let server = TestServer::builder()
        .version(ServerVersion::V1_10)
        .start_blocking()
        .unwrap();
    assert_eq!(server.version(), ServerVersion::V1_10);
    println!("bad_version_env_child-ran");
}

#[tokio::test]
async fn fence_state_file() {
    each_version(|v| async move {
        let dir = std::env::temp_dir().join(format!(
            "dflockd-testkit-fences-{}-{}",
            std::process::id(),
            v
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let started = builder(v).fence_state_file(&path).start().await;
        if v == ServerVersion::V1_10 {
            // The option came in v2.1.
            let err = started.unwrap_err();
            assert!(matches!(err, dflockd_testkit::Error::Config(_)), "{err}");
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        let server = started.unwrap();
        let mut a = connect(server.addr()).await;
        let f1 = fence(&grant(&a.req("l", "k", "0").await, "ok").0);
        server.kill();
        // As if the previous run had reserved fences far above the clock.
        let ceiling: u64 = 0x7000_0000_0000_0000;
        std::fs::write(&path, ceiling.to_be_bytes()).unwrap();
        server.restart().await.unwrap();
        let mut b = connect(server.addr()).await;
        let f2 = fence(&grant(&b.req("l", "k", "0").await, "ok").0);
        assert!(f1 < ceiling);
        assert_eq!(f2, ceiling + 1);
        let f3 = fence(&grant(&b.req("l", "k2", "0").await, "ok").0);
        assert_eq!(f3, f2 + 1);
        // A file that is not a journal stops the restart.
        server.kill();
        std::fs::write(&path, b"junk").unwrap();
        let err = server.restart().await.unwrap_err();
        assert!(matches!(err, dflockd_testkit::Error::FenceState(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "lock manager init failed: fence persistence failed: state file is 4 bytes, expected 8, 32, or 64"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    })
    .await;
}

#[tokio::test]
async fn connection_count_and_ids() {
    each_version(|v| async move {
        let server = builder(v).start().await.unwrap();
        let addr = s(server.addr());
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(connect(&addr).await);
        }
        wait_until("3 connections", || async {
            server.stats().connections == 3
        })
        .await;
        grant(&conns[2].req("l", "k", "0").await, "ok");
        assert_eq!(server.stats().locks[0].owner_conn_id, 3);
        conns.clear();
        wait_until("no connection", || async {
            server.stats().connections == 0
        })
        .await;
    })
    .await;
}
