#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use dflockd_core::*;

#[cfg(feature = "macros")]
mod macros_metrics;
#[cfg(feature = "macros")]
mod macros_support;
#[cfg(feature = "macros")]
pub use macros_support::{CurrentLock, current_lock, default_client, set_default_client};

#[cfg(feature = "macros")]
pub use dflockd_macros::{exclusive, exclusive_semaphore};

/// Keyed distributed lock and semaphore layers for tower services (axum, tonic).
#[cfg(feature = "tower")]
pub use dflockd_tower as tower;

/// What the attribute macros expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "macros")]
    pub use crate::macros_support::__private::*;
}
