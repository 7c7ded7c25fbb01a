//! What a client and every handle made from it share: the pools of the servers, how keys are
//! spread over them, the settings and the defaults for locks.
//!
//! Its own file so that `client.rs` (which makes handles) and the handles (which need the
//! pools) both depend on it, not on each other.

use std::sync::Arc;
use std::time::Duration;

use crate::conn::Settings;
use crate::conn::pool::ServerPool;
use crate::error::{Error, Result};
use crate::hot::HotKeys;
use crate::shard::Strategy;
use crate::version::ServerVersion;

pub(crate) struct ClientInner {
    pub(crate) pools: Vec<Arc<ServerPool>>,
    pub(crate) shard: Strategy,
    pub(crate) settings: Arc<Settings>,
    pub(crate) acquire_timeout: Duration,
    pub(crate) lease: Option<Duration>,
    pub(crate) release_timeout: Duration,
    /// Keys found busy a moment ago (their acquires go straight to the wait).
    pub(crate) hot_keys: HotKeys,
    pub(crate) server_version: Option<ServerVersion>,
    /// The key label of the metrics (nothing without the feature).
    pub(crate) metrics: crate::metrics::ClientMetrics,
}

impl ClientInner {
    /// The index of the server that owns `key`.
    pub(crate) fn server_for(&self, key: &str) -> Result<usize> {
        let servers = self.pools.len();
        let index = self.shard.0.shard(key, servers);
        if index < servers {
            Ok(index)
        } else {
            Err(Error::Shard { index, servers })
        }
    }

    /// The pool of the server that owns `key`.
    pub(crate) fn pool_for(&self, key: &str) -> Result<&Arc<ServerPool>> {
        Ok(&self.pools[self.server_for(key)?])
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        for pool in &self.pools {
            pool.client_dropped();
        }
    }
}
