//! A TCP chaos proxy for fault-injection tests: put it between a client and a server and
//! change, while traffic flows, what the network does to the bytes.
//!
//! ```
//! use std::time::Duration;
//! use dflockd_testkit::{TestServer, chaos::ChaosProxy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TestServer::start().await?;
//! let proxy = ChaosProxy::start(server.addr())?;
//! // Clients connect to `proxy.addr()` instead of `server.addr()`.
//! proxy.set_latency(Duration::from_millis(50), Duration::from_millis(10));
//! proxy.set_blackhole(true); // nothing gets through, sockets stay open
//! proxy.reset(); // every relayed connection is cut (RST)
//! proxy.heal(); // back to a perfect network
//! # Ok(()) }
//! ```
//!
//! Faults apply to both directions and to every connection, those open now and those that
//! come later:
//!
//! | fault | setter | what the peers see |
//! |---|---|---|
//! | latency with jitter | [`set_latency`](ChaosProxy::set_latency) | every chunk arrives `base ± jitter` later; order is kept |
//! | blackhole | [`set_blackhole`](ChaosProxy::set_blackhole) | nothing arrives, not even a close; sockets stay open; what was held is delivered in order when the blackhole ends, as TCP does after a partition heals |
//! | reset | [`reset`](ChaosProxy::reset) | every relayed connection is closed at once with a reset, in both directions |
//! | slicing | [`set_slicing`](ChaosProxy::set_slicing) | data arrives in pieces of 1 to `max` bytes, with a pause between pieces |
//! | bandwidth limit | [`set_bandwidth`](ChaosProxy::set_bandwidth) | at most so many bytes per second per direction and connection |
//! | slow close | [`set_slow_close`](ChaosProxy::set_slow_close) | a close (FIN) reaches the other side only after a delay |
//!
//! The proxy runs on a runtime of its own, on a thread of its own, like
//! [`TestServer`](crate::TestServer): it works from any runtime (also one with a paused
//! clock), its timing does not depend on how busy the test's runtime is, and its tasks do
//! not count among the test runtime's tasks. Server-side faults (stop answering, crash,
//! restart on the same port) are [`TestServer::pause`](crate::TestServer::pause),
//! [`kill`](crate::TestServer::kill) and [`restart`](crate::TestServer::restart).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// How long the proxy waits for the upstream server to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Chunks in flight per direction before the proxy stops reading (backpressure).
const IN_FLIGHT_CHUNKS: usize = 256;
/// Largest chunk read at once.
const CHUNK: usize = 16 * 1024;

/// The faults in force: a value to read with [`ChaosProxy::faults`] or set whole with
/// [`ChaosProxy::set_faults`]. [`Faults::default`] is a perfect network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// Added one-way delay of every chunk.
    pub latency: Duration,
    /// The delay varies uniformly within `latency ± jitter` (never below zero).
    pub jitter: Duration,
    /// Nothing is forwarded (data and closes are held) while this is on.
    pub blackhole: bool,
    /// Write in pieces of 1 to `max` bytes (chosen at random), pausing between pieces.
    pub slicing: Option<Slicing>,
    /// Bytes per second per direction and connection.
    pub bandwidth: Option<u64>,
    /// Delay before a close (FIN) is passed on.
    pub slow_close: Duration,
}

/// How [`Faults::slicing`] cuts writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slicing {
    /// Largest piece, in bytes (at least 1).
    pub max: usize,
    /// Pause after each piece.
    pub pause: Duration,
}

impl Faults {
    /// A perfect network (the default).
    #[must_use]
    pub fn none() -> Self {
        Faults::default()
    }

    /// With latency `base ± jitter`.
    #[must_use]
    pub fn latency(mut self, base: Duration, jitter: Duration) -> Self {
        self.latency = base;
        self.jitter = jitter;
        self
    }

    /// With the blackhole on or off.
    #[must_use]
    pub fn blackhole(mut self, on: bool) -> Self {
        self.blackhole = on;
        self
    }

    /// With writes cut in pieces of 1 to `max` bytes, `pause` between pieces.
    #[must_use]
    pub fn slicing(mut self, max: usize, pause: Duration) -> Self {
        self.slicing = Some(Slicing {
            max: max.max(1),
            pause,
        });
        self
    }

    /// With at most `bytes_per_second` per direction and connection.
    #[must_use]
    pub fn bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = Some(bytes_per_second.max(1));
        self
    }

    /// With closes passed on only after `delay`.
    #[must_use]
    pub fn slow_close(mut self, delay: Duration) -> Self {
        self.slow_close = delay;
        self
    }

    fn sample_delay(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let spread = self.jitter.as_secs_f64();
        let offset = (fastrand::f64() * 2.0 - 1.0) * spread;
        Duration::from_secs_f64((self.latency.as_secs_f64() + offset).max(0.0))
    }
}

/// Counters kept by the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Client connections accepted since the start.
    pub accepted: u64,
    /// Relayed connections open now (client side accepted, not yet fully closed).
    pub open: usize,
    /// Bytes delivered, both directions together.
    pub bytes: u64,
    /// Times [`ChaosProxy::reset`] was called.
    pub resets: u64,
}

struct Shared {
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    reset: watch::Sender<u64>,
    accepted: AtomicU64,
    open: AtomicUsize,
    bytes: AtomicU64,
}

/// A TCP proxy that injects network faults; see the [module documentation](self).
///
/// Dropping it closes the listener and every relayed connection.
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for ChaosProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("faults", &*self.shared.faults.borrow())
            .field("stats", &self.stats())
            .finish()
    }
}

impl ChaosProxy {
    /// Listens on a free port of 127.0.0.1 and relays every connection to `upstream`.
    ///
    /// # Errors
    /// When the listener cannot be bound or the proxy's thread cannot start.
    pub fn start(upstream: SocketAddr) -> io::Result<ChaosProxy> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream)
    }

    /// Listens on `listen` (port 0 for a free one) and relays to `upstream`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<ChaosProxy> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (faults, _) = watch::channel(Faults::default());
        let (reset, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            upstream,
            faults,
            reset,
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stop_rx) = oneshot::channel();
        let task_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dflockd-chaos-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            tracing::error!(%err, "chaos proxy: cannot register the listener");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept_loop(listener, task_shared) => {}
                    }
                });
                // Dropping the runtime drops every connection task and closes its sockets.
                drop(runtime);
            })?;
        Ok(ChaosProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"`: the address as clients take it.
    #[must_use]
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// The server the proxy relays to.
    #[must_use]
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The faults in force.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Replaces every fault at once.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.send_replace(faults);
    }

    /// Removes every fault (a perfect network again); held data flows on. Does not reopen
    /// connections cut by [`reset`](Self::reset).
    pub fn heal(&self) {
        self.set_faults(Faults::none());
    }

    /// Delays every chunk by `base ± jitter` (uniform), in each direction. Order is kept: a
    /// chunk never overtakes an earlier one. Zero for both removes the delay (chunks already
    /// on their way keep theirs).
    pub fn set_latency(&self, base: Duration, jitter: Duration) {
        self.shared.faults.send_modify(|f| {
            f.latency = base;
            f.jitter = jitter;
        });
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions. Sockets stay open;
    /// data and closes are held and delivered in order once the blackhole ends.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.faults.send_modify(|f| f.blackhole = on);
    }

    /// Cuts writes in pieces of 1 to `max` bytes with `pause` between them (`None`: whole).
    pub fn set_slicing(&self, slicing: Option<(usize, Duration)>) {
        self.shared.faults.send_modify(|f| {
            f.slicing = slicing.map(|(max, pause)| Slicing {
                max: max.max(1),
                pause,
            });
        });
    }

    /// Limits each direction of each connection to `bytes_per_second` (`None`: no limit).
    pub fn set_bandwidth(&self, bytes_per_second: Option<u64>) {
        self.shared
            .faults
            .send_modify(|f| f.bandwidth = bytes_per_second.map(|b| b.max(1)));
    }

    /// Passes a close on only after `delay` (zero: at once).
    pub fn set_slow_close(&self, delay: Duration) {
        self.shared.faults.send_modify(|f| f.slow_close = delay);
    }

    /// Closes every relayed connection now, with a reset (RST) to both peers; nothing held
    /// is delivered. New connections are accepted as before.
    pub fn reset(&self) {
        self.shared.reset.send_modify(|n| *n += 1);
    }

    /// The proxy's counters.
    #[must_use]
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::Acquire),
            open: self.shared.open.load(Ordering::Acquire),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            resets: *self.shared.reset.borrow(),
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::AcqRel);
                shared.open.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(relay(client, shared.clone()));
            }
            Err(err) => {
                tracing::debug!(%err, "chaos proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a relayed connection as open until dropped.
struct OpenSlot(Arc<Shared>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a direction stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The source closed and the close was passed on.
    Closed,
    /// Reset, or an I/O error: tear the whole connection down.
    Abort,
}

async fn relay(client: TcpStream, shared: Arc<Shared>) {
    let _slot = OpenSlot(shared.clone());
    let mut reset = shared.reset.subscribe();
    reset.mark_unchanged();
    let connect = tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        TcpStream::connect(shared.upstream),
    );
    let server = tokio::select! {
        _ = reset.changed() => None,
        connected = connect => match connected {
            Ok(Ok(server)) => Some(server),
            _ => None,
        },
    };
    let Some(server) = server else {
        abort_socket(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Any direction that aborts takes the other one down with it.
    let (abort, _) = watch::channel(false);
    let up = direction(client_read, server_write, &shared, reset.clone(), &abort);
    let down = direction(server_read, client_write, &shared, reset, &abort);
    tokio::join!(up, down);
}

/// One direction: a reader that timestamps chunks and a writer that delivers them when due,
/// subject to the faults in force.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    mut reset: watch::Receiver<u64>,
    abort: &watch::Sender<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(IN_FLIGHT_CHUNKS);
    let source = &mut from;
    // The reader owns the sender: when it stops, the writer sees the end of the queue.
    let read = async move {
        let mut faults = shared.faults.subscribe();
        let mut last_due = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match source.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return End::Abort,
            };
            let delay = faults.borrow_and_update().sample_delay();
            let due = (Instant::now() + delay).max(last_due);
            last_due = due;
            if n == 0 {
                let _ = tx.send((due, None)).await;
                return End::Closed;
            }
            buf.truncate(n);
            if tx.send((due, Some(buf))).await.is_err() {
                return End::Abort;
            }
        }
    };
    let write = async {
        let mut faults = shared.faults.subscribe();
        let mut next_free = Instant::now();
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if wait_not_blackholed(&mut faults).await.is_err() {
                return End::Abort;
            }
            let Some(data) = chunk else {
                let delay = faults.borrow().slow_close;
                tokio::time::sleep(delay).await;
                if wait_not_blackholed(&mut faults).await.is_err() {
                    return End::Abort;
                }
                let _ = to.shutdown().await;
                return End::Closed;
            };
            let mut rest = &data[..];
            while !rest.is_empty() {
                let current = faults.borrow_and_update().clone();
                if current.blackhole && wait_not_blackholed(&mut faults).await.is_err() {
                    return End::Abort;
                }
                let mut piece = match current.slicing {
                    Some(s) => fastrand::usize(1..=s.max).min(rest.len()),
                    None => rest.len(),
                };
                if let Some(rate) = current.bandwidth {
                    // Trickle: pieces of about 50 ms worth, each delivered once its
                    // transmission time has passed.
                    let per_tick = usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1);
                    piece = piece.min(per_tick);
                    let cost = Duration::from_secs_f64(piece as f64 / rate as f64);
                    next_free = next_free.max(Instant::now()) + cost;
                    tokio::time::sleep_until(next_free).await;
                }
                if to.write_all(&rest[..piece]).await.is_err() {
                    return End::Abort;
                }
                shared.bytes.fetch_add(piece as u64, Ordering::Relaxed);
                rest = &rest[piece..];
                if let Some(s) = current.slicing {
                    if !rest.is_empty() && !s.pause.is_zero() {
                        tokio::time::sleep(s.pause).await;
                    }
                }
            }
        }
        End::Abort
    };
    let mut aborted = abort.subscribe();
    let outcome = tokio::select! {
        _ = reset.changed() => End::Abort,
        _ = aborted.wait_for(|a| *a) => End::Abort,
        (r, w) = async { tokio::join!(read, write) } => {
            if r == End::Closed && w == End::Closed { End::Closed } else { End::Abort }
        }
    };
    if outcome == End::Abort {
        abort.send_replace(true);
        // A reset, not a close: nothing queued is delivered, the peers see the connection
        // cut.
        abort_socket(from.as_ref());
        abort_socket(to.as_ref());
        to.forget();
    }
}

/// Waits while the blackhole is on; `Err` when the proxy is going away.
async fn wait_not_blackholed(faults: &mut watch::Receiver<Faults>) -> Result<(), ()> {
    faults
        .wait_for(|f| !f.blackhole)
        .await
        .map(|_| ())
        .map_err(|_| ())
}

/// Makes the socket's close send a reset (RST) instead of a FIN.
fn abort_socket(socket: &TcpStream) {
    // A zero linger never blocks: the close discards unsent data and sends RST at once.
    #[allow(deprecated)]
    let _ = socket.set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_within_the_jitter() {
        let f = Faults::none().latency(Duration::from_millis(50), Duration::from_millis(10));
        for _ in 0..1000 {
            let d = f.sample_delay();
            assert!(
                d >= Duration::from_millis(40) && d <= Duration::from_millis(60),
                "{d:?}"
            );
        }
        let f = Faults::none().latency(Duration::from_millis(1), Duration::from_millis(10));
        for _ in 0..1000 {
            assert!(f.sample_delay() <= Duration::from_millis(11));
        }
        assert_eq!(Faults::none().sample_delay(), Duration::ZERO);
    }
}
