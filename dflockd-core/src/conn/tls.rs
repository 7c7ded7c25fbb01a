//! TLS options (feature `tls`), built on rustls with the ring provider.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::error::{Error, Result};

/// How to connect with TLS: which roots to trust, the name to verify, an optional client
/// certificate.
///
/// Certificate verification is always on; there is no switch to turn it off. To trust a
/// private CA, pass it with [`TlsOptions::ca_pem`] or [`TlsOptions::ca_file`]; for anything
/// else, hand over a complete [`rustls::ClientConfig`] with [`TlsOptions::from_config`].
///
/// ```no_run
/// # fn main() -> Result<(), dflockd_core::Error> {
/// let tls = dflockd_core::TlsOptions::ca_file("/etc/dflockd/ca.pem")?
///     .server_name("locks.internal");
/// let client = dflockd_core::Client::builder()
///     .servers(["10.0.0.1:6388"])
///     .tls(tls)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsOptions {
    roots: Roots,
    server_name: Option<String>,
    client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

#[derive(Clone)]
enum Roots {
    System,
    Certs(Vec<CertificateDer<'static>>),
    Config(Arc<rustls::ClientConfig>),
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots = match &self.roots {
            Roots::System => "system".to_owned(),
            Roots::Certs(c) => format!("{} custom CA certificate(s)", c.len()),
            Roots::Config(_) => "custom rustls config".to_owned(),
        };
        f.debug_struct("TlsOptions")
            .field("roots", &roots)
            .field("server_name", &self.server_name)
            .field("client_auth", &self.client_auth.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// Trust the operating system's root certificates.
    #[must_use]
    pub fn system_roots() -> Self {
        TlsOptions {
            roots: Roots::System,
            server_name: None,
            client_auth: None,
        }
    }

    /// Trust the CA certificate(s) in this PEM text (and only those).
    ///
    /// # Errors
    /// [`Error::Config`] when the text holds no certificate.
    pub fn ca_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(pem.as_ref())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("CA PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config("CA PEM holds no certificate".into()));
        }
        Ok(TlsOptions {
            roots: Roots::Certs(certs),
            server_name: None,
            client_auth: None,
        })
    }

    /// Trust the CA certificate(s) in this PEM file.
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or holds no certificate.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read CA file {}: {e}", path.display())))?;
        Self::ca_pem(pem)
    }

    /// Use a complete rustls configuration as is (roots, client auth, protocol versions).
    #[must_use]
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        TlsOptions {
            roots: Roots::Config(config),
            server_name: None,
            client_auth: None,
        }
    }

    /// Verify the server's certificate against this name (a DNS name or an IP address)
    /// instead of the host part of the server address. Default is the host of each server
    /// address.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Present a client certificate (mutual TLS): the certificate chain and private key, PEM.
    /// Ignored with [`TlsOptions::from_config`] (configure it there). Default is none.
    ///
    /// # Errors
    /// [`Error::Config`] when either PEM text cannot be parsed.
    pub fn client_auth_pem(
        mut self,
        cert_chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_ref())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("client certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config(
                "client certificate PEM holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_ref())
            .map_err(|e| Error::Config(format!("client key PEM: {e}")))?;
        self.client_auth = Some((certs, Arc::new(key)));
        Ok(self)
    }

    /// Present a client certificate read from PEM files.
    ///
    /// # Errors
    /// [`Error::Config`] when a file cannot be read or parsed.
    pub fn client_auth_files(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))
        };
        let cert = read(cert_chain.as_ref())?;
        let key = read(key.as_ref())?;
        self.client_auth_pem(cert, key)
    }

    pub(crate) fn build(&self) -> Result<TlsConnector> {
        let config = match &self.roots {
            Roots::Config(config) => config.clone(),
            roots => {
                let mut store = rustls::RootCertStore::empty();
                match roots {
                    Roots::System => {
                        let found = rustls_native_certs::load_native_certs();
                        for cert in found.certs {
                            let _ = store.add(cert);
                        }
                        if store.is_empty() {
                            return Err(Error::Config(
                                "no system root certificates found; use TlsOptions::ca_file".into(),
                            ));
                        }
                    }
                    Roots::Certs(certs) => {
                        for cert in certs {
                            store.add(cert.clone()).map_err(|e| {
                                Error::Config(format!("invalid CA certificate: {e}"))
                            })?;
                        }
                    }
                    Roots::Config(_) => unreachable!("handled above"),
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let builder = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Config(format!("TLS: {e}")))?
                    .with_root_certificates(store);
                let config = match &self.client_auth {
                    Some((certs, key)) => builder
                        .with_client_auth_cert(certs.clone(), key.clone_key())
                        .map_err(|e| Error::Config(format!("client certificate: {e}")))?,
                    None => builder.with_no_client_auth(),
                };
                Arc::new(config)
            }
        };
        let server_name = match &self.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| Error::Config(format!("TLS server name {name:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(TlsConnector {
            connector: tokio_rustls::TlsConnector::from(config),
            server_name,
        })
    }
}

/// A ready-to-use connector built once from [`TlsOptions`].
#[derive(Clone)]
pub(crate) struct TlsConnector {
    pub(crate) connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    /// The name to verify for a server whose address has host `host`.
    pub(crate) fn name_for(&self, host: &str) -> std::io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {host:?}: {e}"),
            )
        })
    }
}
