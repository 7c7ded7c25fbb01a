//! The configuration a layer hands to its services: settings, the key extractor and the
//! rejection mode, shared by every clone.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dflockd_core::Client;

use crate::limits::AdoptedLimits;
use crate::observe::Observed;
use crate::{OnLeaseLoss, OnMissingKey, OnUnreachable};

/// The wait when none is configured.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The settings shared by both layers.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) client: Client,
    /// The limit of keys without one of their own: `None` for a lock (a `LockLayer`).
    pub(crate) limit: Option<u32>,
    pub(crate) lease: Option<Duration>,
    pub(crate) wait: Duration,
    pub(crate) use_request_deadline: bool,
    pub(crate) on_missing_key: OnMissingKey,
    pub(crate) on_unreachable: OnUnreachable,
    pub(crate) on_loss: OnLeaseLoss,
    pub(crate) hold_for_body: bool,
    /// The name in logs and errors; `None` for the extractor's own description.
    pub(crate) name: Option<Arc<str>>,
}

/// Everything a service needs, shared by its clones: the one configuration struct of a layer.
pub(crate) struct Shared<K, R> {
    pub(crate) settings: Settings,
    pub(crate) extractor: Arc<K>,
    pub(crate) reject: Arc<R>,
    /// Counters and log switches: shared by clones of the layer, not reset by a setter.
    pub(crate) observed: Arc<Observed>,
    /// The server's limits for keys where they differ from the configured ones.
    pub(crate) limits: Arc<AdoptedLimits>,
}

impl<K, R> Shared<K, R> {
    pub(crate) fn new(client: Client, limit: Option<u32>, extractor: K, reject: R) -> Self {
        Shared {
            settings: Settings {
                client,
                limit,
                lease: None,
                wait: DEFAULT_WAIT,
                use_request_deadline: true,
                on_missing_key: OnMissingKey::Reject,
                on_unreachable: OnUnreachable::FailClosed,
                on_loss: OnLeaseLoss::Abort,
                hold_for_body: false,
                name: None,
            },
            extractor: Arc::new(extractor),
            reject: Arc::new(reject),
            observed: Arc::default(),
            limits: Arc::default(),
        }
    }

    /// The same configuration with another rejection mode.
    pub(crate) fn with_reject<R2>(self, reject: R2) -> Shared<K, R2> {
        Shared {
            settings: self.settings,
            extractor: self.extractor,
            reject: Arc::new(reject),
            observed: self.observed,
            limits: self.limits,
        }
    }

    /// The rejection mode, to change it (copied first if services share it already).
    pub(crate) fn reject_mut(&mut self) -> &mut R
    where
        R: Clone,
    {
        Arc::make_mut(&mut self.reject)
    }
}

impl<K, R> Clone for Shared<K, R> {
    fn clone(&self) -> Self {
        Shared {
            settings: self.settings.clone(),
            extractor: self.extractor.clone(),
            reject: self.reject.clone(),
            observed: self.observed.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl<K, R: fmt::Debug> fmt::Debug for Shared<K, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("settings", &self.settings)
            .field("reject", &self.reject)
            .field("counters", &self.observed.snapshot())
            .finish_non_exhaustive()
    }
}
