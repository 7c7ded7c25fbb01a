//! Requests: typed form, client-side encoding, server-side parsing.

use super::token::Token;
use super::validate::{
    InvalidInput, MAX_AUTH_SECRET, validate_client_key, validate_secret_up_to, validate_token_text,
};
use super::{MAX_REQUEST_LINE, MAX_WIRE_INT};

/// The command word on the first line of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// `l`: acquire a lock, waiting up to a timeout.
    Lock,
    /// `r`: release a lock.
    Release,
    /// `n`: renew a lock's lease.
    Renew,
    /// `e`: join a lock's queue (two-phase, first half).
    Enqueue,
    /// `w`: wait for an enqueued lock (two-phase, second half).
    Wait,
    /// `sl`: acquire a semaphore slot.
    SemLock,
    /// `sr`: release a semaphore slot.
    SemRelease,
    /// `sn`: renew a semaphore slot's lease.
    SemRenew,
    /// `se`: join a semaphore's queue.
    SemEnqueue,
    /// `sw`: wait for an enqueued semaphore slot.
    SemWait,
    /// `auth`: present the shared secret.
    Auth,
    /// `stats`: server statistics as one JSON line.
    Stats,
    /// `ping`: answered `ok` by servers of v1.14 and later (`error` before).
    Ping,
}

impl Command {
    /// Every command, in table order.
    pub const ALL: [Command; 13] = [
        Command::Lock,
        Command::Release,
        Command::Renew,
        Command::Enqueue,
        Command::Wait,
        Command::SemLock,
        Command::SemRelease,
        Command::SemRenew,
        Command::SemEnqueue,
        Command::SemWait,
        Command::Auth,
        Command::Stats,
        Command::Ping,
    ];

    /// The word sent on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Lock => "l",
            Command::Release => "r",
            Command::Renew => "n",
            Command::Enqueue => "e",
            Command::Wait => "w",
            Command::SemLock => "sl",
            Command::SemRelease => "sr",
            Command::SemRenew => "sn",
            Command::SemEnqueue => "se",
            Command::SemWait => "sw",
            Command::Auth => "auth",
            Command::Stats => "stats",
            Command::Ping => "ping",
        }
    }

    /// Looks a command word up (exact, case-sensitive).
    #[must_use]
    pub fn from_word(word: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

/// Locks and semaphores have their own commands (and, since dflockd v1.14, their own
/// namespaces; before, a lock is a semaphore of limit 1 in the same namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `l`, `r`, `n`, `e`, `w`: a semaphore of limit 1.
    Lock,
    /// `sl`, `sr`, `sn`, `se`, `sw`.
    Semaphore,
}

/// A request, borrowing its text.
///
/// For [`Family::Lock`], `limit` is always 1 (it is not sent on the wire).
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// `l` / `sl`: acquire, waiting up to `timeout_s` seconds (0 = try once).
    Acquire {
        /// Lock or semaphore.
        family: Family,
        /// The key.
        key: &'a str,
        /// Seconds to wait server-side; 0 answers at once.
        timeout_s: u64,
        /// Holders allowed at once (1 for a lock).
        limit: u64,
        /// Lease in seconds; `None` = the server's default.
        lease_s: Option<u64>,
    },
    /// `e` / `se`: join the queue without waiting.
    Enqueue {
        /// Lock or semaphore.
        family: Family,
        /// The key.
        key: &'a str,
        /// Holders allowed at once (1 for a lock).
        limit: u64,
        /// Lease in seconds; `None` = the server's default.
        lease_s: Option<u64>,
    },
    /// `w` / `sw`: wait for the grant of an earlier enqueue on this connection.
    Wait {
        /// Lock or semaphore.
        family: Family,
        /// The key.
        key: &'a str,
        /// Seconds to wait server-side; 0 answers at once.
        timeout_s: u64,
    },
    /// `r` / `sr`: release.
    Release {
        /// Lock or semaphore.
        family: Family,
        /// The key.
        key: &'a str,
        /// The token of the grant.
        token: &'a str,
    },
    /// `n` / `sn`: renew the lease.
    Renew {
        /// Lock or semaphore.
        family: Family,
        /// The key.
        key: &'a str,
        /// The token of the grant.
        token: &'a str,
        /// New lease in seconds; `None` = the server's default.
        lease_s: Option<u64>,
    },
    /// `auth`: the shared secret.
    Auth {
        /// The secret.
        secret: &'a str,
    },
    /// `stats`.
    Stats,
    /// `ping`: a health check (v1.14 and later answer `ok`, older releases `error`).
    Ping,
}

impl std::fmt::Debug for Request<'_> {
    // Hand-written so that neither the secret nor a whole token is ever printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |t: &str| t.get(..Token::SHORT_LEN).unwrap_or(t).to_owned() + "…";
        match self {
            Request::Acquire {
                family,
                key,
                timeout_s,
                limit,
                lease_s,
            } => f
                .debug_struct("Acquire")
                .field("family", family)
                .field("key", key)
                .field("timeout_s", timeout_s)
                .field("limit", limit)
                .field("lease_s", lease_s)
                .finish(),
            Request::Enqueue {
                family,
                key,
                limit,
                lease_s,
            } => f
                .debug_struct("Enqueue")
                .field("family", family)
                .field("key", key)
                .field("limit", limit)
                .field("lease_s", lease_s)
                .finish(),
            Request::Wait {
                family,
                key,
                timeout_s,
            } => f
                .debug_struct("Wait")
                .field("family", family)
                .field("key", key)
                .field("timeout_s", timeout_s)
                .finish(),
            Request::Release { family, key, token } => f
                .debug_struct("Release")
                .field("family", family)
                .field("key", key)
                .field("token", &short(token))
                .finish(),
            Request::Renew {
                family,
                key,
                token,
                lease_s,
            } => f
                .debug_struct("Renew")
                .field("family", family)
                .field("key", key)
                .field("token", &short(token))
                .field("lease_s", lease_s)
                .finish(),
            Request::Auth { .. } => f.write_str("Auth { secret: <redacted> }"),
            Request::Stats => f.write_str("Stats"),
            Request::Ping => f.write_str("Ping"),
        }
    }
}

impl Family {
    pub(crate) const fn pick(self, lock: Command, semaphore: Command) -> Command {
        match self {
            Family::Lock => lock,
            Family::Semaphore => semaphore,
        }
    }
}

impl<'a> Request<'a> {
    /// The command word of this request.
    #[must_use]
    pub const fn command(&self) -> Command {
        match *self {
            Request::Acquire { family, .. } => family.pick(Command::Lock, Command::SemLock),
            Request::Enqueue { family, .. } => family.pick(Command::Enqueue, Command::SemEnqueue),
            Request::Wait { family, .. } => family.pick(Command::Wait, Command::SemWait),
            Request::Release { family, .. } => family.pick(Command::Release, Command::SemRelease),
            Request::Renew { family, .. } => family.pick(Command::Renew, Command::SemRenew),
            Request::Auth { .. } => Command::Auth,
            Request::Stats => Command::Stats,
            Request::Ping => Command::Ping,
        }
    }

    /// The key, for keyed requests.
    #[must_use]
    pub const fn key(&self) -> Option<&'a str> {
        match *self {
            Request::Acquire { key, .. }
            | Request::Enqueue { key, .. }
            | Request::Wait { key, .. }
            | Request::Release { key, .. }
            | Request::Renew { key, .. } => Some(key),
            Request::Auth { .. } | Request::Stats | Request::Ping => None,
        }
    }

    /// Validates the request and appends its three lines to `out`.
    ///
    /// Nothing is appended when validation fails, so a buffer shared by pipelined requests is
    /// never left with half a request in it.
    ///
    /// # Errors
    /// [`InvalidInput`] for a key, token or secret that cannot be sent, a zero lease or limit,
    /// a number above [`MAX_WIRE_INT`](super::MAX_WIRE_INT), or a line longer than 256 bytes
    /// (an `auth` secret may be up to [`MAX_AUTH_SECRET`] bytes).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), InvalidInput> {
        self.validate()?;
        let start = out.len();
        self.encode_validated(out);
        // The argument line is the only one whose length is not bounded by validation.
        let arg_start = out[start..out.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(start, |p| start + p + 1);
        let arg_len = out.len() - 1 - arg_start;
        let max = match self {
            Request::Auth { .. } => MAX_AUTH_SECRET,
            _ => MAX_REQUEST_LINE,
        };
        if arg_len > max {
            out.truncate(start);
            return Err(InvalidInput::LineTooLong { len: arg_len, max });
        }
        Ok(())
    }

    /// [`encode`](Self::encode) without its checks, for a request whose parts passed them
    /// before (the release of a guard: its key was sent with the acquire, its token came in
    /// the grant and has a fixed length).
    pub(crate) fn encode_validated(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.command().as_str().as_bytes());
        out.push(b'\n');
        match *self {
            Request::Acquire {
                family,
                key,
                timeout_s,
                limit,
                lease_s,
            } => {
                push_line(out, key);
                push_u64(out, timeout_s);
                if family == Family::Semaphore {
                    out.push(b' ');
                    push_u64(out, limit);
                }
                push_opt_lease(out, lease_s, true);
            }
            Request::Enqueue {
                family,
                key,
                limit,
                lease_s,
            } => {
                push_line(out, key);
                let mut any = false;
                if family == Family::Semaphore {
                    push_u64(out, limit);
                    any = true;
                }
                push_opt_lease(out, lease_s, any);
            }
            Request::Wait { key, timeout_s, .. } => {
                push_line(out, key);
                push_u64(out, timeout_s);
            }
            Request::Release { key, token, .. } => {
                push_line(out, key);
                out.extend_from_slice(token.as_bytes());
            }
            Request::Renew {
                key,
                token,
                lease_s,
                ..
            } => {
                push_line(out, key);
                out.extend_from_slice(token.as_bytes());
                push_opt_lease(out, lease_s, true);
            }
            Request::Auth { secret } => {
                push_line(out, "_");
                out.extend_from_slice(secret.as_bytes());
            }
            Request::Stats => push_line(out, "_"),
            Request::Ping => {
                push_line(out, "_");
                out.push(b'_');
            }
        }
        out.push(b'\n');
    }

    fn validate(&self) -> Result<(), InvalidInput> {
        if let Some(key) = self.key() {
            validate_client_key(key)?;
        }
        match *self {
            Request::Acquire {
                family,
                timeout_s,
                limit,
                lease_s,
                ..
            } => {
                check_int("timeout", timeout_s)?;
                check_limit(family, limit)?;
                check_lease(lease_s)
            }
            Request::Enqueue {
                family,
                limit,
                lease_s,
                ..
            } => {
                check_limit(family, limit)?;
                check_lease(lease_s)
            }
            Request::Wait { timeout_s, .. } => check_int("timeout", timeout_s),
            Request::Release { token, .. } => validate_token_text(token),
            Request::Renew { token, lease_s, .. } => {
                validate_token_text(token)?;
                check_lease(lease_s)
            }
            // Whether the server takes a secret this long depends on its release: the client
            // decides when it is built (see `ClientBuilder::auth_token`).
            Request::Auth { secret } => validate_secret_up_to(secret, MAX_AUTH_SECRET),
            Request::Stats | Request::Ping => Ok(()),
        }
    }
}

fn check_int(what: &'static str, value: u64) -> Result<(), InvalidInput> {
    if value > MAX_WIRE_INT {
        Err(InvalidInput::TooLarge {
            what,
            value,
            max: MAX_WIRE_INT,
        })
    } else {
        Ok(())
    }
}

fn check_limit(family: Family, limit: u64) -> Result<(), InvalidInput> {
    match family {
        Family::Lock if limit != 1 => Err(InvalidInput::LockLimit),
        Family::Lock => Ok(()),
        Family::Semaphore if limit == 0 => Err(InvalidInput::ZeroLimit),
        Family::Semaphore => check_int("limit", limit),
    }
}

fn check_lease(lease_s: Option<u64>) -> Result<(), InvalidInput> {
    match lease_s {
        Some(0) => Err(InvalidInput::ZeroLease),
        Some(lease) => check_int("lease", lease),
        None => Ok(()),
    }
}

fn push_line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

fn push_opt_lease(out: &mut Vec<u8>, lease_s: Option<u64>, space: bool) {
    if let Some(lease) = lease_s {
        if space {
            out.push(b' ');
        }
        push_u64(out, lease);
    }
}

/// Appends the decimal digits of `value` without going through `fmt`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "000000000000000701234567deadbeef";

    fn enc(req: Request<'_>) -> Result<String, InvalidInput> {
        let mut out = Vec::new();
        req.encode(&mut out)
            .map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn encode_table() {
        use Family::{Lock, Semaphore};
        let cases: Vec<(Request<'_>, &str)> = vec![
            (
                Request::Acquire {
                    family: Lock,
                    key: "foo",
                    timeout_s: 10,
                    limit: 1,
                    lease_s: None,
                },
                "l\nfoo\n10\n",
            ),
            (
                Request::Acquire {
                    family: Lock,
                    key: "foo",
                    timeout_s: 0,
                    limit: 1,
                    lease_s: Some(20),
                },
                "l\nfoo\n0 20\n",
            ),
            (
                Request::Acquire {
                    family: Semaphore,
                    key: "pool",
                    timeout_s: 30,
                    limit: 3,
                    lease_s: None,
                },
                "sl\npool\n30 3\n",
            ),
            (
                Request::Acquire {
                    family: Semaphore,
                    key: "pool",
                    timeout_s: 30,
                    limit: 3,
                    lease_s: Some(5),
                },
                "sl\npool\n30 3 5\n",
            ),
            (
                Request::Enqueue {
                    family: Lock,
                    key: "k",
                    limit: 1,
                    lease_s: None,
                },
                "e\nk\n\n",
            ),
            (
                Request::Enqueue {
                    family: Lock,
                    key: "k",
                    limit: 1,
                    lease_s: Some(9),
                },
                "e\nk\n9\n",
            ),
            (
                Request::Enqueue {
                    family: Semaphore,
                    key: "k",
                    limit: 2,
                    lease_s: None,
                },
                "se\nk\n2\n",
            ),
            (
                Request::Enqueue {
                    family: Semaphore,
                    key: "k",
                    limit: 2,
                    lease_s: Some(9),
                },
                "se\nk\n2 9\n",
            ),
            (
                Request::Wait {
                    family: Lock,
                    key: "k",
                    timeout_s: 10,
                },
                "w\nk\n10\n",
            ),
            (
                Request::Wait {
                    family: Semaphore,
                    key: "k",
                    timeout_s: 0,
                },
                "sw\nk\n0\n",
            ),
            (
                Request::Release {
                    family: Lock,
                    key: "k",
                    token: TOKEN,
                },
                "r\nk\n000000000000000701234567deadbeef\n",
            ),
            (
                Request::Release {
                    family: Semaphore,
                    key: "k",
                    token: TOKEN,
                },
                "sr\nk\n000000000000000701234567deadbeef\n",
            ),
            (
                Request::Renew {
                    family: Lock,
                    key: "k",
                    token: TOKEN,
                    lease_s: None,
                },
                "n\nk\n000000000000000701234567deadbeef\n",
            ),
            (
                Request::Renew {
                    family: Semaphore,
                    key: "k",
                    token: TOKEN,
                    lease_s: Some(60),
                },
                "sn\nk\n000000000000000701234567deadbeef 60\n",
            ),
            (
                Request::Auth {
                    secret: "shared secret",
                },
                "auth\n_\nshared secret\n",
            ),
            (Request::Stats, "stats\n_\n\n"),
            (
                Request::Acquire {
                    family: Lock,
                    key: "ключ",
                    timeout_s: 1,
                    limit: 1,
                    lease_s: None,
                },
                "l\nключ\n1\n",
            ),
        ];
        for (req, want) in cases {
            assert_eq!(enc(req).as_deref(), Ok(want), "{req:?}");
        }
    }

    #[test]
    fn encode_rejects_before_writing() {
        use Family::{Lock, Semaphore};
        let bad: Vec<(Request<'_>, InvalidInput)> = vec![
            (
                Request::Acquire {
                    family: Lock,
                    key: "",
                    timeout_s: 1,
                    limit: 1,
                    lease_s: None,
                },
                InvalidInput::EmptyKey,
            ),
            (
                Request::Acquire {
                    family: Lock,
                    key: "a\nstats",
                    timeout_s: 1,
                    limit: 1,
                    lease_s: None,
                },
                InvalidInput::KeyCharacter { found: '\n', at: 1 },
            ),
            (
                Request::Acquire {
                    family: Lock,
                    key: "k",
                    timeout_s: 1,
                    limit: 1,
                    lease_s: Some(0),
                },
                InvalidInput::ZeroLease,
            ),
            (
                Request::Acquire {
                    family: Lock,
                    key: "k",
                    timeout_s: 1,
                    limit: 2,
                    lease_s: None,
                },
                InvalidInput::LockLimit,
            ),
            (
                Request::Enqueue {
                    family: Semaphore,
                    key: "k",
                    limit: 0,
                    lease_s: None,
                },
                InvalidInput::ZeroLimit,
            ),
            (
                Request::Wait {
                    family: Lock,
                    key: "k",
                    timeout_s: u64::MAX,
                },
                InvalidInput::TooLarge {
                    what: "timeout",
                    value: u64::MAX,
                    max: MAX_WIRE_INT,
                },
            ),
            (
                Request::Release {
                    family: Lock,
                    key: "k",
                    token: "nothex",
                },
                InvalidInput::Token,
            ),
            (
                Request::Renew {
                    family: Lock,
                    key: "k",
                    token: TOKEN,
                    lease_s: Some(0),
                },
                InvalidInput::ZeroLease,
            ),
            (
                Request::Auth { secret: "x\nl" },
                InvalidInput::Secret {
                    max: MAX_AUTH_SECRET,
                },
            ),
        ];
        for (req, want) in bad {
            let mut out = b"prefix".to_vec();
            assert_eq!(req.encode(&mut out), Err(want), "{req:?}");
            assert_eq!(out, b"prefix");
        }
    }

    #[test]
    fn encode_line_limits() {
        let key = "k".repeat(256);
        let req = Request::Acquire {
            family: Family::Lock,
            key: &key,
            timeout_s: 1,
            limit: 1,
            lease_s: None,
        };
        assert!(enc(req).is_ok());
        let secret = "s".repeat(256);
        assert!(enc(Request::Auth { secret: &secret }).is_ok());
    }

    #[test]
    fn debug_hides_secrets() {
        let s = format!("{:?}", Request::Auth { secret: "hunter2" });
        assert!(!s.contains("hunter2"));
        let s = format!(
            "{:?}",
            Request::Release {
                family: Family::Lock,
                key: "k",
                token: TOKEN
            }
        );
        assert!(!s.contains(TOKEN));
    }

    #[test]
    fn validated_encoding_is_the_same_bytes() {
        let token = Token::from_parts(7, 42);
        let requests = [
            Request::Release {
                family: Family::Lock,
                key: "k",
                token: token.as_str(),
            },
            Request::Release {
                family: Family::Semaphore,
                key: "pool:1",
                token: token.as_str(),
            },
            Request::Acquire {
                family: Family::Semaphore,
                key: "s",
                timeout_s: 10,
                limit: 3,
                lease_s: Some(30),
            },
        ];
        for request in requests {
            let (mut checked, mut validated) = (b"prefix".to_vec(), b"prefix".to_vec());
            request.encode(&mut checked).unwrap();
            request.encode_validated(&mut validated);
            assert_eq!(checked, validated);
        }
    }

    #[test]
    fn push_u64_digits() {
        for v in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }
}
