//! TLS options (feature `tls`), built on rustls with the ring provider.

mod classify;
mod der;
mod verify;

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{Error, Result, TlsProblem};

pub(crate) use classify::problem as classify_problem;

/// How to connect with TLS: which roots to trust, the name to verify, an optional client
/// certificate.
///
/// Certificate verification is always on; there is no switch to turn it off. To trust a
/// private CA, pass it with [`TlsOptions::ca_pem`] or [`TlsOptions::ca_file`]; to trust one
/// self-signed certificate, pin it with [`TlsOptions::pinned_certificate`]; for anything
/// else, hand over a complete [`rustls::ClientConfig`] with [`TlsOptions::from_config`].
///
/// Whatever is trusted, the server's certificate must name the server (the host of its
/// address, or [`TlsOptions::server_name`]) and be within its validity period, and the server
/// must prove it holds the certificate's key. Failures are [`Error::Tls`], whose
/// [`TlsProblem`] says what to change.
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
    Certs {
        /// CA certificates: chains to them are trusted, and each is also trusted as is when a
        /// server presents it as its own (a self-signed certificate given as the CA).
        cas: Vec<CertificateDer<'static>>,
        /// Certificates trusted as they are, and only as they are.
        pinned: Vec<CertificateDer<'static>>,
    },
    Config(Arc<rustls::ClientConfig>),
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roots = match &self.roots {
            Roots::System => "system".to_owned(),
            Roots::Certs { cas, pinned } if pinned.is_empty() => {
                format!("{} custom CA certificate(s)", cas.len())
            }
            Roots::Certs { cas, pinned } if cas.is_empty() => {
                format!("{} pinned certificate(s)", pinned.len())
            }
            Roots::Certs { cas, pinned } => format!(
                "{} custom CA certificate(s), {} pinned certificate(s)",
                cas.len(),
                pinned.len()
            ),
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
    /// A server may also present one of these very certificates as its own: a self-signed
    /// server certificate given as the CA works, as with Go's and Python's TLS (webpki alone
    /// refuses one made by `openssl req -x509`, which marks it `CA:TRUE`). It must still name
    /// the server and be within its validity period.
    ///
    /// # Errors
    /// [`Error::Config`] when the text holds no certificate.
    pub fn ca_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        Ok(Self::with_roots(Roots::Certs {
            cas: certificates(pem.as_ref(), "CA")?,
            pinned: Vec::new(),
        }))
    }

    /// Trust the CA certificate(s) in this PEM file; see [`TlsOptions::ca_pem`].
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or holds no certificate.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::ca_pem(read_file(path.as_ref(), "CA")?)
    }

    /// Trust exactly the certificate(s) in this PEM text, and nothing else: a server must
    /// present one of them as its own certificate (several allow a replacement to be pinned
    /// before it is deployed). Meant for self-signed server certificates.
    ///
    /// The certificate is compared byte for byte; it must still name the server (the host of
    /// its address, or [`TlsOptions::server_name`]) and be within its validity period, and the
    /// server must hold its key. Its issuer, basic constraints and key usage are not looked at.
    ///
    /// # Errors
    /// [`Error::Config`] when the text holds no certificate.
    pub fn pinned_certificate_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        Ok(Self::with_roots(Roots::Certs {
            cas: Vec::new(),
            pinned: certificates(pem.as_ref(), "pinned certificate")?,
        }))
    }

    /// Trust exactly the certificate(s) in this PEM file; see
    /// [`TlsOptions::pinned_certificate_pem`].
    ///
    /// # Errors
    /// [`Error::Config`] when the file cannot be read or holds no certificate.
    pub fn pinned_certificate(path: impl AsRef<Path>) -> Result<Self> {
        Self::pinned_certificate_pem(read_file(path.as_ref(), "pinned certificate")?)
    }

    fn with_roots(roots: Roots) -> Self {
        TlsOptions {
            roots,
            server_name: None,
            client_auth: None,
        }
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
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let (cas, exact) = match roots {
                    Roots::System => {
                        let found = rustls_native_certs::load_native_certs();
                        if found.certs.is_empty() {
                            return Err(Error::Config(
                                "no system root certificates found; use TlsOptions::ca_file".into(),
                            ));
                        }
                        (found.certs, Vec::new())
                    }
                    Roots::Certs { cas, pinned } => {
                        (cas.clone(), cas.iter().chain(pinned).cloned().collect())
                    }
                    Roots::Config(_) => unreachable!("handled above"),
                };
                let chains = if cas.is_empty() {
                    None
                } else {
                    let mut store = rustls::RootCertStore::empty();
                    let system = matches!(roots, Roots::System);
                    for cert in cas {
                        match store.add(cert) {
                            Ok(()) => {}
                            // One unusable certificate in the system store is not fatal.
                            Err(_) if system => {}
                            Err(e) => {
                                return Err(Error::Config(format!("invalid CA certificate: {e}")));
                            }
                        }
                    }
                    if store.is_empty() {
                        return Err(Error::Config(
                            "no usable system root certificates; use TlsOptions::ca_file".into(),
                        ));
                    }
                    let chains = rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(store),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| Error::Config(format!("TLS roots: {e}")))?;
                    Some(chains)
                };
                let verifier = verify::Verifier::new(
                    chains,
                    exact,
                    provider.signature_verification_algorithms,
                );
                let builder = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Config(format!("TLS: {e}")))?
                    // Not a way around verification: the verifier checks chains as rustls's
                    // own does, and certificates trusted as they are (see `verify`).
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier));
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

/// The certificates in PEM text (`what` names them in errors).
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("{what} PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{what} PEM holds no certificate")));
    }
    Ok(certs)
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read {what} file {}: {e}", path.display())))
}

/// A ready-to-use connector built once from [`TlsOptions`].
#[derive(Clone)]
pub(crate) struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

/// A TLS connection as the client uses it.
pub(crate) type TlsStream = tokio_rustls::client::TlsStream<FirstBytes<TcpStream>>;

impl TlsConnector {
    /// The name to verify for a server whose address has host `host`.
    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {host:?}: {e}"),
            )
        })
    }

    /// The TLS handshake over `tcp`, by `deadline` (`timeout` is the whole connect timeout,
    /// for the message). Returns the stream and the name verified.
    pub(crate) async fn handshake(
        &self,
        server: &str,
        host: &str,
        tcp: TcpStream,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(TlsStream, String)> {
        let name = self.name_for(host).map_err(|source| Error::Connect {
            server: server.to_owned(),
            source,
        })?;
        let shown = name.to_str().into_owned();
        let first = Arc::new(OnceLock::new());
        let io = FirstBytes {
            inner: tcp,
            first: Some(first.clone()),
        };
        let tls_error = |problem: TlsProblem, source: Option<io::Error>| Error::Tls {
            server: server.to_owned(),
            name: shown.clone(),
            problem,
            source: source.map(|e| Box::new(e) as _),
        };
        let handshake = self.connector.connect(name, io);
        match tokio::time::timeout_at(deadline.into(), handshake).await {
            Ok(Ok(stream)) => Ok((stream, shown)),
            Ok(Err(e)) => match classify::problem(&e, first.get().map(|b| &b[..])) {
                Some(problem) => Err(tls_error(problem, Some(e))),
                None => Err(Error::Connect {
                    server: server.to_owned(),
                    source: e,
                }),
            },
            Err(_) => match first.get() {
                None => Err(tls_error(TlsProblem::NoAnswer { waited: timeout }, None)),
                Some(bytes) => match classify::not_tls(bytes) {
                    Some(problem) => Err(tls_error(problem, None)),
                    None => Err(Error::Connect {
                        server: server.to_owned(),
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("TLS handshake not done within {timeout:?}"),
                        ),
                    }),
                },
            },
        }
    }
}

/// A stream that keeps the first bytes read from it (for [`classify`]: what a server that
/// does not speak TLS answered). After the first read it only passes calls through.
pub(crate) struct FirstBytes<S> {
    inner: S,
    first: Option<Arc<OnceLock<Box<[u8]>>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.first.is_some() && buf.filled().len() > before {
            let read = &buf.filled()[before..];
            let kept = read[..read.len().min(32)].into();
            if let Some(first) = self.first.take() {
                let _ = first.set(kept);
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
