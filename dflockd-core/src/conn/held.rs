//! Operations on the locks held through a connection: registering a grant, renewing one now,
//! forgetting one, and releasing in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Conn;
use super::call::{CallError, GrantMeta, Granted, Pending, PendingRenew};
use super::state::State;
use super::turn::Caller;
use crate::error::LossReason;
use crate::error::{Error, Result};
use crate::lease::LeaseShared;
use crate::metrics;
use crate::proto::{Family, Grant, Request, Token};

impl Conn {
    /// Records a grant as held through this connection and schedules its renewals. The
    /// request was sent at `sent` and answered at `now`; `after_wait`: it waited server-side.
    pub(crate) fn register(
        &self,
        st: &mut State,
        meta: &GrantMeta,
        grant: Grant,
        sent: Instant,
        now: Instant,
        after_wait: bool,
    ) -> Granted {
        let lease = Duration::from_secs(grant.lease_s);
        let lock_id = self.next_id();
        let shared = LeaseShared::held(lease, &meta.labels);
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
            after_wait,
            super::jitter(),
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

    /// Stops renewing a lock. With `release`, a release is sent in the background (used for
    /// dropped guards and abandoned grants). Returns whether the lock was still held.
    pub(crate) fn drop_lock(&self, lock_id: u64, release: bool) -> bool {
        let mut st = self.lock_state();
        let Some(h) = st.leases.forget(lock_id) else {
            return false;
        };
        let held = h.shared.mark_released();
        if release && st.dead.is_none() {
            let counted = h.shared.metrics.background_release();
            st.releases
                .push((h.family, h.key.clone(), h.token, counted));
            drop(st);
            self.wake_maint.notify_one();
        }
        held
    }

    /// Sends a release in the background (the answer is only logged).
    pub(crate) fn queue_release(&self, family: Family, key: Arc<str>, token: Token) {
        let mut st = self.lock_state();
        if st.dead.is_none() {
            st.releases
                .push((family, key, token, metrics::Release::untracked()));
            drop(st);
            self.wake_maint.notify_one();
        }
    }

    /// Forgets a lock whose release was abandoned before the server answered it (a release
    /// that is answered is forgotten with the answer: [`Call::forgets`](super::call::Call)).
    ///
    /// A lock its owner is releasing is marked released in its [`LeaseShared`] first, which
    /// stops its renewals and deadline checks; it stays registered until then, so that the
    /// connection is not parked with the release queued behind a blocking request.
    pub(crate) fn forget_released(&self, lock_id: u64) {
        self.lock_state().leases.forget(lock_id);
    }

    /// Renews lock `lock_id` (of `key`) now and waits for the answer: the new lease.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the lock is no longer held here or the server refused;
    /// connection errors.
    pub(crate) async fn renew_now(&self, lock_id: u64, key: &Arc<str>) -> Result<Duration> {
        let lost = |reason| Error::LeaseLost {
            key: key.to_string(),
            reason,
            fence: None,
        };
        let (family, token, lease) = {
            let st = self.lock_state();
            match st.leases.get(lock_id) {
                Some(h) => (h.family, h.token, h.lease),
                None => {
                    let reason = if st.dead.is_some() {
                        LossReason::ConnectionLost
                    } else {
                        LossReason::RenewRefused
                    };
                    return Err(lost(reason));
                }
            }
        };
        let (tx, mut rx) = oneshot::channel();
        let caller = Caller::new(self);
        let timeout = self.settings.request_timeout;
        let request = Request::Renew {
            family,
            key,
            token: token.as_str(),
            lease_s: Some(lease.as_secs()),
        };
        let sent = self
            .send(
                None,
                |buf| request.encode(buf),
                |now| {
                    Pending::Renew(PendingRenew {
                        lock_id,
                        sent: now,
                        deadline: now + timeout,
                        tx: Some(tx),
                        counted: crate::metrics::Renew::sent(),
                    })
                },
            )
            .await;
        match sent {
            Ok(_) => {}
            Err(CallError::Failed(e)) => return Err(e),
            // Not reserved while it holds a lock.
            Err(CallError::Reserved) => return Err(lost(LossReason::ConnectionLost)),
        }
        // The maintenance task fails it with the connection if no answer comes in time.
        match caller.answer(&mut rx).await {
            Ok(result) => result,
            Err(_) => Err(self.dead_error(&self.death_reason())),
        }
    }
}
