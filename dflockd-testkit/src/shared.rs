//! What an instance's tasks share: the settings, the lock table, the control signals and
//! the connection counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::state::Table;
use crate::version::Profile;

/// What every connection of an instance watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Control {
    /// `pause()`: hold every answer and stop processing requests.
    pub(crate) paused: bool,
    /// `shutdown()` started: blocked waits end with `error` (and since v1.16 new requests
    /// are refused with `error_draining`).
    pub(crate) draining: bool,
}

/// State shared by an instance's tasks.
pub(crate) struct Shared {
    pub(crate) cfg: Arc<Config>,
    pub(crate) profile: Profile,
    pub(crate) table: Table,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) open_conns: AtomicUsize,
    /// Open connections per peer address, kept only with `--max-connections-per-ip`.
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Shared {
    /// Connections currently open.
    pub(crate) fn connections(&self) -> u64 {
        self.open_conns.load(Ordering::Acquire) as u64
    }

    /// Takes a connection slot for `peer`, or `None` when a cap says no: `--max-connections`
    /// (open connections) first, then `--max-connections-per-ip` (open connections from the
    /// same address, v1.16+).
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnSlot> {
        let max = self.cfg.max_connections;
        if max > 0 && self.open_conns.load(Ordering::Acquire) >= max {
            tracing::debug!(%peer, "connection refused: max connections reached");
            return None;
        }
        let per_ip = self.cfg.max_connections_per_ip;
        let ip = if per_ip > 0 {
            let mut counts = lock(&self.per_ip);
            let count = counts.entry(peer).or_default();
            if *count >= per_ip {
                tracing::debug!(%peer, "connection refused: max connections per IP");
                return None;
            }
            *count += 1;
            Some(peer)
        } else {
            None
        };
        self.open_conns.fetch_add(1, Ordering::AcqRel);
        Some(ConnSlot {
            shared: self.clone(),
            ip,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An admitted connection's place in the counts: given back when the connection task ends
/// (also when aborted).
pub(crate) struct ConnSlot {
    pub(crate) shared: Arc<Shared>,
    /// The peer address, when counted per IP.
    ip: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.shared.open_conns.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut counts = lock(&self.shared.per_ip);
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}
