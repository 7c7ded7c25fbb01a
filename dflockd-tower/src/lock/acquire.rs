//! How a request's lock or semaphore slot is acquired, and what happens when the lock server
//! cannot be reached.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dflockd_core::Guard;

use super::config::Settings;
use crate::OnUnreachable;
use crate::error::is_unreachable;
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

/// The acquisition of `key` (a lock when `limit` is `None`, else a semaphore), bounded by
/// `wait` here as well as on the server (which counts whole seconds).
pub(crate) fn acquire(
    settings: &Settings,
    observed: &Arc<Observed>,
    key: String,
    limit: Option<u32>,
    wait: Duration,
) -> AcquireFuture {
    let client = settings.client.clone();
    let lease = settings.lease;
    let fail_open = settings.on_unreachable == OnUnreachable::FailOpen;
    let observed = observed.clone();
    let acquire = async move {
        match limit {
            None => {
                let mut lock = client.lock(key).acquire_timeout(wait);
                if let Some(lease) = lease {
                    lock = lock.lease_ttl(lease);
                }
                lock.acquire().await
            }
            Some(limit) => {
                let mut semaphore = client.semaphore(key, limit).acquire_timeout(wait);
                if let Some(lease) = lease {
                    semaphore = semaphore.lease_ttl(lease);
                }
                semaphore.acquire().await
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
