//! The lock table: keys, holders, FIFO waiters, two-phase (`e`/`w`) state, lease expiry and
//! idle-key collection.
//!
//! This module never touches a socket. Every operation takes the current [`Instant`] and runs
//! under one shard's [`Mutex`] for a short, bounded time; the connection tasks do the waiting.
//!
//! Waiters live in a per-shard slab keyed by a waiter id; a key's FIFO queue holds ids only.
//! Cancelling a waiter (timeout, disconnect) removes it from the slab and leaves its id in the
//! queue to be skipped later (lazy deletion); a queue whose dead ids outnumber the live ones is
//! compacted, so every operation is amortised O(1) in the queue length.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dflockd_core::proto::Token;
use tokio::sync::oneshot;

use crate::stats::{RawIdle, RawLock, RawSemaphore, RawStats};

/// A connection id, counted from 1 per accepted connection.
pub(crate) type ConnId = u64;

/// A key: the raw bytes of the request line (the real server accepts non-UTF-8 keys).
pub(crate) type Key = Arc<[u8]>;

type WaiterId = u64;

/// The settings the lock table needs.
#[derive(Clone, Debug)]
pub(crate) struct TableConfig {
    pub(crate) default_lease: Duration,
    pub(crate) max_locks: usize,
    pub(crate) max_waiters: usize,
    pub(crate) gc_max_idle: Duration,
    pub(crate) auto_release: bool,
    pub(crate) shards: usize,
}

/// A grant as the connection reports it: `ok TOKEN LEASE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) token: Token,
    pub(crate) lease_s: u64,
}

/// A requested lease: the duration applied and the whole seconds reported in the answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lease {
    pub(crate) duration: Duration,
    pub(crate) secs: u64,
}

/// Result of `l`/`sl`.
#[derive(Debug)]
pub(crate) enum Acquire {
    Granted(Grant),
    /// Queued; the connection waits on the receiver and cancels with [`Table::cancel_wait`].
    Queued(WaiterId, oneshot::Receiver<Grant>),
    Timeout,
    MaxLocks,
    MaxWaiters,
    LimitMismatch,
}

/// Result of `e`/`se`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enqueue {
    Acquired(Grant),
    Queued,
    AlreadyEnqueued,
    MaxLocks,
    MaxWaiters,
    LimitMismatch,
}

/// Result of one look at a pending `w`/`sw`.
#[derive(Debug)]
pub(crate) enum WaitPoll {
    Granted(Grant),
    NotEnqueued,
    LeaseExpired,
    Timeout,
    /// Still queued: the receiver fires when the waiter is granted.
    Pending(oneshot::Receiver<()>),
}

struct Holder {
    token: Token,
    conn: ConnId,
    expires: Instant,
}

enum EState {
    Queued {
        waiter: WaiterId,
        notify: Option<oneshot::Sender<()>>,
    },
    Granted {
        token: Token,
        lease: Lease,
    },
}

enum WaiterKind {
    Blocking(oneshot::Sender<Grant>),
    Enqueued,
}

struct Waiter {
    conn: ConnId,
    lease: Lease,
    kind: WaiterKind,
}

struct Entry {
    key: Key,
    limit: u64,
    holders: Vec<Holder>,
    queue: VecDeque<WaiterId>,
    live_waiters: usize,
    estates: HashMap<ConnId, EState>,
    last_active: Instant,
}

#[derive(Default)]
struct Aux {
    waiters: HashMap<WaiterId, Waiter>,
    next_waiter: WaiterId,
    /// Keys with at least one holder: what the lease sweep visits.
    held: HashSet<Key>,
    /// Per connection, the keys where it has holders or two-phase state (for disconnect).
    conn_keys: HashMap<ConnId, HashSet<Key>>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Key, Entry>,
    aux: Aux,
}

/// The whole lock table of one server instance.
pub(crate) struct Table {
    shards: Box<[Mutex<Shard>]>,
    cfg: TableConfig,
    entry_count: AtomicUsize,
    fence: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

fn deadline(now: Instant, d: Duration) -> Instant {
    // Leases of billions of seconds are legal on the wire; never overflow.
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Table {
    /// A fresh table whose fence counter starts at `fence_seed`.
    pub(crate) fn new(cfg: TableConfig, fence_seed: u64) -> Self {
        let shards = cfg.shards.max(1).next_power_of_two();
        Table {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            cfg,
            entry_count: AtomicUsize::new(0),
            fence: AtomicU64::new(fence_seed),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The table's settings.
    pub(crate) fn config(&self) -> &TableConfig {
        &self.cfg
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let idx = if self.shards.len() == 1 {
            0
        } else {
            let mut h = self.hasher.build_hasher();
            h.write(key);
            (h.finish() as usize) & (self.shards.len() - 1)
        };
        lock(&self.shards[idx])
    }

    fn next_token(&self) -> Token {
        let fence = self.fence.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        Token::from_parts(fence, fastrand::u64(..))
    }

    /// Reserves room for one more key under `max_locks`.
    fn reserve_key(&self) -> bool {
        self.entry_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cfg.max_locks).then_some(n + 1)
            })
            .is_ok()
    }

    /// Finds or creates the entry for `key` (`None`: the key is new and the table is full).
    fn entry<'s>(
        &self,
        entries: &'s mut HashMap<Key, Entry>,
        key: &[u8],
        limit: u64,
        now: Instant,
    ) -> Option<&'s mut Entry> {
        if !entries.contains_key(key) {
            if !self.reserve_key() {
                return None;
            }
            let key: Key = Arc::from(key);
            entries.insert(
                key.clone(),
                Entry {
                    key,
                    limit,
                    holders: Vec::new(),
                    queue: VecDeque::new(),
                    live_waiters: 0,
                    estates: HashMap::new(),
                    last_active: now,
                },
            );
        }
        entries.get_mut(key)
    }

    /// `l` / `sl`. With `wait` false (timeout 0) a busy key answers [`Acquire::Timeout`].
    pub(crate) fn acquire(
        &self,
        key: &[u8],
        limit: u64,
        lease: Lease,
        conn: ConnId,
        wait: bool,
        now: Instant,
    ) -> Acquire {
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let Some(entry) = self.entry(entries, key, limit, now) else {
            return Acquire::MaxLocks;
        };
        if entry.limit != limit {
            return Acquire::LimitMismatch;
        }
        entry.last_active = now;
        aux.evict_expired(self, entry, now);
        if entry.has_room() && entry.live_waiters == 0 {
            let token = aux.grant(self, entry, conn, lease, now);
            return Acquire::Granted(Grant {
                token,
                lease_s: lease.secs,
            });
        }
        if self.cfg.max_waiters > 0 && entry.live_waiters >= self.cfg.max_waiters {
            return Acquire::MaxWaiters;
        }
        if !wait {
            return Acquire::Timeout;
        }
        let (tx, rx) = oneshot::channel();
        let id = aux.push_waiter(
            entry,
            Waiter {
                conn,
                lease,
                kind: WaiterKind::Blocking(tx),
            },
        );
        Acquire::Queued(id, rx)
    }

    /// Withdraws a blocking waiter. `false`: it was granted meanwhile (the grant is in its
    /// receiver).
    pub(crate) fn cancel_wait(&self, key: &[u8], id: WaiterId, now: Instant) -> bool {
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        if aux.waiters.remove(&id).is_none() {
            return false;
        }
        if let Some(entry) = entries.get_mut(key) {
            entry.last_active = now;
            aux.waiter_gone(entry);
        }
        true
    }

    /// `r` / `sr`: `true` if the token held the key. Expiry is not checked (as the real server).
    pub(crate) fn release(&self, key: &[u8], token: &str, now: Instant) -> bool {
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let Some(entry) = entries.get_mut(key) else {
            return false;
        };
        entry.last_active = now;
        let Some(idx) = entry.holder_index(token) else {
            return false;
        };
        aux.remove_holder(entry, idx);
        aux.pump(self, entry, now);
        true
    }

    /// `n` / `sn`: the new lease in seconds, or `None` (unknown token, or an expired lease,
    /// which is then evicted).
    pub(crate) fn renew(&self, key: &[u8], token: &str, lease: Lease, now: Instant) -> Option<u64> {
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let entry = entries.get_mut(key)?;
        entry.last_active = now;
        let idx = entry.holder_index(token)?;
        if entry.holders[idx].expires <= now {
            aux.remove_holder(entry, idx);
            aux.pump(self, entry, now);
            return None;
        }
        entry.holders[idx].expires = deadline(now, lease.duration);
        Some(lease.secs)
    }

    /// `e` / `se`.
    pub(crate) fn enqueue(
        &self,
        key: &[u8],
        limit: u64,
        lease: Lease,
        conn: ConnId,
        now: Instant,
    ) -> Enqueue {
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        if entries
            .get(key)
            .is_some_and(|e| e.estates.contains_key(&conn))
        {
            return Enqueue::AlreadyEnqueued;
        }
        let Some(entry) = self.entry(entries, key, limit, now) else {
            return Enqueue::MaxLocks;
        };
        if entry.limit != limit {
            return Enqueue::LimitMismatch;
        }
        entry.last_active = now;
        aux.evict_expired(self, entry, now);
        if entry.has_room() && entry.live_waiters == 0 {
            let token = aux.grant(self, entry, conn, lease, now);
            entry.estates.insert(conn, EState::Granted { token, lease });
            return Enqueue::Acquired(Grant {
                token,
                lease_s: lease.secs,
            });
        }
        if self.cfg.max_waiters > 0 && entry.live_waiters >= self.cfg.max_waiters {
            return Enqueue::MaxWaiters;
        }
        let waiter = aux.push_waiter(
            entry,
            Waiter {
                conn,
                lease,
                kind: WaiterKind::Enqueued,
            },
        );
        entry.estates.insert(
            conn,
            EState::Queued {
                waiter,
                notify: None,
            },
        );
        aux.conn_keys
            .entry(conn)
            .or_default()
            .insert(entry.key.clone());
        Enqueue::Queued
    }

    /// One look at a `w` / `sw`. `give_up` (timeout 0, or the wait's timer fired) turns a
    /// still-queued waiter into [`WaitPoll::Timeout`] and takes it out of the queue.
    pub(crate) fn wait_poll(
        &self,
        key: &[u8],
        conn: ConnId,
        give_up: bool,
        now: Instant,
    ) -> WaitPoll {
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let Some(entry) = entries.get_mut(key) else {
            return WaitPoll::NotEnqueued;
        };
        let Some(state) = entry.estates.get_mut(&conn) else {
            return WaitPoll::NotEnqueued;
        };
        match state {
            EState::Granted { token, lease } => {
                let (token, lease) = (*token, *lease);
                entry.estates.remove(&conn);
                match entry.holders.iter().position(|h| h.token == token) {
                    Some(idx) if entry.holders[idx].expires > now => {
                        entry.holders[idx].expires = deadline(now, lease.duration);
                        WaitPoll::Granted(Grant {
                            token,
                            lease_s: lease.secs,
                        })
                    }
                    Some(idx) => {
                        entry.last_active = now;
                        aux.remove_holder(entry, idx);
                        aux.pump(self, entry, now);
                        WaitPoll::LeaseExpired
                    }
                    None => {
                        aux.prune(entry, conn);
                        WaitPoll::LeaseExpired
                    }
                }
            }
            EState::Queued { notify, .. } if !give_up => {
                let (tx, rx) = oneshot::channel();
                *notify = Some(tx);
                WaitPoll::Pending(rx)
            }
            EState::Queued { waiter, .. } => {
                let waiter = *waiter;
                entry.estates.remove(&conn);
                entry.last_active = now;
                if aux.waiters.remove(&waiter).is_some() {
                    aux.waiter_gone(entry);
                }
                aux.prune(entry, conn);
                WaitPoll::Timeout
            }
        }
    }

    /// Cleanup when a connection ends: its two-phase state and queued `e` waiters go; its
    /// holders are released too when auto-release is on. The connection must have withdrawn
    /// its own blocking waiter first.
    pub(crate) fn disconnect(&self, conn: ConnId, now: Instant) {
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let Shard { entries, aux } = &mut *guard;
            let Some(keys) = aux.conn_keys.remove(&conn) else {
                continue;
            };
            for key in keys {
                let Some(entry) = entries.get_mut(&key) else {
                    continue;
                };
                if let Some(EState::Queued { waiter, .. }) = entry.estates.remove(&conn) {
                    if aux.waiters.remove(&waiter).is_some() {
                        aux.waiter_gone(entry);
                    }
                }
                if self.cfg.auto_release {
                    let mut i = 0;
                    let mut released = false;
                    while i < entry.holders.len() {
                        if entry.holders[i].conn == conn {
                            aux.remove_holder(entry, i);
                            released = true;
                        } else {
                            i += 1;
                        }
                    }
                    if released {
                        entry.last_active = now;
                        aux.pump(self, entry, now);
                    }
                }
            }
        }
    }

    /// Expires every lease that ran out, handing the slots to the next waiters.
    pub(crate) fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let Shard { entries, aux } = &mut *guard;
            let expired: Vec<Key> = aux
                .held
                .iter()
                .filter(|k| {
                    entries
                        .get(*k)
                        .is_some_and(|e| e.holders.iter().any(|h| h.expires <= now))
                })
                .cloned()
                .collect();
            for key in expired {
                if let Some(entry) = entries.get_mut(&key) {
                    aux.evict_expired(self, entry, now);
                }
            }
        }
    }

    /// Removes keys with no holder and no waiter that were idle for strictly longer than
    /// the configured maximum.
    pub(crate) fn gc(&self, now: Instant) {
        let max_idle = self.cfg.gc_max_idle;
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let before = guard.entries.len();
            guard.entries.retain(|_, e| {
                !(e.holders.is_empty()
                    && e.live_waiters == 0
                    && e.estates.is_empty()
                    && now.saturating_duration_since(e.last_active) > max_idle)
            });
            let removed = before - guard.entries.len();
            if removed > 0 {
                self.entry_count.fetch_sub(removed, Ordering::AcqRel);
            }
        }
    }

    /// A snapshot for `stats`, each list sorted by key.
    pub(crate) fn snapshot(&self, connections: u64, now: Instant) -> RawStats {
        let mut out = RawStats {
            connections,
            ..RawStats::default()
        };
        for shard in self.shards.iter() {
            let guard = lock(shard);
            for entry in guard.entries.values() {
                let busy = !entry.holders.is_empty() || entry.live_waiters > 0;
                let idle = now.saturating_duration_since(entry.last_active);
                match (entry.limit == 1, busy) {
                    (true, true) => {
                        let holder = entry.holders.first();
                        out.locks.push(RawLock {
                            key: entry.key.clone(),
                            owner_conn_id: holder.map_or(0, |h| h.conn),
                            lease_expires_in: holder.map_or(Duration::ZERO, |h| {
                                h.expires.saturating_duration_since(now)
                            }),
                            waiters: entry.live_waiters,
                        });
                    }
                    (false, true) => out.semaphores.push(RawSemaphore {
                        key: entry.key.clone(),
                        limit: entry.limit,
                        holders: entry.holders.len(),
                        waiters: entry.live_waiters,
                    }),
                    (true, false) => out.idle_locks.push(RawIdle {
                        key: entry.key.clone(),
                        idle,
                    }),
                    (false, false) => out.idle_semaphores.push(RawIdle {
                        key: entry.key.clone(),
                        idle,
                    }),
                }
            }
        }
        out.locks.sort_by(|a, b| a.key.cmp(&b.key));
        out.semaphores.sort_by(|a, b| a.key.cmp(&b.key));
        out.idle_locks.sort_by(|a, b| a.key.cmp(&b.key));
        out.idle_semaphores.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard would be a bug; keep serving rather than cascade.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Entry {
    fn has_room(&self) -> bool {
        (self.holders.len() as u64) < self.limit
    }

    fn holder_index(&self, token: &str) -> Option<usize> {
        let token = Token::parse(token).ok()?;
        self.holders.iter().position(|h| h.token == token)
    }
}

impl Aux {
    fn push_waiter(&mut self, entry: &mut Entry, waiter: Waiter) -> WaiterId {
        self.next_waiter += 1;
        let id = self.next_waiter;
        self.waiters.insert(id, waiter);
        entry.queue.push_back(id);
        entry.live_waiters += 1;
        id
    }

    /// Bookkeeping after a waiter of `entry` left the slab without being granted.
    fn waiter_gone(&mut self, entry: &mut Entry) {
        entry.live_waiters -= 1;
        if entry.live_waiters == 0 {
            entry.queue.clear();
        } else if entry.queue.len() > 2 * entry.live_waiters + 32 {
            let waiters = &self.waiters;
            entry.queue.retain(|id| waiters.contains_key(id));
        }
    }

    fn grant(
        &mut self,
        table: &Table,
        entry: &mut Entry,
        conn: ConnId,
        lease: Lease,
        now: Instant,
    ) -> Token {
        let token = table.next_token();
        entry.holders.push(Holder {
            token,
            conn,
            expires: deadline(now, lease.duration),
        });
        entry.last_active = now;
        if entry.holders.len() == 1 {
            self.held.insert(entry.key.clone());
        }
        match self.conn_keys.entry(conn) {
            MapEntry::Occupied(mut o) => {
                if !o.get().contains(&entry.key) {
                    o.get_mut().insert(entry.key.clone());
                }
            }
            MapEntry::Vacant(v) => {
                v.insert(HashSet::from([entry.key.clone()]));
            }
        }
        token
    }

    /// Removes holder `idx` (and a two-phase grant that points at it) without refilling.
    fn remove_holder(&mut self, entry: &mut Entry, idx: usize) {
        let holder = entry.holders.swap_remove(idx);
        if matches!(entry.estates.get(&holder.conn), Some(EState::Granted { token, .. }) if *token == holder.token)
        {
            entry.estates.remove(&holder.conn);
        }
        if entry.holders.is_empty() {
            self.held.remove(&entry.key);
        }
        self.prune(entry, holder.conn);
    }

    /// Forgets `entry` for `conn` when the connection has nothing left there.
    fn prune(&mut self, entry: &Entry, conn: ConnId) {
        if entry.estates.contains_key(&conn) || entry.holders.iter().any(|h| h.conn == conn) {
            return;
        }
        if let Some(keys) = self.conn_keys.get_mut(&conn) {
            keys.remove(&entry.key);
            if keys.is_empty() {
                self.conn_keys.remove(&conn);
            }
        }
    }

    fn evict_expired(&mut self, table: &Table, entry: &mut Entry, now: Instant) {
        let mut i = 0;
        let mut any = false;
        while i < entry.holders.len() {
            if entry.holders[i].expires <= now {
                self.remove_holder(entry, i);
                any = true;
            } else {
                i += 1;
            }
        }
        if any {
            entry.last_active = now;
            self.pump(table, entry, now);
        }
    }

    /// Hands free slots to the live waiters at the head of the queue, in order.
    fn pump(&mut self, table: &Table, entry: &mut Entry, now: Instant) {
        while entry.has_room() {
            let Some(id) = entry.queue.pop_front() else {
                break;
            };
            let Some(waiter) = self.waiters.remove(&id) else {
                continue;
            };
            entry.live_waiters -= 1;
            let token = self.grant(table, entry, waiter.conn, waiter.lease, now);
            match waiter.kind {
                WaiterKind::Blocking(tx) => {
                    let grant = Grant {
                        token,
                        lease_s: waiter.lease.secs,
                    };
                    if tx.send(grant).is_err() {
                        // The connection is gone without withdrawing: free the slot again.
                        let idx = entry.holders.len() - 1;
                        self.remove_holder(entry, idx);
                    }
                }
                WaiterKind::Enqueued => {
                    if let Some(state) = entry.estates.get_mut(&waiter.conn) {
                        if let EState::Queued { notify, .. } = state {
                            if let Some(tx) = notify.take() {
                                let _ = tx.send(());
                            }
                        }
                        *state = EState::Granted {
                            token,
                            lease: waiter.lease,
                        };
                    }
                }
            }
        }
        if entry.live_waiters == 0 {
            entry.queue.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max_locks: usize, max_waiters: usize) -> Table {
        Table::new(
            TableConfig {
                default_lease: Duration::from_secs(33),
                max_locks,
                max_waiters,
                gc_max_idle: Duration::from_secs(60),
                auto_release: true,
                shards: 4,
            },
            1000,
        )
    }

    fn lease(s: u64) -> Lease {
        Lease {
            duration: Duration::from_secs(s),
            secs: s,
        }
    }

    #[test]
    fn fifo_handover_and_fences() {
        let t = table(10, 0);
        let now = Instant::now();
        let Acquire::Granted(g1) = t.acquire(b"k", 1, lease(10), 1, true, now) else {
            panic!()
        };
        assert_eq!(g1.token.prefix_fence(), 1001);
        let Acquire::Queued(_, mut rx2) = t.acquire(b"k", 1, lease(5), 2, true, now) else {
            panic!()
        };
        let Acquire::Queued(id3, mut rx3) = t.acquire(b"k", 1, lease(5), 3, true, now) else {
            panic!()
        };
        assert!(t.release(b"k", g1.token.as_str(), now));
        let g2 = rx2.try_recv().unwrap();
        assert_eq!(g2.token.prefix_fence(), 1002);
        assert_eq!(g2.lease_s, 5);
        assert!(rx3.try_recv().is_err());
        assert!(t.cancel_wait(b"k", id3, now));
        assert!(t.release(b"k", g2.token.as_str(), now));
        assert!(!t.release(b"k", g2.token.as_str(), now));
    }

    #[test]
    fn lazy_deletion_compacts() {
        let t = table(10, 0);
        let now = Instant::now();
        assert!(matches!(
            t.acquire(b"k", 1, lease(10), 1, true, now),
            Acquire::Granted(_)
        ));
        let mut ids = Vec::new();
        for c in 0..1000 {
            let Acquire::Queued(id, rx) = t.acquire(b"k", 1, lease(10), 10 + c, true, now) else {
                panic!()
            };
            ids.push((id, rx));
        }
        for (id, _) in &ids[..999] {
            assert!(t.cancel_wait(b"k", *id, now));
        }
        let guard = t.shard(b"k");
        let e = guard.entries.get(&b"k"[..]).unwrap();
        assert_eq!(e.live_waiters, 1);
        assert!(e.queue.len() <= 2 + 32, "queue {}", e.queue.len());
    }

    #[test]
    fn max_locks_counts_every_key() {
        let t = table(2, 0);
        let now = Instant::now();
        let Acquire::Granted(g) = t.acquire(b"a", 1, lease(1), 1, false, now) else {
            panic!()
        };
        assert!(t.release(b"a", g.token.as_str(), now));
        assert!(matches!(
            t.enqueue(b"b", 3, lease(1), 1, now),
            Enqueue::Acquired(_)
        ));
        // "a" is idle but still counts.
        assert!(matches!(
            t.acquire(b"c", 1, lease(1), 1, false, now),
            Acquire::MaxLocks
        ));
        assert!(matches!(
            t.acquire(b"a", 1, lease(1), 1, false, now),
            Acquire::Granted(_)
        ));
        t.gc(now + Duration::from_secs(61));
        assert_eq!(t.entry_count.load(Ordering::Relaxed), 2);
    }

    impl Table {
        /// Every shard's bookkeeping is empty (nothing leaks after a workload ends).
        fn assert_clean(&self) {
            for shard in self.shards.iter() {
                let g = lock(shard);
                assert!(g.aux.waiters.is_empty(), "waiters left");
                assert!(g.aux.held.is_empty(), "held keys left");
                assert!(g.aux.conn_keys.is_empty(), "connection index left");
                for e in g.entries.values() {
                    assert!(e.holders.is_empty() && e.live_waiters == 0 && e.queue.is_empty());
                    assert!(e.estates.is_empty());
                }
            }
        }
    }

    #[test]
    fn gc_is_strictly_greater_than_max_idle() {
        let t = table(10, 0);
        let now = Instant::now();
        let Acquire::Granted(g) = t.acquire(b"k", 1, lease(1), 1, false, now) else {
            panic!()
        };
        assert!(t.release(b"k", g.token.as_str(), now));
        t.gc(now + Duration::from_secs(60));
        assert_eq!(
            t.snapshot(0, now).idle_locks.len(),
            1,
            "idle == max is kept"
        );
        t.gc(now + Duration::from_secs(60) + Duration::from_nanos(1));
        assert_eq!(t.snapshot(0, now).idle_locks.len(), 0);
        assert_eq!(t.entry_count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn bookkeeping_is_released() {
        let t = table(100, 0);
        let now = Instant::now();
        // Plain acquire and release.
        let Acquire::Granted(g) = t.acquire(b"a", 1, lease(5), 1, true, now) else {
            panic!()
        };
        assert!(t.release(b"a", g.token.as_str(), now));
        // A queued blocking waiter that gives up, and one that is granted.
        let Acquire::Granted(g) = t.acquire(b"b", 2, lease(5), 1, true, now) else {
            panic!()
        };
        let Acquire::Granted(g2) = t.acquire(b"b", 2, lease(5), 2, true, now) else {
            panic!()
        };
        let Acquire::Queued(id, _rx) = t.acquire(b"b", 2, lease(5), 3, true, now) else {
            panic!()
        };
        let Acquire::Queued(_, mut rx4) = t.acquire(b"b", 2, lease(5), 4, true, now) else {
            panic!()
        };
        assert!(t.cancel_wait(b"b", id, now));
        assert!(t.release(b"b", g.token.as_str(), now));
        let g4 = rx4.try_recv().unwrap();
        assert!(t.release(b"b", g2.token.as_str(), now));
        assert!(t.release(b"b", g4.token.as_str(), now));
        // Two-phase: acquired then waited, queued then timed out, queued then granted.
        let Enqueue::Acquired(g) = t.enqueue(b"c", 1, lease(5), 1, now) else {
            panic!()
        };
        assert_eq!(t.enqueue(b"c", 1, lease(5), 2, now), Enqueue::Queued);
        assert_eq!(t.enqueue(b"c", 1, lease(5), 3, now), Enqueue::Queued);
        assert!(
            matches!(t.wait_poll(b"c", 1, false, now), WaitPoll::Granted(w) if w.token == g.token)
        );
        assert!(matches!(t.wait_poll(b"c", 2, true, now), WaitPoll::Timeout));
        assert!(matches!(
            t.wait_poll(b"c", 2, true, now),
            WaitPoll::NotEnqueued
        ));
        let WaitPoll::Pending(mut notified) = t.wait_poll(b"c", 3, false, now) else {
            panic!()
        };
        assert!(t.release(b"c", g.token.as_str(), now));
        notified.try_recv().unwrap();
        let WaitPoll::Granted(g3) = t.wait_poll(b"c", 3, false, now) else {
            panic!()
        };
        assert!(t.release(b"c", g3.token.as_str(), now));
        // Expiry through the sweep, with a two-phase grant pending.
        assert!(matches!(
            t.enqueue(b"d", 1, lease(1), 7, now),
            Enqueue::Acquired(_)
        ));
        t.sweep(now + Duration::from_secs(2));
        assert!(matches!(
            t.wait_poll(b"d", 7, false, now),
            WaitPoll::NotEnqueued
        ));
        // Disconnect with holders, a queued `e` and a granted `e`.
        let Acquire::Granted(_) = t.acquire(b"e", 1, lease(5), 8, true, now) else {
            panic!()
        };
        assert_eq!(t.enqueue(b"e", 1, lease(5), 9, now), Enqueue::Queued);
        assert!(matches!(
            t.enqueue(b"f", 1, lease(5), 9, now),
            Enqueue::Acquired(_)
        ));
        t.disconnect(9, now);
        t.disconnect(8, now);
        t.assert_clean();
    }

    #[test]
    fn auto_release_off_keeps_holders_only() {
        let t = Table::new(
            TableConfig {
                default_lease: Duration::from_secs(33),
                max_locks: 10,
                max_waiters: 0,
                gc_max_idle: Duration::from_secs(60),
                auto_release: false,
                shards: 1,
            },
            0,
        );
        let now = Instant::now();
        let Acquire::Granted(g) = t.acquire(b"k", 1, lease(5), 1, true, now) else {
            panic!()
        };
        assert_eq!(t.enqueue(b"k", 1, lease(5), 2, now), Enqueue::Queued);
        t.disconnect(1, now);
        t.disconnect(2, now);
        let snap = t.snapshot(0, now);
        assert_eq!((snap.locks.len(), snap.locks[0].waiters), (1, 0));
        // The lease still ends.
        t.sweep(now + Duration::from_secs(5));
        assert!(!t.release(b"k", g.token.as_str(), now));
        t.assert_clean();
    }
}
