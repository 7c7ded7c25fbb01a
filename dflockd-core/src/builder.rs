//! [`ClientBuilder`]: the settings of a client, from code or from the environment, checked
//! when the client is built.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::conn::Settings;
use crate::conn::credentials::{Auth, Credentials, Material, checked_secret};
use crate::conn::pool::ServerPool;
use crate::duration::parse_duration;
use crate::error::{Error, Result};
use crate::inner::ClientInner;
use crate::lease::LeasePolicy;
use crate::proto::{DEFAULT_READ_TIMEOUT_S, MAX_AUTH_SECRET, MAX_REQUEST_LINE};
use crate::shard::{Crc32, ShardStrategy, Strategy};
use crate::version::ServerVersion;

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
    /// Where `servers` came from, for the event logged when the client is built.
    servers_from: ServersFrom,
    auth: Option<AuthSource>,
    #[cfg(feature = "tls-base")]
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
    metrics: crate::metrics::ClientMetrics,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientBuilder");
        d.field("servers", &self.servers).field("auth", &self.auth);
        #[cfg(feature = "tls-base")]
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
            .field("server_version", &self.server_version);
        #[cfg(feature = "metrics")]
        d.field("metrics_key_label", &self.metrics.key_label.is_some());
        d.finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            servers: vec![format!("127.0.0.1:{}", crate::proto::DEFAULT_PORT)],
            servers_from: ServersFrom::Default,
            auth: None,
            #[cfg(feature = "tls-base")]
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            release_timeout: Duration::from_millis(1500),
            idle_timeout: Duration::from_secs(15),
            server_read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_S),
            renew_ratio: 1.0 / 3.0,
            max_shared_connections: 64,
            max_connections: 512,
            acquire_timeout: Duration::from_secs(10),
            lease: None,
            shard: Box::new(Crc32),
            server_version: None,
            metrics: Default::default(),
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
        self.servers_from = ServersFrom::Builder;
        self
    }

    /// The shared secret sent as the first request of every connection: 1 to 256 bytes
    /// without control characters, or up to 64 KiB when the servers are declared to run
    /// v1.15 or later ([`server_version`](Self::server_version)). Replaces
    /// [`auth_token_file`](Self::auth_token_file); [`Client::set_auth_token`] changes it while
    /// the client runs. Default is none.
    #[must_use]
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Some(AuthSource::Token(token.into()));
        self
    }

    /// Read the shared secret from this file (trimmed), when the client is built and again
    /// for every new connection, so that a rotated token (a Kubernetes secret, say) is used
    /// without a restart. Connections already open, and the locks held through them, are not
    /// disturbed. A read that fails later (the file being replaced, say) keeps the last good
    /// token and logs a warning. Replaces [`auth_token`](Self::auth_token). Default is none.
    #[must_use]
    pub fn auth_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = Some(AuthSource::File(path.into()));
        self
    }

    /// Connect with TLS. Default is plain TCP.
    #[cfg(feature = "tls-base")]
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
    /// requests get their server-side wait on top. The server answers a connection's
    /// requests in order, so a request sent behind others on the same connection counts
    /// from the answer before it, if that came later. A `stats` answer too long for one
    /// read gets this long again after each piece that arrives, up to 12 times this in all
    /// (a server that knows very many keys, on a slow link); while one too long to read at
    /// all is skipped, so does the request after it. Default is 5 s.
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
    /// renewals, stats) are pipelined. Default is 64.
    ///
    /// The pool adapts to load: a request goes on the connection its thread just saw answer
    /// one (within half a second of sending that one) if that is free, so that a task going
    /// on with its next request after an answer keeps using the connection it just used;
    /// else on the first connection with nothing in flight; when every one is busy, another
    /// is opened, up to this many; beyond that,
    /// requests are pipelined on the least busy. Under light load the same few connections
    /// carry everything and the others close after [`idle_timeout`](Self::idle_timeout).
    /// Locks stay on the connection that acquired them, so however many are held, they use
    /// no more connections than the most requests that were in flight at once, and at most
    /// this many (plus one per acquire that waited server-side): 10,000 locks acquired by 16
    /// tasks use 16 connections.
    ///
    /// The server answers a connection's requests in order, so with more requests in flight
    /// than connections, a stall on one connection (a thread on either side waiting for a
    /// core) holds every request on it: at 64 concurrent requests on 16 connections, p99 is
    /// about 1.6–2× that of a connection per request on a busy 2-core machine, for about
    /// 1.2× the throughput (`BENCHMARKS.md`). Lower this to bound the connections a burst
    /// can open (and that long-held locks acquired in it keep open) where that matters more
    /// than the tail.
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

    /// Adds a `key` label to the metrics of locks and semaphores (acquisitions, held,
    /// queued, lease losses, releases: see [`metrics`](crate::metrics)), with the value `f`
    /// returns for the lock's key; none where it returns `None`. Every distinct value is a
    /// time series of its own: return a small set of values, such as the key's prefix, never
    /// the key itself when keys are many. Called once per lock or semaphore handle.
    ///
    /// ```
    /// let client = dflockd_core::Client::builder()
    ///     // "tenant:42:invoice:7" -> "tenant"
    ///     .metrics_key_label(|key| Some(key.split(':').next()?.to_owned()))
    ///     .build()
    ///     .unwrap();
    /// # let _ = client;
    /// ```
    ///
    /// Default is none: the key is never a label.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    #[must_use]
    pub fn metrics_key_label<F>(mut self, f: F) -> Self
    where
        F: Fn(&str) -> Option<String> + Send + Sync + 'static,
    {
        self.metrics.key_label = Some(Arc::new(f));
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
    /// | `DFLOCKD_AUTH_TOKEN_FILE` | [`auth_token_file`](Self::auth_token_file): read for every new connection |
    /// | `DFLOCKD_TLS` | `1`: TLS with the system's roots; `webpki`: with Mozilla's, compiled in ([`TlsOptions::webpki_roots`](crate::TlsOptions::webpki_roots), feature `tls-webpki-roots`); `0`: no TLS whatever else is set |
    /// | `DFLOCKD_TLS_CA_FILE` | TLS trusting this CA (PEM); [`TlsOptions::ca_file`](crate::TlsOptions::ca_file) |
    /// | `DFLOCKD_TLS_PINNED_CERT_FILE` | TLS trusting exactly this certificate (PEM); [`TlsOptions::pinned_certificate`](crate::TlsOptions::pinned_certificate) |
    /// | `DFLOCKD_TLS_SERVER_NAME` | [`TlsOptions::server_name`](crate::TlsOptions::server_name) |
    /// | `DFLOCKD_TLS_CLIENT_CERT_FILE`, `DFLOCKD_TLS_CLIENT_KEY_FILE` | client certificate |
    /// | `DFLOCKD_CONNECT_TIMEOUT` | [`connect_timeout`](Self::connect_timeout) |
    /// | `DFLOCKD_REQUEST_TIMEOUT` | [`request_timeout`](Self::request_timeout) |
    /// | `DFLOCKD_RELEASE_TIMEOUT` | [`release_timeout`](Self::release_timeout) |
    /// | `DFLOCKD_IDLE_TIMEOUT` | [`idle_timeout`](Self::idle_timeout) |
    /// | `DFLOCKD_SERVER_READ_TIMEOUT` | [`server_read_timeout`](Self::server_read_timeout) |
    /// | `DFLOCKD_RENEW_RATIO` | [`renew_ratio`](Self::renew_ratio) |
    /// | `DFLOCKD_CLIENT_MAX_SHARED_CONNECTIONS` | [`max_shared_connections`](Self::max_shared_connections) |
    /// | `DFLOCKD_CLIENT_MAX_CONNECTIONS` | [`max_connections`](Self::max_connections) (`DFLOCKD_MAX_CONNECTIONS` is the server's own cap, and is not read) |
    /// | `DFLOCKD_ACQUIRE_TIMEOUT` | [`acquire_timeout`](Self::acquire_timeout) |
    /// | `DFLOCKD_LEASE_TTL` | [`lease_ttl`](Self::lease_ttl) |
    /// | `DFLOCKD_SERVER_VERSION` | [`server_version`](Self::server_version), e.g. `2.1.1` or `1.10` |
    ///
    /// Durations are a plain number of seconds (`10`, `1.5`), or numbers with units, summed:
    /// `500ms`, `1.5s`, `2m`, `1h`, `1m30s` (the units are `ms`, `s`, `m`, `h`, and the other
    /// names [humantime](https://docs.rs/humantime/latest/humantime/fn.parse_duration.html)
    /// knows, such as `min`, `sec`, `d`). The attribute macros' duration literals
    /// (`#[dflockd::exclusive(wait = "1m30s")]`) take the same grammar. Empty values count as
    /// unset.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that cannot be parsed or read.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Env(&|name: &str| get(name).filter(|v| !v.trim().is_empty()));
        let mut b = ClientBuilder::default();
        if let Some(servers) = env.get("DFLOCKD_SERVERS") {
            b = b.servers(
                servers
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            b.servers_from = ServersFrom::Env;
        } else {
            b.servers_from = ServersFrom::EnvUnset;
        }
        if let Some(token) = env.get("DFLOCKD_AUTH_TOKEN") {
            b = b.auth_token(token);
        } else if let Some(path) = env.get("DFLOCKD_AUTH_TOKEN_FILE") {
            // Read here too, so that a missing file fails where the variable is read.
            std::fs::metadata(&path).map_err(|e| {
                Error::Config(format!("DFLOCKD_AUTH_TOKEN_FILE: cannot read {path}: {e}"))
            })?;
            b = b.auth_token_file(path);
        }
        #[cfg(feature = "tls-base")]
        {
            b.tls = env.tls()?;
        }
        #[cfg(not(feature = "tls-base"))]
        if [
            "DFLOCKD_TLS",
            "DFLOCKD_TLS_CA_FILE",
            "DFLOCKD_TLS_PINNED_CERT_FILE",
        ]
        .iter()
        .any(|name| env.get(name).is_some())
        {
            return Err(Error::Config(
                "TLS is configured in the environment but the `tls` feature is off".into(),
            ));
        }
        let durations: [(&str, Setter<Duration>); 7] = [
            ("DFLOCKD_CONNECT_TIMEOUT", Self::connect_timeout),
            ("DFLOCKD_REQUEST_TIMEOUT", Self::request_timeout),
            ("DFLOCKD_RELEASE_TIMEOUT", Self::release_timeout),
            ("DFLOCKD_IDLE_TIMEOUT", Self::idle_timeout),
            ("DFLOCKD_SERVER_READ_TIMEOUT", Self::server_read_timeout),
            ("DFLOCKD_ACQUIRE_TIMEOUT", Self::acquire_timeout),
            ("DFLOCKD_LEASE_TTL", Self::lease_ttl),
        ];
        for (name, set) in durations {
            if let Some(d) = env.duration(name)? {
                b = set(b, d);
            }
        }
        if let Some(ratio) = env.parsed::<f64>("DFLOCKD_RENEW_RATIO", "a number")? {
            b = b.renew_ratio(ratio);
        }
        // `DFLOCKD_MAX_CONNECTIONS` is the server's cap on its connections: the client's
        // names say `CLIENT`, so one environment can hold both.
        if let Some(n) = env.parsed("DFLOCKD_CLIENT_MAX_SHARED_CONNECTIONS", "a number")? {
            b = b.max_shared_connections(n);
        }
        if let Some(n) = env.parsed("DFLOCKD_CLIENT_MAX_CONNECTIONS", "a number")? {
            b = b.max_connections(n);
        }
        if let Some(v) = env.get("DFLOCKD_SERVER_VERSION") {
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
        let addrs = self.addresses()?;
        let max_secret = self.max_secret();
        let auth = match &self.auth {
            None => Auth::None,
            Some(AuthSource::Token(token)) => Auth::Token(checked_secret(token, max_secret)?),
            Some(AuthSource::File(path)) => Auth::from_file(path, max_secret)?,
        };
        self.check_timing()?;
        if self.max_shared_connections == 0 || self.max_connections == 0 {
            return Err(Error::Config("connection limits must be at least 1".into()));
        }
        #[cfg(feature = "tls-base")]
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
            credentials: Credentials::new(
                Material {
                    auth,
                    #[cfg(feature = "tls-base")]
                    tls,
                },
                max_secret,
            ),
            max_shared_connections: self.max_shared_connections,
            max_connections: self.max_connections.max(self.max_shared_connections),
        });
        self.servers_from.log(&addrs);
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
                metrics: self.metrics,
            }),
        })
    }

    /// The servers' addresses, `host:port` (IPv6 in brackets), checked.
    fn addresses(&self) -> Result<Vec<Arc<str>>> {
        if self.servers.is_empty() {
            return Err(Error::Config("no servers configured".into()));
        }
        self.servers
            .iter()
            .map(|server| {
                let (host, port) = crate::conn::connect::split_host_port(server)?;
                Ok(if host.contains(':') {
                    format!("[{host}]:{port}").into()
                } else {
                    format!("{host}:{port}").into()
                })
            })
            .collect()
    }

    /// The longest auth token the declared release takes: v1.15 and later take an auth line
    /// of up to 64 KiB, older releases 256 bytes.
    fn max_secret(&self) -> usize {
        match self.server_version {
            Some(version) if version >= ServerVersion::new(1, 15, 0) => MAX_AUTH_SECRET,
            _ => MAX_REQUEST_LINE,
        }
    }

    /// Timeouts positive, the idle timeout below the server's read timeout, the renew ratio
    /// in range, a lease (if any) positive.
    fn check_timing(&self) -> Result<()> {
        let timeouts = [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("release_timeout", self.release_timeout),
            ("idle_timeout", self.idle_timeout),
            ("server_read_timeout", self.server_read_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, d)| d.is_zero()) {
            return Err(Error::Config(format!("{name} must be greater than zero")));
        }
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
        if self.lease.is_some_and(|l| l.is_zero()) {
            return Err(Error::Config("lease_ttl must be greater than zero".into()));
        }
        Ok(())
    }
}

/// Where the auth token comes from (see [`ClientBuilder::auth_token`] and
/// [`ClientBuilder::auth_token_file`]).
enum AuthSource {
    Token(String),
    File(PathBuf),
}

impl fmt::Debug for AuthSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthSource::Token(_) => f.write_str("<redacted>"),
            AuthSource::File(path) => write!(f, "token file {}", path.display()),
        }
    }
}

/// A builder setter, as in `ClientBuilder::connect_timeout`.
type Setter<T> = fn(ClientBuilder, T) -> ClientBuilder;

/// The environment, as a lookup that treats empty values as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>> {
        self.get(name)
            .map(|v| {
                parse_duration(&v).map_err(|reason| Error::Config(format!("{name}: {reason}")))
            })
            .transpose()
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, what: &str) -> Result<Option<T>> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| Error::Config(format!("{name}={v:?} is not {what}")))
            })
            .transpose()
    }

    /// The TLS settings: `DFLOCKD_TLS`, `DFLOCKD_TLS_CA_FILE` or
    /// `DFLOCKD_TLS_PINNED_CERT_FILE`, `DFLOCKD_TLS_SERVER_NAME`,
    /// `DFLOCKD_TLS_CLIENT_CERT_FILE` with `DFLOCKD_TLS_CLIENT_KEY_FILE`.
    #[cfg(feature = "tls-base")]
    fn tls(&self) -> Result<Option<crate::conn::tls::TlsOptions>> {
        use crate::conn::tls::TlsOptions;
        let tls_var = self.get("DFLOCKD_TLS");
        let tls_on: Option<fn() -> TlsOptions> = match tls_var
            .as_deref()
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => None,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "system") => {
                Some(TlsOptions::system_roots)
            }
            #[cfg(feature = "tls-webpki-roots")]
            Some(v) if v == "webpki" => Some(TlsOptions::webpki_roots),
            #[cfg(not(feature = "tls-webpki-roots"))]
            Some(v) if v == "webpki" => {
                return Err(Error::Config(
                    "DFLOCKD_TLS=webpki needs the feature tls-webpki-roots".into(),
                ));
            }
            Some(v) if matches!(v.as_str(), "0" | "false" | "no") => None,
            Some(_) => {
                return Err(Error::Config(format!(
                    "DFLOCKD_TLS={:?} is not 1 (the system's roots), webpki (Mozilla's, compiled in) or 0",
                    tls_var.unwrap_or_default()
                )));
            }
        };
        let tls_off = tls_var.is_some() && tls_on.is_none();
        let mut tls = match (
            self.get("DFLOCKD_TLS_CA_FILE"),
            self.get("DFLOCKD_TLS_PINNED_CERT_FILE"),
        ) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "set DFLOCKD_TLS_CA_FILE or DFLOCKD_TLS_PINNED_CERT_FILE, not both".into(),
                ));
            }
            (Some(path), None) => Some(TlsOptions::ca_file(path)?),
            (None, Some(path)) => Some(TlsOptions::pinned_certificate(path)?),
            (None, None) => tls_on.map(|roots| roots()),
        };
        if let Some(name) = self.get("DFLOCKD_TLS_SERVER_NAME") {
            tls = Some(
                tls.unwrap_or_else(TlsOptions::system_roots)
                    .server_name(name),
            );
        }
        match (
            self.get("DFLOCKD_TLS_CLIENT_CERT_FILE"),
            self.get("DFLOCKD_TLS_CLIENT_KEY_FILE"),
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
        Ok(if tls_off { None } else { tls })
    }
}

/// Where the server list of a client came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServersFrom {
    /// Never set: the default address.
    Default,
    /// [`ClientBuilder::servers`].
    Builder,
    /// `DFLOCKD_SERVERS`.
    Env,
    /// Read from the environment, where `DFLOCKD_SERVERS` is not set: the default address.
    EnvUnset,
}

impl ServersFrom {
    /// The event that names the servers a new client uses and where they came from; a
    /// warning when the environment did not name them (a missing variable in a deployment
    /// would otherwise show only as connection errors to 127.0.0.1).
    fn log(self, addrs: &[Arc<str>]) {
        let servers = addrs.join(",");
        match self {
            ServersFrom::EnvUnset => tracing::warn!(
                %servers,
                source = "default",
                "DFLOCKD_SERVERS is not set: the client uses the default server address"
            ),
            ServersFrom::Default => {
                tracing::info!(%servers, source = "default", "dflockd client built");
            }
            ServersFrom::Builder => {
                tracing::info!(%servers, source = "builder", "dflockd client built");
            }
            ServersFrom::Env => {
                tracing::info!(%servers, source = "DFLOCKD_SERVERS", "dflockd client built");
            }
        }
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
            ("DFLOCKD_CLIENT_MAX_SHARED_CONNECTIONS", "2"),
            ("DFLOCKD_IDLE_TIMEOUT", ""),
            ("DFLOCKD_SERVER_VERSION", "v2.1.1"),
        ])
        .unwrap();
        assert_eq!(b.server_version, Some(ServerVersion::new(2, 1, 1)));
        assert_eq!(b.servers, ["a:1", "b:2"]);
        assert!(matches!(&b.auth, Some(AuthSource::Token(t)) if t == "s3cret"));
        assert_eq!(b.connect_timeout, Duration::from_millis(250));
        assert_eq!(b.acquire_timeout, Duration::from_secs(3));
        assert_eq!(b.lease, Some(Duration::from_secs(60)));
        assert_eq!(b.renew_ratio, 0.5);
        assert_eq!(b.max_shared_connections, 2);
        assert_eq!(b.idle_timeout, Duration::from_secs(15));
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        let err = env(&[("DFLOCKD_CONNECT_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: DFLOCKD_CONNECT_TIMEOUT: invalid duration \"soon\": expected \
             number at 0; e.g. \"10\" (seconds), \"1.5s\", \"500ms\", \"1m30s\""
        );
        // The grammar of `duration.rs`: sums and fractions too.
        let b = env(&[
            ("DFLOCKD_RELEASE_TIMEOUT", "1m30s"),
            ("DFLOCKD_REQUEST_TIMEOUT", "1.5s"),
        ])
        .unwrap();
        assert_eq!(b.release_timeout, Duration::from_secs(90));
        assert_eq!(b.request_timeout, Duration::from_millis(1500));
        assert!(env(&[("DFLOCKD_CLIENT_MAX_CONNECTIONS", "-1")]).is_err());
        assert!(env(&[("DFLOCKD_AUTH_TOKEN_FILE", "/nonexistent/token")]).is_err());
        let err = env(&[("DFLOCKD_SERVER_VERSION", "latest")]).unwrap_err();
        assert!(err.to_string().contains("DFLOCKD_SERVER_VERSION"), "{err}");
    }

    #[test]
    fn the_servers_max_connections_is_not_the_clients() {
        let b = env(&[("DFLOCKD_MAX_CONNECTIONS", "10")]).unwrap();
        assert_eq!(b.max_connections, ClientBuilder::default().max_connections);
        let b = env(&[("DFLOCKD_CLIENT_MAX_CONNECTIONS", "10")]).unwrap();
        assert_eq!(b.max_connections, 10);
    }

    #[test]
    fn where_the_servers_came_from() {
        assert_eq!(env(&[]).unwrap().servers_from, ServersFrom::EnvUnset);
        let b = env(&[("DFLOCKD_SERVERS", "a:1")]).unwrap();
        assert_eq!(b.servers_from, ServersFrom::Env);
        assert_eq!(b.servers(["b:2"]).servers_from, ServersFrom::Builder);
        assert_eq!(ClientBuilder::default().servers_from, ServersFrom::Default);
    }

    #[cfg(feature = "tls-base")]
    #[test]
    fn tls_from_the_environment() {
        let dir = std::env::temp_dir().join(format!("dflockd-env-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = dir.join("cert.pem");
        std::fs::write(&pem, dflockd_testkit::tls::TestCa::new().cert_pem()).unwrap();
        let pem = pem.to_str().unwrap();
        let shown = |vars: &[(&str, &str)]| format!("{:?}", env(vars).unwrap().tls);
        assert!(shown(&[("DFLOCKD_TLS_CA_FILE", pem)]).contains("1 custom CA certificate(s)"));
        assert!(
            shown(&[("DFLOCKD_TLS_PINNED_CERT_FILE", pem)]).contains("1 pinned certificate(s)")
        );
        assert!(shown(&[("DFLOCKD_TLS", "1")]).contains("system"));
        assert!(shown(&[("DFLOCKD_TLS", "yes")]).contains("system"));
        assert_eq!(shown(&[]), "None");
        assert_eq!(
            shown(&[("DFLOCKD_TLS", "0"), ("DFLOCKD_TLS_CA_FILE", pem)]),
            "None"
        );
        let webpki = env(&[("DFLOCKD_TLS", "webpki")]);
        if cfg!(feature = "tls-webpki-roots") {
            assert!(format!("{:?}", webpki.unwrap().tls).contains("webpki-roots"));
        } else {
            let err = webpki.unwrap_err();
            assert!(err.to_string().contains("tls-webpki-roots"), "{err}");
        }
        let err = env(&[("DFLOCKD_TLS", "on")]).unwrap_err();
        assert!(err.to_string().contains("is not 1"), "{err}");
        let both = env(&[
            ("DFLOCKD_TLS_CA_FILE", pem),
            ("DFLOCKD_TLS_PINNED_CERT_FILE", pem),
        ])
        .unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let missing = env(&[("DFLOCKD_TLS_PINNED_CERT_FILE", "/nonexistent/cert.pem")]);
        assert!(matches!(missing, Err(Error::Config(_))));
        std::fs::remove_dir_all(&dir).unwrap();
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
        assert_eq!(
            format!("{:?}", crate::conn::credentials::Secret::new("hunter2")),
            "<redacted>"
        );
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
