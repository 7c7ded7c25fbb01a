//! What a process can tell about its servers and its connections: [`Client::check`] (every
//! server answered or not, and how fast), [`ClientBuilder::connect`] (fail at start-up, not at
//! the first lock) and [`Client::status`] (the pool of each server).

use std::fmt;
use std::time::Duration;

use crate::builder::ClientBuilder;
use crate::client::Client;
use crate::conn::PoolStatus;
use crate::error::{Error, Result};

/// The answer of every server to [`Client::check`], in the order of [`Client::servers`].
#[derive(Debug)]
pub struct Health {
    servers: Vec<ServerHealth>,
}

/// One server's answer to [`Client::check`].
#[derive(Debug)]
pub struct ServerHealth {
    server: String,
    answer: Result<Duration>,
}

impl ServerHealth {
    /// The server's address, `host:port`.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether it answered.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.answer.is_ok()
    }

    /// How long it took to answer (opening and authenticating a connection first, when none
    /// was open); `None` when it did not answer.
    #[must_use]
    pub fn latency(&self) -> Option<Duration> {
        self.answer.as_ref().ok().copied()
    }

    /// Why it did not answer; `None` when it did.
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.answer.as_ref().err()
    }
}

impl Health {
    /// Every server's answer, in the order of [`Client::servers`].
    #[must_use]
    pub fn servers(&self) -> &[ServerHealth] {
        &self.servers
    }

    /// Whether every server answered.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.servers.iter().all(ServerHealth::is_up)
    }

    /// The servers that did not answer.
    pub fn down(&self) -> impl Iterator<Item = &ServerHealth> {
        self.servers.iter().filter(|s| !s.is_up())
    }

    /// Every server down with the error `error()` makes (the check could not run).
    #[cfg(feature = "blocking")]
    pub(crate) fn unanswered(servers: &[&str], error: impl Fn() -> Error) -> Health {
        Health {
            servers: servers
                .iter()
                .map(|server| ServerHealth {
                    server: (*server).to_owned(),
                    answer: Err(error()),
                })
                .collect(),
        }
    }

    /// `Ok` when every server answered, else the first failure (in server order).
    ///
    /// # Errors
    /// The error of the first server that did not answer.
    pub fn into_result(self) -> Result<()> {
        match self.servers.into_iter().find_map(|s| s.answer.err()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// One line per server: `127.0.0.1:6388 up (412µs)` or `10.0.0.5:6388 down: cannot connect
/// to 10.0.0.5:6388: connection refused`.
impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.servers.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match &s.answer {
                Ok(latency) => write!(f, "{} up ({latency:.1?})", s.server)?,
                Err(error) => {
                    write!(f, "{} down: {error}", s.server)?;
                    let mut source = std::error::Error::source(error);
                    while let Some(cause) = source {
                        write!(f, ": {cause}")?;
                        source = cause.source();
                    }
                }
            }
        }
        Ok(())
    }
}

impl Client {
    /// Asks every server at once whether it answers (a `ping`, on a pooled connection,
    /// opening and authenticating one first when none is open): a readiness probe that tells
    /// which servers are down and why. Never fails: each server's answer is in the
    /// [`Health`]. Takes at most the connect timeout plus the request timeout.
    ///
    /// ```no_run
    /// # async fn f(client: dflockd_core::Client) {
    /// let health = client.check().await;
    /// if !health.is_healthy() {
    ///     eprintln!("lock servers:\n{health}");
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: answers that come after cancellation are read and discarded.
    pub async fn check(&self) -> Health {
        let mut pings = tokio::task::JoinSet::new();
        for index in 0..self.inner.pools.len() {
            let client = self.clone();
            pings.spawn(async move { (index, client.ping_server(index).await) });
        }
        let mut answers: Vec<Option<Result<Duration>>> =
            (0..self.inner.pools.len()).map(|_| None).collect();
        while let Some(joined) = pings.join_next().await {
            // A ping does not panic; a runtime shutting down cancels it.
            if let Ok((index, answer)) = joined {
                answers[index] = Some(answer);
            }
        }
        let servers = self
            .inner
            .pools
            .iter()
            .zip(answers)
            .map(|(pool, answer)| ServerHealth {
                server: pool.addr.to_string(),
                answer: answer.unwrap_or_else(|| {
                    Err(Error::ConnectionClosed {
                        server: pool.addr.to_string(),
                        reason: "the health check was cancelled".to_owned(),
                    })
                }),
            })
            .collect();
        Health { servers }
    }

    /// The connections of each server's pool, in the order of [`Client::servers`]: how many
    /// are open, idle, holding locks, parked for a queued acquire, being opened, and the
    /// requests in flight. A snapshot, for dashboards and debugging.
    #[must_use]
    pub fn status(&self) -> Vec<PoolStatus> {
        self.inner.pools.iter().map(|pool| pool.status()).collect()
    }
}

impl ClientBuilder {
    /// Builds the client and connects to every server at once, failing when one cannot be
    /// used: unreachable ([`Error::Connect`]), refusing the auth token
    /// ([`Error::AuthRejected`], [`Error::AuthRequired`]), or with TLS that does not work
    /// ([`Error::Tls`], [`Error::TlsRequired`]). So that a wrong address or credential stops
    /// a process at start-up rather than at its first lock. The connections stay in the pool.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dflockd_core::Error> {
    /// let client = dflockd_core::ClientBuilder::from_env()?.connect().await?;
    /// # let _ = client; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`build`](Self::build); then the first server's failure, in server order (see
    /// [`Client::check`] for all of them).
    ///
    /// # Cancel safety
    /// Cancel safe: the client is dropped, and its connections close.
    pub async fn connect(self) -> Result<Client> {
        let client = self.build()?;
        client.check().await.into_result()?;
        Ok(client)
    }
}
