//! Helpers for tests that need a dflockd server: unique keys, and a set of servers that can
//! be either started in-process or taken from the environment.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, ServerVersion, TestServer};

/// The environment variable naming external servers (`host:port`, comma-separated) for
/// [`TestServers`].
pub const TEST_SERVERS_ENV: &str = "DFLOCKD_TEST_SERVERS";

/// A key that no other call, in this process or another, returns: `prefix`, the process id,
/// a per-process counter and 32 random bits, joined by `-`.
///
/// Tests that share one external server use it so that they never contend by accident.
///
/// ```
/// let a = dflockd_testkit::unique_key("job");
/// let b = dflockd_testkit::unique_key("job");
/// assert!(a.starts_with("job-"));
/// assert_ne!(a, b);
/// ```
#[must_use]
pub fn unique_key(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{n}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// `n` servers for a test: external ones named by [`TEST_SERVERS_ENV`] when it lists at least
/// `n`, otherwise `n` in-process [`TestServer`]s with the default configuration (of the
/// version named by [`SERVER_VERSION_ENV`](crate::SERVER_VERSION_ENV), else the newest), kept
/// alive as long as this value.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dflockd_testkit::Error> {
/// let servers = dflockd_testkit::TestServers::default_config(2).await?;
/// assert_eq!(servers.addrs().len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestServers {
    addrs: Vec<String>,
    servers: Vec<TestServer>,
}

impl TestServers {
    /// Picks or starts `n` default-configured servers (see the type's documentation).
    ///
    /// # Errors
    /// As [`TestServerBuilder::start`](crate::TestServerBuilder::start).
    ///
    /// # Cancel safety
    /// Completes on its first poll.
    pub async fn default_config(n: usize) -> Result<Self, Error> {
        Self::default_config_blocking(n)
    }

    /// [`default_config`](Self::default_config) for code without a runtime.
    ///
    /// # Errors
    /// As [`TestServerBuilder::start`](crate::TestServerBuilder::start).
    pub fn default_config_blocking(n: usize) -> Result<Self, Error> {
        if let Some(addrs) = external(n) {
            return Ok(TestServers {
                addrs,
                servers: Vec::new(),
            });
        }
        let servers = (0..n)
            .map(|_| TestServer::start_blocking())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TestServers {
            addrs: servers.iter().map(TestServer::addr_string).collect(),
            servers,
        })
    }

    /// The servers' addresses, `"host:port"`.
    #[must_use]
    pub fn addrs(&self) -> Vec<String> {
        self.addrs.clone()
    }

    /// Whether the servers come from [`TEST_SERVERS_ENV`] (then no server was started and
    /// [`servers`](Self::servers) is empty).
    #[must_use]
    pub fn is_external(&self) -> bool {
        self.servers.is_empty() && !self.addrs.is_empty()
    }

    /// The in-process servers (empty when external).
    #[must_use]
    pub fn servers(&self) -> &[TestServer] {
        &self.servers
    }

    /// The dflockd release the servers behave as: for external servers the one named by
    /// [`TEST_SERVERS_VERSION_ENV`](crate::TEST_SERVERS_VERSION_ENV), otherwise the in-process
    /// servers' version.
    ///
    /// # Panics
    /// For external servers, when [`TEST_SERVERS_VERSION_ENV`](crate::TEST_SERVERS_VERSION_ENV)
    /// is missing or names no known release.
    #[must_use]
    pub fn version(&self) -> ServerVersion {
        match self.servers.first() {
            Some(server) => server.version(),
            None if self.is_external() => crate::version::external_version(),
            None => ServerVersion::from_env().unwrap_or_else(|err| panic!("{err}")),
        }
    }
}

fn external(n: usize) -> Option<Vec<String>> {
    let value = std::env::var(TEST_SERVERS_ENV).ok()?;
    let addrs: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    (n > 0 && addrs.len() >= n).then(|| addrs.into_iter().take(n).collect())
}
