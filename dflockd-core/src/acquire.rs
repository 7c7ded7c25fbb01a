//! How a [`Lock`](crate::Lock) or [`Semaphore`](crate::Semaphore) handle acquires: what it
//! sends, on which connection, and what it makes of the answer. Both handles are thin
//! wrappers around [`Spec`]; so are their blocking twins.
//!
//! An acquire first tries once on a shared connection (one round trip when the key is free);
//! if the key is busy it queues server-side on a parked connection of its own (see
//! `conn::park`), because the protocol blocks a connection for the wait. Keys found busy are
//! remembered for a second, and acquires on them go straight to the wait.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::conn::call::{Answer, Call, GrantMeta, Wire};
use crate::conn::connect::whole_seconds;
use crate::conn::park::{ParkHint, Parked};
use crate::conn::pool::ServerPool;
use crate::error::{Error, Result};
use crate::guard::{Guard, HeldLock, Origin};
use crate::inner::ClientInner;
use crate::metrics;
use crate::proto::{Family, InvalidInput, MAX_WIRE_INT, Request, validate_client_key};
use crate::section;

/// What to acquire: a key, its limit, and how. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) client: Arc<ClientInner>,
    pub(crate) family: Family,
    pub(crate) key: Arc<str>,
    pub(crate) limit: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) lease: Option<Duration>,
    /// What depends on the key only, worked out once per handle.
    key_facts: KeyFacts,
    /// The connection this handle last waited on.
    park_hint: ParkHint,
    /// Its acquire requests, encoded once (cleared when the timeout or lease changes).
    wire: WireCache,
    /// How [`Spec::run`] runs a section.
    pub(crate) policy: section::Policy,
    /// What its metrics are labelled with.
    labels: metrics::Labels,
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

/// The two acquire requests a handle sends over and over: the try-once, and the wait for the
/// whole acquire timeout (which a busy key goes straight to). `None` inside: the request does
/// not encode (it is encoded again, for its error, when sent).
#[derive(Clone, Default)]
struct WireCache {
    try_once: OnceLock<Option<Box<[u8]>>>,
    wait: OnceLock<Option<Box<[u8]>>>,
}

#[derive(Clone, Copy)]
struct KeyFacts {
    /// The key passed validation (an invalid one is validated again, for its error).
    valid: bool,
    /// Its hash in the client's table of busy keys.
    hot_hash: u64,
}

impl Spec {
    /// A handle on `key` of `family` with `limit` (1 for a lock), with the client's defaults.
    pub(crate) fn new(client: Arc<ClientInner>, family: Family, key: String, limit: u32) -> Self {
        let key_facts = KeyFacts {
            valid: validate_client_key(&key).is_ok(),
            hot_hash: client.hot_keys.hash(&key),
        };
        let labels = client.metrics.labels(family, &key);
        Spec {
            family,
            key: key.into(),
            limit,
            acquire_timeout: client.acquire_timeout,
            lease: client.lease,
            key_facts,
            park_hint: ParkHint::default(),
            wire: WireCache::default(),
            policy: section::Policy::default(),
            labels,
            client,
        }
    }

    pub(crate) fn set_acquire_timeout(&mut self, timeout: Duration) {
        self.acquire_timeout = timeout;
        self.wire = WireCache::default();
    }

    pub(crate) fn set_lease(&mut self, lease: Duration) {
        self.lease = Some(lease);
        self.wire = WireCache::default();
    }

    fn lease_s(&self) -> Option<u64> {
        self.lease.map(whole_seconds)
    }

    /// Validates what can be validated before touching the network (a wait of `timeout`).
    fn check(&self, timeout: Duration) -> Result<()> {
        if !self.key_facts.valid {
            validate_client_key(&self.key)?;
        }
        if self.lease.is_some_and(|l| l.is_zero()) {
            return Err(InvalidInput::ZeroLease.into());
        }
        check_seconds("timeout", timeout)?;
        if let Some(lease) = self.lease {
            check_seconds("lease", lease)?;
        }
        if self.family == Family::Semaphore && self.limit == 0 {
            return Err(InvalidInput::ZeroLimit.into());
        }
        Ok(())
    }

    /// What a guard of this handle takes from it.
    fn origin(&self) -> Origin<'_> {
        Origin {
            client: &self.client,
            family: self.family,
            key: &self.key,
            limit: self.limit,
        }
    }

    fn meta(&self) -> GrantMeta {
        GrantMeta {
            family: self.family,
            key: self.key.clone(),
            labels: self.labels.clone(),
        }
    }

    fn acquire_request(&self, timeout_s: u64) -> Request<'_> {
        Request::Acquire {
            family: self.family,
            key: &self.key,
            timeout_s,
            limit: u64::from(self.limit),
            lease_s: self.lease_s(),
        }
    }

    /// The acquire with `timeout_s`, sent as bytes encoded before for the two timeouts this
    /// handle uses most (0, and its whole acquire timeout).
    fn acquire_call(&self, timeout_s: u64) -> Call<'_> {
        let call = Call::new(self.acquire_request(timeout_s))
            .key(&self.key)
            .registers(self.meta());
        let slot = if timeout_s == 0 {
            &self.wire.try_once
        } else if timeout_s == whole_seconds(self.acquire_timeout).max(1) {
            &self.wire.wait
        } else {
            return call;
        };
        let bytes = slot.get_or_init(|| {
            let mut buf = Vec::new();
            self.acquire_request(timeout_s).encode(&mut buf).ok()?;
            Some(buf.into_boxed_slice())
        });
        match bytes.as_deref() {
            Some(bytes) => call.wire(Wire::Bytes(bytes)),
            None => call,
        }
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            key: self.key.to_string(),
        }
    }

    fn unexpected(&self, server: &str) -> Error {
        Error::Protocol {
            server: server.to_owned(),
            reason: "unexpected answer",
        }
    }

    /// Acquires, waiting up to `timeout` (zero: try once).
    pub(crate) async fn acquire(&self, timeout: Duration) -> Result<Guard> {
        let started = Instant::now();
        let result = self.acquire_from(started, timeout).await;
        metrics::acquired(&self.labels, &result, timeout.is_zero(), started);
        result
    }

    async fn acquire_from(&self, started: Instant, timeout: Duration) -> Result<Guard> {
        self.check(timeout)?;
        let pool = self.client.pool_for(&self.key)?;
        let deadline = started + timeout + self.client.settings.request_timeout;

        // Fast path: a try-once on a shared connection, one round trip when the key is free.
        // Skipped for keys found busy a moment ago: they would only pay a round trip for
        // nothing.
        let hot_keys = &self.client.hot_keys;
        let try_once = timeout.is_zero() || !hot_keys.is_hot(self.key_facts.hot_hash, started);
        if try_once {
            let (conn, answer) = pool
                .call_shared(started, deadline, || self.acquire_call(0))
                .await?;
            match answer {
                Answer::Granted(granted) => {
                    return Guard::new(self.origin(), conn, granted, started);
                }
                Answer::Timeout if timeout.is_zero() => {
                    tracing::debug!(key = %self.key, outcome = "busy", "try-once acquire");
                    return Err(self.timeout_error());
                }
                Answer::Timeout => hot_keys.mark_hot(self.key_facts.hot_hash, Instant::now()),
                _ => return Err(self.unexpected(&conn.server)),
            }
        }

        // Boxed: the wait is the slow path, and its future would make every acquire's as big.
        Box::pin(self.acquire_queued(pool, started, timeout, deadline, try_once)).await
    }

    /// Queues server-side on a connection that carries nothing else (the key was busy, or
    /// found busy a moment ago when `!try_once`).
    async fn acquire_queued(
        &self,
        pool: &ServerPool,
        started: Instant,
        timeout: Duration,
        deadline: Instant,
        try_once: bool,
    ) -> Result<Guard> {
        // (No clock read when nothing was tried: a hot key goes straight here.)
        let remaining = if try_once {
            timeout.saturating_sub(started.elapsed())
        } else {
            timeout
        };
        let wait_s = whole_seconds(remaining).max(1);
        let pooled_before = crate::conn::conn_id_mark();
        let mut queued;
        let (conn, answer) = loop {
            let parked = pool.parked(deadline, &self.park_hint).await?;
            let call = self
                .acquire_call(wait_s)
                .blocking(Duration::from_secs(wait_s));
            queued = metrics::Stopwatch::start();
            match parked.call(call).await {
                // Queue again: see `Conn::died_unnoticed`.
                Err(e) if parked.conn().died_unnoticed(&e, pooled_before) => {}
                result => break (parked.conn().clone(), result?),
            }
        };
        match answer {
            Answer::Granted(granted) => {
                metrics::queued(&self.labels, queued);
                Guard::new(self.origin(), conn, granted, started)?
                    .confirmed()
                    .await
            }
            Answer::Timeout => {
                tracing::debug!(key = %self.key, waited_ms = started.elapsed().as_millis() as u64, outcome = "timeout", "acquire");
                Err(self.timeout_error())
            }
            _ => Err(self.unexpected(&conn.server)),
        }
    }

    /// A scoped section: acquires (unless this task already holds the key: that would wait
    /// for itself), runs `work` with the held lock, then releases (see [`section::run`]).
    pub(crate) async fn run<F, Fut>(&self, work: F) -> Result<Fut::Output>
    where
        F: FnOnce(HeldLock) -> Fut,
        Fut: std::future::Future,
    {
        self.check_reentry()?;
        let guard = self.acquire(self.acquire_timeout).await?;
        let work = work(guard.held());
        section::run(vec![guard], self.policy, work).await
    }

    /// Fails with [`Error::Reentrant`] when the current task or thread runs in a section that
    /// holds this key.
    pub(crate) fn check_reentry(&self) -> Result<()> {
        let server = &self.client.pool_for(&self.key)?.addr;
        section::check_reentry(server, self.family, &self.key)
    }

    /// Two-phase acquisition, first half.
    pub(crate) async fn enqueue(&self) -> Result<Enqueued> {
        let started = Instant::now();
        let result = self.enqueue_from(started).await;
        let queued = matches!(result, Ok(Enqueued::Queued(_)));
        metrics::enqueued(&self.labels, &result, queued, started);
        result
    }

    async fn enqueue_from(&self, started: Instant) -> Result<Enqueued> {
        self.check(Duration::ZERO)?;
        let pool: &ServerPool = self.client.pool_for(&self.key)?;
        let deadline = started + self.client.settings.request_timeout;
        let parked = pool.parked(deadline, &self.park_hint).await?;
        let request = Request::Enqueue {
            family: self.family,
            key: &self.key,
            limit: u64::from(self.limit),
            lease_s: self.lease_s(),
        };
        let call = Call::new(request)
            .key(&self.key)
            .registers(self.meta())
            // The queue place lives on this connection: leave it if the caller goes away.
            .cancel_closes();
        let answer = parked.call(call).await?;
        let conn = parked.conn().clone();
        match answer {
            // Released (`r`) through this connection later, which also clears the server's
            // enqueue state; the reservation ends here.
            Answer::Granted(granted) => Ok(Enqueued::Acquired(Guard::new(
                self.origin(),
                conn,
                granted,
                started,
            )?)),
            Answer::Queued => {
                tracing::debug!(key = %self.key, "enqueued");
                Ok(Enqueued::Queued(Queued {
                    spec: self.clone(),
                    parked,
                    started,
                    waited: false,
                }))
            }
            _ => Err(self.unexpected(&conn.server)),
        }
    }
}

/// A duration the protocol can carry, in whole seconds (rounded up): at most
/// [`MAX_WIRE_INT`] (some 136 years).
fn check_seconds(what: &'static str, duration: Duration) -> Result<()> {
    let value = whole_seconds(duration);
    if value > MAX_WIRE_INT {
        return Err(InvalidInput::TooLarge {
            what,
            value,
            max: MAX_WIRE_INT,
        }
        .into());
    }
    Ok(())
}

/// The result of [`Lock::enqueue`](crate::Lock::enqueue) /
/// [`Semaphore::enqueue`](crate::Semaphore::enqueue).
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

/// A place in a key's queue (two-phase acquisition), tied to its connection, which stays
/// reserved for the wait.
///
/// Dropping it without [`wait`](Queued::wait) leaves the queue (its connection is closed).
#[must_use = "dropping it leaves the queue"]
pub struct Queued {
    spec: Spec,
    parked: Parked,
    started: Instant,
    waited: bool,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("key", &self.spec.key)
            .field("server", &self.parked.conn().server)
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
    /// [`Error::LeaseExpired`] (or [`Error::NotEnqueued`]) when it ran out meanwhile. A grant
    /// that may have waited past its first renewal is confirmed with a renew before it is
    /// handed out, as [`Lock::acquire`](crate::Lock::acquire) does.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no slot opened in time (the place in the queue is given up);
    /// [`Error::LeaseExpired`], [`Error::NotEnqueued`], [`Error::LeaseLost`] (the confirming
    /// renew was refused), [`Error::NotFenced`], connection and protocol errors.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future closes the connection, leaving the queue.
    pub async fn wait(self, timeout: Duration) -> Result<Guard> {
        let (labels, started) = (self.spec.labels.clone(), self.started);
        let result = self.wait_for(timeout).await;
        metrics::acquired(&labels, &result, false, started);
        result
    }

    async fn wait_for(mut self, timeout: Duration) -> Result<Guard> {
        // Before anything is sent: an error here drops `self`, which leaves the queue.
        check_seconds("timeout", timeout)?;
        self.waited = true;
        let spec = &self.spec;
        let wait_s = whole_seconds(timeout);
        let request = Request::Wait {
            family: spec.family,
            key: &spec.key,
            timeout_s: wait_s,
        };
        let call = Call::new(request)
            .key(&spec.key)
            .registers(spec.meta())
            .blocking(Duration::from_secs(wait_s));
        let answer = self.parked.call(call).await?;
        let conn = self.parked.conn().clone();
        match answer {
            Answer::Granted(granted) => {
                metrics::queued(&spec.labels, metrics::Stopwatch::since(self.started));
                let mut guard = Guard::new(spec.origin(), conn, granted, self.started)?;
                // The grant may have come at any moment since the enqueue. A server that
                // restarts the lease with the `w` answers for a lease it still knows, but the
                // v1.10.0 release also answers `ok` with a grant whose lease ran out before
                // the `w`: unless the whole acquisition took less than a renew interval (the
                // lease then cannot have run out), confirm it like any grant after a long wait.
                let interval = spec.client.settings.policy.interval(guard.lease());
                guard.unconfirmed |= self.started.elapsed() >= interval;
                guard.confirmed().await
            }
            Answer::Timeout => Err(spec.timeout_error()),
            _ => Err(spec.unexpected(&conn.server)),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.waited {
            self.parked
                .conn()
                .kill("an enqueued acquisition was dropped without waiting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;

    fn encoded(request: &Request<'_>) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        request.encode(&mut buf).ok().map(|()| buf)
    }

    fn sent(call: Call<'_>) -> Option<Vec<u8>> {
        match call.wire {
            Wire::Bytes(bytes) => Some(bytes.to_vec()),
            Wire::Encode | Wire::Validated => None,
        }
    }

    fn spec(client: &Client, family: Family, key: &str, limit: u32) -> Spec {
        Spec::new(client.inner.clone(), family, key.to_owned(), limit)
    }

    #[test]
    fn cached_acquire_requests_match_their_encoding_and_follow_the_settings() {
        let client = Client::builder().build().unwrap();
        let mut spec = spec(&client, Family::Lock, "k", 1);
        spec.set_acquire_timeout(Duration::from_secs(7));
        for timeout_s in [0, 7] {
            let want = encoded(&spec.acquire_request(timeout_s)).unwrap();
            // Filled on first use, then the same bytes.
            assert_eq!(sent(spec.acquire_call(timeout_s)), Some(want.clone()));
            assert_eq!(sent(spec.acquire_call(timeout_s)), Some(want));
        }
        // Another wait timeout is encoded as it is sent.
        assert_eq!(sent(spec.acquire_call(3)), None);

        // A new lease or timeout is a new request.
        let mut leased = spec.clone();
        leased.set_lease(Duration::from_secs(5));
        assert_eq!(sent(leased.acquire_call(7)).unwrap(), b"l\nk\n7 5\n");
        let mut sooner = spec.clone();
        sooner.set_acquire_timeout(Duration::from_millis(2500));
        assert_eq!(sent(sooner.acquire_call(3)).unwrap(), b"l\nk\n3\n");
        assert_eq!(sent(sooner.acquire_call(7)), None);
        let mut sem = self::spec(&client, Family::Semaphore, "s", 3);
        sem.set_acquire_timeout(Duration::from_secs(2));
        assert_eq!(sent(sem.acquire_call(2)).unwrap(), b"sl\ns\n2 3\n");
        assert_eq!(sent(sem.acquire_call(0)).unwrap(), b"sl\ns\n0 3\n");
    }

    #[test]
    fn requests_that_do_not_encode_are_never_cached() {
        let client = Client::builder().build().unwrap();
        let bad = spec(&client, Family::Lock, "a key", 1);
        assert_eq!(sent(bad.acquire_call(0)), None);
        assert!(encoded(&bad.acquire_request(0)).is_none());
        let mut huge = spec(&client, Family::Lock, "k", 1);
        huge.set_lease(Duration::from_secs(u64::MAX / 2));
        assert_eq!(sent(huge.acquire_call(10)), None);
    }
}
