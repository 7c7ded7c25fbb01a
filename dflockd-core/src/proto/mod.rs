//! The dflockd wire protocol, sans-IO.
//!
//! This module is pure: it encodes requests into byte buffers, finds answer lines in byte
//! buffers and parses them into typed values or typed errors. It never touches a socket, a
//! runtime or a clock, so the client and the test server share one definition of the wire and
//! every rule is unit-tested table-driven (see `../../shared/PROTOCOL.md` in the repository for
//! the contract).
//!
//! * [`Request`] — a typed request; [`Request::encode`] validates and writes the three lines.
//! * [`Reply::parse`] — one answer line, interpreted for the request that was sent
//!   ([`Expect`]), into a [`Reply`] or a [`ReplyError`] (a server status, or a protocol
//!   violation).
//! * [`scan_line`] — finds the end of a line in a buffer with a length cap.
//! * [`Token`] — a lock token with its fence.
//! * `server` (feature `server`) — the other side: three received lines parsed as a dflockd
//!   server does (`server::parse_request`, or the `server::RequestError` it answers with
//!   `error`), and answers encoded as it writes them (`server::Answer`). The test server is
//!   built on it.

mod line;
mod reply;
mod request;
#[cfg(feature = "server")]
pub mod server;
mod token;
mod validate;

pub use line::{LineScan, scan_line};
pub use reply::{Expect, Grant, Reply, ReplyError, ServerStatus};
pub use request::{Command, Family, Request};
pub use token::{Token, TokenError};
pub use validate::{
    InvalidInput, MAX_AUTH_SECRET, MAX_KEY_LEN, validate_client_key, validate_secret,
    validate_secret_up_to, validate_token_text,
};

/// Longest request line the server accepts, in bytes, not counting the `\n`.
pub const MAX_REQUEST_LINE: usize = 256;

/// Longest answer line the client reads for ordinary answers, in bytes.
///
/// Grant answers are short (`acquired` + 32-hex token + lease + optional fence); anything
/// longer than this is a protocol violation.
pub const MAX_REPLY_LINE: usize = 1024;

/// Longest `stats` answer the client reads, in bytes (32 MiB: about 250,000 keys).
///
/// A longer one is skipped, not read into memory, and the call fails with
/// [`Error::StatsTooLarge`](crate::Error::StatsTooLarge); the connection stays open.
pub const MAX_STATS_LINE: usize = 32 << 20;

/// The port a dflockd server listens on by default.
pub const DEFAULT_PORT: u16 = 6388;

/// The lease a server applies when a request does not name one, in seconds.
pub const DEFAULT_LEASE_S: u64 = 33;

/// The server's default idle read timeout, in seconds: a connection from which the server read
/// nothing for this long is closed (and its locks are released).
pub const DEFAULT_READ_TIMEOUT_S: u64 = 23;

/// Largest lease, timeout or limit accepted in an answer or sent in a request.
///
/// Anything larger is treated as hostile: no real deployment uses leases or waits of more than
/// a century, and bounding the value keeps `Instant + Duration` arithmetic from overflowing.
pub const MAX_WIRE_INT: u64 = u32::MAX as u64;
