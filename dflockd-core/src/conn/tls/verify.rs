//! How the client verifies a server's certificate: webpki chains to the trusted roots, and
//! certificates trusted exactly as they are (pinned ones, and CA certificates given to the
//! client that a server presents as its own).
//!
//! A certificate trusted as is still has to name the server and be within its validity
//! period, and the server still has to prove it holds its key (the handshake signature).
//! That is what Go's and Python's TLS do with a self-signed certificate given as the CA:
//! `openssl req -x509` makes `CA:TRUE` certificates, which webpki refuses as a server's own
//! ([`TlsProblem::CaUsedAsEndEntity`](crate::TlsProblem::CaUsedAsEndEntity)).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use super::der;

/// The server's certificate is not one of the pinned ones (and no roots are trusted).
#[derive(Debug)]
pub(crate) struct NotPinned;

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server's certificate is not a pinned one")
    }
}

impl std::error::Error for NotPinned {}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Verifier {
    /// Chains to the trusted roots; `None` when only exact certificates are trusted.
    chains: Option<Arc<WebPkiServerVerifier>>,
    /// Certificates trusted as they are when a server presents one as its own.
    exact: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    pub(crate) fn new(
        chains: Option<Arc<WebPkiServerVerifier>>,
        exact: Vec<CertificateDer<'static>>,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Verifier {
            chains,
            exact,
            algorithms,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            check_exact(end_entity, server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.chains {
            Some(chains) => chains.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(CertificateError::Other(OtherError(Arc::new(NotPinned))).into()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A certificate trusted as is: it must name the server and be valid at `now`.
fn check_exact(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let validity = der::validity(cert).ok_or(CertificateError::BadEncoding)?;
    let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let unix = |s: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s.max(0) as u64));
    if now_s < validity.not_before {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before: unix(validity.not_before),
        }
        .into());
    }
    if now_s > validity.not_after {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after: unix(validity.not_after),
        }
        .into());
    }
    rustls::client::verify_server_name(&ParsedCertificate::try_from(cert)?, server_name)
}
