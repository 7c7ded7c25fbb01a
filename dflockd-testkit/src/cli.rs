//! The command line of the `dflockd-testkit` binary: the real server's flags and environment
//! variables, read with the rules of Go's `flag` package.
//!
//! * `-x` and `--x` are the same; values as `--x value` or `--x=value`;
//! * boolean flags take no separate value: `--x` or `--x=true|false` (`1`, `t`, `TRUE`, …);
//! * integers accept Go's literal syntax (`0x10`, `0o17`, `1_000`, a leading `0` is octal);
//! * the first argument that is not a flag (or `--`) ends parsing; it and the rest are
//!   ignored;
//! * a flag given on the command line beats its environment variable, which beats the
//!   default; an environment integer that does not parse is ignored, booleans are
//!   `1/yes/true` or `0/no/false` in any case, an empty value counts as unset.
//!
//! `--no-auto-release-on-disconnect` is accepted as well as
//! `--auto-release-on-disconnect=false` (the Go server knows only the latter).
//!
//! ```
//! use dflockd_testkit::cli;
//! let cfg = cli::parse(["--port", "7000", "--max-locks=10"], |_| None).unwrap();
//! assert_eq!((cfg.port, cfg.max_locks), (7000, 10));
//! let err = cli::parse(["--max-locks", "0"], |_| None).unwrap_err();
//! assert_eq!(err.to_string(), "--max-locks must be > 0 (got 0)");
//! ```

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, TestServer, TestServerBuilder, TlsIdentity};

const NANOS: i64 = 1_000_000_000;

/// The configuration the command line and environment describe.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CliConfig {
    /// `--host` / `DFLOCKD_HOST`; default `127.0.0.1`.
    pub host: String,
    /// `--port` / `DFLOCKD_PORT`; default 6388.
    pub port: u16,
    /// `--default-lease-ttl` / `DFLOCKD_DEFAULT_LEASE_TTL_S`; default 33 s.
    pub default_lease_ttl: Duration,
    /// `--lease-sweep-interval` / `DFLOCKD_LEASE_SWEEP_INTERVAL_S`; default 1 s.
    pub lease_sweep_interval: Duration,
    /// `--gc-interval` / `DFLOCKD_GC_LOOP_SLEEP`; default 5 s.
    pub gc_interval: Duration,
    /// `--gc-max-idle` / `DFLOCKD_GC_MAX_UNUSED_TIME`; default 60 s.
    pub gc_max_idle: Duration,
    /// `--max-locks` / `DFLOCKD_MAX_LOCKS`; default 1024.
    pub max_locks: usize,
    /// `--max-connections` / `DFLOCKD_MAX_CONNECTIONS`; default 0 (no cap).
    pub max_connections: usize,
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
    /// From `--auth-token`, `DFLOCKD_AUTH_TOKEN`, or the file named by `--auth-token-file` /
    /// `DFLOCKD_AUTH_TOKEN_FILE` (trimmed), in that order.
    pub auth_token: Option<String>,
    /// `--auto-release-on-disconnect` / `DFLOCKD_AUTO_RELEASE_ON_DISCONNECT`; default true.
    pub auto_release_on_disconnect: bool,
    /// `--debug` / `DFLOCKD_DEBUG`; default false.
    pub debug: bool,
    /// `--version`: print the version and exit.
    pub version: bool,
}

impl fmt::Debug for CliConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CliConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("default_lease_ttl", &self.default_lease_ttl)
            .field("lease_sweep_interval", &self.lease_sweep_interval)
            .field("gc_interval", &self.gc_interval)
            .field("gc_max_idle", &self.gc_max_idle)
            .field("max_locks", &self.max_locks)
            .field("max_connections", &self.max_connections)
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

struct FlagDef {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    env: Option<&'static str>,
    help: &'static str,
}

const FLAGS: &[FlagDef] = &[
    FlagDef {
        name: "host",
        kind: Kind::Str,
        default: "127.0.0.1",
        env: Some("DFLOCKD_HOST"),
        help: "Bind address",
    },
    FlagDef {
        name: "port",
        kind: Kind::Int,
        default: "6388",
        env: Some("DFLOCKD_PORT"),
        help: "Bind port",
    },
    FlagDef {
        name: "default-lease-ttl",
        kind: Kind::Int,
        default: "33",
        env: Some("DFLOCKD_DEFAULT_LEASE_TTL_S"),
        help: "Lease applied when a request names none (seconds)",
    },
    FlagDef {
        name: "lease-sweep-interval",
        kind: Kind::Int,
        default: "1",
        env: Some("DFLOCKD_LEASE_SWEEP_INTERVAL_S"),
        help: "How often expired leases are collected (seconds)",
    },
    FlagDef {
        name: "gc-interval",
        kind: Kind::Int,
        default: "5",
        env: Some("DFLOCKD_GC_LOOP_SLEEP"),
        help: "How often idle keys are collected (seconds)",
    },
    FlagDef {
        name: "gc-max-idle",
        kind: Kind::Int,
        default: "60",
        env: Some("DFLOCKD_GC_MAX_UNUSED_TIME"),
        help: "Idle time after which an unused key is dropped (seconds)",
    },
    FlagDef {
        name: "max-locks",
        kind: Kind::Int,
        default: "1024",
        env: Some("DFLOCKD_MAX_LOCKS"),
        help: "Most distinct keys, locks and semaphores together",
    },
    FlagDef {
        name: "max-connections",
        kind: Kind::Int,
        default: "0",
        env: Some("DFLOCKD_MAX_CONNECTIONS"),
        help: "Most open connections (0 = no cap)",
    },
    FlagDef {
        name: "max-waiters",
        kind: Kind::Int,
        default: "0",
        env: Some("DFLOCKD_MAX_WAITERS"),
        help: "Most queued waiters per key (0 = no cap)",
    },
    FlagDef {
        name: "read-timeout",
        kind: Kind::Int,
        default: "23",
        env: Some("DFLOCKD_READ_TIMEOUT_S"),
        help: "Idle time before a silent connection is closed (seconds)",
    },
    FlagDef {
        name: "write-timeout",
        kind: Kind::Int,
        default: "5",
        env: Some("DFLOCKD_WRITE_TIMEOUT_S"),
        help: "Time allowed to write an answer (seconds, 0 = no limit)",
    },
    FlagDef {
        name: "shutdown-timeout",
        kind: Kind::Int,
        default: "30",
        env: Some("DFLOCKD_SHUTDOWN_TIMEOUT_S"),
        help: "Time connections get to finish on shutdown (seconds, 0 = forever)",
    },
    FlagDef {
        name: "auto-release-on-disconnect",
        kind: Kind::Bool,
        default: "true",
        env: Some("DFLOCKD_AUTO_RELEASE_ON_DISCONNECT"),
        help: "Release a connection's locks when it closes",
    },
    FlagDef {
        name: "no-auto-release-on-disconnect",
        kind: Kind::Bool,
        default: "false",
        env: None,
        help: "Same as --auto-release-on-disconnect=false",
    },
    FlagDef {
        name: "tls-cert",
        kind: Kind::Str,
        default: "",
        env: Some("DFLOCKD_TLS_CERT"),
        help: "TLS certificate chain (PEM file)",
    },
    FlagDef {
        name: "tls-key",
        kind: Kind::Str,
        default: "",
        env: Some("DFLOCKD_TLS_KEY"),
        help: "TLS private key (PEM file)",
    },
    FlagDef {
        name: "auth-token",
        kind: Kind::Str,
        default: "",
        env: Some("DFLOCKD_AUTH_TOKEN"),
        help: "Shared secret clients must present (visible in the process list; prefer --auth-token-file)",
    },
    FlagDef {
        name: "auth-token-file",
        kind: Kind::Str,
        default: "",
        env: Some("DFLOCKD_AUTH_TOKEN_FILE"),
        help: "File holding the shared secret (surrounding whitespace ignored)",
    },
    FlagDef {
        name: "debug",
        kind: Kind::Bool,
        default: "false",
        env: Some("DFLOCKD_DEBUG"),
        help: "Log every connection and request to stderr",
    },
    FlagDef {
        name: "version",
        kind: Kind::Bool,
        default: "false",
        env: None,
        help: "Print the version and exit",
    },
];

/// The usage text (Go `flag` layout), printed to stderr on `--help` and on flag errors.
#[must_use]
pub fn usage() -> String {
    let mut out = String::from("Usage of dflockd-testkit:\n");
    let mut flags: Vec<&FlagDef> = FLAGS.iter().collect();
    flags.sort_by_key(|f| f.name);
    for f in flags {
        let kind = match f.kind {
            Kind::Str => " string",
            Kind::Int => " int",
            Kind::Bool => "",
        };
        out.push_str(&format!("  -{}{kind}\n    \t{}", f.name, f.help));
        let show_default = match f.kind {
            Kind::Str => !f.default.is_empty(),
            Kind::Int => f.default != "0",
            Kind::Bool => f.default != "false",
        };
        if show_default {
            if f.kind == Kind::Str {
                out.push_str(&format!(" (default {:?})", f.default));
            } else {
                out.push_str(&format!(" (default {})", f.default));
            }
        }
        out.push('\n');
    }
    out
}

/// Parses the arguments (without the program name) and the environment (`env` looks a
/// variable up), validates the result and reads the auth token file.
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
    let given = parse_flags(args.into_iter().map(Into::into).collect())?;
    let env = |name: Option<&str>| name.and_then(&env).filter(|v| !v.is_empty());
    let lookup = |name: &str| -> (&'static FlagDef, Option<&String>) {
        let def = FLAGS.iter().find(|f| f.name == name).expect("known flag");
        (
            def,
            given.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v),
        )
    };
    let string = |name: &str| -> String {
        let (def, flag) = lookup(name);
        match flag {
            Some(v) => v.clone(),
            None => env(def.env).unwrap_or_else(|| def.default.to_owned()),
        }
    };
    let int = |name: &str| -> i64 {
        let (def, flag) = lookup(name);
        // Flag values were checked while parsing.
        let default = go_parse_int(def.default).unwrap_or(0);
        match flag {
            Some(v) => go_parse_int(v).unwrap_or(default),
            None => env(def.env).and_then(|v| atoi(&v)).unwrap_or(default),
        }
    };
    let boolean = |name: &str| -> bool {
        let (def, flag) = lookup(name);
        let default = def.default == "true";
        match flag {
            Some(v) => go_parse_bool(v).unwrap_or(default),
            None => match env(def.env).map(|v| v.to_ascii_lowercase()).as_deref() {
                Some("1" | "yes" | "true") => true,
                Some("0" | "no" | "false") => false,
                _ => default,
            },
        }
    };
    // Seconds become nanoseconds in wrapping arithmetic, as Go's `time.Duration(n) * time.Second`.
    let duration = |name: &str| -> i64 { int(name).wrapping_mul(NANOS) };

    let auth_token = load_auth_token(
        lookup("auth-token").1.cloned().filter(|t| !t.is_empty()),
        env(Some("DFLOCKD_AUTH_TOKEN")),
        lookup("auth-token-file")
            .1
            .cloned()
            .filter(|t| !t.is_empty())
            .or_else(|| env(Some("DFLOCKD_AUTH_TOKEN_FILE"))),
    )?;

    let max_locks = int("max-locks");
    let default_lease = duration("default-lease-ttl");
    let sweep = duration("lease-sweep-interval");
    let gc_interval = duration("gc-interval");
    let read_timeout = duration("read-timeout");
    let write_timeout = duration("write-timeout");
    let shutdown_timeout = duration("shutdown-timeout");
    let port = int("port");
    let max_connections = int("max-connections");
    let max_waiters = int("max-waiters");
    let gc_max_idle = duration("gc-max-idle");
    let invalid = |msg: String| Err(CliError::Invalid(msg));
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
            return invalid(format!(
                "--{name} must be >= 0 (got {})",
                go_duration(value)
            ));
        }
    }
    if !(0..=65535).contains(&port) {
        return invalid(format!("--port must be 0-65535 (got {port})"));
    }
    for (name, value) in [
        ("max-connections", max_connections),
        ("max-waiters", max_waiters),
    ] {
        if value < 0 {
            return invalid(format!("--{name} must be >= 0 (got {value})"));
        }
    }
    if gc_max_idle <= 0 {
        return invalid(format!(
            "--gc-max-idle must be > 0 (got {})",
            go_duration(gc_max_idle)
        ));
    }
    let tls_cert = string("tls-cert");
    let tls_key = string("tls-key");
    if tls_cert.is_empty() != tls_key.is_empty() {
        return invalid("both --tls-cert and --tls-key must be provided together".into());
    }
    let nonempty = |s: String| (!s.is_empty()).then(|| PathBuf::from(s));
    let nanos = |n: i64| Duration::from_nanos(n.unsigned_abs());
    let auto_release = if lookup("no-auto-release-on-disconnect").1.is_some() {
        !boolean("no-auto-release-on-disconnect")
    } else {
        boolean("auto-release-on-disconnect")
    };
    Ok(CliConfig {
        host: string("host"),
        port: u16::try_from(port).unwrap_or_default(),
        default_lease_ttl: nanos(default_lease),
        lease_sweep_interval: nanos(sweep),
        gc_interval: nanos(gc_interval),
        gc_max_idle: nanos(gc_max_idle),
        max_locks: usize::try_from(max_locks).unwrap_or(usize::MAX),
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_waiters: usize::try_from(max_waiters).unwrap_or(usize::MAX),
        read_timeout: nanos(read_timeout),
        write_timeout: nanos(write_timeout),
        shutdown_timeout: nanos(shutdown_timeout),
        tls_cert: nonempty(tls_cert),
        tls_key: nonempty(tls_key),
        auth_token,
        auto_release_on_disconnect: auto_release,
        debug: boolean("debug"),
        version: boolean("version"),
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
    /// [`Error::Config`] for an unresolvable host, [`Error::Read`] for an unreadable TLS file.
    pub fn to_builder(&self) -> Result<TestServerBuilder, Error> {
        let mut builder = TestServer::builder()
            .addr(self.listen_addr()?)
            .default_lease(self.default_lease_ttl)
            .lease_sweep_interval(self.lease_sweep_interval)
            .gc_interval(self.gc_interval)
            .gc_max_idle(self.gc_max_idle)
            .max_locks(self.max_locks)
            .max_connections(self.max_connections)
            .max_waiters(self.max_waiters)
            .read_timeout(self.read_timeout)
            .write_timeout(self.write_timeout)
            .shutdown_timeout(self.shutdown_timeout)
            .auto_release_on_disconnect(self.auto_release_on_disconnect);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            builder = builder.tls(TlsIdentity::from_pem_files(cert, key)?);
        }
        if let Some(token) = &self.auth_token {
            builder = builder.auth_token(token.clone());
        }
        Ok(builder)
    }
}

fn load_auth_token(
    flag: Option<String>,
    env: Option<String>,
    file: Option<String>,
) -> Result<Option<String>, CliError> {
    if let Some(token) = flag.or(env) {
        return Ok(Some(token));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let data = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Invalid(format!("reading auth token file {path:?}: {e}")))?;
    let token = data.trim();
    if token.is_empty() {
        return Err(CliError::Invalid(format!(
            "auth token file {path:?} is empty"
        )));
    }
    if token.contains(['\n', '\r']) {
        return Err(CliError::Invalid(format!(
            "auth token file {path:?} must hold a single line"
        )));
    }
    Ok(Some(token.to_owned()))
}

/// Go `flag` parsing: (name, value) in order of appearance; bool flags get "true"/"false".
fn parse_flags(args: Vec<String>) -> Result<Vec<(&'static str, String)>, CliError> {
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
            return Err(CliError::Flag(format!("bad flag syntax: {arg}")));
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(def) = FLAGS.iter().find(|f| f.name == name) else {
            if name == "help" || name == "h" {
                return Err(CliError::Help);
            }
            return Err(CliError::Flag(format!(
                "flag provided but not defined: -{name}"
            )));
        };
        let value = match (def.kind, value) {
            (Kind::Bool, None) => "true".to_owned(),
            (Kind::Bool, Some(v)) => match go_parse_bool(&v) {
                Some(b) => b.to_string(),
                None => {
                    return Err(CliError::Flag(format!(
                        "invalid boolean value {v:?} for -{name}: parse error"
                    )));
                }
            },
            (_, Some(v)) => v,
            (_, None) => args
                .next()
                .ok_or_else(|| CliError::Flag(format!("flag needs an argument: -{name}")))?,
        };
        if def.kind == Kind::Int {
            if let Err(why) = go_parse_int(&value) {
                return Err(CliError::Flag(format!(
                    "invalid value {value:?} for flag -{name}: {why}"
                )));
            }
        }
        out.push((def.name, value));
    }
    Ok(out)
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

    #[test]
    fn defaults() {
        let c = parse(Vec::<String>::new(), none).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 6388);
        assert_eq!(c.default_lease_ttl, Duration::from_secs(33));
        assert_eq!(c.lease_sweep_interval, Duration::from_secs(1));
        assert_eq!(c.gc_interval, Duration::from_secs(5));
        assert_eq!(c.gc_max_idle, Duration::from_secs(60));
        assert_eq!(c.max_locks, 1024);
        assert_eq!((c.max_connections, c.max_waiters), (0, 0));
        assert_eq!(c.read_timeout, Duration::from_secs(23));
        assert_eq!(c.write_timeout, Duration::from_secs(5));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert!(c.auto_release_on_disconnect);
        assert!(!c.debug && !c.version);
        assert_eq!((c.tls_cert, c.tls_key, c.auth_token), (None, None, None));
    }

    #[test]
    fn go_flag_syntax() {
        let c = parse(
            [
                "-port",
                "7000",
                "--max-locks=5",
                "--debug",
                "-read-timeout=2",
                "--host",
                "::1",
            ],
            none,
        )
        .unwrap();
        assert_eq!((c.port, c.max_locks, c.debug), (7000, 5, true));
        assert_eq!(c.read_timeout, Duration::from_secs(2));
        assert_eq!(c.host, "::1");
        // Go integer literals.
        let c = parse(
            ["--max-locks", "0x10", "--max-waiters=0o17", "--port=1_000"],
            none,
        )
        .unwrap();
        assert_eq!((c.max_locks, c.max_waiters, c.port), (16, 15, 1000));
        assert_eq!(parse(["--max-locks", "010"], none).unwrap().max_locks, 8);
        // A non-flag stops parsing; the rest is ignored.
        let c = parse(["--debug", "false", "--port", "1"], none).unwrap();
        assert!(c.debug);
        assert_eq!(c.port, 6388);
        let c = parse(["--", "--port", "1"], none).unwrap();
        assert_eq!(c.port, 6388);
        // Last one wins.
        assert_eq!(parse(["--port=1", "--port=2"], none).unwrap().port, 2);
        // A value may start with a dash.
        assert_eq!(
            parse(["--max-waiters", "-1"], none)
                .unwrap_err()
                .to_string(),
            "--max-waiters must be >= 0 (got -1)"
        );
    }

    #[test]
    fn bools() {
        for (args, want) in [
            (&["--auto-release-on-disconnect=false"][..], false),
            (&["--auto-release-on-disconnect=0"][..], false),
            (&["--auto-release-on-disconnect=F"][..], false),
            (&["--auto-release-on-disconnect"][..], true),
            (&["--no-auto-release-on-disconnect"][..], false),
            (&["--no-auto-release-on-disconnect=false"][..], true),
        ] {
            assert_eq!(
                parse(args.iter().copied(), none)
                    .unwrap()
                    .auto_release_on_disconnect,
                want,
                "{args:?}"
            );
        }
        assert_eq!(
            parse(["--debug=yes"], none).unwrap_err(),
            CliError::Flag("invalid boolean value \"yes\" for -debug: parse error".into())
        );
    }

    #[test]
    fn flag_errors() {
        let cases: &[(&[&str], CliError)] = &[
            (
                &["--nope"],
                CliError::Flag("flag provided but not defined: -nope".into()),
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
        for (args, want) in cases {
            assert_eq!(
                parse(args.iter().copied(), none).unwrap_err(),
                *want,
                "{args:?}"
            );
        }
        assert!(CliError::Help.prints_usage());
        assert!(!CliError::Invalid(String::new()).prints_usage());
        assert_eq!(CliError::Help.to_string(), "flag: help requested");
        assert!(usage().contains("  -max-locks int\n    \t"));
    }

    #[test]
    fn validation_messages() {
        let cases: &[(&[&str], &str)] = &[
            (&["--max-locks", "0"], "--max-locks must be > 0 (got 0)"),
            (
                &["--default-lease-ttl", "0"],
                "--default-lease-ttl must be > 0",
            ),
            (
                &["--lease-sweep-interval", "-1"],
                "--lease-sweep-interval must be > 0",
            ),
            (&["--gc-interval", "0"], "--gc-interval must be > 0"),
            (&["--read-timeout", "0"], "--read-timeout must be > 0"),
            (
                &["--write-timeout", "-1"],
                "--write-timeout must be >= 0 (got -1s)",
            ),
            (
                &["--shutdown-timeout", "-90"],
                "--shutdown-timeout must be >= 0 (got -1m30s)",
            ),
            (&["--port", "65536"], "--port must be 0-65535 (got 65536)"),
            (
                &["--max-connections", "-2"],
                "--max-connections must be >= 0 (got -2)",
            ),
            (
                &["--gc-max-idle", "0"],
                "--gc-max-idle must be > 0 (got 0s)",
            ),
            (
                &["--tls-cert", "a.pem"],
                "both --tls-cert and --tls-key must be provided together",
            ),
            // Validation comes before --version.
            (
                &["--version", "--max-locks=0"],
                "--max-locks must be > 0 (got 0)",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(
                parse(args.iter().copied(), none).unwrap_err().to_string(),
                *want,
                "{args:?}"
            );
        }
        let c = parse(
            ["--write-timeout=0", "--shutdown-timeout=0", "--port=0"],
            none,
        )
        .unwrap();
        assert_eq!(c.write_timeout, Duration::ZERO);
        assert!(parse(["--version"], none).unwrap().version);
    }

    #[test]
    fn environment_and_precedence() {
        let env = env_of(&[
            ("DFLOCKD_PORT", "7001"),
            ("DFLOCKD_MAX_LOCKS", "12"),
            ("DFLOCKD_MAX_WAITERS", "x"),
            ("DFLOCKD_DEFAULT_LEASE_TTL_S", "9"),
            ("DFLOCKD_LEASE_SWEEP_INTERVAL_S", "2"),
            ("DFLOCKD_GC_LOOP_SLEEP", "3"),
            ("DFLOCKD_GC_MAX_UNUSED_TIME", "4"),
            ("DFLOCKD_READ_TIMEOUT_S", "+6"),
            ("DFLOCKD_WRITE_TIMEOUT_S", "0x7"),
            ("DFLOCKD_SHUTDOWN_TIMEOUT_S", ""),
            ("DFLOCKD_AUTO_RELEASE_ON_DISCONNECT", "No"),
            ("DFLOCKD_DEBUG", "maybe"),
            ("DFLOCKD_HOST", "0.0.0.0"),
            ("DFLOCKD_AUTH_TOKEN", "from-env"),
        ]);
        let c = parse(Vec::<String>::new(), &env).unwrap();
        assert_eq!(c.port, 7001);
        assert_eq!(c.max_locks, 12);
        assert_eq!(c.max_waiters, 0, "a bad env int is ignored");
        assert_eq!(c.default_lease_ttl, Duration::from_secs(9));
        assert_eq!(c.lease_sweep_interval, Duration::from_secs(2));
        assert_eq!(c.gc_interval, Duration::from_secs(3));
        assert_eq!(c.gc_max_idle, Duration::from_secs(4));
        assert_eq!(c.read_timeout, Duration::from_secs(6));
        assert_eq!(
            c.write_timeout,
            Duration::from_secs(5),
            "env ints are decimal only"
        );
        assert_eq!(
            c.shutdown_timeout,
            Duration::from_secs(30),
            "empty means unset"
        );
        assert!(!c.auto_release_on_disconnect);
        assert!(!c.debug, "an unknown bool falls back to the default");
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.auth_token.as_deref(), Some("from-env"));
        // Flags given on the command line win.
        let c = parse(
            [
                "--port=7002",
                "--max-locks",
                "3",
                "--auto-release-on-disconnect=true",
                "--auth-token",
                "from-flag",
            ],
            &env,
        )
        .unwrap();
        assert_eq!((c.port, c.max_locks), (7002, 3));
        assert!(c.auto_release_on_disconnect);
        assert_eq!(c.auth_token.as_deref(), Some("from-flag"));
        // An invalid env value is validated like a flag.
        let env = env_of(&[("DFLOCKD_MAX_LOCKS", "0")]);
        assert_eq!(
            parse(Vec::<String>::new(), env).unwrap_err().to_string(),
            "--max-locks must be > 0 (got 0)"
        );
    }

    #[test]
    fn auth_token_file() {
        let dir = std::env::temp_dir().join(format!("dflockd-testkit-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("token");
        std::fs::write(&good, "  s3cret \n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let two = dir.join("two");
        std::fs::write(&two, "a\nb\n").unwrap();
        let arg = |p: &PathBuf| format!("--auth-token-file={}", p.display());
        assert_eq!(
            parse([arg(&good)], none).unwrap().auth_token.as_deref(),
            Some("s3cret")
        );
        let err = parse([arg(&empty)], none).unwrap_err().to_string();
        assert!(err.ends_with("is empty"), "{err}");
        let err = parse([arg(&two)], none).unwrap_err().to_string();
        assert!(err.ends_with("must hold a single line"), "{err}");
        let err = parse([arg(&dir.join("missing"))], none)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("reading auth token file"), "{err}");
        // The token itself wins over a file.
        let c = parse(["--auth-token=direct".to_owned(), arg(&empty)], none).unwrap();
        assert_eq!(c.auth_token.as_deref(), Some("direct"));
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
