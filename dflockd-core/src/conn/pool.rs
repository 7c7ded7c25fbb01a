//! The connections of one server.
//!
//! Non-blocking requests (try-once acquires, releases, renewals, enqueues that answer at once,
//! stats) are pipelined on a few *shared* connections. A request that may wait server-side gets
//! a *parked* connection of its own: an open one that holds nothing, or a new one. When its
//! grant arrives, that connection holds the lock and becomes a shared one like any other.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::call::{Answer, Call, CallError};
use super::park::{ParkHint, Parked};
use super::{Conn, Settings};
use crate::error::{Error, Result};

/// The connections of one server's pool, from [`Client::status`](crate::Client::status). A connection is counted
/// once, in the first of `parked`, `holding`, `busy` that applies, else `idle`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// The server's address, `host:port`.
    pub server: String,
    /// Connections open (not counting those being opened).
    pub open: usize,
    /// Reserved for one request that waits at the server (a queued acquire).
    pub parked: usize,
    /// Holding locks (their renewals go through them), not parked.
    pub holding: usize,
    /// With requests on their way, holding nothing.
    pub busy: usize,
    /// Holding nothing and carrying nothing: reusable at once, closed after the idle timeout.
    pub idle: usize,
    /// Connections being opened now.
    pub opening: usize,
    /// Requests sent on the pool's connections and not answered yet.
    pub in_flight: usize,
    /// The most connections the pool opens ([`ClientBuilder::max_connections`](crate::ClientBuilder::max_connections)).
    pub max: usize,
}

impl PoolStatus {
    /// Connections doing something: `open - idle`.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.open - self.idle
    }
}

/// How long after sending its last request a thread still prefers the connection it was
/// answered on (see [`remember_answered`]). Under load a task's next request follows its
/// last answer within a round trip or two; a thread whose requests are further apart than
/// this takes the first free connection, so that light load gathers on the first few and the
/// others retire.
const KEEP_FOR: Duration = Duration::from_millis(500);

/// The shared connection on which this thread last saw a request answered, and when that
/// request was sent.
struct LastAnswered {
    conn: Weak<Conn>,
    sent: Option<Instant>,
}

thread_local! {
    static LAST_ANSWERED: RefCell<LastAnswered> = const {
        RefCell::new(LastAnswered {
            conn: Weak::new(),
            sent: None,
        })
    };
}

/// Remembers `conn` as the connection on which this thread last saw a request (sent at
/// `sent`) answered. This thread's next pick within [`KEEP_FOR`] tries it first: a task
/// that goes on with its next request right after an answer (release, then acquire again)
/// finds the connection it just used free, at once, and keeps using it, as a connection of
/// its own would be used; and the pick reads none of the other connections, whose counters
/// the other threads keep changing.
pub(crate) fn remember_answered(conn: &Arc<Conn>, sent: Instant) {
    // `try_with`: a thread tearing down its thread-locals may still finish a request.
    let _ = LAST_ANSWERED.try_with(|last| {
        let mut last = last.borrow_mut();
        if !std::ptr::eq(last.conn.as_ptr(), Arc::as_ptr(conn)) {
            last.conn = Arc::downgrade(conn);
        }
        last.sent = Some(sent);
    });
}

/// A slot in [`ServerPool::opening`], given back (and the waiters woken) when dropped.
struct OpeningSlot<'a>(&'a ServerPool);

impl Drop for OpeningSlot<'_> {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::AcqRel);
        self.0.opened.notify_waiters();
    }
}

/// A shared connection claimed for one request (see [`Conn::try_claim`]) until dropped.
pub(crate) struct Claimed(Arc<Conn>);

impl Claimed {
    /// Wraps `conn`, already claimed by [`Conn::try_claim`] unless `claim`.
    fn new(conn: Arc<Conn>, claim: bool) -> Self {
        if claim {
            conn.claim();
        }
        Claimed(conn)
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.0.unclaim();
    }
}

/// The pool of one server.
pub(crate) struct ServerPool {
    pub(crate) addr: Arc<str>,
    settings: Arc<Settings>,
    /// Read by every pick (which must not wait for another thread that was descheduled
    /// while picking), written when a connection opens or dies.
    conns: RwLock<Vec<Arc<Conn>>>,
    permits: Arc<Semaphore>,
    /// Shared connections being opened right now (so a burst opens only as many as allowed).
    opening: AtomicUsize,
    /// Signalled when a shared connection finished opening (or failed to): callers that
    /// found one opening wait for it instead of opening more.
    opened: tokio::sync::Notify,
    /// The server has answered one of this pool's plaintext connections (see
    /// [`Conn`]'s `refused_silently`).
    spoke_plaintext: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ServerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPool")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServerPool {
    pub(crate) fn new(addr: Arc<str>, settings: Arc<Settings>) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_connections));
        ServerPool {
            addr,
            settings,
            conns: RwLock::new(Vec::new()),
            permits,
            opening: AtomicUsize::new(0),
            opened: tokio::sync::Notify::new(),
            spoke_plaintext: Arc::default(),
        }
    }

    fn conns_mut(&self) -> RwLockWriteGuard<'_, Vec<Arc<Conn>>> {
        self.conns.write().unwrap_or_else(|e| e.into_inner())
    }

    fn conns_read(&self) -> RwLockReadGuard<'_, Vec<Arc<Conn>>> {
        self.conns.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Dead connections leave the pool.
    fn remove_dead(&self) {
        self.conns_mut().retain(|c| !c.is_dead());
    }

    /// The connections, without the dead ones (which leave the pool here).
    fn live_conns(&self) -> RwLockReadGuard<'_, Vec<Arc<Conn>>> {
        if self.conns_read().iter().any(|c| c.is_dead()) {
            self.remove_dead();
        }
        self.conns_read()
    }

    /// Number of open connections (for diagnostics and tests).
    pub(crate) fn open_connections(&self) -> usize {
        self.live_conns().len()
    }

    /// A snapshot of the pool (see [`PoolStatus`]).
    pub(crate) fn status(&self) -> PoolStatus {
        let mut status = PoolStatus {
            server: self.addr.to_string(),
            open: 0,
            parked: 0,
            holding: 0,
            busy: 0,
            idle: 0,
            opening: self.opening.load(Ordering::Acquire),
            in_flight: 0,
            max: self.settings.max_connections,
        };
        for conn in self.live_conns().iter() {
            let load = conn.load();
            if load.dead {
                continue;
            }
            status.open += 1;
            status.in_flight += load.pending;
            if load.parked {
                status.parked += 1;
            } else if load.holding {
                status.holding += 1;
            } else if load.pending > 0 {
                status.busy += 1;
            } else {
                status.idle += 1;
            }
        }
        status
    }

    /// The shared connection of this pool that this thread last saw answer a request, claimed,
    /// if that request was sent less than [`KEEP_FOR`] before `now` and the connection is
    /// free (see [`remember_answered`]).
    fn last_answered(&self, now: Instant) -> Option<Claimed> {
        let conn = LAST_ANSWERED
            .try_with(|last| {
                let last = last.borrow();
                let recent = last
                    .sent
                    .is_some_and(|sent| now.saturating_duration_since(sent) < KEEP_FOR);
                if recent { last.conn.upgrade() } else { None }
            })
            .ok()
            .flatten()?;
        // Another pool's (another server's, or another client's) connections are not ours:
        // each pool's connections share its address string.
        if !Arc::ptr_eq(&conn.server, &self.addr) {
            return None;
        }
        let load = conn.load();
        if load.dead || load.parked || !conn.try_claim() {
            return None;
        }
        Some(Claimed::new(conn, false))
    }

    /// A connection for a non-blocking request made at `now`, claimed for it: the one this
    /// thread just saw answer a request if it is free, else the first free shared one (so that
    /// under light load the same few carry everything and the others retire when idle), or a
    /// new one when all are busy and there is room for another, or else the least busy one.
    pub(crate) async fn shared(&self, now: Instant, deadline: Instant) -> Result<Claimed> {
        if let Some(claimed) = self.last_answered(now) {
            return Ok(claimed);
        }
        loop {
            // One scan finds a free connection, the least busy one, and any dead ones (which
            // leave the pool after it).
            let (free, fallback, live, saw_dead) = {
                let conns = self.conns_read();
                let mut free = None;
                let mut best: Option<(usize, &Arc<Conn>)> = None;
                let (mut live, mut saw_dead) = (0, false);
                for conn in conns.iter() {
                    let load = conn.load();
                    saw_dead |= load.dead;
                    if load.dead || load.parked {
                        continue;
                    }
                    live += 1;
                    if load.pending == 0 && conn.try_claim() {
                        free = Some(Claimed::new(conn.clone(), false));
                        break;
                    }
                    if best.is_none_or(|(p, _)| load.pending < p) {
                        best = Some((load.pending, conn));
                    }
                }
                // Claimed now, under the pool's lock, so that the next caller sees it busier.
                let fallback = match free {
                    Some(_) => None,
                    None => best.map(|(_, conn)| Claimed::new(conn.clone(), true)),
                };
                (free, fallback, live, saw_dead)
            };
            if saw_dead {
                self.remove_dead();
            }
            if let Some(claimed) = free {
                return Ok(claimed);
            }
            // Every shared connection is busy (or there is none): open one more if there is
            // room, counting those being opened. The slot is taken with a compare-exchange,
            // so a burst of callers opens no more than allowed, and `opening` counts only
            // callers that are opening (each signals `opened` when done).
            let max = self.settings.max_shared_connections;
            let mut opening = self.opening.load(Ordering::Acquire);
            let reserved = loop {
                if live + opening >= max {
                    break false;
                }
                match self.opening.compare_exchange_weak(
                    opening,
                    opening + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break true,
                    Err(now) => opening = now,
                }
            };
            if reserved {
                // Gives the slot back and wakes the waiters however this ends (cancelled too).
                let _slot = OpeningSlot(self);
                if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                    // Boxed: opening is rare, and its future would make every pick's as big.
                    let conn = Box::pin(self.open(false, permit)).await?;
                    return Ok(Claimed::new(conn, true));
                }
            }
            if let Some(claimed) = fallback {
                return Ok(claimed);
            }
            if self.opening.load(Ordering::Acquire) > 0 {
                // None open yet, others opening: wait for them, then look again. Registered
                // before looking at the count again, so an open that ends meanwhile is seen.
                let opened = self.opened.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                if self.opening.load(Ordering::Acquire) > 0
                    && tokio::time::timeout_at(deadline.into(), opened)
                        .await
                        .is_err()
                {
                    return Err(self.exhausted());
                }
                continue;
            }
            let permit = self.wait_permit(deadline).await?;
            let conn = Box::pin(self.open(false, permit)).await?;
            return Ok(Claimed::new(conn, true));
        }
    }

    /// Sends a non-blocking request on a shared connection and returns the answer with the
    /// connection it came from. Picks again if the chosen connection was reserved for a
    /// blocking request in the meantime (nothing was sent then), or had died unnoticed.
    pub(crate) async fn call_shared<'a>(
        &self,
        now: Instant,
        deadline: Instant,
        call: impl Fn() -> Call<'a>,
    ) -> Result<(Arc<Conn>, Answer)> {
        let mut reserved = 0;
        let pooled_before = super::conn_id_mark();
        loop {
            let claimed = self.shared(now, deadline).await?;
            let conn = &claimed.0;
            match conn.call(call()).await {
                Ok(answer) => return Ok((conn.clone(), answer)),
                Err(CallError::Reserved) if reserved < 8 => reserved += 1,
                Err(CallError::Reserved) => {
                    return Err(Error::ConnectionClosed {
                        server: self.addr.to_string(),
                        reason: "every connection picked was reserved meanwhile".to_owned(),
                    });
                }
                // Try again: see `Conn::died_unnoticed`.
                Err(CallError::Failed(e)) if conn.died_unnoticed(&e, pooled_before) => {}
                Err(CallError::Failed(e)) => return Err(e),
            }
        }
    }

    /// A connection reserved for one blocking request: the one `hint` remembers if it is
    /// idle, another idle one, or a new one. The reservation ends with the answer to the
    /// blocking request or when the [`Parked`] is dropped; `hint` then remembers it.
    pub(crate) async fn parked(&self, deadline: Instant, hint: &ParkHint) -> Result<Parked> {
        if let Some(parked) = hint.try_park(&self.addr) {
            return Ok(parked);
        }
        let found = {
            let conns = self.live_conns();
            conns
                .iter()
                .find_map(|conn| conn.try_park().map(|id| Parked::new(conn.clone(), id)))
        };
        let parked = match found {
            Some(parked) => parked,
            None => {
                let permit = match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => self.wait_permit(deadline).await?,
                };
                let conn = self.open(true, permit).await?;
                Parked::new(conn, super::park::FIRST_RESERVATION)
            }
        };
        hint.set(parked.conn());
        Ok(parked)
    }

    async fn wait_permit(&self, deadline: Instant) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let wait = tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned());
        match wait.await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(self.exhausted()),
        }
    }

    fn exhausted(&self) -> Error {
        Error::PoolExhausted {
            server: self.addr.to_string(),
            max: self.settings.max_connections,
        }
    }

    /// Opens a connection, reserved from the start with `parked`, and adds it to the pool.
    async fn open(
        &self,
        parked: bool,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Arc<Conn>> {
        let conn = Conn::open(
            self.settings.clone(),
            self.addr.clone(),
            parked,
            Some(permit),
            self.spoke_plaintext.clone(),
        )
        .await?;
        self.conns_mut().push(conn.clone());
        Ok(conn)
    }

    /// Asks every connection to close once it holds nothing.
    pub(crate) fn client_dropped(&self) {
        for conn in self.conns_mut().drain(..) {
            conn.client_dropped();
        }
    }
}
