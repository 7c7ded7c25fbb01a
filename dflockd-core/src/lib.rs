//! Async tokio client for the [dflockd](https://github.com/mtingers/dflockd) distributed lock
//! server: FIFO locks, counting semaphores, background lease renewal, two-phase acquisition,
//! auth, TLS, sharding over several servers, stats.
//!
//! Most users depend on the `dflockd` facade crate, which re-exports this one.
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = dflockd_testkit::TestServer::builder()
//! #     .version(dflockd_testkit::ServerVersion::V2_1)
//! #     .start()
//! #     .await?;
//! use std::time::Duration;
//!
//! let client = dflockd_core::Client::builder()
//!     .servers([server.addr().to_string()]) // default: 127.0.0.1:6388
//!     .server_version(dflockd_core::ServerVersion::V2_1) // its tokens carry fences
//!     .build()?;
//!
//! let guard = client
//!     .lock("nightly-report")
//!     .acquire_timeout(Duration::from_secs(10))
//!     .lease_ttl(Duration::from_secs(20))
//!     .acquire()
//!     .await?;
//! // The lease renews in the background while `guard` lives.
//! assert!(guard.is_held());
//! println!("{} held with fence {:?}", guard.key(), guard.fence());
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | capability | API |
//! |---|---|
//! | locks and semaphores, FIFO | [`Client::lock`], [`Client::semaphore`], [`Lock::acquire`] |
//! | try once, no wait | [`Lock::try_acquire`] (`Ok(None)` when busy) |
//! | two-phase acquisition | [`Lock::enqueue`], [`Queued::wait`] |
//! | background renewal | every [`Guard`]; [`ClientBuilder::renew_ratio`] |
//! | lease loss reaches the critical section | [`HeldLock::is_held`], [`HeldLock::lost`] (guards deref to [`HeldLock`]), [`LeaseWatch`] |
//! | fencing tokens | [`HeldLock::fence`] |
//! | typed errors | [`Error`], [`Error::is_timeout`], [`Error::is_lease_lost`] |
//! | auth | [`ClientBuilder::auth_token`], [`ClientBuilder::auth_token_file`] |
//! | credentials replaced without a restart | [`Client::set_auth_token`], `Client::reload_tls`, a token file read for every new connection |
//! | TLS (feature `tls`) | [`ClientBuilder::tls`], [`TlsOptions`]; failures are [`Error::Tls`] with a [`TlsProblem`] |
//! | sharding | [`ClientBuilder::servers`], [`ShardStrategy`], [`Crc32`] |
//! | stats | [`Client::stats`], [`Stats`] |
//! | metrics (feature `metrics`) | `metrics` module: the table of metrics; `ClientBuilder::metrics_key_label` |
//! | configuration from the environment | [`Client::from_env`] |
//! | wire protocol, sans-IO | [`proto`] |
//!
//! # Cargo features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tls` | yes | TLS through rustls with the ring crypto provider (the same as `tls-ring`) |
//! | `tls-ring` | through `tls` | ring as the crypto provider |
//! | `tls-aws-lc-rs` | no | aws-lc-rs as the crypto provider; used when ring is on too. Building it needs a C compiler (and cmake on some platforms) |
//! | `tls-webpki-roots` | no | Mozilla's root certificates compiled in ([`TlsOptions::webpki_roots`], `DFLOCKD_TLS=webpki`), for images without a system store |
//! | `tls-base` | through the above | the TLS code without a crypto provider: the application installs one |
//! | `blocking` | no | [`blocking`]: the client for plain threads |
//! | `metrics` | no | metrics through the `metrics` facade crate, for any exporter: acquisitions, held locks, renewals, lease losses, releases, connections, server errors ([`metrics`] has the table). Off: no metrics code is compiled |
//!
//! The crypto provider a client uses is, in this order: the one given to
//! [`TlsOptions::crypto_provider`]; the process-wide default, if the application installed
//! one (`rustls::crypto::CryptoProvider::install_default`); aws-lc-rs if `tls-aws-lc-rs` is
//! on; ring if `tls-ring` (or `tls`) is on. Without any, building a TLS client fails with
//! [`Error::Config`] (it never panics). For a client with aws-lc-rs and without ring:
//! `default-features = false, features = ["tls-aws-lc-rs"]`.
//!
//! # How connections are used
//!
//! Connections are pooled per server and authenticated once. Non-blocking requests
//! (try-once acquires, releases, renewals, stats) go on shared connections (the one the
//! thread just used if it is free, else the first free one, another when all are busy, up to
//! 64, pipelined beyond that; idle ones close);
//! an acquire that has to wait for a busy key waits on a connection of its own, which then
//! holds the lock. Since the server releases a connection's locks when it closes, each lock
//! is renewed through the connection that holds it, often enough that the server's idle read
//! timeout never closes it.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod acquire;
#[cfg(feature = "blocking")]
pub mod blocking;
mod builder;
mod client;
mod conn;
mod duration;
mod election;
mod error;
mod guard;
mod health;
mod hot;
mod inner;
mod lease;
mod lock;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
mod metrics;
mod multi;
pub mod proto;
mod section;
mod semaphore;
mod shard;
mod stats;
mod version;

pub use acquire::{Enqueued, Queued};
pub use builder::ClientBuilder;
pub use client::Client;
pub use conn::PoolStatus;
#[cfg(feature = "tls-base")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls-base")))]
pub use conn::tls::TlsOptions;
pub use election::{Campaign, Election, Leadership, Term};
pub use error::{Error, LossReason, Result, TlsEvidence, TlsProblem};
pub use guard::{Guard, HeldLock};
pub use health::{Health, ServerHealth};
pub use lease::{LeaseWatch, Lost};
pub use lock::Lock;
pub use multi::{MultiGuard, MultiLock};
pub use proto::Token;
pub use section::{OnLeaseLoss, current_lock};
pub use semaphore::Semaphore;
pub use shard::{Crc32, ShardStrategy};
pub use stats::{IdleStats, LockStats, SemaphoreStats, Stats};
pub use version::{ParseVersionError, ServerVersion};
