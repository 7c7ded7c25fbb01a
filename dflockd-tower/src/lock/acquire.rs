//! How a request's lock or semaphore slot is acquired.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use dflockd_core::Guard;

use super::config::Settings;

/// What the boxed acquisition yields: the guard, `Err(None)` when the layer's own wait ran
/// out first, or the client's error.
pub(crate) type AcquireFuture =
    Pin<Box<dyn Future<Output = Result<Guard, Option<dflockd_core::Error>>> + Send>>;

/// The acquisition, bounded by `wait` here as well as on the server (which counts whole
/// seconds).
pub(crate) fn acquire(settings: &Settings, key: String, wait: Duration) -> AcquireFuture {
    let client = settings.client.clone();
    let (limit, lease) = (settings.limit, settings.lease);
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
        if wait.is_zero() {
            acquire.await.map_err(Some)
        } else {
            // The acquisition is cancel safe: dropping it leaves the server's queue.
            match tokio::time::timeout(wait, acquire).await {
                Ok(acquired) => acquired.map_err(Some),
                Err(_) => Err(None),
            }
        }
    })
}
