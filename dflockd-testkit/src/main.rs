//! `dflockd-testkit`: the test server as a standalone program, with the real dflockd server's
//! flags and environment variables, as the release chosen by `--server-version` (or
//! `DFLOCKD_TESTKIT_SERVER_VERSION`) has them (see `dflockd_testkit::cli`).
//!
//! It serves until SIGINT or SIGTERM, then drains (see `TestServer::shutdown`) and exits 0.
//! `--version` prints the release (`1.10.0`, `2.1.1`); a bad flag or value prints
//! `configuration error: …` and exits 1 (so does `--help`, after the usage, as Go's `flag`
//! package does).
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use dflockd_testkit::cli;
use tracing::field::{Field, Visit};
use tracing::{Level, Metadata, span};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env = |name: &str| std::env::var(name).ok();
    let cfg = match cli::parse(args.iter().cloned(), env) {
        Ok(cfg) => cfg,
        Err(err) => {
            if let cli::CliError::Flag(msg) = &err {
                eprintln!("{msg}");
            }
            if err.prints_usage() {
                eprint!("{}", cli::usage(cli::requested_version(args, env)));
            }
            eprintln!("configuration error: {err}");
            return ExitCode::from(1);
        }
    };
    if cfg.version {
        println!("{}", cfg.server_version);
        return ExitCode::SUCCESS;
    }
    let max = if cfg.debug { Level::DEBUG } else { Level::INFO };
    let _ = tracing::subscriber::set_global_default(StderrLog { max });

    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ dflockd_testkit::Error::FenceState(_)) => {
            // As the real server: `lock manager init failed: …` on stderr, not a log line.
            eprintln!("{err}");
            ExitCode::from(1)
        }
        Err(err) => {
            let mut msg = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                let _ = write!(msg, ": {s}");
                source = s.source();
            }
            tracing::error!(err = %msg, "server error");
            ExitCode::from(1)
        }
    }
}

fn run(cfg: &cli::CliConfig) -> Result<(), dflockd_testkit::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(dflockd_testkit::Error::Runtime)?;
    runtime.block_on(async {
        // Handlers first: a signal that arrives once we say "listening" must not kill us.
        let signal = shutdown_signal();
        let server = cfg.to_builder()?.start().await?;
        tracing::info!(
            addr = %server.addr(),
            version = %server.version(),
            tls = cfg.tls_cert.is_some(),
            auth = cfg.auth_token.is_some(),
            "dflockd-testkit listening"
        );
        signal.await;
        tracing::info!("shutting down");
        server.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Registers SIGINT and SIGTERM handlers now; the returned future ends at the first signal.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Ctrl-C elsewhere.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A minimal `tracing` subscriber: one `level=… msg=… key=value` line per event on stderr,
/// in the spirit of Go's slog text handler. Spans are ignored.
struct StderrLog {
    max: Level,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " msg=\"{value:?}\"");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " msg={value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        span::Id::from_u64(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = Line(format!("level={}", event.metadata().level()));
        event.record(&mut line);
        eprintln!("{}", line.0);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}
