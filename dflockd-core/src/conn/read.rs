//! The read side of a connection: who reads the socket, and what each answer line does.
//!
//! A caller waiting for its answer reads the socket itself when no one else does (see
//! [`ReadTurn`]): the answer then reaches it without a hop through another task. The read
//! task reads whenever no caller waits (answers to renewals and background releases, the
//! server closing the connection). Whoever reads handles every answer it finds, in order:
//! its own goes straight back to it, another caller's waits in the state's delivered answers
//! and that caller is woken.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::Conn;
use super::call::{Answer, CallerId, Granted, Pending, PendingCall, PendingRenew};
use super::close::Task;
use super::connect::ReadIo;
use super::state::{STATS_TIMEOUTS, StateGuard};
use super::turn::READ_TASK;
use crate::error::LossReason;
use crate::error::{Error, Result, TlsEvidence};
use crate::lease::LeaseShared;
use crate::metrics::{self, Renewal};
use crate::proto::{
    Expect, LineScan, MAX_REPLY_LINE, MAX_STATS_LINE, Reply, ReplyError, ServerStatus, scan_line,
};

/// The read half of a connection and its buffer (`buf[start..end]` is unread data).
pub(crate) struct ReadHalf {
    pub(crate) io: Option<ReadIo>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Whether the server has sent anything on this connection (during auth included).
    received: bool,
    /// How many bytes from `start` are known to hold no `\n`: a long `stats` answer is read
    /// in many pieces, and each piece is scanned once.
    scanned: usize,
    /// Discarding the rest of a `stats` answer too long to read, up to its `\n`: `Some` with
    /// the latest time its pieces may move the next request's deadline to.
    skipping: Option<Instant>,
}

/// Size of the read buffer, and how large it may stay when an answer made it grow.
const READ_BUF: usize = 4096;

impl ReadHalf {
    pub(crate) fn new(io: ReadIo, leftover: &[u8], answered: bool) -> Self {
        let mut buf = vec![0; READ_BUF.max(leftover.len() * 2)];
        buf[..leftover.len()].copy_from_slice(leftover);
        ReadHalf {
            io: Some(io),
            buf,
            start: 0,
            end: leftover.len(),
            received: answered || !leftover.is_empty(),
            scanned: 0,
            skipping: None,
        }
    }

    /// Scans for a line that may be up to `max_len` long, without rescanning the bytes that
    /// earlier calls found to hold no `\n`.
    fn scan_long_line(&mut self, max_len: usize) -> LineScan {
        let data = &self.buf[self.start..self.end];
        let from = self.scanned.min(data.len());
        match scan_line(&data[from..], max_len.saturating_sub(from)) {
            LineScan::Complete { consumed, .. } => {
                self.scanned = 0;
                // Once more up to the `\n` only, for the content's length without its `\r`s.
                scan_line(&data[..from + consumed], max_len)
            }
            LineScan::Incomplete => {
                self.scanned = data.len();
                LineScan::Incomplete
            }
            LineScan::TooLong => {
                self.scanned = 0;
                LineScan::TooLong
            }
        }
    }

    /// While skipping a line too long to read: drops what is buffered of it. Returns whether
    /// its end was found (what follows it is kept).
    fn skip_line(&mut self) -> bool {
        let data = &self.buf[self.start..self.end];
        match data.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.start += nl + 1;
                self.skipping = None;
                true
            }
            None => {
                self.start = self.end;
                false
            }
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

impl Conn {
    /// The read task: reads whenever the socket has data and no waiting caller has the turn
    /// (see [`ReadTurn`]); closes the connection's halves when it is closed.
    pub(crate) async fn read_task(self: Arc<Self>) {
        let mut closed = self.closed.wait(Task::Read);
        std::future::poll_fn(|cx| {
            if Pin::new(&mut closed).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.read_turn.set_task(cx.waker());
            let _ = self.read_answers(READ_TASK, cx.waker());
            if self.is_dead() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        let read = self
            .read_half
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
    /// it wakes [`ReadTurn`] when more comes). Does nothing when someone else is reading: they
    /// do the same. `caller` is a waiting caller, which gets the turn for more data, or
    /// [`READ_TASK`]. Returns the caller's own answer if it was among those read.
    #[must_use]
    pub(crate) fn read_answers(&self, caller: CallerId, waker: &Waker) -> Option<Result<Answer>> {
        let Ok(mut guard) = self.read_half.try_lock() else {
            return None;
        };
        let half = &mut *guard;
        half.io.as_ref()?;
        let mut own = None;
        // Nothing came since the last read, which left the socket holding the waker: it will
        // wake the new reader when something comes (a request just sent is never answered
        // that fast, so this spares most callers' first poll of the socket).
        let mut quiet = !self.read_turn.start_reading(caller, waker);
        let mut cx = Context::from_waker(&self.read_waker);
        let failure = loop {
            // (Most rounds find nothing buffered: the answer is read below.)
            if half.start < half.end {
                if let Err(reason) = self.handle_lines(half, caller, &mut own) {
                    break reason.to_owned();
                }
            }
            if std::mem::take(&mut quiet) {
                return own;
            }
            half.make_room();
            let Some(io) = half.io.as_mut() else {
                return own;
            };
            let mut read_buf = ReadBuf::new(&mut half.buf[half.end..]);
            let first = !half.received;
            match Pin::new(io).poll_read(&mut cx, &mut read_buf) {
                Poll::Pending => return own,
                Poll::Ready(Ok(())) => {
                    let n = read_buf.filled().len();
                    if n == 0 {
                        if first {
                            self.refused_silently();
                        }
                        break "server closed the connection".to_owned();
                    }
                    if first && self.refused_with(read_buf.filled()) {
                        break "the server answered with TLS".to_owned();
                    }
                    if first && self.tls_name.is_none() {
                        self.spoke_plaintext.store(true, Ordering::Relaxed);
                    }
                    half.received = true;
                    half.end += n;
                }
                Poll::Ready(Err(e)) => {
                    if first {
                        self.refused_by_error(&e);
                    }
                    break format!("read failed: {e}");
                }
            }
        };
        drop(guard);
        self.kill(&failure);
        own
    }

    /// The first bytes from the server: on a plaintext connection, TLS ones mean it serves
    /// TLS (see [`Refusal`](super::Refusal)). Returns whether they did.
    fn refused_with(&self, first: &[u8]) -> bool {
        let tls = self.tls_name.is_none() && super::connect::first_bytes_are_tls(first);
        if tls {
            let _ = self
                .refused
                .set(super::Refusal::TlsRequired(TlsEvidence::AnsweredTls));
        }
        tls
    }

    /// The server closed a connection that it never answered, with a request sent: on a
    /// plaintext connection, what a server that serves TLS does, unless it has answered this
    /// pool's plaintext connections before (then it is a restart, a cap, or a proxy in front
    /// of it that lost it: the connection just closed).
    fn refused_silently(&self) {
        if self.tls_name.is_none()
            && !self.spoke_plaintext.load(Ordering::Relaxed)
            && !self.lock_state().pending.is_empty()
        {
            let _ = self
                .refused
                .set(super::Refusal::TlsRequired(TlsEvidence::ClosedSilently));
        }
    }

    /// A read error before the server's first answer: reset like a silent close, or on a TLS
    /// connection an alert (a refused client certificate arrives after the handshake).
    fn refused_by_error(&self, error: &std::io::Error) {
        if self.tls_name.is_none() {
            if error.kind() == std::io::ErrorKind::ConnectionReset {
                self.refused_silently();
            }
        } else {
            #[cfg(feature = "tls-base")]
            if let Some(problem) = super::tls::classify_problem(error, None) {
                let _ = self.refused.set(super::Refusal::Tls(problem));
            }
        }
    }

    /// Handles every complete answer line in the buffer. An `Err` poisons the connection.
    fn handle_lines(
        &self,
        half: &mut ReadHalf,
        caller: CallerId,
        own: &mut Option<Result<Answer>>,
    ) -> std::result::Result<(), &'static str> {
        loop {
            if let Some(until) = half.skipping {
                if !half.skip_line() {
                    self.lock_state().skipped_arriving(
                        Instant::now(),
                        self.settings.request_timeout,
                        until,
                    );
                    return Ok(());
                }
            }
            let mut scan = scan_line(&half.buf[half.start..half.end], MAX_REPLY_LINE);
            let stats = scan == LineScan::TooLong
                && matches!(
                    self.lock_state().pending.front().map(Pending::expect),
                    Some(Expect::Stats)
                );
            if stats {
                scan = half.scan_long_line(MAX_STATS_LINE);
            }
            match scan {
                LineScan::Complete { line_len, consumed } => {
                    let line = &half.buf[half.start..half.start + line_len];
                    self.on_line(line, caller, own)?;
                    half.start += consumed;
                }
                LineScan::Incomplete => {
                    if stats {
                        self.lock_state()
                            .stats_arriving(Instant::now(), self.settings.request_timeout);
                    }
                    return Ok(());
                }
                // A server that knows very many keys: skip its answer, keep the connection
                // (and the locks held on it).
                LineScan::TooLong if stats => {
                    let until = self.fail_head(Error::StatsTooLarge {
                        server: self.server.to_string(),
                        limit: MAX_STATS_LINE,
                    });
                    // As long as the answer could have taken to read.
                    half.skipping = Some(
                        until.unwrap_or_else(Instant::now)
                            + self.settings.request_timeout * STATS_TIMEOUTS,
                    );
                }
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

    /// Fails the oldest pending request with `error` (its answer is not read: the connection
    /// is about to die, or the answer is skipped). Returns when that request was sent, if it
    /// was a call.
    fn fail_head(&self, error: Error) -> Option<Instant> {
        let mut st = self.lock_state();
        match st.take_answered(Instant::now, self.settings.request_timeout) {
            Some(Pending::Call(PendingCall {
                waiter,
                caller,
                sent,
                ..
            })) => {
                if let Some(waker) = waiter {
                    st.delivered.push((caller, Err(error)));
                    drop(st);
                    waker.wake();
                }
                Some(sent)
            }
            Some(Pending::Renew(PendingRenew { tx: Some(tx), .. })) => {
                let _ = tx.send(Err(error));
                None
            }
            _ => None,
        }
    }

    /// Handles one answer line: the answer to the oldest pending request. An `Err` poisons the
    /// connection. The answer of `caller` (the one reading) goes to `own`.
    fn on_line(
        &self,
        line: &[u8],
        caller: CallerId,
        own: &mut Option<Result<Answer>>,
    ) -> std::result::Result<(), &'static str> {
        let mut st = self.lock_state();
        match st.take_answered(Instant::now, self.settings.request_timeout) {
            None => Err("answer to no request"),
            Some(Pending::Call(call)) => self.on_call_answer(st, call, line, caller, own),
            Some(Pending::Renew(renew)) => self.on_renew_answer(st, renew, line),
            Some(Pending::Release {
                key,
                token,
                counted,
                ..
            }) => {
                drop(st);
                match Reply::parse(Expect::Release, line) {
                    Ok(_) => {
                        counted.answered(false);
                        tracing::debug!(key = %key, token = %token, outcome = "ok", "released in the background");
                        Ok(())
                    }
                    Err(ReplyError::Server(status)) => {
                        metrics::server_error(&self.server, &status);
                        counted.answered(true);
                        tracing::debug!(key = %key, token = %token, %status, outcome = "lease_lost", "background release refused (already gone)");
                        Ok(())
                    }
                    Err(ReplyError::Malformed(reason)) => Err(reason),
                }
            }
        }
    }

    /// The answer to a [`Call`](super::call::Call): turned into its result, registered if it
    /// is a grant, and handed to its caller (or released, if the caller went away).
    fn on_call_answer(
        &self,
        mut st: StateGuard<'_>,
        call: PendingCall,
        line: &[u8],
        reader: CallerId,
        own: &mut Option<Result<Answer>>,
    ) -> std::result::Result<(), &'static str> {
        if call.blocking {
            st.parked = None;
        }
        let mut parsed = Reply::parse(call.expect, line);
        if let Some(lock_id) = call.forget {
            if matches!(parsed, Ok(_) | Err(ReplyError::Server(_))) {
                let released = st.leases.forget(lock_id);
                // Refused because the lease had run out at the server, although the release
                // left while the lease was vouched for: the section it ended was protected
                // throughout; the release was late on the way.
                if matches!(parsed, Err(ReplyError::Server(ServerStatus::Error)))
                    && released.is_some_and(|h| h.vouched_for_at(call.sent))
                {
                    tracing::debug!(
                        key = call.key.as_deref().unwrap_or(""),
                        "release reached the server after the lease ran out there; it was sent in time"
                    );
                    parsed = Ok(Reply::Ok);
                }
            }
        }
        let (result, poison) = match parsed {
            Ok(reply) => (Ok(self.answer_of(&mut st, &call, reply)), None),
            Err(ReplyError::Malformed(reason)) => (
                Err(Error::Protocol {
                    server: self.server.to_string(),
                    reason,
                }),
                Some(reason),
            ),
            Err(ReplyError::Server(status)) => {
                metrics::server_error(&self.server, &status);
                // The server closes the connection after these.
                let poison = matches!(status, ServerStatus::Auth)
                    .then_some("server rejected the auth token");
                let key = call.key.as_deref().unwrap_or("");
                let error = match status {
                    ServerStatus::Auth if !self.authenticated => Error::AuthRequired {
                        server: self.server.to_string(),
                    },
                    status => Error::from_status(status, &self.server, call.command, key),
                };
                (Err(error), poison)
            }
        };
        let (orphan, wake) = match call.waiter {
            Some(_) if call.caller == reader && reader != READ_TASK => {
                *own = Some(result);
                (None, None)
            }
            Some(waker) => {
                st.delivered.push((call.caller, result));
                (None, Some(waker))
            }
            None => (Some(result), None),
        };
        drop(st);
        if let Some(waker) = wake {
            waker.wake();
        }
        if let Some(Ok(Answer::Granted(orphan))) = orphan {
            // The caller gave up (cancelled): nobody will release this grant.
            tracing::debug!(key = call.key.as_deref().unwrap_or(""), token = %orphan.grant.token, "releasing a grant whose caller went away");
            self.drop_lock(orphan.lock_id, true);
        }
        poison.map_or(Ok(()), Err)
    }

    /// The [`Answer`] a well-formed reply to `call` stands for; a grant is registered for
    /// renewal (when the call asked for it) at once, under the state lock that took it.
    fn answer_of(&self, st: &mut StateGuard<'_>, call: &PendingCall, reply: Reply<'_>) -> Answer {
        match reply {
            Reply::Granted(grant) => Answer::Granted(match &call.grant {
                Some(meta) => {
                    // A non-blocking request is answered at once: its send time stands for
                    // now (renewals are planned from it a round trip early, which is safe).
                    let now = if call.blocking {
                        Instant::now()
                    } else {
                        call.sent
                    };
                    self.register(st, meta, grant, call.sent, now, call.blocking)
                }
                None => Granted {
                    lock_id: 0,
                    grant,
                    shared: LeaseShared::new(Duration::from_secs(grant.lease_s)),
                    unconfirmed: false,
                },
            }),
            Reply::Queued => Answer::Queued,
            Reply::Timeout => Answer::Timeout,
            Reply::Stats(json) => Answer::Stats(json.to_owned()),
            // `ok` to a release, auth or ping, and `ok LEASE` (no caller renews with a call).
            _ => Answer::Ok,
        }
    }

    /// The answer to a renew: the lease's deadline moves, or it is lost, or (a transient
    /// refusal) the renew is tried again soon.
    fn on_renew_answer(
        &self,
        mut st: StateGuard<'_>,
        renew: PendingRenew,
        line: &[u8],
    ) -> std::result::Result<(), &'static str> {
        let PendingRenew {
            lock_id,
            sent,
            tx,
            counted,
            ..
        } = renew;
        let now = Instant::now();
        let result = match Reply::parse(Expect::Renew, line) {
            Ok(Reply::Renewed { lease_s, .. }) => {
                counted.answered(Renewal::Ok);
                let lease = Duration::from_secs(lease_s);
                if let Some(at) = st
                    .leases
                    .renewed(lock_id, sent, now, lease, super::jitter())
                {
                    self.maint_by(&mut st, at);
                }
                drop(st);
                Ok(lease)
            }
            Ok(_) | Err(ReplyError::Malformed(_)) => {
                drop(st);
                counted.answered(Renewal::Failed);
                if let Some(tx) = tx {
                    let _ = tx.send(Err(Error::Protocol {
                        server: self.server.to_string(),
                        reason: "malformed renew answer",
                    }));
                }
                return Err("malformed renew answer");
            }
            Err(ReplyError::Server(ServerStatus::Error)) => {
                let lost = st.leases.forget(lock_id);
                drop(st);
                metrics::server_error(&self.server, &ServerStatus::Error);
                counted.answered(Renewal::Refused);
                let reason = LossReason::RenewRefused;
                let key = lost.as_ref().map(|h| h.key.to_string()).unwrap_or_default();
                if let Some(h) = lost {
                    if h.shared.mark_lost(reason) {
                        tracing::warn!(key = %h.key, token = %h.token, %reason, "lease lost");
                    }
                }
                Err(Error::LeaseLost {
                    key,
                    reason,
                    fence: None,
                })
            }
            Err(ReplyError::Server(status)) => {
                metrics::server_error(&self.server, &status);
                counted.answered(Renewal::Failed);
                // Transient (draining, not leader, unknown word): retry before the deadline;
                // the deadline itself does not move.
                let held = st.leases.get(lock_id).map(|h| {
                    tracing::debug!(key = %h.key, token = %h.token, %status, "renew refused for now, will retry");
                    (h.key.clone(), h.family)
                });
                if let Some(at) = st.leases.retry_later(lock_id, now) {
                    self.maint_by(&mut st, at);
                }
                drop(st);
                let (key, family) = held.unwrap_or_else(|| ("".into(), crate::proto::Family::Lock));
                let command = family.pick(
                    crate::proto::Command::Renew,
                    crate::proto::Command::SemRenew,
                );
                Err(Error::from_status(status, &self.server, command, &key))
            }
        };
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
        Ok(())
    }
}
