//! Locks, semaphores and the guards that hold them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::conn::connect::whole_seconds;
use crate::conn::{Answer, Call, Conn, GrantMeta, Granted, Wire};
use crate::error::{Error, Result};
use crate::lease::{LeaseShared, LeaseWatch, LossReason, Lost};
use crate::proto::{Expect, Family, Request, Token, validate_client_key};

/// What to acquire: a key, its limit, and how.
#[derive(Clone)]
struct Spec {
    client: Client,
    family: Family,
    key: Arc<str>,
    limit: u64,
    acquire_timeout: Duration,
    lease: Option<Duration>,
    /// What depends on the key only, worked out once per handle.
    key_facts: KeyFacts,
    /// The connection this handle last waited on: usually idle again by the next wait, and
    /// found without looking at every connection of the pool.
    park_hint: ParkHint,
    /// Its acquire requests, encoded once (cleared when the timeout or lease changes).
    wire: WireCache,
}

/// The two acquire requests a handle sends over and over: the try-once, and the wait for the
/// whole acquire timeout (which a busy key goes straight to). `None` inside: the request does
/// not encode (it is encoded again, for its error, when sent).
#[derive(Clone, Default)]
struct WireCache {
    try_once: std::sync::OnceLock<Option<Box<[u8]>>>,
    wait: std::sync::OnceLock<Option<Box<[u8]>>>,
}

#[derive(Clone, Copy)]
struct KeyFacts {
    /// The key passed validation (an invalid one is validated again, for its error).
    valid: bool,
    /// Its hash in the client's table of busy keys.
    hot_hash: u64,
}

impl KeyFacts {
    fn new(client: &Client, key: &str) -> Self {
        KeyFacts {
            valid: validate_client_key(key).is_ok(),
            hot_hash: client.inner.hot_keys.hash(key),
        }
    }
}

/// A weak reference to a connection, behind a lock only this handle (and its clones, which
/// start from a copy) takes.
#[derive(Default)]
struct ParkHint(std::sync::Mutex<std::sync::Weak<Conn>>);

impl ParkHint {
    fn get(&self) -> Option<Arc<Conn>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade()
    }

    fn set(&self, conn: &Arc<Conn>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(conn);
    }
}

impl Clone for ParkHint {
    fn clone(&self) -> Self {
        ParkHint(std::sync::Mutex::new(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ))
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("family", &self.family)
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A distributed lock on one key: a description of what to acquire, reusable.
///
/// Made by [`Client::lock`]. Acquiring returns a [`Guard`] that renews the lease in the
/// background until it is released (or dropped).
///
/// ```no_run
/// # async fn f(client: dflockd_core::Client) -> Result<(), dflockd_core::Error> {
/// use std::time::Duration;
/// let guard = client
///     .lock("foo")
///     .acquire_timeout(Duration::from_secs(10))
///     .lease_ttl(Duration::from_secs(20))
///     .acquire()
///     .await?;
/// println!("acquired {} token {} fence {:?}", guard.key(), guard.token(), guard.fence());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Lock {
    spec: Spec,
}

/// A distributed counting semaphore: up to `limit` holders of one key at once, the rest
/// queued in FIFO order.
///
/// Made by [`Client::semaphore`]; the same surface as [`Lock`].
#[derive(Clone, Debug)]
pub struct Semaphore {
    spec: Spec,
}

macro_rules! common_api {
    ($ty:ident) => {
        impl $ty {
            /// How long [`acquire`](Self::acquire) queues for a slot before giving up
            /// ([`Error::Timeout`]); rounded up to whole seconds on the wire. Zero means try
            /// once. Default is the client's (10 s unless configured).
            #[must_use]
            pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
                self.spec.acquire_timeout = timeout;
                self.spec.wire = WireCache::default();
                self
            }

            /// The lease: how long the server keeps the slot without a renew. Renewed in the
            /// background while the guard lives; rounded up to whole seconds. Default is the
            /// client's (the server's default, 33 s, unless configured).
            #[must_use]
            pub fn lease_ttl(mut self, lease: Duration) -> Self {
                self.spec.lease = Some(lease);
                self.spec.wire = WireCache::default();
                self
            }

            /// The key.
            #[must_use]
            pub fn key(&self) -> &str {
                &self.spec.key
            }

            /// Acquires, queueing (FIFO) up to the acquire timeout.
            ///
            /// An uncontended acquire costs one round trip on a shared, already open
            /// connection. When the key is busy the request joins the server's queue on a
            /// connection of its own, so that its wait cannot hold up anything else.
            ///
            /// The wait may be far longer than the lease: a grant that arrives after a wait
            /// past its first renewal is confirmed with a renew (one more round trip) before
            /// it is handed out, and its lease then counts from that renew.
            ///
            /// # Errors
            /// [`Error::Timeout`] when no slot opened in time ([`Error::is_timeout`]);
            /// [`Error::InvalidArgument`] for a bad key or a zero lease (nothing is sent);
            /// [`Error::LimitMismatch`], [`Error::MaxLocks`], [`Error::MaxWaiters`],
            /// [`Error::Draining`], [`Error::AuthRejected`] from the server; connection and
            /// protocol errors; [`Error::LeaseLost`] when the renew confirming a grant after
            /// a long wait was refused ([`LossReason::RenewRefused`]: the grant's lease had
            /// run out at the server before the answer reached this client, which only a
            /// network or process stall makes possible) or its connection failed
            /// ([`LossReason::ConnectionLost`]).
            ///
            /// # Cancel safety
            /// Cancel safe: dropping the future never leaves the lock held or a wait queued.
            /// A grant that arrives after cancellation is released at once; a server-side
            /// wait is abandoned by closing its connection.
            pub async fn acquire(&self) -> Result<Guard> {
                acquire(&self.spec, self.spec.acquire_timeout).await
            }

            /// Tries once without waiting: `Ok(None)` when the key is busy.
            ///
            /// # Errors
            /// As [`acquire`](Self::acquire), except that a busy key is `Ok(None)`.
            ///
            /// # Cancel safety
            /// Cancel safe, as [`acquire`](Self::acquire).
            pub async fn try_acquire(&self) -> Result<Option<Guard>> {
                match acquire(&self.spec, Duration::ZERO).await {
                    Ok(guard) => Ok(Some(guard)),
                    Err(Error::Timeout { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }

            /// Two-phase acquisition, first half: joins the queue without waiting.
            ///
            /// Returns [`Enqueued::Acquired`] when a slot was free (the guard is renewing
            /// already) or [`Enqueued::Queued`], whose [`wait`](Queued::wait) blocks
            /// server-side. Do the work you need between the two (notify another system,
            /// record telemetry). The connection is kept for the wait, as the protocol
            /// requires; call `wait` before the server's read timeout (23 s by default)
            /// closes it for idleness.
            ///
            /// # Errors
            /// As [`acquire`](Self::acquire) (there is no timeout here).
            ///
            /// # Cancel safety
            /// Cancel safe: dropping the future closes the connection, which leaves the
            /// queue (and releases a grant that raced with the cancellation).
            pub async fn enqueue(&self) -> Result<Enqueued> {
                enqueue(&self.spec).await
            }
        }
    };
}

common_api!(Lock);
common_api!(Semaphore);

impl Lock {
    pub(crate) fn new(client: Client, key: String) -> Self {
        let (acquire_timeout, lease) = (client.inner.acquire_timeout, client.inner.lease);
        let key_facts = KeyFacts::new(&client, &key);
        Lock {
            spec: Spec {
                client,
                family: Family::Lock,
                key: key.into(),
                limit: 1,
                acquire_timeout,
                lease,
                key_facts,
                park_hint: ParkHint::default(),
                wire: WireCache::default(),
            },
        }
    }
}

impl Semaphore {
    pub(crate) fn new(client: Client, key: String, limit: u32) -> Self {
        let (acquire_timeout, lease) = (client.inner.acquire_timeout, client.inner.lease);
        let key_facts = KeyFacts::new(&client, &key);
        Semaphore {
            spec: Spec {
                client,
                family: Family::Semaphore,
                key: key.into(),
                limit: u64::from(limit),
                acquire_timeout,
                lease,
                key_facts,
                park_hint: ParkHint::default(),
                wire: WireCache::default(),
            },
        }
    }

    /// Holders allowed at once.
    #[must_use]
    pub fn limit(&self) -> u32 {
        u32::try_from(self.spec.limit).unwrap_or(u32::MAX)
    }
}

impl Spec {
    fn lease_s(&self) -> Option<u64> {
        self.lease.map(whole_seconds)
    }

    /// Validates what can be validated before touching the network.
    fn check(&self) -> Result<()> {
        if !self.key_facts.valid {
            validate_client_key(&self.key)?;
        }
        if self.lease.is_some_and(|l| l.is_zero()) {
            return Err(crate::proto::InvalidInput::ZeroLease.into());
        }
        if self.family == Family::Semaphore && self.limit == 0 {
            return Err(crate::proto::InvalidInput::ZeroLimit.into());
        }
        Ok(())
    }

    /// A connection reserved for a blocking request: the one this handle used last if it is
    /// idle, otherwise one from the pool.
    async fn parked(
        &self,
        pool: &crate::conn::pool::ServerPool,
        deadline: Instant,
    ) -> Result<(Arc<Conn>, u64)> {
        if let Some(conn) = self.park_hint.get() {
            // The same pool (a custom shard strategy may send the key elsewhere now).
            if Arc::ptr_eq(&conn.server, &pool.addr) {
                if let Some(id) = conn.try_park() {
                    return Ok((conn, id));
                }
            }
        }
        let (conn, id) = pool.parked(deadline).await?;
        self.park_hint.set(&conn);
        Ok((conn, id))
    }

    fn meta(&self) -> Option<GrantMeta> {
        Some(GrantMeta {
            family: self.family,
            key: self.key.clone(),
        })
    }

    fn acquire_request(&self, timeout_s: u64) -> Request<'_> {
        Request::Acquire {
            family: self.family,
            key: &self.key,
            timeout_s,
            limit: self.limit,
            lease_s: self.lease_s(),
        }
    }

    /// How to send [`acquire_request`](Self::acquire_request)`(timeout_s)`: as bytes encoded
    /// before, for the two timeouts this handle uses most (0, and its whole acquire timeout).
    fn acquire_wire(&self, timeout_s: u64) -> Wire<'_> {
        let slot = if timeout_s == 0 {
            &self.wire.try_once
        } else if timeout_s == whole_seconds(self.acquire_timeout).max(1) {
            &self.wire.wait
        } else {
            return Wire::Encode;
        };
        let bytes = slot.get_or_init(|| {
            let mut buf = Vec::new();
            self.acquire_request(timeout_s).encode(&mut buf).ok()?;
            Some(buf.into_boxed_slice())
        });
        bytes.as_deref().map_or(Wire::Encode, Wire::Bytes)
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            key: self.key.to_string(),
        }
    }

    fn unexpected(&self, conn: &Conn) -> Error {
        Error::Protocol {
            server: conn.server.to_string(),
            reason: "unexpected answer",
        }
    }
}

/// Ends a connection reservation when dropped (errors and cancellation included).
struct Reservation {
    conn: Arc<Conn>,
    id: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.conn.unpark(self.id);
    }
}

async fn acquire(spec: &Spec, timeout: Duration) -> Result<Guard> {
    spec.check()?;
    let client = &spec.client;
    let pool = client.pool(client.server_for(&spec.key)?);
    let started = Instant::now();
    let settings = &client.inner.settings;
    let deadline = started + timeout + settings.request_timeout;

    // Fast path: a try-once on a shared connection, one round trip when the key is free.
    // Skipped for keys found busy a moment ago: they would only pay a round trip for nothing.
    let hot_keys = &client.inner.hot_keys;
    let try_once = timeout.is_zero() || !hot_keys.is_hot(spec.key_facts.hot_hash, started);
    if try_once {
        let (conn, answer) = pool
            .call_shared(deadline, || Call {
                request: spec.acquire_request(0),
                wire: spec.acquire_wire(0),
                expect: Expect::Grant,
                grant: spec.meta(),
                server_wait: None,
                cancel_closes: false,
                key: Some(spec.key.clone()),
                patience: None,
                park: None,
                forget: None,
            })
            .await?;
        match answer {
            Answer::Granted(granted) => return Guard::new(spec, conn, granted, started),
            Answer::Timeout if timeout.is_zero() => {
                tracing::debug!(key = %spec.key, outcome = "busy", "try-once acquire");
                return Err(spec.timeout_error());
            }
            Answer::Timeout => hot_keys.mark_hot(spec.key_facts.hot_hash, Instant::now()),
            _ => return Err(spec.unexpected(&conn)),
        }
    }

    // Busy: queue server-side on a connection that carries nothing else.
    // (No clock read when nothing was tried: a hot key goes straight here.)
    let remaining = if try_once {
        timeout.saturating_sub(started.elapsed())
    } else {
        timeout
    };
    let wait_s = whole_seconds(remaining).max(1);
    let pooled_before = crate::conn::conn_id_mark();
    let (conn, answer) = loop {
        let (conn, id) = spec.parked(pool, deadline).await?;
        let _reservation = Reservation {
            conn: conn.clone(),
            id,
        };
        let result = conn
            .call(Call {
                request: spec.acquire_request(wait_s),
                wire: spec.acquire_wire(wait_s),
                expect: Expect::Grant,
                grant: spec.meta(),
                server_wait: Some(Duration::from_secs(wait_s)),
                cancel_closes: true,
                key: Some(spec.key.clone()),
                patience: None,
                park: Some(id),
                forget: None,
            })
            .await;
        match result {
            // Queue again: see `Conn::died_unnoticed`.
            Err(e) if conn.died_unnoticed(&e, pooled_before) => {}
            result => break (conn, result?),
        }
    };
    match answer {
        Answer::Granted(granted) => Guard::new(spec, conn, granted, started)?.confirmed().await,
        Answer::Timeout => {
            tracing::debug!(key = %spec.key, waited_ms = started.elapsed().as_millis() as u64, outcome = "timeout", "acquire");
            Err(spec.timeout_error())
        }
        _ => Err(spec.unexpected(&conn)),
    }
}

async fn enqueue(spec: &Spec) -> Result<Enqueued> {
    spec.check()?;
    let client = &spec.client;
    let pool = client.pool(client.server_for(&spec.key)?);
    let started = Instant::now();
    let deadline = started + client.inner.settings.request_timeout;
    let (conn, id) = spec.parked(pool, deadline).await?;
    let reservation = Reservation {
        conn: conn.clone(),
        id,
    };
    let answer = conn
        .call(Call {
            request: Request::Enqueue {
                family: spec.family,
                key: &spec.key,
                limit: spec.limit,
                lease_s: spec.lease_s(),
            },
            wire: Wire::Encode,
            expect: Expect::Enqueue,
            grant: spec.meta(),
            server_wait: None,
            cancel_closes: true,
            key: Some(spec.key.clone()),
            patience: None,
            park: Some(id),
            forget: None,
        })
        .await?;
    match answer {
        Answer::Granted(granted) => {
            // Released (`r`) through this connection later, which also clears the server's
            // enqueue state; the reservation ends here.
            drop(reservation);
            Ok(Enqueued::Acquired(Guard::new(
                spec, conn, granted, started,
            )?))
        }
        Answer::Queued => {
            tracing::debug!(key = %spec.key, "enqueued");
            let reservation = std::mem::ManuallyDrop::new(reservation);
            Ok(Enqueued::Queued(Queued {
                spec: spec.clone(),
                conn: conn.clone(),
                park_id: reservation.id,
                started,
                waited: false,
            }))
        }
        _ => Err(spec.unexpected(&conn)),
    }
}

/// The result of [`Lock::enqueue`] / [`Semaphore::enqueue`].
#[derive(Debug)]
#[must_use = "a queued acquisition must be waited for (or dropped to leave the queue)"]
pub enum Enqueued {
    /// The slot was free: held now, renewing already.
    Acquired(Guard),
    /// In the queue: call [`Queued::wait`].
    Queued(Queued),
}

impl Enqueued {
    /// Whether the slot was granted at once.
    #[must_use]
    pub fn is_acquired(&self) -> bool {
        matches!(self, Enqueued::Acquired(_))
    }

    /// `"acquired"` or `"queued"`, as the server said.
    #[must_use]
    pub fn status(&self) -> &'static str {
        match self {
            Enqueued::Acquired(_) => "acquired",
            Enqueued::Queued(_) => "queued",
        }
    }

    /// The guard: at once (no I/O) when acquired, otherwise after waiting up to `timeout`.
    ///
    /// # Errors
    /// As [`Queued::wait`].
    ///
    /// # Cancel safety
    /// As [`Queued::wait`].
    pub async fn wait(self, timeout: Duration) -> Result<Guard> {
        match self {
            Enqueued::Acquired(guard) => Ok(guard),
            Enqueued::Queued(queued) => queued.wait(timeout).await,
        }
    }
}

/// A place in a key's queue (two-phase acquisition), tied to its connection.
///
/// Dropping it without [`wait`](Queued::wait) leaves the queue (its connection is closed).
#[must_use = "dropping it leaves the queue"]
pub struct Queued {
    spec: Spec,
    conn: Arc<Conn>,
    park_id: u64,
    started: Instant,
    waited: bool,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("key", &self.spec.key)
            .field("server", &self.conn.server)
            .finish_non_exhaustive()
    }
}

impl Queued {
    /// The key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.spec.key
    }

    /// Waits server-side up to `timeout` (whole seconds, rounded up) for the grant.
    ///
    /// If the grant came before the wait, its lease started then: the server answers
    /// [`Error::LeaseExpired`] (or [`Error::NotEnqueued`]) when it ran out meanwhile.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no slot opened in time (the place in the queue is given up);
    /// [`Error::LeaseExpired`], [`Error::NotEnqueued`], connection and protocol errors.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the connection, leaving the queue.
    pub async fn wait(mut self, timeout: Duration) -> Result<Guard> {
        self.waited = true;
        let wait_s = whole_seconds(timeout);
        let conn = self.conn.clone();
        let _reservation = Reservation {
            conn: conn.clone(),
            id: self.park_id,
        };
        let answer = conn
            .call(Call {
                request: Request::Wait {
                    family: self.spec.family,
                    key: &self.spec.key,
                    timeout_s: wait_s,
                },
                wire: Wire::Encode,
                expect: Expect::Grant,
                grant: self.spec.meta(),
                server_wait: Some(Duration::from_secs(wait_s)),
                cancel_closes: true,
                key: Some(self.spec.key.clone()),
                patience: None,
                park: Some(self.park_id),
                forget: None,
            })
            .await?;
        match answer {
            Answer::Granted(granted) => {
                let mut guard = Guard::new(&self.spec, conn, granted, self.started)?;
                // The grant may have come at any moment since the enqueue. A server that
                // restarts the lease with the `w` answers for a lease it still knows, but the
                // v1.10.0 release also answers `ok` with a grant whose lease ran out before
                // the `w`: unless the whole acquisition took less than a renew interval (the
                // lease then cannot have run out), confirm it like any grant after a long wait.
                let policy = &self.spec.client.inner.settings.policy;
                guard.unconfirmed |= self.started.elapsed() >= policy.interval(guard.lease());
                guard.confirmed().await
            }
            Answer::Timeout => Err(self.spec.timeout_error()),
            _ => Err(self.spec.unexpected(&conn)),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.waited {
            self.conn
                .kill("an enqueued acquisition was dropped without waiting");
        }
    }
}

/// A held lock or semaphore slot.
///
/// While it lives, its lease is renewed in the background. Release it with
/// [`release`](Guard::release) to learn whether the release succeeded; dropping it releases
/// in the background without blocking.
///
/// The lease can be lost despite renewals (the server became unreachable, the connection
/// broke, the process stalled past the lease). [`is_held`](HeldLock::is_held) and
/// [`lost`](HeldLock::lost) tell the critical section, before the server can give the lock to
/// anyone else. For writes to a shared resource, pass [`fence`](HeldLock::fence) along and let
/// the resource reject writes with an older fence.
#[must_use = "dropping the guard releases the lock"]
pub struct Guard {
    conn: Arc<Conn>,
    lock_id: u64,
    family: Family,
    /// Key, token, fence, limit and lease state; the guard derefs to it.
    held: HeldLock,
    release_timeout: Duration,
    /// See [`Granted::unconfirmed`](crate::conn::Granted).
    unconfirmed: bool,
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
    fn new(spec: &Spec, conn: Arc<Conn>, granted: Granted, started: Instant) -> Result<Guard> {
        let grant = &granted.grant;
        let fence = match (grant.fence, spec.client.inner.server_version) {
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
            outcome = "acquired",
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
            release_timeout: spec.client.inner.release_timeout,
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
    async fn confirmed(self) -> Result<Guard> {
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
        let (lock_id, key) = (self.lock_id, self.held.key.clone());
        let lost = move |reason| Error::LeaseLost {
            key: key.to_string(),
            reason,
        };
        async move {
            if let Some(reason) = shared.loss() {
                return Err(lost(reason));
            }
            conn.renew_now(lock_id).await.map_err(|e| match e {
                Error::LeaseLost { reason, .. } => lost(reason),
                other => other,
            })
        }
    }

    fn lost_error(&self, reason: LossReason) -> Error {
        Error::LeaseLost {
            key: self.key.to_string(),
            reason,
        }
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
        // Stops the renewals (no lock needed: the connection looks at this state). A lease
        // that was lost is no longer registered on the connection.
        if !self.shared().mark_released() {
            let reason = self.shared().loss().unwrap_or(LossReason::ConnectionLost);
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
        let call = conn.call(Call {
            request,
            // The key went out with the acquire, the token came in the grant.
            wire: Wire::Validated,
            expect: Expect::Release,
            grant: None,
            server_wait: None,
            cancel_closes: false,
            key: Some(self.key.clone()),
            // Bounded without a timer of its own: the connection's maintenance gives up for us.
            patience: Some(self.release_timeout),
            park: None,
            forget: Some(self.lock_id),
        });
        let outcome = call.await;
        // A release the server answered was forgotten with its answer.
        fallback.disarm(matches!(outcome, Ok(_) | Err(Error::Refused { .. })));
        let result = match outcome {
            Ok(_) => Ok(()),
            Err(Error::Refused { .. }) => Err(self.lost_error(LossReason::Expired)),
            Err(e) => Err(e),
        };
        tracing::debug!(
            key = %self.key,
            token = %self.token,
            took_ms = started.map(|t| t.elapsed().as_millis() as u64),
            ok = result.is_ok(),
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
    limit: u64,
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
    pub fn limit(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(request: &Request<'_>) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        request.encode(&mut buf).ok().map(|()| buf)
    }

    fn sent(wire: Wire<'_>) -> Option<Vec<u8>> {
        match wire {
            Wire::Bytes(bytes) => Some(bytes.to_vec()),
            Wire::Encode | Wire::Validated => None,
        }
    }

    #[test]
    fn cached_acquire_requests_match_their_encoding_and_follow_the_settings() {
        let client = Client::builder().build().unwrap();
        let lock = client.lock("k").acquire_timeout(Duration::from_secs(7));
        let spec = &lock.spec;
        for timeout_s in [0, 7] {
            let want = encoded(&spec.acquire_request(timeout_s)).unwrap();
            // Filled on first use, then the same bytes.
            assert_eq!(sent(spec.acquire_wire(timeout_s)), Some(want.clone()));
            assert_eq!(sent(spec.acquire_wire(timeout_s)), Some(want));
        }
        // Another wait timeout is encoded as it is sent.
        assert_eq!(sent(spec.acquire_wire(3)), None);

        // A new lease or timeout is a new request.
        let leased = lock.clone().lease_ttl(Duration::from_secs(5));
        let bytes = sent(leased.spec.acquire_wire(7)).unwrap();
        assert_eq!(bytes, b"l\nk\n7 5\n");
        let sooner = lock.clone().acquire_timeout(Duration::from_millis(2500));
        assert_eq!(sent(sooner.spec.acquire_wire(3)).unwrap(), b"l\nk\n3\n");
        assert_eq!(sent(sooner.spec.acquire_wire(7)), None);
        let sem = client
            .semaphore("s", 3)
            .acquire_timeout(Duration::from_secs(2));
        assert_eq!(sent(sem.spec.acquire_wire(2)).unwrap(), b"sl\ns\n2 3\n");
        assert_eq!(sent(sem.spec.acquire_wire(0)).unwrap(), b"sl\ns\n0 3\n");
    }

    #[test]
    fn requests_that_do_not_encode_are_never_cached() {
        let client = Client::builder().build().unwrap();
        let bad = client.lock("a key");
        assert_eq!(sent(bad.spec.acquire_wire(0)), None);
        assert!(encoded(&bad.spec.acquire_request(0)).is_none());
        let huge = client
            .lock("k")
            .lease_ttl(Duration::from_secs(u64::MAX / 2));
        assert_eq!(sent(huge.spec.acquire_wire(10)), None);
    }
}
