//! A misbehaving server for client tests: it reads requests (three lines each) and answers
//! each one with whatever a script says, well-formed or not.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use dflockd_testkit::scripted::{self, Act};
//! // Answer every request with a lease of zero, which no real server sends.
//! let (addr, _connections) =
//!     scripted::serve(|_, _| scripted::say("ok 00000000000000070123456789abcdef 0\n")).await;
//! # let _ = (addr, Act::Silence);
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server does for one request.
#[derive(Clone, Debug)]
pub enum Act {
    /// Write these bytes.
    Say(Vec<u8>),
    /// Write these bytes after a pause.
    Late(Duration, Vec<u8>),
    /// Write these bytes in `pieces` pieces of about the same size, with `pause` before
    /// each piece after the first: a long answer over a slow link.
    Trickle {
        /// The whole answer.
        bytes: Vec<u8>,
        /// How many pieces to write it in (at least one).
        pieces: usize,
        /// The pause between two pieces.
        pause: Duration,
    },
    /// Write bytes forever (no line break), then close.
    Flood,
    /// Answer nothing and keep the connection open.
    Silence,
}

/// `Some(bytes)` is [`Act::Say`], `None` is [`Act::Silence`].
impl From<Option<Vec<u8>>> for Act {
    fn from(answer: Option<Vec<u8>>) -> Act {
        answer.map_or(Act::Silence, Act::Say)
    }
}

/// [`Act::Say`] of a text.
#[must_use]
pub fn say(text: &str) -> Act {
    Act::Say(text.as_bytes().to_vec())
}

/// Starts a server on `127.0.0.1:0`, on the caller's tokio runtime, that answers the n-th
/// request (counted over all connections, from 0) with `script(n, command)`. Returns its
/// address and the number of connections it has accepted so far.
///
/// # Panics
/// If no local port can be bound (a test environment problem).
pub async fn serve<A: Into<Act>>(
    script: impl Fn(usize, &str) -> A + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address").to_string();
    let script = Arc::new(script);
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let (script, requests) = (script.clone(), requests.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                loop {
                    let mut request = Vec::with_capacity(3);
                    for _ in 0..3 {
                        match lines.next_line().await {
                            Ok(Some(line)) => request.push(line),
                            _ => return,
                        }
                    }
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    match script(n, &request[0]).into() {
                        Act::Say(bytes) => {
                            if write.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        Act::Late(pause, bytes) => {
                            tokio::time::sleep(pause).await;
                            let _ = write.write_all(&bytes).await;
                        }
                        Act::Trickle {
                            bytes,
                            pieces,
                            pause,
                        } => {
                            let size = bytes.len().div_ceil(pieces.max(1)).max(1);
                            for (i, piece) in bytes.chunks(size).enumerate() {
                                if i > 0 {
                                    tokio::time::sleep(pause).await;
                                }
                                if write.write_all(piece).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Act::Flood => {
                            let chunk = vec![b'x'; 64 * 1024];
                            while write.write_all(&chunk).await.is_ok() {}
                            return;
                        }
                        Act::Silence => {}
                    }
                }
            });
        }
    });
    (addr, connections)
}
