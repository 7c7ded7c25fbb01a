//! Distributed locks, semaphores and a keyed concurrency layer for Rust services, on the
//! [dflockd](https://github.com/mtingers/dflockd) lock server.
//!
//! This facade re-exports [`dflockd_core`] (the async client) and, behind features, the
//! attribute macros, the tower layers and the blocking client.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `macros` | yes | `#[dflockd::exclusive]`, `#[dflockd::exclusive_semaphore]` |
//! | `tower` | yes | [`tower`]: keyed lock / semaphore layers for axum and tonic |
//! | `axum` | yes | the layers' axum integration: `tower::RouteKey` (keys from the matched route), the `tower::Locked` extractor |
//! | `blocking` | yes | [`blocking`]: the same client for plain threads |
//! | `tls` | yes | TLS through rustls ([`TlsOptions`]) with the ring crypto provider (the same as `tls-ring`) |
//! | `tls-ring` | through `tls` | ring as the crypto provider |
//! | `tls-aws-lc-rs` | no | aws-lc-rs as the crypto provider, used when ring is on too; without ring: `default-features = false, features = ["tls-aws-lc-rs", ...]` |
//! | `tls-webpki-roots` | no | Mozilla's root certificates compiled in (`TlsOptions::webpki_roots`, `DFLOCKD_TLS=webpki`) |
//! | `tls-base` | through the above | TLS without a bundled crypto provider (the application installs one) |
//! | `metrics` | no | metrics through the `metrics` facade crate, for any exporter: the client's, the layers' and the macros' (`dflockd::metrics` has the table) |
//!
//! With `default-features = false` and none of the `tls*` features, the client has no TLS and
//! no rustls. See [`dflockd_core`]'s documentation for how the crypto provider is chosen.
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
