//! Leader election: one process of a group leads at a time, and runs the group's singleton
//! work while it does.
//!
//! Leadership is a lock on the group's name. Every candidate queues for it on the server
//! (FIFO); the one holding it leads, renewing its lease in the background. When the leader
//! goes away (it resigns, crashes, or its connection breaks) the server hands the lock to the
//! next candidate in the queue: at once for a resignation or a closed connection, at the
//! latest when the lease runs out otherwise. A leader whose renewals stop succeeding learns of
//! its loss before the server can hand the lock on (see [`HeldLock::lost`]), and its work is
//! cancelled then. A leader whose connection breaks learns of it when it sees the close, which
//! may be just after the next candidate was made leader: work that must never overlap passes
//! the term's [`number`](Term::number) (the grant's fence) to what it writes to.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::guard::HeldLock;
use crate::inner::ClientInner;
use crate::lock::Lock;

/// A group of processes of which one leads. Made by
/// [`Client::election`](crate::Client::election); start campaigning with
/// [`campaign`](Election::campaign).
///
/// ```no_run
/// # async fn f(client: dflockd_core::Client) {
/// # async fn singleton_worker(_: dflockd_core::Term) {}
/// use std::time::Duration;
/// let campaign = client
///     .election("billing-scheduler")
///     .lease_ttl(Duration::from_secs(10))
///     .campaign(|term| async move {
///         // Runs only while this process leads; cancelled when it stops leading.
///         singleton_worker(term).await
///     });
/// // ... on shutdown:
/// campaign.resign().await;
/// # }
/// ```
#[derive(Clone)]
pub struct Election {
    client: Arc<ClientInner>,
    group: String,
    lease: Duration,
    wait: Duration,
    backoff: (Duration, Duration),
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("group", &self.group)
            .field("lease", &self.lease)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Election {
    pub(crate) fn new(client: Arc<ClientInner>, group: String) -> Self {
        Election {
            client,
            group,
            lease: Duration::from_secs(10),
            wait: Duration::from_secs(30),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// The group's name: the key of the lock that is leadership.
    #[must_use]
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The leader's lease: a leader that vanishes without a word (a frozen process, a lost
    /// network) is replaced at the latest this long after its last renew. Default is 10 s.
    #[must_use]
    pub fn lease_ttl(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a candidate waits in the server's queue before queueing again. Default is
    /// 30 s.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The pause after a failed attempt (the server unreachable, for example): starts at
    /// `min`, doubles up to `max`, with jitter; back to `min` after a success. Default is
    /// 100 ms to 5 s.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max.max(min));
        self
    }

    /// Campaigns in a background task until [`Campaign::resign`] (or until the campaign is
    /// dropped): whenever this process becomes the leader, `lead` is called with the new
    /// [`Term`] and the future it returns runs until it ends or leadership is lost
    /// (then it is dropped); after either, the process campaigns again.
    ///
    /// Must be called within a tokio runtime.
    pub fn campaign<F, Fut>(self, lead: F) -> Campaign
    where
        F: FnMut(Term) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (status_tx, status) = watch::channel(Leadership::Follower);
        let (stop_tx, stop) = oneshot::channel();
        let task = tokio::spawn(campaign(self, lead, status_tx, stop));
        Campaign {
            status,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }
}

/// One term of leadership.
#[derive(Clone, Debug)]
pub struct Term {
    held: HeldLock,
}

impl Term {
    /// The term's number: the fence of the grant that made this process the leader. It grows
    /// with every term, so a resource can refuse the writes of a deposed leader. `None` when
    /// the server issues no fences (see [`HeldLock::fence`]).
    #[must_use]
    pub fn number(&self) -> Option<u64> {
        self.held.fence()
    }

    /// Whether this term still lasts.
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.held.is_held()
    }

    /// The lock that is this term: key, token, fence, lease state ([`HeldLock::lost`]
    /// completes when the term ends by a loss).
    #[must_use]
    pub fn held(&self) -> &HeldLock {
        &self.held
    }
}

/// Whether this process leads.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Leadership {
    /// Another process leads, or none does yet.
    #[default]
    Follower,
    /// This process leads, in this term.
    Leader(Term),
}

impl Leadership {
    /// The term, when leading.
    #[must_use]
    pub fn term(&self) -> Option<&Term> {
        match self {
            Leadership::Leader(term) => Some(term),
            Leadership::Follower => None,
        }
    }
}

/// A campaign running in the background (see [`Election::campaign`]). Dropping it resigns
/// in the background; [`resign`](Campaign::resign) waits for that.
#[derive(Debug)]
pub struct Campaign {
    status: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Campaign {
    /// Whether this process leads now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        matches!(*self.status.borrow(), Leadership::Leader(_))
    }

    /// The current term, when leading.
    #[must_use]
    pub fn term(&self) -> Option<Term> {
        self.status.borrow().term().cloned()
    }

    /// Every change of leadership, as a `tokio::sync::watch` receiver (`changed().await`,
    /// `borrow()`).
    #[must_use]
    pub fn changes(&self) -> watch::Receiver<Leadership> {
        self.status.clone()
    }

    /// Stops campaigning: the lead work, if running, is dropped, leadership is released (so
    /// the next candidate takes over at once) and the background task ends.
    ///
    /// # Cancel safety
    /// Cancel safe: the campaign stops in the background.
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Campaign {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The campaign's task.
async fn campaign<F, Fut>(
    election: Election,
    mut lead: F,
    status: watch::Sender<Leadership>,
    mut stop: oneshot::Receiver<()>,
) where
    F: FnMut(Term) -> Fut,
    Fut: Future<Output = ()>,
{
    let lock = Lock::new(election.client.clone(), election.group.clone())
        .lease_ttl(election.lease)
        .acquire_timeout(election.wait);
    let (min, max) = election.backoff;
    let mut pause = min;
    loop {
        let acquired = tokio::select! {
            _ = &mut stop => return,
            acquired = lock.acquire() => acquired,
        };
        let guard = match acquired {
            Ok(guard) => guard,
            // Nobody let go within the wait: queue again.
            Err(Error::Timeout { .. }) => continue,
            Err(error) => {
                tracing::warn!(group = %election.group, %error, ?pause, "campaign: cannot reach the lock server; retrying");
                let jittered = pause.mul_f64(0.5 + fastrand::f64());
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(jittered) => {}
                }
                pause = (pause * 2).min(max);
                continue;
            }
        };
        pause = min;
        let term = Term { held: guard.held() };
        tracing::info!(group = %election.group, term = ?term.number(), "leading");
        status.send_replace(Leadership::Leader(term.clone()));
        let work = lead(term);
        let resigned = tokio::select! {
            biased;
            _ = &mut stop => true,
            reason = guard.lost() => {
                tracing::warn!(group = %election.group, %reason, "leadership lost");
                false
            }
            () = work => false,
        };
        status.send_replace(Leadership::Follower);
        if guard.is_held() {
            // Resigned, or the work ended: hand over at once.
            let _ = guard.release().await;
        }
        if resigned {
            return;
        }
    }
}
