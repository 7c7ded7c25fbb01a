//! `stats`: the typed snapshot and the exact JSON line the wire carries.

use std::time::Duration;

use crate::json::{push_float, push_string};
use crate::state::Key;

/// A point-in-time view of the server, as `stats` reports it.
///
/// Each list is sorted by key (the real server's order is unspecified).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Open connections.
    pub connections: u64,
    /// Keys of limit 1 with a holder or waiters.
    pub locks: Vec<LockStats>,
    /// Keys of limit > 1 with holders or waiters.
    pub semaphores: Vec<SemaphoreStats>,
    /// Keys of limit 1 with neither holder nor waiter (not yet collected).
    pub idle_locks: Vec<IdleStats>,
    /// Keys of limit > 1 with neither holder nor waiter (not yet collected).
    pub idle_semaphores: Vec<IdleStats>,
}

/// One busy lock in [`Stats::locks`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LockStats {
    /// The key (invalid UTF-8 replaced by U+FFFD).
    pub key: String,
    /// The holder's connection id (from 1), or 0 when only waiters exist.
    pub owner_conn_id: u64,
    /// Time left on the holder's lease (zero when expired or without a holder).
    pub lease_expires_in: Duration,
    /// Queued waiters.
    pub waiters: usize,
}

/// One busy semaphore in [`Stats::semaphores`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreStats {
    /// The key (invalid UTF-8 replaced by U+FFFD).
    pub key: String,
    /// Holders allowed at once.
    pub limit: u64,
    /// Current holders.
    pub holders: usize,
    /// Queued waiters.
    pub waiters: usize,
}

/// One idle key in [`Stats::idle_locks`] or [`Stats::idle_semaphores`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdleStats {
    /// The key (invalid UTF-8 replaced by U+FFFD).
    pub key: String,
    /// Time since the key's last activity.
    pub idle: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct RawStats {
    pub(crate) connections: u64,
    pub(crate) locks: Vec<RawLock>,
    pub(crate) semaphores: Vec<RawSemaphore>,
    pub(crate) idle_locks: Vec<RawIdle>,
    pub(crate) idle_semaphores: Vec<RawIdle>,
}

#[derive(Debug)]
pub(crate) struct RawLock {
    pub(crate) key: Key,
    pub(crate) owner_conn_id: u64,
    pub(crate) lease_expires_in: Duration,
    pub(crate) waiters: usize,
}

#[derive(Debug)]
pub(crate) struct RawSemaphore {
    pub(crate) key: Key,
    pub(crate) limit: u64,
    pub(crate) holders: usize,
    pub(crate) waiters: usize,
}

#[derive(Debug)]
pub(crate) struct RawIdle {
    pub(crate) key: Key,
    pub(crate) idle: Duration,
}

fn text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl From<RawStats> for Stats {
    fn from(raw: RawStats) -> Self {
        let idle = |v: Vec<RawIdle>| {
            v.into_iter()
                .map(|i| IdleStats {
                    key: text(&i.key),
                    idle: i.idle,
                })
                .collect()
        };
        Stats {
            connections: raw.connections,
            locks: raw
                .locks
                .into_iter()
                .map(|l| LockStats {
                    key: text(&l.key),
                    owner_conn_id: l.owner_conn_id,
                    lease_expires_in: l.lease_expires_in,
                    waiters: l.waiters,
                })
                .collect(),
            semaphores: raw
                .semaphores
                .into_iter()
                .map(|s| SemaphoreStats {
                    key: text(&s.key),
                    limit: s.limit,
                    holders: s.holders,
                    waiters: s.waiters,
                })
                .collect(),
            idle_locks: idle(raw.idle_locks),
            idle_semaphores: idle(raw.idle_semaphores),
        }
    }
}

impl RawStats {
    /// The JSON object, exactly as Go's `encoding/json` writes the real server's struct (no
    /// `ok ` prefix, no newline).
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::with_capacity(
            64 + 96 * (self.locks.len() + self.semaphores.len())
                + 48 * (self.idle_locks.len() + self.idle_semaphores.len()),
        );
        out.push_str("{\"connections\":");
        out.push_str(&self.connections.to_string());
        out.push_str(",\"locks\":[");
        for (i, l) in self.locks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"key\":");
            push_string(&mut out, &l.key);
            out.push_str(",\"owner_conn_id\":");
            out.push_str(&l.owner_conn_id.to_string());
            out.push_str(",\"lease_expires_in_s\":");
            push_float(&mut out, l.lease_expires_in.as_secs_f64());
            out.push_str(",\"waiters\":");
            out.push_str(&l.waiters.to_string());
            out.push('}');
        }
        out.push_str("],\"semaphores\":[");
        for (i, s) in self.semaphores.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"key\":");
            push_string(&mut out, &s.key);
            out.push_str(",\"limit\":");
            out.push_str(&s.limit.to_string());
            out.push_str(",\"holders\":");
            out.push_str(&s.holders.to_string());
            out.push_str(",\"waiters\":");
            out.push_str(&s.waiters.to_string());
            out.push('}');
        }
        for (name, list) in [
            ("],\"idle_locks\":[", &self.idle_locks),
            ("],\"idle_semaphores\":[", &self.idle_semaphores),
        ] {
            out.push_str(name);
            for (i, idle) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"key\":");
                push_string(&mut out, &idle.key);
                out.push_str(",\"idle_s\":");
                push_float(&mut out, idle.idle.as_secs_f64());
                out.push('}');
            }
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sample_from_the_report() {
        let raw = RawStats {
            connections: 2,
            locks: vec![RawLock {
                key: Arc::from(&b"job"[..]),
                owner_conn_id: 1,
                lease_expires_in: Duration::new(32, 871_254_334),
                waiters: 1,
            }],
            semaphores: vec![RawSemaphore {
                key: Arc::from(&b"pool"[..]),
                limit: 3,
                holders: 1,
                waiters: 0,
            }],
            idle_locks: vec![RawIdle {
                key: Arc::from(&b"old"[..]),
                idle: Duration::new(4, 2_139_000),
            }],
            idle_semaphores: vec![],
        };
        assert_eq!(
            raw.to_json(),
            r#"{"connections":2,"locks":[{"key":"job","owner_conn_id":1,"lease_expires_in_s":32.871254334,"waiters":1}],"semaphores":[{"key":"pool","limit":3,"holders":1,"waiters":0}],"idle_locks":[{"key":"old","idle_s":4.002139}],"idle_semaphores":[]}"#
        );
        assert_eq!(
            RawStats::default().to_json(),
            r#"{"connections":0,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}"#
        );
    }
}
