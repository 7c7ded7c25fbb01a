//! Server statistics (`stats`).

use serde::{Deserialize, Serialize};

/// What one server reports about itself. Unknown extra fields are ignored, so newer servers
/// can add to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Open connections, including the one that asked.
    pub connections: u64,
    /// Keys of limit 1 that are held or have waiters.
    #[serde(default)]
    pub locks: Vec<LockStats>,
    /// Keys of limit > 1 that are held or have waiters.
    #[serde(default)]
    pub semaphores: Vec<SemaphoreStats>,
    /// Keys of limit 1 that nobody holds or waits for (not yet collected).
    #[serde(default)]
    pub idle_locks: Vec<IdleStats>,
    /// Keys of limit > 1 that nobody holds or waits for (not yet collected).
    #[serde(default)]
    pub idle_semaphores: Vec<IdleStats>,
}

/// One lock in [`Stats::locks`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockStats {
    /// The key.
    pub key: String,
    /// The server's id of the holder's connection (0 when only waiters exist).
    #[serde(default)]
    pub owner_conn_id: u64,
    /// Seconds until the holder's lease expires (0 when not held).
    #[serde(default)]
    pub lease_expires_in_s: f64,
    /// Queued waiters.
    #[serde(default)]
    pub waiters: u64,
}

/// One semaphore in [`Stats::semaphores`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SemaphoreStats {
    /// The key.
    pub key: String,
    /// Holders allowed at once.
    #[serde(default)]
    pub limit: u64,
    /// Current holders.
    #[serde(default)]
    pub holders: u64,
    /// Queued waiters.
    #[serde(default)]
    pub waiters: u64,
}

/// One entry of [`Stats::idle_locks`] or [`Stats::idle_semaphores`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IdleStats {
    /// The key.
    pub key: String,
    /// Seconds since the key was last used.
    #[serde(default)]
    pub idle_s: f64,
}

impl Stats {
    /// Parses the JSON of a `stats` answer.
    ///
    /// # Errors
    /// The JSON error when the text is not a stats object.
    pub fn from_json(json: &str) -> Result<Stats, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The lock entry for `key`, if it is held or has waiters.
    #[must_use]
    pub fn lock(&self, key: &str) -> Option<&LockStats> {
        self.locks.iter().find(|l| l.key == key)
    }

    /// The semaphore entry for `key`, if it is held or has waiters.
    #[must_use]
    pub fn semaphore(&self, key: &str) -> Option<&SemaphoreStats> {
        self.semaphores.iter().find(|s| s.key == key)
    }

    /// Holders and waiters of `key`, whichever list it is in: `(holders, waiters)`.
    #[must_use]
    pub fn usage(&self, key: &str) -> (u64, u64) {
        if let Some(l) = self.lock(key) {
            (
                u64::from(l.owner_conn_id != 0 || l.lease_expires_in_s > 0.0),
                l.waiters,
            )
        } else if let Some(s) = self.semaphore(key) {
            (s.holders, s.waiters)
        } else {
            (0, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_real_shape_and_ignores_extras() {
        let json = r#"{"connections":2,"locks":[{"key":"job","owner_conn_id":1,"lease_expires_in_s":32.871254334,"waiters":1}],"semaphores":[{"key":"pool","limit":3,"holders":1,"waiters":0}],"idle_locks":[{"key":"old","idle_s":4}],"idle_semaphores":[],"signal_channels":[],"future":{"x":1}}"#;
        let stats = Stats::from_json(json).unwrap();
        assert_eq!(stats.connections, 2);
        assert_eq!(stats.lock("job").unwrap().waiters, 1);
        assert_eq!(stats.usage("job"), (1, 1));
        assert_eq!(stats.usage("pool"), (1, 0));
        assert_eq!(stats.usage("nope"), (0, 0));
        assert_eq!(stats.idle_locks[0].idle_s, 4.0);
        assert!(Stats::from_json(r#"{"connections":"x"}"#).is_err());
        assert_eq!(
            Stats::from_json(r#"{"connections":0}"#).unwrap(),
            Stats::default()
        );
    }
}
