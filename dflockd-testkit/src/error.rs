//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong when configuring or starting a test server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of range or settings contradict each other.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate, key or client CA could not be used.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    /// A certificate could not be generated.
    #[error("cannot generate a certificate")]
    Certificate(#[source] rcgen::Error),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The server's runtime or thread could not be started.
    #[error("cannot start the server runtime")]
    Runtime(#[source] std::io::Error),
    /// The server's runtime stopped before answering.
    #[error("the server runtime is gone")]
    RuntimeGone,
    /// An environment variable names no known server version (see
    /// [`ServerVersion`](crate::ServerVersion)).
    #[error("invalid {variable}")]
    Version {
        /// The variable, e.g. [`SERVER_VERSION_ENV`](crate::SERVER_VERSION_ENV).
        variable: &'static str,
        /// What is wrong with its value.
        #[source]
        source: crate::ParseVersionError,
    },
    /// The fence state file cannot be used (the text is what the real server prints after
    /// `lock manager init failed: `).
    #[error("lock manager init failed: {0}")]
    FenceState(String),
}
