//! The attribute macros of [dflockd](https://docs.rs/dflockd): one line on an `async fn` makes
//! it run at most once at a time (or at most `limit` times) per key across every replica.
//!
//! Use them through the `dflockd` crate (feature `macros`, on by default), which holds the
//! runtime support they expand to: `#[dflockd::exclusive]`, `#[dflockd::exclusive_semaphore]`.
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = dflockd_testkit::TestServer::start().await?;
//! // Without `client = ...`, the default client: DFLOCKD_SERVERS, or 127.0.0.1:6388.
//! # dflockd::set_default_client(dflockd::Client::builder().servers([server.addr_string()]).build()?);
//! #[dflockd::exclusive(key = "nightly-cleanup", wait = "0s", hold_at_least = "30s")]
//! async fn nightly_cleanup() {
//!     // runs on one replica per schedule tick; the others skip
//! }
//!
//! #[dflockd::exclusive_semaphore(key = "exports:{tenant}", limit = 2, wait = "1m")]
//! async fn export(tenant: &str) -> Result<(), dflockd::Error> {
//!     let lock = dflockd::current_lock().expect("inside the body");
//!     println!("exporting for {tenant} with fence {:?}", lock.fence());
//!     Ok(())
//! }
//!
//! nightly_cleanup().await;
//! export("acme").await?;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | what | where |
//! |---|---|
//! | key templates with `{param}`, `{param.field}`, `{self.field}`, checked at compile time, or any `Display` expression (`key = req.key()`) | [`exclusive`](macro@exclusive#the-key) |
//! | queue up to `wait`, or skip if busy (`wait = "0s"`) | [`exclusive`](macro@exclusive#arguments) |
//! | durations as literals checked at compile time (`"1m30s"`, `"10"`), or `Duration` expressions (`wait = config.wait`) | [`exclusive`](macro@exclusive#arguments) |
//! | busy and failures by return type: `Result`, `Option`, `()` | [`exclusive`](macro@exclusive#busy-failures-and-the-return-type) |
//! | lease renewed in the background; the body cancelled on lease loss (or not) | [`exclusive`](macro@exclusive#lease-loss) |
//! | minimum hold time (`hold_at_least`) | [`exclusive`](macro@exclusive#minimum-hold) |
//! | explicit or process-wide default client | [`exclusive`](macro@exclusive#which-client) |
//! | token and fence inside the body | [`exclusive`](macro@exclusive#inside-the-body) |
//! | counting semaphores (`limit`) | [`exclusive_semaphore`](macro@exclusive_semaphore) |
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

mod attr;
mod expand;

#[doc = include_str!("../doc/exclusive.md")]
#[proc_macro_attribute]
pub fn exclusive(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr::Kind::Lock, args.into(), item.into()).into()
}

#[doc = include_str!("../doc/exclusive_semaphore.md")]
#[proc_macro_attribute]
pub fn exclusive_semaphore(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr::Kind::Semaphore, args.into(), item.into()).into()
}
