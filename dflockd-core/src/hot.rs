//! Which keys were busy a moment ago.
//!
//! An acquire normally starts with a try-once on a shared connection: one round trip when the
//! key is free. When the key is busy that try costs a round trip for nothing (and a request
//! for the server) before the real wait. Keys found busy are therefore remembered for a
//! moment, and acquires on them go straight to the wait. Entries expire by themselves, so a
//! key that cools down gets the fast path back within [`HOT_FOR`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a key counts as busy after a failed try.
pub(crate) const HOT_FOR: Duration = Duration::from_secs(1);

/// Entries per shard at most; past that, new busy keys are simply not remembered.
const SHARD_CAP: usize = 1024;

const SHARDS: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct HotKeys {
    shards: [Mutex<HashMap<Arc<str>, Instant>>; SHARDS],
}

impl HotKeys {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Instant>> {
        let index = (crc32fast::hash(key.as_bytes()) as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `key` was found busy less than [`HOT_FOR`] before `now`.
    pub(crate) fn is_hot(&self, key: &str, now: Instant) -> bool {
        let shard = self.shard(key);
        shard.get(key).is_some_and(|&until| now < until)
    }

    /// Remembers that `key` was busy at `now`.
    pub(crate) fn mark_hot(&self, key: &Arc<str>, now: Instant) {
        let mut shard = self.shard(key);
        if shard.len() >= SHARD_CAP && !shard.contains_key(&**key) {
            shard.retain(|_, until| now < *until);
            if shard.len() >= SHARD_CAP {
                return;
            }
        }
        shard.insert(key.clone(), now + HOT_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_keys_expire() {
        let hot = HotKeys::default();
        let t0 = Instant::now();
        let key: Arc<str> = Arc::from("k");
        assert!(!hot.is_hot("k", t0));
        hot.mark_hot(&key, t0);
        assert!(hot.is_hot("k", t0 + HOT_FOR / 2));
        assert!(!hot.is_hot("k", t0 + HOT_FOR));
        assert!(!hot.is_hot("other", t0));
    }

    #[test]
    fn memory_is_bounded() {
        let hot = HotKeys::default();
        let t0 = Instant::now();
        for i in 0..(SHARDS * SHARD_CAP * 3) {
            hot.mark_hot(&Arc::from(format!("key-{i}")), t0);
        }
        let total: usize = hot.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * SHARD_CAP);
        // Expired entries make room again.
        let later = t0 + HOT_FOR;
        hot.mark_hot(&Arc::from("fresh"), later);
        assert!(hot.is_hot("fresh", later));
    }
}
