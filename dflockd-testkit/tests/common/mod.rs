//! Raw-protocol helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use dflockd_testkit::{ServerVersion, TestServer, TestServerBuilder, TestServers};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(5);

/// Runs a whole test body with an upper bound.
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test took longer than 30 s")
}

/// Whether the tests talk to external servers (`DFLOCKD_TEST_SERVERS`).
pub fn external() -> bool {
    std::env::var(dflockd_testkit::TEST_SERVERS_ENV).is_ok_and(|v| !v.trim().is_empty())
}

/// The releases a release-dependent test runs for: every version in-process, or only the
/// external servers' release (`DFLOCKD_TEST_SERVERS_VERSION`).
pub fn versions() -> Vec<ServerVersion> {
    if external() {
        vec![dflockd_testkit::version_under_test()]
    } else {
        ServerVersion::ALL.to_vec()
    }
}

/// Runs one test body per version of [`versions`], concurrently, each bounded like
/// [`bounded`]; a failure names the version it failed for.
pub async fn each_version<F, Fut>(body: F)
where
    F: Fn(ServerVersion) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for version in versions() {
        let id = tasks.spawn(bounded(body(version))).id();
        ids.push((id, version));
    }
    while let Some(joined) = tasks.join_next_with_id().await {
        if let Err(err) = joined {
            let version = ids.iter().find(|(id, _)| *id == err.id()).map(|(_, v)| *v);
            let Ok(panic) = err.try_into_panic() else {
                panic!("server version {version:?}: task cancelled");
            };
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "with server version {}: {msg}",
                version.map_or("?".into(), |v| v.to_string())
            );
        }
    }
}

/// An in-process server builder for `version`.
pub fn builder(version: ServerVersion) -> TestServerBuilder {
    TestServer::builder().version(version)
}

/// Servers kept alive for a test.
pub struct Servers {
    _external: Option<TestServers>,
    _own: Option<TestServer>,
}

/// One server with the default configuration of `version`: external when
/// `DFLOCKD_TEST_SERVERS` is set (then `version` is theirs, see [`versions`]).
pub async fn default_server(version: ServerVersion) -> (Servers, String) {
    if external() {
        let servers = TestServers::default_config(1).await.unwrap();
        assert_eq!(servers.version(), version);
        let addr = servers.addrs()[0].clone();
        return (
            Servers {
                _external: Some(servers),
                _own: None,
            },
            addr,
        );
    }
    let server = builder(version).start().await.unwrap();
    let addr = server.addr_string();
    (
        Servers {
            _external: None,
            _own: Some(server),
        },
        addr,
    )
}

/// A raw protocol connection.
pub struct Conn<S> {
    io: BufReader<S>,
}

pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Conn<TcpStream> {
    let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    Conn::new(stream)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S) -> Self {
        Conn {
            io: BufReader::new(stream),
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.io.get_mut()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
        self.io.get_mut().flush().await.expect("flush");
    }

    /// Sends a request (three lines) without reading.
    pub async fn send_req(&mut self, cmd: &str, key: &str, arg: &str) {
        self.send(format!("{cmd}\n{key}\n{arg}\n").as_bytes()).await;
    }

    /// Sends a request and reads its answer line (with its `\n`).
    pub async fn req(&mut self, cmd: &str, key: &str, arg: &str) -> String {
        self.send_req(cmd, key, arg).await;
        self.line().await
    }

    /// Reads one line (with its `\n`); an empty string on EOF.
    pub async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        tokio::time::timeout(STEP, self.io.read_until(b'\n', &mut buf))
            .await
            .expect("no answer in time")
            .expect("read");
        String::from_utf8(buf).expect("UTF-8 answer")
    }

    /// Asserts the server closes the connection without sending anything (more).
    pub async fn expect_eof(&mut self) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(STEP, self.io.read(&mut buf))
            .await
            .expect("connection not closed in time");
        match read {
            Ok(0) => {}
            Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ),
                "{e}"
            ),
        }
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        let mut buf = [0u8; 64];
        if let Ok(read) = tokio::time::timeout(quiet, self.io.read(&mut buf)).await {
            match read {
                Ok(n) => panic!("unexpected: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    }
}

/// Checks a grant answer (`STATUS TOKEN LEASE\n`) and returns the token and lease.
pub fn grant(line: &str, status: &str) -> (String, u64) {
    let parts: Vec<&str> = line
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline in {line:?}"))
        .split(' ')
        .collect();
    assert_eq!(parts.len(), 3, "{line:?}");
    assert_eq!(parts[0], status, "{line:?}");
    let token = parts[1];
    assert_eq!(token.len(), 32, "{line:?}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{line:?}"
    );
    (token.to_owned(), parts[2].parse().expect("lease"))
}

/// The fence in a token's first 16 hex characters.
pub fn fence(token: &str) -> u64 {
    u64::from_str_radix(&token[..16], 16).unwrap()
}

/// `stats` over the wire, parsed.
pub async fn wire_stats(addr: &str) -> serde_json::Value {
    let mut c = connect(addr).await;
    let line = c.req("stats", "_", "").await;
    let json = line
        .strip_prefix("ok ")
        .and_then(|l| l.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("bad stats answer {line:?}"));
    serde_json::from_str(json).expect("stats JSON")
}

/// The `waiters` count of `key` in wire stats (0 when the key is not busy).
pub fn waiters_of(stats: &serde_json::Value, key: &str) -> u64 {
    for list in ["locks", "semaphores"] {
        for entry in stats[list].as_array().unwrap() {
            if entry["key"] == key {
                return entry["waiters"].as_u64().unwrap();
            }
        }
    }
    0
}

/// Polls until `cond` holds (bounded by [`STEP`]).
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `key` has exactly `n` queued waiters (as the server reports them).
pub async fn wait_waiters(addr: &str, key: &str, n: u64) {
    wait_until(&format!("{n} waiters on {key}"), || async {
        waiters_of(&wire_stats(addr).await, key) == n
    })
    .await;
}

/// The address as a string for a [`SocketAddr`].
pub fn s(addr: SocketAddr) -> String {
    addr.to_string()
}
