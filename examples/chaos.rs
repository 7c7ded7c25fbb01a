//! The long forms of the reliability scenarios, as one command:
//!
//! ```text
//! cargo run --release --example chaos -- --minutes 10
//! cargo run --release --example chaos -- --minutes 0 --loss-trials 200 --false-alarm-minutes 2
//! cargo run --release --example chaos -- --quick   # a short run of each scenario
//! ```
//!
//! * `--minutes N` (default 10): the chaos run — 32 tasks, 4 lock keys and 2 semaphore keys
//!   (limit 3), leases of 2-3 s, waits of 0.5-4 s, a random fault every 2-5 s, all checked for
//!   mutual exclusion, fencing, loss notices and liveness (no grant thrown away, no failed
//!   acquire, no waiter starving behind a key with room, outside the faults); 0 skips it;
//! * `--healthy-minutes N` (default 1): the same workload without faults, where every acquire
//!   must get its key or time out behind busy holders;
//! * `--loss-trials N` (default 200): blackhole right after a renew, N times (20 at a time):
//!   how often the holder was told before the server could let the lease expire;
//! * `--false-alarm-minutes N` (default 2): 50 ± 10 ms latency each way with 3 s leases:
//!   spurious loss notices;
//! * `--verbose`: print every fault as it is injected;
//! * `--quick` (or `DFLOCKD_QUICK=1`): half a minute of chaos, 15 s healthy, 20 loss trials,
//!   15 s of latency.
//!
//! Exits non-zero when a scenario misses its target. The chaos runs end with the line
//! `violations=N stale_writes=N grants=N faults=N lost_notices=N liveness=N discarded_grants=N
//! failures=N starved_waits=N`.

#[path = "../tests/reliability_support/mod.rs"]
mod reliability_support;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use reliability_support::{ChaosConfig, chaos_run, false_alarms, loss_notice_trials};

struct Args {
    minutes: f64,
    healthy_minutes: f64,
    loss_trials: usize,
    false_alarm_minutes: f64,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        minutes: 10.0,
        healthy_minutes: 1.0,
        loss_trials: 200,
        false_alarm_minutes: 2.0,
        verbose: false,
    };
    if std::env::var("DFLOCKD_QUICK").is_ok_and(|v| v == "1") {
        quick(&mut args);
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--minutes" => {
                args.minutes = value("--minutes")?
                    .parse()
                    .map_err(|e| format!("--minutes: {e}"))?
            }
            "--loss-trials" => {
                args.loss_trials = value("--loss-trials")?
                    .parse()
                    .map_err(|e| format!("--loss-trials: {e}"))?;
            }
            "--false-alarm-minutes" => {
                args.false_alarm_minutes = value("--false-alarm-minutes")?
                    .parse()
                    .map_err(|e| format!("--false-alarm-minutes: {e}"))?;
            }
            "--healthy-minutes" => {
                args.healthy_minutes = value("--healthy-minutes")?
                    .parse()
                    .map_err(|e| format!("--healthy-minutes: {e}"))?;
            }
            "--quick" => quick(&mut args),
            "--verbose" => args.verbose = true,
            "--help" | "-h" => {
                return Err(
                    "usage: chaos [--minutes N] [--healthy-minutes N] [--loss-trials N] [--false-alarm-minutes N] [--quick] [--verbose]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// `--quick`: a short run of each scenario.
fn quick(args: &mut Args) {
    args.minutes = 0.5;
    args.healthy_minutes = 0.25;
    args.loss_trials = 20;
    args.false_alarm_minutes = 0.25;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut ok = true;
    if args.minutes > 0.0 {
        let started = Instant::now();
        let cfg = ChaosConfig {
            fault_phase: Duration::from_secs_f64(args.minutes * 60.0),
            verbose: args.verbose,
            ..ChaosConfig::default()
        };
        println!("chaos: {} min of faults …", args.minutes);
        let outcome = chaos_run(cfg).await;
        println!("{}", outcome.report);
        println!("faults by kind: {:?}", outcome.fault_kinds);
        println!("client errors by kind: {:?}", outcome.errors);
        let worst = outcome
            .regrant_after
            .iter()
            .map(|(_, after)| after.map_or(f64::INFINITY, |d| d.as_secs_f64()))
            .fold(0.0, f64::max);
        println!("slowest key to be granted again after the heal: {worst:.3} s");
        println!("took {:.0} s", started.elapsed().as_secs_f64());
        println!("{}", outcome.summary());
        ok &= outcome.report.violations.is_empty()
            && outcome.report.liveness.is_empty()
            && outcome.report.stale_writes == 0
            && outcome.protocol_errors == 0
            && worst <= 10.0;
    }
    if args.healthy_minutes > 0.0 {
        let cfg = ChaosConfig {
            fault_phase: Duration::from_secs_f64(args.healthy_minutes * 60.0),
            inject_faults: false,
            ..ChaosConfig::default()
        };
        println!("healthy: {} min without faults …", args.healthy_minutes);
        let outcome = chaos_run(cfg).await;
        println!("{}", outcome.report);
        println!("{}", outcome.summary());
        let r = &outcome.report;
        ok &= r.is_ok() && r.discarded_grants == 0 && r.failures == 0 && r.starved_waits == 0;
    }
    if args.loss_trials > 0 {
        let out = loss_notice_trials(args.loss_trials, 20, Duration::from_secs(2)).await;
        println!(
            "loss notice: trials={} noticed_before_expiry={} noticed_before_handover={} lead min {:?} max {:?}",
            out.trials,
            out.noticed_before_expiry,
            out.noticed_before_handover,
            out.min_lead,
            out.max_lead
        );
        ok &= out.noticed_before_expiry == out.trials && out.noticed_before_handover == out.trials;
    }
    if args.false_alarm_minutes > 0.0 {
        let (losses, grants) = false_alarms(
            Duration::from_secs_f64(args.false_alarm_minutes * 60.0),
            Duration::from_millis(50),
            Duration::from_millis(10),
        )
        .await;
        println!(
            "no false alarms: {} min, grants={grants} spurious_loss_notices={losses}",
            args.false_alarm_minutes
        );
        ok &= losses == 0;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("FAILED");
        ExitCode::FAILURE
    }
}
