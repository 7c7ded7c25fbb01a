//! Opening a connection: TCP, optional TLS, optional auth.

use std::io;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::credentials::{Credentials, Secret};
use crate::error::{Error, Result, TlsEvidence};
use crate::proto::{
    Command, Expect, LineScan, MAX_REPLY_LINE, Reply, ReplyError, Request, scan_line,
};

/// Read half of a connection: a plain TCP one held inline (the hot path reaches the socket
/// without a hop through a box), anything else (TLS) boxed.
pub(crate) enum ReadIo {
    Tcp(OwnedReadHalf),
    #[cfg(feature = "tls-base")]
    Boxed(Box<dyn AsyncRead + Send + Unpin>),
}

/// Write half of a connection, as [`ReadIo`].
pub(crate) enum WriteIo {
    Tcp(OwnedWriteHalf),
    #[cfg(feature = "tls-base")]
    Boxed(Box<dyn AsyncWrite + Send + Unpin>),
}

impl AsyncRead for ReadIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadIo::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            #[cfg(feature = "tls-base")]
            ReadIo::Boxed(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl WriteIo {
    /// Writes what the socket takes at once, without waiting: the number of bytes written
    /// (0 when it would block, or when the half cannot write without a future, as TLS).
    pub(crate) fn write_now(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteIo::Tcp(tcp) => match tcp.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                result => result,
            },
            #[cfg(feature = "tls-base")]
            WriteIo::Boxed(_) => Ok(0),
        }
    }

    /// Writes what [`write_now`](Self::write_now) could not, waiting for the socket.
    pub(crate) async fn write_rest(&mut self, rest: &[u8]) -> io::Result<()> {
        self.write_all(rest).await?;
        self.flush().await
    }
}

impl AsyncWrite for WriteIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteIo::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            #[cfg(feature = "tls-base")]
            WriteIo::Boxed(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteIo::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            #[cfg(feature = "tls-base")]
            WriteIo::Boxed(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteIo::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            #[cfg(feature = "tls-base")]
            WriteIo::Boxed(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// An open, authenticated connection, split, with any bytes read past the auth answer.
pub(crate) struct Opened {
    pub(crate) read: ReadIo,
    pub(crate) write: WriteIo,
    pub(crate) leftover: Vec<u8>,
    /// The name the server's certificate was verified against; `None` without TLS.
    pub(crate) tls_name: Option<String>,
    /// Whether an auth token was sent (and accepted).
    pub(crate) authenticated: bool,
    /// Whether the server has sent anything yet.
    pub(crate) answered: bool,
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

/// Connects, handshakes and authenticates within `timeout`, presenting the `credentials`.
/// `spoke_plaintext`: the server has answered a plaintext connection of this client before,
/// so a silent close is no sign that it serves TLS.
pub(crate) async fn open(
    timeout: Duration,
    credentials: &Credentials,
    server: &str,
    spoke_plaintext: bool,
) -> Result<Opened> {
    let deadline = Instant::now() + timeout;
    let timed_out = |stage: &str| Error::Connect {
        server: server.to_owned(),
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{stage} not done within the connect timeout ({timeout:?})"),
        ),
    };
    let (host, port) = split_host_port(server)?;
    let tcp = tokio::time::timeout_at(deadline.into(), TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| timed_out("TCP connect"))?
        .and_then(|tcp| tcp.set_nodelay(true).map(|()| tcp))
        .map_err(|source| Error::Connect {
            server: server.to_owned(),
            source,
        })?;
    let material = credentials.current();
    let secret = credentials.secret(&material);
    let conn = {
        #[cfg(feature = "tls-base")]
        match &material.tls {
            Some(tls) => {
                let (stream, name) = tls.handshake(server, &host, tcp, deadline, timeout).await?;
                let (read, write) = tokio::io::split(stream);
                Handshaken {
                    read: ReadIo::Boxed(Box::new(read)),
                    write: WriteIo::Boxed(Box::new(write)),
                    tls_name: Some(name),
                }
            }
            None => Handshaken::plain(tcp),
        }
        #[cfg(not(feature = "tls-base"))]
        Handshaken::plain(tcp)
    };
    tokio::time::timeout_at(
        deadline.into(),
        authenticate(secret, server, conn, spoke_plaintext),
    )
    .await
    .map_err(|_| timed_out("auth"))?
}

/// A connection before auth.
struct Handshaken {
    read: ReadIo,
    write: WriteIo,
    tls_name: Option<String>,
}

impl Handshaken {
    fn plain(tcp: TcpStream) -> Self {
        let (read, write) = tcp.into_split();
        Handshaken {
            read: ReadIo::Tcp(read),
            write: WriteIo::Tcp(write),
            tls_name: None,
        }
    }
}

async fn authenticate(
    secret: Option<Secret>,
    server: &str,
    conn: Handshaken,
    spoke_plaintext: bool,
) -> Result<Opened> {
    let Handshaken {
        mut read,
        mut write,
        tls_name,
    } = conn;
    let Some(secret) = secret else {
        return Ok(Opened {
            read,
            write,
            leftover: Vec::new(),
            tls_name,
            authenticated: false,
            answered: false,
        });
    };
    let fail = |source: io::Error| {
        setup_failure(server, tls_name.as_deref(), source, &[], spoke_plaintext)
    };
    let mut out = Vec::with_capacity(300);
    Request::Auth {
        secret: secret.expose(),
    }
    .encode(&mut out)?;
    write.write_all(&out).await.map_err(fail)?;
    write.flush().await.map_err(fail)?;
    let (buf, line_len, consumed) =
        read_auth_answer(&mut read, server, tls_name.as_deref(), spoke_plaintext).await?;
    let authenticated = auth_accepted(Reply::parse(Expect::Auth, &buf[..line_len]), server)?;
    Ok(Opened {
        read,
        write,
        leftover: buf[consumed..].to_vec(),
        tls_name,
        authenticated,
        answered: true,
    })
}

/// Reads the server's answer to `auth`. Returns what was read, the answer line's length and
/// the bytes it takes (what follows is the start of the next answers).
async fn read_auth_answer(
    read: &mut ReadIo,
    server: &str,
    tls_name: Option<&str>,
    spoke_plaintext: bool,
) -> Result<(Vec<u8>, usize, usize)> {
    let mut buf = Vec::with_capacity(64);
    loop {
        if tls_name.is_none() && first_bytes_are_tls(&buf) {
            return Err(Error::TlsRequired {
                server: server.to_owned(),
                evidence: TlsEvidence::AnsweredTls,
            });
        }
        match scan_line(&buf, MAX_REPLY_LINE) {
            LineScan::Complete { line_len, consumed } => return Ok((buf, line_len, consumed)),
            LineScan::TooLong => {
                return Err(Error::Protocol {
                    server: server.to_owned(),
                    reason: "auth answer too long",
                });
            }
            LineScan::Incomplete => {
                buf.reserve(64);
                match read.read_buf(&mut buf).await {
                    Ok(0) => {
                        let eof = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed during auth",
                        );
                        return Err(setup_failure(server, tls_name, eof, &buf, spoke_plaintext));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(setup_failure(server, tls_name, e, &buf, spoke_plaintext));
                    }
                }
            }
        }
    }
}

/// What the answer to `auth` means: authenticated (`true`), a server without auth (`false`),
/// or the refusal as an error.
fn auth_accepted(answer: std::result::Result<Reply<'_>, ReplyError>, server: &str) -> Result<bool> {
    match answer {
        Ok(_) => Ok(true),
        // A server without auth answers `error` and keeps the connection usable: carry on, so
        // that clients can be given the secret before the servers start requiring it.
        Err(ReplyError::Server(crate::proto::ServerStatus::Error)) => {
            tracing::warn!(
                server,
                "an auth token is configured but the server does not use auth"
            );
            Ok(false)
        }
        Err(e) => {
            if let ReplyError::Server(status) = &e {
                crate::metrics::server_error(server, status);
            }
            Err(Error::from_reply(e, server, Command::Auth, ""))
        }
    }
}

/// Whether the first bytes a plaintext connection received are a TLS record (an alert or a
/// handshake): the server speaks TLS.
pub(crate) fn first_bytes_are_tls(first: &[u8]) -> bool {
    matches!(first.first(), Some(0x15 | 0x16))
}

/// What an I/O error while opening a connection (after the TCP connect) means: a server that
/// closed a plaintext connection without a byte most likely serves TLS, unless it has
/// answered this client in plaintext before (`spoke_plaintext`); on a TLS connection, a TLS
/// error (a refused client certificate arrives after the handshake); otherwise
/// [`Error::Connect`]. `received` is what the server sent so far.
pub(crate) fn setup_failure(
    server: &str,
    tls_name: Option<&str>,
    error: io::Error,
    received: &[u8],
    spoke_plaintext: bool,
) -> Error {
    let closed = matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    );
    match tls_name {
        None if closed && received.is_empty() && !spoke_plaintext => Error::TlsRequired {
            server: server.to_owned(),
            evidence: TlsEvidence::ClosedSilently,
        },
        #[cfg(feature = "tls-base")]
        Some(name) => match super::tls::classify_problem(&error, None) {
            Some(problem) => Error::Tls {
                server: server.to_owned(),
                name: name.to_owned(),
                problem,
                source: Some(Box::new(error)),
            },
            None => Error::Connect {
                server: server.to_owned(),
                source: error,
            },
        },
        _ => Error::Connect {
            server: server.to_owned(),
            source: error,
        },
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

    /// A request the socket cannot take at once (the peer does not read) is written in part
    /// at once and finished by the future when the peer reads: every byte arrives, in order.
    #[tokio::test]
    async fn a_write_the_socket_cannot_take_at_once_is_finished_when_the_peer_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        let (_read, write) = tcp.into_split();
        let mut io = WriteIo::Tcp(write);
        // More than the socket buffers on both ends hold (a few MiB at most on Linux).
        #[allow(clippy::cast_possible_truncation)]
        let data: Vec<u8> = (0..32usize << 20).map(|i| (i % 251) as u8).collect();
        let now = io.write_now(&data).unwrap();
        assert!(now > 0, "an empty socket takes something at once");
        assert!(now < data.len(), "the socket took {now} bytes at once");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        io.write_rest(&data[now..]).await.unwrap();
        io.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes arrived out of order or changed");
    }
}
