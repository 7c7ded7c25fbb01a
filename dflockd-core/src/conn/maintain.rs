//! The maintenance task of a connection: renews the leases held through it, reports the lost
//! ones, times out requests and impatient callers, sends background releases, and retires
//! the connection when it is idle. The decisions are the state's (`State::expire`,
//! `Leases::due`, `State::retire`, `State::next_look`); this file does the I/O around them.

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::call::{Pending, PendingRenew};
use super::close::Task;
use super::connect::WriteIo;
use super::turn::READ_TASK;
use super::{Conn, KillOnDrop};
use crate::error::LossReason;
use crate::metrics;
use crate::proto::Request;

/// Renewals due within this window are sent together in one write.
const COALESCE: Duration = Duration::from_millis(25);

impl Conn {
    /// The maintenance task: one round of [`Conn::maintain`] whenever it asked to run, or when
    /// woken; ends with the connection.
    pub(crate) async fn maintenance_task(self: Arc<Self>) {
        let mut closed = self.closed.wait(Task::Maintenance);
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
        // The read task takes the turn over, so that what comes next wakes it at once.
        if self.read_turn.take_over_if_signalled() {
            let _ = self.read_answers(READ_TASK, Waker::noop());
        }
        let now = Instant::now();
        let (wake, due, kill) = {
            let mut st = self.lock_state();
            if st.dead.is_some() {
                return None;
            }
            let expired = st.expire(now, &self.server);
            let due = st.leases.due(now, COALESCE);
            // A lost lease may still be held at the server for a moment: give it back.
            for h in &due.lost {
                let untracked = metrics::Release::untracked();
                st.releases
                    .push((h.family, h.key.clone(), h.token, untracked));
            }
            let kill = expired
                .kill
                .or_else(|| st.retire(now, self.settings.idle_timeout));
            (expired.wake, due, kill)
        };
        for waker in wake {
            waker.wake();
        }
        for h in due.lost {
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
        if !due.renew.is_empty() || has_releases {
            match self.writer.try_lock() {
                Ok(mut writer) => self.write_due(&mut writer.io, &due.renew, now).await,
                Err(_) => retry_soon = true,
            }
        }
        let st = self.lock_state();
        if st.dead.is_some() {
            return None;
        }
        let next = st.next_look(now, self.settings.idle_timeout, self.settings.tick);
        let floor = now + Duration::from_millis(if retry_soon { 2 } else { 1 });
        Some(if retry_soon { floor } else { next.max(floor) })
    }

    /// Writes the renewals in `due` (those still due) and every queued background release, in
    /// one write. The write is bounded by the earliest lease deadline: a socket that cannot
    /// take a few hundred bytes by then is dead, and its locks are reported lost in time.
    async fn write_due(&self, writer: &mut Option<WriteIo>, due: &[u64], now: Instant) {
        let mut bytes = Vec::new();
        let timeout = self.settings.request_timeout;
        let mut limit = timeout;
        {
            let mut st = self.lock_state();
            if st.dead.is_some() {
                return;
            }
            for &lock_id in due {
                let Some(deadline) = st.leases.start_renew(lock_id, &mut bytes) else {
                    continue;
                };
                limit = limit.min(deadline.saturating_duration_since(now));
                st.pending.push_back(Pending::Renew(PendingRenew {
                    lock_id,
                    sent: now,
                    deadline: now + timeout,
                    tx: None,
                    counted: metrics::Renew::sent(),
                }));
            }
            for (family, key, token, counted) in std::mem::take(&mut st.releases) {
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
                        counted,
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
