//! The limits the lock server has for semaphore keys, where they differ from the layer's: a
//! key keeps the limit it was created with while it is in use, so a layer whose configured
//! limit changed (a rolling deploy) queues under the server's limit until the key is idle
//! and collected.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dflockd_core::Stats;

/// How long a limit learnt from the server is used without trying the configured one
/// first: short, so that a key collected meanwhile (idle for the server's whole collection
/// age, usually a minute) is created anew with the configured limit, and long enough that
/// a busy key does not cost a `stats` request per request.
pub(crate) const ADOPTED_FOR: Duration = Duration::from_secs(2);

/// Keys remembered at most; beyond, entries older than [`ADOPTED_FOR`] are dropped (and if
/// that is not enough, all of them).
const MAX_KEYS: usize = 4096;

/// The limit of `key` in a server's statistics: a semaphore's limit, 1 for a lock (held,
/// queued for or idle); `None` when the key is not listed or is an idle semaphore (whose
/// limit the server does not list).
pub(crate) fn server_limit(stats: &Stats, key: &str) -> Option<u32> {
    if let Some(semaphore) = stats.semaphore(key) {
        return u32::try_from(semaphore.limit).ok().filter(|l| *l > 0);
    }
    let idle_lock = stats.idle_locks.iter().any(|idle| idle.key == key);
    (stats.lock(key).is_some() || idle_lock).then_some(1)
}

/// What this layer learnt of one key.
#[derive(Debug, Clone, Copy)]
struct Learnt {
    /// The server's limit.
    limit: u32,
    /// The limit the layer asked for then.
    configured: u32,
    at: Instant,
}

/// The server's limits this layer learnt, for keys where they differ from the configured
/// ones; shared by the layer's clones and services.
#[derive(Debug, Default)]
pub(crate) struct AdoptedLimits {
    keys: Mutex<HashMap<String, Learnt>>,
}

impl AdoptedLimits {
    /// The limit to ask for first: the server's, when learnt less than [`ADOPTED_FOR`] ago
    /// for the same configured limit, else the configured one.
    pub(crate) fn limit_for(&self, key: &str, configured: u32, now: Instant) -> u32 {
        match self.lock().get(key) {
            Some(l)
                if l.configured == configured
                    && now.saturating_duration_since(l.at) < ADOPTED_FOR =>
            {
                l.limit
            }
            _ => configured,
        }
    }

    /// The server's limit last learnt for `key`, however long ago.
    pub(crate) fn last_known(&self, key: &str) -> Option<u32> {
        self.lock().get(key).map(|l| l.limit)
    }

    /// Records that the server has `key` at `limit` while the layer asks for `configured`
    /// (another limit). True when this is news (to be logged): the key was not known with
    /// this pair of limits.
    pub(crate) fn learn(&self, key: &str, configured: u32, limit: u32, now: Instant) -> bool {
        let mut keys = self.lock();
        if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            keys.retain(|_, l| now.saturating_duration_since(l.at) < ADOPTED_FOR);
            if keys.len() >= MAX_KEYS {
                keys.clear();
            }
        }
        let learnt = Learnt {
            limit,
            configured,
            at: now,
        };
        match keys.entry(key.to_owned()) {
            Entry::Occupied(mut known) => {
                let news = known.get().limit != limit || known.get().configured != configured;
                known.insert(learnt);
                news
            }
            Entry::Vacant(slot) => {
                slot.insert(learnt);
                true
            }
        }
    }

    /// The server's limit of `key` is the configured one again (or the key is gone).
    pub(crate) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Learnt>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_limit_comes_from_the_list_the_key_is_in() {
        let json = r#"{"connections":1,
            "locks":[{"key":"held-lock","owner_conn_id":1,"lease_expires_in_s":3,"waiters":0}],
            "semaphores":[{"key":"sem","limit":3,"holders":1,"waiters":0},
                          {"key":"huge","limit":99999999999,"holders":1,"waiters":0}],
            "idle_locks":[{"key":"idle-lock","idle_s":4}],
            "idle_semaphores":[{"key":"idle-sem","idle_s":4}]}"#;
        let stats = Stats::from_json(json).unwrap();
        assert_eq!(server_limit(&stats, "sem"), Some(3));
        assert_eq!(server_limit(&stats, "held-lock"), Some(1));
        assert_eq!(server_limit(&stats, "idle-lock"), Some(1));
        assert_eq!(server_limit(&stats, "idle-sem"), None);
        assert_eq!(server_limit(&stats, "huge"), None);
        assert_eq!(server_limit(&stats, "absent"), None);
    }

    #[test]
    fn an_adopted_limit_is_used_for_a_short_while_and_logged_once() {
        let limits = AdoptedLimits::default();
        let t0 = Instant::now();
        assert_eq!(limits.limit_for("k", 8, t0), 8);
        assert!(limits.learn("k", 8, 2, t0));
        assert!(!limits.learn("k", 8, 2, t0), "the same news twice");
        assert_eq!(limits.limit_for("k", 8, t0 + ADOPTED_FOR / 2), 2);
        // Another configured limit (another layer setting) does not use it.
        assert_eq!(limits.limit_for("k", 4, t0), 4);
        // Stale: the configured limit is tried first again, but the last one is known.
        assert_eq!(limits.limit_for("k", 8, t0 + ADOPTED_FOR), 8);
        assert_eq!(limits.last_known("k"), Some(2));
        // Refreshing the same limit is not news; another limit is.
        assert!(!limits.learn("k", 8, 2, t0 + ADOPTED_FOR));
        assert!(limits.learn("k", 8, 3, t0 + ADOPTED_FOR));
        limits.forget("k");
        assert_eq!(limits.last_known("k"), None);
        assert!(limits.learn("k", 8, 3, t0 + ADOPTED_FOR));
    }

    #[test]
    fn the_memory_is_bounded() {
        let limits = AdoptedLimits::default();
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            limits.learn(&format!("old{i}"), 8, 2, t0);
        }
        let later = t0 + ADOPTED_FOR;
        assert!(limits.learn("fresh", 8, 2, later));
        assert_eq!(limits.lock().len(), 1, "the stale entries were dropped");
        for i in 0..MAX_KEYS {
            limits.learn(&format!("new{i}"), 8, 2, later);
        }
        assert!(limits.lock().len() <= MAX_KEYS);
    }
}
