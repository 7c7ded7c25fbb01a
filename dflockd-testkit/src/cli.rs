//! The command line of the `dflockd-testkit` binary: the real server's flags and environment
//! variables, release by release, read with the rules of Go's `flag` package.
//!
//! * `-x` and `--x` are the same; values as `--x value` or `--x=value`;
//! * boolean flags take no separate value: `--x` or `--x=true|false` (`1`, `t`, `TRUE`, …);
//!   there is no `--no-x` form;
//! * integers accept Go's literal syntax (`0x10`, `0o17`, `1_000`, a leading `0` is octal);
//! * the first argument that is not a flag (or `--`) ends parsing; it and the rest are
//!   ignored;
//! * a flag given on the command line beats its environment variable, which beats the
//!   default; an empty variable counts as unset. Environment integers are decimal
//!   (`strconv.Atoi`), booleans `1/yes/true` or `0/no/false` in any case.
//!
//! What depends on the release ([`CliConfig::server_version`]):
//!
//! | | 1.10.0 | 2.1.1 |
//! |---|---|---|
//! | `--max-connections-per-ip`, `--fence-state-file` | unknown flags | accepted |
//! | `--gc-interval`, `--gc-max-idle` variables | `DFLOCKD_GC_LOOP_SLEEP`, `DFLOCKD_GC_MAX_UNUSED_TIME` | `DFLOCKD_GC_INTERVAL_S`, `DFLOCKD_GC_MAX_IDLE_S` |
//! | a variable that does not parse | ignored (default) | `DFLOCKD_PORT must be an integer (got "x")` |
//! | seconds beyond 9223372036 | wrap around (Go `int64` nanoseconds) | `DFLOCKD_…_S too large (max 9223372036 seconds)` |
//! | auth token | `DFLOCKD_AUTH_TOKEN` > `--auth-token` > `--auth-token-file` > `DFLOCKD_AUTH_TOKEN_FILE`; file trimmed, an empty file means no auth | `--auth-token` > `--auth-token-file` > `DFLOCKD_AUTH_TOKEN` > `DFLOCKD_AUTH_TOKEN_FILE`; all trimmed; empty or multi-line is an error |
//! | `--tls-cert` without `--tls-key` | fails when the server starts (`--version` still works) | configuration error |
//! | `--gc-max-idle 0` | `must be > 0` | accepted |
//!
//! `--server-version` (and its variable [`SERVER_VERSION_ENV`]) is an extension of the test
//! server, accepted whatever the version. The HTTP API flags of the real server (v1.15+) are
//! not accepted: the test server has no HTTP API.
//!
//! ```
//! use dflockd_testkit::{ServerVersion, cli};
//! let cfg = cli::parse(["--port", "7000", "--max-locks=10"], |_| None).unwrap();
//! assert_eq!((cfg.port, cfg.max_locks), (7000, 10));
//! assert_eq!(cfg.server_version, ServerVersion::NEWEST);
//! let err = cli::parse(["--max-locks", "0"], |_| None).unwrap_err();
//! assert_eq!(err.to_string(), "--max-locks must be > 0 (got 0)");
//! let err = cli::parse(["--server-version=1.10", "--fence-state-file=f"], |_| None).unwrap_err();
//! assert_eq!(err.to_string(), "flag provided but not defined: -fence-state-file");
//! ```

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::fence::{go_errno, go_quote};
use crate::version::{MAX_DURATION_SECONDS, Profile};
use crate::{Error, SERVER_VERSION_ENV, ServerVersion, TestServer, TestServerBuilder, TlsIdentity};

const NANOS: i64 = 1_000_000_000;

/// The configuration the command line and environment describe.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CliConfig {
    /// `--server-version` / [`SERVER_VERSION_ENV`] (test server extension); default
    /// [`ServerVersion::NEWEST`].
    pub server_version: ServerVersion,
    /// `--host` / `DFLOCKD_HOST`; default `127.0.0.1`.
    pub host: String,
    /// `--port` / `DFLOCKD_PORT`; default 6388.
    pub port: u16,
    /// `--default-lease-ttl` / `DFLOCKD_DEFAULT_LEASE_TTL_S`; default 33 s.
    pub default_lease_ttl: Duration,
    /// `--lease-sweep-interval` / `DFLOCKD_LEASE_SWEEP_INTERVAL_S`; default 1 s.
    pub lease_sweep_interval: Duration,
    /// `--gc-interval` / `DFLOCKD_GC_LOOP_SLEEP` (1.10) or `DFLOCKD_GC_INTERVAL_S` (2.1);
    /// default 5 s.
    pub gc_interval: Duration,
    /// `--gc-max-idle` / `DFLOCKD_GC_MAX_UNUSED_TIME` (1.10) or `DFLOCKD_GC_MAX_IDLE_S` (2.1);
    /// default 60 s.
    pub gc_max_idle: Duration,
    /// `--max-locks` / `DFLOCKD_MAX_LOCKS`; default 1024.
    pub max_locks: usize,
    /// `--max-connections` / `DFLOCKD_MAX_CONNECTIONS`; default 0 (no cap).
    pub max_connections: usize,
    /// `--max-connections-per-ip` / `DFLOCKD_MAX_CONNECTIONS_PER_IP` (2.1 only); default 0
    /// (no cap).
    pub max_connections_per_ip: usize,
    /// `--max-waiters` / `DFLOCKD_MAX_WAITERS`; default 0 (no cap).
    pub max_waiters: usize,
    /// `--read-timeout` / `DFLOCKD_READ_TIMEOUT_S`; default 23 s.
    pub read_timeout: Duration,
    /// `--write-timeout` / `DFLOCKD_WRITE_TIMEOUT_S`; default 5 s (0 = off).
    pub write_timeout: Duration,
    /// `--shutdown-timeout` / `DFLOCKD_SHUTDOWN_TIMEOUT_S`; default 30 s (0 = forever).
    pub shutdown_timeout: Duration,
    /// `--tls-cert` / `DFLOCKD_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `DFLOCKD_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// From `--auth-token`, `--auth-token-file`, `DFLOCKD_AUTH_TOKEN` or
    /// `DFLOCKD_AUTH_TOKEN_FILE`, with the release's precedence (see the module docs).
    pub auth_token: Option<String>,
    /// `--auto-release-on-disconnect` / `DFLOCKD_AUTO_RELEASE_ON_DISCONNECT`; default true.
    pub auto_release_on_disconnect: bool,
    /// `--fence-state-file` / `DFLOCKD_FENCE_STATE_FILE` (2.1 only).
    pub fence_state_file: Option<PathBuf>,
    /// `--debug` / `DFLOCKD_DEBUG`; default false.
    pub debug: bool,
    /// `--version`: print the version and exit.
    pub version: bool,
}

impl fmt::Debug for CliConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliConfig")
            .field("server_version", &self.server_version)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("default_lease_ttl", &self.default_lease_ttl)
            .field("lease_sweep_interval", &self.lease_sweep_interval)
            .field("gc_interval", &self.gc_interval)
            .field("gc_max_idle", &self.gc_max_idle)
            .field("max_locks", &self.max_locks)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_waiters", &self.max_waiters)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "auto_release_on_disconnect",
                &self.auto_release_on_disconnect,
            )
            .field("fence_state_file", &self.fence_state_file)
            .field("debug", &self.debug)
            .field("version", &self.version)
            .finish()
    }
}

/// Why the command line was refused. [`Display`](fmt::Display) is the text the binary prints
/// after `configuration error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The arguments do not parse (the binary prints the message and the usage first).
    #[error("{0}")]
    Flag(String),
    /// `-h` / `--help` (the binary prints the usage first).
    #[error("flag: help requested")]
    Help,
    /// A value is out of range, or the auth token file is unusable.
    #[error("{0}")]
    Invalid(String),
}

impl CliError {
    /// Whether the usage text goes to stderr before the error (as Go's `flag` package does).
    #[must_use]
    pub fn prints_usage(&self) -> bool {
        matches!(self, CliError::Flag(_) | CliError::Help)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
}

/// Which releases have a flag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    Always,
    /// v1.16.0+.
    MaxConnectionsPerIp,
    /// v2.1.0+.
    FenceStateFile,
}

struct FlagDef {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    env: Option<&'static str>,
    gate: Gate,
    help: &'static str,
    /// The help text from v1.16 on, when it changed.
    help_v2: Option<&'static str>,
}

impl FlagDef {
    const fn new(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        FlagDef {
            name,
            kind,
            default,
            env: None,
            gate: Gate::Always,
            help,
            help_v2: None,
        }
    }

    const fn env(mut self, env: &'static str) -> Self {
        self.env = Some(env);
        self
    }

    const fn gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    const fn help_v2(mut self, help: &'static str) -> Self {
        self.help_v2 = Some(help);
        self
    }

    fn available(&self, profile: &Profile) -> bool {
        match self.gate {
            Gate::Always => true,
            Gate::MaxConnectionsPerIp => profile.max_connections_per_ip,
            Gate::FenceStateFile => profile.fence_state_file,
        }
    }

    /// The variable for this flag in `profile`'s release.
    fn env_name(&self, profile: &Profile) -> Option<&'static str> {
        match self.name {
            "gc-interval" => Some(profile.gc_env.0),
            "gc-max-idle" => Some(profile.gc_env.1),
            _ => self.env,
        }
    }

    fn help(&self, profile: &Profile) -> &'static str {
        match self.help_v2 {
            Some(help) if profile.auth_flag_first => help,
            _ => self.help,
        }
    }
}

/// Every flag of every release (the help texts are the real server's).
const FLAGS: &[FlagDef] = &[
    FlagDef::new("host", Kind::Str, "127.0.0.1", "Bind address").env("DFLOCKD_HOST"),
    FlagDef::new("port", Kind::Int, "6388", "Bind port").env("DFLOCKD_PORT"),
    FlagDef::new(
        "default-lease-ttl",
        Kind::Int,
        "33",
        "Default lock lease duration (seconds)",
    )
    .env("DFLOCKD_DEFAULT_LEASE_TTL_S"),
    FlagDef::new(
        "lease-sweep-interval",
        Kind::Int,
        "1",
        "Lease expiry check interval (seconds)",
    )
    .env("DFLOCKD_LEASE_SWEEP_INTERVAL_S"),
    FlagDef::new("gc-interval", Kind::Int, "5", "Lock state GC interval (seconds)"),
    FlagDef::new(
        "gc-max-idle",
        Kind::Int,
        "60",
        "Idle seconds before pruning lock state",
    ),
    FlagDef::new(
        "max-locks",
        Kind::Int,
        "1024",
        "Maximum number of unique lock keys",
    )
    .env("DFLOCKD_MAX_LOCKS"),
    FlagDef::new(
        "max-connections",
        Kind::Int,
        "0",
        "Maximum concurrent connections (0 = unlimited)",
    )
    .env("DFLOCKD_MAX_CONNECTIONS"),
    FlagDef::new(
        "max-connections-per-ip",
        Kind::Int,
        "0",
        "Maximum concurrent TCP connections per remote IP (0 = unlimited)",
    )
    .env("DFLOCKD_MAX_CONNECTIONS_PER_IP")
    .gate(Gate::MaxConnectionsPerIp),
    FlagDef::new(
        "max-waiters",
        Kind::Int,
        "0",
        "Maximum waiters per lock/semaphore key (0 = unlimited)",
    )
    .env("DFLOCKD_MAX_WAITERS"),
    FlagDef::new("read-timeout", Kind::Int, "23", "Client read timeout (seconds)")
        .env("DFLOCKD_READ_TIMEOUT_S"),
    FlagDef::new("write-timeout", Kind::Int, "5", "Client write timeout (seconds)")
        .env("DFLOCKD_WRITE_TIMEOUT_S"),
    FlagDef::new(
        "shutdown-timeout",
        Kind::Int,
        "30",
        "Graceful shutdown drain timeout (seconds, 0 = wait forever)",
    )
    .env("DFLOCKD_SHUTDOWN_TIMEOUT_S"),
    FlagDef::new(
        "auto-release-on-disconnect",
        Kind::Bool,
        "true",
        "Release locks when a client disconnects",
    )
    .env("DFLOCKD_AUTO_RELEASE_ON_DISCONNECT"),
    FlagDef::new(
        "tls-cert",
        Kind::Str,
        "",
        "Path to TLS certificate PEM file",
    )
    .env("DFLOCKD_TLS_CERT"),
    FlagDef::new("tls-key", Kind::Str, "", "Path to TLS private key PEM file")
        .env("DFLOCKD_TLS_KEY"),
    FlagDef::new(
        "auth-token",
        Kind::Str,
        "",
        "Shared secret token for client authentication (visible in process list; prefer --auth-token-file)",
    )
    .env("DFLOCKD_AUTH_TOKEN")
    .help_v2("Shared secret token (visible in process list; prefer --auth-token-file)"),
    FlagDef::new(
        "auth-token-file",
        Kind::Str,
        "",
        "Path to file containing the auth token (one line, trailing whitespace stripped)",
    )
    .env("DFLOCKD_AUTH_TOKEN_FILE")
    .help_v2("Path to file containing the auth token (one line)"),
    FlagDef::new(
        "fence-state-file",
        Kind::Str,
        "",
        "Path to the fence-counter state file. Set to enable strict cross-restart fencing-token monotonicity (one fsync per ~1M grants). Empty = best-effort wall-clock seeding.",
    )
    .env("DFLOCKD_FENCE_STATE_FILE")
    .gate(Gate::FenceStateFile),
    FlagDef::new("debug", Kind::Bool, "false", "Enable debug logging").env("DFLOCKD_DEBUG"),
    FlagDef::new("version", Kind::Bool, "false", "Print version and exit"),
    FlagDef::new(
        "server-version",
        Kind::Str,
        "",
        "dflockd-testkit extension: the dflockd release to behave as, 1.10.0 or 2.1.1 (default: $DFLOCKD_TESTKIT_SERVER_VERSION, else 2.1.1)",
    ),
];

/// The usage text of `version`'s release (Go `flag` layout, program name `dflockd`), printed
/// to stderr on `--help` and on flag errors. It lists the extension `--server-version` too.
#[must_use]
pub fn usage(version: ServerVersion) -> String {
    let profile = version.profile();
    let mut out = String::from("Usage of dflockd:\n");
    let mut flags: Vec<&FlagDef> = FLAGS.iter().filter(|f| f.available(&profile)).collect();
    flags.sort_by_key(|f| f.name);
    for f in flags {
        let kind = match f.kind {
            Kind::Str => " string",
            Kind::Int => " int",
            Kind::Bool => "",
        };
        out.push_str(&format!("  -{}{kind}\n    \t{}", f.name, f.help(&profile)));
        let show_default = match f.kind {
            Kind::Str => !f.default.is_empty(),
            Kind::Int => f.default != "0",
            Kind::Bool => f.default != "false",
        };
        if show_default {
            if f.kind == Kind::Str {
                out.push_str(&format!(" (default {})", go_quote(f.default)));
            } else {
                out.push_str(&format!(" (default {})", f.default));
            }
        }
        out.push('\n');
    }
    out
}

/// The release the arguments and environment ask for: `--server-version` (the last one before
/// parsing stops), else [`SERVER_VERSION_ENV`], else [`ServerVersion::NEWEST`]; also the
/// newest when the value is not a version (then [`parse`] reports it). The binary uses it to
/// pick the usage text.
pub fn requested_version<I, S, E>(args: I, env: E) -> ServerVersion
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
    E: Fn(&str) -> Option<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    resolve_version(&args, &env).unwrap_or(ServerVersion::NEWEST)
}

fn resolve_version(
    args: &[String],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ServerVersion, CliError> {
    // Every flag of every release, errors ignored: only the version is looked for.
    let (given, _) = scan_flags(args.to_vec(), |_| true);
    if let Some((_, value)) = given.iter().rev().find(|(n, _)| *n == "server-version") {
        return value.parse().map_err(|err| {
            CliError::Flag(format!(
                "invalid value {} for flag -server-version: {err}",
                go_quote(value)
            ))
        });
    }
    match env(SERVER_VERSION_ENV).filter(|v| !v.is_empty()) {
        Some(value) => value
            .parse()
            .map_err(|err| CliError::Invalid(format!("invalid {SERVER_VERSION_ENV}: {err}"))),
        None => Ok(ServerVersion::NEWEST),
    }
}

/// Parses the arguments (without the program name) and the environment (`env` looks a
/// variable up) with the rules of the release they ask for (see [`requested_version`]),
/// validates the result and reads the auth token file.
///
/// `--version` is honoured by the caller, after validation (so an invalid configuration with
/// `--version` is still an error, as with the real server).
///
/// # Errors
/// [`CliError`]; its text is what the binary prints after `configuration error: `.
pub fn parse<I, S, E>(args: I, env: E) -> Result<CliConfig, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
    E: Fn(&str) -> Option<String>,
{
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let version = resolve_version(&args, &env)?;
    let profile = version.profile();
    let (given, err) = scan_flags(args, |f| f.available(&profile));
    if let Some(err) = err {
        return Err(err);
    }
    Resolver {
        profile,
        given,
        env: &env,
    }
    .config(version)
}

/// Flag values and the environment, resolved with one release's rules.
struct Resolver<'e, E> {
    profile: Profile,
    given: Vec<(&'static str, String)>,
    env: &'e E,
}

impl<E: Fn(&str) -> Option<String>> Resolver<'_, E> {
    /// The definition of a flag and its value on the command line (the last one wins).
    fn lookup(&self, name: &str) -> (&'static FlagDef, Option<&String>) {
        let def = FLAGS.iter().find(|f| f.name == name).expect("known flag");
        (
            def,
            self.given
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v),
        )
    }

    fn env(&self, name: Option<&'static str>) -> Option<(&'static str, String)> {
        let name = name?;
        (self.env)(name)
            .filter(|v| !v.is_empty())
            .map(|v| (name, v))
    }

    fn string(&self, name: &str) -> String {
        let (def, flag) = self.lookup(name);
        match flag {
            Some(v) => v.clone(),
            None => self
                .env(def.env_name(&self.profile))
                .map_or_else(|| def.default.to_owned(), |(_, v)| v),
        }
    }

    fn int(&self, name: &str) -> Result<i64, CliError> {
        let (def, flag) = self.lookup(name);
        // Flag values were checked while parsing.
        let default = go_parse_int(def.default).unwrap_or(0);
        if let Some(v) = flag {
            return Ok(go_parse_int(v).unwrap_or(default));
        }
        match self.env(def.env_name(&self.profile)) {
            None => Ok(default),
            Some((var, v)) => match atoi(&v) {
                Some(n) => Ok(n),
                None if self.profile.strict_env => Err(CliError::Invalid(format!(
                    "{var} must be an integer (got {})",
                    go_quote(&v)
                ))),
                None => Ok(default),
            },
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, CliError> {
        let (def, flag) = self.lookup(name);
        let default = def.default == "true";
        if let Some(v) = flag {
            return Ok(go_parse_bool(v).unwrap_or(default));
        }
        match self.env(def.env_name(&self.profile)) {
            None => Ok(default),
            Some((var, v)) => match v.to_ascii_lowercase().as_str() {
                "1" | "yes" | "true" => Ok(true),
                "0" | "no" | "false" => Ok(false),
                _ if self.profile.strict_env => Err(CliError::Invalid(format!(
                    "{var} must be a boolean (got {})",
                    go_quote(&v)
                ))),
                _ => Ok(default),
            },
        }
    }

    /// Seconds as Go nanoseconds: wrapping in v1.10 (`time.Duration(n) * time.Second`), an
    /// error beyond the range since v2.0 (named by the variable, even for a flag).
    fn duration(&self, name: &str) -> Result<i64, CliError> {
        let seconds = self.int(name)?;
        if self.profile.strict_env && seconds.unsigned_abs() > MAX_DURATION_SECONDS {
            let (def, _) = self.lookup(name);
            return Err(CliError::Invalid(format!(
                "{} too large (max {MAX_DURATION_SECONDS} seconds)",
                def.env_name(&self.profile).unwrap_or(name)
            )));
        }
        Ok(seconds.wrapping_mul(NANOS))
    }

    fn config(&self, server_version: ServerVersion) -> Result<CliConfig, CliError> {
        let p = &self.profile;
        // Resolution order of the 2.x server: integers, booleans, durations, auth token.
        let port = self.int("port")?;
        let max_locks = self.int("max-locks")?;
        let max_connections = self.int("max-connections")?;
        let max_connections_per_ip = if p.max_connections_per_ip {
            self.int("max-connections-per-ip")?
        } else {
            0
        };
        let max_waiters = self.int("max-waiters")?;
        let auto_release = self.boolean("auto-release-on-disconnect")?;
        let debug = self.boolean("debug")?;
        let default_lease = self.duration("default-lease-ttl")?;
        let sweep = self.duration("lease-sweep-interval")?;
        let gc_interval = self.duration("gc-interval")?;
        let gc_max_idle = self.duration("gc-max-idle")?;
        let read_timeout = self.duration("read-timeout")?;
        let write_timeout = self.duration("write-timeout")?;
        let shutdown_timeout = self.duration("shutdown-timeout")?;
        let auth_token = if p.auth_flag_first {
            self.auth_token()?
        } else {
            self.auth_token_v1_10()?
        };

        let invalid = |msg: String| Err(CliError::Invalid(msg));
        let got = |detail: String| {
            if p.terse_range_errors {
                String::new()
            } else {
                format!(" (got {detail})")
            }
        };
        if max_locks <= 0 {
            return invalid(format!("--max-locks must be > 0 (got {max_locks})"));
        }
        for (name, value) in [
            ("default-lease-ttl", default_lease),
            ("lease-sweep-interval", sweep),
            ("gc-interval", gc_interval),
            ("read-timeout", read_timeout),
        ] {
            if value <= 0 {
                return invalid(format!("--{name} must be > 0"));
            }
        }
        for (name, value) in [
            ("write-timeout", write_timeout),
            ("shutdown-timeout", shutdown_timeout),
        ] {
            if value < 0 {
                return invalid(format!("--{name} must be >= 0{}", got(go_duration(value))));
            }
        }
        if !(0..=65535).contains(&port) {
            return invalid(format!("--port must be 0-65535 (got {port})"));
        }
        for (name, value) in [
            ("max-connections", max_connections),
            ("max-connections-per-ip", max_connections_per_ip),
            ("max-waiters", max_waiters),
        ] {
            if value < 0 {
                return invalid(format!("--{name} must be >= 0{}", got(value.to_string())));
            }
        }
        if p.gc_max_idle_zero_ok {
            if gc_max_idle < 0 {
                return invalid("--gc-max-idle must be >= 0".into());
            }
        } else if gc_max_idle <= 0 {
            return invalid(format!(
                "--gc-max-idle must be > 0 (got {})",
                go_duration(gc_max_idle)
            ));
        }
        let tls_cert = self.string("tls-cert");
        let tls_key = self.string("tls-key");
        if p.tls_pair_checked_in_config && tls_cert.is_empty() != tls_key.is_empty() {
            return invalid(TLS_PAIR.into());
        }
        let nonempty = |s: String| (!s.is_empty()).then(|| PathBuf::from(s));
        let nanos = |n: i64| Duration::from_nanos(n.unsigned_abs());
        let count = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(CliConfig {
            server_version,
            host: self.string("host"),
            port: u16::try_from(port).unwrap_or_default(),
            default_lease_ttl: nanos(default_lease),
            lease_sweep_interval: nanos(sweep),
            gc_interval: nanos(gc_interval),
            gc_max_idle: nanos(gc_max_idle),
            max_locks: count(max_locks),
            max_connections: count(max_connections),
            max_connections_per_ip: count(max_connections_per_ip),
            max_waiters: count(max_waiters),
            read_timeout: nanos(read_timeout),
            write_timeout: nanos(write_timeout),
            shutdown_timeout: nanos(shutdown_timeout),
            tls_cert: nonempty(tls_cert),
            tls_key: nonempty(tls_key),
            auth_token,
            auto_release_on_disconnect: auto_release,
            fence_state_file: if p.fence_state_file {
                nonempty(self.string("fence-state-file"))
            } else {
                None
            },
            debug,
            version: self.lookup("version").1.is_some_and(|v| v == "true"),
        })
    }

    /// v1.10: `DFLOCKD_AUTH_TOKEN` (as is), `--auth-token` (as is), then the file of
    /// `--auth-token-file` or `DFLOCKD_AUTH_TOKEN_FILE` (trimmed; empty means no auth).
    fn auth_token_v1_10(&self) -> Result<Option<String>, CliError> {
        if let Some((_, token)) = self.env(Some("DFLOCKD_AUTH_TOKEN")) {
            return Ok(Some(token));
        }
        if let Some(token) = self.lookup("auth-token").1.filter(|t| !t.is_empty()) {
            return Ok(Some(token.clone()));
        }
        let path = match self.lookup("auth-token-file").1.filter(|t| !t.is_empty()) {
            Some(path) => path.clone(),
            None => match self.env(Some("DFLOCKD_AUTH_TOKEN_FILE")) {
                Some((_, path)) => path,
                None => return Ok(None),
            },
        };
        let token = read_token_file(&path)?;
        let token = token.trim();
        Ok((!token.is_empty()).then(|| token.to_owned()))
    }

    /// Since v1.16: `--auth-token`, `--auth-token-file`, `DFLOCKD_AUTH_TOKEN`,
    /// `DFLOCKD_AUTH_TOKEN_FILE`; each trimmed, and empty or multi-line refused.
    fn auth_token(&self) -> Result<Option<String>, CliError> {
        if let Some(token) = self.lookup("auth-token").1.filter(|t| !t.is_empty()) {
            return clean_token("--auth-token", token).map(Some);
        }
        let file = |path: &str| {
            let data = read_token_file(path)?;
            clean_token(&format!("auth token file {}", go_quote(path)), &data)
        };
        if let Some(path) = self.lookup("auth-token-file").1.filter(|t| !t.is_empty()) {
            return file(path).map(Some);
        }
        if let Some((var, token)) = self.env(Some("DFLOCKD_AUTH_TOKEN")) {
            return clean_token(var, &token).map(Some);
        }
        if let Some((_, path)) = self.env(Some("DFLOCKD_AUTH_TOKEN_FILE")) {
            return file(&path).map(Some);
        }
        Ok(None)
    }
}

const TLS_PAIR: &str = "both --tls-cert and --tls-key must be provided together";

fn clean_token(source: &str, token: &str) -> Result<String, CliError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::Invalid(format!("{source} is empty")));
    }
    if token.contains(['\n', '\r']) {
        return Err(CliError::Invalid(format!(
            "{source} must not contain newline characters"
        )));
    }
    Ok(token.to_owned())
}

fn read_token_file(path: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|err| {
        // Go's os.ReadFile: opening a directory works, reading it does not.
        let op = if std::path::Path::new(path).is_dir() {
            "read"
        } else {
            "open"
        };
        CliError::Invalid(format!(
            "reading auth token file {}: {op} {path}: {}",
            go_quote(path),
            go_errno(&err)
        ))
    })
}

impl CliConfig {
    /// The address to listen on (`host:port`; an empty host is every interface).
    ///
    /// # Errors
    /// [`Error::Config`] when the host does not resolve.
    pub fn listen_addr(&self) -> Result<SocketAddr, Error> {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            self.host.as_str()
        };
        (host, self.port)
            .to_socket_addrs()
            .map_err(|e| Error::Config(format!("cannot resolve --host {host:?}: {e}")))?
            .next()
            .ok_or_else(|| Error::Config(format!("--host {host:?} has no address")))
    }

    /// A [`TestServerBuilder`] with these settings (reads the TLS files).
    ///
    /// # Errors
    /// [`Error::Config`] for an unresolvable host or (version 1.10, which checks it only when
    /// it starts) a TLS certificate without a key or the reverse, [`Error::Read`] for an
    /// unreadable TLS file.
    pub fn to_builder(&self) -> Result<TestServerBuilder, Error> {
        let mut builder = TestServer::builder()
            .version(self.server_version)
            .addr(self.listen_addr()?)
            .default_lease(self.default_lease_ttl)
            .lease_sweep_interval(self.lease_sweep_interval)
            .gc_interval(self.gc_interval)
            .gc_max_idle(self.gc_max_idle)
            .max_locks(self.max_locks)
            .max_connections(self.max_connections)
            .max_connections_per_ip(self.max_connections_per_ip)
            .max_waiters(self.max_waiters)
            .read_timeout(self.read_timeout)
            .write_timeout(self.write_timeout)
            .shutdown_timeout(self.shutdown_timeout)
            .auto_release_on_disconnect(self.auto_release_on_disconnect);
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                builder = builder.tls(TlsIdentity::from_pem_files(cert, key)?)
            }
            (None, None) => {}
            _ => return Err(Error::Config(TLS_PAIR.into())),
        }
        if let Some(token) = &self.auth_token {
            builder = builder.auth_token(token.clone());
        }
        if let Some(path) = &self.fence_state_file {
            builder = builder.fence_state_file(path.clone());
        }
        Ok(builder)
    }
}

/// Go `flag` parsing over the flags `known` admits: (name, value) in order of appearance
/// (bool flags get "true"/"false"), and the error that stopped parsing, if any.
fn scan_flags(
    args: Vec<String>,
    known: impl Fn(&FlagDef) -> bool,
) -> (Vec<(&'static str, String)>, Option<CliError>) {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        if arg == "--" {
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return (out, Some(CliError::Flag(format!("bad flag syntax: {arg}"))));
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(def) = FLAGS.iter().find(|f| f.name == name && known(f)) else {
            if name == "help" || name == "h" {
                return (out, Some(CliError::Help));
            }
            return (
                out,
                Some(CliError::Flag(format!(
                    "flag provided but not defined: -{name}"
                ))),
            );
        };
        let value = match (def.kind, value) {
            (Kind::Bool, None) => "true".to_owned(),
            (Kind::Bool, Some(v)) => match go_parse_bool(&v) {
                Some(b) => b.to_string(),
                None => {
                    return (
                        out,
                        Some(CliError::Flag(format!(
                            "invalid boolean value {} for -{name}: parse error",
                            go_quote(&v)
                        ))),
                    );
                }
            },
            (_, Some(v)) => v,
            (_, None) => match args.next() {
                Some(v) => v,
                None => {
                    return (
                        out,
                        Some(CliError::Flag(format!("flag needs an argument: -{name}"))),
                    );
                }
            },
        };
        if def.kind == Kind::Int {
            if let Err(why) = go_parse_int(&value) {
                return (
                    out,
                    Some(CliError::Flag(format!(
                        "invalid value {} for flag -{name}: {why}",
                        go_quote(&value)
                    ))),
                );
            }
        }
        out.push((def.name, value));
    }
    (out, None)
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.Atoi` (decimal, optional sign).
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, base prefix (`0x`, `0o`, `0b`, or `0` for octal),
/// underscores between digits.
fn go_parse_int(s: &str) -> Result<i64, &'static str> {
    const SYNTAX: &str = "parse error";
    let (negative, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return Err(SYNTAX);
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    if !underscores_ok(&lower, radix == 16 && prefixed) {
        return Err(SYNTAX);
    }
    let mut value: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(radix).ok_or(SYNTAX)?;
        any = true;
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or("value out of range")?;
    }
    if !any {
        return Err(SYNTAX);
    }
    if negative {
        if value > i64::MIN.unsigned_abs() {
            return Err("value out of range");
        }
        Ok(0i64.wrapping_sub_unsigned(value))
    } else {
        i64::try_from(value).map_err(|_| "value out of range")
    }
}

/// Go's rule for `_` in integer literals: only between digits, or after a base prefix.
fn underscores_ok(s: &str, hex: bool) -> bool {
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1], b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `time.Duration.String` for a duration in nanoseconds.
fn go_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let mut u = d.unsigned_abs();
    let sign = if d < 0 { "-" } else { "" };
    if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (whole, frac) = split_frac(u, prec);
        return format!("{sign}{whole}{frac}{unit}");
    }
    let (secs, frac) = split_frac(u, 9);
    u = secs;
    let mut out = format!("{}{frac}s", u % 60);
    u /= 60;
    if u > 0 {
        out = format!("{}m{out}", u % 60);
        u /= 60;
        if u > 0 {
            out = format!("{u}h{out}");
        }
    }
    format!("{sign}{out}")
}

/// Splits `v` into its value above `prec` decimal digits and the fraction text (`.5`, or empty
/// when zero; trailing zeros dropped).
fn split_frac(v: u64, prec: u32) -> (u64, String) {
    let scale = 10u64.pow(prec);
    let frac = v % scale;
    if frac == 0 {
        return (v / scale, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (v / scale, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: ServerVersion = ServerVersion::V1_10;
    const V2: ServerVersion = ServerVersion::V2_1;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    /// `--server-version=V` followed by `rest`.
    fn args(version: ServerVersion, rest: &[&str]) -> Vec<String> {
        std::iter::once(format!("--server-version={version}"))
            .chain(rest.iter().map(|a| (*a).to_owned()))
            .collect()
    }

    fn parse_as(version: ServerVersion, rest: &[&str]) -> Result<CliConfig, CliError> {
        parse(args(version, rest), none)
    }

    fn error_as(version: ServerVersion, rest: &[&str]) -> String {
        parse_as(version, rest).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        for &v in ServerVersion::ALL {
            let c = parse_as(v, &[]).unwrap();
            assert_eq!(c.server_version, v);
            assert_eq!(c.host, "127.0.0.1");
            // The usage table spells the defaults out as the real server prints them; they
            // are the protocol's, which the client uses too.
            assert_eq!(c.port, dflockd_core::proto::DEFAULT_PORT);
            assert_eq!(c.port, 6388);
            assert_eq!(
                c.default_lease_ttl,
                Duration::from_secs(dflockd_core::proto::DEFAULT_LEASE_S)
            );
            assert_eq!(c.lease_sweep_interval, Duration::from_secs(1));
            assert_eq!(c.gc_interval, Duration::from_secs(5));
            assert_eq!(c.gc_max_idle, Duration::from_secs(60));
            assert_eq!(c.max_locks, 1024);
            assert_eq!(
                (c.max_connections, c.max_connections_per_ip, c.max_waiters),
                (0, 0, 0)
            );
            assert_eq!(
                c.read_timeout,
                Duration::from_secs(dflockd_core::proto::DEFAULT_READ_TIMEOUT_S)
            );
            assert_eq!(c.write_timeout, Duration::from_secs(5));
            assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
            assert!(c.auto_release_on_disconnect);
            assert!(!c.debug && !c.version);
            assert_eq!((c.tls_cert, c.tls_key, c.auth_token), (None, None, None));
            assert_eq!(c.fence_state_file, None);
        }
    }

    #[test]
    fn choosing_the_version() {
        let c = parse(Vec::<String>::new(), none).unwrap();
        assert_eq!(c.server_version, ServerVersion::NEWEST);
        let env = env_of(&[("DFLOCKD_TESTKIT_SERVER_VERSION", "v1.10.0")]);
        assert_eq!(
            parse(Vec::<String>::new(), &env).unwrap().server_version,
            V1
        );
        // The flag beats the variable; the last flag wins; `-x` is `--x`.
        assert_eq!(
            parse(["--server-version", "2.1"], &env)
                .unwrap()
                .server_version,
            V2
        );
        assert_eq!(
            parse(["-server-version=2.1", "--server-version=1.10"], none)
                .unwrap()
                .server_version,
            V1
        );
        // A flag after the end of parsing does not count.
        assert_eq!(
            parse(["stop", "--server-version=1.10"], none)
                .unwrap()
                .server_version,
            V2
        );
        assert_eq!(
            parse(["--server-version", "3"], none).unwrap_err(),
            CliError::Flag(
                "invalid value \"3\" for flag -server-version: unknown dflockd server version \"3\" (expected 1.10, 1.10.0, v1.10.0, 2.1, 2.1.1 or v2.1.1)".into()
            )
        );
        assert!(
            parse(["--server-version", "3"], none)
                .unwrap_err()
                .prints_usage()
        );
        let bad = env_of(&[("DFLOCKD_TESTKIT_SERVER_VERSION", "1.9")]);
        let err = parse(Vec::<String>::new(), &bad).unwrap_err();
        assert!(!err.prints_usage());
        assert!(
            err.to_string().starts_with(
                "invalid DFLOCKD_TESTKIT_SERVER_VERSION: unknown dflockd server version \"1.9\""
            ),
            "{err}"
        );
        // A valid flag makes an invalid variable irrelevant.
        assert_eq!(
            parse(["--server-version=1.10"], &bad)
                .unwrap()
                .server_version,
            V1
        );
        assert_eq!(requested_version(["--server-version=1.10"], none), V1);
        assert_eq!(requested_version(["--server-version=9"], none), V2);
    }

    #[test]
    fn go_flag_syntax() {
        for &v in ServerVersion::ALL {
            let c = parse_as(
                v,
                &[
                    "-port",
                    "7000",
                    "--max-locks=5",
                    "--debug",
                    "-read-timeout=2",
                    "--host",
                    "::1",
                ],
            )
            .unwrap();
            assert_eq!((c.port, c.max_locks, c.debug), (7000, 5, true));
            assert_eq!(c.read_timeout, Duration::from_secs(2));
            assert_eq!(c.host, "::1");
            // Go integer literals.
            let c = parse_as(
                v,
                &["--max-locks", "0x10", "--max-waiters=0o17", "--port=1_000"],
            )
            .unwrap();
            assert_eq!((c.max_locks, c.max_waiters, c.port), (16, 15, 1000));
            assert_eq!(parse_as(v, &["--max-locks", "010"]).unwrap().max_locks, 8);
            // A non-flag stops parsing; the rest is ignored.
            let c = parse_as(v, &["--debug", "false", "--port", "1"]).unwrap();
            assert!(c.debug);
            assert_eq!(c.port, 6388);
            let c = parse_as(v, &["--", "--port", "1"]).unwrap();
            assert_eq!(c.port, 6388);
            // Last one wins.
            assert_eq!(parse_as(v, &["--port=1", "--port=2"]).unwrap().port, 2);
            // A value may start with a dash.
            let want = match v {
                V1 => "--max-waiters must be >= 0 (got -1)",
                _ => "--max-waiters must be >= 0",
            };
            assert_eq!(error_as(v, &["--max-waiters", "-1"]), want);
        }
    }

    #[test]
    fn bools() {
        for &v in ServerVersion::ALL {
            for (rest, want) in [
                (&["--auto-release-on-disconnect=false"][..], false),
                (&["--auto-release-on-disconnect=0"][..], false),
                (&["--auto-release-on-disconnect=F"][..], false),
                (&["--auto-release-on-disconnect"][..], true),
                (&["-auto-release-on-disconnect=false"][..], false),
            ] {
                assert_eq!(
                    parse_as(v, rest).unwrap().auto_release_on_disconnect,
                    want,
                    "{rest:?}"
                );
            }
            assert_eq!(
                parse_as(v, &["--debug=yes"]).unwrap_err(),
                CliError::Flag("invalid boolean value \"yes\" for -debug: parse error".into())
            );
            // Go's flag package has no negated form.
            assert_eq!(
                parse_as(v, &["--no-auto-release-on-disconnect"]).unwrap_err(),
                CliError::Flag(
                    "flag provided but not defined: -no-auto-release-on-disconnect".into()
                )
            );
        }
    }

    #[test]
    fn flag_errors() {
        let cases: &[(&[&str], CliError)] = &[
            (
                &["--nope"],
                CliError::Flag("flag provided but not defined: -nope".into()),
            ),
            (
                &["--http-port=8080"],
                CliError::Flag("flag provided but not defined: -http-port".into()),
            ),
            (&["-h"], CliError::Help),
            (&["--help"], CliError::Help),
            (
                &["--port"],
                CliError::Flag("flag needs an argument: -port".into()),
            ),
            (
                &["--port", "abc"],
                CliError::Flag("invalid value \"abc\" for flag -port: parse error".into()),
            ),
            (
                &["--port=99999999999999999999"],
                CliError::Flag(
                    "invalid value \"99999999999999999999\" for flag -port: value out of range"
                        .into(),
                ),
            ),
            (
                &["---port=1"],
                CliError::Flag("bad flag syntax: ---port=1".into()),
            ),
            (&["-=1"], CliError::Flag("bad flag syntax: -=1".into())),
            (
                &["--port", "1__0"],
                CliError::Flag("invalid value \"1__0\" for flag -port: parse error".into()),
            ),
        ];
        for &v in ServerVersion::ALL {
            for (rest, want) in cases {
                assert_eq!(parse_as(v, rest).unwrap_err(), *want, "{v} {rest:?}");
            }
        }
        // Flags that came after v1.10.
        for flag in ["--max-connections-per-ip=2", "--fence-state-file=/tmp/f"] {
            let name = flag[2..].split('=').next().unwrap();
            assert_eq!(
                parse_as(V1, &[flag]).unwrap_err(),
                CliError::Flag(format!("flag provided but not defined: -{name}")),
            );
            assert!(parse_as(V2, &[flag]).is_ok(), "{flag}");
        }
        let c = parse_as(
            V2,
            &["--max-connections-per-ip", "3", "--fence-state-file", "f"],
        )
        .unwrap();
        assert_eq!(c.max_connections_per_ip, 3);
        assert_eq!(c.fence_state_file, Some(PathBuf::from("f")));
        assert!(CliError::Help.prints_usage());
        assert!(!CliError::Invalid(String::new()).prints_usage());
        assert_eq!(CliError::Help.to_string(), "flag: help requested");
    }

    #[test]
    fn usage_per_release() {
        let old = usage(V1);
        let new = usage(V2);
        for u in [&old, &new] {
            assert!(
                u.starts_with("Usage of dflockd:\n  -auth-token string\n    \t"),
                "{u}"
            );
            assert!(u.contains(
                "  -max-locks int\n    \tMaximum number of unique lock keys (default 1024)\n"
            ));
            assert!(u.contains("  -host string\n    \tBind address (default \"127.0.0.1\")\n"));
            assert!(u.contains("  -auto-release-on-disconnect\n    \tRelease locks when a client disconnects (default true)\n"));
            assert!(u.contains("  -server-version string\n    \tdflockd-testkit extension"));
            assert!(!u.contains("no-auto-release"));
        }
        assert!(!old.contains("-max-connections-per-ip") && !old.contains("-fence-state-file"));
        assert!(
            new.contains("  -max-connections-per-ip int\n")
                && new.contains("  -fence-state-file string\n")
        );
        assert!(old.contains("\tShared secret token for client authentication (visible"));
        assert!(new.contains(
            "\tShared secret token (visible in process list; prefer --auth-token-file)\n"
        ));
    }

    #[test]
    fn validation_messages() {
        // (arguments, v1.10.0, v2.1.1); `None`: accepted.
        let cases: &[(&[&str], Option<&str>, Option<&str>)] = &[
            (
                &["--max-locks", "0"],
                Some("--max-locks must be > 0 (got 0)"),
                Some("--max-locks must be > 0 (got 0)"),
            ),
            (
                &["--default-lease-ttl", "0"],
                Some("--default-lease-ttl must be > 0"),
                Some("--default-lease-ttl must be > 0"),
            ),
            (
                &["--lease-sweep-interval", "-1"],
                Some("--lease-sweep-interval must be > 0"),
                Some("--lease-sweep-interval must be > 0"),
            ),
            (
                &["--gc-interval", "0"],
                Some("--gc-interval must be > 0"),
                Some("--gc-interval must be > 0"),
            ),
            (
                &["--read-timeout", "0"],
                Some("--read-timeout must be > 0"),
                Some("--read-timeout must be > 0"),
            ),
            (
                &["--write-timeout", "-1"],
                Some("--write-timeout must be >= 0 (got -1s)"),
                Some("--write-timeout must be >= 0"),
            ),
            (
                &["--shutdown-timeout", "-90"],
                Some("--shutdown-timeout must be >= 0 (got -1m30s)"),
                Some("--shutdown-timeout must be >= 0"),
            ),
            (
                &["--port", "65536"],
                Some("--port must be 0-65535 (got 65536)"),
                Some("--port must be 0-65535 (got 65536)"),
            ),
            (
                &["--max-connections", "-2"],
                Some("--max-connections must be >= 0 (got -2)"),
                Some("--max-connections must be >= 0"),
            ),
            (
                &["--gc-max-idle", "0"],
                Some("--gc-max-idle must be > 0 (got 0s)"),
                None,
            ),
            (
                &["--gc-max-idle", "-1"],
                Some("--gc-max-idle must be > 0 (got -1s)"),
                Some("--gc-max-idle must be >= 0"),
            ),
            // v1.10.0 checks the pair only when it starts listening.
            (
                &["--tls-cert", "a.pem"],
                None,
                Some("both --tls-cert and --tls-key must be provided together"),
            ),
            // Seconds beyond a Go duration wrap in v1.10 and are refused in v2.
            (
                &["--read-timeout", "9223372037"],
                Some("--read-timeout must be > 0"),
                Some("DFLOCKD_READ_TIMEOUT_S too large (max 9223372036 seconds)"),
            ),
            // Validation comes before --version.
            (
                &["--version", "--max-locks=0"],
                Some("--max-locks must be > 0 (got 0)"),
                Some("--max-locks must be > 0 (got 0)"),
            ),
        ];
        for (rest, old, new) in cases {
            for (v, want) in [(V1, old), (V2, new)] {
                let got = parse_as(v, rest).err().map(|e| e.to_string());
                assert_eq!(got.as_deref(), *want, "{v} {rest:?}");
            }
        }
        for &v in ServerVersion::ALL {
            let c = parse_as(
                v,
                &["--write-timeout=0", "--shutdown-timeout=0", "--port=0"],
            )
            .unwrap();
            assert_eq!(c.write_timeout, Duration::ZERO);
            assert!(parse_as(v, &["--version"]).unwrap().version);
            // A wrapped positive duration is kept as Go computes it (v1.10).
            if v == V1 {
                let c = parse_as(v, &["--read-timeout", "18446744074"]).unwrap();
                assert_eq!(c.read_timeout, Duration::from_nanos(290_448_384));
            }
        }
        // The TLS pair error of v1.10.0 comes when the server is built.
        let c = parse_as(V1, &["--tls-cert", "a.pem"]).unwrap();
        let err = c.to_builder().unwrap_err().to_string();
        assert!(
            err.ends_with("both --tls-cert and --tls-key must be provided together"),
            "{err}"
        );
    }

    #[test]
    fn environment_per_release() {
        let good = &[
            ("DFLOCKD_PORT", "7001"),
            ("DFLOCKD_MAX_LOCKS", "12"),
            ("DFLOCKD_MAX_CONNECTIONS_PER_IP", "4"),
            ("DFLOCKD_DEFAULT_LEASE_TTL_S", "9"),
            ("DFLOCKD_LEASE_SWEEP_INTERVAL_S", "2"),
            ("DFLOCKD_GC_LOOP_SLEEP", "3"),
            ("DFLOCKD_GC_MAX_UNUSED_TIME", "4"),
            ("DFLOCKD_GC_INTERVAL_S", "13"),
            ("DFLOCKD_GC_MAX_IDLE_S", "14"),
            ("DFLOCKD_READ_TIMEOUT_S", "+6"),
            ("DFLOCKD_SHUTDOWN_TIMEOUT_S", ""),
            ("DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", "No"),
            ("DFLOCKD_DEBUG", "YES"),
            ("DFLOCKD_HOST", "0.0.0.0"),
            ("DFLOCKD_FENCE_STATE_FILE", "fences"),
        ][..];
        let leak =
            |pairs: &[(&'static str, &'static str)]| -> &'static [(&'static str, &'static str)] {
                Box::leak(pairs.to_vec().into_boxed_slice())
            };
        for &v in ServerVersion::ALL {
            let env = env_of(leak(good));
            let c = parse(args(v, &[]), &env).unwrap();
            assert_eq!(c.port, 7001);
            assert_eq!(c.max_locks, 12);
            assert_eq!(c.default_lease_ttl, Duration::from_secs(9));
            assert_eq!(c.lease_sweep_interval, Duration::from_secs(2));
            assert_eq!(c.read_timeout, Duration::from_secs(6));
            assert_eq!(
                c.shutdown_timeout,
                Duration::from_secs(30),
                "empty means unset"
            );
            assert!(!c.auto_release_on_disconnect);
            assert!(c.debug);
            assert_eq!(c.host, "0.0.0.0");
            let (gc, idle, per_ip, fences) = match v {
                V1 => (3, 4, 0, None),
                _ => (13, 14, 4, Some(PathBuf::from("fences"))),
            };
            assert_eq!(c.gc_interval, Duration::from_secs(gc), "{v}");
            assert_eq!(c.gc_max_idle, Duration::from_secs(idle), "{v}");
            assert_eq!(c.max_connections_per_ip, per_ip);
            assert_eq!(c.fence_state_file, fences);
            // Flags given on the command line win.
            let c = parse(
                args(
                    v,
                    &[
                        "--port=7002",
                        "--max-locks",
                        "3",
                        "--auto-release-on-disconnect=true",
                    ],
                ),
                &env,
            )
            .unwrap();
            assert_eq!((c.port, c.max_locks), (7002, 3));
            assert!(c.auto_release_on_disconnect);
            // An invalid value from the environment is validated like a flag.
            let env = env_of(&[("DFLOCKD_MAX_LOCKS", "0")]);
            assert_eq!(
                parse(args(v, &[]), env).unwrap_err().to_string(),
                "--max-locks must be > 0 (got 0)"
            );
        }
        // Values that do not parse: ignored by v1.10, fatal since v2.0.
        let cases: &[(&str, &str, &str)] = &[
            (
                "DFLOCKD_PORT",
                "x",
                "DFLOCKD_PORT must be an integer (got \"x\")",
            ),
            (
                "DFLOCKD_MAX_WAITERS",
                "0x7",
                "DFLOCKD_MAX_WAITERS must be an integer (got \"0x7\")",
            ),
            (
                "DFLOCKD_WRITE_TIMEOUT_S",
                "1.5",
                "DFLOCKD_WRITE_TIMEOUT_S must be an integer (got \"1.5\")",
            ),
            (
                "DFLOCKD_GC_INTERVAL_S",
                "5s",
                "DFLOCKD_GC_INTERVAL_S must be an integer (got \"5s\")",
            ),
            (
                "DFLOCKD_DEBUG",
                "maybe",
                "DFLOCKD_DEBUG must be a boolean (got \"maybe\")",
            ),
            (
                "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT",
                "t",
                "DFLOCKD_AUTO_RELEASE_ON_DISCONNECT must be a boolean (got \"t\")",
            ),
            (
                "DFLOCKD_DEFAULT_LEASE_TTL_S",
                // v1.10: wraps to 0.29 s.
                "18446744074",
                "DFLOCKD_DEFAULT_LEASE_TTL_S too large (max 9223372036 seconds)",
            ),
        ];
        for (var, value, want) in cases {
            let env = env_of(leak(&[(var, value)]));
            let old = parse(args(V1, &[]), &env).unwrap();
            assert_eq!(old.port, 6388, "{var}");
            assert!(!old.debug && old.auto_release_on_disconnect);
            assert_eq!(
                parse(args(V2, &[]), &env).unwrap_err().to_string(),
                *want,
                "{var}"
            );
        }
        // v2 resolves integers, then booleans, then durations.
        let env = env_of(&[
            ("DFLOCKD_READ_TIMEOUT_S", "x"),
            ("DFLOCKD_DEBUG", "x"),
            ("DFLOCKD_MAX_WAITERS", "x"),
        ]);
        assert_eq!(
            parse(args(V2, &[]), &env).unwrap_err().to_string(),
            "DFLOCKD_MAX_WAITERS must be an integer (got \"x\")"
        );
        // A flag hides a bad variable.
        let env = env_of(&[("DFLOCKD_PORT", "x")]);
        assert_eq!(parse(args(V2, &["--port=1"]), &env).unwrap().port, 1);
    }

    #[test]
    fn auth_token_precedence() {
        let dir = std::env::temp_dir().join(format!(
            "dflockd-testkit-cli-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, data: &str| {
            let path = dir.join(name);
            std::fs::write(&path, data).unwrap();
            path.display().to_string()
        };
        let good = file("token", "  s3cret \n");
        let empty = file("empty", " \n");
        let two = file("two", "a\nb\n");
        let missing = dir.join("missing").display().to_string();
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let token =
            |v: ServerVersion, rest: &[&str], env: &'static [(&'static str, &'static str)]| {
                parse(args(v, rest), env_of(env)).map(|c| c.auth_token)
            };
        let some = |t: &str| Ok(Some(t.to_owned()));
        let file_flag = |p: &str| leak(format!("--auth-token-file={p}"));
        let env_file: &'static [(&'static str, &'static str)] =
            Box::leak(vec![("DFLOCKD_AUTH_TOKEN_FILE", leak(good.clone()))].into_boxed_slice());
        let both_env: &'static [(&'static str, &'static str)] = Box::leak(
            vec![
                ("DFLOCKD_AUTH_TOKEN", " from-env "),
                ("DFLOCKD_AUTH_TOKEN_FILE", leak(good.clone())),
            ]
            .into_boxed_slice(),
        );

        // v1.10: the variable first, untrimmed; an empty file means no auth.
        assert_eq!(
            token(V1, &["--auth-token=flag"], both_env),
            some(" from-env ")
        );
        assert_eq!(
            token(V1, &["--auth-token=flag", file_flag(&good)], &[]),
            some("flag")
        );
        assert_eq!(token(V1, &[file_flag(&good)], &[]), some("s3cret"));
        assert_eq!(token(V1, &[], env_file), some("s3cret"));
        assert_eq!(token(V1, &[file_flag(&empty)], &[]), Ok(None));
        assert_eq!(token(V1, &[file_flag(&two)], &[]), some("a\nb"));
        assert_eq!(token(V1, &["--auth-token= spaced "], &[]), some(" spaced "));

        // v2.1: flag > file flag > variable > file variable; trimmed; empty or CR/LF refused.
        assert_eq!(token(V2, &["--auth-token=flag"], both_env), some("flag"));
        assert_eq!(token(V2, &[file_flag(&good)], both_env), some("s3cret"));
        assert_eq!(token(V2, &[], both_env), some("from-env"));
        assert_eq!(token(V2, &[], env_file), some("s3cret"));
        assert_eq!(token(V2, &["--auth-token="], env_file), some("s3cret"));
        assert_eq!(token(V2, &["--auth-token= spaced "], &[]), some("spaced"));
        let err = |v, rest: &[&str], env| token(v, rest, env).unwrap_err().to_string();
        assert_eq!(err(V2, &["--auth-token=  "], &[]), "--auth-token is empty");
        assert_eq!(
            err(V2, &[], &[("DFLOCKD_AUTH_TOKEN", " \t")]),
            "DFLOCKD_AUTH_TOKEN is empty"
        );
        assert_eq!(
            err(V2, &[], &[("DFLOCKD_AUTH_TOKEN", "a\rb")]),
            "DFLOCKD_AUTH_TOKEN must not contain newline characters"
        );
        assert_eq!(
            err(V2, &[file_flag(&empty)], &[]),
            format!("auth token file \"{empty}\" is empty")
        );
        assert_eq!(
            err(V2, &[file_flag(&two)], &[]),
            format!("auth token file \"{two}\" must not contain newline characters")
        );
        for &v in ServerVersion::ALL {
            assert_eq!(
                err(v, &[file_flag(&missing)], &[]),
                format!(
                    "reading auth token file \"{missing}\": open {missing}: no such file or directory"
                )
            );
            let d = dir.display().to_string();
            assert_eq!(
                err(v, &[file_flag(&d)], &[]),
                format!("reading auth token file \"{d}\": read {d}: is a directory")
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations_like_go() {
        for (ns, want) in [
            (0, "0s"),
            (-NANOS, "-1s"),
            (5 * NANOS, "5s"),
            (60 * NANOS, "1m0s"),
            (3600 * NANOS, "1h0m0s"),
            (3723 * NANOS + 500_000_000, "1h2m3.5s"),
            (1500, "1.5µs"),
            (2_000_000, "2ms"),
            (7, "7ns"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn go_ints() {
        for (s, want) in [
            ("0", Ok(0)),
            ("-0", Ok(0)),
            ("+5", Ok(5)),
            ("0x1F", Ok(31)),
            ("0b101", Ok(5)),
            ("0o7_7", Ok(63)),
            ("0_7", Ok(7)),
            ("1_000", Ok(1000)),
            ("-9223372036854775808", Ok(i64::MIN)),
            ("9223372036854775808", Err("value out of range")),
            ("_1", Err("parse error")),
            ("1_", Err("parse error")),
            ("08", Err("parse error")),
            ("0x", Err("parse error")),
            ("", Err("parse error")),
            ("1.5", Err("parse error")),
        ] {
            assert_eq!(go_parse_int(s), want, "{s:?}");
        }
    }
}
