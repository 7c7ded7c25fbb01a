//! The settings of a test server: what the builder collects, checked before it starts.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use dflockd_core::proto::{DEFAULT_LEASE_S, DEFAULT_READ_TIMEOUT_S};

use crate::state::TableConfig;
use crate::tls::TlsIdentity;
use crate::version::Profile;
use crate::{Error, ServerVersion};

/// The settings of a server (what the builder collects).
#[derive(Clone)]
pub(crate) struct Config {
    /// `None` until [`TestServer::launch`] resolves it (builder, environment, newest).
    pub(crate) version: Option<ServerVersion>,
    pub(crate) addr: SocketAddr,
    pub(crate) default_lease: Duration,
    pub(crate) lease_sweep_interval: Duration,
    pub(crate) gc_interval: Duration,
    pub(crate) gc_max_idle: Duration,
    pub(crate) max_locks: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_waiters: usize,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) tls: Option<TlsIdentity>,
    pub(crate) tls_client_ca: Option<String>,
    pub(crate) auth_token: Option<String>,
    pub(crate) auto_release_on_disconnect: bool,
    pub(crate) fence_state_file: Option<PathBuf>,
    pub(crate) worker_threads: usize,
    pub(crate) shards: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: None,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            default_lease: Duration::from_secs(DEFAULT_LEASE_S),
            lease_sweep_interval: Duration::from_secs(1),
            gc_interval: Duration::from_secs(5),
            gc_max_idle: Duration::from_secs(60),
            max_locks: 1024,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_waiters: 0,
            read_timeout: Duration::from_secs(DEFAULT_READ_TIMEOUT_S),
            write_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            tls: None,
            tls_client_ca: None,
            auth_token: None,
            auto_release_on_disconnect: true,
            fence_state_file: None,
            worker_threads: 2,
            shards: 16,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("version", &self.version)
            .field("addr", &self.addr)
            .field("default_lease", &self.default_lease)
            .field("lease_sweep_interval", &self.lease_sweep_interval)
            .field("gc_interval", &self.gc_interval)
            .field("gc_max_idle", &self.gc_max_idle)
            .field("max_locks", &self.max_locks)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_waiters", &self.max_waiters)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls", &self.tls.is_some())
            .field("tls_client_ca", &self.tls_client_ca.is_some())
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "auto_release_on_disconnect",
                &self.auto_release_on_disconnect,
            )
            .field("fence_state_file", &self.fence_state_file)
            .field("worker_threads", &self.worker_threads)
            .field("shards", &self.shards)
            .finish()
    }
}

impl Config {
    /// The version: set by the builder, else from the environment, else the newest.
    pub(crate) fn resolve_version(&mut self) -> Result<ServerVersion, Error> {
        let version = match self.version {
            Some(version) => version,
            None => ServerVersion::from_env()?,
        };
        self.version = Some(version);
        Ok(version)
    }

    pub(crate) fn profile(&self) -> Profile {
        self.version.unwrap_or(ServerVersion::NEWEST).profile()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let profile = self.profile();
        let version = self.version.unwrap_or(ServerVersion::NEWEST);
        let positive = [
            ("default_lease", self.default_lease),
            ("lease_sweep_interval", self.lease_sweep_interval),
            ("gc_interval", self.gc_interval),
            ("read_timeout", self.read_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(Error::Config(format!("{name} must be > 0")));
            }
        }
        if self.gc_max_idle.is_zero() && !profile.gc_max_idle_zero_ok {
            return Err(Error::Config(format!(
                "gc_max_idle must be > 0 with server version {version}"
            )));
        }
        if self.max_connections_per_ip > 0 && !profile.max_connections_per_ip {
            return Err(Error::Config(format!(
                "max_connections_per_ip needs server version 2.1 (not {version})"
            )));
        }
        if self.fence_state_file.is_some() && !profile.fence_state_file {
            return Err(Error::Config(format!(
                "fence_state_file needs server version 2.1 (not {version})"
            )));
        }
        if self.max_locks == 0 {
            return Err(Error::Config("max_locks must be > 0 (got 0)".into()));
        }
        if self.worker_threads == 0 {
            return Err(Error::Config("worker_threads must be > 0".into()));
        }
        if self.tls_client_ca.is_some() && self.tls.is_none() {
            return Err(Error::Config(
                "tls_client_ca needs a server identity (tls)".into(),
            ));
        }
        if self.auth_token.as_deref() == Some("") {
            return Err(Error::Config("auth_token must not be empty".into()));
        }
        Ok(())
    }

    pub(crate) fn table_config(&self) -> TableConfig {
        TableConfig {
            profile: self.profile(),
            default_lease: self.default_lease,
            max_locks: self.max_locks,
            max_waiters: self.max_waiters,
            gc_max_idle: self.gc_max_idle,
            auto_release: self.auto_release_on_disconnect,
            shards: self.shards,
        }
    }
}
