//! Leaks: after a burst of work under faults (blackhole, reset, latency, a paused server),
//! cancelled acquires, dropped guards and dropped two-phase handles, dropping the clients
//! brings the process's open file descriptors and the runtime's live tasks back to where
//! they were, and the server reports no connection.
//!
//! One test in its own binary: descriptors are counted for the whole process.

use std::time::{Duration, Instant};

use dflockd::{Client, Guard};
use dflockd_testkit::{ChaosProxy, TestServer, unique_key};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

fn client(addr: &str) -> Client {
    Client::builder()
        .servers([addr])
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1))
        .release_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

async fn churn(client: Client, keys: Vec<String>, until: Instant) -> Vec<Guard> {
    let mut kept = Vec::new();
    while Instant::now() < until {
        let key = &keys[fastrand::usize(..keys.len())];
        let lock = client
            .lock(key)
            .lease_ttl(Duration::from_secs(2))
            .acquire_timeout(Duration::from_millis(fastrand::u64(0..600)));
        match fastrand::u8(0..6) {
            0 => {
                // Cancelled at a random point.
                let limit = Duration::from_micros(fastrand::u64(0..5000));
                let _ = tokio::time::timeout(limit, lock.acquire()).await;
            }
            1 => {
                if let Ok(enqueued) = lock.enqueue().await {
                    // Dropped without waiting half of the time.
                    if fastrand::bool() {
                        let _ = enqueued.wait(Duration::from_millis(300)).await;
                    }
                }
            }
            2 => {
                if let Ok(guard) = lock.acquire().await {
                    // Kept to the end, then dropped with the client.
                    if kept.len() < 3 {
                        kept.push(guard);
                    }
                }
            }
            _ => {
                if let Ok(guard) = lock.acquire().await {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..30))).await;
                    if fastrand::bool() {
                        let _ = guard.release().await;
                    }
                }
            }
        }
    }
    kept
}

#[test]
fn sockets_and_tasks_return_to_baseline() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::builder()
            .lease_sweep_interval(Duration::from_millis(50))
            .start()
            .await
            .unwrap();
        let proxy = ChaosProxy::start(server.addr()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (fds, tasks) = (open_fds(), alive_tasks());

        let keys: Vec<String> = (0..4).map(|_| unique_key("leak")).collect();
        let clients = [client(&proxy.addr_string()), client(&server.addr_string())];
        let until = Instant::now() + Duration::from_secs(6);
        let workers: Vec<_> = (0..12)
            .map(|i| tokio::spawn(churn(clients[i % 2].clone(), keys.clone(), until)))
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.set_blackhole(true);
        tokio::time::sleep(Duration::from_millis(800)).await;
        proxy.heal();
        proxy.reset();
        proxy.set_latency(Duration::from_millis(30), Duration::from_millis(10));
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.heal();
        server.pause();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.resume();
        let mut kept = Vec::new();
        for w in workers {
            kept.extend(
                tokio::time::timeout(Duration::from_secs(30), w)
                    .await
                    .expect("workers end")
                    .unwrap(),
            );
        }
        println!(
            "during: fds={} tasks={} server connections={} proxy open={} kept guards={}",
            open_fds(),
            alive_tasks(),
            server.stats().connections,
            proxy.stats().open,
            kept.len()
        );
        drop(kept);
        drop(clients);

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = (
                open_fds(),
                alive_tasks(),
                server.stats().connections,
                proxy.stats().open,
            );
            if now.0 <= fds && now.1 <= tasks && now.2 == 0 && now.3 == 0 {
                println!("baseline fds={fds} tasks={tasks}; after: {now:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not back to the baseline (fds={fds}, tasks={tasks}): \
                 (fds, tasks, server connections, proxy connections) = {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
