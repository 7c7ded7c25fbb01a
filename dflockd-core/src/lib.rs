//! Async tokio client for the dflockd distributed lock server.
#![forbid(unsafe_code)]

pub mod proto;
