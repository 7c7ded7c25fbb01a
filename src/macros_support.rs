//! Runtime support for [`#[dflockd::exclusive]`](crate::exclusive) and
//! [`#[dflockd::exclusive_semaphore]`](crate::exclusive_semaphore): the process-wide default
//! client, the task-local [`current_lock`], and (hidden) what the expansion calls.

use std::future::Future;
use std::sync::{PoisonError, RwLock};

use dflockd_core::{Client, Error, HeldLock};

static DEFAULT_CLIENT: RwLock<Option<Client>> = RwLock::new(None);

/// Installs the client that `#[dflockd::exclusive]` functions without a `client = ...`
/// argument use, replacing the previous default (which is returned).
///
/// Without an installed client, the first such call builds one from the environment
/// ([`Client::from_env`]: `DFLOCKD_SERVERS`, default `127.0.0.1:6388`) and keeps it.
///
/// ```
/// # fn main() -> Result<(), dflockd::Error> {
/// let client = dflockd::Client::builder().servers(["10.0.0.5:6388"]).build()?;
/// dflockd::set_default_client(client);
/// assert_eq!(dflockd::default_client()?.servers(), ["10.0.0.5:6388"]);
/// # Ok(()) }
/// ```
pub fn set_default_client(client: Client) -> Option<Client> {
    DEFAULT_CLIENT
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .replace(client)
}

/// The process-wide default client: the one installed with [`set_default_client`], or else
/// one built from the environment with [`Client::from_env`] on first use and kept.
///
/// # Errors
/// [`Error::Config`] when the environment holds a malformed setting (nothing is kept then;
/// the next call tries again).
pub fn default_client() -> Result<Client, Error> {
    if let Some(client) = &*DEFAULT_CLIENT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
    {
        return Ok(client.clone());
    }
    let mut slot = DEFAULT_CLIENT
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(client) = &*slot {
        return Ok(client.clone());
    }
    let client = Client::from_env()?;
    *slot = Some(client.clone());
    Ok(client)
}

/// The lock of the `#[dflockd::exclusive]` (or `exclusive_semaphore`) function, as seen from
/// its body: key, token, fencing token, limit and the lease state. It is
/// [`dflockd_core::HeldLock`], the same view the tower layer hands to handlers.
///
/// Obtained with [`current_lock`]. Pass [`fence`](HeldLock::fence) along with writes to a
/// shared resource so that it can reject writes from a holder whose lease was lost meanwhile.
/// With `on_lease_loss = "continue"`, [`is_held`](HeldLock::is_held) tells the body whether it
/// still holds the lock.
pub type CurrentLock = HeldLock;

/// The lock held by the innermost scoped section whose work is running in this task: a
/// `#[dflockd::exclusive]` / `#[dflockd::exclusive_semaphore]` function, or
/// [`Lock::run`](dflockd_core::Lock::run) and its kin (the macros expand to them). `None`
/// outside one.
///
/// It is a tokio task-local, set while the body is polled: tasks the body spawns do not see
/// it (pass them [`HeldLock::watch`] or the values they need). The same as
/// [`dflockd_core::current_lock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dflockd::Error> {
/// # let server = dflockd_testkit::TestServer::builder()
/// #     .version(dflockd_testkit::ServerVersion::V2_1)
/// #     .start()
/// #     .await
/// #     .unwrap();
/// # let client = dflockd::Client::builder()
/// #     .servers([server.addr_string()])
/// #     .server_version(dflockd::ServerVersion::V2_1)
/// #     .build()?;
/// #[dflockd::exclusive(key = "ledger:{account}", client = client)]
/// async fn post(client: &dflockd::Client, account: u64) -> Result<u64, dflockd::Error> {
///     let lock = dflockd::current_lock().expect("inside an exclusive fn");
///     // e.g. UPDATE ledger SET ... WHERE account = $1 AND fence < $2
///     // (`None` unless the client was told its servers issue fences: dflockd 2.1 and later)
///     Ok(lock.fence().expect("a v2.1 server"))
/// }
/// assert!(post(&client, 7).await? > 0);
/// assert!(dflockd::current_lock().is_none());
/// # Ok(()) }
/// ```
#[must_use]
pub fn current_lock() -> Option<CurrentLock> {
    dflockd_core::current_lock()
}

#[doc(hidden)]
pub(crate) mod __private {
    //! What the attribute macros expand to. Not a public API: it changes with the macros.

    pub use core::option::Option::{self, None, Some};
    pub use core::time::Duration;
    pub use std::string::String;
    pub use std::{concat, format, module_path};

    use super::report;
    use dflockd_core::{Client, Error, HeldLock};
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Instant;
    use tracing::{Instrument, Span};

    /// What to do when the lease is lost while the body runs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum OnLeaseLoss {
        /// Drop the body future and report [`Error::LeaseLost`].
        Cancel,
        /// Let the body finish; log the loss.
        Continue,
    }

    /// One call of a guarded function: what to acquire and how.
    #[derive(Debug)]
    pub struct Spec {
        /// `module::path::function`, for logs.
        pub function: &'static str,
        /// The formatted key.
        pub key: String,
        /// `Some` for a semaphore.
        pub limit: Option<u32>,
        /// How long to queue; `None` is the client's default.
        pub wait: Option<Duration>,
        /// The lease; `None` is the client's default.
        pub lease: Option<Duration>,
        /// Minimum hold time, counted from the acquisition.
        pub hold_at_least: Option<Duration>,
        /// Lease-loss policy.
        pub on_lease_loss: OnLeaseLoss,
    }

    /// The types `client = ...` accepts.
    #[diagnostic::on_unimplemented(
        message = "`client = ...` must give a `dflockd::Client`, `&Client` or `Arc<Client>`, not `{Self}`",
        label = "not a dflockd client"
    )]
    pub trait AsClient {
        /// The client.
        fn as_client(&self) -> &Client;
    }

    impl AsClient for Client {
        fn as_client(&self) -> &Client {
            self
        }
    }

    impl AsClient for Arc<Client> {
        fn as_client(&self) -> &Client {
            self
        }
    }

    impl<T: AsClient + ?Sized> AsClient for &T {
        fn as_client(&self) -> &Client {
            (**self).as_client()
        }
    }

    impl<T: AsClient + ?Sized> AsClient for &mut T {
        fn as_client(&self) -> &Client {
            (**self).as_client()
        }
    }

    /// `client = expr`.
    pub fn client_from<C: AsClient + ?Sized>(client: &C) -> Result<Client, Error> {
        Ok(client.as_client().clone())
    }

    /// `key = expr` (an expression, not a template): the key is its `Display` output.
    pub fn key_from<K: ToKey + ?Sized>(key: &K) -> String {
        key.to_key()
    }

    /// What `key = expr` accepts: anything with `Display`.
    #[diagnostic::on_unimplemented(
        message = "`key = ...` must be a string template or an expression that implements `Display`, not `{Self}`",
        label = "not `Display`",
        note = "a string literal is a template (`key = \"order:{{req.id}}\"`); any other expression is the whole key, formatted with `Display` at each call (`key = format!(\"order:{{}}\", req.id)`, `key = req.key()`)"
    )]
    pub trait ToKey {
        /// The key.
        fn to_key(&self) -> String;
    }

    impl<T: core::fmt::Display + ?Sized> ToKey for T {
        fn to_key(&self) -> String {
            self.to_string()
        }
    }

    /// What `wait`, `lease` and `hold_at_least` accept as an expression.
    #[diagnostic::on_unimplemented(
        message = "a duration argument (`wait`, `lease`, `hold_at_least`) must be a string literal or a `std::time::Duration`, not `{Self}`",
        label = "not a `Duration`",
        note = "a string literal is parsed at compile time (`wait = \"1m30s\"`; a plain number is seconds: `wait = \"10\"`); any other expression is evaluated at each call and must give a `std::time::Duration` or a reference to one (`wait = config.wait`)"
    )]
    pub trait AsDuration {
        /// The duration.
        fn as_duration(&self) -> Duration;
    }

    impl AsDuration for Duration {
        fn as_duration(&self) -> Duration {
            *self
        }
    }

    impl<T: AsDuration + ?Sized> AsDuration for &T {
        fn as_duration(&self) -> Duration {
            (**self).as_duration()
        }
    }

    /// `wait = expr` (and `lease`, `hold_at_least`): the duration, at each call.
    pub fn duration_from<D: AsDuration>(duration: D) -> Duration {
        duration.as_duration()
    }

    /// No `client = ...`: the process-wide default.
    pub fn default_client() -> Result<Client, Error> {
        super::default_client()
    }

    /// The return types a guarded function may have: how each one says "not run".
    #[diagnostic::on_unimplemented(
        message = "a `#[dflockd::exclusive]` function cannot return `{Self}`: it has no way to report a busy lock or a failure",
        label = "unsupported return type",
        note = "return `Result<T, E>` with `E: From<dflockd::Error>` (busy is `dflockd::Error::Timeout`), `Option<T>` (`None` when not run), or `()` (skips and failures are logged)"
    )]
    pub trait Outcome: Sized {
        /// Whether the caller learns about failures from the value (so they are not logged
        /// above debug level).
        const REPORTS: bool;

        /// The value returned when the body did not run or was cancelled.
        fn not_run(error: Error) -> Self;
    }

    impl Outcome for () {
        const REPORTS: bool = false;
        fn not_run(_: Error) -> Self {}
    }

    impl<T> Outcome for Option<T> {
        const REPORTS: bool = false;
        fn not_run(_: Error) -> Self {
            None
        }
    }

    impl<T, E: From<Error>> Outcome for Result<T, E> {
        const REPORTS: bool = true;
        fn not_run(error: Error) -> Self {
            Err(E::from(error))
        }
    }

    /// How a guarded function with return type `T` reports "not run": taken from
    /// [`Outcome`] by [`fallback`], in a statement of its own so that an unsupported return
    /// type is reported once, at the type.
    pub struct Fallback<T> {
        not_run: fn(Error) -> T,
        reports: bool,
    }

    /// The [`Fallback`] of `T`.
    pub fn fallback<T: Outcome>() -> Fallback<T> {
        Fallback {
            not_run: T::not_run,
            reports: T::REPORTS,
        }
    }

    /// Acquires, runs `body` as a scoped section ([`dflockd_core::Lock::run`]: the lease is
    /// watched, [`current_lock`](crate::current_lock) is set, reentry fails at once), then
    /// releases (or keeps the lock for the rest of `hold_at_least`, in the background).
    ///
    /// All of it runs in a `dflockd_exclusive` span (see `span` below).
    pub async fn run<T, F>(
        spec: Spec,
        client: Result<Client, Error>,
        fallback: Fallback<T>,
        body: F,
    ) -> T
    where
        F: Future<Output = T>,
    {
        let span = span(&spec);
        let guarded = async {
            let started = Instant::now();
            let mut granted = None;
            let ran = match client {
                Ok(client) => section(&spec, &client, &span, &mut granted, body).await,
                Err(error) => Err(error),
            };
            if granted.is_none() {
                span.record("wait_ms", millis(started.elapsed()));
            }
            span.record("outcome", outcome(&ran, granted.as_ref()));
            ran.unwrap_or_else(|error| {
                report(&spec, &error, fallback.reports);
                (fallback.not_run)(error)
            })
        };
        guarded.instrument(span.clone()).await
    }

    /// The span of one call, with the field names of the tower layer's `dflockd_guard` span
    /// where they mean the same: `key`, `limit` (1 for a lock), `wait_ms` (from the start of
    /// the acquisition to the grant, or to the failure) and `outcome`; plus `function`
    /// (`module::path::name`) and `fence` (the grant's fencing token, when the server issues
    /// them). `outcome` is `ran`, `ran_lease_lost` (`on_lease_loss = "continue"`: the body
    /// finished after the lease was lost), `skipped_busy` (`wait` ran out), `lease_lost`
    /// (the body was cancelled, or its release showed the loss), `reentrant` (this task holds
    /// the key already) or `failed` (the client, the connection or the server).
    fn span(spec: &Spec) -> Span {
        tracing::info_span!(
            "dflockd_exclusive",
            function = spec.function,
            key = %spec.key,
            limit = spec.limit.unwrap_or(1),
            fence = tracing::field::Empty,
            wait_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    }

    /// The `outcome` field of a call's span.
    fn outcome<T>(ran: &Result<T, Error>, granted: Option<&HeldLock>) -> &'static str {
        match ran {
            Ok(_) if granted.and_then(HeldLock::loss_reason).is_some() => "ran_lease_lost",
            Ok(_) => "ran",
            Err(e) if e.is_timeout() => "skipped_busy",
            Err(Error::Reentrant { .. }) => "reentrant",
            Err(e) if e.is_lease_lost() => "lease_lost",
            Err(_) => "failed",
        }
    }

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `body` in a section of the lock or semaphore of `spec`; `granted` is the held
    /// lock once there is one (the grant's fence and wait are recorded in `span`).
    async fn section<F: Future>(
        spec: &Spec,
        client: &Client,
        span: &Span,
        granted: &mut Option<HeldLock>,
        body: F,
    ) -> Result<F::Output, Error> {
        let started = Instant::now();
        let enter = |held: HeldLock| {
            span.record("wait_ms", millis(started.elapsed()));
            span.record("fence", held.fence());
            *granted = Some(held);
            body
        };
        let on_loss = match spec.on_lease_loss {
            OnLeaseLoss::Cancel => dflockd_core::OnLeaseLoss::Cancel,
            OnLeaseLoss::Continue => dflockd_core::OnLeaseLoss::Finish,
        };
        macro_rules! configure_and_run {
            ($what:expr) => {{
                let mut what = $what
                    .on_lease_loss(on_loss)
                    .hold_at_least(spec.hold_at_least.unwrap_or_default());
                if let Some(wait) = spec.wait {
                    what = what.acquire_timeout(wait);
                }
                if let Some(lease) = spec.lease {
                    what = what.lease_ttl(lease);
                }
                what.run(enter).await
            }};
        }
        match spec.limit {
            None => configure_and_run!(client.lock(spec.key.as_str())),
            Some(limit) => configure_and_run!(client.semaphore(spec.key.as_str(), limit)),
        }
    }
}

/// Logs why a guarded function did not run (or was cancelled), at a level that depends on
/// whether its return value tells the caller.
fn report(spec: &__private::Spec, error: &Error, returned: bool) {
    let (function, key) = (spec.function, spec.key.as_str());
    crate::macros_metrics::skipped(function, error, spec.wait);
    let cancelled = matches!(error, Error::LeaseLost { .. });
    if returned {
        tracing::debug!(function, key, %error, cancelled, "not run; the error is returned");
    } else if error.is_timeout() {
        match spec.wait {
            Some(wait) if !wait.is_zero() => {
                tracing::warn!(function, key, ?wait, "skipped: the lock stayed busy");
            }
            _ => tracing::debug!(function, key, "skipped: the lock is busy"),
        }
    } else if cancelled {
        tracing::error!(function, key, %error, "cancelled: the lease was lost while the body ran");
    } else {
        tracing::error!(function, key, %error, "skipped: the lock could not be acquired");
    }
}

// A guarded function's future is `Send` whenever its body's is (checked at compile time).
const _: fn() = || {
    fn assert_send<T: Send>(_: T) {}
    fn check<F: Future<Output = ()> + Send + 'static>(body: F) {
        assert_send(__private::run(
            __private::Spec {
                function: "",
                key: String::new(),
                limit: None,
                wait: None,
                lease: None,
                hold_at_least: None,
                on_lease_loss: __private::OnLeaseLoss::Cancel,
            },
            Err(Error::Config(String::new())),
            __private::fallback(),
            body,
        ));
    }
    let _ = check::<std::future::Ready<()>>;
};
