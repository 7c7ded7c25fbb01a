//! What every example shares and no user needs to copy: where the lock servers come from, and
//! the `--quick` flag.
//!
//! * `DFLOCKD_SERVERS=host:port,...` set: the examples use those servers (and, through
//!   `ClientBuilder::from_env`, `DFLOCKD_AUTH_TOKEN`, `DFLOCKD_TLS_CA_FILE`, ...).
//! * Unset: they start in-process test servers (`dflockd_testkit::TestServer`) and say so on
//!   stderr, so that they run on a machine with nothing but Rust installed.
//! * `--quick` or `DFLOCKD_QUICK=1`: shorter holds and sleeps, to finish in a few seconds.
#![allow(dead_code)]

use std::time::Duration;

use dflockd_testkit::{TestServer, TestServerBuilder};

/// The error type of the examples' helpers.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The error type of the examples' `main`: printed as a person reads it, the error and then
/// each of its causes on a line of its own.
///
/// `fn main() -> Result<(), E>` prints `E` with `Debug`, which for most errors is a structure
/// (`Connect { server: .., source: Custom { kind: .. } }`); `Report`'s `Debug` is the
/// messages. In a program of your own, do the same where the error is reported (a log line,
/// the exit of `main`).
pub(crate) struct Report(BoxError);

impl<E: Into<BoxError>> From<E> for Report {
    fn from(error: E) -> Self {
        Report(error.into())
    }
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, "\n  caused by: {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// Whether `--quick` was passed or `DFLOCKD_QUICK` is `1` / `true`.
pub(crate) fn quick() -> bool {
    std::env::args().skip(1).any(|a| a == "--quick")
        || std::env::var("DFLOCKD_QUICK")
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// `quick` in quick mode, `full` otherwise.
pub(crate) fn pick(full: Duration, quick: Duration) -> Duration {
    if self::quick() { quick } else { full }
}

/// The servers an example talks to. Embedded servers stop when this is dropped.
pub(crate) struct Servers {
    addrs: Vec<String>,
    embedded: Vec<TestServer>,
}

impl Servers {
    /// The addresses, `host:port`, for `ClientBuilder::servers`.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// Whether the servers come from `DFLOCKD_SERVERS`.
    pub(crate) fn is_external(&self) -> bool {
        self.embedded.is_empty()
    }

    /// The in-process servers (empty when external).
    pub(crate) fn embedded(&self) -> &[TestServer] {
        &self.embedded
    }

    /// The dflockd release the servers run, when known: for embedded servers the release
    /// the test server behaves as (the newest unless `DFLOCKD_TESTKIT_SERVER_VERSION` says
    /// otherwise); for `DFLOCKD_SERVERS`, whatever `DFLOCKD_SERVER_VERSION` says (read by
    /// `from_env`).
    pub(crate) fn version(&self) -> Option<dflockd::ServerVersion> {
        self.embedded.first().map(|server| server.version().into())
    }

    /// A client builder for these servers: the `DFLOCKD_*` settings of the environment,
    /// these addresses and their release (grants carry fences on servers that issue them).
    pub(crate) fn client_builder(&self) -> Result<dflockd::ClientBuilder, BoxError> {
        let mut builder = dflockd::ClientBuilder::from_env()?.servers(self.addrs());
        if let Some(version) = self.version() {
            builder = builder.server_version(version);
        }
        Ok(builder)
    }

    /// [`Servers::client_builder`] for the blocking client.
    pub(crate) fn blocking_client_builder(
        &self,
    ) -> Result<dflockd::blocking::ClientBuilder, BoxError> {
        let mut builder = dflockd::blocking::ClientBuilder::from_env()?.servers(self.addrs());
        if let Some(version) = self.version() {
            builder = builder.server_version(version);
        }
        Ok(builder)
    }
}

/// A grant's fence for printing: the number, or why there is none.
pub(crate) fn fence(fence: Option<u64>) -> String {
    fence.map_or_else(
        || "none (the server predates v2.1, or DFLOCKD_SERVER_VERSION is not set)".to_owned(),
        |f| f.to_string(),
    )
}

/// The servers listed in `DFLOCKD_SERVERS`, if it is set and not empty.
pub(crate) fn external() -> Option<Vec<String>> {
    let list = std::env::var("DFLOCKD_SERVERS").ok()?;
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

/// `DFLOCKD_SERVERS` when set, otherwise `n` embedded test servers with default settings.
pub(crate) fn servers(n: usize) -> Result<Servers, BoxError> {
    servers_with(n, |server| server)
}

/// `DFLOCKD_SERVERS` when set, otherwise `n` embedded test servers configured by `configure`
/// (an auth token, TLS, a low key cap, ...).
pub(crate) fn servers_with(
    n: usize,
    configure: impl Fn(TestServerBuilder) -> TestServerBuilder,
) -> Result<Servers, BoxError> {
    match external() {
        Some(addrs) => Ok(Servers {
            addrs,
            embedded: Vec::new(),
        }),
        None => {
            eprint!("DFLOCKD_SERVERS is not set: ");
            embedded(n, configure)
        }
    }
}

/// `n` embedded test servers configured by `configure`, whatever the environment says.
pub(crate) fn embedded(
    n: usize,
    configure: impl Fn(TestServerBuilder) -> TestServerBuilder,
) -> Result<Servers, BoxError> {
    let embedded = (0..n)
        .map(|_| configure(TestServer::builder()).start_blocking())
        .collect::<Result<Vec<_>, _>>()?;
    let addrs: Vec<String> = embedded.iter().map(TestServer::addr_string).collect();
    eprintln!(
        "started {} embedded test server{} at {}",
        n,
        if n == 1 { "" } else { "s" },
        addrs.join(", ")
    );
    Ok(Servers { addrs, embedded })
}

/// A client for `DFLOCKD_SERVERS` (with the rest of the `DFLOCKD_*` settings) or for one
/// embedded test server, and the servers (keep them alive as long as the client is used).
pub(crate) fn client() -> Result<(dflockd::Client, Servers), BoxError> {
    let servers = servers(1)?;
    let client = servers.client_builder()?.build()?;
    Ok((client, servers))
}

/// Logs (`tracing`) to stderr, filtered by `RUST_LOG` (default `info`).
pub(crate) fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Serves an axum app on a free local port in the background; returns its address.
pub(crate) async fn serve_axum(app: axum::Router) -> Result<std::net::SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
