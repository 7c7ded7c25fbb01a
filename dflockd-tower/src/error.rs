//! Why a request was not let through (or was cut short).

use std::time::Duration;

use dflockd_core::LossReason;

/// Why the layer did not let a request through, or stopped it.
///
/// In the HTTP and gRPC modes it is turned into a response (see
/// [`RejectResponse`](crate::RejectResponse)) and handed to a custom rejection closure; in the
/// typed mode ([`typed_errors`](crate::LockLayer::typed_errors)) it is the error, converted
/// into the inner service's error type with `From`.
///
/// The predicates group the variants: [`is_busy`](Error::is_busy) (try later),
/// [`is_unavailable`](Error::is_unavailable) (the lock server could not be used),
/// [`is_lease_lost`](Error::is_lease_lost), [`is_client_error`](Error::is_client_error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key stayed busy for the whole wait (at once with a wait of zero), or its queue on
    /// the server is full.
    #[error("key {key:?} is busy (waited {waited:?})")]
    Busy {
        /// The key.
        key: String,
        /// How long the request waited before giving up.
        waited: Duration,
    },
    /// The extractor found no key in the request ([`OnMissingKey::Reject`], the default): a
    /// configuration mistake, such as a renamed route, so HTTP 500 / gRPC `internal`.
    ///
    /// [`OnMissingKey::Reject`]: crate::OnMissingKey::Reject
    #[error("the request has no lock key for layer {layer}")]
    MissingKey {
        /// The layer's [name](crate::LockLayer::name).
        layer: String,
    },
    /// The extractor found no key in the request and the layer blames the client
    /// ([`OnMissingKey::BadRequest`]): HTTP 400 / gRPC `invalid_argument`.
    ///
    /// [`OnMissingKey::BadRequest`]: crate::OnMissingKey::BadRequest
    #[error("the request lacks the lock key of layer {layer}")]
    KeyNotInRequest {
        /// The layer's [name](crate::LockLayer::name).
        layer: String,
    },
    /// The lease was lost while the request ran: the inner future was dropped (or, in
    /// the body-holding mode, the response body was cut short).
    #[error("lease on {key:?} lost during the request: {reason}")]
    LeaseLost {
        /// The key.
        key: String,
        /// Why it was lost.
        reason: LossReason,
    },
    /// The lock server could not be used: unreachable, timed out, shutting down (draining),
    /// credentials rejected, key table full, or it answered something unexpected.
    #[error("lock server unavailable for {key:?}")]
    Unavailable {
        /// The key.
        key: String,
        /// What the client reported.
        #[source]
        source: dflockd_core::Error,
    },
    /// The key the extractor produced cannot be sent (empty, too long, whitespace or control
    /// characters).
    #[error("invalid lock key {key:?}")]
    InvalidKey {
        /// The key (possibly truncated to 64 bytes).
        key: String,
        /// What was wrong with it.
        #[source]
        source: dflockd_core::Error,
    },
    /// A key template cannot be parsed: a [`PathKey`](crate::PathKey)'s (with its route
    /// pattern) or a `RouteKey`'s.
    #[error(
        "bad key template {template:?}{}: {reason}",
        pattern.as_deref().map(|p| format!(" for route pattern {p:?}")).unwrap_or_default()
    )]
    Template {
        /// The route pattern of a [`PathKey`](crate::PathKey); `None` for a `RouteKey`.
        pattern: Option<String>,
        /// The key template.
        template: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The layer's own settings are invalid (a zero or too long lease, a zero semaphore
    /// limit).
    #[error("invalid layer configuration")]
    Config {
        /// What the client reported.
        #[source]
        source: dflockd_core::Error,
    },
}

impl Error {
    /// The key is busy: trying later may succeed.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy { .. })
    }

    /// The lock server could not be used (down, draining, auth, ...).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// The lease was lost during the request.
    #[must_use]
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Error::LeaseLost { .. })
    }

    /// The request itself is at fault (no key when the layer blames the client for it, or a
    /// key that cannot be sent).
    #[must_use]
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Error::KeyNotInRequest { .. } | Error::InvalidKey { .. }
        )
    }

    /// The key concerned, when there is one.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Busy { key, .. }
            | Error::LeaseLost { key, .. }
            | Error::Unavailable { key, .. }
            | Error::InvalidKey { key, .. } => Some(key),
            Error::MissingKey { .. }
            | Error::KeyNotInRequest { .. }
            | Error::Config { .. }
            | Error::Template { .. } => None,
        }
    }

    /// Sorts an acquisition failure of the client.
    pub(crate) fn from_acquire(key: String, waited: Duration, error: dflockd_core::Error) -> Self {
        use dflockd_core::proto::InvalidInput;
        match error {
            e if e.is_busy() => Error::Busy { key, waited },
            // The layer's lease or a limit: not the request's doing.
            dflockd_core::Error::InvalidArgument(
                InvalidInput::ZeroLease
                | InvalidInput::ZeroLimit
                | InvalidInput::LockLimit
                | InvalidInput::TooLarge { .. },
            ) => Error::Config { source: error },
            dflockd_core::Error::InvalidArgument(_) => Error::InvalidKey {
                key: truncate(key),
                source: error,
            },
            dflockd_core::Error::Config(_) | dflockd_core::Error::Shard { .. } => {
                Error::Config { source: error }
            }
            source => Error::Unavailable { key, source },
        }
    }
}

/// Whether `error` means the lock server cannot be reached (see
/// [`OnUnreachable`](crate::OnUnreachable) for the list and the reasons).
pub(crate) fn is_unreachable(error: &dflockd_core::Error) -> bool {
    use dflockd_core::Error as E;
    match error {
        // A TLS handshake refused (certificate, protocol) or a server name TLS cannot use:
        // configuration, not reachability.
        E::Connect { source, .. } => !matches!(
            source.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
        ),
        E::Io { .. }
        | E::ConnectionClosed { .. }
        | E::RequestTimeout { .. }
        | E::Draining { .. }
        | E::NotLeader { .. } => true,
        // Set-up failures that an overloaded server causes too: no answer to the TLS
        // handshake, a connection closed at once.
        E::Tls {
            problem: dflockd_core::TlsProblem::NoAnswer { .. },
            ..
        }
        | E::TlsRequired {
            evidence: dflockd_core::TlsEvidence::ClosedSilently,
            ..
        } => true,
        _ => false,
    }
}

fn truncate(mut key: String) -> String {
    if key.len() > 64 {
        let mut end = 64;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
        key.push('…');
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use dflockd_core::proto::InvalidInput;

    #[test]
    fn acquisition_failures_are_sorted() {
        let e = |err| Error::from_acquire("k".into(), Duration::ZERO, err);
        assert!(e(dflockd_core::Error::Timeout { key: "k".into() }).is_busy());
        assert!(e(dflockd_core::Error::MaxWaiters { key: "k".into() }).is_busy());
        assert!(e(dflockd_core::Error::Draining { server: "s".into() }).is_unavailable());
        assert!(e(dflockd_core::Error::AuthRejected { server: "s".into() }).is_unavailable());
        assert!(e(dflockd_core::Error::MaxLocks { key: "k".into() }).is_unavailable());
        let connect = dflockd_core::Error::Connect {
            server: "s".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(e(connect).is_unavailable());
        assert!(e(InvalidInput::EmptyKey.into()).is_client_error());
        assert!(matches!(
            e(InvalidInput::ZeroLimit.into()),
            Error::Config { .. }
        ));
        let too_large = InvalidInput::TooLarge {
            what: "lease",
            value: u64::MAX,
            max: u64::from(u32::MAX),
        };
        assert!(matches!(e(too_large.into()), Error::Config { .. }));
    }

    #[test]
    fn unreachable_is_the_connection_level_only() {
        use dflockd_core::Error as E;
        use std::io::ErrorKind;
        let connect = |kind: ErrorKind| E::Connect {
            server: "s".into(),
            source: kind.into(),
        };
        let server = || "s".to_owned();
        let key = || "k".to_owned();
        let unreachable = [
            connect(ErrorKind::ConnectionRefused),
            connect(ErrorKind::TimedOut),
            connect(ErrorKind::NotFound),
            E::Io {
                server: server(),
                source: ErrorKind::ConnectionReset.into(),
            },
            E::ConnectionClosed {
                server: server(),
                reason: "eof".into(),
            },
            E::RequestTimeout {
                server: server(),
                after: Duration::from_secs(5),
            },
            E::Draining { server: server() },
            E::NotLeader {
                server: server(),
                leader: None,
            },
            E::Tls {
                server: server(),
                name: server(),
                problem: dflockd_core::TlsProblem::NoAnswer {
                    waited: Duration::from_secs(5),
                },
                source: None,
            },
            E::TlsRequired {
                server: server(),
                evidence: dflockd_core::TlsEvidence::ClosedSilently,
            },
        ];
        for e in &unreachable {
            assert!(is_unreachable(e), "{e:?}");
        }
        let reachable = [
            connect(ErrorKind::InvalidData),
            connect(ErrorKind::InvalidInput),
            E::Timeout { key: key() },
            E::MaxWaiters { key: key() },
            E::MaxLocks { key: key() },
            E::LimitMismatch { key: key() },
            E::AuthRejected { server: server() },
            E::AuthRequired { server: server() },
            E::Tls {
                server: server(),
                name: server(),
                problem: dflockd_core::TlsProblem::UnknownIssuer,
                source: None,
            },
            E::TlsRequired {
                server: server(),
                evidence: dflockd_core::TlsEvidence::AnsweredTls,
            },
            E::Protocol {
                server: server(),
                reason: "x",
            },
            InvalidInput::EmptyKey.into(),
        ];
        for e in &reachable {
            assert!(!is_unreachable(e), "{e:?}");
        }
    }

    #[test]
    fn long_keys_are_truncated_on_char_boundaries() {
        let key = "é".repeat(100);
        let err = Error::from_acquire(key, Duration::ZERO, InvalidInput::EmptyKey.into());
        let shown = err.key().unwrap();
        assert!(shown.len() <= 64 + '…'.len_utf8());
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn messages_are_lowercase_without_period() {
        let errors = [
            Error::Busy {
                key: "k".into(),
                waited: Duration::ZERO,
            },
            Error::MissingKey { layer: "l".into() },
            Error::KeyNotInRequest { layer: "l".into() },
            Error::LeaseLost {
                key: "k".into(),
                reason: LossReason::ConnectionLost,
            },
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.chars().next().unwrap().is_lowercase(), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }
}
