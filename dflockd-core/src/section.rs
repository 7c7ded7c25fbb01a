//! Scoped critical sections: acquire, run the work while the lease holds, release.
//!
//! [`Lock::run`](crate::Lock::run), [`Semaphore::run`](crate::Semaphore::run),
//! [`MultiLock::run`](crate::MultiLock::run), their blocking twins and the attribute macros
//! all go through here. A section remembers, for the task (or thread) that runs it, which
//! keys it holds: acquiring one of them again inside the section would wait for itself, so it
//! fails at once with [`Error::Reentrant`]; and [`current_lock`] tells the work which lock it
//! runs under.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::LossReason;
use crate::error::{Error, Result};
use crate::guard::{Guard, HeldLock};
use crate::proto::Family;

/// What a scoped section does when its lease is lost while the work runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnLeaseLoss {
    /// Drop the work at once (it is cancelled at its next `.await`) and return
    /// [`Error::LeaseLost`]. The default.
    #[default]
    Cancel,
    /// Let the work run to its end and return its output; the loss is logged, and
    /// [`HeldLock::is_held`] tells the work.
    Finish,
}

/// How a section runs: its lease-loss policy and its minimum hold time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) on_lease_loss: OnLeaseLoss,
    /// Keep the lock at least this long from the grant (in the background, after the work).
    pub(crate) hold_at_least: Duration,
}

/// One section the current task or thread runs in.
#[derive(Clone, Debug)]
struct Entry {
    server: Arc<str>,
    family: Family,
    held: HeldLock,
}

impl Entry {
    fn is(&self, server: &str, family: Family, key: &str) -> bool {
        self.family == family && self.held.key() == key && &*self.server == server
    }
}

tokio::task_local! {
    /// The sections the current task runs in, innermost last.
    static SECTIONS: Arc<[Entry]>;
}

thread_local! {
    /// The sections the current thread runs in (blocking client), innermost last.
    static THREAD_SECTIONS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// The lock of the innermost scoped section the current task runs in
/// ([`Lock::run`](crate::Lock::run), [`Semaphore::run`](crate::Semaphore::run),
/// [`MultiLock::run`](crate::MultiLock::run) (its first key), the attribute macros; or, on a
/// plain thread, their blocking twins), or `None` outside one.
///
/// Tasks spawned by the work do not see it: pass them the [`HeldLock`] (or its
/// [`watch`](HeldLock::watch)).
#[must_use]
pub fn current_lock() -> Option<HeldLock> {
    SECTIONS
        .try_with(|s| s.last().map(|e| e.held.clone()))
        .ok()
        .flatten()
        .or_else(|| THREAD_SECTIONS.with(|s| s.borrow().last().map(|e| e.held.clone())))
}

/// Fails with [`Error::Reentrant`] when the current task or thread already runs in a section
/// holding `key` of `family` on `server`.
pub(crate) fn check_reentry(server: &str, family: Family, key: &str) -> Result<()> {
    let in_task = SECTIONS
        .try_with(|s| s.iter().any(|e| e.is(server, family, key)))
        .unwrap_or(false);
    let in_thread = THREAD_SECTIONS.with(|s| s.borrow().iter().any(|e| e.is(server, family, key)));
    if in_task || in_thread {
        Err(Error::Reentrant {
            key: key.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// The sections of the current task with those of `guards` added.
fn nested(guards: &[&Guard]) -> Arc<[Entry]> {
    let added = guards.iter().map(|g| Entry {
        server: g.server_arc(),
        family: g.family(),
        held: g.held(),
    });
    match SECTIONS.try_with(Arc::clone) {
        Ok(outer) => outer.iter().cloned().chain(added).collect(),
        Err(_) => added.collect(),
    }
}

/// Runs `work` while every guard in `guards` holds its lock, then releases them (or keeps
/// them for the rest of the minimum hold time). The first guard is the section's
/// [`current_lock`].
///
/// # Errors
/// [`Error::LeaseLost`] (of the first lease lost) when the policy is [`OnLeaseLoss::Cancel`]
/// and a lease is lost before the work ends, or a release tells that the section was not
/// fully protected.
pub(crate) async fn run<Fut>(guards: Vec<Guard>, policy: Policy, work: Fut) -> Result<Fut::Output>
where
    Fut: Future,
{
    let granted = Instant::now();
    let refs: Vec<&Guard> = guards.iter().collect();
    let work = SECTIONS.scope(nested(&refs), work);
    let output = match policy.on_lease_loss {
        OnLeaseLoss::Cancel => {
            tokio::select! {
                biased;
                (reason, i) = first_loss(&guards) => {
                    let error = guards[i].held().lost_error(reason);
                    tracing::warn!(key = %guards[i].key(), %reason, "lease lost: the section's work was cancelled");
                    // Dropping the guards stops what is left and releases it.
                    return Err(error);
                }
                output = work => output,
            }
        }
        OnLeaseLoss::Finish => {
            let output = work.await;
            for guard in &guards {
                if let Some(reason) = guard.loss_reason() {
                    tracing::warn!(key = %guard.key(), %reason, "lease lost while the section ran; it ran to its end");
                }
            }
            output
        }
    };
    release(guards, policy, granted).await?;
    Ok(output)
}

/// Completes with the first loss among `guards` (and the index of that guard).
async fn first_loss(guards: &[Guard]) -> (LossReason, usize) {
    let mut losses: Vec<_> = guards.iter().map(|g| Box::pin(g.lost())).collect();
    std::future::poll_fn(|cx| {
        for (i, lost) in losses.iter_mut().enumerate() {
            if let std::task::Poll::Ready(reason) = lost.as_mut().poll(cx) {
                return std::task::Poll::Ready((reason, i));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The end of a section: releases each guard still held (a lost one has nothing to give
/// back), or hands it to a background task for the rest of the minimum hold time. A release
/// that shows a loss is an error with [`OnLeaseLoss::Cancel`] and logged with
/// [`OnLeaseLoss::Finish`].
pub(crate) async fn release(guards: Vec<Guard>, policy: Policy, granted: Instant) -> Result<()> {
    let remaining = policy.hold_at_least.saturating_sub(granted.elapsed());
    let mut outcome = Ok(());
    for guard in guards {
        if !guard.is_held() {
            continue;
        }
        if !remaining.is_zero() {
            guard.release_after(remaining);
            continue;
        }
        let key = guard.key().to_owned();
        match guard.release().await {
            Ok(()) => {}
            Err(e @ Error::LeaseLost { .. }) if policy.on_lease_loss == OnLeaseLoss::Cancel => {
                if outcome.is_ok() {
                    outcome = Err(e);
                }
            }
            Err(Error::LeaseLost { reason, .. }) => {
                tracing::warn!(%key, %reason, "the lease was lost before the section ended; it ran to its end");
            }
            Err(error) => {
                tracing::warn!(%key, %error, "the section ended but its release failed (the server frees the lock when its lease expires)");
            }
        }
    }
    outcome
}

/// Runs blocking `work` on this thread as a section of `guards` (the blocking client): the
/// thread's sections include them meanwhile (for [`current_lock`] and reentrancy), and a
/// panic in `work` still takes them out.
#[cfg(feature = "blocking")]
pub(crate) fn run_on_thread<T>(guards: &[&Guard], work: impl FnOnce() -> T) -> T {
    struct Pop(usize);
    impl Drop for Pop {
        fn drop(&mut self) {
            THREAD_SECTIONS.with(|s| s.borrow_mut().truncate(self.0));
        }
    }
    let depth = THREAD_SECTIONS.with(|s| {
        let mut s = s.borrow_mut();
        let depth = s.len();
        s.extend(guards.iter().map(|g| Entry {
            server: g.server_arc(),
            family: g.family(),
            held: g.held(),
        }));
        depth
    });
    let _pop = Pop(depth);
    work()
}
