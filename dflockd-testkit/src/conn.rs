//! One client connection: reads requests line by line with the real server's rules, runs them
//! against the lock table and writes the answers.
//!
//! Since v1.15, while a blocking request (`l`, `sl`, `w`, `sw`) waits, the socket keeps being
//! read into the input buffer, so a peer that goes away is noticed at once (its wait is dropped
//! and its locks released); bytes pipelined behind the blocking request are processed after it,
//! in order. In v1.10 nobody reads the socket during a wait: a client that closed is noticed
//! only when the wait has ended and its answer was written.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use dflockd_core::proto::server::{Answer, RequestError, parse_request};
use dflockd_core::proto::{Family, LineScan, MAX_REQUEST_LINE, Request, ServerStatus, scan_line};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::shared::{ConnSlot, Control, Shared};
use crate::state::{Acquire, ConnId, Enqueue, Grant, Lease, WaitPoll};
use crate::version::{PEER_WATCH_BUFFER, Profile};

/// How much pipelined input is buffered while a blocking request waits; beyond it the
/// connection stops reading (and so stops noticing a close) until the wait ends.
const WAIT_BUFFER_CAP: usize = 64 * 1024;

/// The pause after `error_auth` before the connection is closed (as the real server).
const AUTH_FAILURE_PAUSE: Duration = Duration::from_millis(100);

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(socket: TcpStream, id: ConnId, slot: ConnSlot) {
    let shared = slot.shared.clone();
    let _ = socket.set_nodelay(true);
    match &shared.tls {
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(shared.cfg.read_timeout, acceptor.accept(socket)).await;
            match handshake {
                Ok(Ok(stream)) => Conn::new(stream, id, shared.clone()).run().await,
                Ok(Err(err)) => tracing::debug!(conn = id, %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(conn = id, "TLS handshake timed out"),
            }
        }
        None => Conn::new(socket, id, shared.clone()).run().await,
    }
    drop(slot);
}

/// A request handler's verdict: `Close` ends the connection (after flushing what was
/// answered, if the socket still takes it).
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Whether [`Conn::watch`] reads the socket meanwhile.
#[derive(Clone, Copy)]
enum Reading {
    /// Not at all (v1.10 during a blocked request).
    Off,
    /// Into the input buffer up to this many unprocessed bytes, then no more.
    UpTo(usize),
    /// Into the input buffer; this many unprocessed bytes disconnect the client (v1.15+
    /// during a blocked request, as the real server's full `bufio.Reader`).
    DisconnectAt(usize),
}

/// What happened while waiting for something with the socket watched.
enum Watched<T> {
    Done(T),
    /// The control state matched the stop condition.
    Stopped,
    /// The peer closed the connection (or the socket failed).
    PeerClosed,
}

/// How reading more input ended.
enum Fill {
    Data,
    Closed,
    TimedOut,
}

/// The outcome of reading one request.
enum ReadRequest {
    Lines(Lines),
    Closed,
    TooLong,
    TimedOut,
}

/// A request as one release understands it.
enum Parsed<'a> {
    /// `ping` (v1.14+).
    Ping,
    Request(Request<'a>, Seconds),
}

/// The timeout and lease of a request as the server applies them: seconds times 10^9 in Go's
/// `int64` nanoseconds. In v1.10 that wraps around for huge values (a timeout that wraps
/// negative does not wait; a lease that wraps to a fraction of a second is that short);
/// since v1.15 such values are refused before.
#[derive(Clone, Copy, Debug, Default)]
struct Seconds {
    timeout: Duration,
    lease: Option<Duration>,
}

/// Why a request is answered `error`.
enum Malformed {
    Request(RequestError),
    /// A timeout or lease beyond what a Go `time.Duration` holds (refused since v1.15).
    SecondsTooLarge,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Request(err) => err.fmt(f),
            Malformed::SecondsTooLarge => f.write_str("seconds out of range"),
        }
    }
}

/// Parses a request with the rules of `profile`'s release.
fn parse<'a>(
    profile: &Profile,
    cmd: &'a str,
    key: &'a str,
    arg: &'a str,
) -> Result<Parsed<'a>, Malformed> {
    let request = parse_request(cmd, key, arg).map_err(Malformed::Request)?;
    if let Request::Ping = request {
        // Before v1.14 `ping` is an unknown command.
        return if profile.ping {
            Ok(Parsed::Ping)
        } else {
            Err(Malformed::Request(RequestError::UnknownCommand))
        };
    }
    let (timeout, lease) = seconds_fields(&request, arg);
    // The fields parsed as integers already.
    let number = |field: Option<&str>| field.and_then(|f| f.parse::<i64>().ok());
    let (timeout, lease) = (number(timeout), number(lease));
    if let Some(max) = profile.max_seconds {
        if [timeout, lease]
            .into_iter()
            .flatten()
            .any(|n| n.unsigned_abs() > max)
        {
            return Err(Malformed::SecondsTooLarge);
        }
    }
    let go_duration = |n: i64| {
        let nanos = n.wrapping_mul(1_000_000_000);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    };
    let seconds = Seconds {
        timeout: timeout.map_or(Duration::ZERO, go_duration),
        lease: lease.map(go_duration),
    };
    Ok(Parsed::Request(request, seconds))
}

/// The timeout and lease fields of a well-formed request's argument.
fn seconds_fields<'a>(request: &Request<'_>, arg: &'a str) -> (Option<&'a str>, Option<&'a str>) {
    let mut fields = arg.split_whitespace();
    let whole = Some(arg.trim()).filter(|a| !a.is_empty());
    match request {
        Request::Acquire {
            family: Family::Lock,
            ..
        } => (fields.next(), fields.next()),
        Request::Acquire { .. } => (fields.next(), fields.nth(1)),
        Request::Enqueue {
            family: Family::Lock,
            ..
        } => (None, whole),
        Request::Wait { .. } => (whole, None),
        Request::Enqueue { .. } | Request::Renew { .. } => (None, fields.nth(1)),
        _ => (None, None),
    }
}

/// One request's three lines, copied out of the input buffer.
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    cmd: Range<usize>,
    key: Range<usize>,
    arg: Range<usize>,
}

struct Conn<S> {
    stream: S,
    id: ConnId,
    shared: Arc<Shared>,
    control: watch::Receiver<Control>,
    inbuf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    authed: bool,
    spare: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, id: ConnId, shared: Arc<Shared>) -> Self {
        let control = shared.control.subscribe();
        let authed = shared.cfg.auth_token.is_none();
        Conn {
            stream,
            id,
            shared,
            control,
            inbuf: Vec::with_capacity(1024),
            start: 0,
            out: Vec::with_capacity(256),
            authed,
            spare: Vec::new(),
        }
    }

    async fn run(mut self) {
        self.serve_requests().await;
        // Best effort (a failed write already emptied the buffer): the peer may only have
        // closed its sending half.
        let _ = self.flush().await;
        self.shared.table.disconnect(self.id, StdInstant::now());
        tracing::debug!(conn = self.id, "connection closed");
        let _ = tokio::time::timeout(Duration::from_millis(100), self.stream.shutdown()).await;
    }

    async fn serve_requests(&mut self) {
        loop {
            let lines = match self.read_request().await {
                ReadRequest::Lines(lines) => lines,
                ReadRequest::Closed => return,
                ReadRequest::TooLong => {
                    self.discard_line().await;
                    return self.fail_and_close().await;
                }
                ReadRequest::TimedOut => return self.fail_and_close().await,
            };
            if self.gate().await.is_err() {
                return;
            }
            let flow = self.handle(&lines).await;
            self.spare = lines.buf;
            if flow == Flow::Close {
                return;
            }
            if !self.request_buffered() && self.flush().await.is_err() {
                return;
            }
        }
    }

    /// The answer to a request that cannot be read (line too long, read timeout): `error` (or
    /// `error_auth` before authentication, also while draining), then close.
    async fn fail_and_close(&mut self) {
        if self.authed {
            self.status(ServerStatus::Error);
        } else {
            self.auth_failed().await;
        }
    }

    /// `error_auth`, then a pause; the caller closes.
    async fn auth_failed(&mut self) -> Flow {
        self.status(ServerStatus::Auth);
        let _ = self.flush().await;
        tokio::time::sleep(AUTH_FAILURE_PAUSE).await;
        Flow::Close
    }

    /// Whether the buffer already holds another whole request (so answers can be batched).
    fn request_buffered(&self) -> bool {
        self.inbuf[self.start..]
            .iter()
            .filter(|&&b| b == b'\n')
            .take(3)
            .count()
            == 3
    }

    // ----- reading -------------------------------------------------------------------------

    async fn read_request(&mut self) -> ReadRequest {
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
        } else if self.start > 16 * 1024 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        let mut pos = self.start;
        let mut ranges: [Range<usize>; 3] = [0..0, 0..0, 0..0];
        for i in 0..ranges.len() {
            // Since v1.15 the argument of `auth` may be longer than other lines.
            let max = if i == 2 && &self.inbuf[ranges[0].clone()] == b"auth" {
                self.shared.profile.auth_line_max
            } else {
                MAX_REQUEST_LINE
            };
            let range = &mut ranges[i];
            let mut deadline = Instant::now() + self.shared.cfg.read_timeout;
            loop {
                match scan_line(&self.inbuf[pos..], max) {
                    LineScan::Complete { line_len, consumed } => {
                        *range = pos..pos + line_len;
                        pos += consumed;
                        break;
                    }
                    LineScan::TooLong => {
                        self.start = pos;
                        return ReadRequest::TooLong;
                    }
                    LineScan::Incomplete => match self.fill(&mut deadline).await {
                        Fill::Data => {}
                        Fill::Closed => return ReadRequest::Closed,
                        Fill::TimedOut => return ReadRequest::TimedOut,
                    },
                }
            }
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        let mut copy = |r: &Range<usize>| {
            let at = buf.len();
            buf.extend_from_slice(&self.inbuf[r.clone()]);
            at..buf.len()
        };
        let cmd = copy(&ranges[0]);
        let key = copy(&ranges[1]);
        let arg = copy(&ranges[2]);
        self.start = pos;
        ReadRequest::Lines(Lines { buf, cmd, key, arg })
    }

    /// Reads and drops the rest of an over-long line, up to its `\n`, EOF or the read timeout.
    async fn discard_line(&mut self) {
        let mut deadline = Instant::now() + self.shared.cfg.read_timeout;
        loop {
            if let Some(nl) = self.inbuf[self.start..].iter().position(|&b| b == b'\n') {
                self.start += nl + 1;
                return;
            }
            self.inbuf.truncate(self.start);
            if !matches!(self.fill(&mut deadline).await, Fill::Data) {
                return;
            }
        }
    }

    /// Reads more input, until `deadline` (pushed back while the server is paused).
    async fn fill(&mut self, deadline: &mut Instant) -> Fill {
        loop {
            self.inbuf.reserve(4096);
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.inbuf) => {
                    return match read {
                        Ok(0) | Err(_) => Fill::Closed,
                        Ok(_) => Fill::Data,
                    };
                }
                () = tokio::time::sleep_until(*deadline) => {
                    if !self.control.borrow().paused {
                        return Fill::TimedOut;
                    }
                    let before = self.inbuf.len();
                    let paused = self.watch(
                        std::future::pending::<()>(),
                        |c| !c.paused || c.draining,
                        Reading::UpTo(WAIT_BUFFER_CAP),
                    );
                    match paused.await {
                        Watched::PeerClosed => return Fill::Closed,
                        Watched::Done(()) | Watched::Stopped => {}
                    }
                    *deadline = Instant::now() + self.shared.cfg.read_timeout;
                    if self.inbuf.len() > before {
                        return Fill::Data;
                    }
                }
            }
        }
    }

    /// Runs `fut` while watching the control state and, as `reading` says, reading the
    /// socket (to notice a close): returns early when `stop` holds for the control state.
    async fn watch<F: Future>(
        &mut self,
        fut: F,
        stop: impl Fn(&Control) -> bool,
        reading: Reading,
    ) -> Watched<F::Output> {
        tokio::pin!(fut);
        loop {
            if stop(&self.control.borrow_and_update()) {
                return Watched::Stopped;
            }
            let pending = self.inbuf.len() - self.start;
            let can_read = match reading {
                Reading::Off => false,
                Reading::UpTo(cap) => pending < cap,
                Reading::DisconnectAt(cap) if pending >= cap => {
                    tracing::debug!(conn = self.id, "pipelined input behind a wait: disconnect");
                    return Watched::PeerClosed;
                }
                Reading::DisconnectAt(_) => true,
            };
            if can_read {
                self.inbuf.reserve(4096);
            }
            tokio::select! {
                biased;
                out = &mut fut => return Watched::Done(out),
                changed = self.control.changed() => {
                    if changed.is_err() {
                        // The instance is gone.
                        return Watched::PeerClosed;
                    }
                }
                read = self.stream.read_buf(&mut self.inbuf), if can_read => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return Watched::PeerClosed;
                    }
                }
            }
        }
    }

    /// Waits while the server is paused (not while it drains).
    async fn gate(&mut self) -> Result<(), ()> {
        if !self.control.borrow().paused {
            return Ok(());
        }
        match self
            .watch(
                std::future::pending::<()>(),
                |c| !c.paused || c.draining,
                Reading::UpTo(WAIT_BUFFER_CAP),
            )
            .await
        {
            Watched::PeerClosed => Err(()),
            Watched::Done(()) | Watched::Stopped => Ok(()),
        }
    }

    // ----- writing -------------------------------------------------------------------------

    async fn flush(&mut self) -> Result<(), ()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.gate().await?;
        let timeout = self.shared.cfg.write_timeout;
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        let result = if timeout.is_zero() {
            write.await
        } else {
            tokio::time::timeout(timeout, write)
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        };
        self.out.clear();
        result.map_err(|err| {
            tracing::debug!(conn = self.id, %err, "write failed");
        })
    }

    fn answer(&mut self, answer: Answer<'_>) {
        answer.encode(&mut self.out);
    }

    fn status(&mut self, status: ServerStatus) {
        self.answer(Answer::Status(status));
    }

    /// `ok TOKEN LEASE` (or `acquired TOKEN LEASE` to an enqueue). A lease of 0 whole seconds
    /// is written as the default lease's seconds, as the real server formats every grant.
    fn grant(&mut self, grant: Grant, enqueue: bool) {
        let lease_s = match grant.lease_s {
            0 => self.shared.table.config().default_lease.as_secs(),
            secs => secs,
        };
        let token = &grant.token;
        self.answer(if enqueue {
            Answer::Acquired { token, lease_s }
        } else {
            Answer::Granted { token, lease_s }
        });
    }

    // ----- requests ------------------------------------------------------------------------

    /// The lease of a request: the one it names (`secs` as the answer reports it, `duration`
    /// as applied), else the default.
    fn lease(&self, lease_s: Option<u64>, duration: Option<Duration>) -> Lease {
        match (lease_s, duration) {
            (Some(secs), Some(duration)) => Lease { duration, secs },
            (Some(secs), None) => Lease {
                duration: Duration::from_secs(secs),
                secs,
            },
            (None, _) => {
                let duration = self.shared.table.config().default_lease;
                Lease {
                    duration,
                    secs: duration.as_secs(),
                }
            }
        }
    }

    /// Handles one request.
    async fn handle(&mut self, lines: &Lines) -> Flow {
        let cmd = String::from_utf8_lossy(&lines.buf[lines.cmd.clone()]);
        let key_text = String::from_utf8_lossy(&lines.buf[lines.key.clone()]);
        let arg = String::from_utf8_lossy(&lines.buf[lines.arg.clone()]);
        let key = &lines.buf[lines.key.clone()];
        let profile = self.shared.profile;
        let parsed = parse(&profile, &cmd, &key_text, &arg);
        if !self.authed {
            // The handshake never looks at draining: a correct `auth` is answered `ok`.
            let expected = self.shared.cfg.auth_token.as_deref().unwrap_or_default();
            return match parsed {
                Ok(Parsed::Request(Request::Auth { secret }, _))
                    if constant_time_eq(secret, expected) =>
                {
                    self.authed = true;
                    self.answer(Answer::Ok);
                    Flow::Continue
                }
                _ => self.auth_failed().await,
            };
        }
        let (request, seconds) = match parsed {
            Ok(Parsed::Request(request, seconds)) => (request, seconds),
            Ok(Parsed::Ping) => {
                return self.refuse_while_draining().unwrap_or_else(|| {
                    self.answer(Answer::Ok);
                    Flow::Continue
                });
            }
            Err(err) => {
                tracing::debug!(conn = self.id, %err, "bad request");
                self.status(ServerStatus::Error);
                return Flow::Continue;
            }
        };
        if let Some(flow) = self.refuse_while_draining() {
            return flow;
        }
        let shared = self.shared.clone();
        let table = &shared.table;
        let now = StdInstant::now();
        tracing::debug!(conn = self.id, ?request, "request");
        match request {
            Request::Stats => {
                let json = table.snapshot(self.shared.connections(), now).to_json();
                self.answer(Answer::Stats(&json));
            }
            Request::Auth { .. } => self.status(ServerStatus::Error),
            Request::Release { family, token, .. } => {
                let ok = table.release(family, key, token, now);
                if ok {
                    self.answer(Answer::Ok);
                } else {
                    self.status(ServerStatus::Error);
                }
            }
            Request::Renew {
                family,
                token,
                lease_s,
                ..
            } => {
                let lease = self.lease(lease_s, seconds.lease);
                match table.renew(family, key, token, lease, now) {
                    Some(lease_s) => self.answer(Answer::Renewed { lease_s }),
                    None => self.status(ServerStatus::Error),
                }
            }
            Request::Enqueue {
                family,
                limit,
                lease_s,
                ..
            } => {
                let lease = self.lease(lease_s, seconds.lease);
                match table.enqueue(family, key, limit, lease, self.id, now) {
                    Enqueue::Acquired(grant) => self.grant(grant, true),
                    Enqueue::Queued => self.answer(Answer::Queued),
                    Enqueue::AlreadyEnqueued => self.status(ServerStatus::AlreadyEnqueued),
                    Enqueue::MaxLocks => self.status(ServerStatus::MaxLocks),
                    Enqueue::MaxWaiters => self.status(ServerStatus::MaxWaiters),
                    Enqueue::LimitMismatch => self.status(ServerStatus::LimitMismatch),
                }
            }
            Request::Acquire {
                family,
                limit,
                lease_s,
                ..
            } => {
                let lease = self.lease(lease_s, seconds.lease);
                return self
                    .acquire(family, key, seconds.timeout, limit, lease, now)
                    .await;
            }
            Request::Wait { family, .. } => {
                return self.wait(family, key, seconds.timeout, now).await;
            }
            _ => self.status(ServerStatus::Error),
        }
        Flow::Continue
    }

    /// Since v1.16, a well-formed request on a draining server is answered `error_draining`
    /// and the connection closed.
    fn refuse_while_draining(&mut self) -> Option<Flow> {
        if self.shared.profile.drain_refuses && self.control.borrow().draining {
            self.status(ServerStatus::Draining);
            return Some(Flow::Close);
        }
        None
    }

    async fn acquire(
        &mut self,
        family: Family,
        key: &[u8],
        timeout: Duration,
        limit: u64,
        lease: Lease,
        now: StdInstant,
    ) -> Flow {
        let wait = !timeout.is_zero();
        let outcome = self
            .shared
            .table
            .acquire(family, key, limit, lease, self.id, wait, now);
        let (waiter, mut rx) = match outcome {
            Acquire::Granted(grant) => {
                self.grant(grant, false);
                return Flow::Continue;
            }
            Acquire::Queued(waiter, rx) => (waiter, rx),
            Acquire::Timeout => {
                self.answer(Answer::Timeout);
                return Flow::Continue;
            }
            Acquire::MaxLocks => {
                self.status(ServerStatus::MaxLocks);
                return Flow::Continue;
            }
            Acquire::MaxWaiters => {
                self.status(ServerStatus::MaxWaiters);
                return Flow::Continue;
            }
            Acquire::LimitMismatch => {
                self.status(ServerStatus::LimitMismatch);
                return Flow::Continue;
            }
        };
        let shared = self.shared.clone();
        if self.flush().await.is_err() {
            shared
                .table
                .cancel_wait(family, key, waiter, StdInstant::now());
            return Flow::Close;
        }
        let timer = tokio::time::sleep_until(deadline_after(timeout));
        let waited = self
            .watch(
                async {
                    tokio::select! {
                        grant = &mut rx => grant.ok(),
                        () = timer => None,
                    }
                },
                |c| c.draining,
                shared.blocked_reading(),
            )
            .await;
        let fallback = match waited {
            Watched::Done(Some(grant)) => {
                self.grant(grant, false);
                return Flow::Continue;
            }
            Watched::Done(None) => Answer::Timeout,
            Watched::Stopped => Answer::Status(ServerStatus::Error),
            Watched::PeerClosed => {
                shared
                    .table
                    .cancel_wait(family, key, waiter, StdInstant::now());
                return Flow::Close;
            }
        };
        let now = StdInstant::now();
        if shared.table.cancel_wait(family, key, waiter, now) {
            self.answer(fallback);
            return Flow::Continue;
        }
        // Granted while the timer fired or the drain began.
        match rx.try_recv() {
            Ok(grant)
                if matches!(fallback, Answer::Status(_))
                    && !shared.profile.cancelled_wait_keeps_grant =>
            {
                shared.table.release(family, key, grant.token.as_str(), now);
                self.status(ServerStatus::Error);
            }
            Ok(grant) => self.grant(grant, false),
            Err(_) => self.answer(fallback),
        }
        Flow::Continue
    }

    async fn wait(
        &mut self,
        family: Family,
        key: &[u8],
        timeout: Duration,
        now: StdInstant,
    ) -> Flow {
        let shared = self.shared.clone();
        let table = &shared.table;
        let mut rx = match table.wait_poll(family, key, self.id, timeout.is_zero(), now) {
            WaitPoll::Pending(rx) => rx,
            done => {
                self.wait_answer(done);
                return Flow::Continue;
            }
        };
        if self.flush().await.is_err() {
            return Flow::Close;
        }
        let deadline = deadline_after(timeout);
        loop {
            let waited = self
                .watch(
                    async {
                        tokio::select! {
                            _ = &mut rx => true,
                            () = tokio::time::sleep_until(deadline) => false,
                        }
                    },
                    |c| c.draining,
                    shared.blocked_reading(),
                )
                .await;
            let poll = match waited {
                Watched::Done(notified) => {
                    table.wait_poll(family, key, self.id, !notified, StdInstant::now())
                }
                Watched::Stopped => {
                    // The wait ends and leaves the queue; a grant that raced in is kept only
                    // before v1.16.1.
                    let now = StdInstant::now();
                    match table.wait_poll(family, key, self.id, true, now) {
                        WaitPoll::Granted(grant) if shared.profile.cancelled_wait_keeps_grant => {
                            self.grant(grant, false);
                        }
                        WaitPoll::Granted(grant) => {
                            table.release(family, key, grant.token.as_str(), now);
                            self.status(ServerStatus::Error);
                        }
                        _ => self.status(ServerStatus::Error),
                    }
                    return Flow::Continue;
                }
                Watched::PeerClosed => return Flow::Close,
            };
            match poll {
                WaitPoll::Pending(next) => rx = next,
                done => {
                    self.wait_answer(done);
                    return Flow::Continue;
                }
            }
        }
    }

    fn wait_answer(&mut self, poll: WaitPoll) {
        match poll {
            WaitPoll::Granted(grant) => self.grant(grant, false),
            WaitPoll::NotEnqueued => self.status(ServerStatus::NotEnqueued),
            WaitPoll::LeaseExpired => self.status(ServerStatus::LeaseExpired),
            WaitPoll::Timeout | WaitPoll::Pending(_) => self.answer(Answer::Timeout),
        }
    }
}

impl Shared {
    /// How a connection reads its socket during a blocked request.
    fn blocked_reading(&self) -> Reading {
        if self.profile.watch_peer_close {
            Reading::DisconnectAt(PEER_WATCH_BUFFER)
        } else {
            Reading::Off
        }
    }
}

/// Now plus `timeout`, or far in the future when that does not fit.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare() {
        assert!(constant_time_eq("s3cret", "s3cret"));
        assert!(!constant_time_eq("s3cret", "s3creT"));
        assert!(!constant_time_eq("s3cret", "s3cre"));
        assert!(!constant_time_eq("", "x"));
        assert!(constant_time_eq("", ""));
    }
}
