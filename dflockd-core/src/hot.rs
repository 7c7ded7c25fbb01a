//! Which keys were busy a moment ago.
//!
//! An acquire normally starts with a try-once on a shared connection: one round trip when the
//! key is free. When the key is busy that try costs a round trip for nothing (and a request
//! for the server) before the real wait. Keys found busy are therefore remembered for a
//! moment, and acquires on them go straight to the wait. Entries expire by themselves, so a
//! key that cools down gets the fast path back within [`HOT_FOR`].
//!
//! This is a hint, looked up by every acquire from every thread, so it is a fixed table of
//! atomics read without any lock or write (a lock, or even a shared counter, would be a cache
//! line that every acquiring thread takes from the others). A key is known by a seeded
//! 64-bit hash of it; a collision or a lost race only costs a try-once, or skips one for a key
//! that is free (the wait then answers at once): never a wrong answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a key counts as busy after a failed try.
pub(crate) const HOT_FOR: Duration = Duration::from_secs(1);

/// Slots in the table (a power of two); a busy key takes the slot its hash points at.
const SLOTS: usize = 4096;

#[derive(Default)]
struct Slot {
    /// The key's hash; 0 for an empty slot.
    hash: AtomicU64,
    /// Busy until this many milliseconds after [`HotKeys::base`].
    until_ms: AtomicU64,
}

pub(crate) struct HotKeys {
    /// Until when any key counts as busy (the latest of the slots' `until_ms`): while no key
    /// is, a lookup reads this one line, which only a busy key writes, and no slot (a slot
    /// is a line of its own, likely out of the looking core's cache).
    any_until_ms: AtomicU64,
    slots: Box<[Slot]>,
    base: Instant,
    seed: u64,
}

impl std::fmt::Debug for HotKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotKeys").finish_non_exhaustive()
    }
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys {
            any_until_ms: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            base: Instant::now(),
            seed: fastrand::u64(..),
        }
    }
}

impl HotKeys {
    /// A seeded hash of the key (two CRC-32s, hardware-accelerated), never 0. A lock handle
    /// computes it once; [`HotKeys::is_hot`] and [`HotKeys::mark_hot`] take it.
    pub(crate) fn hash(&self, key: &str) -> u64 {
        let half = |seed: u32| {
            let mut h = crc32fast::Hasher::new_with_initial(seed);
            h.update(key.as_bytes());
            u64::from(h.finalize())
        };
        #[allow(clippy::cast_possible_truncation)]
        let (lo, hi) = (self.seed as u32, (self.seed >> 32) as u32);
        ((half(hi) << 32) | half(lo)).max(1)
    }

    fn slot(&self, hash: u64) -> &Slot {
        #[allow(clippy::cast_possible_truncation)]
        &self.slots[(hash as usize) & (SLOTS - 1)]
    }

    fn millis(&self, now: Instant) -> u64 {
        // In `u64` arithmetic (`as_millis` works in `u128`): this runs for every acquire.
        let since = now.saturating_duration_since(self.base);
        since
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(since.subsec_millis()))
    }

    /// Whether the key of `hash` was found busy less than [`HOT_FOR`] before `now`.
    pub(crate) fn is_hot(&self, hash: u64, now: Instant) -> bool {
        let now_ms = self.millis(now);
        if now_ms >= self.any_until_ms.load(Ordering::Relaxed) {
            return false;
        }
        let slot = self.slot(hash);
        slot.hash.load(Ordering::Relaxed) == hash && now_ms < slot.until_ms.load(Ordering::Relaxed)
    }

    /// Remembers that the key of `hash` was busy at `now` (in place of any other key in its
    /// slot).
    pub(crate) fn mark_hot(&self, hash: u64, now: Instant) {
        let slot = self.slot(hash);
        let until = self.millis(now + HOT_FOR);
        slot.until_ms.store(until, Ordering::Relaxed);
        slot.hash.store(hash, Ordering::Relaxed);
        // Written only when it moves later (not for a key found busy again within the millisecond).
        if self.any_until_ms.load(Ordering::Relaxed) < until {
            self.any_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_keys_expire() {
        let hot = HotKeys::default();
        let t0 = Instant::now();
        assert!(!hot.is_hot(hot.hash("k"), t0));
        hot.mark_hot(hot.hash("k"), t0);
        assert!(hot.is_hot(hot.hash("k"), t0 + HOT_FOR / 2));
        assert!(!hot.is_hot(hot.hash("k"), t0 + HOT_FOR));
        assert!(!hot.is_hot(hot.hash("other"), t0));
    }

    #[test]
    fn a_key_found_busy_later_outlasts_an_earlier_one() {
        // The table-wide "until" follows the latest busy key, not the first.
        let hot = HotKeys::default();
        let t0 = Instant::now();
        hot.mark_hot(hot.hash("early"), t0);
        hot.mark_hot(hot.hash("late"), t0 + HOT_FOR / 2);
        let after_early = t0 + HOT_FOR + HOT_FOR / 4;
        assert!(!hot.is_hot(hot.hash("early"), after_early));
        assert!(hot.is_hot(hot.hash("late"), after_early));
        assert!(!hot.is_hot(hot.hash("late"), t0 + HOT_FOR * 2));
    }

    #[test]
    fn memory_is_fixed_and_recent_keys_are_remembered() {
        let hot = HotKeys::default();
        let t0 = Instant::now();
        for i in 0..(SLOTS * 3) {
            hot.mark_hot(hot.hash(&format!("key-{i}")), t0);
        }
        assert_eq!(hot.slots.len(), SLOTS);
        hot.mark_hot(hot.hash("fresh"), t0);
        assert!(hot.is_hot(hot.hash("fresh"), t0));
        // Most of the last few hundred keys kept their slot (a few collided).
        let kept = (SLOTS * 3 - 256..SLOTS * 3)
            .filter(|i| hot.is_hot(hot.hash(&format!("key-{i}")), t0))
            .count();
        assert!(kept > 200, "{kept}");
        // Hashes differ between tables (seeded), so collisions cannot be planned.
        let other = HotKeys::default();
        assert_ne!(hot.hash("k"), other.hash("k"));
    }
}
