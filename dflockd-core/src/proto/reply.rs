//! Answers: one line, parsed for the request that was sent.

use super::MAX_WIRE_INT;
use super::token::Token;

/// Which answers the sent request allows. Every request also allows the error words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expect {
    /// `l`, `sl`, `w`, `sw`: `ok TOKEN LEASE [FENCE]` or `timeout`.
    Grant,
    /// `e`, `se`: `acquired TOKEN LEASE [FENCE]` or `queued`.
    Enqueue,
    /// `r`, `sr`: `ok`.
    Release,
    /// `n`, `sn`: `ok LEASE [FENCE]`.
    Renew,
    /// `auth`: `ok`.
    Auth,
    /// `stats`: `ok JSON`.
    Stats,
    /// `ping`: `ok`.
    Ping,
}

impl Expect {
    /// The answers a request with this command allows.
    #[must_use]
    pub const fn of(command: super::Command) -> Expect {
        use super::Command;
        match command {
            Command::Lock | Command::SemLock | Command::Wait | Command::SemWait => Expect::Grant,
            Command::Enqueue | Command::SemEnqueue => Expect::Enqueue,
            Command::Release | Command::SemRelease => Expect::Release,
            Command::Renew | Command::SemRenew => Expect::Renew,
            Command::Auth => Expect::Auth,
            Command::Stats => Expect::Stats,
            Command::Ping => Expect::Ping,
        }
    }
}

/// A successful grant: the token, the lease actually applied, and a fence if the answer
/// carried one in a 4th field.
///
/// No released server (up to v2.1.1) sends that field. Servers of v2.1 and later put the fence
/// in the token's first 16 hex digits ([`Token::prefix_fence`]), older ones send 32 random hex
/// digits; the answer alone does not tell which, so only whoever knows the server's release
/// may read the prefix as a fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token that proves ownership.
    pub token: Token,
    /// The lease the server applied, in seconds (always > 0).
    pub lease_s: u64,
    /// The explicit 4th field (`acquired TOKEN LEASE FENCE`), when the server sent one.
    pub fence: Option<u64>,
}

/// A non-error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply<'a> {
    /// `ok TOKEN LEASE` (to a grant request) or `acquired TOKEN LEASE` (to an enqueue).
    Granted(Grant),
    /// `queued` (to an enqueue).
    Queued,
    /// `timeout` (to a grant request): no slot opened in time.
    Timeout,
    /// `ok` to a release, to `auth` or to `ping`.
    Ok,
    /// `ok LEASE [FENCE]` to a renew.
    Renewed {
        /// The new full lease in seconds.
        lease_s: u64,
        /// The explicit fence field, when the server sent one.
        fence: Option<u64>,
    },
    /// `ok JSON` to `stats`: the JSON text.
    Stats(&'a str),
}

/// A status word by which the server refuses a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerStatus {
    /// Plain `error`: a malformed request, or (to `r`/`n`) an unknown key or a wrong or expired
    /// token.
    Error,
    /// `error_max_locks`: the server's cap on distinct keys is reached.
    MaxLocks,
    /// `error_max_waiters`: the key's queue is full.
    MaxWaiters,
    /// `error_limit_mismatch`: the key exists with a different limit.
    LimitMismatch,
    /// `error_already_enqueued`: a second `e` before `w` on the same connection.
    AlreadyEnqueued,
    /// `error_not_enqueued`: `w` without an `e` on this connection.
    NotEnqueued,
    /// `error_lease_expired`: the lease of an enqueue-time grant expired before `w`.
    LeaseExpired,
    /// `error_draining`: the server is shutting down.
    Draining,
    /// `error_auth`: the shared secret is missing or wrong; the server closes the connection.
    Auth,
    /// `error_not_leader [ADDR]`: in cluster mode, the leader to retry against (as sent; the
    /// client must not connect to it unless it is configured).
    NotLeader(Option<String>),
    /// Any other `error_*` word, kept verbatim.
    Other(String),
}

impl ServerStatus {
    /// The status word as the server sends it (without the `error_not_leader` address).
    #[must_use]
    pub fn word(&self) -> &str {
        match self {
            ServerStatus::Error => "error",
            ServerStatus::MaxLocks => "error_max_locks",
            ServerStatus::MaxWaiters => "error_max_waiters",
            ServerStatus::LimitMismatch => "error_limit_mismatch",
            ServerStatus::AlreadyEnqueued => "error_already_enqueued",
            ServerStatus::NotEnqueued => "error_not_enqueued",
            ServerStatus::LeaseExpired => "error_lease_expired",
            ServerStatus::Draining => "error_draining",
            ServerStatus::Auth => "error_auth",
            ServerStatus::NotLeader(_) => "error_not_leader",
            ServerStatus::Other(word) => word,
        }
    }

    /// Parses an error word (with its fields, for `error_not_leader`), or `None` when `line`
    /// is not an error answer.
    fn parse(word: &str, mut rest: std::str::SplitAsciiWhitespace<'_>) -> Option<ServerStatus> {
        let status = match word {
            "error" => ServerStatus::Error,
            "error_max_locks" => ServerStatus::MaxLocks,
            "error_max_waiters" => ServerStatus::MaxWaiters,
            "error_limit_mismatch" => ServerStatus::LimitMismatch,
            "error_already_enqueued" => ServerStatus::AlreadyEnqueued,
            "error_not_enqueued" => ServerStatus::NotEnqueued,
            "error_lease_expired" => ServerStatus::LeaseExpired,
            "error_draining" => ServerStatus::Draining,
            "error_auth" => ServerStatus::Auth,
            "error_not_leader" => ServerStatus::NotLeader(
                rest.next()
                    .filter(|addr| addr.len() <= 255 && addr.bytes().all(|b| b.is_ascii_graphic()))
                    .map(str::to_owned),
            ),
            other
                if other.len() <= 64
                    && other.starts_with("error_")
                    && other[6..]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && other.len() > 6 =>
            {
                ServerStatus::Other(other.to_owned())
            }
            _ => return None,
        };
        Some(status)
    }
}

impl std::fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerStatus::NotLeader(Some(addr)) => write!(f, "error_not_leader {addr}"),
            other => f.write_str(other.word()),
        }
    }
}

/// Why an answer line is not a successful reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The server refused the request with a status word.
    #[error("server answered {0}")]
    Server(ServerStatus),
    /// The line is not an answer the protocol allows for this request.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

impl<'a> Reply<'a> {
    /// Parses one answer line (without its `\n`; a trailing `\r` is tolerated) as the answer to
    /// a request of kind `expect`.
    ///
    /// Strict where strictness protects the caller: status words are exact and lowercase,
    /// numbers are plain ASCII digits (no sign, no decimal point), leases are in
    /// `1..=`[`MAX_WIRE_INT`](super::MAX_WIRE_INT) and tokens are 32 lowercase hex. Lenient where
    /// the protocol asks for it: extra trailing fields after the ones it defines are ignored,
    /// and an unknown `error_*` word is a [`ServerStatus::Other`].
    ///
    /// # Errors
    /// [`ReplyError::Server`] for an error word, [`ReplyError::Malformed`] for anything else
    /// that is not an allowed answer to `expect`.
    pub fn parse(expect: Expect, line: &'a [u8]) -> Result<Reply<'a>, ReplyError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(reply) = parse_common(expect, line) {
            return Ok(reply);
        }
        let line = std::str::from_utf8(line).map_err(|_| ReplyError::Malformed("not UTF-8"))?;
        if expect == Expect::Stats {
            if let Some(json) = line.strip_prefix("ok ") {
                return Ok(Reply::Stats(json));
            }
        }
        let mut fields = line.split_ascii_whitespace();
        let word = fields.next().ok_or(ReplyError::Malformed("empty answer"))?;
        if word.starts_with("error") {
            return Err(match ServerStatus::parse(word, fields) {
                Some(status) => ReplyError::Server(status),
                None => ReplyError::Malformed("invalid error word"),
            });
        }
        match (expect, word) {
            (Expect::Grant, "ok") | (Expect::Enqueue, "acquired") => {
                Ok(Reply::Granted(parse_grant(fields)?))
            }
            (Expect::Grant, "timeout") => Ok(Reply::Timeout),
            (Expect::Enqueue, "queued") => Ok(Reply::Queued),
            (Expect::Release | Expect::Auth | Expect::Ping, "ok") => Ok(Reply::Ok),
            (Expect::Renew, "ok") => {
                let lease_s = parse_lease(fields.next())?;
                let fence = parse_opt_fence(fields.next());
                Ok(Reply::Renewed { lease_s, fence })
            }
            (Expect::Stats, "ok") => Err(ReplyError::Malformed("stats answer without JSON")),
            _ => Err(ReplyError::Malformed("unexpected status for this request")),
        }
    }
}

/// The answers of nearly every exchange, in their exact canonical form (`ok` to a release,
/// `ok TOKEN LEASE` to a grant request), recognised without the general parser's UTF-8 check
/// and field splitting. `None` for anything else, which [`Reply::parse`] then parses in full
/// (and answers the same for these lines, as a test checks).
fn parse_common(expect: Expect, line: &[u8]) -> Option<Reply<'static>> {
    match expect {
        Expect::Release | Expect::Auth | Expect::Ping if line == b"ok" => Some(Reply::Ok),
        Expect::Grant => {
            let rest = line.strip_prefix(b"ok ")?;
            if rest.len() < Token::LEN + 2 || rest[Token::LEN] != b' ' {
                return None;
            }
            let token = Token::from_bytes(&rest[..Token::LEN]).ok()?;
            let digits = &rest[Token::LEN + 1..];
            if digits.len() > 19 {
                return None;
            }
            let mut lease_s = 0u64;
            for &b in digits {
                let digit = b.wrapping_sub(b'0');
                if digit > 9 {
                    return None;
                }
                lease_s = lease_s * 10 + u64::from(digit);
            }
            if !(1..=MAX_WIRE_INT).contains(&lease_s) {
                return None;
            }
            Some(Reply::Granted(Grant {
                token,
                lease_s,
                fence: None,
            }))
        }
        _ => None,
    }
}

fn parse_grant(mut fields: std::str::SplitAsciiWhitespace<'_>) -> Result<Grant, ReplyError> {
    let token = fields
        .next()
        .ok_or(ReplyError::Malformed("grant without token"))?;
    let token = Token::parse(token).map_err(|_| ReplyError::Malformed("invalid token"))?;
    let lease_s = parse_lease(fields.next())?;
    Ok(Grant {
        token,
        lease_s,
        fence: parse_opt_fence(fields.next()),
    })
}

fn parse_lease(field: Option<&str>) -> Result<u64, ReplyError> {
    let field = field.ok_or(ReplyError::Malformed("answer without lease"))?;
    match parse_digits(field) {
        Some(lease) if (1..=MAX_WIRE_INT).contains(&lease) => Ok(lease),
        _ => Err(ReplyError::Malformed("invalid lease")),
    }
}

/// The optional 4th field: a decimal fence. Anything else in that position is ignored, as are
/// further fields, so that newer servers can extend the answer.
fn parse_opt_fence(field: Option<&str>) -> Option<u64> {
    field.and_then(parse_digits)
}

fn parse_digits(field: &str) -> Option<u64> {
    if field.is_empty() || field.len() > 20 || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "000000000000002a0123456789abcdef";

    fn grant(lease_s: u64, fence: Option<u64>) -> Reply<'static> {
        Reply::Granted(Grant {
            token: Token::parse(T).unwrap(),
            lease_s,
            fence,
        })
    }

    #[test]
    fn the_shortcut_answers_as_the_general_parser() {
        let lines = [
            format!("ok {T} 33"),
            format!("ok {T} 1"),
            format!("ok {T} 0"),
            format!("ok {T} 9999999999999999999"),
            format!("ok {T} {MAX_WIRE_INT}"),
            format!("ok {T} {}", MAX_WIRE_INT + 1),
            format!("ok {T} 33 7"),
            format!("ok {T} 33 "),
            format!("ok {T}  33"),
            format!("ok {T} 3a"),
            format!("ok {T} -3"),
            format!("ok {T} +3"),
            format!("ok {T}"),
            format!("ok {T} "),
            format!("ok {}A 33", &T[..31]),
            format!("ok {T}0 33"),
            format!("ok\t{T} 33"),
            "ok".to_owned(),
            "ok ".to_owned(),
            "timeout".to_owned(),
        ];
        for line in &lines {
            for expect in [Expect::Grant, Expect::Release, Expect::Auth, Expect::Renew] {
                if let Some(fast) = parse_common(expect, line.as_bytes()) {
                    let mut fields = line.split_ascii_whitespace();
                    let word = fields.next().unwrap();
                    let general = match (expect, word) {
                        (Expect::Grant, "ok") => Reply::Granted(parse_grant(fields).unwrap()),
                        (_, "ok") => Reply::Ok,
                        _ => panic!("shortcut took {line:?}"),
                    };
                    assert_eq!(fast, general, "{line:?} {expect:?}");
                }
            }
        }
        assert!(parse_common(Expect::Grant, format!("ok {T} 33").as_bytes()).is_some());
        assert!(parse_common(Expect::Release, b"ok").is_some());
    }

    #[test]
    fn success_table() {
        let cases: Vec<(Expect, String, Reply<'_>)> = vec![
            (Expect::Grant, format!("ok {T} 33"), grant(33, None)),
            (Expect::Grant, format!("ok {T} 33\r"), grant(33, None)),
            (
                Expect::Grant,
                format!("ok {T} 20 9001"),
                grant(20, Some(9001)),
            ),
            (
                Expect::Grant,
                format!("ok {T} 20 9001 extra more"),
                grant(20, Some(9001)),
            ),
            (
                Expect::Grant,
                format!("ok {T} 20 notanumber"),
                grant(20, None),
            ),
            (Expect::Grant, "timeout".into(), Reply::Timeout),
            (Expect::Enqueue, format!("acquired {T} 5"), grant(5, None)),
            (Expect::Enqueue, "queued".into(), Reply::Queued),
            (Expect::Release, "ok".into(), Reply::Ok),
            (Expect::Auth, "ok".into(), Reply::Ok),
            (
                Expect::Renew,
                "ok 20".into(),
                Reply::Renewed {
                    lease_s: 20,
                    fence: None,
                },
            ),
            (
                Expect::Renew,
                "ok 20 7".into(),
                Reply::Renewed {
                    lease_s: 20,
                    fence: Some(7),
                },
            ),
        ];
        for (expect, line, want) in cases {
            assert_eq!(
                Reply::parse(expect, line.as_bytes()),
                Ok(want),
                "{expect:?} {line:?}"
            );
        }
        assert_eq!(
            Reply::parse(Expect::Stats, br#"ok {"connections":1}"#),
            Ok(Reply::Stats(r#"{"connections":1}"#))
        );
    }

    #[test]
    fn server_statuses() {
        let cases: Vec<(&str, ServerStatus)> = vec![
            ("error", ServerStatus::Error),
            ("error_max_locks", ServerStatus::MaxLocks),
            ("error_max_waiters", ServerStatus::MaxWaiters),
            ("error_limit_mismatch", ServerStatus::LimitMismatch),
            ("error_already_enqueued", ServerStatus::AlreadyEnqueued),
            ("error_not_enqueued", ServerStatus::NotEnqueued),
            ("error_lease_expired", ServerStatus::LeaseExpired),
            ("error_draining", ServerStatus::Draining),
            ("error_auth", ServerStatus::Auth),
            ("error_not_leader", ServerStatus::NotLeader(None)),
            (
                "error_not_leader 10.0.0.2:6388",
                ServerStatus::NotLeader(Some("10.0.0.2:6388".into())),
            ),
            ("error_not_leader \u{1b}[31m", ServerStatus::NotLeader(None)),
            (
                "error_quota_exceeded",
                ServerStatus::Other("error_quota_exceeded".into()),
            ),
        ];
        for expect in [
            Expect::Grant,
            Expect::Enqueue,
            Expect::Release,
            Expect::Renew,
            Expect::Auth,
        ] {
            for (line, status) in &cases {
                assert_eq!(
                    Reply::parse(expect, line.as_bytes()),
                    Err(ReplyError::Server(status.clone())),
                    "{expect:?} {line:?}"
                );
            }
        }
        // Stats can be refused too.
        assert_eq!(
            Reply::parse(Expect::Stats, b"error_auth"),
            Err(ReplyError::Server(ServerStatus::Auth))
        );
        assert_eq!(
            ServerStatus::NotLeader(Some("a:1".into())).to_string(),
            "error_not_leader a:1"
        );
        assert_eq!(ServerStatus::Other("error_x".into()).word(), "error_x");
    }

    #[test]
    fn hostile_answers_are_malformed() {
        let long_digits = "9".repeat(20);
        let huge = "1".repeat(200);
        let cases: Vec<(Expect, String)> = vec![
            (Expect::Grant, String::new()),
            (Expect::Grant, "   ".into()),
            (Expect::Grant, "OK".into()),
            (Expect::Grant, "okay".into()),
            (Expect::Grant, "queued".into()),
            (Expect::Grant, format!("acquired {T} 3")),
            (Expect::Enqueue, format!("ok {T} 3")),
            (Expect::Enqueue, "timeout".into()),
            (Expect::Grant, "ok".into()),
            (Expect::Grant, format!("ok {T}")),
            (Expect::Grant, format!("ok {T} 0")),
            (Expect::Grant, format!("ok {T} -1")),
            (Expect::Grant, format!("ok {T} +5")),
            (Expect::Grant, format!("ok {T} 5.0")),
            (Expect::Grant, format!("ok {T} {long_digits}")),
            (Expect::Grant, format!("ok {T} {huge}")),
            (Expect::Grant, "ok 0123 5".into()),
            (
                Expect::Grant,
                "ok 000000000000002a0123456789ABCDEF 5".into(),
            ),
            (
                Expect::Grant,
                "ok 000000000000002a0123456789abcdeg 5".into(),
            ),
            (
                Expect::Grant,
                "ok 000000000000002a0123456789abcdef00 5".into(),
            ),
            (Expect::Release, "released".into()),
            (Expect::Renew, "ok".into()),
            (Expect::Renew, "ok 0".into()),
            (Expect::Renew, "ok -5".into()),
            (Expect::Stats, "ok".into()),
            (Expect::Auth, "error_".into()),
            (Expect::Auth, "errorx".into()),
            (Expect::Auth, "error_UPPER".into()),
            (Expect::Auth, format!("error_{}", "x".repeat(100))),
            (Expect::Grant, "ok\0 x 5".into()),
        ];
        for (expect, line) in cases {
            assert!(
                matches!(
                    Reply::parse(expect, line.as_bytes()),
                    Err(ReplyError::Malformed(_))
                ),
                "{expect:?} {line:?} gave {:?}",
                Reply::parse(expect, line.as_bytes())
            );
        }
        assert_eq!(
            Reply::parse(Expect::Grant, b"ok \xff\xfe 5"),
            Err(ReplyError::Malformed("not UTF-8"))
        );
    }

    #[test]
    fn release_ok_with_trailing_fields_is_ok() {
        // `ok` answers are matched on the status word; servers may append fields.
        assert_eq!(Reply::parse(Expect::Release, b"ok "), Ok(Reply::Ok));
    }
}
