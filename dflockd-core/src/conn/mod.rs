//! Connections: one multiplexed, pipelined connection per [`Conn`], grouped per server in a
//! [`pool::ServerPool`].
//!
//! Answer lines are matched to the oldest pending request (the protocol answers strictly in
//! order). Callers write their requests themselves, under the writer lock, in the same
//! critical section that records what answer they expect, so the pending queue and the bytes
//! on the wire are always in the same order. A caller waiting for its answer reads the socket
//! itself when no one else is (see [`ReadWake`]): the answer then reaches it without a hop
//! through another task. A connection has two tasks: a reader that reads whenever no caller
//! is waiting (answers to renewals and background releases, the server closing the
//! connection) and a maintenance task that renews the leases held through this connection,
//! notices deadlines and retires the connection when it is idle.
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

pub(crate) mod connect;
mod leases;
pub(crate) mod pool;
#[cfg(feature = "tls")]
pub(crate) mod tls;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, oneshot};

use crate::error::{Error, Result};
use crate::lease::{LeasePolicy, LeaseShared, LossReason};
use crate::proto::{
    Expect, Family, Grant, LineScan, MAX_REPLY_LINE, MAX_STATS_LINE, Reply, ReplyError, Request,
    ServerStatus, Token, scan_line,
};
use connect::{BoxRead, BoxWrite};
use leases::Leases;

/// Settings shared by every connection of a client.
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    /// How often the maintenance task looks at pending requests at the latest (their
    /// deadlines and their callers' patience), so that requests never need to wake it.
    pub(crate) tick: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) policy: LeasePolicy,
    pub(crate) auth_token: Option<crate::client::Secret>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<tls::TlsConnector>,
    pub(crate) max_shared_connections: usize,
    pub(crate) max_connections: usize,
}

/// Renewals due within this window are sent together in one write.
const COALESCE: Duration = Duration::from_millis(25);

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Marks a moment: connections opened after it have ids from this one on (see
/// [`Conn::died_unnoticed`]).
pub(crate) fn conn_id_mark() -> u64 {
    NEXT_CONN_ID.load(Ordering::Relaxed)
}

/// What a successful request produced.
#[derive(Debug)]
pub(crate) enum Answer {
    Granted(Granted),
    Queued,
    Timeout,
    Ok,
    Renewed,
    Stats(String),
}

/// A grant registered on its connection (its renewals have started).
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) lock_id: u64,
    pub(crate) grant: Grant,
    pub(crate) shared: Arc<LeaseShared>,
    /// Nothing vouches for the lease any more (the wait outlasted it): confirm with a renew
    /// before using the grant.
    pub(crate) unconfirmed: bool,
}

/// What to register when a request is answered with a grant.
#[derive(Clone, Debug)]
pub(crate) struct GrantMeta {
    pub(crate) family: Family,
    pub(crate) key: Arc<str>,
}

/// How a request is put on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Wire<'a> {
    /// Validated and encoded now.
    Encode,
    /// Encoded without validation: its parts passed it before (see
    /// [`Request::encode_validated`]).
    Validated,
    /// Bytes encoded (and validated) before for this very request.
    Bytes(&'a [u8]),
}

/// A request about to be sent, and how its answer is handled.
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
    /// The reservation this request uses, for the one request a parked connection is for.
    /// Any other request refuses to go on a parked connection (see [`RESERVED`]).
    pub(crate) park: Option<u64>,
    /// The lock this request releases: forgotten when the server answers, under the same
    /// lock that takes the answer (see [`Conn::forget_released`]).
    pub(crate) forget: Option<u64>,
}

/// Reason of the [`Error::ConnectionClosed`] a request gets, before anything is sent, when
/// its connection was parked by another task after the pool chose it: the pool then picks
/// again.
pub(crate) const RESERVED: &str = "connection reserved for a blocking request";

enum Pending {
    Call {
        expect: Expect,
        /// Woken when someone other than the caller reads its answer (which then waits in
        /// [`State::delivered`]). `None` once the caller gave up (its patience ran out, or it
        /// went away): its answer is then dropped, a grant in it released.
        waiter: Option<Waker>,
        sent: Instant,
        deadline: Instant,
        give_up: Option<Instant>,
        grant: Option<GrantMeta>,
        blocking: bool,
        command: &'static str,
        key: Option<Arc<str>>,
        /// The [`Reading`] id of the caller.
        reader: u64,
        /// See [`Call::forget`].
        forget: Option<u64>,
    },
    Renew {
        lock_id: u64,
        sent: Instant,
        deadline: Instant,
        tx: Option<oneshot::Sender<Result<Duration>>>,
    },
    Release {
        key: Arc<str>,
        token: Token,
        deadline: Instant,
    },
}

impl Pending {
    fn deadline(&self) -> Instant {
        match self {
            Pending::Call { deadline, .. }
            | Pending::Renew { deadline, .. }
            | Pending::Release { deadline, .. } => *deadline,
        }
    }

    fn expect(&self) -> Expect {
        match self {
            Pending::Call { expect, .. } => *expect,
            Pending::Renew { .. } => Expect::Renew,
            Pending::Release { .. } => Expect::Release,
        }
    }
}

impl State {
    /// Takes the answer delivered to caller `reader`, if any.
    fn take_delivered(&mut self, reader: u64) -> Option<Result<Answer>> {
        let at = self.delivered.iter().position(|(r, _)| *r == reader)?;
        Some(self.delivered.swap_remove(at).1)
    }

    /// The waker slot of caller `reader`'s pending request, if it is still pending.
    fn waiter_of(&mut self, reader: u64) -> Option<&mut Option<Waker>> {
        self.pending.iter_mut().find_map(|p| match p {
            Pending::Call {
                waiter, reader: r, ..
            } if *r == reader => Some(waiter),
            _ => None,
        })
    }
}

struct State {
    pending: VecDeque<Pending>,
    /// Answers read by someone other than their caller, by the caller's [`Reading`] id,
    /// until the caller takes them (no channel per request).
    delivered: Vec<(u64, Result<Answer>)>,
    /// The leases held through this connection and their renewal schedule.
    leases: Leases,
    releases: Vec<(Family, Arc<str>, Token)>,
    /// The id of the reservation for a blocking request, if any.
    parked: Option<u64>,
    dead: Option<String>,
    last_used: Instant,
    maint_at: Option<Instant>,
    client_gone: bool,
    permit: Option<OwnedSemaphorePermit>,
}

/// One connection to one server.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) server: Arc<str>,
    settings: Arc<Settings>,
    state: Mutex<State>,
    writer: tokio::sync::Mutex<Writer>,
    /// The read half: taken (never waited for) by whoever reads, for one poll at a time.
    reader: Mutex<ReadSide>,
    read_wake: Arc<ReadWake>,
    /// A waker for [`Conn::read_wake`], the one every read registers with the socket.
    read_waker: Waker,
    wake_maint: Notify,
    closed: CloseSignal,
    summary: Summary,
    /// Ids of this connection's locks, reservations and waiting callers (a counter per
    /// connection: a global one would be a cache line every thread writes to).
    ids: AtomicU64,
}

/// Tells the connection's two tasks that it is closed: a flag and one waker per task, far
/// cheaper to poll on every read than a general-purpose channel.
#[derive(Default)]
struct CloseSignal {
    set: std::sync::atomic::AtomicBool,
    wakers: Mutex<[Option<std::task::Waker>; 2]>,
}

const READER: usize = 0;
const MAINT: usize = 1;

impl CloseSignal {
    fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    fn wait(&self, slot: usize) -> CloseWait<'_> {
        CloseWait { signal: self, slot }
    }
}

/// Completes when the connection is closed.
struct CloseWait<'a> {
    signal: &'a CloseSignal,
    slot: usize,
}

impl std::future::Future for CloseWait<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.signal.set.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        {
            let mut wakers = self.signal.wakers.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut wakers[self.slot];
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // Set between the first check and storing the waker: do not sleep through it.
        if self.signal.set.load(Ordering::SeqCst) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// A lock-free copy of what the pool looks at, refreshed whenever the state lock is released.
#[derive(Default)]
struct Summary {
    pending: AtomicUsize,
    flags: AtomicU8,
    /// Answers in [`State::delivered`]: callers look without the lock (usually there are none).
    delivered: AtomicUsize,
}

const IDLE: u8 = 0;
const PARKED: u8 = 1;
const DEAD: u8 = 2;
/// Holds locks or has background releases queued: not parkable.
const BUSY: u8 = 4;

/// The state lock; publishes the [`Summary`] when released.
struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    summary: &'a Summary,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        let st = &*self.guard;
        let mut flags = IDLE;
        if st.parked.is_some() {
            flags |= PARKED;
        }
        if st.dead.is_some() {
            flags |= DEAD;
        }
        if !st.leases.is_empty() || !st.releases.is_empty() {
            flags |= BUSY;
        }
        // Stored only when changed: every thread that picks a connection reads these, and a
        // store would take the cache line away from all of them.
        if self.summary.flags.load(Ordering::Relaxed) != flags {
            self.summary.flags.store(flags, Ordering::Release);
        }
        if self.summary.pending.load(Ordering::Relaxed) != st.pending.len() {
            self.summary
                .pending
                .store(st.pending.len(), Ordering::Release);
        }
        if self.summary.delivered.load(Ordering::Relaxed) != st.delivered.len() {
            self.summary
                .delivered
                .store(st.delivered.len(), Ordering::Release);
        }
    }
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
    io: Option<BoxWrite>,
    buf: Vec<u8>,
}

/// Load figures used by the pool to pick a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub(crate) pending: usize,
    pub(crate) parked: bool,
    pub(crate) dead: bool,
}

impl Conn {
    /// Opens a connection and starts its tasks. `parked` reserves it for one blocking request.
    pub(crate) async fn open(
        settings: Arc<Settings>,
        server: Arc<str>,
        parked: bool,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(Arc<Conn>, Option<u64>)> {
        // Id 1 is the first reservation; [`Conn::next_id`] continues from 2.
        let parked = parked.then_some(1);
        let opened = connect::open(&settings, &server).await?;
        let policy = settings.policy;
        let closed = CloseSignal::default();
        let read_wake = Arc::new(ReadWake::default());
        let summary = Summary::default();
        if parked.is_some() {
            summary.flags.store(PARKED, Ordering::Release);
        }
        let conn = Arc::new(Conn {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            server,
            settings,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                delivered: Vec::new(),
                leases: Leases::new(policy),
                releases: Vec::new(),
                parked,
                dead: None,
                last_used: Instant::now(),
                maint_at: None,
                client_gone: false,
                permit,
            }),
            writer: tokio::sync::Mutex::new(Writer {
                io: Some(opened.write),
                buf: Vec::with_capacity(512),
            }),
            reader: Mutex::new(ReadSide::new(opened.read, &opened.leftover)),
            read_wake: read_wake.clone(),
            read_waker: Waker::from(read_wake),
            wake_maint: Notify::new(),
            closed,
            summary,
            ids: AtomicU64::new(2),
        });
        tracing::debug!(server = %conn.server, conn = conn.id, "connected");
        tokio::spawn(conn.clone().read_loop());
        tokio::spawn(conn.clone().maint_loop());
        Ok((conn, parked))
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
        let flags = self.summary.flags.load(Ordering::Acquire);
        Load {
            pending: self.summary.pending.load(Ordering::Acquire),
            parked: flags & PARKED != 0,
            dead: flags & DEAD != 0,
        }
    }

    /// Whether a request failed with `error` because this connection was already dead when
    /// the pool offered it: closed, and opened before `mark` (from [`conn_id_mark`], taken
    /// when the request began), so a pooled one that died unnoticed (a reset, a server
    /// restart) rather than one opened for the request. The server kept nothing of the
    /// request: it can go again on another connection, and each dead one leaves the pool.
    pub(crate) fn died_unnoticed(&self, error: &Error, mark: u64) -> bool {
        matches!(error, Error::ConnectionClosed { .. } | Error::Io { .. })
            && self.is_dead()
            && self.id < mark
    }

    /// A new id, unique on this connection (never 0, which stands for "none").
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.summary.flags.load(Ordering::Acquire) & DEAD != 0
    }

    /// Reserves an idle, lock-free connection for a blocking request; `None` if it is not
    /// one. The id ends the reservation with [`Conn::unpark`].
    pub(crate) fn try_park(&self) -> Option<u64> {
        if self.summary.flags.load(Ordering::Acquire) != IDLE
            || self.summary.pending.load(Ordering::Acquire) != 0
        {
            return None;
        }
        let mut st = self.lock_state();
        if st.dead.is_none()
            && st.parked.is_none()
            && st.leases.is_empty()
            && st.pending.is_empty()
            && st.releases.is_empty()
        {
            let id = self.next_id();
            st.parked = Some(id);
            Some(id)
        } else {
            None
        }
    }

    /// Ends reservation `id`, if it is still the current one.
    pub(crate) fn unpark(&self, id: u64) {
        // Usually the answer to the blocking request ended the reservation already. The
        // summary shows every reservation in place (it is published before `try_park`
        // returns), so when it shows none there is nothing to end.
        if self.summary.flags.load(Ordering::Acquire) & PARKED == 0 {
            return;
        }
        let mut st = self.lock_state();
        if st.parked == Some(id) {
            st.parked = None;
        }
    }

    /// The client that owns the pool is gone: close once nothing is held or pending.
    pub(crate) fn client_dropped(&self) {
        self.lock_state().client_gone = true;
        self.wake_maint.notify_one();
    }

    fn dead_error(&self, reason: &str) -> Error {
        Error::ConnectionClosed {
            server: self.server.to_string(),
            reason: reason.to_owned(),
        }
    }

    /// Sends one request and waits for its answer.
    ///
    /// Cancel safety: if the returned future is dropped after the request was written, a
    /// non-blocking request's answer is still consumed by the reader (a grant in it is
    /// released), and a blocking request's connection is closed so the server drops the wait.
    pub(crate) async fn call(self: &Arc<Self>, call: Call<'_>) -> Result<Answer> {
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let mut slot = AnswerSlot {
            reading: Reading::new(self),
            waker: waker.clone(),
            answered: false,
        };
        let blocking = call.server_wait.is_some();
        let cancel_closes = call.cancel_closes || blocking;
        let limit = call.server_wait.unwrap_or_default() + self.settings.request_timeout;
        let (request, wire) = (call.request, call.wire);
        let (expect, grant, key, patience) = (call.expect, call.grant, call.key, call.patience);
        let forget = call.forget;
        let reader = slot.reading.id;
        self.send(
            call.park,
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
            |now| Pending::Call {
                expect,
                waiter: Some(waker),
                sent: now,
                deadline: now + limit,
                give_up: patience.map(|p| now + p),
                grant,
                blocking,
                command: request.command().as_str(),
                key,
                reader,
                forget,
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
        result
    }

    fn death_reason(&self) -> String {
        self.lock_state()
            .dead
            .clone()
            .unwrap_or_else(|| "closed".to_owned())
    }

    /// Encodes one request into the connection's write buffer, records its pending answer and
    /// writes it, in one critical section of the writer (so answers and requests stay in the
    /// same order). Nothing is recorded when encoding fails.
    async fn send(
        &self,
        park: Option<u64>,
        encode: impl FnOnce(&mut Vec<u8>) -> std::result::Result<(), crate::proto::InvalidInput>,
        pending: impl FnOnce(Instant) -> Pending,
    ) -> Result<()> {
        // Uncontended almost always: taken without building the waiting future.
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(_) => self.writer.lock().await,
        };
        let Writer { io, buf } = &mut *writer;
        buf.clear();
        encode(buf)?;
        let now = Instant::now();
        {
            let mut st = self.lock_state();
            if let Some(reason) = &st.dead {
                return Err(self.dead_error(reason));
            }
            if st.parked.is_some() && st.parked != park {
                return Err(self.dead_error(RESERVED));
            }
            st.pending.push_back(pending(now));
            st.last_used = now;
        }
        let Some(w) = io.as_mut() else {
            return Err(self.dead_error("closed"));
        };
        // If this future is dropped mid-write, part of a request may be on the wire: the
        // connection can no longer be trusted.
        let poison = KillOnDrop::armed(self, "a write was cancelled half-way");
        let result = async {
            w.write_all(buf).await?;
            w.flush().await
        }
        .await;
        poison.disarm();
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::with_capacity(512);
        }
        if let Err(e) = result {
            let err = Error::Io {
                server: self.server.to_string(),
                source: e,
            };
            self.kill(&err.to_string());
            return Err(err);
        }
        Ok(())
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
                Pending::Call {
                    waiter: Some(waker),
                    ..
                } => waker.wake(),
                Pending::Renew { tx: Some(tx), .. } => {
                    let _ = tx.send(Err(self.dead_error(reason)));
                }
                _ => {}
            }
        }
    }

    /// Takes the answer delivered to caller `reader`, if any. Looks without the lock first:
    /// usually nothing waits there.
    fn take_delivered(&self, reader: u64) -> Option<Result<Answer>> {
        if self.summary.delivered.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.lock_state().take_delivered(reader)
    }

    /// The pending request of caller `reader` wakes `waker` from now on; or, if it was
    /// answered meanwhile, its answer.
    fn set_waiter(&self, reader: u64, waker: &Waker) -> Option<Result<Answer>> {
        let mut st = self.lock_state();
        match st.waiter_of(reader) {
            Some(w @ Some(_)) => {
                *w = Some(waker.clone());
                None
            }
            _ => st.take_delivered(reader),
        }
    }

    /// Caller `reader` goes away without its answer: an answer delivered to it is returned
    /// (to be disposed of), one still to come will be dropped.
    fn give_up(&self, reader: u64) -> Option<Result<Answer>> {
        let mut st = self.lock_state();
        let delivered = st.take_delivered(reader);
        if delivered.is_none() {
            if let Some(waiter) = st.waiter_of(reader) {
                *waiter = None;
            }
        }
        delivered
    }

    // ---- reader ---------------------------------------------------------------------------

    /// The reader task: reads whenever the socket has data and no waiting caller is the one
    /// to be woken for it (see [`ReadWake`]); closes the connection's halves when it is closed.
    async fn read_loop(self: Arc<Self>) {
        let mut closed = self.closed.wait(READER);
        std::future::poll_fn(|cx| {
            if Pin::new(&mut closed).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.read_wake.set_task(cx.waker());
            let _ = self.read_answers(TASK_READER, cx.waker());
            if self.is_dead() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        let read = self
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .io
            .take();
        drop(read);
        // Drop the write half too, so the socket closes and the server cleans up after us.
        let writer = self.writer.lock().await.io.take();
        if let Some(mut w) = writer {
            let _ = tokio::time::timeout(Duration::from_millis(100), w.shutdown()).await;
        }
    }

    /// Reads and handles every answer available, until the socket has nothing more (so that
    /// it wakes [`ReadWake`] when more comes). Does nothing when someone else is reading: they
    /// do the same. `reader` is a waiting caller, which becomes the one woken for more data,
    /// or [`TASK_READER`]. Returns the caller's own answer if it was among those read.
    #[must_use]
    fn read_answers(&self, reader: u64, waker: &Waker) -> Option<Result<Answer>> {
        let Ok(mut guard) = self.reader.try_lock() else {
            return None;
        };
        let rs = &mut *guard;
        rs.io.as_ref()?;
        let mut direct = None;
        // Nothing came since the last read, which left the socket holding the waker: it will
        // wake the new reader when something comes (a request just sent is never answered
        // that fast, so this spares most callers' first poll of the socket).
        let mut quiet = !self.read_wake.start_reading(reader, waker);
        let mut cx = Context::from_waker(&self.read_waker);
        let failure = loop {
            if let Err(reason) = self.handle_lines(rs, reader, &mut direct) {
                break reason.to_owned();
            }
            if std::mem::take(&mut quiet) {
                return direct;
            }
            rs.make_room();
            let Some(io) = rs.io.as_mut() else {
                return direct;
            };
            let mut read_buf = ReadBuf::new(&mut rs.buf[rs.end..]);
            match Pin::new(io).poll_read(&mut cx, &mut read_buf) {
                Poll::Pending => return direct,
                Poll::Ready(Ok(())) => {
                    let n = read_buf.filled().len();
                    if n == 0 {
                        break "server closed the connection".to_owned();
                    }
                    rs.end += n;
                }
                Poll::Ready(Err(e)) => break format!("read failed: {e}"),
            }
        };
        drop(guard);
        self.kill(&failure);
        direct
    }

    /// Handles every complete answer line in the buffer. An `Err` poisons the connection.
    fn handle_lines(
        &self,
        rs: &mut ReadSide,
        reader: u64,
        direct: &mut Option<Result<Answer>>,
    ) -> std::result::Result<(), &'static str> {
        loop {
            let data = &rs.buf[rs.start..rs.end];
            let mut scan = scan_line(data, MAX_REPLY_LINE);
            if scan == LineScan::TooLong
                && matches!(
                    self.lock_state().pending.front().map(Pending::expect),
                    Some(Expect::Stats)
                )
            {
                scan = scan_line(data, MAX_STATS_LINE);
            }
            match scan {
                LineScan::Complete { line_len, consumed } => {
                    self.on_line(&data[..line_len], reader, direct)?;
                    rs.start += consumed;
                }
                LineScan::Incomplete => return Ok(()),
                LineScan::TooLong => {
                    self.fail_head(Error::Protocol {
                        server: self.server.to_string(),
                        reason: "answer line too long",
                    });
                    return Err("answer line too long");
                }
            }
        }
    }

    fn fail_head(&self, error: Error) {
        let mut st = self.lock_state();
        let head = st.pending.pop_front();
        match head {
            Some(Pending::Call {
                waiter: Some(waker),
                reader,
                ..
            }) => {
                st.delivered.push((reader, Err(error)));
                drop(st);
                waker.wake();
            }
            Some(Pending::Renew { tx: Some(tx), .. }) => {
                let _ = tx.send(Err(error));
            }
            _ => {}
        }
    }

    /// Handles one answer line. An `Err` poisons the connection. The answer of the caller
    /// whose id is `reader` goes to `direct` (it is the one reading); another caller's waits in
    /// [`State::delivered`], and that caller is woken.
    fn on_line(
        &self,
        line: &[u8],
        reader: u64,
        direct: &mut Option<Result<Answer>>,
    ) -> std::result::Result<(), &'static str> {
        let mut st = self.lock_state();
        let Some(head) = st.pending.pop_front() else {
            return Err("answer to no request");
        };
        match head {
            Pending::Call {
                expect,
                waiter,
                sent,
                grant,
                blocking,
                command,
                key,
                reader: caller,
                forget,
                ..
            } => {
                if blocking {
                    st.parked = None;
                }
                let mut parsed = Reply::parse(expect, line);
                if let Some(lock_id) = forget {
                    if matches!(parsed, Ok(_) | Err(ReplyError::Server(_))) {
                        let released = st.leases.forget(lock_id);
                        // Refused because the lease had run out at the server, although the
                        // release left while the lease was vouched for: the section it ended
                        // was protected throughout; the release was late on the way.
                        if matches!(parsed, Err(ReplyError::Server(ServerStatus::Error)))
                            && released.is_some_and(|h| h.vouched_for_at(sent))
                        {
                            tracing::debug!(
                                key = key.as_deref().unwrap_or(""),
                                "release reached the server after the lease ran out there; it was sent in time"
                            );
                            parsed = Ok(Reply::Ok);
                        }
                    }
                }
                let (result, poison) = match parsed {
                    Ok(Reply::Granted(g)) => {
                        let granted = match &grant {
                            Some(meta) => {
                                self.register(&mut st, meta, g, sent, Instant::now(), blocking)
                            }
                            None => Granted {
                                lock_id: 0,
                                grant: g,
                                shared: LeaseShared::new(Duration::from_secs(g.lease_s)),
                                unconfirmed: false,
                            },
                        };
                        (Ok(Answer::Granted(granted)), None)
                    }
                    Ok(Reply::Queued) => (Ok(Answer::Queued), None),
                    Ok(Reply::Timeout) => (Ok(Answer::Timeout), None),
                    Ok(Reply::Ok) => (Ok(Answer::Ok), None),
                    Ok(Reply::Renewed { .. }) => (Ok(Answer::Renewed), None),
                    Ok(Reply::Stats(json)) => (Ok(Answer::Stats(json.to_owned())), None),
                    Err(ReplyError::Malformed(reason)) => (
                        Err(Error::Protocol {
                            server: self.server.to_string(),
                            reason,
                        }),
                        Some(reason),
                    ),
                    Err(ReplyError::Server(status)) => {
                        // The server closes the connection after these.
                        let poison = matches!(status, ServerStatus::Auth)
                            .then_some("server rejected the auth token");
                        (
                            Err(Error::from_status(
                                status,
                                &self.server,
                                command,
                                key.as_deref().unwrap_or(""),
                            )),
                            poison,
                        )
                    }
                };
                let (undelivered, wake) = match waiter {
                    Some(_) if caller == reader && reader != TASK_READER => {
                        *direct = Some(result);
                        (None, None)
                    }
                    Some(waker) => {
                        st.delivered.push((caller, result));
                        (None, Some(waker))
                    }
                    None => (Some(result), None),
                };
                drop(st);
                if let Some(waker) = wake {
                    waker.wake();
                }
                if let Some(Ok(Answer::Granted(orphan))) = undelivered {
                    // The caller gave up (cancelled): nobody will release this grant.
                    tracing::debug!(key = key.as_deref().unwrap_or(""), token = %orphan.grant.token, "releasing a grant whose caller went away");
                    self.drop_lock(orphan.lock_id, true);
                }
                match poison {
                    Some(reason) => Err(reason),
                    None => Ok(()),
                }
            }
            Pending::Renew {
                lock_id, sent, tx, ..
            } => {
                let parsed = Reply::parse(Expect::Renew, line);
                let now = Instant::now();
                let mut lost = None;
                let result = match parsed {
                    Ok(Reply::Renewed { lease_s, .. }) => {
                        let lease = Duration::from_secs(lease_s);
                        if let Some(at) = st.leases.renewed(lock_id, sent, now, lease, jitter()) {
                            self.maint_by(&mut st, at);
                        }
                        Ok(lease)
                    }
                    Ok(_) | Err(ReplyError::Malformed(_)) => {
                        drop(st);
                        if let Some(tx) = tx {
                            let _ = tx.send(Err(Error::Protocol {
                                server: self.server.to_string(),
                                reason: "malformed renew answer",
                            }));
                        }
                        return Err("malformed renew answer");
                    }
                    Err(ReplyError::Server(ServerStatus::Error)) => {
                        lost = st.leases.forget(lock_id);
                        Err(LossReason::RenewRefused)
                    }
                    Err(ReplyError::Server(status)) => {
                        // Transient (draining, not leader, unknown word): retry before the
                        // deadline; the deadline itself does not move.
                        let key = st.leases.get(lock_id).map(|h| h.key.clone());
                        if let Some(h) = st.leases.get(lock_id) {
                            tracing::debug!(key = %h.key, token = %h.token, %status, "renew refused for now, will retry");
                        }
                        if let Some(at) = st.leases.retry_later(lock_id, now) {
                            self.maint_by(&mut st, at);
                        }
                        drop(st);
                        if let Some(tx) = tx {
                            let key = key.as_deref().unwrap_or_default();
                            let _ =
                                tx.send(Err(Error::from_status(status, &self.server, "n", key)));
                        }
                        return Ok(());
                    }
                };
                drop(st);
                match result {
                    Ok(lease) => {
                        if let Some(tx) = tx {
                            let _ = tx.send(Ok(lease));
                        }
                    }
                    Err(reason) => {
                        let key = lost.as_ref().map(|h| h.key.to_string()).unwrap_or_default();
                        if let Some(h) = lost {
                            if h.shared.mark_lost(reason) {
                                tracing::warn!(key = %h.key, token = %h.token, %reason, "lease lost");
                            }
                        }
                        if let Some(tx) = tx {
                            let _ = tx.send(Err(Error::LeaseLost { key, reason }));
                        }
                    }
                }
                Ok(())
            }
            Pending::Release { key, token, .. } => {
                drop(st);
                match Reply::parse(Expect::Release, line) {
                    Ok(_) => {
                        tracing::debug!(key = %key, token = %token, "released in the background");
                        Ok(())
                    }
                    Err(ReplyError::Server(status)) => {
                        tracing::debug!(key = %key, token = %token, %status, "background release refused (already gone)");
                        Ok(())
                    }
                    Err(ReplyError::Malformed(reason)) => Err(reason),
                }
            }
        }
    }

    /// Records a grant as held through this connection and schedules its renewals.
    fn register(
        &self,
        st: &mut State,
        meta: &GrantMeta,
        grant: Grant,
        sent: Instant,
        now: Instant,
        blocking: bool,
    ) -> Granted {
        let lease = Duration::from_secs(grant.lease_s);
        let lock_id = self.next_id();
        let shared = LeaseShared::new(lease);
        // The lease starts when the server grants (or, for a two-phase wait, answers the
        // wait), which is after the request was sent: the send time is a safe start for a
        // grant answered at once. After a long wait, the caller confirms it with a renew
        // first (see `leases`).
        let registered = st.leases.register(
            lock_id,
            meta.family,
            meta.key.clone(),
            grant.token,
            lease,
            shared.clone(),
            sent,
            now,
            blocking,
            jitter(),
        );
        if let Some(at) = registered.wake_at {
            self.maint_by(st, at);
        }
        Granted {
            lock_id,
            grant,
            shared,
            unconfirmed: registered.unconfirmed,
        }
    }

    // ---- operations on held locks ---------------------------------------------------------

    /// Stops renewing a lock. With `release`, a release is sent in the background (used for
    /// dropped guards and abandoned grants). Returns whether the lock was still held.
    pub(crate) fn drop_lock(&self, lock_id: u64, release: bool) -> bool {
        let mut st = self.lock_state();
        let Some(h) = st.leases.forget(lock_id) else {
            return false;
        };
        let held = h.shared.mark_released();
        if release && st.dead.is_none() {
            st.releases.push((h.family, h.key.clone(), h.token));
            drop(st);
            self.wake_maint.notify_one();
        }
        held
    }

    /// Sends a release in the background (the answer is only logged).
    pub(crate) fn queue_release(&self, family: Family, key: Arc<str>, token: Token) {
        let mut st = self.lock_state();
        if st.dead.is_none() {
            st.releases.push((family, key, token));
            drop(st);
            self.wake_maint.notify_one();
        }
    }

    /// Forgets a lock whose release was abandoned before the server answered it (a release
    /// that is answered is forgotten with the answer: [`Call::forget`]).
    ///
    /// A lock its owner is releasing is marked released in its [`LeaseShared`] first, which
    /// stops its renewals and deadline checks; it stays registered until then, so that the
    /// connection is not parked with the release queued behind a blocking request.
    pub(crate) fn forget_released(&self, lock_id: u64) {
        self.lock_state().leases.forget(lock_id);
    }

    /// Renews one lock now and waits for the answer.
    pub(crate) async fn renew_now(&self, lock_id: u64) -> Result<Duration> {
        let (family, key, token, lease) = {
            let st = self.lock_state();
            match st.leases.get(lock_id) {
                Some(h) => (h.family, h.key.clone(), h.token, h.lease),
                None => {
                    return Err(Error::LeaseLost {
                        key: String::new(),
                        reason: LossReason::ConnectionLost,
                    });
                }
            }
        };
        let (tx, mut rx) = oneshot::channel();
        let reading = Reading::new(self);
        let timeout = self.settings.request_timeout;
        let request = Request::Renew {
            family,
            key: &key,
            token: token.as_str(),
            lease_s: Some(lease.as_secs()),
        };
        self.send(
            None,
            |buf| request.encode(buf),
            |now| Pending::Renew {
                lock_id,
                sent: now,
                deadline: now + timeout,
                tx: Some(tx),
            },
        )
        .await?;
        // The maintenance task fails it with the connection if no answer comes in time.
        match reading.answer(&mut rx).await {
            Ok(result) => result.map_err(|e| match e {
                Error::LeaseLost { reason, .. } => Error::LeaseLost {
                    key: key.to_string(),
                    reason,
                },
                other => other,
            }),
            Err(_) => Err(self.dead_error(&self.death_reason())),
        }
    }

    // ---- maintenance ----------------------------------------------------------------------

    async fn maint_loop(self: Arc<Self>) {
        let mut closed = self.closed.wait(MAINT);
        loop {
            let next = self.maintain().await;
            {
                let mut st = self.lock_state();
                if st.dead.is_some() {
                    break;
                }
                st.maint_at = next;
            }
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut closed => break,
                () = self.wake_maint.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// One round of maintenance; returns when it wants to run next.
    ///
    /// Deadlines are checked under the state lock only, so a connection whose socket is stuck
    /// still reports its losses on time; writing renewals needs the writer, which is only
    /// tried (a caller holding it is writing and will be done in a moment).
    async fn maintain(&self) -> Option<Instant> {
        // Data the socket signalled to a waiting caller whose task has not run since (it may
        // be busy): read it here, so other answers and a closing server are not held up.
        // The reader task takes the role over, so that what comes next wakes it at once.
        if self.read_wake.take_over_if_signalled() {
            let _ = self.read_answers(TASK_READER, Waker::noop());
        }
        let now = Instant::now();
        let lost;
        let mut kill = None;
        let due;
        // Callers whose answer is a timeout, woken once the state lock is let go.
        let mut wake: Vec<Waker> = Vec::new();
        {
            let mut st = self.lock_state();
            if st.dead.is_some() {
                return None;
            }
            if st.pending.front().is_some_and(|p| p.deadline() <= now) {
                kill = Some("no answer within the request timeout");
                // The request that waited in vain learns of it as a timeout.
                if let Some(Pending::Call {
                    waiter: Some(waker),
                    sent,
                    deadline,
                    reader,
                    ..
                }) = st.pending.pop_front()
                {
                    let timeout = Error::RequestTimeout {
                        server: self.server.to_string(),
                        after: deadline.saturating_duration_since(sent),
                    };
                    st.delivered.push((reader, Err(timeout)));
                    wake.push(waker);
                }
            }
            // Callers whose patience ran out get their timeout now; the answer, when it
            // comes, is dropped (and a grant in it released).
            let State {
                pending, delivered, ..
            } = &mut *st;
            for p in pending.iter_mut() {
                if let Pending::Call {
                    waiter,
                    give_up: Some(at),
                    sent,
                    reader,
                    ..
                } = p
                {
                    if *at <= now {
                        if let Some(waker) = waiter.take() {
                            let timeout = Error::RequestTimeout {
                                server: self.server.to_string(),
                                after: at.saturating_duration_since(*sent),
                            };
                            delivered.push((*reader, Err(timeout)));
                            wake.push(waker);
                        }
                    }
                }
            }
            let found = st.leases.due(now, COALESCE);
            (lost, due) = (found.lost, found.renew);
            for h in &lost {
                if st.dead.is_none() {
                    st.releases.push((h.family, h.key.clone(), h.token));
                }
            }
            let idle = st.pending.is_empty() && st.leases.is_empty() && st.parked.is_none();
            if idle && st.client_gone {
                kill = kill.or(Some("client dropped"));
            } else if idle && now.duration_since(st.last_used) >= self.settings.idle_timeout {
                kill = kill.or(Some("idle"));
            }
        }
        for waker in wake {
            waker.wake();
        }
        for h in lost {
            // The server may still hold it for a moment: it is given back explicitly below.
            if h.shared.mark_lost(LossReason::DeadlineExceeded) {
                tracing::warn!(key = %h.key, token = %h.token, reason = %LossReason::DeadlineExceeded, "lease lost");
            }
        }
        if let Some(reason) = kill {
            self.kill(reason);
            return None;
        }
        let mut retry_soon = false;
        let has_releases = !self.lock_state().releases.is_empty();
        if !due.is_empty() || has_releases {
            match self.writer.try_lock() {
                Ok(mut writer) => self.write_due(&mut writer.io, &due, now).await,
                Err(_) => retry_soon = true,
            }
        }
        let st = self.lock_state();
        if st.dead.is_some() {
            return None;
        }
        let mut next: Option<Instant> = st.leases.next_event();
        if let Some(p) = st.pending.front() {
            next = Some(next.map_or(p.deadline(), |n| n.min(p.deadline())));
        }
        if st.pending.is_empty() && st.leases.is_empty() && st.parked.is_none() {
            let retire = st.last_used + self.settings.idle_timeout;
            next = Some(next.map_or(retire, |n| n.min(retire)));
        }
        // Wake at least every tick: requests then never need to wake this task to have their
        // deadline or their caller's patience watched.
        let cap = now + self.settings.tick;
        next = Some(next.map_or(cap, |n| n.min(cap)));
        let floor = now + Duration::from_millis(if retry_soon { 2 } else { 1 });
        if retry_soon {
            return Some(floor);
        }
        next.map(|n| n.max(floor))
    }

    /// Writes the renewals in `due` (those still due) and every queued background release, in
    /// one write. The write is bounded by the earliest lease deadline: a socket that cannot
    /// take a few hundred bytes by then is dead, and its locks are reported lost in time.
    async fn write_due(&self, writer: &mut Option<BoxWrite>, due: &[u64], now: Instant) {
        let mut bytes = Vec::new();
        let mut limit = self.settings.request_timeout;
        {
            let mut st = self.lock_state();
            if st.dead.is_some() {
                return;
            }
            let timeout = self.settings.request_timeout;
            for &lock_id in due {
                let Some(deadline) = st.leases.start_renew(lock_id, &mut bytes) else {
                    continue;
                };
                limit = limit.min(deadline.saturating_duration_since(now));
                st.pending.push_back(Pending::Renew {
                    lock_id,
                    sent: now,
                    deadline: now + timeout,
                    tx: None,
                });
            }
            for (family, key, token) in std::mem::take(&mut st.releases) {
                let request = Request::Release {
                    family,
                    key: &key,
                    token: token.as_str(),
                };
                if request.encode(&mut bytes).is_ok() {
                    st.pending.push_back(Pending::Release {
                        key,
                        token,
                        deadline: now + timeout,
                    });
                }
            }
            if !bytes.is_empty() {
                st.last_used = now;
            }
        }
        if bytes.is_empty() {
            return;
        }
        let Some(w) = writer.as_mut() else { return };
        let poison = KillOnDrop::armed(self, "a write was cancelled half-way");
        let write = async {
            w.write_all(&bytes).await?;
            w.flush().await
        };
        let limit = limit.max(Duration::from_millis(10));
        let result = tokio::time::timeout(limit, write).await;
        poison.disarm();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.kill(&format!("write failed: {e}")),
            Err(_) => self.kill("the socket accepted no data before a lease deadline"),
        }
    }
}

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

/// Where a call's answer arrives: read by the caller itself, or by someone else,
/// who leaves it in [`State::delivered`] and wakes the caller. If the caller goes away before
/// taking its answer, dropping this stops the answer from being delivered, and releases a
/// grant that was delivered already: without this, a grant delivered just before the caller
/// was cancelled stayed registered and renewed forever, with nobody left to release it.
struct AnswerSlot<'a> {
    reading: Reading<'a>,
    /// The waker the pending request holds for this caller.
    waker: Waker,
    /// The caller has its answer: nothing can be left for it.
    answered: bool,
}

impl AnswerSlot<'_> {
    /// Waits for the answer, reading answers (this one and others) meanwhile.
    async fn answer(&mut self) -> Result<Answer> {
        std::future::poll_fn(|cx| {
            let answer = self.poll_answer(cx);
            if answer.is_ready() {
                self.answered = true;
            }
            answer
        })
        .await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Answer>> {
        let (conn, id) = (self.reading.conn, self.reading.id);
        if let Some(answer) = conn.take_delivered(id) {
            return Poll::Ready(answer);
        }
        if let Some(answer) = conn.read_answers(id, cx.waker()) {
            return Poll::Ready(answer);
        }
        // Read meanwhile by someone else, who delivered it or is about to (and then wakes the
        // waker registered below), or the connection closed.
        if let Some(answer) = conn.take_delivered(id) {
            return Poll::Ready(answer);
        }
        if conn.is_dead() {
            // Closed: nothing more can be delivered (what was delivered before is taken above).
            return Poll::Ready(Err(conn.dead_error(&conn.death_reason())));
        }
        if !self.waker.will_wake(cx.waker()) {
            // Polled from another task: the request must wake that one.
            if let Some(answer) = conn.set_waiter(id, cx.waker()) {
                return Poll::Ready(answer);
            }
            self.waker = cx.waker().clone();
        }
        Poll::Pending
    }
}

impl Drop for AnswerSlot<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Some(Ok(Answer::Granted(orphan))) = self.reading.conn.give_up(self.reading.id) {
            tracing::debug!(token = %orphan.grant.token, "releasing a grant whose caller went away");
            self.reading.conn.drop_lock(orphan.lock_id, true);
        }
    }
}

/// A caller waiting for an answer on a connection, which reads the socket itself when no one
/// else does. Dropping it hands the reading back to the reader task.
struct Reading<'a> {
    conn: &'a Conn,
    id: u64,
}

impl<'a> Reading<'a> {
    fn new(conn: &'a Conn) -> Self {
        Reading {
            conn,
            id: conn.next_id(),
        }
    }

    /// Waits for the answer in `rx`, reading answers (this one and others) meanwhile.
    async fn answer<T>(
        &self,
        rx: &mut oneshot::Receiver<T>,
    ) -> std::result::Result<T, oneshot::error::RecvError> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(answer) = Pin::new(&mut *rx).poll(cx) {
                return Poll::Ready(answer);
            }
            // Only calls are answered directly; a renewal's answer comes through `rx`.
            let _ = self.conn.read_answers(self.id, cx.waker());
            Pin::new(&mut *rx).poll(cx)
        })
        .await
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.conn.read_wake.stop_reading(self.id);
    }
}

/// The read half of a connection and its buffer (`buf[start..end]` is unread data).
struct ReadSide {
    io: Option<BoxRead>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// Size of the read buffer, and how large it may stay when an answer made it grow.
const READ_BUF: usize = 4096;

impl ReadSide {
    fn new(io: BoxRead, leftover: &[u8]) -> Self {
        let mut buf = vec![0; READ_BUF.max(leftover.len() * 2)];
        buf[..leftover.len()].copy_from_slice(leftover);
        ReadSide {
            io: Some(io),
            buf,
            start: 0,
            end: leftover.len(),
        }
    }

    /// Makes room for the next read: moves unread data to the front, grows the buffer when a
    /// line does not fit (lines are capped, so this is bounded), shrinks it back after.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUF * 16 {
                self.buf = vec![0; READ_BUF];
            }
        }
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        } else {
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
    }
}

/// The reader id of the connection's reader task.
const TASK_READER: u64 = 0;

/// Who reads a connection's socket when it has data.
///
/// Every read registers the same waker with the socket: this one. It wakes the current
/// *reader*: the caller that last read while waiting for its answer, or the reader task when
/// no caller waits. So with one caller waiting, the socket wakes that caller, which reads its
/// answer itself, without a hop through the reader task. Whoever reads goes on until the
/// socket has nothing more (which registers this waker again), handing other callers their
/// answers. A caller that stops waiting hands the role back to the reader task, and wakes it
/// if data came meanwhile that nobody has read.
#[derive(Default)]
struct ReadWake {
    slot: Mutex<ReadSlot>,
}

struct ReadSlot {
    reader: u64,
    /// The waiting caller's waker; `None` when the reader task is the reader.
    waker: Option<Waker>,
    task: Option<Waker>,
    /// The socket signalled data since the last read began. While it is false, the last read
    /// ended with the socket holding this waker (every read goes on until the socket has
    /// nothing more), so there is nothing to read yet and the socket will wake the reader:
    /// a new reader need not poll it. True at first: nobody has read yet.
    signalled: bool,
}

impl Default for ReadSlot {
    fn default() -> Self {
        ReadSlot {
            reader: TASK_READER,
            waker: None,
            task: None,
            signalled: true,
        }
    }
}

impl ReadSlot {
    /// Makes the reader task the reader; returns the caller's waker it held.
    fn hand_to_task(&mut self) -> Option<Waker> {
        self.reader = TASK_READER;
        self.waker.take()
    }
}

impl ReadWake {
    fn slot(&self) -> MutexGuard<'_, ReadSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the reader task's waker.
    fn set_task(&self, waker: &Waker) {
        let mut slot = self.slot();
        if !slot.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            slot.task = Some(waker.clone());
        }
    }

    /// A read begins: data signalled so far will be read. A waiting caller becomes the one
    /// woken for more. Returns whether the socket signalled since the last read began (when
    /// it did not, polling it would only find nothing: see [`ReadSlot::signalled`]).
    fn start_reading(&self, reader: u64, waker: &Waker) -> bool {
        let mut slot = self.slot();
        let signalled = std::mem::replace(&mut slot.signalled, false);
        if reader != TASK_READER
            && (slot.reader != reader || !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)))
        {
            slot.reader = reader;
            slot.waker = Some(waker.clone());
        }
        signalled
    }

    /// If the socket signalled data that nobody has read since, makes the reader task the
    /// reader (a caller that reads again takes the role back) and returns true.
    fn take_over_if_signalled(&self) -> bool {
        let mut slot = self.slot();
        if !slot.signalled {
            return false;
        }
        slot.hand_to_task();
        true
    }

    /// Caller `reader` no longer waits: the reader task takes over (and reads at once if the
    /// socket signalled data that may be unread).
    fn stop_reading(&self, reader: u64) {
        // The caller's waker is dropped after the lock is let go.
        let (_caller, task) = {
            let mut slot = self.slot();
            if slot.reader != reader {
                return;
            }
            let caller = slot.hand_to_task();
            (caller, slot.signalled.then(|| slot.task.clone()).flatten())
        };
        if let Some(waker) = task {
            waker.wake();
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = {
            let mut slot = self.slot();
            slot.signalled = true;
            if slot.reader == TASK_READER {
                slot.task.clone()
            } else {
                slot.waker.clone()
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
