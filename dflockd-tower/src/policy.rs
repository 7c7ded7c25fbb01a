//! The policies a layer applies when something other than a busy key gets in the way.

/// What happens when the lease is lost while a request holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnLeaseLoss {
    /// Drop the inner future (or cut the response body short) and reject with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost): HTTP 503, gRPC `unavailable`, or the
    /// typed error. The default.
    #[default]
    Abort,
    /// Let the request finish; the loss is only recorded (a `warn` event and the span's
    /// `outcome`). Handlers can still check [`HeldLock::is_held`](crate::HeldLock::is_held).
    Finish,
}
