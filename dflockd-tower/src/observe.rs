//! What a layer counts, and how often it logs what would otherwise be logged on every request;
//! with the `metrics` feature, what it records through the `metrics` facade crate ([`Meter`];
//! the names are in `dflockd_core::metrics`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a layer has counted since it was made, shared by its clones and the services it made:
/// keep a clone of the layer to read them ([`LockLayer::counters`](crate::LockLayer::counters)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Requests rejected because the extractor found no key in them
    /// ([`OnMissingKey::Reject`](crate::OnMissingKey::Reject) or
    /// [`BadRequest`](crate::OnMissingKey::BadRequest)).
    pub missing_key_rejected: u64,
    /// Requests without a key that ran unguarded
    /// ([`OnMissingKey::PassThrough`](crate::OnMissingKey::PassThrough)).
    pub passed_unguarded: u64,
    /// Requests that ran unguarded because the lock server could not be reached
    /// ([`OnUnreachable::FailOpen`](crate::OnUnreachable::FailOpen)).
    pub failed_open: u64,
    /// Requests that acquired their semaphore slot under the limit the lock server has for
    /// the key rather than the configured one (the limit was changed while the key was in
    /// use; see [`SemaphoreLayer`](crate::SemaphoreLayer)).
    pub adopted_limit: u64,
}

/// The live counters and the once-only and rate-limited log switches of one layer.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    missing_key_rejected: AtomicU64,
    passed_unguarded: AtomicU64,
    failed_open: AtomicU64,
    adopted_limit: AtomicU64,
    /// Set by the first request that passed without a key.
    passed_unguarded_logged: AtomicBool,
    /// Rejections for a missing key are logged at most once per period.
    pub(crate) missing_key_log: LogGate,
    /// Requests that fail open are logged at most once per period.
    pub(crate) failed_open_log: LogGate,
    /// The layer's name as a metrics label, made on first use.
    #[cfg(feature = "metrics")]
    layer_label: std::sync::OnceLock<metrics::SharedString>,
}

impl Observed {
    pub(crate) fn snapshot(&self) -> Counters {
        Counters {
            missing_key_rejected: self.missing_key_rejected.load(Ordering::Relaxed),
            passed_unguarded: self.passed_unguarded.load(Ordering::Relaxed),
            failed_open: self.failed_open.load(Ordering::Relaxed),
            adopted_limit: self.adopted_limit.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn missing_key_rejected(&self) {
        self.missing_key_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn adopted_limit(&self) {
        self.adopted_limit.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed_open(&self) {
        self.failed_open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that passed without a key; true the first time (to log it).
    pub(crate) fn passed_unguarded(&self) -> bool {
        self.passed_unguarded.fetch_add(1, Ordering::Relaxed);
        !self.passed_unguarded_logged.swap(true, Ordering::Relaxed)
    }
}

/// What a request records in the metrics: its layer's rejections and unguarded requests,
/// labelled with the layer's name. Nothing without the `metrics` feature.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    layer: metrics::SharedString,
}

impl Meter {
    /// The meter of a layer whose name is `name()` (asked once per layer).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(observed: &Observed, name: impl FnOnce() -> String) -> Self {
        Meter {
            #[cfg(feature = "metrics")]
            layer: observed
                .layer_label
                .get_or_init(|| metrics::SharedString::from(name()))
                .clone(),
        }
    }

    /// The layer rejected a request with `error`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn rejected(&self, error: &crate::Error) {
        #[cfg(feature = "metrics")]
        {
            use crate::Error;
            let reason = match error {
                Error::Busy { .. } => "busy",
                Error::Unavailable { .. } => "unavailable",
                Error::LeaseLost { .. } => "lease_lost",
                Error::InvalidKey { .. } => "invalid_key",
                Error::MissingKey { .. } | Error::KeyNotInRequest { .. } => "missing_key",
                _ => "config",
            };
            metrics::counter!(
                dflockd_core::metrics::LAYER_REJECTIONS_TOTAL,
                "layer" => self.layer.clone(),
                "reason" => reason
            )
            .increment(1);
        }
    }

    /// The layer let a request through without a lock: `failed_open` (the lock server was
    /// unreachable) or `missing_key` (no key, and the layer passes such requests).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn unguarded(&self, failed_open: bool) {
        #[cfg(feature = "metrics")]
        {
            let reason = if failed_open {
                "failed_open"
            } else {
                "missing_key"
            };
            metrics::counter!(
                dflockd_core::metrics::LAYER_UNGUARDED_TOTAL,
                "layer" => self.layer.clone(),
                "reason" => reason
            )
            .increment(1);
        }
    }
}

/// How often a [`LogGate`] lets an event through.
pub(crate) const LOG_PERIOD: Duration = Duration::from_secs(10);

/// Lets one event through per [`LOG_PERIOD`] and counts the ones it held back, so that a
/// condition hit by every request is logged, but not once per request.
#[derive(Debug, Default)]
pub(crate) struct LogGate {
    /// When the last event went through, and how many were held back since.
    last: Mutex<Option<(Instant, u64)>>,
}

impl LogGate {
    /// `Some(held_back)` when the event at `now` is to be logged: the first one, and then
    /// the first one after each period, with the number held back since the previous one.
    pub(crate) fn admit(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *last {
            Some((at, held_back)) if now.saturating_duration_since(*at) < LOG_PERIOD => {
                *held_back += 1;
                None
            }
            Some((at, held_back)) => {
                let suppressed = *held_back;
                (*at, *held_back) = (now, 0);
                Some(suppressed)
            }
            None => {
                *last = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_admits_one_event_per_period_and_counts_the_rest() {
        let gate = LogGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.admit(t0), Some(0));
        assert_eq!(gate.admit(t0), None);
        assert_eq!(gate.admit(t0 + LOG_PERIOD - Duration::from_millis(1)), None);
        assert_eq!(gate.admit(t0 + LOG_PERIOD), Some(2));
        assert_eq!(gate.admit(t0 + LOG_PERIOD), None);
        assert_eq!(gate.admit(t0 + 3 * LOG_PERIOD), Some(1));
        // A clock that goes backwards does not open the gate.
        assert_eq!(gate.admit(t0), None);
    }

    #[test]
    fn passing_unguarded_is_logged_once() {
        let observed = Observed::default();
        assert!(observed.passed_unguarded());
        assert!(!observed.passed_unguarded());
        observed.missing_key_rejected();
        let counters = observed.snapshot();
        assert_eq!(counters.passed_unguarded, 2);
        assert_eq!(counters.missing_key_rejected, 1);
    }
}
