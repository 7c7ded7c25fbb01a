//! A drop-in dflockd-compatible server.
