//! Opening a connection: TCP, optional TLS, optional auth.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Settings;
use crate::error::{Error, Result};
use crate::proto::{
    Command, Expect, LineScan, MAX_REPLY_LINE, Reply, ReplyError, Request, scan_line,
};

/// Read half of a connection.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// Write half of a connection.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

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

/// An open, authenticated connection, split, with any bytes read past the auth answer.
pub(crate) struct Opened {
    pub(crate) read: BoxRead,
    pub(crate) write: BoxWrite,
    pub(crate) leftover: Vec<u8>,
}

/// Splits `host:port` (IPv6 in brackets); the port defaults to 6388.
pub(crate) fn split_host_port(addr: &str) -> Result<(String, u16)> {
    let bad = || Error::Config(format!("invalid server address {addr:?} (want host:port)"));
    if addr.is_empty() || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => crate::proto::DEFAULT_PORT,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(bad)?,
        };
        return Ok((host.to_owned(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port.parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            Ok((host.to_owned(), port))
        }
        // A bare IPv6 address without brackets: no port given.
        Some(_) => Ok((addr.to_owned(), crate::proto::DEFAULT_PORT)),
        None => Ok((addr.to_owned(), crate::proto::DEFAULT_PORT)),
    }
}

/// Connects, handshakes and authenticates within `settings.connect_timeout`.
pub(crate) async fn open(settings: &Settings, server: &str) -> Result<Opened> {
    let fail = |source: io::Error| Error::Connect {
        server: server.to_owned(),
        source,
    };
    let timeout = settings.connect_timeout;
    match tokio::time::timeout(timeout, open_inner(settings, server)).await {
        Ok(result) => result,
        Err(_) => Err(fail(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        ))),
    }
}

async fn open_inner(settings: &Settings, server: &str) -> Result<Opened> {
    let fail = |source: io::Error| Error::Connect {
        server: server.to_owned(),
        source,
    };
    let (host, port) = split_host_port(server)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(fail)?;
    tcp.set_nodelay(true).map_err(fail)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &settings.tls {
        let name = tls.name_for(&host).map_err(fail)?;
        let stream = tls.connector.connect(name, tcp).await.map_err(fail)?;
        let (read, write) = tokio::io::split(stream);
        return authenticate(settings, server, Box::new(read), Box::new(write)).await;
    }
    let (read, write) = tcp.into_split();
    authenticate(settings, server, Box::new(read), Box::new(write)).await
}

async fn authenticate(
    settings: &Settings,
    server: &str,
    mut read: BoxRead,
    mut write: BoxWrite,
) -> Result<Opened> {
    let Some(secret) = &settings.auth_token else {
        return Ok(Opened {
            read,
            write,
            leftover: Vec::new(),
        });
    };
    let fail = |source: io::Error| Error::Connect {
        server: server.to_owned(),
        source,
    };
    let mut out = Vec::with_capacity(300);
    Request::Auth {
        secret: secret.expose(),
    }
    .encode(&mut out)?;
    write.write_all(&out).await.map_err(fail)?;
    write.flush().await.map_err(fail)?;
    let mut buf = Vec::with_capacity(64);
    loop {
        match scan_line(&buf, MAX_REPLY_LINE) {
            LineScan::Complete { line_len, consumed } => {
                let result = Reply::parse(Expect::Auth, &buf[..line_len]);
                let leftover = buf[consumed..].to_vec();
                return match result {
                    Ok(_) => Ok(Opened {
                        read,
                        write,
                        leftover,
                    }),
                    // A server without auth answers `error` and keeps the connection usable:
                    // carry on, so that clients can be given the secret before the servers
                    // start requiring it.
                    Err(ReplyError::Server(crate::proto::ServerStatus::Error)) => {
                        tracing::warn!(
                            server,
                            "an auth token is configured but the server does not use auth"
                        );
                        Ok(Opened {
                            read,
                            write,
                            leftover,
                        })
                    }
                    Err(e) => Err(Error::from_reply(e, server, Command::Auth, "")),
                };
            }
            LineScan::TooLong => {
                return Err(Error::Protocol {
                    server: server.to_owned(),
                    reason: "auth answer too long",
                });
            }
            LineScan::Incomplete => {
                buf.reserve(64);
                let n = read.read_buf(&mut buf).await.map_err(fail)?;
                if n == 0 {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during auth",
                    )));
                }
            }
        }
    }
}

/// A duration as whole seconds for the wire, rounded up.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        let ok = |a: &str, h: &str, p: u16| {
            assert_eq!(split_host_port(a).unwrap(), (h.to_owned(), p), "{a}");
        };
        ok("127.0.0.1:6388", "127.0.0.1", 6388);
        ok("locks.internal:7000", "locks.internal", 7000);
        ok("locks.internal", "locks.internal", 6388);
        ok("[::1]:7000", "::1", 7000);
        ok("[::1]", "::1", 6388);
        ok("::1", "::1", 6388);
        for bad in [
            "",
            ":6388",
            "host:port",
            "host:99999",
            "a b:1",
            "[::1",
            "[::1]x",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
    }
}
