//! Three replicas of a service run the same scheduled job; `#[dflockd::exclusive]` makes each
//! tick run exactly once, on whichever replica fires first.
//!
//! ```text
//! cargo run --example scheduled_job              # 10 ticks, one per second
//! cargo run --example scheduled_job -- --quick   # 3 ticks (also DFLOCKD_QUICK=1)
//! DFLOCKD_SERVERS=127.0.0.1:6388 cargo run --example scheduled_job   # a real server
//! ```
//!
//! Without `DFLOCKD_SERVERS` an embedded test server is started in-process.
//!
//! The pattern is ShedLock's: `wait = "0s"` makes the replicas that fire later skip instead
//! of queueing, and `hold_at_least` keeps the lock for a while after a fast job finishes, so
//! that a replica whose clock or schedule is a little late does not run the same tick again.
//! Pick the hold longer than the spread of the replicas' schedules and shorter than the
//! interval: here it comes from the schedule (`hold_at_least = self.schedule.hold`), read at
//! each call, as a value from the service's configuration would be.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dflockd::Client;

/// How often and how many times the job is scheduled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// Time between ticks (every replica uses the same one).
    pub(crate) interval: Duration,
    /// How many ticks to run before stopping.
    pub(crate) ticks: u64,
    /// Each replica fires up to this much late (schedules and clocks are never in step).
    pub(crate) max_skew: Duration,
    /// How long the job keeps its lock at least: longer than `max_skew`, so that a late
    /// replica finds the tick's lock still held, and shorter than `interval`, so that the next
    /// tick finds it free.
    pub(crate) hold: Duration,
}

impl Schedule {
    /// One tick a second, replicas up to 200 ms apart, the lock held 600 ms at least.
    pub(crate) fn new(quick: bool) -> Schedule {
        Schedule {
            interval: Duration::from_secs(1),
            ticks: if quick { 3 } else { 10 },
            max_skew: Duration::from_millis(200),
            hold: Duration::from_millis(600),
        }
    }
}

/// Which replicas ran each tick.
pub(crate) type Runs = Arc<Mutex<BTreeMap<u64, Vec<usize>>>>;

/// One replica of the service: its own client, as a separate process would have.
struct Replica {
    id: usize,
    job: String,
    schedule: Schedule,
    client: Client,
    runs: Runs,
}

impl Replica {
    /// The job. Busy (another replica runs this tick) is `Err(e)` with `e.is_timeout()`.
    #[dflockd::exclusive(
        key = self.job,
        wait = "0s",
        lease = "5s",
        hold_at_least = self.schedule.hold,
        client = self.client
    )]
    async fn nightly_report(&self, tick: u64) -> Result<(), dflockd::Error> {
        let lock = dflockd::current_lock().expect("inside the job");
        println!(
            "tick {tick}: replica {} runs the job (fence {})",
            self.id,
            lock.fence()
                .map_or_else(|| "none".to_owned(), |f| f.to_string())
        );
        self.runs
            .lock()
            .unwrap()
            .entry(tick)
            .or_default()
            .push(self.id);
        Ok(())
    }

    async fn schedule(self, start: tokio::time::Instant) {
        let mut interval = tokio::time::interval_at(start, self.schedule.interval);
        for tick in 0..self.schedule.ticks {
            interval.tick().await;
            let skew = self.schedule.max_skew.mul_f64(fastrand::f64());
            tokio::time::sleep(skew).await;
            match self.nightly_report(tick).await {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    println!(
                        "tick {tick}: replica {} skips (another replica has it)",
                        self.id
                    );
                }
                Err(e) => eprintln!("tick {tick}: replica {} failed: {e}", self.id),
            }
        }
    }
}

/// Runs three replicas of the schedule against `servers` with the job's lock on `job`, and
/// returns which replicas ran each tick.
///
/// # Errors
/// A client that cannot be built from `servers`.
pub(crate) async fn run_replicas(
    servers: &[String],
    job: &str,
    schedule: &Schedule,
) -> Result<BTreeMap<u64, Vec<usize>>, dflockd::Error> {
    let runs = Runs::default();
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut replicas = tokio::task::JoinSet::new();
    for id in 1..=3 {
        let replica = Replica {
            id,
            job: job.to_owned(),
            schedule: *schedule,
            client: Client::builder().servers(servers).build()?,
            runs: runs.clone(),
        };
        replicas.spawn(replica.schedule(start));
    }
    while let Some(done) = replicas.join_next().await {
        done.expect("a replica panicked");
    }
    Ok(std::mem::take(&mut *runs.lock().unwrap()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The error and its causes as messages, one a line (`fn main() -> Result<..>`
            // would print the error's `Debug`, a structure).
            eprintln!("Error: {error}");
            let mut cause = error.source();
            while let Some(e) = cause {
                eprintln!("  caused by: {e}");
                cause = e.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("DFLOCKD_QUICK").is_ok_and(|v| v == "1");
    let (servers, _embedded) = match std::env::var("DFLOCKD_SERVERS") {
        Ok(list) if !list.trim().is_empty() => {
            let servers: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            eprintln!("using DFLOCKD_SERVERS={}", servers.join(","));
            (servers, None)
        }
        _ => {
            let server = dflockd_testkit::TestServer::start().await?;
            eprintln!(
                "DFLOCKD_SERVERS is not set: started an embedded test server on {}",
                server.addr()
            );
            (vec![server.addr_string()], Some(server))
        }
    };

    let schedule = Schedule::new(quick);
    let runs = run_replicas(&servers, "example:nightly-report", &schedule).await?;

    println!("\nsummary:");
    let mut exactly_once = true;
    for tick in 0..schedule.ticks {
        let by = runs.get(&tick).map(Vec::as_slice).unwrap_or_default();
        println!(
            "  tick {tick}: run {} time(s), by replica(s) {by:?}",
            by.len()
        );
        exactly_once &= by.len() == 1;
    }
    if exactly_once {
        println!("every tick ran exactly once");
        Ok(())
    } else {
        Err("some tick did not run exactly once".into())
    }
}
