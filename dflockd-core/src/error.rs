//! The error type of the client.

use std::io;
use std::time::Duration;

use crate::lease::LossReason;
use crate::proto::{Command, InvalidInput, ReplyError, ServerStatus};

/// A convenient alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to dflockd.
///
/// Server statuses have a variant each, so callers `match` instead of comparing strings; the
/// predicates ([`is_timeout`](Error::is_timeout), [`is_lease_lost`](Error::is_lease_lost),
/// [`is_retryable`](Error::is_retryable), [`is_permission_denied`](Error::is_permission_denied))
/// group them. Messages never contain the auth token or a whole lock token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No slot opened within the acquire (or wait) timeout: the server answered `timeout`.
    /// With a timeout of zero this means "busy right now".
    #[error("timed out waiting for {key:?}")]
    Timeout {
        /// The key that was busy.
        key: String,
    },
    /// `error_max_locks`: the server's cap on distinct keys is reached.
    #[error("server refused {key:?}: its cap on distinct keys is reached (error_max_locks)")]
    MaxLocks {
        /// The key that could not be created.
        key: String,
    },
    /// `error_max_waiters`: the key's queue is full.
    #[error("server refused {key:?}: its queue is full (error_max_waiters)")]
    MaxWaiters {
        /// The key.
        key: String,
    },
    /// `error_limit_mismatch`: the key exists with a different limit. A lock is a semaphore of
    /// limit 1; before dflockd v1.14 locks and semaphores share one namespace, so a key held as
    /// a lock is a mismatch for a semaphore of another limit, and the other way round.
    #[error("key {key:?} is in use with a different limit (error_limit_mismatch)")]
    LimitMismatch {
        /// The key.
        key: String,
    },
    /// `error_not_enqueued`: a wait without a pending enqueue on its connection (or after the
    /// enqueued grant's lease ran out).
    #[error("no pending enqueue for {key:?} on this connection (error_not_enqueued)")]
    NotEnqueued {
        /// The key.
        key: String,
    },
    /// `error_already_enqueued`: a second enqueue before the wait.
    #[error("{key:?} is already enqueued on this connection (error_already_enqueued)")]
    AlreadyEnqueued {
        /// The key.
        key: String,
    },
    /// `error_lease_expired`: the lease of the enqueued grant ran out before the wait.
    #[error(
        "the lease granted to the enqueue of {key:?} expired before the wait (error_lease_expired)"
    )]
    LeaseExpired {
        /// The key.
        key: String,
    },
    /// `error_draining`: the server is shutting down and refuses new work.
    #[error("server {server} is shutting down (error_draining)")]
    Draining {
        /// The server's address.
        server: String,
    },
    /// `error_auth`: the server rejected the auth token (or needs one and none is configured).
    #[error("server {server} rejected the auth token (error_auth)")]
    AuthRejected {
        /// The server's address.
        server: String,
    },
    /// `error_not_leader`: a cluster follower; `leader` is the address it named, if any.
    #[error("server {server} is not the cluster leader (error_not_leader{})", leader.as_deref().map(|l| format!(" {l}")).unwrap_or_default())]
    NotLeader {
        /// The server's address.
        server: String,
        /// The leader the server named (not connected to unless it is a configured server).
        leader: Option<String>,
    },
    /// Plain `error`: the server refused the request (malformed for it, or for a release or
    /// renew, an unknown key or a wrong or expired token).
    #[error("server {server} refused the {command} request for {key:?} (error)")]
    Refused {
        /// The server's address.
        server: String,
        /// The protocol command (`l`, `r`, …).
        command: &'static str,
        /// The key, empty for `auth` and `stats`.
        key: String,
    },
    /// An `error_*` word this client does not know, kept verbatim.
    #[error("server {server} answered {status}")]
    Server {
        /// The server's address.
        server: String,
        /// The status word.
        status: String,
    },
    /// The lock is no longer held: its lease was lost (see [`LossReason`]).
    #[error("lease on {key:?} lost: {reason}")]
    LeaseLost {
        /// The key.
        key: String,
        /// Why.
        reason: LossReason,
        /// The fence of the grant that was lost, when the grant had one (to tell the resource
        /// it protected which writes to distrust).
        fence: Option<u64>,
    },
    /// The task already holds this key, through an enclosing scoped section
    /// ([`Lock::run`](crate::Lock::run), [`Semaphore::run`](crate::Semaphore::run), the
    /// attribute macros): acquiring it again would wait for itself. Nothing was sent.
    #[error(
        "{key:?} is already held by this task (an enclosing section holds it): it would wait for itself"
    )]
    Reentrant {
        /// The key.
        key: String,
    },
    /// Every connection the client may open to this server is in use (each waiting acquire
    /// holds one; see [`ClientBuilder::max_connections`](crate::ClientBuilder::max_connections))
    /// and none came free before the request's deadline.
    #[error("all {max} connections to {server} are in use (raise max_connections, or wait less)")]
    PoolExhausted {
        /// The server's address.
        server: String,
        /// The cap on connections to it.
        max: usize,
    },
    /// The client was told that the servers issue fencing tokens
    /// ([`ClientBuilder::server_version`](crate::ClientBuilder::server_version) 2.1 or later),
    /// and a grant's token cannot carry one: a v2.1 fence counts nanoseconds of Unix time from
    /// the server's start on, this one does not. The server most likely runs an older release;
    /// the grant was released, not handed out.
    #[error(
        "server {server} granted {key:?} a token without a fence, although the client was told it runs dflockd {declared} (fences since 2.1): check the declared server version"
    )]
    NotFenced {
        /// The server's address.
        server: String,
        /// The key.
        key: String,
        /// The release the client was told of.
        declared: crate::ServerVersion,
    },
    /// The server's answer broke the protocol; the connection was closed.
    #[error("protocol violation from {server}: {reason}")]
    Protocol {
        /// The server's address.
        server: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// Connecting (TCP, TLS handshake or auth) failed or timed out.
    #[error("cannot connect to {server}")]
    Connect {
        /// The server's address.
        server: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connection failed while a request was in flight.
    #[error("connection to {server} failed")]
    Io {
        /// The server's address.
        server: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connection closed before the answer arrived.
    #[error("connection to {server} closed: {reason}")]
    ConnectionClosed {
        /// The server's address.
        server: String,
        /// Why it closed.
        reason: String,
    },
    /// No answer within the request timeout; the connection was closed.
    #[error("no answer from {server} within {after:?}")]
    RequestTimeout {
        /// The server's address.
        server: String,
        /// How long the client waited.
        after: Duration,
    },
    /// A key, token, duration or other argument cannot be sent; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidInput),
    /// The client configuration is invalid (see the message).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A custom sharding strategy returned an index outside the server list.
    #[error("shard strategy chose server {index} of {servers}")]
    Shard {
        /// The index returned.
        index: usize,
        /// The number of configured servers.
        servers: usize,
    },
    /// The blocking API cannot run here (see the message).
    #[error("blocking call not possible: {0}")]
    Blocking(&'static str),
}

impl Error {
    /// The server answered `timeout`: the key stayed busy for the whole acquire timeout.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The lock was held and is now lost ([`Error::LeaseLost`]), or the enqueued grant expired
    /// before the wait ([`Error::LeaseExpired`]).
    #[must_use]
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost { .. } | Error::LeaseExpired { .. })
    }

    /// The key is busy: a timeout or a full queue. Trying later may succeed.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::MaxWaiters { .. })
    }

    /// The server rejected the credentials (`error_auth`).
    #[must_use]
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::AuthRejected { .. })
    }

    /// A transient condition: a later attempt (possibly on another connection or server) may
    /// succeed. Busy keys, a draining server, connection failures and timeouts are retryable;
    /// invalid arguments, rejected credentials and protocol violations are not.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::MaxWaiters { .. }
                | Error::Draining { .. }
                | Error::NotLeader { .. }
                | Error::Connect { .. }
                | Error::Io { .. }
                | Error::ConnectionClosed { .. }
                | Error::RequestTimeout { .. }
        )
    }

    /// The closest [`io::ErrorKind`]: `PermissionDenied` for a rejected auth token,
    /// `TimedOut` for timeouts, `InvalidInput` for bad arguments, and so on.
    #[must_use]
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::AuthRejected { .. } => io::ErrorKind::PermissionDenied,
            Error::Timeout { .. } | Error::RequestTimeout { .. } => io::ErrorKind::TimedOut,
            Error::InvalidArgument(_) | Error::Config(_) | Error::Shard { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::Connect { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::ConnectionClosed { .. } => io::ErrorKind::ConnectionAborted,
            Error::Protocol { .. } => io::ErrorKind::InvalidData,
            Error::Draining { .. } | Error::NotLeader { .. } => io::ErrorKind::ConnectionRefused,
            _ => io::ErrorKind::Other,
        }
    }

    /// Maps a refusal by the server to its variant.
    pub(crate) fn from_status(
        status: ServerStatus,
        server: &str,
        command: Command,
        key: &str,
    ) -> Error {
        let key = key.to_owned();
        let server = server.to_owned();
        match status {
            ServerStatus::Error => Error::Refused {
                server,
                command: command.as_str(),
                key,
            },
            ServerStatus::MaxLocks => Error::MaxLocks { key },
            ServerStatus::MaxWaiters => Error::MaxWaiters { key },
            ServerStatus::LimitMismatch => Error::LimitMismatch { key },
            ServerStatus::AlreadyEnqueued => Error::AlreadyEnqueued { key },
            ServerStatus::NotEnqueued => Error::NotEnqueued { key },
            ServerStatus::LeaseExpired => Error::LeaseExpired { key },
            ServerStatus::Draining => Error::Draining { server },
            ServerStatus::Auth => Error::AuthRejected { server },
            ServerStatus::NotLeader(leader) => Error::NotLeader { server, leader },
            other => Error::Server {
                server,
                status: other.word().to_owned(),
            },
        }
    }

    pub(crate) fn from_reply(
        error: ReplyError,
        server: &str,
        command: Command,
        key: &str,
    ) -> Error {
        match error {
            ReplyError::Server(status) => Error::from_status(status, server, command, key),
            ReplyError::Malformed(reason) => Error::Protocol {
                server: server.to_owned(),
                reason,
            },
            // `ReplyError` is non-exhaustive for downstream crates only.
        }
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        io::Error::new(error.io_kind(), error)
    }
}

/// Parses a human duration: `"500ms"`, `"10s"`, `"2m"`, `"1h"`, or a plain number of
/// seconds (`"1.5"`). Used for environment configuration.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.trim().parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = value * scale;
    (0.0..1e12)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_variants() {
        let e = |s| Error::from_status(s, "h:1", Command::Lock, "k");
        assert!(e(ServerStatus::MaxWaiters).is_busy());
        assert!(e(ServerStatus::Auth).is_permission_denied());
        assert_eq!(
            e(ServerStatus::Auth).io_kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(e(ServerStatus::LeaseExpired).is_lease_lost());
        assert!(e(ServerStatus::Draining).is_retryable());
        assert!(!e(ServerStatus::LimitMismatch).is_retryable());
        assert!(matches!(
            e(ServerStatus::Error),
            Error::Refused { command: "l", .. }
        ));
        let other = e(ServerStatus::Other("error_quota".into()));
        assert!(matches!(&other, Error::Server { status, .. } if status == "error_quota"));
        let leader = e(ServerStatus::NotLeader(Some("10.0.0.1:6388".into())));
        assert_eq!(
            leader.to_string(),
            "server h:1 is not the cluster leader (error_not_leader 10.0.0.1:6388)"
        );
        let io_err: io::Error = e(ServerStatus::Auth).into();
        assert_eq!(io_err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let errors = [
            Error::Timeout { key: "k".into() },
            Error::Config("x".into()),
            Error::Shard {
                index: 3,
                servers: 2,
            },
            Error::Blocking("inside a runtime"),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.chars().next().unwrap().is_lowercase(), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration(" 2m "), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "x", "-1s", "5 parsecs", "1e99"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
