//! What a failed TLS set-up means for the user: rustls errors, and the first bytes the
//! server sent, turned into a [`TlsProblem`].

use std::io;
use std::time::{Duration, SystemTime};

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError};

use super::verify::NotPinned;
use crate::error::TlsProblem;

/// The first bytes the server sent, when they cannot be the start of a TLS record: the
/// problem is then that the server does not speak TLS, whatever the handshake made of them.
pub(crate) fn not_tls(first: &[u8]) -> Option<TlsProblem> {
    // Record types: change_cipher_spec, alert, handshake, application_data.
    match first.first() {
        None | Some(0x14..=0x17) => None,
        Some(_) => Some(TlsProblem::NotTls {
            answered: printable(first),
        }),
    }
}

/// The problem behind an I/O error of the handshake (or of the first read after it), given
/// the first bytes the server sent (if any). `None` for a failure of the transport itself
/// (reset, refused, ...), which is not about TLS.
pub(crate) fn problem(error: &io::Error, first: Option<&[u8]>) -> Option<TlsProblem> {
    if let Some(problem) = first.and_then(not_tls) {
        return Some(problem);
    }
    let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(problem_of(rustls_error))
}

/// The problem a rustls error stands for.
pub(crate) fn problem_of(error: &rustls::Error) -> TlsProblem {
    match error {
        rustls::Error::InvalidCertificate(e) => certificate_problem(e),
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied => TlsProblem::ClientCertificateRejected,
            other => TlsProblem::HandshakeFailed(format!("the server sent the alert {other:?}")),
        },
        rustls::Error::PeerIncompatible(e) => TlsProblem::HandshakeFailed(format!(
            "the server and this client have no TLS version or cipher suite in common ({e:?})"
        )),
        other => TlsProblem::HandshakeFailed(other.to_string()),
    }
}

fn certificate_problem(error: &CertificateError) -> TlsProblem {
    match error {
        // A bad signature on the server's certificate: a trusted CA has the issuer's name but
        // another key (a CA made again under the same name), so the issuer is unknown.
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            TlsProblem::UnknownIssuer
        }
        CertificateError::NotValidForNameContext { presented, .. } => TlsProblem::NameMismatch {
            presented: presented.iter().map(|name| plain_name(name)).collect(),
        },
        CertificateError::Expired => TlsProblem::Expired { not_after: None },
        CertificateError::ExpiredContext { not_after, .. } => TlsProblem::Expired {
            not_after: Some(system_time(*not_after)),
        },
        CertificateError::NotValidYet => TlsProblem::NotYetValid { not_before: None },
        CertificateError::NotValidYetContext { not_before, .. } => TlsProblem::NotYetValid {
            not_before: Some(system_time(*not_before)),
        },
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            TlsProblem::WrongKeyUsage
        }
        CertificateError::Other(other) => {
            let inner = &*other.0;
            if inner.downcast_ref::<NotPinned>().is_some() {
                TlsProblem::NotPinned
            } else if matches!(
                inner.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) {
                TlsProblem::CaUsedAsEndEntity
            } else {
                TlsProblem::BadCertificate(inner.to_string())
            }
        }
        other => TlsProblem::BadCertificate(other.to_string()),
    }
}

/// A name as webpki presents it (`DnsName("db.internal")`, `IpAddress(10.1.2.3)`), plain.
fn plain_name(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    inner.unwrap_or(name).to_owned()
}

fn system_time(t: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// The start of what a server sent, for a message: up to the first line break, at most 32
/// characters, anything but printable ASCII shown as `?`.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take_while(|&&b| b != b'\n' && b != b'\r')
        .take(32)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use rustls::OtherError;
    use rustls::pki_types::ServerName;

    fn io(error: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    #[test]
    fn first_bytes_that_are_not_tls() {
        assert_eq!(
            not_tls(b"error\n"),
            Some(TlsProblem::NotTls {
                answered: "error".into()
            })
        );
        assert_eq!(
            not_tls(b"ok\x00\xff abc"),
            Some(TlsProblem::NotTls {
                answered: "ok?? abc".into()
            })
        );
        for tls in [&b"\x15\x03\x03\x00\x02\x02\x32"[..], b"\x16\x03\x03", b""] {
            assert_eq!(not_tls(tls), None);
        }
        // The bytes win over what the handshake made of them.
        let corrupt = io(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(matches!(
            problem(&corrupt, Some(b"error\n")),
            Some(TlsProblem::NotTls { .. })
        ));
        assert!(matches!(
            problem(&corrupt, None),
            Some(TlsProblem::HandshakeFailed(_))
        ));
        // Not a TLS error at all: the transport's.
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(problem(&reset, None), None);
        assert_eq!(problem(&reset, Some(b"\x16\x03\x03")), None);
    }

    #[test]
    fn certificate_errors() {
        let cert = |e: CertificateError| problem_of(&rustls::Error::InvalidCertificate(e));
        assert_eq!(
            cert(CertificateError::UnknownIssuer),
            TlsProblem::UnknownIssuer
        );
        assert_eq!(
            cert(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap(),
                presented: vec!["localhost".into()],
            }),
            TlsProblem::NameMismatch {
                presented: vec!["localhost".into()]
            }
        );
        assert_eq!(
            cert(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap(),
                presented: vec![
                    "DnsName(\"*.internal\")".into(),
                    "IpAddress(10.1.2.3)".into(),
                    "IpAddress(2001:db8::1)".into(),
                ],
            }),
            TlsProblem::NameMismatch {
                presented: vec!["*.internal".into(), "10.1.2.3".into(), "2001:db8::1".into()]
            }
        );
        let when = UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000));
        assert_eq!(
            cert(CertificateError::ExpiredContext {
                time: when,
                not_after: when,
            }),
            TlsProblem::Expired {
                not_after: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            }
        );
        assert!(matches!(
            cert(CertificateError::NotValidYet),
            TlsProblem::NotYetValid { not_before: None }
        ));
        assert_eq!(
            cert(CertificateError::InvalidPurpose),
            TlsProblem::WrongKeyUsage
        );
        let other = |e: Arc<dyn std::error::Error + Send + Sync>| {
            cert(CertificateError::Other(OtherError(e)))
        };
        assert_eq!(
            other(Arc::new(webpki::Error::CaUsedAsEndEntity)),
            TlsProblem::CaUsedAsEndEntity
        );
        assert_eq!(other(Arc::new(NotPinned)), TlsProblem::NotPinned);
        assert!(matches!(
            other(Arc::new(webpki::Error::PathLenConstraintViolated)),
            TlsProblem::BadCertificate(_)
        ));
        assert_eq!(
            cert(CertificateError::BadSignature),
            TlsProblem::UnknownIssuer
        );
        assert!(matches!(
            cert(CertificateError::Revoked),
            TlsProblem::BadCertificate(_)
        ));
    }

    #[test]
    fn alerts() {
        let alert = |a| problem_of(&rustls::Error::AlertReceived(a));
        assert_eq!(
            alert(AlertDescription::CertificateRequired),
            TlsProblem::ClientCertificateRejected
        );
        assert_eq!(
            alert(AlertDescription::UnknownCA),
            TlsProblem::ClientCertificateRejected
        );
        assert!(matches!(
            alert(AlertDescription::ProtocolVersion),
            TlsProblem::HandshakeFailed(_)
        ));
    }
}
