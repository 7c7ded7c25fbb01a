//! How a request's lock or semaphore slot is acquired: the limit the server has for the key
//! when it differs from the configured one, and what happens when the lock server cannot be
//! reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dflockd_core::{Client, Guard};

use super::config::Settings;
use crate::OnUnreachable;
use crate::error::is_unreachable;
use crate::limits::{AdoptedLimits, server_limit};
use crate::observe::Observed;

/// What a request runs under.
pub(crate) enum Acquired {
    /// The lock or slot, held.
    Held(Guard),
    /// Nothing: the lock server could not be reached and the layer fails open.
    Unguarded,
}

/// What the boxed acquisition yields: what the request runs under, `Err(None)` when the
/// layer's own wait ran out first, or the client's error.
pub(crate) type AcquireFuture =
    Pin<Box<dyn Future<Output = Result<Acquired, Option<dflockd_core::Error>>> + Send>>;

/// The longest wait the protocol can carry (`u32::MAX` seconds, some 136 years): longer
/// waits, `Duration::MAX` among them, wait this long.
const MAX_WAIT: Duration = Duration::from_secs(u32::MAX as u64);

/// Acquisitions of one semaphore key tried at most (the configured limit, the server's, and
/// once more if the key changed in between).
const MAX_ATTEMPTS: usize = 3;

/// The acquisition of `key` (a lock when `limit` is `None`, else a semaphore), bounded by
/// `wait` here as well as on the server (which counts whole seconds).
pub(crate) fn acquire(
    settings: &Settings,
    observed: &Arc<Observed>,
    limits: &Arc<AdoptedLimits>,
    key: String,
    limit: Option<u32>,
    wait: Duration,
) -> AcquireFuture {
    // The protocol carries whole seconds in 32 bits; the client takes no more.
    let wait = wait.min(MAX_WAIT);
    let client = settings.client.clone();
    let lease = settings.lease;
    let fail_open = settings.on_unreachable == OnUnreachable::FailOpen;
    let (observed, limits) = (observed.clone(), limits.clone());
    // `None` for a wait too long to be an `Instant` (a wait without end).
    let deadline = Instant::now().checked_add(wait);
    let acquire = {
        let observed = observed.clone();
        async move {
            match limit {
                None => {
                    let mut lock = client.lock(key).acquire_timeout(wait);
                    if let Some(lease) = lease {
                        lock = lock.lease_ttl(lease);
                    }
                    lock.acquire().await
                }
                Some(configured) => {
                    let slot = Slot {
                        client: &client,
                        lease,
                        wait,
                        deadline,
                    };
                    slot.acquire(key, configured, &limits, &observed).await
                }
            }
        }
    };
    Box::pin(async move {
        let acquired = if wait.is_zero() {
            acquire.await.map_err(Some)
        } else {
            // The acquisition is cancel safe: dropping it leaves the server's queue.
            match tokio::time::timeout(wait, acquire).await {
                Ok(acquired) => acquired.map_err(Some),
                Err(_) => Err(None),
            }
        };
        match acquired {
            Ok(guard) => Ok(Acquired::Held(guard)),
            Err(Some(error)) if fail_open && is_unreachable(&error) => {
                observed.failed_open();
                // In the request's span, which names the key.
                if let Some(held_back) = observed.failed_open_log.admit(Instant::now()) {
                    tracing::warn!(
                        %error,
                        similar_since_last = held_back,
                        "lock server unreachable: the request runs unguarded \
                         (OnUnreachable::FailOpen, counted in Counters::failed_open)"
                    );
                }
                Ok(Acquired::Unguarded)
            }
            Err(failure) => Err(failure),
        }
    })
}

/// A semaphore slot to acquire.
struct Slot<'a> {
    client: &'a Client,
    lease: Option<Duration>,
    wait: Duration,
    /// The end of the wait (now, for a wait of zero: then each attempt tries once); `None`
    /// when it is too far away to be represented.
    deadline: Option<Instant>,
}

impl Slot<'_> {
    /// Acquires a slot of `key`, configured with limit `configured`.
    ///
    /// The server keeps one limit per key while the key is in use, and refuses another
    /// (`error_limit_mismatch`): when a layer's limit changes (a rolling deploy), old and new
    /// replicas would refuse each other's requests. On a mismatch the slot is taken under the
    /// limit the server has for the key (read from its statistics), which keeps the server's
    /// bound: there is only ever one semaphore per key. The configured limit applies once
    /// the key has been idle long enough for the server to collect it. A semaphore that is
    /// idle on the server does not list its limit: unless this layer learnt it before, the
    /// mismatch is the answer (HTTP 503) until the key is collected.
    async fn acquire(
        &self,
        key: String,
        configured: u32,
        limits: &AdoptedLimits,
        observed: &Observed,
    ) -> dflockd_core::Result<Guard> {
        let mut limit = limits.limit_for(&key, configured, Instant::now());
        let mut semaphore = self.client.semaphore(key, limit);
        let mut attempt = 1;
        loop {
            let left = self.deadline.map_or(self.wait, |end| {
                end.saturating_duration_since(Instant::now())
            });
            semaphore = semaphore.acquire_timeout(left);
            if let Some(lease) = self.lease {
                semaphore = semaphore.lease_ttl(lease);
            }
            let mismatch = match semaphore.acquire().await {
                Ok(guard) => {
                    if limit != configured {
                        observed.adopted_limit();
                    }
                    return Ok(guard);
                }
                Err(e @ dflockd_core::Error::LimitMismatch { .. }) => e,
                Err(e) => return Err(e),
            };
            if attempt == MAX_ATTEMPTS {
                return Err(mismatch);
            }
            attempt += 1;
            let key = semaphore.key();
            let stats = self.client.stats_for_key(key).await?;
            let next = match (server_limit(&stats, key), limits.last_known(key)) {
                (Some(found), _) => found,
                // An idle semaphore: its limit is not listed. The one learnt before, if any.
                (None, Some(known)) if known != limit => known,
                // The key may have been collected meanwhile.
                (None, _) if limit != configured => configured,
                (None, _) => {
                    tracing::debug!(
                        "the key is idle on the lock server with another limit, which it does \
                         not list: refused until the server collects the key"
                    );
                    return Err(mismatch);
                }
            };
            if next == configured {
                limits.forget(key);
            } else if limits.learn(key, configured, next, Instant::now()) {
                tracing::warn!(
                    key,
                    configured,
                    server_limit = next,
                    "the semaphore key is in use on the lock server with another limit: \
                     queueing under the server's limit until the key is idle and collected \
                     (logged once per key and limit, counted in Counters::adopted_limit)"
                );
            }
            tracing::Span::current().record("server_limit", next);
            limit = next;
            semaphore = self.client.semaphore(key, limit);
        }
    }
}
