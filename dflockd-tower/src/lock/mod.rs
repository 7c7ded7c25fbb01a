//! The keyed lock and semaphore middleware: layer (configuration), service (the inner service
//! and `call`), future (the acquiring → calling → done state machine).

pub(crate) mod future;
pub(crate) mod layer;
pub(crate) mod service;
