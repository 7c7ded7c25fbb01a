//! The `dflockd-testkit` binary: flags per release, a conversation, signals, exit codes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dflockd_testkit::ServerVersion;

const BIN: &str = env!("CARGO_BIN_EXE_dflockd-testkit");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with a clean environment for the variables it reads.
fn bin() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("DFLOCKD_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    bin().args(args).envs(env.iter().copied()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Arguments, environment, expected stdout.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn version_prints_the_release() {
    let cases: &[Case<'_>] = &[
        (&["--version"], &[], "2.1.1\n"),
        (&["--server-version", "1.10", "--version"], &[], "1.10.0\n"),
        (&["-server-version=v2.1.1", "-version"], &[], "2.1.1\n"),
        (
            &["--version"],
            &[("DFLOCKD_TESTKIT_SERVER_VERSION", "1.10")],
            "1.10.0\n",
        ),
        // The flag beats the variable.
        (
            &["--server-version=2.1", "--version"],
            &[("DFLOCKD_TESTKIT_SERVER_VERSION", "1.10")],
            "2.1.1\n",
        ),
        // v1.10 ignores a bad variable and checks the TLS pair only when it starts.
        (
            &["--server-version=1.10", "--tls-cert=a.pem", "--version"],
            &[("DFLOCKD_PORT", "x")],
            "1.10.0\n",
        ),
    ];
    for (args, env, want) in cases {
        let out = run(args, env);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), *want, "{args:?}");
    }
}

#[test]
fn bad_flags_exit_1_as_go_prints_them() {
    // (arguments, flag name); the usage of the release comes between the two messages.
    let cases: &[(&[&str], &str, ServerVersion)] = &[
        (&["--nope"], "nope", ServerVersion::V2_1),
        (
            &["--server-version=1.10", "-nope=1"],
            "nope",
            ServerVersion::V1_10,
        ),
        (
            &["--no-auto-release-on-disconnect"],
            "no-auto-release-on-disconnect",
            ServerVersion::V2_1,
        ),
        (
            &["--server-version=1.10", "--no-auto-release-on-disconnect"],
            "no-auto-release-on-disconnect",
            ServerVersion::V1_10,
        ),
        (
            &["--server-version=1.10", "--max-connections-per-ip=2"],
            "max-connections-per-ip",
            ServerVersion::V1_10,
        ),
        (
            &["--server-version=1.10", "--fence-state-file", "f"],
            "fence-state-file",
            ServerVersion::V1_10,
        ),
    ];
    for (args, name, version) in cases {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert_eq!(
            err,
            format!(
                "flag provided but not defined: -{name}\n{}configuration error: flag provided but not defined: -{name}\n",
                dflockd_testkit::cli::usage(*version)
            ),
            "{args:?}"
        );
        let listed = err.contains("-max-connections-per-ip int");
        assert_eq!(listed, *version == ServerVersion::V2_1, "{args:?}");
    }

    let out = run(&["--max-locks", "0", "--version"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr(&out),
        "configuration error: --max-locks must be > 0 (got 0)\n"
    );
    let out = run(&["--version"], &[("DFLOCKD_PORT", "70000")]);
    assert_eq!(out.status.code(), Some(1));
    // v2 refuses a variable that does not parse.
    let out = run(&["--version"], &[("DFLOCKD_PORT", "x")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "configuration error: DFLOCKD_PORT must be an integer (got \"x\")\n"
    );
    let out = run(&["--server-version=3"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("invalid value \"3\" for flag -server-version: "));
    let out = run(&[], &[("DFLOCKD_TESTKIT_SERVER_VERSION", "1.9")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("configuration error: invalid DFLOCKD_TESTKIT_SERVER_VERSION: "),
        "{}",
        stderr(&out)
    );

    let out = run(&["-h"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("Usage of dflockd:\n"), "{err}");
    assert!(err.contains("  -max-locks int\n"), "{err}");
    assert!(
        err.ends_with("configuration error: flag: help requested\n"),
        "{err}"
    );
}

#[test]
fn unusable_fence_state_file() {
    let dir = std::env::temp_dir().join(format!("dflockd-testkit-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken");
    std::fs::write(&path, b"12345").unwrap();
    let out = run(
        &[
            "--port",
            &free_port().to_string(),
            "--fence-state-file",
            path.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "lock manager init failed: fence persistence failed: state file is 5 bytes, expected 8, 32, or 64\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A running binary, its port and its log.
struct Server {
    child: Child,
    port: u16,
    log: Option<JoinHandle<String>>,
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut child = bin()
            .args(["--port", &port.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the "listening" log line (no connect-and-retry: connecting to a port nobody
        // listens on yet can end up connected to itself).
        let mut log = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            let mut line = String::new();
            while log.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("dflockd-testkit listening") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                line.clear();
            }
            all
        });
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let _ = child.kill();
            panic!("binary not listening: {}", log.join().unwrap());
        }
        Server {
            child,
            port,
            log: Some(log),
        }
    }

    /// One request per call on a fresh connection.
    fn conversation(&self) -> impl FnMut(&str) -> String {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        move |r: &str| {
            (&stream).write_all(r.as_bytes()).unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        }
    }

    /// SIGTERM, then the exit code and the log.
    fn stop(mut self) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("binary did not stop");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (exit.code(), self.log.take().unwrap().join().unwrap())
    }
}

fn fence(grant: &str) -> u64 {
    let token = grant.split(' ').nth(1).unwrap();
    u64::from_str_radix(&token[..16], 16).unwrap()
}

#[test]
fn serves_each_release_until_sigterm() {
    for version in ["1.10", "2.1"] {
        let server = Server::start(
            &["--server-version", version, "--default-lease-ttl=7"],
            &[
                ("DFLOCKD_MAX_LOCKS", "1"),
                ("DFLOCKD_DEFAULT_LEASE_TTL_S", "99"),
            ],
        );
        let mut req = server.conversation();
        let granted = req("l\nk\n0\n");
        // The flag beats the environment; the environment beats the default.
        assert!(
            granted.starts_with("ok ") && granted.ends_with(" 7\n"),
            "{granted}"
        );
        assert_eq!(req("l\nother\n0\n"), "error_max_locks\n");
        let ping = if version == "1.10" { "error\n" } else { "ok\n" };
        assert_eq!(req("ping\n_\n_\n"), ping, "{version}");
        drop(req);
        let (code, log) = server.stop();
        assert_eq!(code, Some(0));
        assert!(log.contains("shutting down"), "{log}");
    }
}

#[test]
fn fences_persist_across_restarts_with_a_state_file() {
    let dir =
        std::env::temp_dir().join(format!("dflockd-testkit-bin-fence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fences");
    let arg = format!("--fence-state-file={}", path.display());

    let first = Server::start(&[&arg], &[]);
    let f1 = fence(&first.conversation()("l\nk\n0\n"));
    assert_eq!(first.stop().0, Some(0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);

    // The variable works too, and the next run continues above the first.
    let second = Server::start(&[], &[("DFLOCKD_FENCE_STATE_FILE", path.to_str().unwrap())]);
    let f2 = fence(&second.conversation()("l\nk\n0\n"));
    assert!(f2 > f1, "{f2} <= {f1}");
    assert_eq!(second.stop().0, Some(0));

    // A ceiling far above the clock (as after the clock went back): fences continue above it.
    let ceiling: u64 = 0x7000_0000_0000_0000;
    std::fs::write(&path, ceiling.to_be_bytes()).unwrap();
    let third = Server::start(&[&arg], &[]);
    let f3 = fence(&third.conversation()("l\nk\n0\n"));
    assert_eq!(f3, ceiling + 1);
    assert_eq!(third.stop().0, Some(0));
    check_journal(&path, ceiling + (1 << 20));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The journal's newest record holds `ceiling`.
fn check_journal(path: &Path, ceiling: u64) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len(), 32, "a legacy file is rewritten as a journal");
    assert_eq!(&data[..8], b"dflfnc1\n");
    assert_eq!(
        u64::from_be_bytes(data[16..24].try_into().unwrap()),
        ceiling
    );
}
