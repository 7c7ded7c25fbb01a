//! The error type of the client.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

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
    /// `error_auth` in answer to the auth token: the server has another one.
    #[error(
        "server {server} rejected the auth token (error_auth): check DFLOCKD_AUTH_TOKEN or DFLOCKD_AUTH_TOKEN_FILE (ClientBuilder::auth_token) against the server's --auth-token"
    )]
    AuthRejected {
        /// The server's address.
        server: String,
    },
    /// `error_auth` on a connection that sent no auth token: the server requires one.
    #[error(
        "server {server} requires an auth token and this client has none (error_auth): set DFLOCKD_AUTH_TOKEN or DFLOCKD_AUTH_TOKEN_FILE (ClientBuilder::auth_token)"
    )]
    AuthRequired {
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
    /// The server's `stats` answer was longer than the client reads
    /// ([`MAX_STATS_LINE`](crate::proto::MAX_STATS_LINE) bytes): a server that knows very
    /// many keys. The answer was skipped; the connection, and the locks held on it, were kept.
    #[error(
        "the stats answer from {server} is longer than {limit} bytes (a server that knows very many keys); it was skipped and the connection kept: use `Client::status` for this client's own figures, or the server's own tooling"
    )]
    StatsTooLarge {
        /// The server's address.
        server: String,
        /// The longest answer the client reads, in bytes.
        limit: usize,
    },
    /// The server's answer broke the protocol; the connection was closed.
    #[error("protocol violation from {server}: {reason}")]
    Protocol {
        /// The server's address.
        server: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// Connecting (TCP, TLS handshake or auth) failed or timed out, for a reason that is not
    /// one of the more specific ones ([`Error::Tls`], [`Error::TlsRequired`],
    /// [`Error::AuthRejected`]).
    #[error("cannot connect to {server}")]
    Connect {
        /// The server's address.
        server: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// TLS with the server could not be set up: the certificate it presented was refused, or it
    /// does not speak TLS, or the handshake failed. [`TlsProblem`] says which, and its message
    /// what to change.
    #[error("cannot connect to {server} with TLS (server name {name}): {problem}")]
    Tls {
        /// The server's address.
        server: String,
        /// The name its certificate was verified against
        /// ([`TlsOptions::server_name`](crate::TlsOptions::server_name), or the host of the
        /// address).
        name: String,
        /// What went wrong.
        problem: TlsProblem,
        /// The error of the TLS library, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The client connected without TLS to a server that serves TLS (or, for
    /// [`TlsEvidence::ClosedSilently`], most likely does).
    #[error("{}", tls_required_message(server, *evidence))]
    TlsRequired {
        /// The server's address.
        server: String,
        /// What gave it away.
        evidence: TlsEvidence,
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

    /// The server rejected the credentials, or wanted some (`error_auth`).
    #[must_use]
    pub fn is_permission_denied(&self) -> bool {
        matches!(
            self,
            Error::AuthRejected { .. } | Error::AuthRequired { .. }
        )
    }

    /// A transient condition: a later attempt (possibly on another connection or server) may
    /// succeed. Busy keys, a draining server, connection failures and timeouts are retryable;
    /// invalid arguments, rejected credentials, refused certificates, a client and a server that
    /// disagree about TLS, and protocol violations are not. Two set-up failures that may also be
    /// an overloaded server count as retryable: a TLS handshake without answer
    /// ([`TlsProblem::NoAnswer`]) and a server that closed at once
    /// ([`TlsEvidence::ClosedSilently`]).
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
                | Error::Tls {
                    problem: TlsProblem::NoAnswer { .. },
                    ..
                }
                | Error::TlsRequired {
                    evidence: TlsEvidence::ClosedSilently,
                    ..
                }
        )
    }

    /// The closest [`io::ErrorKind`]: `PermissionDenied` for a rejected auth token,
    /// `TimedOut` for timeouts, `InvalidInput` for bad arguments, and so on.
    #[must_use]
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::AuthRejected { .. } | Error::AuthRequired { .. } => {
                io::ErrorKind::PermissionDenied
            }
            Error::Tls {
                problem: TlsProblem::NoAnswer { .. },
                ..
            } => io::ErrorKind::TimedOut,
            Error::Tls { .. }
            | Error::TlsRequired {
                evidence: TlsEvidence::AnsweredTls,
                ..
            } => io::ErrorKind::InvalidData,
            Error::TlsRequired { .. } => io::ErrorKind::ConnectionAborted,
            Error::Timeout { .. } | Error::RequestTimeout { .. } => io::ErrorKind::TimedOut,
            Error::InvalidArgument(_) | Error::Config(_) | Error::Shard { .. } => {
                io::ErrorKind::InvalidInput
            }
            Error::Connect { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::ConnectionClosed { .. } => io::ErrorKind::ConnectionAborted,
            Error::Protocol { .. } | Error::StatsTooLarge { .. } => io::ErrorKind::InvalidData,
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

/// What went wrong setting up TLS with a server (see [`Error::Tls`]).
///
/// Each message says what is wrong and what to change, naming the environment variables of
/// [`ClientBuilder::from_env`](crate::ClientBuilder::from_env) and the builder methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server's certificate does not lead to a certificate this client trusts: another CA
    /// issued it, or it is self-signed and not pinned.
    UnknownIssuer,
    /// The server's certificate is not valid for the name verified.
    NameMismatch {
        /// The names the certificate is valid for (its subjectAltName DNS names and IP
        /// addresses; the common name is not used).
        presented: Vec<String>,
    },
    /// The server's certificate has expired (or this machine's clock is ahead).
    Expired {
        /// The end of its validity, when known.
        not_after: Option<SystemTime>,
    },
    /// The server's certificate is not valid yet (or this machine's clock is behind).
    NotYetValid {
        /// The start of its validity, when known.
        not_before: Option<SystemTime>,
    },
    /// The server presents a CA certificate (basicConstraints `CA:TRUE`) as its own, as
    /// `openssl req -x509` makes them, and the client does not trust that very certificate.
    CaUsedAsEndEntity,
    /// The server's certificate is not meant for TLS servers: its extended key usage lacks
    /// `serverAuth`.
    WrongKeyUsage,
    /// Only pinned certificates are trusted, and the server presents another one.
    NotPinned,
    /// Another defect of the server's certificate (bad signature, revoked, bad encoding, ...).
    BadCertificate(String),
    /// The server refused this client's certificate, or requires one that was not given.
    ClientCertificateRejected,
    /// The server answered the TLS handshake with something that is not TLS.
    NotTls {
        /// The start of what it answered, printable characters only (a dflockd server
        /// without TLS answers `error`).
        answered: String,
    },
    /// The server sent nothing back to the TLS handshake within the connect timeout. A dflockd
    /// server without TLS does that (it waits for the rest of a request line); so does an
    /// overloaded one.
    NoAnswer {
        /// How long the client waited.
        waited: Duration,
    },
    /// The handshake failed otherwise (no protocol version or cipher in common, an alert
    /// from the server, ...).
    HandshakeFailed(String),
}

/// How to connect without TLS, for the messages.
const WITHOUT_TLS: &str = "connect without TLS (unset DFLOCKD_TLS, DFLOCKD_TLS_CA_FILE and DFLOCKD_TLS_PINNED_CERT_FILE; no ClientBuilder::tls)";

/// How to connect with TLS, for the messages.
const WITH_TLS: &str = "set DFLOCKD_TLS=1, with DFLOCKD_TLS_CA_FILE or DFLOCKD_TLS_PINNED_CERT_FILE unless the system trusts its certificate (ClientBuilder::tls)";

impl fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsProblem::UnknownIssuer => f.write_str(
                "the server's certificate is not signed by a CA this client trusts: set DFLOCKD_TLS_CA_FILE to the CA certificate that issued it (TlsOptions::ca_file), or, for a self-signed certificate, DFLOCKD_TLS_PINNED_CERT_FILE to the certificate itself (TlsOptions::pinned_certificate)",
            ),
            TlsProblem::NameMismatch { presented } => match presented.as_slice() {
                [] => f.write_str(
                    "the server's certificate names no host (it has no subjectAltName, and the common name is not used): reissue it with the server's names in its subjectAltName (openssl: -addext subjectAltName=DNS:host,IP:10.0.0.1)",
                ),
                [one] => write!(
                    f,
                    "the server's certificate is not valid for this name (it names {one}): set DFLOCKD_TLS_SERVER_NAME={one} (TlsOptions::server_name), or reissue the certificate with this name in its subjectAltName"
                ),
                names => write!(
                    f,
                    "the server's certificate is not valid for this name (it names {}): set DFLOCKD_TLS_SERVER_NAME to one of those (TlsOptions::server_name), or reissue the certificate with this name in its subjectAltName",
                    names.join(", ")
                ),
            },
            TlsProblem::Expired { not_after } => {
                f.write_str("the server's certificate has expired")?;
                if let Some(at) = not_after {
                    write!(f, " (on {})", utc(*at))?;
                }
                f.write_str(": renew it on the server, or correct this machine's clock if it is wrong")
            }
            TlsProblem::NotYetValid { not_before } => {
                f.write_str("the server's certificate is not valid yet")?;
                if let Some(at) = not_before {
                    write!(f, " (from {})", utc(*at))?;
                }
                f.write_str(": check the clocks of this machine and of the one that issued it")
            }
            TlsProblem::CaUsedAsEndEntity => f.write_str(
                "the server presents a CA certificate (CA:TRUE, as openssl req -x509 makes) as its own: trust exactly that certificate with DFLOCKD_TLS_PINNED_CERT_FILE (TlsOptions::pinned_certificate), or give the server a certificate without CA:TRUE issued by the CA of DFLOCKD_TLS_CA_FILE",
            ),
            TlsProblem::WrongKeyUsage => f.write_str(
                "the server's certificate is not meant for TLS servers (its extended key usage lacks serverAuth): reissue it with extendedKeyUsage=serverAuth, or without that extension",
            ),
            TlsProblem::NotPinned => f.write_str(
                "the server's certificate is not the pinned one (DFLOCKD_TLS_PINNED_CERT_FILE, TlsOptions::pinned_certificate): if it was replaced on purpose, pin the new one",
            ),
            TlsProblem::BadCertificate(detail) => {
                write!(f, "the server's certificate cannot be used: {detail}")
            }
            TlsProblem::ClientCertificateRejected => f.write_str(
                "the server refused this client's certificate, or requires one: set DFLOCKD_TLS_CLIENT_CERT_FILE and DFLOCKD_TLS_CLIENT_KEY_FILE (TlsOptions::client_auth_files) to a certificate the server trusts",
            ),
            TlsProblem::NotTls { answered } => write!(
                f,
                "the server does not speak TLS (it answered {answered:?}): {WITHOUT_TLS}, or start the server with --tls-cert and --tls-key"
            ),
            TlsProblem::NoAnswer { waited } => write!(
                f,
                "the server sent nothing back to the TLS handshake within {waited:?}, as a server without TLS does: if it has no TLS, {WITHOUT_TLS}; otherwise it is overloaded or the address is wrong"
            ),
            TlsProblem::HandshakeFailed(detail) => write!(f, "the TLS handshake failed: {detail}"),
        }
    }
}

/// What shows that a server serves TLS to a client that connected without it (see
/// [`Error::TlsRequired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsEvidence {
    /// It answered with TLS (an alert or a handshake record): it certainly serves TLS.
    AnsweredTls,
    /// It closed the connection without a byte before its first answer. The dflockd server
    /// does that to a client without TLS; it also does it to connections over its
    /// `--max-connections` cap, and a proxy in front of it does it when it cannot reach it.
    /// Never reported for a server that has answered this client's plaintext connections
    /// before (a silent close is then [`Error::ConnectionClosed`]).
    ClosedSilently,
}

fn tls_required_message(server: &str, evidence: TlsEvidence) -> String {
    match evidence {
        TlsEvidence::AnsweredTls => {
            format!("server {server} serves TLS and this client connected without it: {WITH_TLS}")
        }
        TlsEvidence::ClosedSilently => format!(
            "server {server} closed the connection before its first answer, as a server with TLS does to a client without: if it serves TLS, {WITH_TLS}; otherwise it may be at its connection cap (--max-connections), or a proxy in front of it could not reach it"
        ),
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian calendar).
fn utc(at: SystemTime) -> String {
    let secs = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date, counting in 400-year eras from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl From<Error> for io::Error {
    fn from(error: Error) -> io::Error {
        io::Error::new(error.io_kind(), error)
    }
}

/// Why a lease was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossReason {
    /// The server refused a renew: the lease had already expired there, or the lock was
    /// released by someone holding the token.
    RenewRefused,
    /// The connection that holds the lock closed or failed; the server releases the locks of
    /// a closed connection.
    ConnectionLost,
    /// No renew succeeded in time: the local deadline (a margin before the server-side
    /// expiry) passed.
    DeadlineExceeded,
    /// The server no longer knew the token when it was released, and the release left after
    /// the local deadline: the lease had expired there before the section ended (reported by
    /// a release, not by the background renewal).
    Expired,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossReason::RenewRefused => "the server refused the renew",
            LossReason::ConnectionLost => "the connection holding the lock was lost",
            LossReason::DeadlineExceeded => "no renew succeeded before the lease deadline",
            LossReason::Expired => "the server no longer knew the token (the lease had expired)",
        })
    }
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
}
