//! The guard of a held lock or semaphore slot, and [`HeldLock`], what the code running under
//! it knows about it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::conn::call::{Call, CallError, Granted, Wire};
use crate::error::LossReason;
use crate::error::{Error, Result};
use crate::inner::ClientInner;
use crate::lease::{LeaseShared, LeaseWatch, Lost};
use crate::proto::{Family, Request, Token};

/// What a new guard takes from the handle that acquired it.
pub(crate) struct Origin<'a> {
    pub(crate) client: &'a ClientInner,
    pub(crate) family: Family,
    pub(crate) key: &'a Arc<str>,
    pub(crate) limit: u32,
}

/// A held lock or semaphore slot.
///
/// While it lives, its lease is renewed in the background. Release it with
/// [`release`](Guard::release) to learn whether the release succeeded; dropping it releases
/// in the background without blocking.
///
/// The lease can be lost despite renewals (the server became unreachable, the connection
/// broke, the process stalled past the lease). [`is_held`](HeldLock::is_held) and
/// [`lost`](HeldLock::lost) tell the critical section: when renewals stop succeeding, before
/// the lease can run out at the server (the local deadline is a margin before it). When the
/// connection breaks, the server frees the lock as soon as it sees the close, and this side
/// learns of it when it sees the close too (at once for a reset it reads, at the local
/// deadline if the close never reaches it), which may be after someone else got the lock. For
/// writes to a shared resource, pass [`fence`](HeldLock::fence) along and let the resource
/// reject writes with an older fence: that holds in every case.
#[must_use = "dropping the guard releases the lock"]
pub struct Guard {
    conn: Arc<Conn>,
    lock_id: u64,
    family: Family,
    /// Key, token, fence, limit and lease state; the guard derefs to it.
    held: HeldLock,
    release_timeout: Duration,
    /// See `Granted::unconfirmed`.
    pub(crate) unconfirmed: bool,
    done: bool,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("lock", &self.held)
            .field("lease", &self.lease())
            .field("server", &self.conn.server)
            .finish()
    }
}

impl Guard {
    /// The guard of a grant registered on `conn`.
    ///
    /// # Errors
    /// [`Error::NotFenced`] when the client was told its servers issue fences and this grant's
    /// token cannot carry one (the grant is released in the background).
    pub(crate) fn new(
        spec: Origin<'_>,
        conn: Arc<Conn>,
        granted: Granted,
        started: Instant,
    ) -> Result<Guard> {
        let grant = &granted.grant;
        let fence = match (grant.fence, spec.client.server_version) {
            (Some(explicit), _) => Some(explicit),
            (None, None) => None,
            (None, Some(declared)) => match declared.fence_of(&grant.token) {
                Ok(fence) => fence,
                Err(()) => {
                    conn.drop_lock(granted.lock_id, true);
                    return Err(Error::NotFenced {
                        server: conn.server.to_string(),
                        key: spec.key.to_string(),
                        declared,
                    });
                }
            },
        };
        tracing::debug!(
            key = %spec.key,
            token = %grant.token,
            fence,
            lease_s = grant.lease_s,
            waited_ms = started.elapsed().as_millis() as u64,
            outcome = "granted",
            "acquire"
        );
        Ok(Guard {
            conn,
            lock_id: granted.lock_id,
            family: spec.family,
            held: HeldLock {
                key: spec.key.clone(),
                token: granted.grant.token,
                fence,
                limit: spec.limit,
                watch: LeaseWatch::new(granted.shared),
            },
            release_timeout: spec.client.release_timeout,
            unconfirmed: granted.unconfirmed,
            done: false,
        })
    }

    fn shared(&self) -> &Arc<LeaseShared> {
        self.held.watch.shared()
    }

    /// Confirms a grant that came after a server-side wait, when nothing vouches for its lease
    /// any more, before handing it out.
    ///
    /// The lease of a grant is counted from the moment its request was sent (the server
    /// granted later). When the wait outlasted the lease (the answer was held up in the
    /// network, say), the lease may have run out at the server, which may have handed the
    /// lock on: a renew tells (`error` when the lease is gone) and dates the lease from a
    /// moment the client knows. On any error the guard is dropped, which stops its renewals
    /// and releases it in the background. Grants whose lease is still vouched for are handed
    /// out as they are.
    pub(crate) async fn confirmed(self) -> Result<Guard> {
        if !self.unconfirmed {
            return Ok(self);
        }
        self.renew().await?;
        match self.shared().loss() {
            Some(reason) => Err(self.lost_error(reason)),
            None => Ok(self),
        }
    }

    /// The lease the server applied (updated by renewals).
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.shared().lease()
    }

    /// The address of the server that holds it.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.conn.server
    }

    pub(crate) fn server_arc(&self) -> Arc<str> {
        self.conn.server.clone()
    }

    pub(crate) fn family(&self) -> Family {
        self.family
    }

    /// A cheap, cloneable, `'static` view of this lock for the code it protects: key, token,
    /// fence, limit and the lease state (what the attribute macro's `current_lock()` and the
    /// tower layer's request extension hand out). The guard itself derefs to it.
    #[must_use]
    pub fn held(&self) -> HeldLock {
        self.held.clone()
    }

    /// Renews the lease now (the background renewal continues as well) and returns the new
    /// lease.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the server refused (the lease was gone already); connection
    /// errors and [`Error::RequestTimeout`] (which also close the connection, losing its
    /// locks).
    ///
    /// # Cancel safety
    /// Cancel safe: the answer is still applied to the lease when it arrives.
    pub async fn renew(&self) -> Result<Duration> {
        self.renew_owned().await
    }

    /// The renew as a `'static` future (for the blocking client).
    pub(crate) fn renew_owned(
        &self,
    ) -> impl std::future::Future<Output = Result<Duration>> + Send + 'static {
        let conn = self.conn.clone();
        let shared = self.shared().clone();
        let (lock_id, key, fence) = (self.lock_id, self.held.key.clone(), self.held.fence);
        async move {
            if let Some(reason) = shared.loss() {
                return Err(Error::LeaseLost {
                    key: key.to_string(),
                    reason,
                    fence,
                });
            }
            conn.renew_now(lock_id, &key).await.map_err(|e| match e {
                Error::LeaseLost { key, reason, .. } => Error::LeaseLost { key, reason, fence },
                other => other,
            })
        }
    }

    fn lost_error(&self, reason: LossReason) -> Error {
        self.held.lost_error(reason)
    }

    /// Keeps the lock (renewing it) for `hold` more, then releases it, without making the
    /// caller wait: a background task owns the guard meanwhile. Used for a minimum hold time
    /// (so that a fast job does not run again on a replica whose schedule fires a moment
    /// later). The connection stays open while the lock is held, so the server keeps it.
    ///
    /// Must be called within a tokio runtime; outside one the lock is released at once.
    pub fn release_after(self, hold: Duration) {
        if hold.is_zero() {
            drop(self);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(hold) => {}
                        _ = self.lost() => {}
                    }
                    let _ = self.release().await;
                });
            }
            Err(_) => drop(self),
        }
    }

    /// Releases the lock and waits (at most the client's release timeout) for the answer.
    ///
    /// Renewals stop at once either way, so even an unanswered release ends with the lease.
    ///
    /// The outcomes:
    /// * `Ok(())`: the critical section was protected until the release was sent. That
    ///   includes a release that left before the lease's local deadline but reached the server
    ///   after the lease had run out there (held up in the network): nobody else could be
    ///   granted the lock before the section ended.
    /// * [`Error::LeaseLost`]: the section was **not** fully protected. The lease was lost
    ///   before the release ([`LossReason::DeadlineExceeded`], [`LossReason::RenewRefused`],
    ///   [`LossReason::ConnectionLost`]: [`is_held`](HeldLock::is_held) had turned false and
    ///   [`lost`](HeldLock::lost) had completed), or the release left after the local deadline
    ///   and the server no longer knew the token ([`LossReason::Expired`]).
    /// * [`Error::RequestTimeout`] or a connection error: the release's fate is unknown; the
    ///   lease ends at the server anyway, when it expires or when the connection closes.
    ///
    /// # Errors
    /// As listed above.
    ///
    /// # Cancel safety
    /// Cancel safe: renewals stop as soon as it is first polled, and the release goes out in
    /// the background if the future is dropped before sending it.
    pub async fn release(mut self) -> Result<()> {
        self.done = true;
        let result = self.send_release().await;
        self.shared().metrics.released(&result);
        result
    }

    /// [`Guard::release`], once the guard is marked done.
    async fn send_release(&self) -> Result<()> {
        // Stops the renewals (no lock needed: the connection looks at this state). A lease
        // that was lost is no longer registered on the connection.
        if !self.shared().mark_released() {
            let reason = self
                .shared()
                .loss_begun()
                .unwrap_or(LossReason::ConnectionLost);
            return Err(self.lost_error(reason));
        }
        let conn = &self.conn;
        // If this future is dropped before the answer, release in the background (a duplicate
        // release is answered `error` and ignored). Either way the lock is forgotten at the end.
        let fallback = BackgroundRelease {
            conn,
            lock_id: self.lock_id,
            family: self.family,
            key: &self.key,
            token: self.token,
            armed: true,
            forgotten: false,
        };
        let request = Request::Release {
            family: self.family,
            key: &self.key,
            token: self.token.as_str(),
        };
        // Only for the debug event: two clock reads per release otherwise spent for nothing.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let call = Call::new(request)
            // The key went out with the acquire, the token came in the grant.
            .wire(Wire::Validated)
            .key(&self.key)
            // Bounded without a timer of its own: the connection's maintenance gives up for us.
            .patience(self.release_timeout)
            .forgets(self.lock_id);
        let outcome = match conn.call(call).await {
            Ok(answer) => Ok(answer),
            Err(CallError::Failed(e)) => Err(e),
            // Not reserved while it holds a lock.
            Err(CallError::Reserved) => Err(self.lost_error(LossReason::ConnectionLost)),
        };
        // A release the server answered was forgotten with its answer.
        fallback.disarm(matches!(outcome, Ok(_) | Err(Error::Refused { .. })));
        let result = match outcome {
            Ok(_) => Ok(()),
            Err(Error::Refused { .. }) => {
                self.shared().metrics.lost(LossReason::Expired);
                Err(self.lost_error(LossReason::Expired))
            }
            Err(e) => Err(e),
        };
        tracing::debug!(
            key = %self.key,
            token = %self.token,
            took_ms = started.map(|t| t.elapsed().as_millis() as u64),
            outcome = match &result {
                Ok(()) => "released",
                Err(e) if e.is_lease_lost() => "lease_lost",
                Err(_) => "error",
            },
            "release"
        );
        result
    }
}

impl std::ops::Deref for Guard {
    type Target = HeldLock;

    /// Key, token, fence, limit and lease state: see [`HeldLock`].
    fn deref(&self) -> &HeldLock {
        &self.held
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.conn.drop_lock(self.lock_id, true);
        }
    }
}

/// Sends a release in the background unless disarmed, and forgets the lock on its connection
/// unless the answer to the release did.
struct BackgroundRelease<'a> {
    conn: &'a Conn,
    lock_id: u64,
    family: Family,
    key: &'a Arc<str>,
    token: Token,
    armed: bool,
    forgotten: bool,
}

impl BackgroundRelease<'_> {
    /// The release was sent; `answered`: the server answered it, which forgot the lock.
    fn disarm(mut self, answered: bool) {
        self.armed = false;
        self.forgotten = answered;
    }
}

impl Drop for BackgroundRelease<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Queued before the lock is forgotten, so the connection is never idle (and
            // parkable) in between.
            self.conn
                .queue_release(self.family, self.key.clone(), self.token);
        }
        if !self.forgotten {
            self.conn.forget_released(self.lock_id);
        }
    }
}

/// What the code running under a lock knows about it: key, token, fence, limit and the lease
/// state. Made by [`Guard::held`]; cheap to clone and `'static`, so it can travel with a
/// request or into spawned tasks. It does not keep the lock: the [`Guard`] does.
///
/// Pass [`fence`](HeldLock::fence) along with writes to a shared resource so that it can
/// reject writes from a holder whose lease was lost meanwhile.
#[derive(Clone)]
pub struct HeldLock {
    key: Arc<str>,
    token: Token,
    fence: Option<u64>,
    limit: u32,
    watch: LeaseWatch,
}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("key", &self.key)
            .field("token", &self.token)
            .field("fence", &self.fence)
            .field("limit", &self.limit)
            .field("held", &self.watch.is_held())
            .finish()
    }
}

impl HeldLock {
    /// The lease-lost error of this lock.
    pub(crate) fn lost_error(&self, reason: LossReason) -> Error {
        Error::LeaseLost {
            key: self.key.to_string(),
            reason,
            fence: self.fence,
        }
    }

    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The token. Its `Display` shows a prefix only; [`Token::as_str`] is the whole value.
    #[must_use]
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The fencing token: a number that strictly increases with every grant of the server,
    /// or `None` when the server issues none.
    ///
    /// dflockd v2.1 and later put a fence in every token; older releases send random tokens,
    /// and nothing on the wire tells the two apart. So this is `Some` only when the client
    /// was told the servers' release ([`ClientBuilder::server_version`] 2.1 or later, or
    /// `DFLOCKD_SERVER_VERSION`), or when the server sent the fence in a field of its own.
    ///
    /// [`ClientBuilder::server_version`]: crate::ClientBuilder::server_version
    #[must_use]
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    /// Holders allowed at once: 1 for a lock, the limit for a semaphore.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether the lease is still held (not lost, not released).
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.watch.is_held()
    }

    /// Why the lease was lost, if it was.
    #[must_use]
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.watch.loss_reason()
    }

    /// Completes when the lease is lost: a renew was refused, the connection holding it died,
    /// or no renew succeeded before the local deadline (a margin before the server's expiry).
    /// Never, if the lock is released first.
    ///
    /// ```no_run
    /// # async fn f(guard: dflockd_core::Guard) {
    /// # async fn do_the_work() {}
    /// tokio::select! {
    ///     _ = do_the_work() => {}
    ///     reason = guard.lost() => eprintln!("stopped: lease lost ({reason})"),
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn lost(&self) -> Lost {
        self.watch.lost()
    }

    /// The lease state alone, `'static`, to move into other tasks.
    #[must_use]
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }
}
