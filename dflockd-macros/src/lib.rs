//! Attribute macros for dflockd (docs are being written).
#![forbid(unsafe_code)]

use proc_macro::TokenStream;

mod attr;
mod expand;

/// Runs an `async fn` under a distributed lock.
#[proc_macro_attribute]
pub fn exclusive(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr::Kind::Lock, args.into(), item.into()).into()
}

/// Runs an `async fn` under a distributed semaphore slot.
#[proc_macro_attribute]
pub fn exclusive_semaphore(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr::Kind::Semaphore, args.into(), item.into()).into()
}
