//! TLS for the test server: a throw-away certificate authority for tests, and the
//! certificate/key pair the server presents.
//!
//! ```
//! use dflockd_testkit::tls::TestCa;
//! let ca = TestCa::new();
//! let server_identity = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
//! let client_identity = ca.issue_client("worker-1").unwrap();
//! assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! assert!(server_identity.key_pem.contains("PRIVATE KEY"));
//! # let _ = client_identity;
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// A certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first (PEM).
    pub cert_pem: String,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl TlsIdentity {
    /// A certificate chain and key from PEM text.
    pub fn from_pem(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// Reads a certificate chain and a key from PEM files (what `--tls-cert` and `--tls-key`
    /// name).
    ///
    /// # Errors
    /// [`Error::Read`] when a file cannot be read. The contents are checked when the server
    /// starts.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.to_owned(),
                source,
            })
        };
        Ok(TlsIdentity {
            cert_pem: read(cert.as_ref())?,
            key_pem: read(key.as_ref())?,
        })
    }
}

impl TlsIdentity {
    /// A self-signed server certificate for `names` (DNS names or IP addresses), as
    /// `openssl req -x509 -subj /CN=<first name> -addext subjectAltName=<names>` makes one:
    /// marked `CA:TRUE`, without key usage extensions. Clients trust it by pinning it
    /// (`TlsOptions::pinned_certificate_pem`) or by giving it as the CA.
    ///
    /// # Errors
    /// [`Error::Certificate`] when a name is not a valid DNS name or IP address.
    pub fn self_signed(names: &[&str]) -> Result<Self, Error> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(Error::Certificate)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().map_err(Error::Certificate)?;
        let cert = params.self_signed(&key).map_err(Error::Certificate)?;
        Ok(TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A certificate authority that lives for one test run.
///
/// It issues server certificates (for [`TestServerBuilder::tls`](crate::TestServerBuilder::tls))
/// and client certificates (for mutual TLS, see
/// [`TestServerBuilder::tls_client_ca`](crate::TestServerBuilder::tls_client_ca)). Clients
/// trust [`TestCa::cert_pem`].
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// Generates a new CA (ECDSA P-256, valid from 1975 to 4096).
    ///
    /// # Panics
    /// If the system cannot generate a key, which only happens when its random source is
    /// broken.
    #[must_use]
    pub fn new() -> Self {
        Self::try_new().expect("generating a test CA")
    }

    /// Like [`TestCa::new`], returning the error instead of panicking.
    ///
    /// # Errors
    /// [`Error::Certificate`].
    pub fn try_new() -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::new()).map_err(Error::Certificate)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "dflockd-testkit CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(Error::Certificate)?;
        let cert = params.self_signed(&key).map_err(Error::Certificate)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM), for clients to trust.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    #[must_use]
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    ///
    /// # Errors
    /// [`Error::Certificate`] when a name is not a valid DNS name or IP address.
    pub fn issue_server(&self, names: &[&str]) -> Result<TlsIdentity, Error> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(Error::Certificate)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// Issues a client certificate with common name `name`, for mutual TLS.
    ///
    /// # Errors
    /// [`Error::Certificate`] if generation fails.
    pub fn issue_client(&self, name: &str) -> Result<TlsIdentity, Error> {
        let mut params = CertificateParams::new(Vec::new()).map_err(Error::Certificate)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<TlsIdentity, Error> {
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(Error::Certificate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(Error::Certificate)?;
        Ok(TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server's rustls configuration.
pub(crate) fn server_config(
    identity: &TlsIdentity,
    client_ca: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("no certificate in the certificate PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("private key PEM: {e}")))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| Error::Tls(format!("client CA PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::Tls("no certificate in the client CA PEM".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}
