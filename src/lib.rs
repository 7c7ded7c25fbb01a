//! Distributed locks and semaphores on the dflockd lock server.
#![forbid(unsafe_code)]

pub use dflockd_core::*;
