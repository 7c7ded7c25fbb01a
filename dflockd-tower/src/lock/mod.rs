//! The keyed lock and semaphore middleware: layer (configuration), service (the inner service
//! and `call`), future (the acquiring → calling → done state machine), acquire (how a slot is
//! taken from the server) and config (what the layer hands to its services).
//!
//! Files import downwards only: layer → service → future → acquire → config.

pub(crate) mod acquire;
pub(crate) mod config;
pub(crate) mod future;
pub(crate) mod layer;
pub(crate) mod service;
