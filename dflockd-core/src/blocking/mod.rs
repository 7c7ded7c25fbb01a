//! The blocking client (feature `blocking`): the async client driven by a private runtime, for
//! plain threads.
//!
//! Every capability of the async client is here: locks and semaphores with background
//! renewal, try-once, two-phase enqueue/wait, typed errors, auth, TLS, sharding, stats, fences,
//! and lease loss ([`HeldLock::is_held`](crate::HeldLock::is_held), [`Guard::wait_lost`]).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = dflockd_testkit::TestServer::builder().start_blocking()?;
//! use std::time::Duration;
//!
//! let client = dflockd_core::blocking::Client::builder()
//!     .servers([server.addr().to_string()])
//!     .build()?;
//! let guard = client
//!     .lock("nightly-report")
//!     .acquire_timeout(Duration::from_secs(10))
//!     .lease_ttl(Duration::from_secs(20))
//!     .acquire()?;
//! // renewed in the background while `guard` lives
//! println!("{} fence {:?}", guard.key(), guard.fence());
//! guard.release()?;
//! # Ok(()) }
//! ```
//!
//! # Threads and runtimes
//!
//! No runtime is needed by the caller. The client owns a small tokio runtime (one worker
//! thread, shared by its clones and guards) that runs connections and renewals; each call
//! hands its work to that runtime and blocks the calling thread until it is done.
//!
//! Calling from inside an async runtime works too (it never panics): the call blocks that
//! runtime's thread for its duration, as any blocking call would, while the client's own
//! runtime does the work. Prefer the async client there. The runtime is shut down without
//! blocking when the last client clone and guard are dropped, whatever the context.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::stats::Stats;

mod guard;
mod lock;

pub use guard::Guard;
pub use lock::{CancelFlag, Enqueued, Lock, Queued, Semaphore};

/// Owns the runtime; shuts it down without blocking when the last user goes away.
pub(crate) struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `future` on the client's runtime and blocks until it completes.
pub(crate) fn run<T, F>(rt: &Arc<Rt>, future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.handle().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv()
        .unwrap_or(Err(Error::Blocking("the client's runtime stopped")))
}

/// Configuration for a blocking [`Client`]: the same settings as
/// [`crate::ClientBuilder`], which it wraps.
#[derive(Debug, Default)]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

macro_rules! forward_setters {
    ($($(#[$meta:meta])* $name:ident($ty:ty);)*) => {
        $(
            $(#[$meta])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.inner = self.inner.$name(value);
                self
            }
        )*
    };
}

impl ClientBuilder {
    /// The servers, as `host:port`. See [`crate::ClientBuilder::servers`].
    #[must_use]
    pub fn servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inner = self.inner.servers(servers);
        self
    }

    /// The shared secret. See [`crate::ClientBuilder::auth_token`].
    #[must_use]
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.inner = self.inner.auth_token(token);
        self
    }

    /// The shared secret, read from a file for every new connection. See
    /// [`crate::ClientBuilder::auth_token_file`].
    #[must_use]
    pub fn auth_token_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.inner = self.inner.auth_token_file(path);
        self
    }

    /// How keys are spread over servers. See [`crate::ClientBuilder::shard_strategy`].
    #[must_use]
    pub fn shard_strategy(mut self, strategy: impl crate::ShardStrategy) -> Self {
        self.inner = self.inner.shard_strategy(strategy);
        self
    }

    forward_setters! {
        /// TLS. See [`crate::ClientBuilder::tls`].
        #[cfg(feature = "tls-base")]
        tls(crate::TlsOptions);
        /// See [`crate::ClientBuilder::connect_timeout`]. Default is 5 s.
        connect_timeout(Duration);
        /// See [`crate::ClientBuilder::request_timeout`]. Default is 5 s.
        request_timeout(Duration);
        /// See [`crate::ClientBuilder::release_timeout`]. Default is 1.5 s.
        release_timeout(Duration);
        /// See [`crate::ClientBuilder::idle_timeout`]. Default is 15 s.
        idle_timeout(Duration);
        /// See [`crate::ClientBuilder::server_read_timeout`]. Default is 23 s.
        server_read_timeout(Duration);
        /// See [`crate::ClientBuilder::renew_ratio`]. Default is 1/3.
        renew_ratio(f64);
        /// See [`crate::ClientBuilder::max_shared_connections`]. Default is 64.
        max_shared_connections(usize);
        /// See [`crate::ClientBuilder::max_connections`]. Default is 512.
        max_connections(usize);
        /// See [`crate::ClientBuilder::acquire_timeout`]. Default is 10 s.
        acquire_timeout(Duration);
        /// See [`crate::ClientBuilder::lease_ttl`]. Default is the server's.
        lease_ttl(Duration);
        /// See [`crate::ClientBuilder::server_version`]. Default is none (no fences).
        server_version(crate::ServerVersion);
    }

    /// A builder configured from the environment; see [`crate::ClientBuilder::from_env`].
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed variable.
    pub fn from_env() -> Result<Self> {
        Ok(ClientBuilder {
            inner: crate::ClientBuilder::from_env()?,
        })
    }

    /// Checks the settings, starts the client's runtime and makes the client.
    ///
    /// # Errors
    /// As [`crate::ClientBuilder::build`]; [`Error::Blocking`] if the runtime cannot start.
    pub fn build(self) -> Result<Client> {
        let inner = self.inner.build()?;
        Client::wrap(inner)
    }

    /// Builds the client and connects to every server, failing when one cannot be used. See
    /// [`crate::ClientBuilder::connect`].
    ///
    /// # Errors
    /// As [`crate::ClientBuilder::connect`].
    pub fn connect(self) -> Result<Client> {
        let client = self.build()?;
        client.check().into_result()?;
        Ok(client)
    }
}

/// A blocking dflockd client. Cheap to clone; clones share connections and the runtime.
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    rt: Arc<Rt>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Client")
            .field("servers", &self.inner.servers())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with every setting at its default.
    #[must_use]
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from the environment; see [`crate::ClientBuilder::from_env`].
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed variable or setting.
    pub fn from_env() -> Result<Client> {
        ClientBuilder::from_env()?.build()
    }

    /// Wraps an async client (for example one shared with async code). The blocking client
    /// runs its own runtime for the calls it makes.
    ///
    /// # Errors
    /// [`Error::Blocking`] if the runtime cannot start.
    pub fn wrap(inner: crate::Client) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dflockd-blocking")
            .enable_all()
            .build()
            .map_err(|_| Error::Blocking("cannot start the client's runtime"))?;
        Ok(Client {
            inner,
            rt: Arc::new(Rt(Some(rt))),
        })
    }

    /// The async client behind this one.
    #[must_use]
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// A lock on `key`. See [`crate::Client::lock`].
    #[must_use]
    pub fn lock(&self, key: impl Into<String>) -> Lock {
        Lock::new(self.inner.lock(key), self.rt.clone())
    }

    /// A semaphore on `key` with `limit` holders. See [`crate::Client::semaphore`].
    #[must_use]
    pub fn semaphore(&self, key: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore::new(self.inner.semaphore(key, limit), self.rt.clone())
    }

    /// Authenticate new connections with `token` from now on. See
    /// [`crate::Client::set_auth_token`].
    ///
    /// # Errors
    /// [`Error::Config`] for a token the servers would not take.
    pub fn set_auth_token(&self, token: impl AsRef<str>) -> Result<()> {
        self.inner.set_auth_token(token)
    }

    /// Connect with these TLS settings from now on. See [`crate::Client::reload_tls`].
    ///
    /// # Errors
    /// [`Error::Config`] when the options cannot be used.
    #[cfg(feature = "tls-base")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls-base")))]
    pub fn reload_tls(&self, tls: crate::TlsOptions) -> Result<()> {
        self.inner.reload_tls(tls)
    }

    /// The configured servers. See [`crate::Client::servers`].
    #[must_use]
    pub fn servers(&self) -> Vec<&str> {
        self.inner.servers()
    }

    /// The index of the server that owns `key`. See [`crate::Client::server_for`].
    ///
    /// # Errors
    /// [`Error::Shard`] for an out-of-range custom strategy.
    pub fn server_for(&self, key: &str) -> Result<usize> {
        self.inner.server_for(key)
    }

    /// Checks that every server answers (a readiness probe). See [`crate::Client::ping`].
    ///
    /// # Errors
    /// As [`crate::Client::ping`].
    pub fn ping(&self) -> Result<Duration> {
        let client = self.inner.clone();
        run(&self.rt, async move { client.ping().await })
    }

    /// Asks every server at once whether it answers. See [`crate::Client::check`].
    #[must_use]
    pub fn check(&self) -> crate::Health {
        let client = self.inner.clone();
        run(&self.rt, async move { Ok(client.check().await) }).unwrap_or_else(|_| {
            crate::Health::unanswered(&self.inner.servers(), || {
                Error::Blocking("the client's runtime stopped")
            })
        })
    }

    /// The connections of each server's pool. See [`crate::Client::status`].
    #[must_use]
    pub fn status(&self) -> Vec<crate::PoolStatus> {
        self.inner.status()
    }

    /// The release the client was told the servers run. See
    /// [`crate::Client::server_version`].
    #[must_use]
    pub fn server_version(&self) -> Option<crate::ServerVersion> {
        self.inner.server_version()
    }

    /// Statistics of every server. See [`crate::Client::stats`].
    ///
    /// # Errors
    /// As [`crate::Client::stats`].
    pub fn stats(&self) -> Result<Vec<Stats>> {
        let client = self.inner.clone();
        run(&self.rt, async move { client.stats().await })
    }

    /// Statistics of server `index`. See [`crate::Client::server_stats`].
    ///
    /// # Errors
    /// As [`crate::Client::server_stats`].
    pub fn server_stats(&self, index: usize) -> Result<Stats> {
        let client = self.inner.clone();
        run(&self.rt, async move { client.server_stats(index).await })
    }

    /// Statistics of the server owning `key`. See [`crate::Client::stats_for_key`].
    ///
    /// # Errors
    /// As [`crate::Client::server_stats`].
    pub fn stats_for_key(&self, key: &str) -> Result<Stats> {
        let client = self.inner.clone();
        let key = key.to_owned();
        run(&self.rt, async move { client.stats_for_key(&key).await })
    }
}
