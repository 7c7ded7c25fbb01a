//! Choosing the server for a key.

use std::fmt;

/// Picks which of `servers` servers owns `key`.
///
/// The default, [`Crc32`], agrees with every other dflockd client (Go, Python, TypeScript),
/// so a mixed fleet sends each key to the same server. A closure
/// `Fn(&str, usize) -> usize` is a strategy too. Returning an index `>= servers` makes the
/// request fail with [`Error::Shard`](crate::Error::Shard); it never panics.
pub trait ShardStrategy: Send + Sync + 'static {
    /// The index of the server for `key`, in `0..servers` (`servers >= 1`).
    fn shard(&self, key: &str, servers: usize) -> usize;
}

impl<F> ShardStrategy for F
where
    F: Fn(&str, usize) -> usize + Send + Sync + 'static,
{
    fn shard(&self, key: &str, servers: usize) -> usize {
        self(key, servers)
    }
}

/// CRC-32 (IEEE) of the key's UTF-8 bytes, modulo the number of servers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crc32;

impl Crc32 {
    /// The CRC-32 of `key`.
    #[must_use]
    pub fn checksum(key: &str) -> u32 {
        crc32fast::hash(key.as_bytes())
    }
}

impl ShardStrategy for Crc32 {
    fn shard(&self, key: &str, servers: usize) -> usize {
        if servers <= 1 {
            // No checksum needed to pick the only server.
            return 0;
        }
        (u64::from(Crc32::checksum(key)) % servers as u64) as usize
    }
}

/// A boxed strategy with a readable `Debug`.
pub(crate) struct Strategy(pub(crate) Box<dyn ShardStrategy>);

impl fmt::Debug for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShardStrategy")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_vectors() {
        // (key, crc, index for 2, 3, 5, 7 servers), from the protocol description.
        let vectors: &[(&str, u32, [usize; 4])] = &[
            ("foo", 0x8c73_6521, [1, 2, 4, 2]),
            ("my-key", 0xd6e3_3ac1, [1, 2, 2, 1]),
            ("user:42:profile", 0x0c87_6432, [0, 0, 2, 4]),
            ("pool", 0xaf91_a986, [0, 2, 3, 1]),
            ("ключ", 0x0caf_961a, [0, 0, 3, 1]),
            ("tenant-7", 0x128c_acca, [0, 1, 2, 5]),
        ];
        for (key, crc, indexes) in vectors {
            assert_eq!(Crc32::checksum(key), *crc, "{key}");
            for (n, want) in [2, 3, 5, 7].into_iter().zip(indexes) {
                assert_eq!(Crc32.shard(key, n), *want, "{key} over {n}");
            }
            assert_eq!(Crc32.shard(key, 1), 0);
        }
    }

    #[test]
    fn closures_are_strategies() {
        let first = |_: &str, _: usize| 0usize;
        assert_eq!(first.shard("x", 3), 0);
    }
}
