//! dflockd attribute macros.
