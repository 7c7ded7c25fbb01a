//! Runtime support for the attribute macros (filled in with the macros).

#[doc(hidden)]
pub mod __private {}
