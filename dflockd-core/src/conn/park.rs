//! A connection reserved for one blocking request: the *parked* connection.
//!
//! A request that may wait server-side (`l`/`sl` with a timeout, `w`/`sw`, and the `e`/`se`
//! that a `w` must follow on the same connection) occupies its connection until answered, so
//! it only goes on a connection that holds no lock and carries nothing else: no renewal can
//! get stuck behind it. [`Parked`] is that reservation; it ends when the blocking request is
//! answered or when the guard is dropped, whichever comes first. [`ParkHint`] remembers, for a
//! lock handle, the connection it waited on last: usually idle again by its next wait, and
//! found without looking at every connection of the pool.

use std::sync::{Arc, Mutex, Weak};

use super::call::{Answer, Call, CallError};
use super::{Conn, state::IDLE};
use crate::error::{Error, Result};
use std::sync::atomic::Ordering;

/// The id of the reservation a connection opened parked starts with ([`Conn::next_id`]
/// continues after it).
pub(crate) const FIRST_RESERVATION: u64 = 1;

/// A reservation of a connection for one blocking request; ends on drop.
pub(crate) struct Parked {
    conn: Arc<Conn>,
    id: u64,
}

impl Parked {
    pub(crate) fn new(conn: Arc<Conn>, id: u64) -> Self {
        Parked { conn, id }
    }

    /// The reserved connection.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Sends the request this connection is reserved for, and waits for its answer.
    ///
    /// Cancel safety: as [`Conn::call`].
    pub(crate) async fn call(&self, mut call: Call<'_>) -> Result<Answer> {
        call.park = Some(self.id);
        self.conn.call(call).await.map_err(|e| match e {
            CallError::Failed(e) => e,
            // Only another reservation can refuse this one, and none is made while this one
            // lasts.
            CallError::Reserved => Error::ConnectionClosed {
                server: self.conn.server.to_string(),
                reason: "connection reserved for another blocking request".to_owned(),
            },
        })
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.conn.unpark(self.id);
    }
}

/// The connection a lock handle last waited on: a weak reference behind a lock only that
/// handle (and its clones, which start from a copy) takes.
#[derive(Default)]
pub(crate) struct ParkHint(Mutex<Weak<Conn>>);

impl ParkHint {
    /// Reserves the remembered connection if it is one of `server`'s and idle.
    pub(crate) fn try_park(&self, server: &Arc<str>) -> Option<Parked> {
        let conn = self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade()?;
        // The same server (a custom shard strategy may send the key elsewhere now).
        if !Arc::ptr_eq(&conn.server, server) {
            return None;
        }
        let id = conn.try_park()?;
        Some(Parked::new(conn, id))
    }

    /// Remembers `conn`.
    pub(crate) fn set(&self, conn: &Arc<Conn>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(conn);
    }
}

impl Clone for ParkHint {
    fn clone(&self) -> Self {
        ParkHint(Mutex::new(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        ))
    }
}

impl Conn {
    /// Reserves this connection for a blocking request if it is idle and holds nothing;
    /// `None` if it is not. The id ends the reservation with [`Conn::unpark`].
    pub(crate) fn try_park(&self) -> Option<u64> {
        if self.summary.flags.load(Ordering::Acquire) != IDLE
            || self.summary.pending.load(Ordering::Acquire) != 0
        {
            return None;
        }
        let mut st = self.lock_state();
        if !st.parkable() {
            return None;
        }
        let id = self.next_id();
        st.parked = Some(id);
        Some(id)
    }

    /// Ends reservation `id`, if it is still the current one.
    fn unpark(&self, id: u64) {
        // Usually the answer to the blocking request ended the reservation already. The
        // summary shows every reservation in place (it is published before `try_park`
        // returns), so when it shows none there is nothing to end.
        if self.summary.flags.load(Ordering::Acquire) & super::state::PARKED == 0 {
            return;
        }
        let mut st = self.lock_state();
        if st.parked == Some(id) {
            st.parked = None;
        }
    }
}
