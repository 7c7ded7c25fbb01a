//! The server half of the protocol (feature `server`): requests parsed as a dflockd server
//! reads them, answers encoded as it writes them. For dflockd-compatible servers such as
//! `dflockd-testkit`; a client never needs it, which is why it is not part of the client's
//! API by default.

use super::reply::ServerStatus;
use super::request::{Command, Family, Request};
use super::token::Token;

/// Why the server answers a request with `error` (the connection stays usable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The command word is not one of the protocol's.
    #[error("unknown command")]
    UnknownCommand,
    /// The key is empty or contains a space, tab, `\r` or `\n`.
    #[error("invalid key")]
    InvalidKey,
    /// The argument line has the wrong number of fields.
    #[error("wrong number of arguments")]
    ArgumentCount,
    /// A field that must be an integer is not one, or is out of range.
    #[error("invalid number")]
    InvalidNumber,
    /// A lease of zero (or negative) seconds.
    #[error("lease must be positive")]
    InvalidLease,
    /// A semaphore limit of zero (or negative).
    #[error("limit must be positive")]
    InvalidLimit,
    /// A negative timeout.
    #[error("timeout must not be negative")]
    InvalidTimeout,
    /// An empty token.
    #[error("invalid token")]
    InvalidToken,
}

/// Parses a request as the server receives it: the command, key and argument lines, each
/// without its `\n` and trailing `\r`s (a server holding raw bytes converts them lossily
/// first: the real server accepts keys that are not UTF-8).
///
/// This is the real server's (v1.10 line) definition of a well-formed request:
/// * the command word is exact and case-sensitive; `auth` and `stats` ignore the key, and
///   `stats` ignores the argument; the secret of `auth` is the trimmed argument;
/// * a key is non-empty without space, tab, `\r` or `\n` (anything else is accepted);
/// * `l`, `sl`, `n`, `sn`, `se` split the argument on runs of whitespace; `r`, `sr`, `e`,
///   `w`, `sw` take the whole trimmed argument as one field (so `w k` with `10 20` is an
///   error, and a token with a space in it is simply unknown);
/// * integers are read like Go's `strconv.Atoi` (optional sign, leading zeros, `i64`);
///   seconds become nanoseconds in wrapping `i64` arithmetic as the server does, so a
///   timeout that wraps negative means "do not wait" and a lease that wraps to `<= 0` is
///   refused;
/// * timeouts are `>= 0`, leases and limits `> 0`; tokens are any non-empty text.
///
/// # Errors
/// The [`RequestError`] for which the server answers `error` (the connection stays open).
pub fn parse_request<'a>(
    command: &'a str,
    key: &'a str,
    arg: &'a str,
) -> Result<Request<'a>, RequestError> {
    let command = Command::from_word(command).ok_or(RequestError::UnknownCommand)?;
    match command {
        Command::Auth => return Ok(Request::Auth { secret: arg.trim() }),
        Command::Stats => return Ok(Request::Stats),
        Command::Ping => return Ok(Request::Ping),
        _ => {}
    }
    if key.is_empty() || key.contains([' ', '\t', '\r', '\n']) {
        return Err(RequestError::InvalidKey);
    }
    let fields: Vec<&str> = arg.split_whitespace().collect();
    let whole = arg.trim();
    let family = match command {
        Command::SemLock
        | Command::SemRelease
        | Command::SemRenew
        | Command::SemEnqueue
        | Command::SemWait => Family::Semaphore,
        _ => Family::Lock,
    };
    let request = match command {
        Command::Lock | Command::SemLock => {
            let (timeout, rest) = fields.split_first().ok_or(RequestError::ArgumentCount)?;
            let timeout_s = parse_timeout(timeout)?;
            let (limit, rest) = take_limit(family, rest)?;
            Request::Acquire {
                family,
                key,
                timeout_s,
                limit,
                lease_s: parse_opt_lease(rest)?,
            }
        }
        Command::Enqueue => Request::Enqueue {
            family,
            key,
            limit: 1,
            lease_s: if whole.is_empty() {
                None
            } else {
                Some(parse_lease(whole)?)
            },
        },
        Command::SemEnqueue => {
            let (limit, rest) = take_limit(family, &fields)?;
            Request::Enqueue {
                family,
                key,
                limit,
                lease_s: parse_opt_lease(rest)?,
            }
        }
        Command::Wait | Command::SemWait => {
            if whole.is_empty() {
                return Err(RequestError::ArgumentCount);
            }
            Request::Wait {
                family,
                key,
                timeout_s: parse_timeout(whole)?,
            }
        }
        Command::Release | Command::SemRelease => {
            if whole.is_empty() {
                return Err(RequestError::InvalidToken);
            }
            Request::Release {
                family,
                key,
                token: whole,
            }
        }
        Command::Renew | Command::SemRenew => {
            let (token, rest) = fields.split_first().ok_or(RequestError::InvalidToken)?;
            Request::Renew {
                family,
                key,
                token,
                lease_s: parse_opt_lease(rest)?,
            }
        }
        Command::Auth | Command::Stats | Command::Ping => unreachable!("handled above"),
    };
    Ok(request)
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

fn take_limit<'f>(
    family: Family,
    fields: &'f [&'f str],
) -> Result<(u64, &'f [&'f str]), RequestError> {
    match family {
        Family::Lock => Ok((1, fields)),
        Family::Semaphore => {
            let (limit, rest) = fields.split_first().ok_or(RequestError::ArgumentCount)?;
            let limit = parse_int(limit)?;
            if limit <= 0 {
                return Err(RequestError::InvalidLimit);
            }
            Ok((limit.unsigned_abs(), rest))
        }
    }
}

fn parse_opt_lease(rest: &[&str]) -> Result<Option<u64>, RequestError> {
    match rest {
        [] => Ok(None),
        [lease] => parse_lease(lease).map(Some),
        _ => Err(RequestError::ArgumentCount),
    }
}

/// A lease as the server applies it: seconds times 10^9 in wrapping `i64` arithmetic must be
/// positive; the applied lease is the whole seconds of the wrapped duration.
fn parse_lease(field: &str) -> Result<u64, RequestError> {
    let nanos = parse_int(field)?.wrapping_mul(NANOS_PER_SEC);
    if nanos <= 0 {
        Err(RequestError::InvalidLease)
    } else {
        Ok((nanos / NANOS_PER_SEC).unsigned_abs())
    }
}

/// A timeout as the server applies it: negative is refused; a value whose nanoseconds wrap
/// negative means "do not wait".
fn parse_timeout(field: &str) -> Result<u64, RequestError> {
    let timeout = parse_int(field)?;
    if timeout < 0 {
        return Err(RequestError::InvalidTimeout);
    }
    let nanos = timeout.wrapping_mul(NANOS_PER_SEC);
    Ok(if nanos < 0 {
        0
    } else {
        (nanos / NANOS_PER_SEC).unsigned_abs()
    })
}

/// A decimal integer as the Go server reads it (`strconv.Atoi`): an optional sign, then
/// ASCII digits, within `i64`.
fn parse_int(field: &str) -> Result<i64, RequestError> {
    let digits = field.strip_prefix(['+', '-']).unwrap_or(field);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RequestError::InvalidNumber);
    }
    field
        .parse::<i64>()
        .map_err(|_| RequestError::InvalidNumber)
}

/// An answer line, as the server writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer<'a> {
    /// `ok TOKEN LEASE`: a grant to `l`, `sl`, `w`, `sw`.
    Granted {
        /// The token.
        token: &'a Token,
        /// The lease applied, in seconds.
        lease_s: u64,
    },
    /// `acquired TOKEN LEASE`: an enqueue granted at once.
    Acquired {
        /// The token.
        token: &'a Token,
        /// The lease applied, in seconds.
        lease_s: u64,
    },
    /// `queued`: an enqueue that waits.
    Queued,
    /// `timeout`: no slot in time.
    Timeout,
    /// `ok`: a release, `auth`, `ping`.
    Ok,
    /// `ok LEASE`: a renew.
    Renewed {
        /// The new lease, in seconds.
        lease_s: u64,
    },
    /// `ok JSON`: `stats`.
    Stats(&'a str),
    /// A refusal: `error`, `error_max_locks`, ….
    Status(ServerStatus),
}

impl Answer<'_> {
    /// Appends the answer line, `\n` included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Answer::Granted { token, lease_s } => grant(out, "ok", token, *lease_s),
            Answer::Acquired { token, lease_s } => grant(out, "acquired", token, *lease_s),
            Answer::Queued => out.extend_from_slice(b"queued"),
            Answer::Timeout => out.extend_from_slice(b"timeout"),
            Answer::Ok => out.extend_from_slice(b"ok"),
            Answer::Renewed { lease_s } => {
                out.extend_from_slice(b"ok ");
                super::request::push_u64(out, *lease_s);
            }
            Answer::Stats(json) => {
                out.extend_from_slice(b"ok ");
                out.extend_from_slice(json.as_bytes());
            }
            Answer::Status(status) => out.extend_from_slice(status.word().as_bytes()),
        }
        out.push(b'\n');
    }
}

fn grant(out: &mut Vec<u8>, word: &str, token: &Token, lease_s: u64) {
    out.extend_from_slice(word.as_bytes());
    out.push(b' ');
    out.extend_from_slice(token.as_str().as_bytes());
    out.push(b' ');
    super::request::push_u64(out, lease_s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Expect, Reply, ReplyError};

    const TOKEN: &str = "000000000000000701234567deadbeef";

    #[test]
    fn parse_round_trips_every_encoding() {
        use Family::{Lock, Semaphore};
        let reqs = [
            Request::Acquire {
                family: Lock,
                key: "foo",
                timeout_s: 10,
                limit: 1,
                lease_s: Some(20),
            },
            Request::Acquire {
                family: Semaphore,
                key: "p",
                timeout_s: 0,
                limit: 3,
                lease_s: None,
            },
            Request::Enqueue {
                family: Lock,
                key: "k",
                limit: 1,
                lease_s: None,
            },
            Request::Enqueue {
                family: Lock,
                key: "k",
                limit: 1,
                lease_s: Some(8),
            },
            Request::Enqueue {
                family: Semaphore,
                key: "k",
                limit: 4,
                lease_s: Some(2),
            },
            Request::Wait {
                family: Semaphore,
                key: "k",
                timeout_s: 3,
            },
            Request::Release {
                family: Lock,
                key: "k",
                token: TOKEN,
            },
            Request::Renew {
                family: Semaphore,
                key: "k",
                token: TOKEN,
                lease_s: Some(7),
            },
            Request::Auth {
                secret: "two words",
            },
            Request::Stats,
        ];
        for req in reqs {
            let mut out = Vec::new();
            req.encode(&mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let lines: Vec<&str> = text.split('\n').collect();
            assert_eq!(lines.len(), 4, "{req:?}");
            let parsed = parse_request(lines[0], lines[1], lines[2]).unwrap();
            assert_eq!(parsed, req);
        }
    }

    #[test]
    fn server_parse_errors() {
        let cases: &[(&str, &str, &str, RequestError)] = &[
            ("x", "k", "1", RequestError::UnknownCommand),
            ("L", "k", "1", RequestError::UnknownCommand),
            (" l", "k", "1", RequestError::UnknownCommand),
            ("", "k", "1", RequestError::UnknownCommand),
            ("l", "", "1", RequestError::InvalidKey),
            ("l", "a b", "1", RequestError::InvalidKey),
            ("l", " k", "1", RequestError::InvalidKey),
            ("l", "a\tb", "1", RequestError::InvalidKey),
            ("l", "k", "", RequestError::ArgumentCount),
            ("l", "k", "   ", RequestError::ArgumentCount),
            ("l", "k", "1 2 3", RequestError::ArgumentCount),
            ("l", "k", "-1", RequestError::InvalidTimeout),
            ("l", "k", "x", RequestError::InvalidNumber),
            ("l", "k", "0x10", RequestError::InvalidNumber),
            ("l", "k", "1_0", RequestError::InvalidNumber),
            ("l", "k", "1.5", RequestError::InvalidNumber),
            ("l", "k", "+", RequestError::InvalidNumber),
            ("l", "k", "1 0", RequestError::InvalidLease),
            ("l", "k", "1 +0", RequestError::InvalidLease),
            ("l", "k", "1 -3", RequestError::InvalidLease),
            (
                "l",
                "k",
                "99999999999999999999",
                RequestError::InvalidNumber,
            ),
            ("sl", "k", "1", RequestError::ArgumentCount),
            ("sl", "k", "1 0", RequestError::InvalidLimit),
            ("sl", "k", "1 -2", RequestError::InvalidLimit),
            ("sl", "k", "1 2 3 4", RequestError::ArgumentCount),
            ("se", "k", "", RequestError::ArgumentCount),
            ("se", "k", "2 3 4", RequestError::ArgumentCount),
            ("e", "k", "0", RequestError::InvalidLease),
            ("e", "k", "30 junk", RequestError::InvalidNumber),
            ("w", "k", "", RequestError::ArgumentCount),
            ("w", "k", "10 20", RequestError::InvalidNumber),
            ("w", "k", "-1", RequestError::InvalidTimeout),
            ("r", "k", "", RequestError::InvalidToken),
            ("r", "k", "  ", RequestError::InvalidToken),
            ("n", "k", "", RequestError::InvalidToken),
            ("n", "k", "t 0", RequestError::InvalidLease),
            ("n", "k", "t 1 2", RequestError::ArgumentCount),
        ];
        for (c, k, a, want) in cases {
            assert_eq!(parse_request(c, k, a), Err(*want), "{c:?} {k:?} {a:?}");
        }
    }

    #[test]
    fn server_parse_accepts_what_go_accepts() {
        use Family::{Lock, Semaphore};
        let ok: &[(&str, &str, &str, Request<'_>)] = &[
            // Key and argument of `ping` are not looked at (v1.14 and later answer it).
            ("ping", "", "", Request::Ping),
            ("ping", "a key", "x y", Request::Ping),
            (
                "l",
                "k",
                "+5 007",
                Request::Acquire {
                    family: Lock,
                    key: "k",
                    timeout_s: 5,
                    limit: 1,
                    lease_s: Some(7),
                },
            ),
            (
                "l",
                "k",
                " 10\t 60 ",
                Request::Acquire {
                    family: Lock,
                    key: "k",
                    timeout_s: 10,
                    limit: 1,
                    lease_s: Some(60),
                },
            ),
            (
                "sl",
                "k",
                "1 1",
                Request::Acquire {
                    family: Semaphore,
                    key: "k",
                    timeout_s: 1,
                    limit: 1,
                    lease_s: None,
                },
            ),
            (
                "e",
                "k",
                " 30 ",
                Request::Enqueue {
                    family: Lock,
                    key: "k",
                    limit: 1,
                    lease_s: Some(30),
                },
            ),
            (
                "e",
                "k",
                "",
                Request::Enqueue {
                    family: Lock,
                    key: "k",
                    limit: 1,
                    lease_s: None,
                },
            ),
            (
                "w",
                "k",
                " 0 ",
                Request::Wait {
                    family: Lock,
                    key: "k",
                    timeout_s: 0,
                },
            ),
            // Any token text: unknown tokens are answered by the lock state, not the parser.
            (
                "r",
                "k",
                "whatever",
                Request::Release {
                    family: Lock,
                    key: "k",
                    token: "whatever",
                },
            ),
            (
                "r",
                "k",
                "tok extra ",
                Request::Release {
                    family: Lock,
                    key: "k",
                    token: "tok extra",
                },
            ),
            (
                "n",
                "k",
                "t",
                Request::Renew {
                    family: Lock,
                    key: "k",
                    token: "t",
                    lease_s: None,
                },
            ),
            (
                "auth",
                "",
                "  secret \t",
                Request::Auth { secret: "secret" },
            ),
            ("auth", "any key", "s", Request::Auth { secret: "s" }),
            ("stats", "", "whatever", Request::Stats),
            (
                "l",
                "\0\u{b}\u{a0}ключ",
                "1",
                Request::Acquire {
                    family: Lock,
                    key: "\0\u{b}\u{a0}ключ",
                    timeout_s: 1,
                    limit: 1,
                    lease_s: None,
                },
            ),
            // Timeouts whose nanoseconds wrap negative mean "do not wait".
            (
                "l",
                "k",
                "9223372037",
                Request::Acquire {
                    family: Lock,
                    key: "k",
                    timeout_s: 0,
                    limit: 1,
                    lease_s: None,
                },
            ),
        ];
        for (c, k, a, want) in ok {
            assert_eq!(
                parse_request(c, k, a).as_ref(),
                Ok(want),
                "{c:?} {k:?} {a:?}"
            );
        }
        // A lease whose nanoseconds wrap negative is refused, as the server does.
        assert_eq!(
            parse_request("l", "k", "1 9223372037"),
            Err(RequestError::InvalidLease)
        );
    }

    #[test]
    fn answers_are_written_as_the_client_reads_them() {
        let token = Token::parse(TOKEN).unwrap();
        let cases: [(Answer<'_>, &str, Expect); 8] = [
            (
                Answer::Granted {
                    token: &token,
                    lease_s: 33,
                },
                "ok 000000000000000701234567deadbeef 33",
                Expect::Grant,
            ),
            (
                Answer::Acquired {
                    token: &token,
                    lease_s: 5,
                },
                "acquired 000000000000000701234567deadbeef 5",
                Expect::Enqueue,
            ),
            (Answer::Queued, "queued", Expect::Enqueue),
            (Answer::Timeout, "timeout", Expect::Grant),
            (Answer::Ok, "ok", Expect::Release),
            (Answer::Renewed { lease_s: 20 }, "ok 20", Expect::Renew),
            (Answer::Stats("{}"), "ok {}", Expect::Stats),
            (
                Answer::Status(ServerStatus::LimitMismatch),
                "error_limit_mismatch",
                Expect::Grant,
            ),
        ];
        for (answer, line, expect) in cases {
            let mut out = Vec::new();
            answer.encode(&mut out);
            assert_eq!(out, format!("{line}\n").into_bytes());
            // The client's parser reads back what was meant.
            let parsed = Reply::parse(expect, &out[..out.len() - 1]);
            match answer {
                Answer::Status(s) => assert_eq!(parsed, Err(ReplyError::Server(s))),
                _ => assert!(parsed.is_ok(), "{line}: {parsed:?}"),
            }
        }
    }
}
