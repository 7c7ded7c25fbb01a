//! TLS options (features `tls`, `tls-ring`, `tls-aws-lc-rs`, `tls-base`), built on rustls.
//!
//! The crypto provider is always passed explicitly when the rustls configuration is built
//! (never rustls's process-wide default lookup, which panics when none or several providers
//! are compiled in); see [`TlsOptions::crypto_provider`] for which one is used.

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

use rustls::crypto::CryptoProvider;
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
    provider: Option<Arc<CryptoProvider>>,
}

#[derive(Clone)]
enum Roots {
    System,
    #[cfg(feature = "tls-webpki-roots")]
    Mozilla,
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
            #[cfg(feature = "tls-webpki-roots")]
            Roots::Mozilla => "webpki-roots".to_owned(),
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
            .field("crypto_provider", &self.provider.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// Trust the operating system's root certificates (`DFLOCKD_TLS=1`). Without a system
    /// store (a scratch or distroless image), building the client fails; see
    /// [`TlsOptions::webpki_roots`].
    #[must_use]
    pub fn system_roots() -> Self {
        Self::with_roots(Roots::System)
    }

    /// Trust Mozilla's root certificates as compiled into this program by the
    /// `webpki-roots` crate (feature `tls-webpki-roots`; `DFLOCKD_TLS=webpki`), for images
    /// without a system certificate store. They change only when the program is rebuilt.
    #[cfg(feature = "tls-webpki-roots")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls-webpki-roots")))]
    #[must_use]
    pub fn webpki_roots() -> Self {
        Self::with_roots(Roots::Mozilla)
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
            provider: None,
        }
    }

    /// The crypto provider to build with; see [`TlsOptions::crypto_provider`].
    fn provider(&self) -> Result<Arc<CryptoProvider>> {
        if let Some(provider) = &self.provider {
            return Ok(provider.clone());
        }
        if let Some(provider) = CryptoProvider::get_default() {
            return Ok(provider.clone());
        }
        match compiled_provider() {
            Some((_, provider)) => Ok(Arc::new(provider())),
            None => Err(Error::Config(
                "no TLS crypto provider: enable the feature tls-ring or tls-aws-lc-rs, install \
                 one with rustls::crypto::CryptoProvider::install_default, or pass one with \
                 TlsOptions::crypto_provider"
                    .into(),
            )),
        }
    }

    /// Use a complete rustls configuration as is (roots, client auth, protocol versions,
    /// crypto provider).
    #[must_use]
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self::with_roots(Roots::Config(config))
    }

    /// The crypto provider (the implementation of TLS's cryptography). Ignored with
    /// [`TlsOptions::from_config`]. Default is, in this order: the process-wide default if
    /// the application installed one (`rustls::crypto::CryptoProvider::install_default`),
    /// aws-lc-rs with the feature `tls-aws-lc-rs`, ring with the feature `tls-ring` (or
    /// `tls`). With none of these, building the client fails with [`Error::Config`]; it never
    /// panics.
    #[must_use]
    pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
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
                let provider = self.provider()?;
                let (store, exact) = match roots {
                    Roots::System => {
                        let found = rustls_native_certs::load_native_certs();
                        // One unusable certificate in the system store is not fatal.
                        let store = root_store(found.certs, true)?;
                        if store.is_empty() {
                            return Err(Error::Config(no_system_roots()));
                        }
                        (Some(store), Vec::new())
                    }
                    #[cfg(feature = "tls-webpki-roots")]
                    Roots::Mozilla => (
                        Some(rustls::RootCertStore {
                            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                        }),
                        Vec::new(),
                    ),
                    Roots::Certs { cas, pinned } => {
                        let store = if cas.is_empty() {
                            None
                        } else {
                            Some(root_store(cas.iter().cloned(), false)?)
                        };
                        (store, cas.iter().chain(pinned).cloned().collect())
                    }
                    Roots::Config(_) => unreachable!("handled above"),
                };
                let chains = match store {
                    Some(store) => Some(
                        rustls::client::WebPkiServerVerifier::builder_with_provider(
                            Arc::new(store),
                            provider.clone(),
                        )
                        .build()
                        .map_err(|e| Error::Config(format!("TLS roots: {e}")))?,
                    ),
                    None => None,
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

/// Makes a crypto provider.
type MakeProvider = fn() -> CryptoProvider;

/// The crypto provider compiled in by this crate's features, and its name: aws-lc-rs when
/// `tls-aws-lc-rs` is on (an explicit choice, while ring may come with the default `tls`),
/// otherwise ring with `tls-ring`.
fn compiled_provider() -> Option<(&'static str, MakeProvider)> {
    #[cfg(feature = "tls-aws-lc-rs")]
    return Some(("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider));
    #[cfg(all(feature = "tls-ring", not(feature = "tls-aws-lc-rs")))]
    return Some(("ring", rustls::crypto::ring::default_provider));
    #[cfg(not(any(feature = "tls-ring", feature = "tls-aws-lc-rs")))]
    None
}

/// A root store of `certs`; with `lenient`, certificates that cannot be trust anchors are
/// skipped instead of failing.
fn root_store(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
    lenient: bool,
) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs {
        match store.add(cert) {
            Ok(()) => {}
            Err(_) if lenient => {}
            Err(e) => return Err(Error::Config(format!("invalid CA certificate: {e}"))),
        }
    }
    Ok(store)
}

fn no_system_roots() -> String {
    let mut message =
        "no system root certificates found (DFLOCKD_TLS=1, TlsOptions::system_roots): give the CA with DFLOCKD_TLS_CA_FILE (TlsOptions::ca_file)".to_owned();
    if cfg!(feature = "tls-webpki-roots") {
        message.push_str(", or use DFLOCKD_TLS=webpki (TlsOptions::webpki_roots)");
    } else {
        message.push_str(", or build with the feature tls-webpki-roots and use DFLOCKD_TLS=webpki");
    }
    message
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crypto_provider_follows_the_features() {
        let name = compiled_provider().map(|(name, _)| name);
        let expected = if cfg!(feature = "tls-aws-lc-rs") {
            Some("aws-lc-rs")
        } else if cfg!(feature = "tls-ring") {
            Some("ring")
        } else {
            None
        };
        assert_eq!(name, expected);
        // No panic either way: a client, or a configuration error that says what to do.
        let built = TlsOptions::system_roots().build();
        match (expected, built) {
            (Some(_), Ok(_)) => {}
            // A machine without system roots.
            (Some(_), Err(Error::Config(message))) => {
                assert!(message.contains("no system root"), "{message}");
            }
            (None, Err(Error::Config(message))) => {
                assert!(message.contains("no TLS crypto provider"), "{message}");
            }
            (expected, built) => panic!("{expected:?}: {:?}", built.err()),
        }
    }

    #[cfg(feature = "tls-webpki-roots")]
    #[test]
    fn webpki_roots_need_no_system_store() {
        let options = TlsOptions::webpki_roots();
        assert!(format!("{options:?}").contains("webpki-roots"));
        if compiled_provider().is_some() {
            assert!(options.build().is_ok());
        }
    }
}
