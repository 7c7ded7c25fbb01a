//! `stats`: the exact JSON line the wire carries, and the typed view tests read (the
//! client's [`dflockd_core::Stats`], parsed from that line: one family of stats types).

use crate::json::{push_float, push_string};
use crate::state::RawStats;

pub use dflockd_core::{IdleStats, LockStats, SemaphoreStats, Stats};

impl RawStats {
    /// The typed view, as a client reads the JSON.
    pub(crate) fn to_stats(&self) -> Stats {
        Stats::from_json(&self.to_json())
            .expect("the test server writes the stats JSON the client reads")
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
    use crate::state::{RawIdle, RawLock, RawSemaphore};
    use std::sync::Arc;
    use std::time::Duration;

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
