//! The `dflockd-testkit` binary: flags, a conversation, signals, exit codes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dflockd-testkit");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_flags_exit_1() {
    let out = Command::new(BIN).arg("--nope").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("flag provided but not defined: -nope\nUsage of dflockd-testkit:\n"),
        "{err}"
    );
    assert!(
        err.ends_with("configuration error: flag provided but not defined: -nope\n"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["--max-locks", "0", "--version"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "configuration error: --max-locks must be > 0 (got 0)\n"
    );

    let out = Command::new(BIN)
        .arg("--version")
        .env("DFLOCKD_PORT", "70000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = Command::new(BIN).arg("-h").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("  -max-locks int\n"), "{err}");
    assert!(
        err.ends_with("configuration error: flag: help requested\n"),
        "{err}"
    );
}

#[test]
fn serves_until_sigterm() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--port", &port.to_string(), "--default-lease-ttl=7"])
        .env("DFLOCKD_MAX_LOCKS", "1")
        .env("DFLOCKD_DEFAULT_LEASE_TTL_S", "99")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the "listening" log line (no connect-and-retry: connecting to a port nobody
    // listens on yet can end up connected to itself).
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let log_reader = std::thread::spawn(move || {
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
        panic!("binary not listening: {}", log_reader.join().unwrap());
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut req = |r: &str| {
        (&stream).write_all(r.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    };
    let granted = req("l\nk\n0\n");
    // The flag beats the environment; the environment beats the default.
    assert!(
        granted.starts_with("ok ") && granted.ends_with(" 7\n"),
        "{granted}"
    );
    assert_eq!(req("l\nother\n0\n"), "error_max_locks\n");
    drop(reader);
    drop(stream);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("binary did not stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(exit.code(), Some(0));
    let log = log_reader.join().unwrap();
    assert!(log.contains("shutting down"), "{log}");
}
