//! Connections: one multiplexed, pipelined connection per [`Conn`], grouped per server in a
//! [`pool::ServerPool`].
//!
//! Answer lines are matched to the oldest pending request (the protocol answers strictly in
//! order). Callers write their requests themselves, under the writer lock, in the same
//! critical section that records what answer they expect, so the pending queue and the bytes
//! on the wire are always in the same order. A caller waiting for its answer reads the socket
//! itself when no one else does (see [`read`]). A connection has two tasks: the read task,
//! which reads whenever no caller waits (answers to renewals and background releases, the
//! server closing the connection), and the maintenance task ([`maintain`]), which renews the
//! leases held through this connection, notices deadlines and retires the connection when it
//! is idle.
//!
//! Where things are:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Conn`]: open, call, send, kill |
//! | [`call`] | a request on its way, the answer it waits for, what it produced |
//! | [`state`] | what the connection knows, behind its lock; transitions fed with `now` |
//! | [`leases`] | the leases held through it: deadlines, renewal schedule, confirmation |
//! | [`read`] | reading the socket, and what each answer line does |
//! | [`turn`] | who reads the socket, and how a caller gets its answer |
//! | [`maintain`] | the maintenance task |
//! | [`held`] | operations on held locks: register, renew now, forget, release |
//! | [`park`] | the parked connection: reserved for one blocking request |
//! | [`close`] | the close signal of the two tasks |
//! | [`pool`], [`connect`], `tls` | the connections of a server; opening one |
//! | [`credentials`] | the auth token and TLS of new connections, replaceable |
//!
//! Rules that keep locks safe:
//! * a lock lives and dies with the connection that acquired it, so its renewals go on that
//!   connection (which also keeps it from idling past the server's read timeout);
//! * a request that may wait server-side (`l`/`sl` with a timeout, `w`/`sw`) is only sent on a
//!   *parked* connection: one that holds no locks and carries nothing else, so no renewal can
//!   get stuck behind it. Cancelling such a request closes that connection, which makes the
//!   server drop the wait;
//! * an answer nobody waits for any more (its caller was cancelled) is still read; a grant in
//!   it is released at once;
//! * an answer that cannot be parsed, an answer nobody asked for, or a request without answer
//!   for longer than the request timeout poisons the connection: it is closed and every lock
//!   held through it is reported lost.

pub(crate) mod call;
mod close;
pub(crate) mod connect;
pub(crate) mod credentials;
mod held;
mod leases;
mod maintain;
pub(crate) mod park;
pub(crate) mod pool;
pub use pool::PoolStatus;
mod read;
mod state;
#[cfg(feature = "tls-base")]
pub(crate) mod tls;
mod turn;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::error::LossReason;
use crate::error::{Error, Result, TlsEvidence, TlsProblem};
use crate::lease::LeasePolicy;
use crate::proto::InvalidInput;
use call::{Answer, Call, CallError, Pending, PendingCall, PendingRenew, Wire};
use close::CloseSignal;
use connect::WriteIo;
use read::ReadHalf;
use state::{Load, State, StateGuard, Summary};
use turn::{AnswerSlot, Caller, ReadTurn};

/// Settings shared by every connection of a client.
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// How often the maintenance task looks at pending requests at the latest (their
    /// deadlines and their callers' patience), so that requests never need to wake it.
    pub(crate) tick: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) policy: LeasePolicy,
    /// The auth token and TLS of new connections.
    pub(crate) credentials: credentials::Credentials,
    pub(crate) max_shared_connections: usize,
    pub(crate) max_connections: usize,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Marks a moment: connections opened after it have ids from this one on (see
/// [`Conn::died_unnoticed`]).
pub(crate) fn conn_id_mark() -> u64 {
    NEXT_CONN_ID.load(Ordering::Relaxed)
}

/// One connection to one server.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) server: Arc<str>,
    settings: Arc<Settings>,
    state: Mutex<State>,
    writer: tokio::sync::Mutex<Writer>,
    /// The read half: taken (never waited for) by whoever reads, for one poll at a time.
    read_half: Mutex<ReadHalf>,
    read_turn: Arc<ReadTurn>,
    /// A waker for [`Conn::read_turn`], the one every read registers with the socket.
    read_waker: Waker,
    wake_maint: Notify,
    closed: CloseSignal,
    summary: Summary,
    /// Ids of this connection's locks, reservations and waiting callers (a counter per
    /// connection: a global one would be a cache line every thread writes to).
    ids: AtomicU64,
    /// The name the server's certificate was verified against; `None` without TLS.
    tls_name: Option<String>,
    /// Whether this connection sent an auth token.
    authenticated: bool,
    /// Why the server refused this connection before answering anything, once known: every
    /// request on it fails with that instead of "connection closed".
    refused: OnceLock<Refusal>,
    /// Whether the server has answered a plaintext connection of this pool before (shared by
    /// the pool's connections): then a silent close is no sign that it serves TLS.
    spoke_plaintext: Arc<AtomicBool>,
}

/// Why a server refused a connection before its first answer.
#[derive(Debug, Clone)]
enum Refusal {
    /// A plaintext connection to a server that (most likely) serves TLS.
    TlsRequired(TlsEvidence),
    /// TLS went wrong after the handshake (a refused client certificate).
    #[cfg_attr(not(feature = "tls-base"), allow(dead_code))]
    Tls(TlsProblem),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The write half and a buffer reused for every request.
struct Writer {
    io: Option<WriteIo>,
    buf: Vec<u8>,
}

impl Conn {
    /// Opens a connection and starts its tasks. With `parked`, it is reserved for one blocking
    /// request from the start, under [`park::FIRST_RESERVATION`].
    pub(crate) async fn open(
        settings: Arc<Settings>,
        server: Arc<str>,
        parked: bool,
        permit: Option<OwnedSemaphorePermit>,
        spoke_plaintext: Arc<AtomicBool>,
    ) -> Result<Arc<Conn>> {
        let reservation = parked.then_some(park::FIRST_RESERVATION);
        let opened = connect::open(
            settings.connect_timeout,
            &settings.credentials,
            &server,
            spoke_plaintext.load(Ordering::Relaxed),
        )
        .await?;
        let read_turn = Arc::new(ReadTurn::default());
        let state = State::new(settings.policy, reservation, permit, Instant::now());
        let summary = Summary::new(crate::metrics::ConnGauges::opened(&server));
        summary.publish(&state);
        let conn = Arc::new(Conn {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            server,
            settings,
            state: Mutex::new(state),
            writer: tokio::sync::Mutex::new(Writer {
                io: Some(opened.write),
                buf: Vec::with_capacity(512),
            }),
            read_half: Mutex::new(ReadHalf::new(
                opened.read,
                &opened.leftover,
                opened.answered,
            )),
            read_turn: read_turn.clone(),
            read_waker: Waker::from(read_turn),
            wake_maint: Notify::new(),
            closed: CloseSignal::default(),
            summary,
            ids: AtomicU64::new(park::FIRST_RESERVATION + 1),
            tls_name: opened.tls_name,
            authenticated: opened.authenticated,
            refused: OnceLock::new(),
            spoke_plaintext,
        });
        if conn.tls_name.is_none() && opened.answered {
            conn.spoke_plaintext.store(true, Ordering::Relaxed);
        }
        tracing::debug!(server = %conn.server, conn = conn.id, "connected");
        tokio::spawn(conn.clone().read_task());
        tokio::spawn(conn.clone().maintenance_task());
        Ok(conn)
    }

    fn lock_state(&self) -> StateGuard<'_> {
        // A panic while holding this lock would be a bug; keep going with the data as is.
        StateGuard {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            summary: &self.summary,
        }
    }

    /// Load figures, read without taking the state lock (the pool looks at every connection
    /// for every request).
    pub(crate) fn load(&self) -> Load {
        self.summary.load()
    }

    /// Whether a request failed because this connection was already dead when the pool
    /// offered it: closed, and opened before `mark` (from [`conn_id_mark`], taken when the
    /// request began), so a pooled one that died unnoticed (a reset, a server restart) rather
    /// than one opened for the request. The server kept nothing of the request: it can go
    /// again on another connection, and each dead one leaves the pool.
    pub(crate) fn died_unnoticed(&self, error: &Error, mark: u64) -> bool {
        matches!(error, Error::ConnectionClosed { .. } | Error::Io { .. })
            && self.is_dead()
            && self.id < mark
    }

    /// A new id, unique on this connection (never 0, which stands for "none").
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Claims this connection for a shared request if it looks free (nothing in flight or
    /// claimed). Returns whether it did.
    pub(crate) fn try_claim(&self) -> bool {
        self.summary.pending.load(Ordering::Acquire) == 0
            && self
                .summary
                .claims
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Claims this connection for a shared request, however busy it is.
    pub(crate) fn claim(&self) {
        self.summary.claims.fetch_add(1, Ordering::AcqRel);
    }

    /// A shared request claimed with [`Conn::claim`] or [`Conn::try_claim`] ended.
    pub(crate) fn unclaim(&self) {
        self.summary.claims.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.summary.flags.load(Ordering::Acquire) & state::DEAD != 0
    }

    /// The client that owns the pool is gone: close once nothing is held or pending.
    pub(crate) fn client_dropped(&self) {
        self.lock_state().client_gone = true;
        self.wake_maint.notify_one();
    }

    fn dead_error(&self, reason: &str) -> Error {
        let server = self.server.to_string();
        match self.refused.get() {
            Some(Refusal::TlsRequired(evidence)) => Error::TlsRequired {
                server,
                evidence: *evidence,
            },
            Some(Refusal::Tls(problem)) => Error::Tls {
                server,
                name: self.tls_name.clone().unwrap_or_default(),
                problem: problem.clone(),
                source: Some(reason.into()),
            },
            None => Error::ConnectionClosed {
                server,
                reason: reason.to_owned(),
            },
        }
    }

    fn death_reason(&self) -> String {
        self.lock_state()
            .dead
            .clone()
            .unwrap_or_else(|| "closed".to_owned())
    }

    /// Sends one request and waits for its answer.
    ///
    /// Cancel safety: if the returned future is dropped after the request was written, a
    /// non-blocking request's answer is still consumed (a grant in it is released), and the
    /// connection of a request that leaves state behind on it (blocking ones, enqueues) is
    /// closed so the server drops the wait.
    pub(crate) async fn call(self: &Arc<Self>, call: Call<'_>) -> Result<Answer, CallError> {
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let mut slot = AnswerSlot {
            caller: Caller::new(self),
            waker: waker.clone(),
            answered: false,
        };
        let Call {
            request,
            wire,
            expect,
            grant,
            server_wait,
            cancel_closes,
            key,
            patience,
            park,
            forget,
        } = call;
        let limit = server_wait
            .unwrap_or_default()
            .saturating_add(self.settings.request_timeout);
        let caller = slot.caller.id;
        let sent = self
            .send(
                park,
                |buf| match wire {
                    Wire::Encode => request.encode(buf),
                    Wire::Validated => {
                        request.encode_validated(buf);
                        Ok(())
                    }
                    Wire::Bytes(bytes) => {
                        buf.extend_from_slice(bytes);
                        Ok(())
                    }
                },
                |now| {
                    Pending::Call(PendingCall {
                        expect,
                        waiter: Some(waker),
                        sent: now,
                        deadline: now + limit,
                        give_up: patience.map(|p| now + p),
                        grant,
                        blocking: server_wait.is_some(),
                        command: request.command(),
                        key,
                        caller,
                        forget,
                    })
                },
            )
            .await?;
        // From here on, dropping this future must not leave a blocking wait behind.
        let cancel = KillOnDrop {
            conn: self,
            reason: "a blocking request was cancelled",
            armed: cancel_closes,
        };
        // No timer here: the maintenance task answers a request that outlives its deadline
        // (or its caller's patience) with a timeout.
        let result = slot.answer().await;
        cancel.disarm();
        if park.is_none() {
            pool::remember_answered(self, sent);
        }
        Ok(result?)
    }

    /// Encodes one request into the connection's write buffer, records its pending answer and
    /// writes it, in one critical section of the writer (so answers and requests stay in the
    /// same order). Nothing is recorded when encoding fails. `park` is the reservation the
    /// request is sent under, if any: on a connection reserved by someone else nothing is sent
    /// ([`CallError::Reserved`]).
    async fn send(
        &self,
        park: Option<u64>,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), InvalidInput>,
        pending: impl FnOnce(Instant) -> Pending,
    ) -> std::result::Result<Instant, CallError> {
        // Uncontended almost always: taken without building the waiting future.
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(_) => self.writer.lock().await,
        };
        let Writer { io, buf } = &mut *writer;
        buf.clear();
        encode(buf).map_err(Error::from)?;
        let now = Instant::now();
        {
            let mut st = self.lock_state();
            if let Some(reason) = &st.dead {
                return Err(self.dead_error(reason).into());
            }
            if st.parked.is_some() && st.parked != park {
                return Err(CallError::Reserved);
            }
            st.pending.push_back(pending(now));
            st.last_used = now;
        }
        let Some(w) = io.as_mut() else {
            return Err(self.dead_error("closed").into());
        };
        // Almost always the socket takes the whole request at once; the rest (a full socket
        // buffer, TLS) is written by a future.
        let result = match w.write_now(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => {
                // If this future is dropped mid-write, part of a request may be on the wire:
                // the connection can no longer be trusted.
                let poison = KillOnDrop::armed(self, "a write was cancelled half-way");
                let result = Box::pin(w.write_rest(&buf[n..])).await;
                poison.disarm();
                result
            }
            Err(e) => Err(e),
        };
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::with_capacity(512);
        }
        if let Err(e) = result {
            let err = Error::Io {
                server: self.server.to_string(),
                source: e,
            };
            self.kill(&err.to_string());
            return Err(err.into());
        }
        Ok(now)
    }

    /// Makes sure the maintenance task runs no later than `at`: it is woken only when it
    /// sleeps past that (so the hot paths rarely wake it).
    fn maint_by(&self, st: &mut State, at: Instant) {
        if st.maint_at.is_none_or(|m| at < m) {
            st.maint_at = Some(at);
            self.wake_maint.notify_one();
        }
    }

    /// Closes the connection: every pending request fails, every lock held through it is
    /// reported lost (the server releases them when it sees the close).
    pub(crate) fn kill(&self, reason: &str) {
        let (pending, held) = {
            let mut st = self.lock_state();
            if st.dead.is_some() {
                return;
            }
            st.dead = Some(reason.to_owned());
            st.permit = None;
            (std::mem::take(&mut st.pending), st.leases.take_all())
        };
        self.closed.set();
        self.wake_maint.notify_one();
        if !held.is_empty() {
            tracing::warn!(server = %self.server, conn = self.id, reason, locks = held.len(), "connection lost with locks held");
        } else {
            tracing::debug!(server = %self.server, conn = self.id, reason, "connection closed");
        }
        for h in held {
            if h.shared.mark_lost(LossReason::ConnectionLost) {
                tracing::warn!(key = %h.key, token = %h.token, reason = %LossReason::ConnectionLost, "lease lost");
            }
        }
        for p in pending {
            match p {
                // It finds the connection closed (after any answer delivered to it before).
                Pending::Call(PendingCall {
                    waiter: Some(waker),
                    ..
                }) => waker.wake(),
                Pending::Renew(PendingRenew { tx: Some(tx), .. }) => {
                    let _ = tx.send(Err(self.dead_error(reason)));
                }
                _ => {}
            }
        }
    }
}

/// Jitter for renew times, in `[-1, 1]`.
fn jitter() -> f64 {
    fastrand::f64() * 2.0 - 1.0
}

/// Closes the connection when dropped while armed: a write abandoned half-way (part of a
/// request may be on the wire), or a blocking request whose caller went away (the server then
/// drops the wait, and releases the grant if it raced with the close).
struct KillOnDrop<'a> {
    conn: &'a Conn,
    reason: &'static str,
    armed: bool,
}

impl<'a> KillOnDrop<'a> {
    fn armed(conn: &'a Conn, reason: &'static str) -> Self {
        KillOnDrop {
            conn,
            reason,
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.kill(self.reason);
        }
    }
}
