//! Runs the scenario examples and the demo in their quick mode and checks what they print.
//!
//! The examples are built once with `cargo build --examples` (the same cargo, profile and
//! target directory as this test), then all of them run at the same time, each as its own
//! process bounded by a timeout. They always use their embedded test servers: the `DFLOCKD_*`
//! variables are removed from their environment, since several examples share key names and
//! the error example needs a specially configured server.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const EXAMPLES: &[&str] = &[
    "demo",
    "hold_lock",
    "hold_lock_blocking",
    "fifo",
    "fifo_blocking",
    "two_phase",
    "two_phase_blocking",
    "semaphore",
    "semaphore_blocking",
    "errors",
    "errors_blocking",
    "auth",
    "auth_blocking",
    "tls",
    "tls_blocking",
    "sharding",
    "sharding_blocking",
    "stats",
    "stats_blocking",
    "leader",
];

/// Longest one example may run.
const TIMEOUT: Duration = Duration::from_secs(40);

/// What one example did.
#[derive(Debug)]
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Builds the examples and returns the path of each executable, from cargo's JSON messages.
fn build() -> HashMap<String, PathBuf> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", "dflockd", "--examples"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    // Cargo gives this test the variables it sets for crates (`CARGO_MANIFEST_DIR`, ...).
    // Passed on, build scripts that watch them (ring's does) would see a change and rebuild,
    // here and again in the next ordinary build.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let set_by_cargo = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&&*var)
            || var.starts_with("CARGO_PKG_")
            || var.starts_with("CARGO_BIN_EXE_")
            || var.starts_with("CARGO_CFG_");
        if set_by_cargo {
            cargo.env_remove(&*var);
        }
    }
    let output = cargo.output().expect("cannot run cargo");
    assert!(
        output.status.success(),
        "cargo build --examples failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut paths = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if !line.contains(r#""reason":"compiler-artifact""#) || !line.contains(r#""example""#) {
            continue;
        }
        if let Some(path) = json_string_field(line, "executable") {
            let path = PathBuf::from(path);
            if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                paths.insert(name.to_owned(), path.clone());
            }
        }
    }
    paths
}

/// The value of `"field":"..."` in one line of JSON (enough for cargo's paths).
fn json_string_field(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!("\"{field}\":\""))? + field.len() + 4;
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(match chars.next()? {
                'n' => '\n',
                't' => '\t',
                other => other,
            }),
            c => value.push(c),
        }
    }
    None
}

/// Runs `path --quick` with a clean environment plus `vars`, killing it after [`TIMEOUT`].
fn run(name: &str, path: &PathBuf, vars: &[(&str, &str)]) -> Run {
    let mut command = Command::new(path);
    command
        .arg("--quick")
        .env("DFLOCKD_QUICK", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("DFLOCKD_") && var != "DFLOCKD_QUICK" {
            command.env_remove(var);
        }
    }
    command.envs(vars.iter().copied());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for the example") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = stderr.join().unwrap();
    if status.is_none() {
        stderr.push_str(&format!("\n[killed after {TIMEOUT:?}]"));
    }
    Run {
        success: status.is_some_and(|s| s.success()),
        stdout: stdout.join().unwrap(),
        stderr,
    }
}

/// The examples' executables, built on first use.
fn paths() -> &'static HashMap<String, PathBuf> {
    static PATHS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    PATHS.get_or_init(build)
}

fn path(name: &str) -> PathBuf {
    paths()
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no example named {name}"))
        .clone()
}

/// Every example's run, all started at once on first use.
fn runs() -> &'static HashMap<&'static str, Run> {
    static RUNS: OnceLock<HashMap<&'static str, Run>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let handles: Vec<_> = EXAMPLES
            .iter()
            .map(|&name| {
                let path = path(name);
                (name, thread::spawn(move || run(name, &path, &[])))
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| (name, handle.join().expect("runner panicked")))
            .collect()
    })
}

/// The output of a successful run of `name`.
fn stdout(name: &str) -> &'static str {
    let run = &runs()[name];
    assert!(run.success, "{name} failed: {run:#?}");
    assert!(
        run.stderr.contains("embedded test server"),
        "{name} did not say it started an embedded server: {run:#?}"
    );
    &run.stdout
}

fn assert_contains(name: &str, out: &str, expected: &str) {
    assert!(
        out.contains(expected),
        "{name}: expected {expected:?} in its output:\n{out}"
    );
}

#[test]
fn demo() {
    let out = stdout("demo");
    // a: exactly one replica runs the job on every tick.
    let ticks: Vec<&str> = out.lines().filter(|l| l.contains("tick ")).collect();
    assert_eq!(ticks.len(), 3, "{out}");
    for tick in ticks {
        let ran = tick
            .split("ran on ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        assert_eq!(ran.trim().len(), 1, "not exactly one replica ran: {tick}");
    }
    // b: each order is charged once, and never two calls for one order at once.
    assert_eq!(out.matches("charged once").count(), 2, "{out}");
    assert_contains("demo", out, "at most 1 call per order at once");
    // c: the tenant limit holds.
    assert_contains("demo", out, "acme: at most 2 at once");
    assert_contains("demo", out, "globex: at most 2 at once");
    // d: the loss reaches the critical section, and the stale write is refused.
    assert_contains("demo", out, "A: lease lost (");
    assert_contains("demo", out, "B writes the whole report: accepted");
    assert_contains("demo", out, "A, late, writes chunk 3: refused by the store");
}

fn check_hold_lock(name: &str) {
    let out = stdout(name);
    assert_contains(name, out, "acquired key=foo token=");
    assert_contains(name, out, "lease=2s fence=");
    // Held for 5 s on a 2 s lease: renewals happened.
    assert_contains(name, out, "still held after 5s with a 2s lease: true");
    assert_contains(name, out, "released");
}

#[test]
fn hold_lock() {
    check_hold_lock("hold_lock");
}

#[test]
fn hold_lock_blocking() {
    check_hold_lock("hold_lock_blocking");
}

fn check_fifo(name: &str) {
    let out = stdout(name);
    assert_contains(name, out, "grant order: 0 1 2 3 4 5 6 7 8\n");
    let fences: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split("fence ").nth(1))
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fences.len(), 9, "{out}");
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "fences: {fences:?}");
}

#[test]
fn fifo() {
    check_fifo("fifo");
}

#[test]
fn fifo_blocking() {
    check_fifo("fifo_blocking");
}

fn check_two_phase(name: &str) {
    let out = stdout(name);
    let lines: Vec<&str> = out.lines().collect();
    let notify: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("notify:"))
        .collect();
    assert_eq!(
        notify,
        ["notify: my-key is acquired", "notify: my-key is queued"],
        "{out}"
    );
    let waited: Vec<u128> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("granted after "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(waited.len(), 2, "{out}");
    // The queued path waits for the other holder (300 ms in quick mode).
    assert!(waited[1] >= 250, "{out}");
}

#[test]
fn two_phase() {
    check_two_phase("two_phase");
}

#[test]
fn two_phase_blocking() {
    check_two_phase("two_phase_blocking");
}

fn check_semaphore(name: &str) {
    let out = stdout(name);
    assert_eq!(out.matches("acquired (").count(), 9, "{out}");
    let running: Vec<usize> = out
        .lines()
        .filter_map(|l| l.split(", ").nth(1))
        .filter_map(|l| l.strip_suffix(" running"))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(running.len(), 9, "{out}");
    assert!(running.iter().all(|&n| (1..=3).contains(&n)), "{out}");
    let most = out
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{out}"));
    assert!((1..=3).contains(&most), "{out}");
}

#[test]
fn semaphore() {
    check_semaphore("semaphore");
}

#[test]
fn semaphore_blocking() {
    check_semaphore("semaphore_blocking");
}

fn check_errors(name: &str) {
    let out = stdout(name);
    for kind in ["timeout: ", "max locks: ", "auth: ", "draining: "] {
        assert_eq!(
            out.lines().filter(|l| l.starts_with(kind)).count(),
            1,
            "{name}: expected one {kind:?} line:\n{out}"
        );
    }
}

#[test]
fn errors() {
    check_errors("errors");
}

#[test]
fn errors_blocking() {
    check_errors("errors_blocking");
}

fn check_auth(name: &str) {
    let out = stdout(name);
    assert_contains(name, out, "with the token: acquired my-key");
    assert_contains(name, out, "with a wrong token: refused (");
    assert!(!out.contains("not-the-secret"), "token leaked:\n{out}");
}

#[test]
fn auth() {
    check_auth("auth");
}

#[test]
fn auth_blocking() {
    check_auth("auth_blocking");
}

fn check_tls(name: &str) {
    let out = stdout(name);
    assert_contains(name, out, "pinned self-signed certificate: acquired my-key");
    assert_contains(name, out, "over TLS: acquired my-key on 127.0.0.1:");
    assert_contains(
        name,
        out,
        "trusting another CA: cannot connect to 127.0.0.1:",
    );
    assert_contains(
        name,
        out,
        " with TLS (server name 127.0.0.1): the server's certificate is not signed by a CA this client trusts: set DFLOCKD_TLS_CA_FILE",
    );
}

#[test]
fn tls() {
    check_tls("tls");
}

#[test]
fn tls_blocking() {
    check_tls("tls_blocking");
}

fn check_sharding(name: &str) {
    let out = stdout(name);
    // CRC-32 of the key modulo 3, as every dflockd client computes it.
    assert_contains(name, out, "user:42:profile -> server 0 of 3 (");
    assert_contains(
        name,
        out,
        "  server 0: holds it\n  server 1: -\n  server 2: -\n",
    );
    assert_contains(name, out, "foo -> server 2 of 3");
    assert_contains(name, out, "tenant-7 -> server 1 of 3");
}

#[test]
fn sharding() {
    check_sharding("sharding");
}

#[test]
fn sharding_blocking() {
    check_sharding("sharding_blocking");
}

fn check_stats(name: &str) {
    let out = stdout(name);
    assert_contains(name, out, " connections\n");
    assert_contains(name, out, "  lock stats-lock: lease ends in ");
    assert_contains(name, out, "s, 1 waiting");
    assert_contains(name, out, "  semaphore stats-pool: 2/3 held, 0 waiting");
    assert_contains(name, out, "  idle stats-idle: unused for ");
}

#[test]
fn stats() {
    check_stats("stats");
}

#[test]
fn stats_blocking() {
    check_stats("stats_blocking");
}

#[test]
fn leader() {
    let out = stdout("leader");
    assert_contains("leader", out, "one leader at a time throughout");
    // Three handovers, each to another replica, each with a larger term.
    assert_eq!(out.matches("took over after").count(), 3, "{out}");
    assert_contains("leader", out, "stopped leading after");
    let terms: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split("(term ").nth(1))
        .map(|t| {
            // The examples' embedded servers are the newest release, which issues fences.
            t.trim_end_matches(')').parse().expect("a term number")
        })
        .collect();
    assert_eq!(terms.len(), 4, "{out}");
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{out}");
}

/// The rows of the issue about set-up failures, through `hold_lock` configured by the
/// environment as a user would: what it prints is the error's message and causes, one a line,
/// never a `Debug` structure.
#[test]
fn set_up_failures_print_as_messages() {
    use dflockd_testkit::TestServer;
    use dflockd_testkit::tls::TlsIdentity;

    let dir = std::env::temp_dir().join(format!("dflockd-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // What `openssl req -x509 ... -subj /CN=localhost -addext subjectAltName=...` makes.
    let cert = TlsIdentity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let cert_file = dir.join("cert.pem");
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    let cert_file = cert_file.to_str().unwrap();
    let tls = TestServer::builder()
        .tls(cert.clone())
        .auth_token("s3cret")
        .start_blocking()
        .unwrap();
    let auth = TestServer::builder()
        .auth_token("s3cret")
        .start_blocking()
        .unwrap();
    let (tls_addr, auth_addr) = (tls.addr_string(), auth.addr_string());
    let hold_lock = path("hold_lock");
    let run = |vars: &[(&str, &str)]| run("hold_lock", &hold_lock, vars);

    // The self-signed certificate given as the CA: accepted.
    let ok = run(&[
        ("DFLOCKD_SERVERS", &tls_addr),
        ("DFLOCKD_AUTH_TOKEN", "s3cret"),
        ("DFLOCKD_TLS_CA_FILE", cert_file),
    ]);
    assert!(ok.success, "{ok:#?}");
    assert_contains("hold_lock", &ok.stdout, "released");

    let failures = [
        (
            vec![
                ("DFLOCKD_SERVERS", tls_addr.as_str()),
                ("DFLOCKD_AUTH_TOKEN", "s3cret"),
            ],
            format!(
                "Error: server {tls_addr} serves TLS and this client connected without it: set \
                 DFLOCKD_TLS=1, with DFLOCKD_TLS_CA_FILE or DFLOCKD_TLS_PINNED_CERT_FILE unless \
                 the system trusts its certificate (ClientBuilder::tls)\n"
            ),
        ),
        (
            vec![
                ("DFLOCKD_SERVERS", auth_addr.as_str()),
                ("DFLOCKD_AUTH_TOKEN", "wrong"),
            ],
            format!(
                "Error: server {auth_addr} rejected the auth token (error_auth): check \
                 DFLOCKD_AUTH_TOKEN or DFLOCKD_AUTH_TOKEN_FILE (ClientBuilder::auth_token) \
                 against the server's --auth-token\n"
            ),
        ),
        (
            vec![
                ("DFLOCKD_SERVERS", tls_addr.as_str()),
                ("DFLOCKD_AUTH_TOKEN", "s3cret"),
                ("DFLOCKD_TLS_CA_FILE", cert_file),
                ("DFLOCKD_TLS_SERVER_NAME", "db.internal"),
            ],
            format!(
                "Error: cannot connect to {tls_addr} with TLS (server name db.internal): the \
                 server's certificate is not valid for this name (it names localhost, \
                 127.0.0.1): set DFLOCKD_TLS_SERVER_NAME to one of those \
                 (TlsOptions::server_name), or reissue the certificate with this name in its \
                 subjectAltName\n  caused by: invalid peer certificate: "
            ),
        ),
    ];
    for (vars, expected) in failures {
        let failed = run(&vars);
        assert!(!failed.success, "{vars:?}: {failed:#?}");
        assert!(
            failed.stderr.contains(&expected),
            "{vars:?}: expected {expected:?} in:\n{}",
            failed.stderr
        );
        assert!(!failed.stderr.contains("Custom {"), "{}", failed.stderr);
        assert!(!failed.stderr.contains("s3cret"), "{}", failed.stderr);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
