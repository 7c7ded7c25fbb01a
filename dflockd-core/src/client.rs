//! The client: configuration, connection pools and sharding.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::pool::ServerPool;
use crate::conn::{Answer, Call, Settings, Wire};
use crate::error::{Error, Result, parse_duration};
use crate::lease::LeasePolicy;
use crate::lock::{Lock, Semaphore};
use crate::proto::{
    DEFAULT_READ_TIMEOUT_S, Expect, MAX_AUTH_SECRET, MAX_REQUEST_LINE, Request,
    validate_secret_up_to,
};
use crate::shard::{Crc32, ShardStrategy, Strategy};
use crate::stats::Stats;
use crate::version::ServerVersion;

/// The auth token: shown as `<redacted>` everywhere.
#[derive(Clone)]
pub(crate) struct Secret(Arc<str>);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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

pub(crate) struct ClientInner {
    pub(crate) pools: Vec<Arc<ServerPool>>,
    shard: Strategy,
    pub(crate) settings: Arc<Settings>,
    pub(crate) acquire_timeout: Duration,
    pub(crate) lease: Option<Duration>,
    pub(crate) release_timeout: Duration,
    pub(crate) hot_keys: crate::hot::HotKeys,
    pub(crate) server_version: Option<ServerVersion>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        for pool in &self.pools {
            pool.client_dropped();
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.servers())
            .field("auth", &self.inner.settings.auth_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with every setting at its default.
    #[must_use]
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client configured from the environment; see [`ClientBuilder::from_env`].
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed variable or setting.
    pub fn from_env() -> Result<Client> {
        ClientBuilder::from_env()?.build()
    }

    /// A lock on `key` with the client's default acquire timeout and lease.
    ///
    /// Nothing is sent until [`Lock::acquire`], [`Lock::try_acquire`] or [`Lock::enqueue`].
    #[must_use]
    pub fn lock(&self, key: impl Into<String>) -> Lock {
        Lock::new(self.clone(), key.into())
    }

    /// A counting semaphore on `key` allowing `limit` holders at once, with the client's
    /// default acquire timeout and lease.
    ///
    /// Locks and semaphores share the server's key space: a key used with one limit cannot be
    /// used with another at the same time ([`Error::LimitMismatch`]).
    #[must_use]
    pub fn semaphore(&self, key: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore::new(self.clone(), key.into(), limit)
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
        let servers = self.inner.pools.len();
        let index = self.inner.shard.0.shard(key, servers);
        if index < servers {
            Ok(index)
        } else {
            Err(Error::Shard { index, servers })
        }
    }

    pub(crate) fn pool(&self, index: usize) -> &Arc<ServerPool> {
        &self.inner.pools[index]
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
        let deadline = Instant::now() + self.inner.settings.request_timeout;
        let (_, answer) = pool
            .call_shared(deadline, || Call {
                request: Request::Stats,
                wire: Wire::Encode,
                expect: Expect::Stats,
                grant: None,
                server_wait: None,
                cancel_closes: false,
                key: None,
                patience: None,
                park: None,
                forget: None,
            })
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
            .call_shared(deadline, || Call {
                request: Request::Ping,
                wire: Wire::Encode,
                expect: Expect::Ping,
                grant: None,
                server_wait: None,
                cancel_closes: false,
                key: None,
                patience: None,
                park: None,
                forget: None,
            })
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

    /// The release the client was told the servers run ([`ClientBuilder::server_version`]).
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

/// Configuration for a [`Client`]; every setting has a default.
///
/// ```
/// use std::time::Duration;
/// let client = dflockd_core::Client::builder()
///     .servers(["10.0.0.1:6388", "10.0.0.2:6388"])
///     .auth_token("shared-secret")
///     .connect_timeout(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert_eq!(client.servers(), ["10.0.0.1:6388", "10.0.0.2:6388"]);
/// ```
pub struct ClientBuilder {
    servers: Vec<String>,
    auth_token: Option<String>,
    #[cfg(feature = "tls")]
    tls: Option<crate::conn::tls::TlsOptions>,
    connect_timeout: Duration,
    request_timeout: Duration,
    release_timeout: Duration,
    idle_timeout: Duration,
    server_read_timeout: Duration,
    renew_ratio: f64,
    max_shared_connections: usize,
    max_connections: usize,
    acquire_timeout: Duration,
    lease: Option<Duration>,
    shard: Box<dyn ShardStrategy>,
    server_version: Option<ServerVersion>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientBuilder");
        d.field("servers", &self.servers).field(
            "auth_token",
            &self.auth_token.as_ref().map(|_| "<redacted>"),
        );
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls);
        d.field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("release_timeout", &self.release_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("server_read_timeout", &self.server_read_timeout)
            .field("renew_ratio", &self.renew_ratio)
            .field("max_shared_connections", &self.max_shared_connections)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lease", &self.lease)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            servers: vec![format!("127.0.0.1:{}", crate::proto::DEFAULT_PORT)],
            auth_token: None,
            #[cfg(feature = "tls")]
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            release_timeout: Duration::from_millis(1500),
            idle_timeout: Duration::from_secs(15),
            server_read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_S),
            renew_ratio: 1.0 / 3.0,
            max_shared_connections: 4,
            max_connections: 512,
            acquire_timeout: Duration::from_secs(10),
            lease: None,
            shard: Box::new(Crc32),
            server_version: None,
        }
    }
}

impl ClientBuilder {
    /// The servers, as `host:port` (the port defaults to 6388; IPv6 in brackets). Keys are
    /// spread over them with the shard strategy. Default is `127.0.0.1:6388`.
    #[must_use]
    pub fn servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// The shared secret sent as the first request of every connection: 1 to 256 bytes
    /// without control characters, or up to 64 KiB when the servers are declared to run
    /// v1.15 or later ([`server_version`](Self::server_version)). Default is none.
    #[must_use]
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Connect with TLS. Default is plain TCP.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: crate::conn::tls::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Limit for TCP connect, TLS handshake and auth together. Default is 5 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request that does not wait server-side may go unanswered before its
    /// connection is considered dead (and closed, reporting its locks lost). Blocking
    /// requests get their server-side wait on top. Default is 5 s.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a release waits for its answer before giving up with
    /// [`Error::RequestTimeout`] (checked by the connection's maintenance, so the wait can
    /// exceed it by up to a quarter). The lock stops being renewed either way, so an
    /// unanswered release ends at the latest when the lease runs out. Default is 1.5 s.
    #[must_use]
    pub fn release_timeout(mut self, timeout: Duration) -> Self {
        self.release_timeout = timeout;
        self
    }

    /// Idle connections (no lock held, nothing in flight) are closed after this long. Must be
    /// shorter than the server's read timeout. Default is 15 s.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The servers' idle read timeout (`--read-timeout`): leases are renewed at least every
    /// half of it, so that connections holding locks are never dropped for idleness.
    /// Default is 23 s, the server's default.
    #[must_use]
    pub fn server_read_timeout(mut self, timeout: Duration) -> Self {
        self.server_read_timeout = timeout;
        self
    }

    /// Renew a lease after this fraction of it has passed (jittered by ±10 %), in
    /// `0.05..=0.75`. Default is 1/3, which leaves two more attempts before expiry.
    #[must_use]
    pub fn renew_ratio(mut self, ratio: f64) -> Self {
        self.renew_ratio = ratio;
        self
    }

    /// Connections per server on which non-blocking requests (try-once acquires, releases,
    /// renewals, stats) are pipelined. Default is 4.
    #[must_use]
    pub fn max_shared_connections(mut self, n: usize) -> Self {
        self.max_shared_connections = n;
        self
    }

    /// Cap on connections per server, counting those parked in a server-side wait (each
    /// waiting acquire needs one). Default is 512.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Default acquire timeout of locks and semaphores made by this client (each can
    /// override it). Default is 10 s.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Default lease of locks and semaphores made by this client (each can override it);
    /// rounded up to whole seconds. Default is none: the server's default (33 s unless
    /// configured).
    #[must_use]
    pub fn lease_ttl(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The dflockd release the servers run. It decides whether grants carry a fencing token:
    /// from v2.1 on, a token's first 16 hex digits are a fence that grows with every grant
    /// ([`HeldLock::fence`](crate::HeldLock::fence) is `Some`); before, the whole token is
    /// random and nothing on the wire tells the two apart, so without this setting no fence
    /// is ever handed out. A grant whose token cannot carry a v2.1 fence while 2.1 or later is
    /// declared fails with [`Error::NotFenced`]. Default is none (unknown: no fences).
    #[must_use]
    pub fn server_version(mut self, version: ServerVersion) -> Self {
        self.server_version = Some(version);
        self
    }

    /// How keys are spread over the servers. Default is [`Crc32`], as every dflockd client.
    #[must_use]
    pub fn shard_strategy(mut self, strategy: impl ShardStrategy) -> Self {
        self.shard = Box::new(strategy);
        self
    }

    /// A builder configured from the environment. Every variable is optional:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `DFLOCKD_SERVERS` | [`servers`](Self::servers), comma-separated |
    /// | `DFLOCKD_AUTH_TOKEN` | [`auth_token`](Self::auth_token) |
    /// | `DFLOCKD_AUTH_TOKEN_FILE` | [`auth_token`](Self::auth_token), read from a file (trimmed) |
    /// | `DFLOCKD_TLS` | `1`/`true`: TLS with the system roots |
    /// | `DFLOCKD_TLS_CA_FILE` | TLS trusting this CA (PEM) |
    /// | `DFLOCKD_TLS_SERVER_NAME` | [`TlsOptions::server_name`](crate::TlsOptions::server_name) |
    /// | `DFLOCKD_TLS_CLIENT_CERT_FILE`, `DFLOCKD_TLS_CLIENT_KEY_FILE` | client certificate |
    /// | `DFLOCKD_CONNECT_TIMEOUT` | [`connect_timeout`](Self::connect_timeout) |
    /// | `DFLOCKD_REQUEST_TIMEOUT` | [`request_timeout`](Self::request_timeout) |
    /// | `DFLOCKD_RELEASE_TIMEOUT` | [`release_timeout`](Self::release_timeout) |
    /// | `DFLOCKD_IDLE_TIMEOUT` | [`idle_timeout`](Self::idle_timeout) |
    /// | `DFLOCKD_SERVER_READ_TIMEOUT` | [`server_read_timeout`](Self::server_read_timeout) |
    /// | `DFLOCKD_RENEW_RATIO` | [`renew_ratio`](Self::renew_ratio) |
    /// | `DFLOCKD_MAX_SHARED_CONNECTIONS` | [`max_shared_connections`](Self::max_shared_connections) |
    /// | `DFLOCKD_MAX_CONNECTIONS` | [`max_connections`](Self::max_connections) |
    /// | `DFLOCKD_ACQUIRE_TIMEOUT` | [`acquire_timeout`](Self::acquire_timeout) |
    /// | `DFLOCKD_LEASE_TTL` | [`lease_ttl`](Self::lease_ttl) |
    /// | `DFLOCKD_SERVER_VERSION` | [`server_version`](Self::server_version), e.g. `2.1.1` or `1.10` |
    ///
    /// Durations are `500ms`, `10s`, `2m` or a number of seconds. Empty values count as unset.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that cannot be parsed or read.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let duration = |name: &str| -> Result<Option<Duration>> {
            get(name)
                .map(|v| {
                    parse_duration(&v).ok_or_else(|| {
                        Error::Config(format!("{name}={v:?} is not a duration (e.g. 500ms, 10s)"))
                    })
                })
                .transpose()
        };
        let number = |name: &str| -> Result<Option<usize>> {
            get(name)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| Error::Config(format!("{name}={v:?} is not a number")))
                })
                .transpose()
        };
        let mut b = ClientBuilder::default();
        if let Some(servers) = get("DFLOCKD_SERVERS") {
            b = b.servers(
                servers
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        if let Some(token) = get("DFLOCKD_AUTH_TOKEN") {
            b = b.auth_token(token);
        } else if let Some(path) = get("DFLOCKD_AUTH_TOKEN_FILE") {
            let token = std::fs::read_to_string(&path).map_err(|e| {
                Error::Config(format!("DFLOCKD_AUTH_TOKEN_FILE: cannot read {path}: {e}"))
            })?;
            b = b.auth_token(token.trim());
        }
        #[cfg(feature = "tls")]
        {
            use crate::conn::tls::TlsOptions;
            let tls_on = get("DFLOCKD_TLS")
                .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
            let mut tls = match get("DFLOCKD_TLS_CA_FILE") {
                Some(path) => Some(TlsOptions::ca_file(path)?),
                None if tls_on == Some(true) => Some(TlsOptions::system_roots()),
                None => None,
            };
            if let Some(name) = get("DFLOCKD_TLS_SERVER_NAME") {
                tls = Some(
                    tls.unwrap_or_else(TlsOptions::system_roots)
                        .server_name(name),
                );
            }
            match (
                get("DFLOCKD_TLS_CLIENT_CERT_FILE"),
                get("DFLOCKD_TLS_CLIENT_KEY_FILE"),
            ) {
                (Some(cert), Some(key)) => {
                    tls = Some(
                        tls.unwrap_or_else(TlsOptions::system_roots)
                            .client_auth_files(cert, key)?,
                    );
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Config(
                        "DFLOCKD_TLS_CLIENT_CERT_FILE and DFLOCKD_TLS_CLIENT_KEY_FILE go together"
                            .into(),
                    ));
                }
            }
            if tls_on == Some(false) {
                tls = None;
            }
            b.tls = tls;
        }
        #[cfg(not(feature = "tls"))]
        if get("DFLOCKD_TLS_CA_FILE").is_some() || get("DFLOCKD_TLS").is_some() {
            return Err(Error::Config(
                "TLS is configured in the environment but the `tls` feature is off".into(),
            ));
        }
        if let Some(d) = duration("DFLOCKD_CONNECT_TIMEOUT")? {
            b = b.connect_timeout(d);
        }
        if let Some(d) = duration("DFLOCKD_REQUEST_TIMEOUT")? {
            b = b.request_timeout(d);
        }
        if let Some(d) = duration("DFLOCKD_RELEASE_TIMEOUT")? {
            b = b.release_timeout(d);
        }
        if let Some(d) = duration("DFLOCKD_IDLE_TIMEOUT")? {
            b = b.idle_timeout(d);
        }
        if let Some(d) = duration("DFLOCKD_SERVER_READ_TIMEOUT")? {
            b = b.server_read_timeout(d);
        }
        if let Some(d) = duration("DFLOCKD_ACQUIRE_TIMEOUT")? {
            b = b.acquire_timeout(d);
        }
        if let Some(d) = duration("DFLOCKD_LEASE_TTL")? {
            b = b.lease_ttl(d);
        }
        if let Some(v) = get("DFLOCKD_RENEW_RATIO") {
            let ratio = v
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("DFLOCKD_RENEW_RATIO={v:?} is not a number")))?;
            b = b.renew_ratio(ratio);
        }
        if let Some(n) = number("DFLOCKD_MAX_SHARED_CONNECTIONS")? {
            b = b.max_shared_connections(n);
        }
        if let Some(n) = number("DFLOCKD_MAX_CONNECTIONS")? {
            b = b.max_connections(n);
        }
        if let Some(v) = get("DFLOCKD_SERVER_VERSION") {
            let version = v
                .parse()
                .map_err(|e| Error::Config(format!("DFLOCKD_SERVER_VERSION: {e}")))?;
            b = b.server_version(version);
        }
        Ok(b)
    }

    /// Checks the settings and makes the client. No connection is opened yet.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or malformed server list, an auth token that cannot be
    /// sent, zero timeouts, an idle timeout not below the server read timeout, a renew ratio
    /// out of range, zero connection limits, or TLS material that cannot be used.
    pub fn build(self) -> Result<Client> {
        if self.servers.is_empty() {
            return Err(Error::Config("no servers configured".into()));
        }
        let mut addrs = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let (host, port) = crate::conn::connect::split_host_port(server)?;
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            addrs.push(Arc::<str>::from(addr));
        }
        let auth_token = match self.auth_token {
            Some(token) => {
                // v1.15 and later take an auth line of up to 64 KiB, older releases 256 bytes.
                let v1_15 = ServerVersion::new(1, 15, 0);
                let max = match self.server_version {
                    Some(version) if version >= v1_15 => MAX_AUTH_SECRET,
                    _ => MAX_REQUEST_LINE,
                };
                validate_secret_up_to(&token, max).map_err(|e| {
                    let hint = if max == MAX_REQUEST_LINE && token.len() > max {
                        " (servers of v1.15 and later take up to 64 KiB: declare the release with server_version or DFLOCKD_SERVER_VERSION)"
                    } else {
                        ""
                    };
                    Error::Config(format!("auth token: {e}{hint}"))
                })?;
                Some(Secret(token.into()))
            }
            None => None,
        };
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::Config(format!("{name} must be greater than zero")))
            } else {
                Ok(())
            }
        };
        positive("connect_timeout", self.connect_timeout)?;
        positive("request_timeout", self.request_timeout)?;
        positive("release_timeout", self.release_timeout)?;
        positive("idle_timeout", self.idle_timeout)?;
        positive("server_read_timeout", self.server_read_timeout)?;
        if self.idle_timeout >= self.server_read_timeout {
            return Err(Error::Config(format!(
                "idle_timeout ({:?}) must be shorter than server_read_timeout ({:?})",
                self.idle_timeout, self.server_read_timeout
            )));
        }
        if !(0.05..=0.75).contains(&self.renew_ratio) {
            return Err(Error::Config(format!(
                "renew_ratio must be within 0.05..=0.75 (got {})",
                self.renew_ratio
            )));
        }
        if self.max_shared_connections == 0 || self.max_connections == 0 {
            return Err(Error::Config("connection limits must be at least 1".into()));
        }
        if self.lease.is_some_and(|l| l.is_zero()) {
            return Err(Error::Config("lease_ttl must be greater than zero".into()));
        }
        #[cfg(feature = "tls")]
        let tls = self.tls.as_ref().map(|t| t.build()).transpose()?;
        let settings = Arc::new(Settings {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            tick: (self.request_timeout.min(self.release_timeout) / 4)
                .max(Duration::from_millis(10)),
            idle_timeout: self.idle_timeout,
            policy: LeasePolicy {
                renew_ratio: self.renew_ratio,
                max_renew_interval: self.server_read_timeout / 2,
            },
            auth_token,
            #[cfg(feature = "tls")]
            tls,
            max_shared_connections: self.max_shared_connections,
            max_connections: self.max_connections.max(self.max_shared_connections),
        });
        let pools = addrs
            .into_iter()
            .map(|addr| Arc::new(ServerPool::new(addr, settings.clone())))
            .collect();
        Ok(Client {
            inner: Arc::new(ClientInner {
                pools,
                shard: Strategy(self.shard),
                settings,
                acquire_timeout: self.acquire_timeout,
                lease: self.lease,
                release_timeout: self.release_timeout,
                hot_keys: crate::hot::HotKeys::default(),
                server_version: self.server_version,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<ClientBuilder> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ClientBuilder::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let client = Client::builder().build().unwrap();
        assert_eq!(client.servers(), ["127.0.0.1:6388"]);
        assert_eq!(client.open_connections(), 0);
    }

    #[test]
    fn environment_mirrors_the_builder() {
        let b = env(&[
            ("DFLOCKD_SERVERS", " a:1, b:2 ,"),
            ("DFLOCKD_AUTH_TOKEN", "s3cret"),
            ("DFLOCKD_CONNECT_TIMEOUT", "250ms"),
            ("DFLOCKD_ACQUIRE_TIMEOUT", "3"),
            ("DFLOCKD_LEASE_TTL", "1m"),
            ("DFLOCKD_RENEW_RATIO", "0.5"),
            ("DFLOCKD_MAX_SHARED_CONNECTIONS", "2"),
            ("DFLOCKD_IDLE_TIMEOUT", ""),
            ("DFLOCKD_SERVER_VERSION", "v2.1.1"),
        ])
        .unwrap();
        assert_eq!(b.server_version, Some(ServerVersion::new(2, 1, 1)));
        assert_eq!(b.servers, ["a:1", "b:2"]);
        assert_eq!(b.auth_token.as_deref(), Some("s3cret"));
        assert_eq!(b.connect_timeout, Duration::from_millis(250));
        assert_eq!(b.acquire_timeout, Duration::from_secs(3));
        assert_eq!(b.lease, Some(Duration::from_secs(60)));
        assert_eq!(b.renew_ratio, 0.5);
        assert_eq!(b.max_shared_connections, 2);
        assert_eq!(b.idle_timeout, Duration::from_secs(15));
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(env(&[("DFLOCKD_CONNECT_TIMEOUT", "soon")]).is_err());
        assert!(env(&[("DFLOCKD_MAX_CONNECTIONS", "-1")]).is_err());
        assert!(env(&[("DFLOCKD_AUTH_TOKEN_FILE", "/nonexistent/token")]).is_err());
        let err = env(&[("DFLOCKD_SERVER_VERSION", "latest")]).unwrap_err();
        assert!(err.to_string().contains("DFLOCKD_SERVER_VERSION"), "{err}");
    }

    #[test]
    fn build_validates() {
        let bad = [
            Client::builder().servers(Vec::<String>::new()),
            Client::builder().servers(["host:notaport"]),
            Client::builder().servers(["a b:1"]),
            Client::builder().auth_token("line\nbreak"),
            Client::builder().auth_token(""),
            Client::builder().connect_timeout(Duration::ZERO),
            Client::builder().idle_timeout(Duration::from_secs(30)),
            Client::builder().renew_ratio(0.9),
            Client::builder().renew_ratio(f64::NAN),
            Client::builder().max_shared_connections(0),
            Client::builder().lease_ttl(Duration::ZERO),
        ];
        for b in bad {
            let shown = format!("{b:?}");
            assert!(matches!(b.build(), Err(Error::Config(_))), "{shown}");
        }
    }

    #[test]
    fn long_auth_tokens_need_a_release_that_takes_them() {
        let long = "s".repeat(300);
        let err = Client::builder().auth_token(&long).build().unwrap_err();
        assert!(err.to_string().contains("v1.15"), "{err}");
        let old = Client::builder()
            .auth_token(&long)
            .server_version(ServerVersion::V1_10)
            .build();
        assert!(matches!(old, Err(Error::Config(_))));
        for version in [ServerVersion::new(1, 15, 0), ServerVersion::V2_1] {
            let ok = Client::builder()
                .auth_token("s".repeat(MAX_AUTH_SECRET))
                .server_version(version)
                .build();
            assert!(ok.is_ok(), "{version}");
        }
        let too_long = Client::builder()
            .auth_token("s".repeat(MAX_AUTH_SECRET + 1))
            .server_version(ServerVersion::V2_1)
            .build();
        assert!(matches!(too_long, Err(Error::Config(_))));
    }

    #[test]
    fn secrets_are_redacted() {
        let client = Client::builder().auth_token("hunter2").build().unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<redacted>");
    }

    #[test]
    fn shard_errors_instead_of_panicking() {
        let client = Client::builder()
            .servers(["a:1", "b:2"])
            .shard_strategy(|_: &str, n: usize| n + 3)
            .build()
            .unwrap();
        assert!(matches!(
            client.server_for("x"),
            Err(Error::Shard {
                index: 5,
                servers: 2
            })
        ));
        let client = Client::builder()
            .servers(["a:1", "b:2", "c:3"])
            .build()
            .unwrap();
        assert_eq!(client.server_for("user:42:profile").unwrap(), 0);
        assert_eq!(client.server_for("foo").unwrap(), 2);
    }
}
