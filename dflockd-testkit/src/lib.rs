//! A drop-in, in-process clone of the [dflockd](https://github.com/mtingers/dflockd) lock
//! server (v1.10 wire behaviour), for tests — and a binary of the same name that takes the
//! real server's flags.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = dflockd_testkit::TestServer::builder()
//!     .default_lease(Duration::from_secs(10))
//!     .start()
//!     .await?;
//!
//! let stream = tokio::net::TcpStream::connect(server.addr()).await?;
//! let mut stream = BufReader::new(stream);
//! stream.write_all(b"l\nmy-key\n5\n").await?;
//! let mut answer = String::new();
//! stream.read_line(&mut answer).await?;
//! assert!(answer.starts_with("ok ")); // "ok <32 hex token> 10\n"
//!
//! assert_eq!(server.stats().locks.len(), 1);
//! drop(stream); // a drain waits for open connections (up to the shutdown timeout)
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The server runs on its own multi-threaded runtime on a background thread, so it works the
//! same from `#[tokio::test]` (also with `start_paused = true`: the server's clock is real),
//! from plain threads ([`TestServerBuilder::start_blocking`]) and from blocking code.
//!
//! # Options
//!
//! | builder setter | flag | env var | default |
//! |---|---|---|---|
//! | [`addr`](TestServerBuilder::addr) / [`port`](TestServerBuilder::port) | `--host`, `--port` | `DFLOCKD_HOST`, `DFLOCKD_PORT` | `127.0.0.1:0` (binary: `127.0.0.1:6388`) |
//! | [`default_lease`](TestServerBuilder::default_lease) | `--default-lease-ttl` | `DFLOCKD_DEFAULT_LEASE_TTL_S` | 33 s |
//! | [`lease_sweep_interval`](TestServerBuilder::lease_sweep_interval) | `--lease-sweep-interval` | `DFLOCKD_LEASE_SWEEP_INTERVAL_S` | 1 s |
//! | [`gc_interval`](TestServerBuilder::gc_interval) | `--gc-interval` | `DFLOCKD_GC_LOOP_SLEEP` | 5 s |
//! | [`gc_max_idle`](TestServerBuilder::gc_max_idle) | `--gc-max-idle` | `DFLOCKD_GC_MAX_UNUSED_TIME` | 60 s |
//! | [`max_locks`](TestServerBuilder::max_locks) | `--max-locks` | `DFLOCKD_MAX_LOCKS` | 1024 |
//! | [`max_connections`](TestServerBuilder::max_connections) | `--max-connections` | `DFLOCKD_MAX_CONNECTIONS` | 0 (no cap) |
//! | [`max_waiters`](TestServerBuilder::max_waiters) | `--max-waiters` | `DFLOCKD_MAX_WAITERS` | 0 (no cap) |
//! | [`read_timeout`](TestServerBuilder::read_timeout) | `--read-timeout` | `DFLOCKD_READ_TIMEOUT_S` | 23 s |
//! | [`write_timeout`](TestServerBuilder::write_timeout) | `--write-timeout` | `DFLOCKD_WRITE_TIMEOUT_S` | 5 s (0 = off) |
//! | [`shutdown_timeout`](TestServerBuilder::shutdown_timeout) | `--shutdown-timeout` | `DFLOCKD_SHUTDOWN_TIMEOUT_S` | 30 s (0 = forever) |
//! | [`tls`](TestServerBuilder::tls) | `--tls-cert`, `--tls-key` | `DFLOCKD_TLS_CERT`, `DFLOCKD_TLS_KEY` | plain TCP |
//! | [`tls_client_ca`](TestServerBuilder::tls_client_ca) | — (test-only extension) | — | no client certificates |
//! | [`auth_token`](TestServerBuilder::auth_token) | `--auth-token`, `--auth-token-file` | `DFLOCKD_AUTH_TOKEN`, `DFLOCKD_AUTH_TOKEN_FILE` | no auth |
//! | [`auto_release_on_disconnect`](TestServerBuilder::auto_release_on_disconnect) | `--auto-release-on-disconnect[=false]`, `--no-auto-release-on-disconnect` | `DFLOCKD_AUTO_RELEASE_ON_DISCONNECT` | on |
//! | — | `--debug` | `DFLOCKD_DEBUG` | off |
//! | [`worker_threads`](TestServerBuilder::worker_threads), [`shards`](TestServerBuilder::shards) | — | — | 2, 16 |
//!
//! # Where it differs from the real v1.10 server
//!
//! On purpose (newer servers' behaviour, or test conveniences):
//!
//! * Tokens are fence-prefixed: 16 hex digits of a counter that starts at the Unix time in
//!   nanoseconds when the server (re)starts and grows by one with every grant, then 16 random
//!   hex digits.
//! * [`TestServer::shutdown`] drains like newer servers: requests are answered
//!   `error_draining` (`auth` too), blocked waits `error`; leases stop expiring meanwhile.
//! * A client that closes its socket while blocked in `l`/`sl`/`w`/`sw` is noticed at once
//!   (also one that only shuts down its sending half).
//! * With auto-release off, a closed connection's queued waits and two-phase state are dropped
//!   (granted locks stay until their lease ends).
//! * `--no-auto-release-on-disconnect` is accepted; `--auth-token` beats
//!   `DFLOCKD_AUTH_TOKEN` like every other flag (v1.10 lets the variable win).
//! * `stats` lists are sorted by key; a backspace or form feed in a key is written `\b` /
//!   `\f`, as Go 1.22+ `encoding/json` does.
//! * `--version` prints this crate's version; logs are `level=… msg=…` lines, not slog's.
//! * [`pause`](TestServer::pause), [`kill`](TestServer::kill), mutual TLS and sub-second
//!   durations are extensions (leases below one second are reported as `0`).
//!
//! Known gaps: an `e` whose lease overflows when converted to nanoseconds is answered `error`
//! (v1.10 accepts it as an already expired lease); an empty `--host` listens on IPv4 only.
//!
//! # Test helpers
//!
//! [`unique_key`] makes collision-free keys; [`TestServers`] gives tests either in-process
//! servers or external ones from `DFLOCKD_TEST_SERVERS`; [`tls::TestCa`] issues certificates.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod checker;
pub mod cli;
mod conn;
mod error;
mod fence;
mod helpers;
mod instance;
mod json;
pub mod scripted;
mod server;
mod state;
mod stats;
pub mod tls;
mod version;

pub use chaos::{ChaosProxy, Faults};
pub use checker::{FencedRegister, History, Report, Section};
pub use error::Error;
pub use helpers::{TEST_SERVERS_ENV, TestServers, unique_key};
pub use server::{TestServer, TestServerBuilder};
pub use stats::{IdleStats, LockStats, SemaphoreStats, Stats};
pub use tls::TlsIdentity;
pub use version::{
    ParseVersionError, SERVER_VERSION_ENV, ServerVersion, TEST_SERVERS_VERSION_ENV,
    version_under_test,
};
