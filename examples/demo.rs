//! What dflockd is for, in four short scenes (under 10 s; `--quick`: about 2 s).
//!
//! ```text
//! cargo run --example demo
//! cargo run --example demo -- --quick
//! ```
//!
//! a. A scheduled job on three replicas runs once per tick, whichever replica fires first.
//! b. A lock per order: calls for the same order run one at a time, other orders in parallel.
//! c. A semaphore per tenant: one busy tenant cannot take every worker.
//! d. Lease loss reaches the critical section, and a fencing token stops a stale write.
//!
//! Uses `DFLOCKD_SERVERS` when set, an embedded test server otherwise; scene d always runs on
//! an embedded server of its own, since it crashes it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dflockd::Client;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

use common::BoxError;

#[tokio::main]
async fn main() -> Result<(), common::Report> {
    let servers = common::servers(1)?;
    let client = servers.client_builder()?.build()?;
    let quick = common::quick();

    scheduled_job(&client, quick).await?;
    per_order(&client, quick).await?;
    per_tenant(&client, quick).await?;
    lease_loss_and_fencing(quick).await?;
    Ok(())
}

/// a. Three replicas run the same schedule; on every tick each one tries that tick's lock
/// once, and only the one that gets it runs the job.
async fn scheduled_job(client: &Client, quick: bool) -> Result<(), BoxError> {
    let (tick, ticks) = if quick {
        (Duration::from_millis(400), 3)
    } else {
        (Duration::from_secs(1), 5)
    };
    println!("a. a report job scheduled every {tick:?} on replicas A, B and C");
    let runs = Arc::new(Mutex::new(BTreeMap::<u32, Vec<(char, bool)>>::new()));
    let start = Instant::now();
    let mut replicas = JoinSet::new();
    for replica in ['A', 'B', 'C'] {
        let (client, runs) = (client.clone(), runs.clone());
        replicas.spawn(async move {
            for n in 1..=ticks {
                // The replicas' timers fire a few milliseconds apart.
                let skew = Duration::from_millis(fastrand::u64(0..30));
                sleep_until(start + tick * (n - 1) + skew).await;
                // One key per tick: a replica whose timer fires late finds this tick's run
                // taken, and a run that ends late does not hold up the next tick's.
                let job = client
                    .lock(format!("job:daily-report:{n}"))
                    .lease_ttl(Duration::from_secs(10));
                let ran = match job.try_acquire().await? {
                    Some(guard) => {
                        sleep(Duration::from_millis(20)).await; // the job itself
                        // Keep this tick's lock until the tick is over, so that a replica
                        // whose timer fires later in it does not run the job again.
                        guard.release_after(tick);
                        true
                    }
                    None => false, // another replica has it: skip this tick
                };
                runs.lock()
                    .unwrap()
                    .entry(n)
                    .or_default()
                    .push((replica, ran));
            }
            Ok::<_, dflockd::Error>(())
        });
    }
    while let Some(replica) = replicas.join_next().await {
        replica??;
    }
    for (n, mut outcomes) in std::mem::take(&mut *runs.lock().unwrap()) {
        outcomes.sort();
        let names = |ran: bool| -> Vec<String> {
            outcomes
                .iter()
                .filter(|o| o.1 == ran)
                .map(|o| o.0.to_string())
                .collect()
        };
        println!(
            "   tick {n}: ran on {}; skipped on {}",
            names(true).join(", "),
            names(false).join(", ")
        );
    }
    Ok(())
}

/// b. "Check, then pay" must not run twice at once for the same order.
async fn per_order(client: &Client, quick: bool) -> Result<(), BoxError> {
    let payment = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(300)
    };
    println!("b. three concurrent \"pay\" calls for each of orders 1001 and 1002");
    #[derive(Default)]
    struct Orders {
        charged: HashMap<u32, u32>,
        duplicates: HashMap<u32, u32>,
        running: HashMap<u32, usize>,
        max_same_order: usize,
        max_overall: usize,
    }
    let orders = Arc::new(Mutex::new(Orders::default()));
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for order in [1001, 1002] {
        for _ in 0..3 {
            let (client, orders) = (client.clone(), orders.clone());
            calls.spawn(async move {
                let guard = client.lock(format!("order:{order}")).acquire().await?;
                let already_paid = {
                    let mut o = orders.lock().unwrap();
                    *o.running.entry(order).or_default() += 1;
                    o.max_same_order = o.max_same_order.max(o.running[&order]);
                    o.max_overall = o.max_overall.max(o.running.values().sum());
                    o.charged.contains_key(&order)
                };
                if already_paid {
                    *orders.lock().unwrap().duplicates.entry(order).or_default() += 1;
                } else {
                    sleep(payment).await; // the call to the payment provider
                    *orders.lock().unwrap().charged.entry(order).or_default() += 1;
                }
                *orders.lock().unwrap().running.get_mut(&order).unwrap() -= 1;
                guard.release().await
            });
        }
    }
    while let Some(call) = calls.join_next().await {
        call??;
    }
    let o = orders.lock().unwrap();
    for order in [1001, 1002] {
        println!(
            "   order {order}: charged {}; {} other call(s) found it paid and did nothing",
            times(o.charged.get(&order).copied().unwrap_or(0)),
            o.duplicates.get(&order).copied().unwrap_or(0)
        );
    }
    println!(
        "   at most {} call per order at once, {} overall; {} ms in all",
        o.max_same_order,
        o.max_overall,
        started.elapsed().as_millis()
    );
    Ok(())
}

fn times(n: u32) -> String {
    match n {
        1 => "once".to_owned(),
        n => format!("{n} times"),
    }
}

/// c. Each tenant may run 2 jobs at once, however many it submits.
async fn per_tenant(client: &Client, quick: bool) -> Result<(), BoxError> {
    const LIMIT: u32 = 2;
    let job = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(300)
    };
    println!("c. acme submits 6 jobs and globex 2; each tenant may run {LIMIT} at once");
    // Per tenant: (running, most at once, finished at).
    let tenants = Arc::new(Mutex::new(HashMap::<&str, (usize, usize, Duration)>::new()));
    let started = Instant::now();
    let mut jobs = JoinSet::new();
    for (tenant, count) in [("acme", 6), ("globex", 2)] {
        for _ in 0..count {
            let (client, tenants) = (client.clone(), tenants.clone());
            jobs.spawn(async move {
                let slot = client
                    .semaphore(format!("tenant:{tenant}"), LIMIT)
                    .acquire_timeout(Duration::from_secs(30))
                    .acquire()
                    .await?;
                {
                    let mut t = tenants.lock().unwrap();
                    let entry = t.entry(tenant).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(entry.0);
                }
                sleep(job).await;
                {
                    let mut t = tenants.lock().unwrap();
                    let entry = t.get_mut(tenant).unwrap();
                    entry.0 -= 1;
                    entry.2 = started.elapsed();
                }
                slot.release().await
            });
        }
    }
    while let Some(job) = jobs.join_next().await {
        job??;
    }
    let t = tenants.lock().unwrap();
    for tenant in ["acme", "globex"] {
        let (_, most, done) = t[tenant];
        println!(
            "   {tenant}: at most {most} at once, all done after {} ms",
            done.as_millis()
        );
    }
    Ok(())
}

/// d. The lock server crashes while A holds the lock: A learns it from `lost()` and stops;
/// B gets the lock; a late write from A carries an old fence and the store refuses it.
async fn lease_loss_and_fencing(quick: bool) -> Result<(), BoxError> {
    let step = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(400)
    };
    println!("d. lease loss and fencing tokens (on an embedded server that the demo crashes)");
    // It behaves as dflockd 2.1, whose tokens carry fences; the client is told so.
    let server = dflockd_testkit::TestServer::builder()
        .version(dflockd_testkit::ServerVersion::V2_1)
        .start()
        .await?;
    let client = Client::builder()
        .servers([server.addr_string()])
        .server_version(dflockd::ServerVersion::V2_1)
        .build()?;
    let store = Store::default();
    let report = client.lock("report.csv").lease_ttl(Duration::from_secs(5));

    let a = report.acquire().await?;
    let fence_a = a.fence().ok_or("the server issues fences")?;
    println!("   A holds the lock with fence {fence_a}");
    let writer = async {
        let lost = a.lost();
        tokio::pin!(lost);
        for chunk in 1..=10 {
            tokio::select! {
                reason = &mut lost => {
                    println!("   A: lease lost ({reason}); stops before chunk {chunk}");
                    return;
                }
                () = sleep(step) => store.write("A", fence_a, &format!("chunk {chunk}")),
            }
        }
    };
    let crash = async {
        sleep(step * 5 / 2).await;
        println!("   ... the lock server crashes and restarts with an empty lock table");
        server.kill();
        server.restart().await
    };
    let ((), restarted) = tokio::join!(writer, crash);
    restarted?;

    let b = report.acquire().await?;
    let fence_b = b.fence().ok_or("the server issues fences")?;
    println!("   B holds the lock with fence {fence_b}");
    store.write("B", fence_b, "the whole report");
    // Had A been paused (a long GC, a swapped-out VM) instead of watching `lost()`, its next
    // write would arrive now, with its old fence:
    store.write("A, late,", fence_a, "chunk 3");
    b.release().await?;
    Ok(())
}

/// A resource that keeps the highest fence it has seen and refuses writes with a lower one.
#[derive(Default)]
struct Store {
    highest: Mutex<u64>,
}

impl Store {
    fn write(&self, who: &str, fence: u64, what: &str) {
        let mut highest = self.highest.lock().unwrap();
        if fence < *highest {
            println!("   {who} writes {what}: refused by the store (fence {fence} < {highest})");
        } else {
            *highest = fence;
            println!("   {who} writes {what}: accepted");
        }
    }
}
