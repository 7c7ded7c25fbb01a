//! What a new connection presents: the auth token and the TLS connector. Both can be
//! replaced while the client runs ([`Client::set_auth_token`](crate::Client::set_auth_token),
//! [`Client::reload_tls`](crate::Client::reload_tls), a token file re-read for every new
//! connection); connections already open keep what they were opened with, and so do the locks
//! held through them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::proto::{MAX_REQUEST_LINE, validate_secret_up_to};

/// The auth token: shown as `<redacted>` everywhere.
#[derive(Clone)]
pub(crate) struct Secret(std::sync::Arc<str>);

impl Secret {
    pub(crate) fn new(token: &str) -> Self {
        Secret(token.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the auth token comes from.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Token(Secret),
    /// Read again for every new connection.
    File(Arc<TokenFile>),
}

/// A token file and the last good token read from it (kept when a read fails).
pub(crate) struct TokenFile {
    path: PathBuf,
    last: Mutex<Secret>,
}

impl Auth {
    /// The token of a file, checked.
    pub(crate) fn from_file(path: &Path, max: usize) -> Result<Auth> {
        let token = read_token(path, max)?;
        Ok(Auth::File(Arc::new(TokenFile {
            path: path.to_owned(),
            last: Mutex::new(token),
        })))
    }
}

/// The token in `path` (trimmed), checked as [`checked_secret`] does.
fn read_token(path: &Path, max: usize) -> Result<Secret> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the auth token file {}: {e}",
            path.display()
        ))
    })?;
    checked_secret(text.trim(), max)
        .map_err(|e| Error::Config(format!("auth token file {}: {e}", path.display())))
}

/// An auth token checked against the longest one the servers take (`max`, see
/// [`ClientBuilder::auth_token`](crate::ClientBuilder::auth_token)).
pub(crate) fn checked_secret(token: &str, max: usize) -> Result<Secret> {
    validate_secret_up_to(token, max).map_err(|e| {
        let hint = if max == MAX_REQUEST_LINE && token.len() > max {
            " (servers of v1.15 and later take up to 64 KiB: declare the release with server_version or DFLOCKD_SERVER_VERSION)"
        } else {
            ""
        };
        Error::Config(format!("auth token: {e}{hint}"))
    })?;
    Ok(Secret::new(token))
}

/// The credentials of new connections, replaced as a whole.
pub(crate) struct Credentials {
    current: Mutex<Arc<Material>>,
    /// The longest auth token the servers take.
    max_secret: usize,
}

/// One generation of credentials.
pub(crate) struct Material {
    pub(crate) auth: Auth,
    #[cfg(feature = "tls-base")]
    pub(crate) tls: Option<super::tls::TlsConnector>,
}

impl Credentials {
    pub(crate) fn new(material: Material, max_secret: usize) -> Self {
        Credentials {
            current: Mutex::new(Arc::new(material)),
            max_secret,
        }
    }

    /// What a connection opened now presents.
    pub(crate) fn current(&self) -> Arc<Material> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces part of the credentials of new connections.
    fn replace(&self, change: impl FnOnce(&Material) -> Material) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(change(&current));
    }

    /// New connections authenticate with `token` from now on.
    pub(crate) fn set_token(&self, token: &str) -> Result<()> {
        let secret = checked_secret(token, self.max_secret)?;
        #[cfg_attr(not(feature = "tls-base"), allow(unused_variables))]
        self.replace(|old| Material {
            auth: Auth::Token(secret),
            #[cfg(feature = "tls-base")]
            tls: old.tls.clone(),
        });
        Ok(())
    }

    /// New connections use TLS with `tls` (or none) from now on.
    #[cfg(feature = "tls-base")]
    pub(crate) fn set_tls(&self, tls: Option<super::tls::TlsConnector>) {
        self.replace(|old| Material {
            auth: old.auth.clone(),
            tls,
        });
    }

    /// Whether new connections send an auth token.
    pub(crate) fn has_token(&self) -> bool {
        !matches!(self.current().auth, Auth::None)
    }

    /// The auth token a connection opened now sends: a token file is read again (a read that
    /// fails keeps the last good token, so a file being replaced does not fail connections).
    pub(crate) fn secret(&self, material: &Material) -> Option<Secret> {
        match &material.auth {
            Auth::None => None,
            Auth::Token(secret) => Some(secret.clone()),
            Auth::File(file) => {
                let mut last = file.last.lock().unwrap_or_else(|e| e.into_inner());
                match read_token(&file.path, self.max_secret) {
                    Ok(secret) => *last = secret,
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the last auth token read");
                    }
                }
                Some(last.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(auth: Auth) -> Material {
        Material {
            auth,
            #[cfg(feature = "tls-base")]
            tls: None,
        }
    }

    #[test]
    fn a_token_file_is_read_for_every_connection() {
        let dir = std::env::temp_dir().join(format!("dflockd-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let creds = Credentials::new(
            material(Auth::from_file(&path, MAX_REQUEST_LINE).unwrap()),
            MAX_REQUEST_LINE,
        );
        let token = || creds.secret(&creds.current()).unwrap().expose().to_owned();
        assert_eq!(token(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(token(), "second");
        // Gone, empty or invalid: the last good one.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(token(), "second");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(token(), "second");
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(token(), "second");
        // Replaced by a fixed token.
        creds.set_token("third").unwrap();
        assert_eq!(token(), "third");
        assert!(matches!(
            creds.set_token("bad\ntoken"),
            Err(Error::Config(_))
        ));
        assert!(matches!(creds.set_token(""), Err(Error::Config(_))));
        assert_eq!(token(), "third");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Auth::from_file(&path, MAX_REQUEST_LINE).is_err());
    }
}
