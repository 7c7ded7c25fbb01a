//! dflockd tower layers.
