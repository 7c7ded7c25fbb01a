//! The released dflockd server versions the test server can behave as, and what each one does
//! differently (the private [`Profile`]).
//!
//! There is one state machine and one connection handler; a profile is data that they consult
//! at the few places where the releases differ. Every field names the release that introduced
//! the behaviour it switches on.

use std::fmt;
use std::str::FromStr;

/// The environment variable that picks the version of in-process test servers (and of the
/// binary) when the builder or the command line does not: `1.10`, `2.1`, … (see
/// [`ServerVersion`]'s `FromStr`).
pub const SERVER_VERSION_ENV: &str = "DFLOCKD_TESTKIT_SERVER_VERSION";

/// The environment variable that names the release of the external servers listed in
/// [`TEST_SERVERS_ENV`](crate::TEST_SERVERS_ENV); required when those are used (see
/// [`version_under_test`]).
pub const TEST_SERVERS_VERSION_ENV: &str = "DFLOCKD_TEST_SERVERS_VERSION";

/// A released dflockd server whose behaviour the test server reproduces.
///
/// Users run two lines of the Go server; each variant models one release exactly:
///
/// | variant | release | line |
/// |---|---|---|
/// | [`V1_10`](Self::V1_10) | v1.10.0 | v1.10 |
/// | [`V2_1`](Self::V2_1) | v2.1.1 (newest) | v2.x |
///
/// ```
/// use dflockd_testkit::ServerVersion;
/// let v: ServerVersion = "v1.10.0".parse().unwrap();
/// assert_eq!(v, ServerVersion::V1_10);
/// assert_eq!(v.to_string(), "1.10.0");
/// assert_eq!("2.1".parse::<ServerVersion>().unwrap(), ServerVersion::NEWEST);
/// assert!("1.9".parse::<ServerVersion>().is_err());
/// // What a client is told, to get fences exactly when this server issues them:
/// let release = dflockd_core::ServerVersion::from(ServerVersion::V2_1);
/// assert!(release.issues_fences());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ServerVersion {
    /// dflockd v1.10.0.
    V1_10,
    /// dflockd v2.1.1 (v2.1.0 and v2.1.1 differ only in the Go toolchain).
    V2_1,
}

impl ServerVersion {
    /// The newest release, the default of every test server.
    pub const NEWEST: ServerVersion = ServerVersion::V2_1;

    /// Every version, oldest first.
    pub const ALL: &'static [ServerVersion] = &[ServerVersion::V1_10, ServerVersion::V2_1];

    /// The version named by [`SERVER_VERSION_ENV`], or [`NEWEST`](Self::NEWEST) when it is
    /// unset or empty.
    ///
    /// # Errors
    /// [`Error::Version`](crate::Error::Version) naming the variable when its value is not a
    /// known version.
    pub fn from_env() -> Result<ServerVersion, crate::Error> {
        from_var(SERVER_VERSION_ENV).map(|v| v.unwrap_or(ServerVersion::NEWEST))
    }

    /// The release as dflockd's `--version` prints it: `1.10.0` or `2.1.1`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ServerVersion::V1_10 => "1.10.0",
            ServerVersion::V2_1 => "2.1.1",
        }
    }

    /// What this release does differently.
    pub(crate) const fn profile(self) -> Profile {
        match self {
            ServerVersion::V1_10 => Profile::V1_10,
            ServerVersion::V2_1 => Profile::V2_1,
        }
    }
}

/// The release as the client knows it, for
/// [`ClientBuilder::server_version`](dflockd_core::ClientBuilder::server_version): a client
/// told this gets fences exactly when the test server issues them.
impl From<ServerVersion> for dflockd_core::ServerVersion {
    fn from(version: ServerVersion) -> Self {
        match version {
            ServerVersion::V1_10 => dflockd_core::ServerVersion::new(1, 10, 0),
            ServerVersion::V2_1 => dflockd_core::ServerVersion::new(2, 1, 1),
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no known server version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown dflockd server version {0:?} (expected 1.10, 1.10.0, v1.10.0, 2.1, 2.1.1 or v2.1.1)"
)]
pub struct ParseVersionError(String);

/// Accepts `1.10`, `1.10.0`, `v1.10.0`, `2.1`, `2.1.1` and `v2.1.1` (surrounding whitespace
/// ignored).
impl FromStr for ServerVersion {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        match bare {
            "1.10" | "1.10.0" => Ok(ServerVersion::V1_10),
            "2.1" | "2.1.1" => Ok(ServerVersion::V2_1),
            _ => Err(ParseVersionError(s.to_owned())),
        }
    }
}

/// The value of a version variable: `None` when unset or empty.
fn from_var(variable: &'static str) -> Result<Option<ServerVersion>, crate::Error> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => value
            .parse()
            .map(Some)
            .map_err(|source| crate::Error::Version { variable, source }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => Err(crate::Error::Version {
            variable,
            source: ParseVersionError(raw.to_string_lossy().into_owned()),
        }),
    }
}

/// The release that tests talk to: the one of the external servers when
/// [`TEST_SERVERS_ENV`](crate::TEST_SERVERS_ENV) is set (then [`TEST_SERVERS_VERSION_ENV`]
/// must name it), otherwise the version in-process servers start as ([`SERVER_VERSION_ENV`],
/// else [`ServerVersion::NEWEST`]).
///
/// Tests whose expectations depend on the release use it to pick the expected answers.
///
/// # Panics
/// When external servers are used and [`TEST_SERVERS_VERSION_ENV`] is missing or invalid (a
/// test cannot guess a real server's release), or when [`SERVER_VERSION_ENV`] is invalid.
#[must_use]
pub fn version_under_test() -> ServerVersion {
    if external_servers_configured() {
        return external_version();
    }
    ServerVersion::from_env().unwrap_or_else(|err| panic!("{err}"))
}

/// Whether [`TEST_SERVERS_ENV`](crate::TEST_SERVERS_ENV) lists any server.
pub(crate) fn external_servers_configured() -> bool {
    std::env::var(crate::TEST_SERVERS_ENV).is_ok_and(|v| v.split(',').any(|a| !a.trim().is_empty()))
}

/// The release of the external servers.
///
/// # Panics
/// When [`TEST_SERVERS_VERSION_ENV`] is missing or invalid.
pub(crate) fn external_version() -> ServerVersion {
    match from_var(TEST_SERVERS_VERSION_ENV) {
        Ok(Some(version)) => version,
        Ok(None) => panic!(
            "{} is set, so {TEST_SERVERS_VERSION_ENV} must name the release of those servers \
             (1.10 or 2.1): tests cannot guess it",
            crate::TEST_SERVERS_ENV
        ),
        Err(err) => panic!("{err}"),
    }
}

/// What one release does, where the releases differ. Each field names the release that brought
/// the behaviour; the v1.10.0 profile has none of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // one switch per documented release difference
pub(crate) struct Profile {
    // ----- the wire -----
    /// v2.1.0: a token is a 16-hex-digit fence (a process-wide counter seeded from the Unix
    /// time in ns, +1 per grant) followed by 16 random hex digits; before, 32 random digits.
    pub(crate) fence_tokens: bool,
    /// v1.14.0: `ping` (any key, any argument) is answered `ok`; before, it is an unknown
    /// command (`error`, the connection stays).
    pub(crate) ping: bool,
    /// v1.14.0: locks and semaphores live in separate namespaces; before, `l k` and
    /// `sl k 0 N` are the same resource (limit mismatch unless N = 1).
    pub(crate) separate_namespaces: bool,
    /// v1.15.0: a blocked `l`/`sl`/`w`/`sw` notices at once that its client went away (also
    /// a half-close), and a client that pipelines [`PEER_WATCH_BUFFER`] bytes behind it is
    /// disconnected; before, nobody reads the socket until the wait ends.
    pub(crate) watch_peer_close: bool,
    /// v1.15.0: a closed connection's queued waiters and two-phase state are dropped whatever
    /// `--auto-release-on-disconnect` says (it only keeps held slots); before, with the flag
    /// off nothing at all is cleaned up.
    pub(crate) cleanup_ignores_auto_release: bool,
    /// v1.15.0: the argument line of `auth` may be up to 64 KiB (every other line: 256 bytes).
    pub(crate) auth_line_max: usize,
    /// v1.15.0: a timeout or lease above this many seconds is `error`; before, seconds times
    /// 10^9 wraps around in Go's `int64` nanoseconds.
    pub(crate) max_seconds: Option<u64>,
    /// v1.16.0: while the server drains, the next well-formed request on every connection is
    /// answered `error_draining` and the connection closed; before, open connections are
    /// served normally until they end.
    pub(crate) drain_refuses: bool,
    /// Before v1.16.1: a blocked wait ended by shutdown keeps a grant that raced in (answers
    /// `ok`); since, the grant is passed on and the answer is `error`.
    pub(crate) cancelled_wait_keeps_grant: bool,
    /// Before v1.16.1: `r`/`n` with an unknown token still count as activity on the key
    /// (delaying its collection); since, only a matching token does.
    pub(crate) bogus_token_touches_key: bool,
    /// v1.10.0 only (fixed in v1.10.1, "reject stale tokens"): a queued `e` waiter granted
    /// before its `w` keeps the grant in a mailbox that expiry and release do not clear, so
    /// `w` answers `ok` with the stale token (and revives a lease that expired unswept).
    pub(crate) stale_queued_grants: bool,
    /// v1.16.0: `--max-connections-per-ip`.
    pub(crate) max_connections_per_ip: bool,
    /// v2.1.0: `--fence-state-file`.
    pub(crate) fence_state_file: bool,
    // ----- configuration -----
    /// v2.0.0: an environment integer or boolean that does not parse is a startup error;
    /// before, it is ignored (the default applies). Seconds beyond 9223372036 are an error
    /// too (before, they wrap).
    pub(crate) strict_env: bool,
    /// v1.16.0: `--auth-token` > `--auth-token-file` > `DFLOCKD_AUTH_TOKEN` >
    /// `DFLOCKD_AUTH_TOKEN_FILE`, each trimmed, empty or multi-line refused; v1.10:
    /// `DFLOCKD_AUTH_TOKEN` first, untrimmed, and an empty token file means no auth.
    pub(crate) auth_flag_first: bool,
    /// The variables of `--gc-interval` and `--gc-max-idle`: renamed in v1.15.0
    /// (`DFLOCKD_GC_INTERVAL_S`, `DFLOCKD_GC_MAX_IDLE_S`), old names dropped in v2.0.0.
    pub(crate) gc_env: (&'static str, &'static str),
    /// v1.10.1: `--tls-cert` without `--tls-key` (or the reverse) is a configuration error;
    /// in v1.10.0 the server fails when it starts listening (`server error`), after
    /// `--version` was honoured.
    pub(crate) tls_pair_checked_in_config: bool,
    /// v1.13.2: `--gc-max-idle 0` is accepted (before: `must be > 0`).
    pub(crate) gc_max_idle_zero_ok: bool,
    /// By v2.0.0 (the exact release is not pinned): the range errors of `--write-timeout`,
    /// `--shutdown-timeout`, `--max-connections` and `--max-waiters` no longer print the value
    /// (`(got …)`).
    pub(crate) terse_range_errors: bool,
}

/// The size of the `auth` argument line before v1.15.0: the ordinary line cap.
const LINE_MAX: usize = dflockd_core::proto::MAX_REQUEST_LINE;

impl Profile {
    const V1_10: Profile = Profile {
        fence_tokens: false,
        ping: false,
        separate_namespaces: false,
        watch_peer_close: false,
        cleanup_ignores_auto_release: false,
        auth_line_max: LINE_MAX,
        max_seconds: None,
        drain_refuses: false,
        cancelled_wait_keeps_grant: true,
        bogus_token_touches_key: true,
        stale_queued_grants: true,
        max_connections_per_ip: false,
        fence_state_file: false,
        strict_env: false,
        auth_flag_first: false,
        gc_env: ("DFLOCKD_GC_LOOP_SLEEP", "DFLOCKD_GC_MAX_UNUSED_TIME"),
        tls_pair_checked_in_config: false,
        gc_max_idle_zero_ok: false,
        terse_range_errors: false,
    };

    const V2_1: Profile = Profile {
        fence_tokens: true,
        ping: true,
        separate_namespaces: true,
        watch_peer_close: true,
        cleanup_ignores_auto_release: true,
        auth_line_max: 64 * 1024,
        max_seconds: Some(MAX_DURATION_SECONDS),
        drain_refuses: true,
        cancelled_wait_keeps_grant: false,
        bogus_token_touches_key: false,
        stale_queued_grants: false,
        max_connections_per_ip: true,
        fence_state_file: true,
        strict_env: true,
        auth_flag_first: true,
        gc_env: ("DFLOCKD_GC_INTERVAL_S", "DFLOCKD_GC_MAX_IDLE_S"),
        tls_pair_checked_in_config: true,
        gc_max_idle_zero_ok: true,
        terse_range_errors: true,
    };
}

/// The buffer of Go's `bufio.Reader` (4 KiB): since v1.15, a client whose pipelined bytes
/// behind a blocked request fill it is disconnected.
pub(crate) const PEER_WATCH_BUFFER: usize = 4096;

/// The most seconds a Go `time.Duration` holds: `MaxInt64 / 10^9`.
pub(crate) const MAX_DURATION_SECONDS: u64 = (i64::MAX / 1_000_000_000) as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (text, want) in [
            ("1.10", ServerVersion::V1_10),
            ("1.10.0", ServerVersion::V1_10),
            ("v1.10.0", ServerVersion::V1_10),
            (" 1.10 ", ServerVersion::V1_10),
            ("2.1", ServerVersion::V2_1),
            ("2.1.1", ServerVersion::V2_1),
            ("v2.1.1", ServerVersion::V2_1),
        ] {
            assert_eq!(text.parse::<ServerVersion>(), Ok(want), "{text:?}");
        }
        for bad in [
            "", "1", "1.9", "1.10.1", "2", "2.0", "2.1.0", "V2.1", "latest",
        ] {
            let err = bad.parse::<ServerVersion>().unwrap_err();
            assert!(err.to_string().contains("(expected 1.10,"), "{err}");
        }
        assert_eq!(
            "x".parse::<ServerVersion>().unwrap_err().to_string(),
            "unknown dflockd server version \"x\" (expected 1.10, 1.10.0, v1.10.0, 2.1, 2.1.1 or v2.1.1)"
        );
        assert_eq!(ServerVersion::V1_10.to_string(), "1.10.0");
        assert_eq!(ServerVersion::V2_1.to_string(), "2.1.1");
        assert_eq!(ServerVersion::NEWEST, ServerVersion::V2_1);
        assert_eq!(
            ServerVersion::ALL,
            [ServerVersion::V1_10, ServerVersion::V2_1]
        );
        for v in ServerVersion::ALL {
            assert_eq!(v.to_string().parse::<ServerVersion>(), Ok(*v));
        }
    }

    #[test]
    fn profiles() {
        let old = ServerVersion::V1_10.profile();
        let new = ServerVersion::V2_1.profile();
        assert_eq!(old.auth_line_max, 256);
        assert_eq!(new.auth_line_max, 65536);
        assert_eq!(new.max_seconds, Some(9_223_372_036));
        assert!(old.stale_queued_grants && !new.stale_queued_grants);
        assert!(!old.fence_tokens && new.fence_tokens);
    }
}
