//! Metrics through the [`metrics`](https://docs.rs/metrics) facade crate (feature `metrics`):
//! install any recorder (Prometheus, StatsD, OpenTelemetry, ...) and the client reports to it.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // e.g. metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! dflockd_core::metrics::describe(); // help texts and units, for exporters that show them
//! let client = dflockd_core::Client::builder()
//!     // Optional: a `key` label, from a low-cardinality part of the key ("tenant:42" -> "tenant").
//!     .metrics_key_label(|key| Some(key.split(':').next()?.to_owned()))
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! Install the recorder before the client's first request: connections resolve their
//! gauges when they open.
//!
//! # The metrics
//!
//! Units are in the names; labels take a few fixed values. The lock key is never a label
//! unless a [`ClientBuilder::metrics_key_label`](crate::ClientBuilder::metrics_key_label)
//! function gives one (the `key` label of the metrics marked *key*).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `dflockd_acquires_total` | counter | `kind`, `outcome`, *key* | acquisitions ended: `acquire`, `try_acquire`, the two halves of two-phase acquisition (an enqueue that queued is counted by its `wait`), every key of a `multi_lock`, sections (`run`), the tower layers and the attribute macros. Cancelled ones are not counted |
//! | `dflockd_acquire_duration_seconds` | histogram, seconds | `kind`, `outcome`, *key* | how long each of those took, from the call to its outcome (for two-phase acquisition, from the enqueue) |
//! | `dflockd_queued_duration_seconds` | histogram, seconds | `kind`, *key* | grants after a wait in the server's queue: from the request that queued to the grant |
//! | `dflockd_held` | gauge | `kind`, *key* | locks and semaphore slots this process holds now (granted and neither released, dropped nor lost) |
//! | `dflockd_renewals_total` | counter | `outcome` | lease renewals (background and `Guard::renew`) by answer |
//! | `dflockd_lease_losses_total` | counter | `kind`, `reason`, *key* | leases lost ([`LossReason`]) |
//! | `dflockd_releases_total` | counter | `kind`, `outcome`, *key* | releases: `Guard::release` (and what releases through it: sections, the tower layers, the macros) by its result, and the background releases of dropped guards by the server's answer |
//! | `dflockd_connections_open` | gauge | `server` | connections open to the server |
//! | `dflockd_connections_in_use` | gauge | `server` | open connections that hold a lock, carry a request or are reserved for a wait |
//! | `dflockd_requests_in_flight` | gauge | `server` | requests sent and not yet answered (renewals and background releases included) |
//! | `dflockd_server_errors_total` | counter | `server`, `status` | error statuses the server answered with |
//! | `dflockd_layer_rejections_total` | counter | `layer`, `reason` | requests a tower layer rejected (crate `dflockd-tower`, feature `metrics`) |
//! | `dflockd_layer_unguarded_total` | counter | `layer`, `reason` | requests a tower layer let through without a lock |
//! | `dflockd_exclusive_skipped_total` | counter | `function`, `reason` | calls of an `#[exclusive]` function whose body did not run, or was cancelled (crate `dflockd`, features `macros` and `metrics`) |
//!
//! The labels and their values:
//!
//! | label | values |
//! |---|---|
//! | `kind` | `lock`, `semaphore` |
//! | `outcome` (acquires) | `granted`; `busy` (a try-once found the key taken); `timeout` (no slot within the acquire timeout); `error` (anything else: the server refused, the connection failed, a bad argument) |
//! | `outcome` (renewals) | `ok`; `refused` (the lease was gone: it is lost); `error` (a transient refusal, retried; a malformed answer; no answer before the connection closed) |
//! | `outcome` (releases) | `ok`; `lease_lost` (the release found the lease lost, or the server no longer knew it); `error` (the release's fate is unknown: timeout, connection failure) |
//! | `reason` (lease losses) | `renew_refused`, `connection_lost`, `deadline_exceeded`, `expired` |
//! | `server` | the server's address as configured |
//! | `status` | the server's status word: `error`, `error_max_locks`, `error_max_waiters`, `error_limit_mismatch`, `error_already_enqueued`, `error_not_enqueued`, `error_lease_expired`, `error_draining`, `error_auth`, `error_not_leader`; any other word the server sends is `error_other` |
//! | `layer` | the layer's name (`LockLayer::name`, or its key extractor's description) |
//! | `reason` (layer rejections) | `busy`, `unavailable`, `lease_lost`, `invalid_key`, `missing_key`, `config` |
//! | `reason` (layer unguarded) | `missing_key` (`OnMissingKey::PassThrough`), `failed_open` (`OnUnreachable::FailOpen`) |
//! | `function` | the guarded function's path (`module::function`) |
//! | `reason` (macro skips) | `busy`, `timeout`, `lease_lost` (the body was cancelled), `error` |
//! | `key` | what the key-label function returned (none when it returned `None`) |
//!
//! The `debug` and `warn` events the client logs with `tracing` at the same places use the
//! same field names (`kind`, `outcome`, `reason`, `server`, `status`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use metrics::{Gauge, Label, SharedString, Unit};

use crate::error::LossReason;
use crate::error::{Error, Result};
use crate::proto::{Family, ServerStatus};

/// Acquisitions ended, by `kind` and `outcome`.
pub const ACQUIRES_TOTAL: &str = "dflockd_acquires_total";
/// How long acquisitions took, in seconds, by `kind` and `outcome`.
pub const ACQUIRE_DURATION_SECONDS: &str = "dflockd_acquire_duration_seconds";
/// Time from a request that queued to its grant, in seconds, by `kind`.
pub const QUEUED_DURATION_SECONDS: &str = "dflockd_queued_duration_seconds";
/// Locks and slots held now, by `kind`.
pub const HELD: &str = "dflockd_held";
/// Lease renewals, by `outcome`.
pub const RENEWALS_TOTAL: &str = "dflockd_renewals_total";
/// Leases lost, by `kind` and `reason`.
pub const LEASE_LOSSES_TOTAL: &str = "dflockd_lease_losses_total";
/// Releases, by `kind` and `outcome`.
pub const RELEASES_TOTAL: &str = "dflockd_releases_total";
/// Connections open, by `server`.
pub const CONNECTIONS_OPEN: &str = "dflockd_connections_open";
/// Connections holding a lock, carrying a request or reserved for a wait, by `server`.
pub const CONNECTIONS_IN_USE: &str = "dflockd_connections_in_use";
/// Requests waiting for their answer, by `server`.
pub const REQUESTS_IN_FLIGHT: &str = "dflockd_requests_in_flight";
/// Error statuses answered by the server, by `server` and `status`.
pub const SERVER_ERRORS_TOTAL: &str = "dflockd_server_errors_total";
/// Requests rejected by a tower layer, by `layer` and `reason`.
pub const LAYER_REJECTIONS_TOTAL: &str = "dflockd_layer_rejections_total";
/// Requests a tower layer let through without a lock, by `layer` and `reason`.
pub const LAYER_UNGUARDED_TOTAL: &str = "dflockd_layer_unguarded_total";
/// Calls of an `#[exclusive]` function whose body did not run (or was cancelled), by
/// `function` and `reason`.
pub const EXCLUSIVE_SKIPPED_TOTAL: &str = "dflockd_exclusive_skipped_total";

/// Describes every metric above (help text and unit) to the installed recorder, for
/// exporters that show them (Prometheus' `# HELP` lines). Optional; call it after installing
/// the recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        ACQUIRES_TOTAL,
        "Lock and semaphore acquisitions ended, by outcome"
    );
    describe_histogram!(
        ACQUIRE_DURATION_SECONDS,
        Unit::Seconds,
        "How long acquisitions took, by outcome"
    );
    describe_histogram!(
        QUEUED_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a request that queued to its grant"
    );
    describe_gauge!(HELD, "Locks and semaphore slots held by this process");
    describe_counter!(RENEWALS_TOTAL, "Lease renewals, by answer");
    describe_counter!(LEASE_LOSSES_TOTAL, "Leases lost, by reason");
    describe_counter!(RELEASES_TOTAL, "Releases, by outcome");
    describe_gauge!(CONNECTIONS_OPEN, "Connections open to the server");
    describe_gauge!(
        CONNECTIONS_IN_USE,
        "Connections holding a lock, carrying a request or reserved for a wait"
    );
    describe_gauge!(REQUESTS_IN_FLIGHT, "Requests sent and not yet answered");
    describe_counter!(SERVER_ERRORS_TOTAL, "Error statuses answered by the server");
    describe_counter!(LAYER_REJECTIONS_TOTAL, "Requests rejected by a tower layer");
    describe_counter!(
        LAYER_UNGUARDED_TOTAL,
        "Requests a tower layer let through without a lock"
    );
    describe_counter!(
        EXCLUSIVE_SKIPPED_TOTAL,
        "Calls of an exclusive function whose body did not run or was cancelled"
    );
}

/// The function that gives the `key` label (see `ClientBuilder::metrics_key_label`).
pub(crate) type KeyLabelFn = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A client's metrics settings.
#[derive(Clone, Default)]
pub(crate) struct ClientMetrics {
    pub(crate) key_label: Option<KeyLabelFn>,
}

impl ClientMetrics {
    /// The labels of a handle on `key`.
    pub(crate) fn labels(&self, family: Family, key: &str) -> Labels {
        Labels {
            kind: match family {
                Family::Lock => "lock",
                Family::Semaphore => "semaphore",
            },
            key: self
                .key_label
                .as_ref()
                .and_then(|f| f(key))
                .map(SharedString::from),
        }
    }
}

/// What the events of one lock handle (and its guards) are labelled with.
#[derive(Clone, Debug)]
pub(crate) struct Labels {
    kind: &'static str,
    key: Option<SharedString>,
}

impl Labels {
    /// `kind`, the key label if any, and `name = value`.
    fn with(&self, name: &'static str, value: &'static str) -> Vec<Label> {
        let mut labels = self.base();
        labels.push(Label::from_static_parts(name, value));
        labels
    }

    /// `kind` and the key label if any.
    fn base(&self) -> Vec<Label> {
        let mut labels = Vec::with_capacity(3);
        labels.push(Label::from_static_parts("kind", self.kind));
        if let Some(key) = &self.key {
            labels.push(Label::new("key", key.clone()));
        }
        labels
    }
}

/// An acquisition that started at `started` ended with `result`; `try_once`: it did not
/// wait (a timeout is the key being busy).
pub(crate) fn acquired<T>(labels: &Labels, result: &Result<T>, try_once: bool, started: Instant) {
    let outcome = match result {
        Ok(_) => "granted",
        Err(Error::Timeout { .. }) if try_once => "busy",
        Err(Error::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    acquire_ended(labels, outcome, started);
}

/// The first half of a two-phase acquisition ended: counted unless it `queued` (its wait
/// is).
pub(crate) fn enqueued<T>(labels: &Labels, result: &Result<T>, queued: bool, started: Instant) {
    match result {
        Ok(_) if queued => {}
        Ok(_) => acquire_ended(labels, "granted", started),
        Err(_) => acquire_ended(labels, "error", started),
    }
}

fn acquire_ended(labels: &Labels, outcome: &'static str, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    metrics::counter!(ACQUIRES_TOTAL, labels.with("outcome", outcome)).increment(1);
    metrics::histogram!(ACQUIRE_DURATION_SECONDS, labels.with("outcome", outcome)).record(seconds);
}

/// When a wait in the server's queue began (nothing without the feature).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch(Instant::now())
    }

    pub(crate) fn since(at: Instant) -> Self {
        Stopwatch(at)
    }
}

/// A request that queued (`since`) was granted.
pub(crate) fn queued(labels: &Labels, since: Stopwatch) {
    metrics::histogram!(QUEUED_DURATION_SECONDS, labels.base())
        .record(since.0.elapsed().as_secs_f64());
}

/// The metrics of one lease, kept with its shared state: it counts in `dflockd_held` from its
/// registration until it stops being held, which the lease state reports exactly once
/// ([`Lease::ended`]).
#[derive(Debug, Default)]
pub(crate) struct Lease {
    labels: Option<Labels>,
    held: Option<Gauge>,
}

impl Lease {
    /// A lease that is not counted (a grant nobody registered).
    pub(crate) fn untracked() -> Self {
        Lease::default()
    }

    /// A lease held from now on.
    pub(crate) fn held(labels: &Labels) -> Self {
        let held = metrics::gauge!(HELD, labels.base());
        held.increment(1.0);
        Lease {
            labels: Some(labels.clone()),
            held: Some(held),
        }
    }

    /// It is no longer held (released, dropped or lost). Called once.
    pub(crate) fn ended(&self) {
        if let Some(held) = &self.held {
            held.decrement(1.0);
        }
    }

    /// It was lost for `reason`.
    pub(crate) fn lost(&self, reason: LossReason) {
        let Some(labels) = &self.labels else { return };
        let reason = match reason {
            LossReason::RenewRefused => "renew_refused",
            LossReason::ConnectionLost => "connection_lost",
            LossReason::DeadlineExceeded => "deadline_exceeded",
            LossReason::Expired => "expired",
        };
        metrics::counter!(LEASE_LOSSES_TOTAL, labels.with("reason", reason)).increment(1);
    }

    /// `Guard::release` ended with `result`.
    pub(crate) fn released(&self, result: &Result<()>) {
        let Some(labels) = &self.labels else { return };
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) if e.is_lease_lost() => "lease_lost",
            Err(_) => "error",
        };
        metrics::counter!(RELEASES_TOTAL, labels.with("outcome", outcome)).increment(1);
    }

    /// What a background release of this lease counts with.
    pub(crate) fn background_release(&self) -> Release {
        Release(self.labels.clone())
    }
}

/// A release sent in the background, counted when the server answers it.
#[derive(Debug, Default)]
pub(crate) struct Release(Option<Labels>);

impl Release {
    /// Not counted (the give-back of a lease already lost).
    pub(crate) fn untracked() -> Self {
        Release(None)
    }

    /// The server answered: `refused` with an error status (the lease was gone).
    pub(crate) fn answered(&self, refused: bool) {
        if let Some(labels) = &self.0 {
            let outcome = if refused { "lease_lost" } else { "ok" };
            metrics::counter!(RELEASES_TOTAL, labels.with("outcome", outcome)).increment(1);
        }
    }
}

/// How a renew ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Renewal {
    /// Renewed.
    Ok,
    /// Refused: the lease was gone.
    Refused,
    /// A transient refusal, a malformed answer, or no answer before the connection closed.
    Failed,
}

/// A renew sent: counted with its answer ([`Renew::answered`]), or as failed when it is
/// dropped unanswered (its connection died, or it outlived the request timeout).
#[derive(Debug)]
pub(crate) struct Renew {
    counted: bool,
}

impl Renew {
    pub(crate) fn sent() -> Self {
        Renew { counted: false }
    }

    pub(crate) fn answered(mut self, outcome: Renewal) {
        self.counted = true;
        let outcome = match outcome {
            Renewal::Ok => "ok",
            Renewal::Refused => "refused",
            Renewal::Failed => "error",
        };
        metrics::counter!(RENEWALS_TOTAL, "outcome" => outcome).increment(1);
    }
}

impl Drop for Renew {
    fn drop(&mut self) {
        if !self.counted {
            metrics::counter!(RENEWALS_TOTAL, "outcome" => "error").increment(1);
        }
    }
}

/// `server` answered with the error `status`.
pub(crate) fn server_error(server: &str, status: &ServerStatus) {
    let status = match status {
        ServerStatus::Other(_) => "error_other",
        ServerStatus::Error => "error",
        ServerStatus::MaxLocks => "error_max_locks",
        ServerStatus::MaxWaiters => "error_max_waiters",
        ServerStatus::LimitMismatch => "error_limit_mismatch",
        ServerStatus::AlreadyEnqueued => "error_already_enqueued",
        ServerStatus::NotEnqueued => "error_not_enqueued",
        ServerStatus::LeaseExpired => "error_lease_expired",
        ServerStatus::Draining => "error_draining",
        ServerStatus::Auth => "error_auth",
        ServerStatus::NotLeader(_) => "error_not_leader",
    };
    metrics::counter!(SERVER_ERRORS_TOTAL, "server" => server.to_owned(), "status" => status)
        .increment(1);
}

/// The gauges of one connection: counted open from its creation until it dies (or is
/// dropped), in use and with requests in flight as its state says. Reported under the
/// connection's state lock ([`ConnGauges::report`]), so the differences it applies are exact.
#[derive(Debug)]
pub(crate) struct ConnGauges {
    open: Gauge,
    in_use: Gauge,
    in_flight: Gauge,
    /// What was reported last.
    was_dead: AtomicBool,
    was_in_use: AtomicBool,
    was_pending: AtomicUsize,
}

impl Default for ConnGauges {
    /// Gauges that record nothing (for tests of the state).
    fn default() -> Self {
        ConnGauges::with(Gauge::noop(), Gauge::noop(), Gauge::noop())
    }
}

impl ConnGauges {
    fn with(open: Gauge, in_use: Gauge, in_flight: Gauge) -> Self {
        open.increment(1.0);
        ConnGauges {
            open,
            in_use,
            in_flight,
            was_dead: AtomicBool::new(false),
            was_in_use: AtomicBool::new(false),
            was_pending: AtomicUsize::new(0),
        }
    }

    /// A connection to `server` opened.
    pub(crate) fn opened(server: &Arc<str>) -> Self {
        let server = SharedString::from(server.clone());
        let gauge = |name: &'static str| metrics::gauge!(name, "server" => server.clone());
        ConnGauges::with(
            gauge(CONNECTIONS_OPEN),
            gauge(CONNECTIONS_IN_USE),
            gauge(REQUESTS_IN_FLIGHT),
        )
    }

    /// The connection's state now: `dead`, `in_use`, `pending` requests. Called under its
    /// state lock (or when it is dropped), so a load and a store are one step.
    pub(crate) fn report(&self, dead: bool, in_use: bool, pending: usize) {
        // Loads first: most calls change nothing, and then write nothing.
        let in_use = in_use && !dead;
        if dead && !self.was_dead.load(Ordering::Relaxed) {
            self.was_dead.store(true, Ordering::Relaxed);
            self.open.decrement(1.0);
        }
        if self.was_in_use.load(Ordering::Relaxed) != in_use {
            self.was_in_use.store(in_use, Ordering::Relaxed);
            if in_use {
                self.in_use.increment(1.0);
            } else {
                self.in_use.decrement(1.0);
            }
        }
        let was = self.was_pending.load(Ordering::Relaxed);
        if was != pending {
            self.was_pending.store(pending, Ordering::Relaxed);
            if pending > was {
                self.in_flight.increment((pending - was) as f64);
            } else {
                self.in_flight.decrement((was - pending) as f64);
            }
        }
    }
}

impl Drop for ConnGauges {
    /// A connection dropped without dying (its runtime ended) leaves the gauges as well.
    fn drop(&mut self) {
        self.report(true, false, 0);
    }
}
