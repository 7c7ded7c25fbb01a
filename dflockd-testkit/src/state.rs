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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dflockd_core::proto::{Family, Token};
use tokio::sync::oneshot;

use crate::fence::FenceCounter;
use crate::version::Profile;

/// A connection id, counted from 1 per accepted connection.
pub(crate) type ConnId = u64;

/// A key: the raw bytes of the request line (the real server accepts non-UTF-8 keys).
pub(crate) type Key = Arc<[u8]>;

/// A snapshot of the table for `stats` (see `stats.rs` for the JSON).
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

/// A resource: its namespace (an index into [`Shard::entries`]) and its key.
type Rid = (usize, Key);

type WaiterId = u64;

/// The settings the lock table needs.
#[derive(Clone, Debug)]
pub(crate) struct TableConfig {
    pub(crate) profile: Profile,
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

/// A connection's two-phase (`e`/`w`) state on one resource.
enum EState {
    Queued {
        waiter: WaiterId,
        notify: Option<oneshot::Sender<()>>,
    },
    /// Granted (at `e`, or from the queue before `w`): tied to its holder, it goes when the
    /// holder goes (release, expiry).
    Granted { token: Token, lease: Lease },
    /// v1.10.0: granted from the queue before `w`. The grant sits in the waiter's mailbox,
    /// which nothing clears when the holder goes: `w` hands out the token even if stale.
    Mailbox { token: Token, lease: Lease },
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
    space: usize,
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
    /// Resources with at least one holder: what the lease sweep visits.
    held: HashSet<Rid>,
    /// Per connection, the resources where it has holders or two-phase state (for
    /// disconnect).
    conn_keys: HashMap<ConnId, HashSet<Rid>>,
}

#[derive(Default)]
struct Shard {
    /// Per namespace: locks in 0 and semaphores in 1 when they are separate (v1.14+), else
    /// everything in 0.
    entries: [HashMap<Key, Entry>; 2],
    aux: Aux,
}

/// The whole lock table of one server instance.
pub(crate) struct Table {
    shards: Box<[Mutex<Shard>]>,
    cfg: TableConfig,
    entry_count: AtomicUsize,
    fences: FenceCounter,
    hasher: std::collections::hash_map::RandomState,
}

fn deadline(now: Instant, d: Duration) -> Instant {
    // Leases of billions of seconds are legal on the wire; never overflow.
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Table {
    /// A fresh table that takes the fences of its tokens from `fences`.
    pub(crate) fn new(cfg: TableConfig, fences: FenceCounter) -> Self {
        let shards = cfg.shards.max(1).next_power_of_two();
        Table {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            cfg,
            entry_count: AtomicUsize::new(0),
            fences,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The table's settings.
    pub(crate) fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// The namespace of a command family.
    fn space(&self, family: Family) -> usize {
        usize::from(self.cfg.profile.separate_namespaces && family == Family::Semaphore)
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

    /// A new token: 32 random hex digits, or since v2.1 the next fence and 16 random ones.
    fn next_token(&self) -> Token {
        let prefix = if self.cfg.profile.fence_tokens {
            self.fences.next()
        } else {
            fastrand::u64(..)
        };
        Token::from_parts(prefix, fastrand::u64(..))
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
        space: usize,
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
                    space,
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn acquire(
        &self,
        family: Family,
        key: &[u8],
        limit: u64,
        lease: Lease,
        conn: ConnId,
        wait: bool,
        now: Instant,
    ) -> Acquire {
        let space = self.space(family);
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let Some(entry) = self.entry(&mut entries[space], space, key, limit, now) else {
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
    pub(crate) fn cancel_wait(
        &self,
        family: Family,
        key: &[u8],
        id: WaiterId,
        now: Instant,
    ) -> bool {
        let space = self.space(family);
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        if aux.waiters.remove(&id).is_none() {
            return false;
        }
        if let Some(entry) = entries[space].get_mut(key) {
            entry.last_active = now;
            aux.waiter_gone(entry);
        }
        true
    }

    /// `r` / `sr`: `true` if the token held the key. Expiry is not checked (as the real server).
    pub(crate) fn release(&self, family: Family, key: &[u8], token: &str, now: Instant) -> bool {
        let space = self.space(family);
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let Some(entry) = entries[space].get_mut(key) else {
            return false;
        };
        if self.cfg.profile.bogus_token_touches_key {
            entry.last_active = now;
        }
        let Some(idx) = entry.holder_index(token) else {
            return false;
        };
        entry.last_active = now;
        aux.remove_holder(entry, idx);
        aux.pump(self, entry, now);
        true
    }

    /// `n` / `sn`: the new lease in seconds, or `None` (unknown token, or an expired lease,
    /// which is then evicted).
    pub(crate) fn renew(
        &self,
        family: Family,
        key: &[u8],
        token: &str,
        lease: Lease,
        now: Instant,
    ) -> Option<u64> {
        let space = self.space(family);
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let entry = entries[space].get_mut(key)?;
        if self.cfg.profile.bogus_token_touches_key {
            entry.last_active = now;
        }
        let idx = entry.holder_index(token)?;
        entry.last_active = now;
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
        family: Family,
        key: &[u8],
        limit: u64,
        lease: Lease,
        conn: ConnId,
        now: Instant,
    ) -> Enqueue {
        let space = self.space(family);
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let entries = &mut entries[space];
        if entries
            .get(key)
            .is_some_and(|e| e.estates.contains_key(&conn))
        {
            return Enqueue::AlreadyEnqueued;
        }
        let Some(entry) = self.entry(entries, space, key, limit, now) else {
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
        aux.conn_keys.entry(conn).or_default().insert(entry.rid());
        Enqueue::Queued
    }

    /// One look at a `w` / `sw`. `give_up` (timeout 0, or the wait's timer fired) turns a
    /// still-queued waiter into [`WaitPoll::Timeout`] and takes it out of the queue.
    pub(crate) fn wait_poll(
        &self,
        family: Family,
        key: &[u8],
        conn: ConnId,
        give_up: bool,
        now: Instant,
    ) -> WaitPoll {
        let space = self.space(family);
        let mut guard = self.shard(key);
        let Shard { entries, aux } = &mut *guard;
        let Some(entry) = entries[space].get_mut(key) else {
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
            EState::Mailbox { token, lease } => {
                // v1.10.0: whatever became of the holder, `w` answers with the token; a
                // holder still there (even expired, not yet swept) gets a fresh lease.
                let (token, lease) = (*token, *lease);
                entry.estates.remove(&conn);
                entry.last_active = now;
                if let Some(holder) = entry.holders.iter_mut().find(|h| h.token == token) {
                    holder.expires = deadline(now, lease.duration);
                } else {
                    aux.prune(entry, conn);
                }
                WaitPoll::Granted(Grant {
                    token,
                    lease_s: lease.secs,
                })
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

    /// Cleanup when a connection ends: its two-phase state and queued `e` waiters go, and its
    /// holders are released when auto-release is on. With auto-release off, holders stay
    /// until their lease ends; since v1.15 the rest still goes, in v1.10 nothing is cleaned
    /// up at all. The connection must have withdrawn its own blocking waiter first.
    pub(crate) fn disconnect(&self, conn: ConnId, now: Instant) {
        if !self.cfg.auto_release && !self.cfg.profile.cleanup_ignores_auto_release {
            return;
        }
        for shard in self.shards.iter() {
            let mut guard = lock(shard);
            let Shard { entries, aux } = &mut *guard;
            let Some(keys) = aux.conn_keys.remove(&conn) else {
                continue;
            };
            for (space, key) in keys {
                let Some(entry) = entries[space].get_mut(&key) else {
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
            let expired: Vec<Rid> = aux
                .held
                .iter()
                .filter(|(space, k)| {
                    entries[*space]
                        .get(k)
                        .is_some_and(|e| e.holders.iter().any(|h| h.expires <= now))
                })
                .cloned()
                .collect();
            for (space, key) in expired {
                if let Some(entry) = entries[space].get_mut(&key) {
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
            for entries in &mut guard.entries {
                let before = entries.len();
                entries.retain(|_, e| {
                    !(e.holders.is_empty()
                        && e.live_waiters == 0
                        && e.estates.is_empty()
                        && now.saturating_duration_since(e.last_active) > max_idle)
                });
                let removed = before - entries.len();
                if removed > 0 {
                    self.entry_count.fetch_sub(removed, Ordering::AcqRel);
                }
            }
        }
    }

    /// A snapshot for `stats`, each list sorted by key. A resource is listed by its limit
    /// (limit 1 under locks, also a semaphore created with limit 1), as the real server does.
    pub(crate) fn snapshot(&self, connections: u64, now: Instant) -> RawStats {
        let mut out = RawStats {
            connections,
            ..RawStats::default()
        };
        for shard in self.shards.iter() {
            let guard = lock(shard);
            for entry in guard.entries.iter().flat_map(HashMap::values) {
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

    fn rid(&self) -> Rid {
        (self.space, self.key.clone())
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
            self.held.insert(entry.rid());
        }
        match self.conn_keys.entry(conn) {
            MapEntry::Occupied(mut o) => {
                let rid = entry.rid();
                if !o.get().contains(&rid) {
                    o.get_mut().insert(rid);
                }
            }
            MapEntry::Vacant(v) => {
                v.insert(HashSet::from([entry.rid()]));
            }
        }
        token
    }

    /// Removes holder `idx` (and a two-phase grant tied to it) without refilling.
    fn remove_holder(&mut self, entry: &mut Entry, idx: usize) {
        let holder = entry.holders.swap_remove(idx);
        if matches!(entry.estates.get(&holder.conn), Some(EState::Granted { token, .. }) if *token == holder.token)
        {
            entry.estates.remove(&holder.conn);
        }
        if entry.holders.is_empty() {
            self.held.remove(&entry.rid());
        }
        self.prune(entry, holder.conn);
    }

    /// Forgets `entry` for `conn` when the connection has nothing left there.
    fn prune(&mut self, entry: &Entry, conn: ConnId) {
        if entry.estates.contains_key(&conn) || entry.holders.iter().any(|h| h.conn == conn) {
            return;
        }
        if let Some(keys) = self.conn_keys.get_mut(&conn) {
            keys.remove(&entry.rid());
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
                        let lease = waiter.lease;
                        *state = if table.cfg.profile.stale_queued_grants {
                            EState::Mailbox { token, lease }
                        } else {
                            EState::Granted { token, lease }
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
    use crate::ServerVersion;

    const L: Family = Family::Lock;
    const S: Family = Family::Semaphore;

    fn cfg(version: ServerVersion, max_locks: usize, max_waiters: usize) -> TableConfig {
        TableConfig {
            profile: version.profile(),
            default_lease: Duration::from_secs(33),
            max_locks,
            max_waiters,
            gc_max_idle: Duration::from_secs(60),
            auto_release: true,
            shards: 4,
        }
    }

    fn table_of(version: ServerVersion, max_locks: usize, max_waiters: usize) -> Table {
        Table::new(
            cfg(version, max_locks, max_waiters),
            FenceCounter::in_memory(1000),
        )
    }

    fn table(max_locks: usize, max_waiters: usize) -> Table {
        table_of(ServerVersion::NEWEST, max_locks, max_waiters)
    }

    fn lease(s: u64) -> Lease {
        Lease {
            duration: Duration::from_secs(s),
            secs: s,
        }
    }

    #[test]
    fn fifo_handover_and_fences() {
        for &version in ServerVersion::ALL {
            let t = table_of(version, 10, 0);
            let now = Instant::now();
            let Acquire::Granted(g1) = t.acquire(L, b"k", 1, lease(10), 1, true, now) else {
                panic!()
            };
            let Acquire::Queued(_, mut rx2) = t.acquire(L, b"k", 1, lease(5), 2, true, now) else {
                panic!()
            };
            let Acquire::Queued(id3, mut rx3) = t.acquire(L, b"k", 1, lease(5), 3, true, now)
            else {
                panic!()
            };
            assert!(t.release(L, b"k", g1.token.as_str(), now));
            let g2 = rx2.try_recv().unwrap();
            assert_eq!(g2.lease_s, 5);
            if version == ServerVersion::V2_1 {
                assert_eq!(g1.token.prefix_fence(), 1001);
                assert_eq!(g2.token.prefix_fence(), 1002);
            } else {
                // 64 random bits: these two never follow each other.
                assert_ne!(g2.token.prefix_fence(), g1.token.prefix_fence() + 1);
            }
            assert!(rx3.try_recv().is_err());
            assert!(t.cancel_wait(L, b"k", id3, now));
            assert!(t.release(L, b"k", g2.token.as_str(), now));
            assert!(!t.release(L, b"k", g2.token.as_str(), now));
        }
    }

    #[test]
    fn namespaces() {
        let now = Instant::now();
        // v1.10: one namespace; a lock is a semaphore of limit 1.
        let t = table_of(ServerVersion::V1_10, 10, 0);
        let Acquire::Granted(g) = t.acquire(L, b"k", 1, lease(5), 1, false, now) else {
            panic!()
        };
        assert!(matches!(
            t.acquire(S, b"k", 2, lease(5), 2, false, now),
            Acquire::LimitMismatch
        ));
        assert!(matches!(
            t.acquire(S, b"k", 1, lease(5), 2, false, now),
            Acquire::Timeout
        ));
        assert!(t.release(S, b"k", g.token.as_str(), now));
        let Acquire::Granted(g) = t.acquire(S, b"s", 3, lease(5), 1, false, now) else {
            panic!()
        };
        assert_eq!(
            t.enqueue(L, b"s", 1, lease(5), 1, now),
            Enqueue::LimitMismatch
        );
        assert!(t.release(L, b"s", g.token.as_str(), now));
        assert_eq!(t.entry_count.load(Ordering::Relaxed), 2);
        // v2.1: a lock and a semaphore of the same name are two resources.
        let t = table_of(ServerVersion::V2_1, 2, 0);
        let Acquire::Granted(g) = t.acquire(L, b"k", 1, lease(5), 1, false, now) else {
            panic!()
        };
        let Acquire::Granted(gs) = t.acquire(S, b"k", 3, lease(5), 2, false, now) else {
            panic!()
        };
        assert!(!t.release(S, b"k", g.token.as_str(), now));
        assert!(!t.release(L, b"k", gs.token.as_str(), now));
        assert!(matches!(
            t.acquire(S, b"k", 2, lease(5), 2, false, now),
            Acquire::LimitMismatch
        ));
        assert!(matches!(
            t.acquire(L, b"other", 1, lease(5), 2, false, now),
            Acquire::MaxLocks
        ));
        let snap = t.snapshot(0, now);
        assert_eq!((snap.locks.len(), snap.semaphores.len()), (1, 1));
        assert!(t.release(L, b"k", g.token.as_str(), now));
        assert!(t.release(S, b"k", gs.token.as_str(), now));
    }

    #[test]
    fn lazy_deletion_compacts() {
        let t = table(10, 0);
        let now = Instant::now();
        assert!(matches!(
            t.acquire(L, b"k", 1, lease(10), 1, true, now),
            Acquire::Granted(_)
        ));
        let mut ids = Vec::new();
        for c in 0..1000 {
            let Acquire::Queued(id, rx) = t.acquire(L, b"k", 1, lease(10), 10 + c, true, now)
            else {
                panic!()
            };
            ids.push((id, rx));
        }
        for (id, _) in &ids[..999] {
            assert!(t.cancel_wait(L, b"k", *id, now));
        }
        let guard = t.shard(b"k");
        let e = guard.entries[0].get(&b"k"[..]).unwrap();
        assert_eq!(e.live_waiters, 1);
        assert!(e.queue.len() <= 2 + 32, "queue {}", e.queue.len());
    }

    #[test]
    fn max_locks_counts_every_key() {
        for &version in ServerVersion::ALL {
            let t = table_of(version, 2, 0);
            let now = Instant::now();
            let Acquire::Granted(g) = t.acquire(L, b"a", 1, lease(1), 1, false, now) else {
                panic!()
            };
            assert!(t.release(L, b"a", g.token.as_str(), now));
            assert!(matches!(
                t.enqueue(S, b"b", 3, lease(1), 1, now),
                Enqueue::Acquired(_)
            ));
            // "a" is idle but still counts.
            assert!(matches!(
                t.acquire(L, b"c", 1, lease(1), 1, false, now),
                Acquire::MaxLocks
            ));
            assert!(matches!(
                t.acquire(L, b"a", 1, lease(1), 1, false, now),
                Acquire::Granted(_)
            ));
            t.gc(now + Duration::from_secs(61));
            assert_eq!(t.entry_count.load(Ordering::Relaxed), 2);
        }
    }

    impl Table {
        /// Every shard's bookkeeping is empty (nothing leaks after a workload ends).
        fn assert_clean(&self) {
            for shard in self.shards.iter() {
                let g = lock(shard);
                assert!(g.aux.waiters.is_empty(), "waiters left");
                assert!(g.aux.held.is_empty(), "held keys left");
                assert!(g.aux.conn_keys.is_empty(), "connection index left");
                for e in g.entries.iter().flat_map(HashMap::values) {
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
        let Acquire::Granted(g) = t.acquire(L, b"k", 1, lease(1), 1, false, now) else {
            panic!()
        };
        assert!(t.release(L, b"k", g.token.as_str(), now));
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
        for &version in ServerVersion::ALL {
            let t = table_of(version, 100, 0);
            let now = Instant::now();
            // Plain acquire and release.
            let Acquire::Granted(g) = t.acquire(L, b"a", 1, lease(5), 1, true, now) else {
                panic!()
            };
            assert!(t.release(L, b"a", g.token.as_str(), now));
            // A queued blocking waiter that gives up, and one that is granted.
            let Acquire::Granted(g) = t.acquire(S, b"b", 2, lease(5), 1, true, now) else {
                panic!()
            };
            let Acquire::Granted(g2) = t.acquire(S, b"b", 2, lease(5), 2, true, now) else {
                panic!()
            };
            let Acquire::Queued(id, _rx) = t.acquire(S, b"b", 2, lease(5), 3, true, now) else {
                panic!()
            };
            let Acquire::Queued(_, mut rx4) = t.acquire(S, b"b", 2, lease(5), 4, true, now) else {
                panic!()
            };
            assert!(t.cancel_wait(S, b"b", id, now));
            assert!(t.release(S, b"b", g.token.as_str(), now));
            let g4 = rx4.try_recv().unwrap();
            assert!(t.release(S, b"b", g2.token.as_str(), now));
            assert!(t.release(S, b"b", g4.token.as_str(), now));
            // Two-phase: acquired then waited, queued then timed out, queued then granted.
            let Enqueue::Acquired(g) = t.enqueue(L, b"c", 1, lease(5), 1, now) else {
                panic!()
            };
            assert_eq!(t.enqueue(L, b"c", 1, lease(5), 2, now), Enqueue::Queued);
            assert_eq!(t.enqueue(L, b"c", 1, lease(5), 3, now), Enqueue::Queued);
            assert!(
                matches!(t.wait_poll(L, b"c", 1, false, now), WaitPoll::Granted(w) if w.token == g.token)
            );
            assert!(matches!(
                t.wait_poll(L, b"c", 2, true, now),
                WaitPoll::Timeout
            ));
            assert!(matches!(
                t.wait_poll(L, b"c", 2, true, now),
                WaitPoll::NotEnqueued
            ));
            let WaitPoll::Pending(mut notified) = t.wait_poll(L, b"c", 3, false, now) else {
                panic!()
            };
            assert!(t.release(L, b"c", g.token.as_str(), now));
            notified.try_recv().unwrap();
            let WaitPoll::Granted(g3) = t.wait_poll(L, b"c", 3, false, now) else {
                panic!()
            };
            assert!(t.release(L, b"c", g3.token.as_str(), now));
            // Expiry through the sweep, with a two-phase grant pending.
            assert!(matches!(
                t.enqueue(L, b"d", 1, lease(1), 7, now),
                Enqueue::Acquired(_)
            ));
            t.sweep(now + Duration::from_secs(2));
            assert!(matches!(
                t.wait_poll(L, b"d", 7, false, now),
                WaitPoll::NotEnqueued
            ));
            // Disconnect with holders, a queued `e` and a granted `e`.
            let Acquire::Granted(_) = t.acquire(L, b"e", 1, lease(5), 8, true, now) else {
                panic!()
            };
            assert_eq!(t.enqueue(L, b"e", 1, lease(5), 9, now), Enqueue::Queued);
            assert!(matches!(
                t.enqueue(L, b"f", 1, lease(5), 9, now),
                Enqueue::Acquired(_)
            ));
            t.disconnect(9, now);
            t.disconnect(8, now);
            t.assert_clean();
        }
    }

    #[test]
    fn queued_grant_expiring_before_wait() {
        for &version in ServerVersion::ALL {
            let t = table_of(version, 10, 0);
            let now = Instant::now();
            let later = now + Duration::from_secs(2);
            // Queued, granted on release, expired and swept before `w`.
            let Acquire::Granted(g) = t.acquire(L, b"k", 1, lease(60), 1, false, now) else {
                panic!()
            };
            assert_eq!(t.enqueue(L, b"k", 1, lease(1), 2, now), Enqueue::Queued);
            assert!(t.release(L, b"k", g.token.as_str(), now));
            t.sweep(later);
            let poll = t.wait_poll(L, b"k", 2, false, later);
            match version {
                // The stale token: its holder is long gone.
                ServerVersion::V1_10 => {
                    assert!(matches!(poll, WaitPoll::Granted(w) if w.lease_s == 1));
                }
                _ => assert!(matches!(poll, WaitPoll::NotEnqueued), "{poll:?}"),
            }
            // Expired but not swept: v1.10 revives the lease, v2.1 reports it expired.
            let Acquire::Granted(g) = t.acquire(L, b"j", 1, lease(60), 1, false, now) else {
                panic!()
            };
            assert_eq!(t.enqueue(L, b"j", 1, lease(1), 2, now), Enqueue::Queued);
            assert!(t.release(L, b"j", g.token.as_str(), now));
            let poll = t.wait_poll(L, b"j", 2, false, later);
            match version {
                ServerVersion::V1_10 => {
                    let WaitPoll::Granted(w) = poll else { panic!() };
                    assert_eq!(t.renew(L, b"j", w.token.as_str(), lease(1), later), Some(1));
                    assert!(t.release(L, b"j", w.token.as_str(), later));
                }
                _ => assert!(matches!(poll, WaitPoll::LeaseExpired), "{poll:?}"),
            }
            t.assert_clean();
        }
    }

    #[test]
    fn auto_release_off() {
        for &version in ServerVersion::ALL {
            let t = Table::new(
                TableConfig {
                    auto_release: false,
                    shards: 1,
                    ..cfg(version, 10, 0)
                },
                FenceCounter::in_memory(0),
            );
            let now = Instant::now();
            let Acquire::Granted(g) = t.acquire(L, b"k", 1, lease(5), 1, true, now) else {
                panic!()
            };
            assert_eq!(t.enqueue(L, b"k", 1, lease(5), 2, now), Enqueue::Queued);
            t.disconnect(1, now);
            t.disconnect(2, now);
            let snap = t.snapshot(0, now);
            // v1.10 keeps the closed connection's queued `e`; v2.1 drops it.
            let kept = usize::from(version == ServerVersion::V1_10);
            assert_eq!((snap.locks.len(), snap.locks[0].waiters), (1, kept));
            // The lease still ends; in v1.10 the dead `e` waiter then holds the key.
            t.sweep(now + Duration::from_secs(5));
            assert!(!t.release(L, b"k", g.token.as_str(), now));
            assert_eq!(t.snapshot(0, now).locks.len(), kept);
            if version != ServerVersion::V1_10 {
                t.assert_clean();
            }
        }
    }
}
