//! The policies a layer applies when something other than a busy key gets in the way.

/// What happens when the lease is lost while a request holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnLeaseLoss {
    /// Drop the inner future (or cut the response body short) and reject with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost): HTTP 503, gRPC `unavailable`, or the
    /// typed error. The default.
    #[default]
    Abort,
    /// Let the request finish; the loss is only recorded (a `warn` event and the span's
    /// `outcome`). Handlers can still check [`HeldLock::is_held`](crate::HeldLock::is_held).
    Finish,
}

/// What happens to a request in which the key extractor finds no key.
///
/// A layer is usually meant to guard every request it sees, so a request without a key is
/// most often a mistake in the configuration: a route renamed while the extractor still
/// expects the old path, a layer added with `Router::layer` where `Router::route_layer` was
/// meant, a header a proxy no longer sets. Running such a request unguarded would go
/// unnoticed, so by default it is rejected, loudly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnMissingKey {
    /// Reject with [`Error::MissingKey`](crate::Error::MissingKey): HTTP 500, gRPC
    /// `internal`, or the typed error; logged at `error` with the layer's
    /// [name](crate::LockLayer::name) (at most once per 10 s, with a count of the others).
    /// The default.
    #[default]
    Reject,
    /// Reject with [`Error::KeyNotInRequest`](crate::Error::KeyNotInRequest): HTTP 400, gRPC
    /// `invalid_argument`, or the typed error; logged at `debug`. For keys made from what
    /// the client sends (a tenant header), whose absence is the client's mistake.
    BadRequest,
    /// Run the request unguarded, without a [`HeldLock`](crate::HeldLock): the explicit
    /// opt-in for layers that guard only some of the requests they see. Counted
    /// ([`Counters::passed_unguarded`](crate::Counters::passed_unguarded)) and logged at
    /// `warn` the first time per layer.
    PassThrough,
}

/// What happens to a request when the lock server cannot be reached.
///
/// "Cannot be reached" means the connection level, where retrying elsewhere or later is the
/// only remedy: connecting failed or timed out ([`Connect`]; a TLS handshake the server or the
/// client refused is [`Tls`], configuration, except one the server never answered), the
/// server closed a new connection without a word ([`TlsRequired`] with `ClosedSilently`: a
/// server at its connection cap does that, as does a TLS server to a plaintext client), the
/// connection failed or closed mid-request ([`Io`], [`ConnectionClosed`]), no answer within
/// the client's request timeout ([`RequestTimeout`]), the server is shutting down
/// ([`Draining`]) or is not the cluster leader ([`NotLeader`]).
///
/// Never: a busy key (the server works; [`Error::Busy`](crate::Error::Busy) either way),
/// rejected credentials, a rejected TLS handshake, the server's key table full, a limit
/// mismatch, a protocol violation. These fail closed whatever the policy, since failing open
/// on them would switch the guard off until someone fixes the configuration.
///
/// A server that accepts connections but does not answer within the layer's
/// [wait](crate::LockLayer::wait) looks busy: the wait runs out before the client's own
/// timeouts do.
///
/// [`Connect`]: dflockd_core::Error::Connect
/// [`Tls`]: dflockd_core::Error::Tls
/// [`TlsRequired`]: dflockd_core::Error::TlsRequired
/// [`Io`]: dflockd_core::Error::Io
/// [`ConnectionClosed`]: dflockd_core::Error::ConnectionClosed
/// [`RequestTimeout`]: dflockd_core::Error::RequestTimeout
/// [`Draining`]: dflockd_core::Error::Draining
/// [`NotLeader`]: dflockd_core::Error::NotLeader
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnUnreachable {
    /// Reject with [`Error::Unavailable`](crate::Error::Unavailable): HTTP 503 with
    /// `Retry-After`, gRPC `unavailable`, or the typed error. The default: a guard that
    /// cannot be taken is not given.
    #[default]
    FailClosed,
    /// Run the request unguarded, without a [`HeldLock`](crate::HeldLock) (handlers that
    /// must not run unguarded can insist on one). Counted
    /// ([`Counters::failed_open`](crate::Counters::failed_open)) and logged at `warn`, at
    /// most once per 10 s with a count of the others. For guards that protect capacity
    /// rather than correctness, such as per-tenant limits.
    FailOpen,
}
