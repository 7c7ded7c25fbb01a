//! The `metrics` module without the feature: the same calls, empty, on types without data,
//! so call sites need no `cfg` and compile to nothing. The names, labels and what each call
//! records are in `metrics.rs`.

use std::time::Instant;

use crate::error::LossReason;
use crate::error::Result;
use crate::proto::{Family, ServerStatus};

#[derive(Clone, Default)]
pub(crate) struct ClientMetrics;

impl ClientMetrics {
    #[inline(always)]
    pub(crate) fn labels(&self, _: Family, _: &str) -> Labels {
        Labels
    }
}

// Not `Copy`, as the real one: call sites clone it.
#[derive(Clone, Debug)]
pub(crate) struct Labels;

#[inline(always)]
pub(crate) fn acquired<T>(_: &Labels, _: &Result<T>, _: bool, _: Instant) {}

#[inline(always)]
pub(crate) fn enqueued<T>(_: &Labels, _: &Result<T>, _: bool, _: Instant) {}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Stopwatch;

impl Stopwatch {
    #[inline(always)]
    pub(crate) fn start() -> Self {
        Stopwatch
    }

    #[inline(always)]
    pub(crate) fn since(_: Instant) -> Self {
        Stopwatch
    }
}

#[inline(always)]
pub(crate) fn queued(_: &Labels, _: Stopwatch) {}

#[derive(Debug, Default)]
pub(crate) struct Lease;

impl Lease {
    #[inline(always)]
    pub(crate) fn untracked() -> Self {
        Lease
    }

    #[inline(always)]
    pub(crate) fn held(_: &Labels) -> Self {
        Lease
    }

    #[inline(always)]
    pub(crate) fn ended(&self) {}

    #[inline(always)]
    pub(crate) fn lost(&self, _: LossReason) {}

    #[inline(always)]
    pub(crate) fn released(&self, _: &Result<()>) {}

    #[inline(always)]
    pub(crate) fn background_release(&self) -> Release {
        Release
    }
}

#[derive(Debug, Default)]
pub(crate) struct Release;

impl Release {
    #[inline(always)]
    pub(crate) fn untracked() -> Self {
        Release
    }

    #[inline(always)]
    pub(crate) fn answered(&self, _: bool) {}
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Renewal {
    Ok,
    Refused,
    Failed,
}

#[derive(Debug)]
pub(crate) struct Renew;

impl Renew {
    #[inline(always)]
    pub(crate) fn sent() -> Self {
        Renew
    }

    #[inline(always)]
    pub(crate) fn answered(self, _: Renewal) {}
}

#[inline(always)]
pub(crate) fn server_error(_: &str, _: &ServerStatus) {}

#[derive(Debug, Default)]
pub(crate) struct ConnGauges;

impl ConnGauges {
    #[inline(always)]
    pub(crate) fn opened(_: &std::sync::Arc<str>) -> Self {
        ConnGauges
    }

    #[inline(always)]
    pub(crate) fn report(&self, _: bool, _: bool, _: usize) {}
}
