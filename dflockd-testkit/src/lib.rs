//! A drop-in, in-process clone of the [dflockd](https://github.com/mtingers/dflockd) lock
//! server that answers exactly as a chosen release does (v1.10.0 or v2.1.1), for tests — and a
//! binary of the same name that takes the real server's flags.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use dflockd_testkit::{ServerVersion, TestServer};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::builder()
//!     .version(ServerVersion::V2_1) // the default: ServerVersion::NEWEST
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
//! | [`version`](TestServerBuilder::version) | `--server-version` (extension) | [`DFLOCKD_TESTKIT_SERVER_VERSION`](SERVER_VERSION_ENV) | [`ServerVersion::NEWEST`] (2.1.1) |
//! | [`addr`](TestServerBuilder::addr) / [`port`](TestServerBuilder::port) | `--host`, `--port` | `DFLOCKD_HOST`, `DFLOCKD_PORT` | `127.0.0.1:0` (binary: `127.0.0.1:6388`) |
//! | [`default_lease`](TestServerBuilder::default_lease) | `--default-lease-ttl` | `DFLOCKD_DEFAULT_LEASE_TTL_S` | 33 s |
//! | [`lease_sweep_interval`](TestServerBuilder::lease_sweep_interval) | `--lease-sweep-interval` | `DFLOCKD_LEASE_SWEEP_INTERVAL_S` | 1 s |
//! | [`gc_interval`](TestServerBuilder::gc_interval) | `--gc-interval` | 1.10: `DFLOCKD_GC_LOOP_SLEEP`; 2.1: `DFLOCKD_GC_INTERVAL_S` | 5 s |
//! | [`gc_max_idle`](TestServerBuilder::gc_max_idle) | `--gc-max-idle` | 1.10: `DFLOCKD_GC_MAX_UNUSED_TIME`; 2.1: `DFLOCKD_GC_MAX_IDLE_S` | 60 s |
//! | [`max_locks`](TestServerBuilder::max_locks) | `--max-locks` | `DFLOCKD_MAX_LOCKS` | 1024 |
//! | [`max_connections`](TestServerBuilder::max_connections) | `--max-connections` | `DFLOCKD_MAX_CONNECTIONS` | 0 (no cap) |
//! | [`max_connections_per_ip`](TestServerBuilder::max_connections_per_ip) | `--max-connections-per-ip` (2.1) | `DFLOCKD_MAX_CONNECTIONS_PER_IP` (2.1) | 0 (no cap) |
//! | [`max_waiters`](TestServerBuilder::max_waiters) | `--max-waiters` | `DFLOCKD_MAX_WAITERS` | 0 (no cap) |
//! | [`read_timeout`](TestServerBuilder::read_timeout) | `--read-timeout` | `DFLOCKD_READ_TIMEOUT_S` | 23 s |
//! | [`write_timeout`](TestServerBuilder::write_timeout) | `--write-timeout` | `DFLOCKD_WRITE_TIMEOUT_S` | 5 s (0 = off) |
//! | [`shutdown_timeout`](TestServerBuilder::shutdown_timeout) | `--shutdown-timeout` | `DFLOCKD_SHUTDOWN_TIMEOUT_S` | 30 s (0 = forever) |
//! | [`tls`](TestServerBuilder::tls) | `--tls-cert`, `--tls-key` | `DFLOCKD_TLS_CERT`, `DFLOCKD_TLS_KEY` | plain TCP |
//! | [`tls_client_ca`](TestServerBuilder::tls_client_ca) | — (extension) | — | no client certificates |
//! | [`auth_token`](TestServerBuilder::auth_token) | `--auth-token`, `--auth-token-file` | `DFLOCKD_AUTH_TOKEN`, `DFLOCKD_AUTH_TOKEN_FILE` | no auth |
//! | [`auto_release_on_disconnect`](TestServerBuilder::auto_release_on_disconnect) | `--auto-release-on-disconnect[=false]` | `DFLOCKD_AUTO_RELEASE_ON_DISCONNECT` | on |
//! | [`fence_state_file`](TestServerBuilder::fence_state_file) | `--fence-state-file` (2.1) | `DFLOCKD_FENCE_STATE_FILE` (2.1) | none |
//! | — | `--debug` | `DFLOCKD_DEBUG` | off |
//! | [`worker_threads`](TestServerBuilder::worker_threads), [`shards`](TestServerBuilder::shards) | — (extension) | — | 2, 16 |
//!
//! # Releases
//!
//! A server behaves as one [`ServerVersion`]: the builder's
//! [`version`](TestServerBuilder::version), else the one named by [`SERVER_VERSION_ENV`],
//! else [`ServerVersion::NEWEST`]. The binary takes `--server-version` (or the same
//! variable). Tests pick their expected answers with [`version_under_test`], which also covers
//! real servers ([`TEST_SERVERS_ENV`] with [`TEST_SERVERS_VERSION_ENV`]).
//!
//! Everything a client or a test can see that differs between the two releases, with the
//! release that brought the v2.1.1 behaviour (researched from the Go server's source and
//! changelog; the first rows were also measured on real servers):
//!
//! | behaviour | v1.10.0 ([`V1_10`](ServerVersion::V1_10)) | v2.1.1 ([`V2_1`](ServerVersion::V2_1)) | since |
//! |---|---|---|---|
//! | token | 32 random lowercase hex digits | 16 hex digits of a big-endian fence (one process-wide counter, +1 per grant of any key, seeded from the Unix time in ns at each start), then 16 random ones | v2.1.0 |
//! | `ping` (any key, any argument) | `error` (an unknown command; the connection stays) | `ok` | v1.14.0 |
//! | a lock and a semaphore of the same name | one resource (a lock is a semaphore of limit 1): `sl k 0 N` on a lock, `l`/`e` on a semaphore → `error_limit_mismatch` unless N = 1; `sl k 0 1` waits like `l`; `r`/`sr`, `n`/`sn`, `w`/`sw` are interchangeable | two resources; a mismatch only between semaphores | v1.14.0 |
//! | `--max-locks` | counts resources | counts resources, so a lock and a semaphore of the same name count twice | v1.14.0 |
//! | a client closes (or half-closes) while blocked in `l`/`sl`/`w`/`sw` | nobody reads the socket: the waiter stays queued and counted (`waiters`, `connections`) until its wait ends; when granted, the answer goes to the closed socket, the next read sees the end, and the cleanup passes the key on within about a millisecond | noticed at once: the waiter leaves, the connection closes, its locks are released | v1.15.0 |
//! | requests pipelined behind a blocked one | read only when the wait ends, then answered in order | answered in order, but 4096 unread bytes (the read buffer full) disconnect the client | v1.15.0 |
//! | the argument line of `auth` | 256 bytes, like every line | 65536 bytes (the command and key lines stay at 256) | v1.15.0 |
//! | a timeout or lease above 9223372036 s | accepted: seconds × 10⁹ wraps in Go's `int64` nanoseconds; a timeout that wraps negative does not wait, a lease that wraps to ≤ 0 is `error`, any other wrapped duration applies as is | `error` | v1.15.0 |
//! | connection closed with `--auto-release-on-disconnect=false` | nothing is cleaned up: held slots, queued `e` waiters and two-phase state stay (a queued `e` is still granted, to nobody) | queued waiters and two-phase state go; held slots stay until their lease ends | v1.15.0 |
//! | shutdown ([`TestServer::shutdown`], SIGTERM) | open connections are served as usual until they close, idle out or the shutdown timeout; blocked waits (and new requests that would wait) get `error` | blocked waits get `error`; the next well-formed request on every connection gets `error_draining` and the connection closes (a malformed one still gets `error`) | v1.16.0 |
//! | a grant racing the end of a wait by shutdown | kept: `ok` | passed on: `error` | v1.16.1 |
//! | `r`/`n` with an unknown token | counts as activity on the key (delays its collection) | does not | v1.16.1 |
//! | a queued `e` granted whose lease expired before `w` | `w` answers `ok <stale token> <lease>`; a holder expired but not yet swept even gets a fresh lease | `error_lease_expired` before the sweep, `error_not_enqueued` after | v1.10.1 |
//! | `--max-connections-per-ip` | unknown flag | sockets beyond the cap per peer address are closed without a byte | v1.16.0 |
//! | `--fence-state-file` | unknown flag | fences keep growing across restarts, even when the clock went back (the real journal file; see [`TestServerBuilder::fence_state_file`]) | v2.1.0 |
//! | variables of `--gc-interval`, `--gc-max-idle` | `DFLOCKD_GC_LOOP_SLEEP`, `DFLOCKD_GC_MAX_UNUSED_TIME` | `DFLOCKD_GC_INTERVAL_S`, `DFLOCKD_GC_MAX_IDLE_S` | v1.15.0 (old names gone in v2.0.0) |
//! | a variable that does not parse, or seconds beyond a Go duration | ignored (the default applies); seconds wrap | startup error (`DFLOCKD_PORT must be an integer (got "x")`, `… too large (max 9223372036 seconds)`) | v2.0.0 |
//! | auth token sources | `DFLOCKD_AUTH_TOKEN` (as is) > `--auth-token` > `--auth-token-file` > `DFLOCKD_AUTH_TOKEN_FILE`; a file is trimmed and an empty one means no auth | `--auth-token` > `--auth-token-file` > `DFLOCKD_AUTH_TOKEN` > `DFLOCKD_AUTH_TOKEN_FILE`; all trimmed; empty or multi-line is an error | v1.15.0, v1.16.0 |
//! | `--tls-cert` without `--tls-key` (or the reverse) | fails when the server starts (`--version` still prints) | configuration error | v1.10.1 |
//! | `--gc-max-idle 0` | `must be > 0` | accepted | v1.13.2 |
//! | range errors of `--write-timeout`, `--shutdown-timeout`, `--max-connections`, `--max-waiters` | with the value: `(got -1s)` | without | by v2.0.0 |
//! | `--version` | `1.10.0` | `2.1.1` | |
//!
//! The same in both: framing (three lines, a trailing `\r` stripped), the 256-byte line cap
//! (an over-long line is answered `error`, or `error_auth` before authentication, and the
//! connection closes), the idle read timeout (`error`, then close), every other answer
//! (renew answers `ok <lease>`), authentication (a failure of any kind is `error_auth`, a
//! 100 ms pause and a close; `auth` without a configured token, or a second `auth`, is
//! `error` and the connection stays; the handshake is never answered `error_draining` — the
//! project's PROTOCOL.md says otherwise, the source of every release agrees with this),
//! `--max-connections` (extra sockets closed without a byte), the `stats` shape (five keys,
//! listed by limit), the defaults, FIFO grants, lease expiry and key collection.
//!
//! # Where it still differs from the real servers
//!
//! On purpose:
//!
//! * `stats` lists are sorted by key (Go's order is random); a backspace or form feed in a
//!   key is written `\b` / `\f`, as Go 1.22+ `encoding/json` does.
//! * Logs are `level=… msg=…` lines, not slog's (no `time=`); `lock manager init failed: …`
//!   and `configuration error: …` are printed as the real server does.
//! * Extensions, in every version: `--server-version`, [`pause`](TestServer::pause),
//!   [`kill`](TestServer::kill), [`restart`](TestServer::restart), mutual TLS
//!   ([`tls_client_ca`](TestServerBuilder::tls_client_ca)), worker threads and shards, and
//!   sub-second durations (leases below one second are reported as `0`).
//! * No HTTP API (v1.15+): its flags are refused as unknown; no pub/sub (v1.11–v1.16 only,
//!   neither modelled release has it).
//! * Version 2.1 notices a closed client at once; the real server looks 10 ms into a wait,
//!   then every 50 ms.
//!
//! Known gaps:
//!
//! * v1.10: an `e` whose lease wraps to ≤ 0 nanoseconds is answered `error` (the real
//!   server grants an already expired lease and prints the wrapped negative seconds); the
//!   race in v1.10.0's `--max-connections` count (fixed in v1.10.1) is not reproduced.
//! * The fence state file is not locked against a second process (`flock`), and a failure
//!   to write it is logged while the grant goes on (the real server answers `error`).
//! * A key whose only remaining state is a closed connection's two-phase entry (v1.10) is
//!   kept until that entry goes; the real server's collection drops the key earlier.
//! * An empty `--host` listens on IPv4 only.
//!
//! # Test helpers
//!
//! [`unique_key`] makes collision-free keys; [`TestServers`] gives tests either in-process
//! servers or external ones from `DFLOCKD_TEST_SERVERS`; [`version_under_test`] tells which
//! release they talk to; [`tls::TestCa`] issues certificates.
#![forbid(unsafe_code)]

pub mod chaos;
pub mod checker;
pub mod cli;
mod config;
mod conn;
mod error;
mod fence;
mod helpers;
mod instance;
mod json;
pub mod scripted;
mod server;
mod shared;
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
