//! Who reads a connection's socket, and how a caller gets its answer.
//!
//! A caller waiting for its answer reads the socket itself when no one else does: the answer
//! then reaches it without a hop through another task. [`ReadTurn`] says whose turn it is;
//! [`Caller`] and [`AnswerSlot`] are a waiting caller; answers read by someone else wait in
//! the state's delivered answers.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::oneshot;

use super::Conn;
use super::call::{Answer, CallerId};
use crate::error::Result;

/// The caller id of the read task.
pub(crate) const READ_TASK: CallerId = 0;

/// Whose turn it is to read a connection's socket when it has data.
///
/// Every read registers the same waker with the socket: this one. It wakes whoever has the
/// turn: the caller that last read while waiting for its answer, or the read task when no
/// caller waits. So with one caller waiting, the socket wakes that caller, which reads its
/// answer itself. Whoever reads goes on until the socket has nothing more (which registers
/// this waker again), handing other callers their answers. A caller that stops waiting hands
/// the turn back to the read task, and wakes it if data came meanwhile that nobody has read.
#[derive(Default)]
pub(crate) struct ReadTurn {
    turn: Mutex<Turn>,
}

struct Turn {
    /// Who reads next: a waiting caller, or [`READ_TASK`].
    caller: CallerId,
    /// The waiting caller's waker; `None` when the read task has the turn.
    waker: Option<Waker>,
    task: Option<Waker>,
    /// The socket signalled data since the last read began. While it is false, the last read
    /// ended with the socket holding this waker (every read goes on until the socket has
    /// nothing more), so there is nothing to read yet and the socket will wake the reader:
    /// a new reader need not poll it. True at first: nobody has read yet.
    signalled: bool,
}

impl Default for Turn {
    fn default() -> Self {
        Turn {
            caller: READ_TASK,
            waker: None,
            task: None,
            signalled: true,
        }
    }
}

impl Turn {
    /// Gives the turn to the read task; returns the caller's waker it held.
    fn give_to_task(&mut self) -> Option<Waker> {
        self.caller = READ_TASK;
        self.waker.take()
    }
}

impl ReadTurn {
    fn turn(&self) -> MutexGuard<'_, Turn> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the read task's waker.
    pub(super) fn set_task(&self, waker: &Waker) {
        let mut turn = self.turn();
        if !turn.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            turn.task = Some(waker.clone());
        }
    }

    /// A read begins: data signalled so far will be read. A waiting caller gets the turn for
    /// what comes next. Returns whether the socket signalled since the last read began (when
    /// it did not, polling it would only find nothing: see [`Turn::signalled`]).
    pub(super) fn start_reading(&self, caller: CallerId, waker: &Waker) -> bool {
        let mut turn = self.turn();
        let signalled = std::mem::replace(&mut turn.signalled, false);
        if caller != READ_TASK
            && (turn.caller != caller || !turn.waker.as_ref().is_some_and(|w| w.will_wake(waker)))
        {
            turn.caller = caller;
            turn.waker = Some(waker.clone());
        }
        signalled
    }

    /// If the socket signalled data that nobody has read since, gives the turn to the read
    /// task (a caller that reads again takes it back) and returns true.
    pub(crate) fn take_over_if_signalled(&self) -> bool {
        let mut turn = self.turn();
        if !turn.signalled {
            return false;
        }
        turn.give_to_task();
        true
    }

    /// `caller` no longer waits: the read task takes over (and reads at once if the socket
    /// signalled data that may be unread).
    pub(super) fn stop_reading(&self, caller: CallerId) {
        // The caller's waker is dropped after the lock is let go.
        let (_caller, task) = {
            let mut turn = self.turn();
            if turn.caller != caller {
                return;
            }
            let waker = turn.give_to_task();
            (waker, turn.signalled.then(|| turn.task.clone()).flatten())
        };
        if let Some(waker) = task {
            waker.wake();
        }
    }
}

impl Wake for ReadTurn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = {
            let mut turn = self.turn();
            turn.signalled = true;
            if turn.caller == READ_TASK {
                turn.task.clone()
            } else {
                turn.waker.clone()
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A caller waiting for an answer on a connection, which reads the socket itself when no one
/// else does. Dropping it hands the turn back to the read task.
pub(crate) struct Caller<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) id: CallerId,
}

impl<'a> Caller<'a> {
    pub(crate) fn new(conn: &'a Conn) -> Self {
        Caller {
            conn,
            id: conn.next_id(),
        }
    }

    /// Waits for the answer in `rx`, reading answers (this one and others) meanwhile.
    pub(crate) async fn answer<T>(
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

impl Drop for Caller<'_> {
    fn drop(&mut self) {
        self.conn.read_turn.stop_reading(self.id);
    }
}

/// Where a call's answer arrives: read by the caller itself, or by someone else, who leaves
/// it in the state's delivered answers and wakes the caller. If the caller goes away before
/// taking its answer, dropping this stops the answer from being delivered, and releases a
/// grant that was delivered already (nobody else would: it would stay registered and renewed
/// for ever).
pub(crate) struct AnswerSlot<'a> {
    pub(crate) caller: Caller<'a>,
    /// The waker the pending request holds for this caller.
    pub(crate) waker: Waker,
    /// The caller has its answer: nothing can be left for it.
    pub(crate) answered: bool,
}

impl AnswerSlot<'_> {
    /// Waits for the answer, reading answers (this one and others) meanwhile.
    pub(crate) async fn answer(&mut self) -> Result<Answer> {
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
        let (conn, id) = (self.caller.conn, self.caller.id);
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
        let conn = self.caller.conn;
        if let Some(Ok(Answer::Granted(orphan))) = conn.give_up(self.caller.id) {
            tracing::debug!(token = %orphan.grant.token, "releasing a grant whose caller went away");
            conn.drop_lock(orphan.lock_id, true);
        }
    }
}

impl Conn {
    /// Takes the answer delivered to `caller`, if any. Looks without the lock first: usually
    /// nothing waits there.
    pub(super) fn take_delivered(&self, caller: CallerId) -> Option<Result<Answer>> {
        if self
            .summary
            .delivered
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
        {
            return None;
        }
        self.lock_state().take_delivered(caller)
    }

    /// The pending request of `caller` wakes `waker` from now on; or, if it was answered
    /// meanwhile, its answer.
    pub(super) fn set_waiter(&self, caller: CallerId, waker: &Waker) -> Option<Result<Answer>> {
        let mut st = self.lock_state();
        match st.waiter_of(caller) {
            Some(w @ Some(_)) => {
                *w = Some(waker.clone());
                None
            }
            _ => st.take_delivered(caller),
        }
    }

    /// `caller` goes away without its answer: an answer delivered to it is returned (to be
    /// disposed of), one still to come will be dropped.
    pub(super) fn give_up(&self, caller: CallerId) -> Option<Result<Answer>> {
        let mut st = self.lock_state();
        let delivered = st.take_delivered(caller);
        if delivered.is_none() {
            if let Some(waiter) = st.waiter_of(caller) {
                *waiter = None;
            }
        }
        delivered
    }
}
