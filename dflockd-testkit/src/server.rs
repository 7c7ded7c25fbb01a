//! [`TestServer`] and its builder: a server on its own runtime thread.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::fence::FenceCounter;
use crate::instance::{self, Command};
use crate::shared::{Control, Shared};
use crate::state::RawStats;
use crate::state::Table;
use crate::stats::Stats;
use crate::tls::TlsIdentity;
use crate::{Error, ServerVersion};

/// How long a blocking control call (`kill`, drop) waits for the server's runtime.
const CONTROL_WAIT: Duration = Duration::from_secs(10);

/// Configures and starts a [`TestServer`]. Made by [`TestServer::builder`].
///
/// Every option of the real server has a setter; sub-second durations are accepted (the wire
/// reports leases in whole seconds, truncated, as the real server does).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TestServerBuilder {
    cfg: Config,
}

impl TestServerBuilder {
    /// The dflockd release whose behaviour the server reproduces (`--server-version`, an
    /// extension of the test server). Default is the version named by
    /// [`SERVER_VERSION_ENV`](crate::SERVER_VERSION_ENV) when it is set, else
    /// [`ServerVersion::NEWEST`]; see the [crate documentation](crate#releases) for what
    /// differs.
    pub fn version(mut self, version: ServerVersion) -> Self {
        self.cfg.version = Some(version);
        self
    }

    /// The lease applied when a request names none (`--default-lease-ttl`).
    /// Default is 33 s.
    pub fn default_lease(mut self, lease: Duration) -> Self {
        self.cfg.default_lease = lease;
        self
    }

    /// How often expired leases are collected (`--lease-sweep-interval`). Default is 1 s.
    pub fn lease_sweep_interval(mut self, every: Duration) -> Self {
        self.cfg.lease_sweep_interval = every;
        self
    }

    /// How often idle keys are collected (`--gc-interval`). Default is 5 s.
    pub fn gc_interval(mut self, every: Duration) -> Self {
        self.cfg.gc_interval = every;
        self
    }

    /// A key with no holder and no waiter is collected once idle for strictly longer than this
    /// (`--gc-max-idle`; zero is accepted by version 2.1 only). Default is 60 s.
    pub fn gc_max_idle(mut self, idle: Duration) -> Self {
        self.cfg.gc_max_idle = idle;
        self
    }

    /// The most distinct keys (locks and semaphores together, idle ones included) the server
    /// keeps (`--max-locks`). Default is 1024.
    pub fn max_locks(mut self, max: usize) -> Self {
        self.cfg.max_locks = max;
        self
    }

    /// The most open connections; further sockets are closed at once without a byte
    /// (`--max-connections`). Default is 0 (no cap).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.cfg.max_connections = max;
        self
    }

    /// The most open connections from one IP address; further sockets from it are closed at
    /// once without a byte (`--max-connections-per-ip`, version 2.1 only: with 1.10 a value
    /// above 0 is a configuration error). Default is 0 (no cap).
    pub fn max_connections_per_ip(mut self, max: usize) -> Self {
        self.cfg.max_connections_per_ip = max;
        self
    }

    /// The most queued waiters per key (`--max-waiters`). Default is 0 (no cap).
    pub fn max_waiters(mut self, max: usize) -> Self {
        self.cfg.max_waiters = max;
        self
    }

    /// A connection that sends nothing for this long (per request line) gets `error` and is
    /// closed (`--read-timeout`). Default is 23 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.read_timeout = timeout;
        self
    }

    /// An answer that cannot be written within this closes the connection
    /// (`--write-timeout`). Default is 5 s; zero disables it.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.write_timeout = timeout;
        self
    }

    /// How long [`TestServer::shutdown`] lets connections finish before closing them
    /// (`--shutdown-timeout`). Default is 30 s; zero waits forever.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.shutdown_timeout = timeout;
        self
    }

    /// Serves TLS with this certificate chain and key (`--tls-cert`, `--tls-key`).
    /// Default is plain TCP. See [`TestCa`](crate::tls::TestCa) to make one.
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.cfg.tls = Some(identity);
        self
    }

    /// Requires every client to present a certificate issued by this CA (PEM) — mutual TLS,
    /// an extension of the test server (the real v1.10 server has no such option). Needs
    /// [`tls`](Self::tls). Default is no client certificate.
    pub fn tls_client_ca(mut self, ca_pem: impl Into<String>) -> Self {
        self.cfg.tls_client_ca = Some(ca_pem.into());
        self
    }

    /// Requires `auth` with this secret as the first request of every connection
    /// (`--auth-token`). Default is no authentication.
    pub fn auth_token(mut self, secret: impl Into<String>) -> Self {
        self.cfg.auth_token = Some(secret.into());
        self
    }

    /// Whether a closed connection's locks are released at once
    /// (`--auto-release-on-disconnect`). When off, granted locks stay until their lease ends;
    /// version 2.1 drops the connection's queued `e` waits and two-phase state anyway, version
    /// 1.10 keeps them too. Default is `true`.
    pub fn auto_release_on_disconnect(mut self, on: bool) -> Self {
        self.cfg.auto_release_on_disconnect = on;
        self
    }

    /// Keeps the fence counter in this file, so that fences keep growing across restarts even
    /// when the clock goes back (`--fence-state-file`, version 2.1 only). The file is the real
    /// server's journal (two checksummed 32-byte records); it is created when missing, and a
    /// file that is not a journal is an [`Error::FenceState`]. Default is none: each start
    /// seeds the counter from the clock.
    pub fn fence_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.fence_state_file = Some(path.into());
        self
    }

    /// Listens on `127.0.0.1:port` (`--port`). Default is port 0 (a free port, see
    /// [`TestServer::addr`]).
    pub fn port(mut self, port: u16) -> Self {
        self.cfg.addr.set_port(port);
        self
    }

    /// Listens on this address (`--host` and `--port`). Default is `127.0.0.1:0`.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.cfg.addr = addr;
        self
    }

    /// Worker threads of the server's own runtime. Default is 2.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.cfg.worker_threads = threads;
        self
    }

    /// Lock-table shards (rounded up to a power of two); each shard has its own mutex.
    /// Default is 16.
    pub fn shards(mut self, shards: usize) -> Self {
        self.cfg.shards = shards;
        self
    }

    /// Starts the server on its own runtime thread and returns once it listens.
    ///
    /// Works from any runtime (including one with a paused clock) and never blocks the
    /// caller for more than the time to bind a socket and spawn a thread.
    ///
    /// # Errors
    /// [`Error::Version`] when no version was set and
    /// [`SERVER_VERSION_ENV`](crate::SERVER_VERSION_ENV) names no known one,
    /// [`Error::Config`] for invalid settings (also settings the version does not have),
    /// [`Error::Tls`] for an unusable certificate or key, [`Error::FenceState`] for an unusable
    /// fence state file, [`Error::Bind`] when the address is taken, [`Error::Runtime`] when
    /// the runtime cannot start.
    ///
    /// # Cancel safety
    /// Nothing is left running if the future is dropped before it completes (it completes on
    /// its first poll).
    pub async fn start(self) -> Result<TestServer, Error> {
        self.start_blocking()
    }

    /// [`start`](Self::start) for code without a runtime (it may also be called inside one).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_blocking(self) -> Result<TestServer, Error> {
        TestServer::launch(self.cfg)
    }
}

/// The current instance, if any, and a generation number that changes with every restart.
#[derive(Default)]
struct Slot {
    generation: u64,
    running: Option<Running>,
}

/// The handle of the current instance.
struct Running {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

/// The runtime thread: the runtime lives (and is dropped) on a thread of its own.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    stopped: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl RuntimeThread {
    fn spawn(workers: usize) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("dflockd-testkit-worker")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let handle = runtime.handle().clone();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dflockd-testkit".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                drop(runtime);
                let _ = stopped_tx.send(());
            })
            .map_err(Error::Runtime)?;
        Ok(RuntimeThread {
            handle,
            stop: Some(stop),
            stopped: Mutex::new(stopped),
        })
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            if let Ok(stopped) = self.stopped.lock() {
                let _ = stopped.recv_timeout(CONTROL_WAIT);
            }
        }
    }
}

/// A dflockd-compatible server running in this process, on its own runtime thread.
///
/// See the [crate documentation](crate) for an example. Dropping the handle stops the server
/// abruptly (as [`kill`](Self::kill)) and frees its port before `drop` returns.
pub struct TestServer {
    cfg: Arc<Config>,
    version: ServerVersion,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    current: Arc<Mutex<Slot>>,
    runtime: RuntimeThread,
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("version", &self.version)
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .field("config", &self.cfg)
            .finish()
    }
}

impl TestServer {
    /// A builder with the real server's defaults.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// Starts a server with the default configuration on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// As [`TestServerBuilder::start`].
    pub async fn start() -> Result<TestServer, Error> {
        Self::builder().start().await
    }

    /// [`TestServer::start`] without a runtime.
    ///
    /// # Errors
    /// As [`TestServerBuilder::start`].
    pub fn start_blocking() -> Result<TestServer, Error> {
        Self::builder().start_blocking()
    }

    fn launch(mut cfg: Config) -> Result<TestServer, Error> {
        let version = cfg.resolve_version()?;
        cfg.validate()?;
        let tls = match &cfg.tls {
            Some(identity) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                identity,
                cfg.tls_client_ca.as_deref(),
            )?)),
            None => None,
        };
        let listener = bind(cfg.addr)?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.addr,
            source,
        })?;
        let runtime = RuntimeThread::spawn(cfg.worker_threads)?;
        let server = TestServer {
            cfg: Arc::new(cfg),
            version,
            addr,
            tls,
            current: Arc::default(),
            runtime,
        };
        server.spawn_instance(listener)?;
        tracing::debug!(%addr, %version, "test server listening");
        Ok(server)
    }

    fn spawn_instance(&self, listener: std::net::TcpListener) -> Result<(), Error> {
        let fence_seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let fences = FenceCounter::open(self.cfg.fence_state_file.as_deref(), fence_seed)?;
        let (control, _) = watch::channel(Control::default());
        let shared = Arc::new(Shared {
            cfg: self.cfg.clone(),
            profile: self.cfg.profile(),
            table: Table::new(self.cfg.table_config(), fences),
            tls: self.tls.clone(),
            control,
            open_conns: AtomicUsize::new(0),
            per_ip: Mutex::default(),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        self.runtime
            .handle
            .spawn(instance::run(listener, shared.clone(), rx));
        let mut slot = self.lock();
        slot.generation += 1;
        slot.running = Some(Running { shared, commands });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        lock_slot(&self.current)
    }

    /// The dflockd release this server behaves as.
    #[must_use]
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The address the server listens on (the port is the real one when 0 was asked for).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"`: the address as clients take it.
    #[must_use]
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Whether the server is up (not killed, not shut down; `true` while draining).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.lock().running.is_some()
    }

    fn raw_stats(&self) -> RawStats {
        match &self.lock().running {
            Some(running) => running
                .shared
                .table
                .snapshot(running.shared.connections(), std::time::Instant::now()),
            None => RawStats::default(),
        }
    }

    /// A snapshot of connections and keys, as `stats` reports them (all empty when the
    /// server is stopped).
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.raw_stats().to_stats()
    }

    /// The JSON object a `stats` request would be answered with (without the `ok ` prefix and
    /// the newline), with Go's formatting.
    #[must_use]
    pub fn stats_json(&self) -> String {
        self.raw_stats().to_json()
    }

    /// Holds every answer and stops taking requests; sockets stay open and requests wait
    /// (lease expiry and key collection go on). For fault tests: clients see a server that
    /// does not answer.
    pub fn pause(&self) {
        if let Some(running) = &self.lock().running {
            running.shared.control.send_modify(|c| c.paused = true);
        }
    }

    /// Undoes [`pause`](Self::pause): waiting requests are processed and answered in order.
    pub fn resume(&self) {
        if let Some(running) = &self.lock().running {
            running.shared.control.send_modify(|c| c.paused = false);
        }
    }

    /// Stops abruptly, like a crash: the listener and every connection are closed without an
    /// answer and the lock table is lost. Returns once the sockets are closed. A stopped
    /// server stays stopped; see [`restart`](Self::restart).
    pub fn kill(&self) {
        let Some(running) = self.lock().running.take() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let done = Box::new(move || {
            let _ = tx.send(());
        });
        if running.commands.send(Command::Kill(done)).is_ok() {
            let _ = rx.recv_timeout(CONTROL_WAIT);
        }
    }

    /// Graceful shutdown, as the real server does on SIGINT/SIGTERM: the listener closes, lease
    /// expiry and key collection stop, and blocked `l`/`sl`/`w`/`sw` are answered `error`.
    /// Version 2.1 answers the next well-formed request on every connection `error_draining`
    /// and closes it (an `auth` handshake is still answered as usual); version 1.10 keeps
    /// serving open connections until they close or idle out. Connections that are still
    /// open after the shutdown timeout are closed without an answer. Returns when every
    /// connection is gone. No-op when stopped.
    ///
    /// Idle connections (a client's pool) keep the drain waiting: in tests, close clients
    /// first or set a short [`shutdown_timeout`](TestServerBuilder::shutdown_timeout) — or
    /// use [`kill`](Self::kill) or drop the server when graceful draining is not under test.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the drain, which goes on in the background.
    pub async fn shutdown(&self) {
        if let Some((rx, _)) = self.begin_shutdown() {
            let _ = rx.await;
        }
    }

    /// [`shutdown`](Self::shutdown) for code without a runtime.
    pub fn shutdown_blocking(&self) {
        if let Some((_, rx)) = self.begin_shutdown() {
            let _ = rx.recv();
        }
    }

    fn begin_shutdown(&self) -> Option<(oneshot::Receiver<()>, std::sync::mpsc::Receiver<()>)> {
        let slot = self.lock();
        let running = slot.running.as_ref()?;
        let generation = slot.generation;
        let current = Arc::downgrade(&self.current);
        let (tx, rx) = oneshot::channel();
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let done = Box::new(move || {
            if let Some(current) = current.upgrade() {
                let mut slot = lock_slot(&current);
                if slot.generation == generation {
                    slot.running = None;
                }
            }
            let _ = tx.send(());
            let _ = sync_tx.send(());
        });
        running.commands.send(Command::Shutdown(done)).ok()?;
        Some((rx, sync_rx))
    }

    /// Starts the server again on the same address with a fresh lock table (after
    /// [`kill`](Self::kill) or [`shutdown`](Self::shutdown); a running server is killed
    /// first).
    ///
    /// # Errors
    /// [`Error::Bind`] if the port was taken meanwhile, [`Error::FenceState`] if the fence
    /// state file became unusable.
    ///
    /// # Cancel safety
    /// Completes on its first poll.
    pub async fn restart(&self) -> Result<(), Error> {
        self.restart_blocking()
    }

    /// [`restart`](Self::restart) for code without a runtime.
    ///
    /// # Errors
    /// As [`restart`](Self::restart).
    pub fn restart_blocking(&self) -> Result<(), Error> {
        self.kill();
        let listener = bind(self.addr)?;
        self.spawn_instance(listener)
    }
}

fn lock_slot(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<TestServer>();
        send_sync::<TestServerBuilder>();
        send_sync::<crate::TestServers>();
        send_sync::<Stats>();
        send_sync::<Error>();
        send_sync::<crate::tls::TestCa>();
    }
}
