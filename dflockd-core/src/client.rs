//! [`Client`]: the handle applications keep, and what it does besides making locks (stats,
//! health checks, sharding).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::call::{Answer, Call};
use crate::election::Election;
use crate::error::{Error, Result};
use crate::inner::ClientInner;
use crate::lock::Lock;
use crate::multi::MultiLock;
use crate::proto::Request;
use crate::semaphore::Semaphore;
use crate::stats::Stats;
use crate::version::ServerVersion;

/// A dflockd client: a set of servers, their pooled connections, and the defaults for locks.
///
/// Cheap to clone (an `Arc`); clones share the pools. Build one per process with
/// [`Client::builder`] or [`Client::from_env`] and hand out clones.
///
/// Connections are opened lazily, pre-authenticated, and reused across acquisitions; a held
/// lock keeps its connection open until it is released. When the last clone of the client is
/// dropped, connections close as soon as they hold nothing.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.servers())
            .field("auth", &self.inner.settings.credentials.has_token())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A lock on `key` with the client's default acquire timeout and lease.
    ///
    /// Nothing is sent until [`Lock::acquire`], [`Lock::try_acquire`] or [`Lock::enqueue`].
    #[must_use]
    pub fn lock(&self, key: impl Into<String>) -> Lock {
        Lock::new(self.inner.clone(), key.into())
    }

    /// A counting semaphore on `key` allowing `limit` holders at once, with the client's
    /// default acquire timeout and lease.
    ///
    /// A key used with one limit cannot be used with another at the same time
    /// ([`Error::LimitMismatch`]); before dflockd v1.14 that includes a lock of the same name
    /// (a lock is a semaphore of limit 1, and both share one namespace there).
    #[must_use]
    pub fn semaphore(&self, key: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore::new(self.inner.clone(), key.into(), limit)
    }

    /// Several keys to acquire together, in one global order and all or nothing: the locks
    /// on `keys` (more locks and semaphore slots can be added to it). See [`MultiLock`].
    #[must_use]
    pub fn multi_lock<I, K>(&self, keys: I) -> MultiLock
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        keys.into_iter()
            .fold(MultiLock::new(self.inner.clone()), |m, key| m.lock(key))
    }

    /// Leader election in the group `group`: one process of the group leads at a time. See
    /// [`Election`].
    #[must_use]
    pub fn election(&self, group: impl Into<String>) -> Election {
        Election::new(self.inner.clone(), group.into())
    }

    /// Authenticate new connections with `token` from now on (for a rotated token); the
    /// same checks as [`ClientBuilder::auth_token`](crate::ClientBuilder::auth_token). It
    /// replaces a token file ([`ClientBuilder::auth_token_file`](crate::ClientBuilder::auth_token_file),
    /// which is re-read by itself). Connections already open stay as they are, and so do the
    /// locks held through them.
    ///
    /// # Errors
    /// [`Error::Config`] for a token the servers would not take; the token in use is kept.
    pub fn set_auth_token(&self, token: impl AsRef<str>) -> Result<()> {
        self.inner.settings.credentials.set_token(token.as_ref())
    }

    /// Connect with these TLS settings from now on: new certificates, keys or roots (for
    /// example when the files were renewed: build the options again from them). Connections
    /// already open keep the settings they were opened with, and so do the locks held through
    /// them. Also turns TLS on for a client built without it.
    ///
    /// # Errors
    /// [`Error::Config`] when the options cannot be used (as
    /// [`ClientBuilder::build`](crate::ClientBuilder::build)); the settings in use are kept.
    #[cfg(feature = "tls-base")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls-base")))]
    pub fn reload_tls(&self, tls: crate::TlsOptions) -> Result<()> {
        let connector = tls.build()?;
        self.inner.settings.credentials.set_tls(Some(connector));
        Ok(())
    }

    /// The configured server addresses, in order.
    #[must_use]
    pub fn servers(&self) -> Vec<&str> {
        self.inner.pools.iter().map(|p| &*p.addr).collect()
    }

    /// The index (into [`Client::servers`]) of the server that owns `key`.
    ///
    /// # Errors
    /// [`Error::Shard`] when a custom strategy returns an index out of range.
    pub fn server_for(&self, key: &str) -> Result<usize> {
        self.inner.server_for(key)
    }

    /// Open connections to every server, for diagnostics.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.inner.pools.iter().map(|p| p.open_connections()).sum()
    }

    /// The statistics of server `index`.
    ///
    /// # Errors
    /// [`Error::Shard`] for an index out of range; connection and protocol errors; a `stats`
    /// answer that is not the expected JSON is an [`Error::Protocol`].
    ///
    /// # Cancel safety
    /// Cancel safe: the answer is read and discarded if the future is dropped.
    pub async fn server_stats(&self, index: usize) -> Result<Stats> {
        let servers = self.inner.pools.len();
        let pool = self
            .inner
            .pools
            .get(index)
            .ok_or(Error::Shard { index, servers })?;
        let now = Instant::now();
        let deadline = now + self.inner.settings.request_timeout;
        let (_, answer) = pool
            .call_shared(now, deadline, || Call::new(Request::Stats))
            .await?;
        match answer {
            Answer::Stats(json) => Stats::from_json(&json).map_err(|_| Error::Protocol {
                server: pool.addr.to_string(),
                reason: "stats answer is not the expected JSON",
            }),
            _ => Err(Error::Protocol {
                server: pool.addr.to_string(),
                reason: "unexpected answer to stats",
            }),
        }
    }

    /// Checks that every server answers, for a readiness probe: a `ping` on a pooled
    /// connection to each (opening and authenticating one first if there is none), in the
    /// order of [`Client::servers`]. Returns the longest time a server took to answer
    /// (including opening the connection, when none was open).
    ///
    /// dflockd v1.14 and later answer `ping` with `ok`; older releases answer `error` (and keep
    /// the connection), which shows just as well that the server is up, authenticated us and
    /// speaks the protocol: both count as alive.
    ///
    /// # Errors
    /// The first server's failure: [`Error::Connect`] (unreachable, refused, TLS handshake),
    /// [`Error::AuthRejected`], [`Error::Draining`], [`Error::RequestTimeout`], connection and
    /// protocol errors.
    ///
    /// # Cancel safety
    /// Cancel safe: an answer that comes after cancellation is read and discarded.
    pub async fn ping(&self) -> Result<Duration> {
        let mut slowest = Duration::ZERO;
        for index in 0..self.inner.pools.len() {
            slowest = slowest.max(self.ping_server(index).await?);
        }
        Ok(slowest)
    }

    /// [`Client::ping`] for server `index` alone: how long it took to answer.
    ///
    /// # Errors
    /// [`Error::Shard`] for an index out of range; otherwise as [`Client::ping`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn ping_server(&self, index: usize) -> Result<Duration> {
        let servers = self.inner.pools.len();
        let pool = self
            .inner
            .pools
            .get(index)
            .ok_or(Error::Shard { index, servers })?;
        let started = Instant::now();
        let deadline = started + self.inner.settings.request_timeout;
        let answer = pool
            .call_shared(started, deadline, || Call::new(Request::Ping))
            .await;
        let took = started.elapsed();
        match answer {
            Ok((_, Answer::Ok)) | Err(Error::Refused { .. }) => Ok(took),
            Ok(_) => Err(Error::Protocol {
                server: pool.addr.to_string(),
                reason: "unexpected answer to ping",
            }),
            Err(e) => Err(e),
        }
    }

    /// The release the client was told the servers run ([`ClientBuilder::server_version`](crate::ClientBuilder::server_version)).
    #[must_use]
    pub fn server_version(&self) -> Option<ServerVersion> {
        self.inner.server_version
    }

    /// The statistics of every server, in the order of [`Client::servers`].
    ///
    /// # Errors
    /// The first error of [`Client::server_stats`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn stats(&self) -> Result<Vec<Stats>> {
        let mut all = Vec::with_capacity(self.inner.pools.len());
        for index in 0..self.inner.pools.len() {
            all.push(self.server_stats(index).await?);
        }
        Ok(all)
    }

    /// The statistics of the server that owns `key`.
    ///
    /// # Errors
    /// As [`Client::server_stats`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn stats_for_key(&self, key: &str) -> Result<Stats> {
        self.server_stats(self.server_for(key)?).await
    }
}
