//! What the attribute macros record through the `metrics` facade crate (features `macros` and
//! `metrics`); the name is in [`dflockd_core::metrics`]. Without `metrics` it records nothing.

use std::time::Duration;

use dflockd_core::Error;

/// A guarded function (`function`) did not run its body, or had it cancelled, for `error`;
/// it waits up to `wait` (`None`: the client's default).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn skipped(function: &'static str, error: &Error, wait: Option<Duration>) {
    #[cfg(feature = "metrics")]
    {
        let reason = if matches!(error, Error::LeaseLost { .. }) {
            "lease_lost"
        } else if error.is_timeout() {
            match wait {
                Some(wait) if wait.is_zero() => "busy",
                _ => "timeout",
            }
        } else {
            "error"
        };
        metrics::counter!(
            dflockd_core::metrics::EXCLUSIVE_SKIPPED_TOTAL,
            "function" => function,
            "reason" => reason
        )
        .increment(1);
    }
}
