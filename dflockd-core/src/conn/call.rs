//! A request on its way ([`Call`]), the answer it waits for ([`Pending`]), and what it
//! produced ([`Answer`]).

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::lease::LeaseShared;
use crate::proto::{Command, Expect, Family, Grant, Request, Token};

/// The id of a caller waiting for its answer on a connection (see [`super::read::Caller`]).
pub(crate) type CallerId = u64;

/// What a successful request produced.
#[derive(Debug)]
pub(crate) enum Answer {
    Granted(Granted),
    Queued,
    Timeout,
    Ok,
    Stats(String),
}

/// A grant registered on its connection (its renewals have started).
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) lock_id: u64,
    pub(crate) grant: Grant,
    pub(crate) shared: Arc<LeaseShared>,
    /// Nothing vouches for the lease any more (the wait outlasted its first renewal): confirm
    /// with a renew before using the grant.
    pub(crate) unconfirmed: bool,
}

/// What to register when a request is answered with a grant.
#[derive(Clone, Debug)]
pub(crate) struct GrantMeta {
    pub(crate) family: Family,
    pub(crate) key: Arc<str>,
    pub(crate) labels: crate::metrics::Labels,
}

/// How a request is put on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Wire<'a> {
    /// Validated and encoded now.
    Encode,
    /// Encoded without validation: its parts passed it before (see
    /// `Request::encode_validated`).
    Validated,
    /// Bytes encoded (and validated) before for this very request.
    Bytes(&'a [u8]),
}

/// A request about to be sent, and how its answer is handled. Made by [`Call::new`]; what it
/// expects follows from the request's command.
pub(crate) struct Call<'a> {
    pub(crate) request: Request<'a>,
    pub(crate) wire: Wire<'a>,
    pub(crate) expect: Expect,
    /// Register a grant in the answer for renewal.
    pub(crate) grant: Option<GrantMeta>,
    /// The server may hold the answer for up to this long (a blocking request). Its answer
    /// ends the connection's reservation.
    pub(crate) server_wait: Option<Duration>,
    /// Close the connection if the caller stops waiting for the answer (requests that leave
    /// server-side state behind on this connection: blocking ones and enqueues).
    pub(crate) cancel_closes: bool,
    /// The request's key, shared (for errors and logs), `None` for keyless requests.
    pub(crate) key: Option<Arc<str>>,
    /// The caller waits this long at most (within one maintenance tick) and then gets
    /// [`Error::RequestTimeout`]; the connection is kept and the late answer is discarded
    /// (a grant in it released). `None`: until the request's deadline.
    pub(crate) patience: Option<Duration>,
    /// The reservation this request uses, for the one request a parked connection is for
    /// (set by [`super::park::Parked::call`]). Any other request refuses to go on a parked
    /// connection ([`CallError::Reserved`]).
    pub(crate) park: Option<u64>,
    /// The lock this request releases: forgotten when the server answers, under the same
    /// lock that takes the answer.
    pub(crate) forget: Option<u64>,
}

impl<'a> Call<'a> {
    /// A call sending `request` (validated and encoded when sent), expecting what its command
    /// is answered with.
    pub(crate) fn new(request: Request<'a>) -> Self {
        Call {
            request,
            wire: Wire::Encode,
            expect: Expect::of(request.command()),
            grant: None,
            server_wait: None,
            cancel_closes: false,
            key: None,
            patience: None,
            park: None,
            forget: None,
        }
    }

    /// Sends these bytes (or encodes without validating) instead of encoding the request.
    pub(crate) fn wire(mut self, wire: Wire<'a>) -> Self {
        self.wire = wire;
        self
    }

    /// The key, for errors and logs.
    pub(crate) fn key(mut self, key: &Arc<str>) -> Self {
        self.key = Some(key.clone());
        self
    }

    /// A grant in the answer is registered for renewal as `meta`'s lock.
    pub(crate) fn registers(mut self, meta: GrantMeta) -> Self {
        self.grant = Some(meta);
        self
    }

    /// The server may hold the answer for `wait`: the connection is closed if the caller
    /// goes away before the answer (which makes the server drop the wait).
    pub(crate) fn blocking(mut self, wait: Duration) -> Self {
        self.server_wait = Some(wait);
        self.cancel_closes = true;
        self
    }

    /// The connection is closed if the caller goes away before the answer (the request
    /// leaves server-side state behind on this connection).
    pub(crate) fn cancel_closes(mut self) -> Self {
        self.cancel_closes = true;
        self
    }

    /// The caller waits at most this long (see [`Call::patience`]).
    pub(crate) fn patience(mut self, patience: Duration) -> Self {
        self.patience = Some(patience);
        self
    }

    /// The answer forgets lock `lock_id` (a release).
    pub(crate) fn forgets(mut self, lock_id: u64) -> Self {
        self.forget = Some(lock_id);
        self
    }
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Nothing was sent: the connection was reserved for a blocking request by another task
    /// after the pool chose it. The pool picks again.
    Reserved,
    /// The request failed.
    Failed(Error),
}

impl From<Error> for CallError {
    fn from(error: Error) -> Self {
        CallError::Failed(error)
    }
}

/// A request sent on the connection, waiting for its answer (answers come in order).
pub(crate) enum Pending {
    Call(PendingCall),
    Renew(PendingRenew),
    /// A release sent in the background (the answer is only logged, and counted).
    Release {
        key: Arc<str>,
        token: Token,
        deadline: Instant,
        counted: crate::metrics::Release,
    },
}

/// A [`Call`] sent, waiting for its answer.
pub(crate) struct PendingCall {
    pub(crate) expect: Expect,
    /// Woken when someone other than the caller reads its answer (which then waits in the
    /// state's delivered answers). `None` once the caller gave up (its patience ran out, or
    /// it went away): its answer is then dropped, a grant in it released.
    pub(crate) waiter: Option<Waker>,
    pub(crate) sent: Instant,
    pub(crate) deadline: Instant,
    pub(crate) give_up: Option<Instant>,
    pub(crate) grant: Option<GrantMeta>,
    pub(crate) blocking: bool,
    pub(crate) command: Command,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) caller: CallerId,
    /// See [`Call::forget`].
    pub(crate) forget: Option<u64>,
}

/// A renew sent, by the background renewal (`tx` is `None`) or by the guard's owner.
pub(crate) struct PendingRenew {
    pub(crate) lock_id: u64,
    pub(crate) sent: Instant,
    pub(crate) deadline: Instant,
    pub(crate) tx: Option<tokio::sync::oneshot::Sender<crate::error::Result<Duration>>>,
    /// Counted in the metrics with its answer, or as failed if it goes unanswered.
    pub(crate) counted: crate::metrics::Renew,
}

impl Pending {
    pub(crate) fn deadline(&self) -> Instant {
        match self {
            Pending::Call(PendingCall { deadline, .. })
            | Pending::Renew(PendingRenew { deadline, .. })
            | Pending::Release { deadline, .. } => *deadline,
        }
    }

    /// Its answer cannot come before `at` (the server answers in order, and is still
    /// answering, or has just answered, the requests sent before it): its deadline is at
    /// least that.
    pub(crate) fn deadline_not_before(&mut self, at: Instant) {
        let (Pending::Call(PendingCall { deadline, .. })
        | Pending::Renew(PendingRenew { deadline, .. })
        | Pending::Release { deadline, .. }) = self;
        *deadline = (*deadline).max(at);
    }

    pub(crate) fn expect(&self) -> Expect {
        match self {
            Pending::Call(call) => call.expect,
            Pending::Renew(_) => Expect::Renew,
            Pending::Release { .. } => Expect::Release,
        }
    }
}
