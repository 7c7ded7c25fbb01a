//! Testkit-only behaviour: fence tokens, draining, pause, kill/restart, dropping, runtimes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bounded, connect, fence, grant, s, wait_until, wait_waiters};
use dflockd_testkit::{TestServer, TestServers};

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn fence_prefixed_tokens_increase_across_keys() {
    bounded(async {
        let before = unix_nanos();
        let server = TestServer::start().await.unwrap();
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
    bounded(async {
        let server = TestServer::builder()
            .shutdown_timeout(Duration::from_millis(500))
            .start()
            .await
            .unwrap();
        let addr = s(server.addr());
        let mut idle = connect(&addr).await;
        let mut holder = connect(&addr).await;
        let mut blocked = connect(&addr).await;
        grant(&holder.req("l", "k", "0").await, "ok");
        blocked.send_req("l", "k", "10").await;
        wait_waiters(&addr, "k", 1).await;

        let started = std::time::Instant::now();
        let checks = async {
            assert_eq!(blocked.line().await, "error\n");
            assert_eq!(idle.req("l", "x", "0").await, "error_draining\n");
            assert_eq!(idle.req("auth", "_", "x").await, "error_draining\n");
            assert_eq!(idle.req("stats", "_", "").await, "error_draining\n");
            assert_eq!(holder.req("bogus", "_", "").await, "error_draining\n");
            wait_until("the listener to close", || async {
                tokio::net::TcpStream::connect(&addr).await.is_err()
            })
            .await;
            // After the shutdown timeout, open connections are closed without an answer.
            idle.expect_eof().await;
            holder.expect_eof().await;
            blocked.expect_eof().await;
        };
        tokio::join!(server.shutdown(), checks);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(450), "{took:?}");
        assert!(!server.is_running());
        assert_eq!(server.stats().connections, 0);
        // A second shutdown is a no-op.
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_early_when_clients_leave() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let mut a = connect(server.addr()).await;
        grant(&a.req("l", "k", "0").await, "ok");
        let started = std::time::Instant::now();
        let addr = server.addr();
        tokio::join!(server.shutdown(), async move {
            // Once the listener refuses connections, open ones refuse new work.
            wait_until("the listener to close", || async {
                tokio::net::TcpStream::connect(addr).await.is_err()
            })
            .await;
            assert_eq!(a.req("l", "k2", "0").await, "error_draining\n");
            drop(a);
        });
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn pause_and_resume() {
    bounded(async {
        let server = TestServer::builder()
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
    bounded(async {
        let server = TestServer::start().await.unwrap();
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
        // Fresh state: the key is free, and fences continue upwards.
        let (t2, _) = grant(&b.req("l", "k", "0").await, "ok");
        assert!(fence(&t2) > fence(&t));
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

/// Runs `external_child` in a child process with `DFLOCKD_TEST_SERVERS` set.
#[test]
fn test_servers_from_the_environment() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "external_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DFLOCKD_TEST_SERVERS", " 127.0.0.1:1 ,127.0.0.1:2,,")
        .env("DFLOCKD_TESTKIT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("external_child-ran"), "{stdout}");
}

#[test]
fn external_child() {
    if std::env::var_os("DFLOCKD_TESTKIT_CHILD").is_none() {
        return;
    }
    let two = TestServers::default_config_blocking(2).unwrap();
    assert!(two.is_external());
    assert_eq!(two.addrs(), ["127.0.0.1:1", "127.0.0.1:2"]);
    let one = TestServers::default_config_blocking(1).unwrap();
    assert_eq!(one.addrs(), ["127.0.0.1:1"]);
    // Not enough external servers: start our own.
    let three = TestServers::default_config_blocking(3).unwrap();
    assert!(!three.is_external());
    assert_eq!(three.servers().len(), 3);
    println!("external_child-ran");
}

#[tokio::test]
async fn connection_count_and_ids() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
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
