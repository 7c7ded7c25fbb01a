//! `#[dflockd::exclusive]` and `#[dflockd::exclusive_semaphore]` end to end, against the test
//! server over real sockets (external servers from `DFLOCKD_TEST_SERVERS` where the test does
//! not need to kill its server).
#![cfg(feature = "macros")]

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dflockd::{Client, Error, LossReason};
use dflockd_testkit::{TestServer, TestServers, unique_key};

use tokio::sync::{Barrier, oneshot};

/// Every test is bounded.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the test took longer than 30 s")
}

async fn servers() -> (TestServers, Client) {
    let servers = TestServers::default_config(1).await.expect("test server");
    let client = Client::builder()
        .servers(servers.addrs())
        .build()
        .expect("client");
    (servers, client)
}

/// Polls the server's stats until `ready` holds (the server is the only witness of a queued
/// waiter).
async fn until_stats(client: &Client, key: &str, ready: impl Fn(&dflockd::Stats) -> bool) {
    loop {
        let stats = client.stats_for_key(key).await.expect("stats");
        if ready(&stats) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lock_waiters(stats: &dflockd::Stats, key: &str) -> u64 {
    stats.lock(key).map_or(0, |l| l.waiters)
}

/// Counts the bodies running at once, and the order they entered in.
#[derive(Clone, Default)]
struct Tally {
    inside: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    order: Arc<Mutex<Vec<&'static str>>>,
}

struct Inside(Arc<AtomicUsize>);

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Tally {
    fn enter(&self, name: &'static str) -> Inside {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        self.order.lock().unwrap().push(name);
        Inside(self.inside.clone())
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    fn order(&self) -> Vec<&'static str> {
        self.order.lock().unwrap().clone()
    }
}

/// What a guarded body does: enter the tally, say so, wait for the gate.
struct Work {
    name: &'static str,
    tally: Tally,
    entered: Option<oneshot::Sender<()>>,
    gate: Option<oneshot::Receiver<()>>,
}

impl Work {
    fn new(name: &'static str, tally: &Tally) -> Work {
        Work {
            name,
            tally: tally.clone(),
            entered: None,
            gate: None,
        }
    }

    /// The body signals `entered` and then waits for the returned sender.
    fn gated(mut self) -> (Work, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (entered_tx, entered_rx) = oneshot::channel();
        let (gate_tx, gate_rx) = oneshot::channel();
        self.entered = Some(entered_tx);
        self.gate = Some(gate_rx);
        (self, entered_rx, gate_tx)
    }

    async fn run(self) -> &'static str {
        let _inside = self.tally.enter(self.name);
        if let Some(entered) = self.entered {
            let _ = entered.send(());
        }
        if let Some(gate) = self.gate {
            let _ = gate.await;
        }
        self.name
    }
}

#[dflockd::exclusive(key = "{key}", wait = "10s", lease = "2s", client = client)]
async fn queued(client: Client, key: String, work: Work) -> Result<&'static str, Error> {
    Ok(work.run().await)
}

#[dflockd::exclusive(key = "{key}", wait = "0s", lease = "2s", client = client)]
async fn skip_result(client: Client, key: String, work: Work) -> Result<&'static str, Error> {
    Ok(work.run().await)
}

#[dflockd::exclusive(key = "{key}", wait = "0s", lease = "2s", client = client)]
async fn skip_option(client: Client, key: String, work: Work) -> Option<&'static str> {
    Some(work.run().await)
}

#[dflockd::exclusive(key = "{key}", wait = "0s", lease = "2s", client = client)]
async fn skip_unit(client: Client, key: String, work: Work) {
    work.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_runs_one_after_the_other_in_fifo_order() {
    bounded(async {
        let (_servers, client) = servers().await;
        let key = unique_key("macro-fifo");
        let tally = Tally::default();

        let (a, a_entered, release_a) = Work::new("a", &tally).gated();
        let a = tokio::spawn(queued(client.clone(), key.clone(), a));
        a_entered.await.unwrap();

        let b = tokio::spawn(queued(client.clone(), key.clone(), Work::new("b", &tally)));
        until_stats(&client, &key, |s| lock_waiters(s, &key) == 1).await;
        let c = tokio::spawn(queued(client.clone(), key.clone(), Work::new("c", &tally)));
        until_stats(&client, &key, |s| lock_waiters(s, &key) == 2).await;
        assert_eq!(tally.order(), ["a"], "b and c wait while a holds the lock");

        release_a.send(()).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), "a");
        assert_eq!(b.await.unwrap().unwrap(), "b");
        assert_eq!(c.await.unwrap().unwrap(), "c");
        assert_eq!(tally.order(), ["a", "b", "c"]);
        assert_eq!(tally.max(), 1);
    })
    .await;
}

#[dflockd::exclusive(key = "{key}", wait = "10s", lease = "2s", client = client)]
async fn meet(client: Client, key: String, barrier: Arc<Barrier>) -> Result<(), Error> {
    barrier.wait().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_keys_run_in_parallel() {
    bounded(async {
        let (_servers, client) = servers().await;
        // Each body waits for the other: this only finishes if both hold their locks at once.
        let barrier = Arc::new(Barrier::new(2));
        let one = tokio::spawn(meet(
            client.clone(),
            unique_key("macro-par"),
            barrier.clone(),
        ));
        let two = tokio::spawn(meet(client.clone(), unique_key("macro-par"), barrier));
        let both = tokio::time::timeout(Duration::from_secs(10), async {
            one.await.unwrap().unwrap();
            two.await.unwrap().unwrap();
        });
        both.await
            .expect("two different keys must be held at the same time");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_zero_skips_when_busy_by_return_type() {
    bounded(async {
        let (_servers, client) = servers().await;
        let key = unique_key("macro-skip");
        let tally = Tally::default();
        let (holder, entered, release) = Work::new("holder", &tally).gated();
        let holder = tokio::spawn(queued(client.clone(), key.clone(), holder));
        entered.await.unwrap();

        let started = Instant::now();
        let error = skip_result(client.clone(), key.clone(), Work::new("result", &tally))
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "busy is a timeout: {error}");
        assert_eq!(
            skip_option(client.clone(), key.clone(), Work::new("option", &tally)).await,
            None
        );
        skip_unit(client.clone(), key.clone(), Work::new("unit", &tally)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "skips do not queue"
        );
        assert_eq!(tally.order(), ["holder"], "no skipped body ran");

        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        // Free again: each form runs its body.
        assert_eq!(
            skip_result(client.clone(), key.clone(), Work::new("result", &tally))
                .await
                .unwrap(),
            "result"
        );
        assert_eq!(
            skip_option(client.clone(), key.clone(), Work::new("option", &tally)).await,
            Some("option")
        );
        skip_unit(client.clone(), key.clone(), Work::new("unit", &tally)).await;
        assert_eq!(tally.order(), ["holder", "result", "option", "unit"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_are_not_busy() {
    bounded(async {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::builder()
            .servers([format!("127.0.0.1:{port}")])
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let key = unique_key("macro-fail");
        let tally = Tally::default();
        let error = skip_result(client.clone(), key.clone(), Work::new("result", &tally))
            .await
            .unwrap_err();
        assert!(
            !error.is_timeout(),
            "a connection failure is not busy: {error}"
        );
        assert!(matches!(error, Error::Connect { .. }), "{error:?}");
        assert_eq!(
            skip_option(client.clone(), key.clone(), Work::new("option", &tally)).await,
            None
        );
        skip_unit(client, key, Work::new("unit", &tally)).await;
        assert!(tally.order().is_empty());
    })
    .await;
}

#[dflockd::exclusive(
    key = "{key}",
    wait = "0s",
    lease = "2s",
    hold_at_least = "1500ms",
    client = client
)]
async fn held_at_least(client: Client, key: String) -> Result<Instant, Error> {
    Ok(Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_at_least_keeps_others_out_without_blocking_the_caller() {
    bounded(async {
        let (_servers, client) = servers().await;
        let key = unique_key("macro-hold");
        let called = Instant::now();
        let ran_at = held_at_least(client.clone(), key.clone()).await.unwrap();
        assert!(
            called.elapsed() < Duration::from_millis(1000),
            "the caller does not wait for the hold ({:?})",
            called.elapsed()
        );

        let error = held_at_least(client.clone(), key.clone())
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "still held: {error}");

        let tally = Tally::default();
        queued(client.clone(), key.clone(), Work::new("next", &tally))
            .await
            .unwrap();
        let held = ran_at.elapsed();
        assert!(
            held >= Duration::from_millis(1400),
            "the next holder got the lock after {held:?}, before the minimum hold"
        );
        assert!(
            held < Duration::from_secs(5),
            "released at the end of the hold ({held:?})"
        );
    })
    .await;
}

#[dflockd::exclusive(key = "{key}", wait = "1s", lease = "2s", client = client)]
async fn until_lost(
    client: Client,
    key: String,
    started: oneshot::Sender<()>,
    alive: oneshot::Sender<()>,
) -> Result<(), Error> {
    let _alive = alive; // dropped with the body
    let _ = started.send(());
    std::future::pending::<()>().await;
    Ok(())
}

#[dflockd::exclusive(key = "{key}", wait = "1s", lease = "2s", client = client)]
async fn until_lost_option(
    client: Client,
    key: String,
    started: oneshot::Sender<()>,
) -> Option<()> {
    let _ = started.send(());
    std::future::pending::<()>().await;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_lost_mid_body_cancels_the_body_and_returns_the_error() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let client = Client::builder()
            .servers([server.addr_string()])
            .build()
            .unwrap();
        let (started_tx, started) = oneshot::channel();
        let (alive_tx, alive) = oneshot::channel::<()>();
        let call = tokio::spawn(until_lost(
            client.clone(),
            unique_key("macro-lost"),
            started_tx,
            alive_tx,
        ));
        started.await.unwrap();
        // The server crashes: the connection holding the lock closes and the lease is lost.
        server.kill();
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is_lease_lost(), "{error}");
        assert!(
            matches!(
                error,
                Error::LeaseLost {
                    reason: LossReason::ConnectionLost,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(alive.await.is_err(), "the body future was dropped");

        // `Option`: `None`.
        server.restart().await.unwrap();
        let (started_tx, started) = oneshot::channel();
        let call = tokio::spawn(until_lost_option(
            client.clone(),
            unique_key("macro-lost"),
            started_tx,
        ));
        started.await.unwrap();
        server.kill();
        assert_eq!(call.await.unwrap(), None);
    })
    .await;
}

#[dflockd::exclusive(key = "{key}", lease = "2s", on_lease_loss = "continue", client = client)]
async fn keeps_going(
    client: Client,
    key: String,
    started: oneshot::Sender<()>,
) -> Result<LossReason, Error> {
    let lock = dflockd::current_lock().expect("inside the body");
    let _ = started.send(());
    let reason = lock.lost().await;
    assert!(!lock.is_held());
    Ok(reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_lease_loss_continue_lets_the_body_finish() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let client = Client::builder()
            .servers([server.addr_string()])
            .build()
            .unwrap();
        let (started_tx, started) = oneshot::channel();
        let call = tokio::spawn(keeps_going(
            client.clone(),
            unique_key("macro-continue"),
            started_tx,
        ));
        started.await.unwrap();
        server.kill();
        assert_eq!(call.await.unwrap().unwrap(), LossReason::ConnectionLost);
    })
    .await;
}

#[dflockd::exclusive_semaphore(key = "{key}", limit = 2, wait = "10s", lease = "2s", client = client)]
async fn pooled(
    client: Client,
    key: String,
    tally: Tally,
    barrier: Arc<Barrier>,
) -> Result<(), Error> {
    let _inside = tally.enter("pooled");
    // Two holders meet here; with a limit of 1 this would never finish.
    barrier.wait().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_never_exceeds_its_limit() {
    bounded(async {
        let (_servers, client) = servers().await;
        let key = unique_key("macro-sem");
        let tally = Tally::default();
        let barrier = Arc::new(Barrier::new(2));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                tokio::spawn(pooled(
                    client.clone(),
                    key.clone(),
                    tally.clone(),
                    barrier.clone(),
                ))
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(tally.order().len(), 6);
        assert_eq!(
            tally.max(),
            2,
            "at most `limit` bodies at once, and the limit is used"
        );
    })
    .await;
}

struct Order {
    tenant: String,
    id: u64,
}

#[dflockd::exclusive(key = "{prefix}:{order.tenant}:{order.id}", client = client)]
async fn fenced(
    client: &Client,
    prefix: &str,
    order: &Order,
) -> Result<dflockd::CurrentLock, Error> {
    Ok(dflockd::current_lock().expect("inside the body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn current_lock_gives_key_token_and_fence() {
    bounded(async {
        // Growing fences from v2.1 on; none before.
        let server = TestServer::start().await.unwrap();
        let client = Client::builder()
            .servers([server.addr_string()])
            .server_version(server.version().into())
            .build()
            .unwrap();
        let prefix = unique_key("macro-fence");
        let order = Order {
            tenant: "acme".into(),
            id: 42,
        };
        assert!(
            dflockd::current_lock().is_none(),
            "nothing outside a guarded body"
        );
        let first = fenced(&client, &prefix, &order).await.unwrap();
        let second = fenced(&client, &prefix, &order).await.unwrap();
        assert_eq!(first.key(), format!("{prefix}:acme:42"));
        assert_eq!(first.limit(), 1);
        assert_eq!(first.token().as_str().len(), 32);
        assert_ne!(first.token(), second.token());
        if dflockd::ServerVersion::from(server.version()).issues_fences() {
            assert!(
                second.fence().unwrap() > first.fence().unwrap(),
                "fences grow with every grant"
            );
        } else {
            assert_eq!((first.fence(), second.fence()), (None, None));
        }
        assert!(!first.is_held(), "released when the function returned");
        assert!(dflockd::current_lock().is_none());
    })
    .await;
}

struct Service {
    client: Client,
    name: String,
    runs: u32,
}

impl Service {
    #[dflockd::exclusive(key = "{self.name}", client = self.client)]
    async fn by_ref(&self) -> Result<String, Error> {
        Ok(dflockd::current_lock().unwrap().key().to_owned())
    }

    #[dflockd::exclusive(key = "{self.name}:{n}", client = &self.client)]
    async fn by_mut(&mut self, n: u32) -> Option<u32> {
        self.runs += n;
        Some(self.runs)
    }
}

trait Job {
    fn tick(&self) -> impl Future<Output = Result<String, Error>> + Send;
}

impl Job for Service {
    #[dflockd::exclusive(key = "{self.name}:tick", wait = "5s", client = self.client)]
    async fn tick(&self) -> Result<String, Error> {
        Ok(dflockd::current_lock().unwrap().key().to_owned())
    }
}

#[dflockd::exclusive(key = "{key}:{extra}", client = client)]
async fn generic<K: Display + Send + Sync>(
    client: Arc<Client>,
    key: K,
    extra: impl Display + Send,
) -> Result<String, Error> {
    Ok(dflockd::current_lock().unwrap().key().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn methods_traits_generics_and_client_expressions_spawn_on_a_multi_thread_runtime() {
    bounded(async {
        let (_servers, client) = servers().await;
        let name = unique_key("macro-svc");
        let mut service = Service {
            client: client.clone(),
            name: name.clone(),
            runs: 0,
        };
        // `tokio::spawn` needs the futures to be `Send`.
        let service = tokio::spawn(async move {
            assert_eq!(service.by_ref().await.unwrap(), service.name);
            assert_eq!(service.by_mut(2).await, Some(2));
            assert_eq!(service.by_mut(3).await, Some(5));
            assert_eq!(
                service.tick().await.unwrap(),
                format!("{}:tick", service.name)
            );
            service
        })
        .await
        .unwrap();
        assert_eq!(service.runs, 5);

        let shared = Arc::new(client.clone());
        let key = tokio::spawn(generic(shared, name.clone(), 7))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key, format!("{name}:7"));
    })
    .await;
}

#[dflockd::exclusive(key = "{key}", wait = "5s")]
async fn on_the_default_client(key: String) -> Result<Vec<String>, Error> {
    let lock = dflockd::current_lock().unwrap();
    assert_eq!(lock.key(), key);
    Ok(dflockd::default_client()?
        .servers()
        .into_iter()
        .map(str::to_owned)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installed_default_client_is_used_without_client_argument() {
    bounded(async {
        let (servers, client) = servers().await;
        dflockd::set_default_client(client);
        let used = on_the_default_client(unique_key("macro-default"))
            .await
            .unwrap();
        assert_eq!(used, servers.addrs());
    })
    .await;
}

/// Set in the child process of `default_client_comes_from_the_environment`.
const CHILD: &str = "DFLOCKD_MACROS_E2E_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_client_comes_from_the_environment() {
    if std::env::var_os(CHILD).is_some() {
        // The child: no client installed, `DFLOCKD_SERVERS` set by the parent.
        let expected = std::env::var("DFLOCKD_SERVERS").unwrap();
        let used = bounded(on_the_default_client(unique_key("macro-env")))
            .await
            .unwrap();
        assert_eq!(used, [expected]);
        return;
    }
    // The parent: run this same test in a child process whose environment names the server
    // (the process environment cannot be changed safely from a multi-threaded test).
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let output = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "default_client_comes_from_the_environment",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("DFLOCKD_SERVERS", server.addr_string())
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            server.stats().idle_locks.len() + server.stats().locks.len() >= 1,
            "the child used this server"
        );
    })
    .await;
}

#[dflockd::exclusive(key = "{key}", wait = "5s", client = client)]
async fn outer(client: &Client, key: &str) -> Result<Result<(), Error>, Error> {
    Ok(inner(client, key).await)
}

#[dflockd::exclusive(key = "{key}", wait = "5s", client = client)]
async fn inner(client: &Client, key: &str) -> Result<(), Error> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guarded_fn_calling_one_on_the_same_key_fails_at_once_instead_of_waiting_for_itself() {
    bounded(async {
        let (_servers, client) = servers().await;
        let key = unique_key("macro-reentry");
        let started = Instant::now();
        let nested = outer(&client, &key).await.expect("the outer fn ran");
        assert!(
            matches!(&nested, Err(Error::Reentrant { key: k }) if *k == key),
            "{nested:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // The outer lock was released: the inner fn alone runs.
        inner(&client, &key).await.unwrap();
    })
    .await;
}

/// Settings a service reads from its configuration.
struct JobSettings {
    wait: Duration,
    lease: Duration,
}

/// A request message as tonic/prost generate them: a plain struct with public fields.
#[derive(Clone)]
struct ShipOrder {
    tenant: String,
    order_id: u64,
}

impl ShipOrder {
    fn lock_key(&self, prefix: &str) -> String {
        format!("{prefix}:ship:{}:{}", self.tenant, self.order_id)
    }
}

#[dflockd::exclusive(
    key = order.lock_key(prefix),
    wait = settings.wait,
    lease = settings.lease,
    client = client
)]
async fn configured(
    client: &Client,
    prefix: &str,
    order: &ShipOrder,
    settings: &JobSettings,
) -> Result<(String, f64), Error> {
    let lock = dflockd::current_lock().expect("inside the body");
    let stats = client.stats_for_key(lock.key()).await?;
    let lease_left = stats.lock(lock.key()).expect("held").lease_expires_in_s;
    Ok((lock.key().to_owned(), lease_left))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_expression_and_durations_from_configuration() {
    bounded(async {
        let (_servers, client) = servers().await;
        let prefix = unique_key("macro-expr");
        let order = ShipOrder {
            tenant: "acme".into(),
            order_id: 42,
        };
        let queue = JobSettings {
            wait: Duration::from_secs(10),
            lease: Duration::from_secs(7),
        };

        // The key is the expression's value; the lease is the configured one (the server's
        // default is 33 s).
        let (key, lease_left) = configured(&client, &prefix, &order, &queue).await.unwrap();
        assert_eq!(key, format!("{prefix}:ship:acme:42"));
        assert!(
            lease_left > 4.0 && lease_left <= 7.0,
            "the configured 7 s lease, {lease_left} s left"
        );

        // The wait is read at each call: zero skips at once, ten seconds queues.
        let holder = client.lock(&key).acquire().await.unwrap();
        let skip = JobSettings {
            wait: Duration::ZERO,
            lease: Duration::from_secs(7),
        };
        let started = Instant::now();
        let error = configured(&client, &prefix, &order, &skip)
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "busy: {error}");
        assert!(started.elapsed() < Duration::from_secs(2), "no queueing");

        let queued = tokio::spawn({
            let (client, prefix, order) = (client.clone(), prefix.clone(), order.clone());
            async move { configured(&client, &prefix, &order, &queue).await }
        });
        until_stats(&client, &key, |s| lock_waiters(s, &key) == 1).await;
        holder.release().await.unwrap();
        assert_eq!(queued.await.unwrap().unwrap().0, key, "queued, then ran");
    })
    .await;
}

#[dflockd::exclusive(key = "{prefix}:ship:{order.tenant}:{order.order_id}", client = client)]
async fn ship_by_fields(client: &Client, prefix: &str, order: ShipOrder) -> Result<String, Error> {
    Ok(dflockd::current_lock().unwrap().key().to_owned())
}

#[dflockd::exclusive(
    key = request.get_ref().lock_key(prefix),
    wait = "0",
    client = client
)]
async fn ship_rpc(
    client: &Client,
    prefix: &str,
    request: tonic::Request<ShipOrder>,
) -> Result<u64, Error> {
    Ok(request.into_inner().order_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn field_placeholders_and_expressions_on_a_message_make_the_same_key() {
    bounded(async {
        let (_servers, client) = servers().await;
        let prefix = unique_key("macro-msg");
        let order = ShipOrder {
            tenant: "acme".into(),
            order_id: 7,
        };
        let key = ship_by_fields(&client, &prefix, order.clone())
            .await
            .unwrap();
        assert_eq!(key, format!("{prefix}:ship:acme:7"));

        // The template and the expression lock the same key: while it is held, the RPC
        // (`wait = "0"`: zero seconds) is busy.
        let holder = client.lock(&key).acquire().await.unwrap();
        let error = ship_rpc(&client, &prefix, tonic::Request::new(order.clone()))
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error}");
        holder.release().await.unwrap();
        assert_eq!(
            ship_rpc(&client, &prefix, tonic::Request::new(order))
                .await
                .unwrap(),
            7
        );
    })
    .await;
}

/// A `tracing` layer that keeps the fields of every span when it closes, and every event with
/// the name of the span it happened in.
mod recorder {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    pub(crate) type Fields = BTreeMap<&'static str, String>;

    #[derive(Clone, Debug)]
    pub(crate) struct Closed {
        pub(crate) name: &'static str,
        pub(crate) fields: Fields,
    }

    #[derive(Clone, Debug)]
    pub(crate) struct Logged {
        pub(crate) fields: Fields,
        pub(crate) span: Option<&'static str>,
    }

    #[derive(Clone, Default)]
    pub(crate) struct Recorder {
        closed: Arc<Mutex<Vec<Closed>>>,
        events: Arc<Mutex<Vec<Logged>>>,
    }

    impl Recorder {
        pub(crate) fn closed(&self, name: &str) -> Vec<Fields> {
            let closed = self.closed.lock().unwrap();
            closed
                .iter()
                .filter(|s| s.name == name)
                .map(|s| s.fields.clone())
                .collect()
        }

        pub(crate) fn events(&self) -> Vec<Logged> {
            self.events.lock().unwrap().clone()
        }
    }

    #[derive(Default)]
    struct Values(Fields);

    impl Visit for Values {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name(), value.to_owned());
        }

        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            self.0.insert(field.name(), format!("{value:?}"));
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut values = Values::default();
            attrs.record(&mut values);
            ctx.span(id).unwrap().extensions_mut().insert(values);
        }

        fn on_record(&self, id: &Id, record: &Record<'_>, ctx: Context<'_, S>) {
            let span = ctx.span(id).unwrap();
            let mut extensions = span.extensions_mut();
            if let Some(values) = extensions.get_mut::<Values>() {
                record.record(values);
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let mut values = Values::default();
            event.record(&mut values);
            let span = ctx.event_span(event).map(|s| s.name());
            self.events.lock().unwrap().push(Logged {
                fields: values.0,
                span,
            });
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let span = ctx.span(&id).unwrap();
            let fields = span
                .extensions()
                .get::<Values>()
                .map(|v| v.0.clone())
                .unwrap_or_default();
            self.closed.lock().unwrap().push(Closed {
                name: span.name(),
                fields,
            });
        }
    }
}

#[dflockd::exclusive(key = key, wait = "5s", client = client)]
async fn traced(client: &Client, key: &str) -> Result<Option<u64>, Error> {
    Ok(dflockd::current_lock().unwrap().fence())
}

#[dflockd::exclusive_semaphore(key = "{key}", limit = 3, client = client)]
async fn traced_pool(client: &Client, key: &str) -> Option<()> {
    Some(())
}

#[tokio::test(flavor = "current_thread")]
async fn each_call_runs_in_a_span_with_its_key_fence_wait_and_outcome() {
    use tracing_subscriber::layer::SubscriberExt;

    let recorder = recorder::Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    // This thread only: the runtime is single-threaded, so the calls and their tasks run here.
    let _default = tracing::subscriber::set_default(subscriber);

    let (key, fence) = bounded(async {
        let server = TestServer::start().await.unwrap();
        let client = Client::builder()
            .servers([server.addr_string()])
            .server_version(server.version().into())
            .build()
            .unwrap();
        let key = unique_key("macro-span");
        // The span's callsite is shared by every test in this binary, and registered once,
        // by whichever call reaches it first. A registration on another test's thread that
        // overlaps `set_default` above caches "no subscriber wants this" (tracing computes a
        // callsite's interest from the subscribers present when it registers): recompute it
        // now, with this test's subscriber present, milliseconds after the tests started.
        tracing::callsite::rebuild_interest_cache();

        // 1. ran
        let fence = traced(&client, &key).await.unwrap();
        // 2. skipped_busy, with the `()` return type (the skip is logged)
        let holder = client.lock(&key).acquire().await.unwrap();
        skip_unit(
            client.clone(),
            key.clone(),
            Work::new("unit", &Tally::default()),
        )
        .await;
        holder.release().await.unwrap();
        // 3. and 4. reentrant inside ran
        let nested = outer(&client, &key).await.unwrap();
        assert!(matches!(nested, Err(Error::Reentrant { .. })), "{nested:?}");
        // 5. a semaphore's limit (on a key of its own: releases before 2.0 keep locks and
        // semaphores in one key space)
        traced_pool(&client, &format!("{key}:pool")).await.unwrap();
        // 6. ran_lease_lost: the server goes away while the body runs to its end
        let (started_tx, started) = oneshot::channel();
        let call = tokio::spawn(keeps_going(client.clone(), key.clone(), started_tx));
        started.await.unwrap();
        server.kill();
        call.await.unwrap().unwrap();
        // 7. lease_lost: the same with the body cancelled
        server.restart().await.unwrap();
        let (started_tx, started) = oneshot::channel();
        let (alive_tx, _alive) = oneshot::channel::<()>();
        let call = tokio::spawn(until_lost(
            client.clone(),
            key.clone(),
            started_tx,
            alive_tx,
        ));
        started.await.unwrap();
        server.kill();
        assert!(call.await.unwrap().unwrap_err().is_lease_lost());
        // 8. failed: nothing listens any more
        let error = skip_result(
            client.clone(),
            key.clone(),
            Work::new("r", &Tally::default()),
        )
        .await
        .unwrap_err();
        assert!(!error.is_timeout(), "{error}");
        (key, fence)
    })
    .await;

    let spans = recorder.closed("dflockd_exclusive");
    let outcomes: Vec<&str> = spans.iter().map(|s| s["outcome"].as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "ran",
            "skipped_busy",
            "reentrant",
            "ran",
            "ran",
            "ran_lease_lost",
            "lease_lost",
            "failed"
        ],
        "{spans:#?}"
    );
    let functions: Vec<&str> = spans.iter().map(|s| s["function"].as_str()).collect();
    assert_eq!(
        functions,
        [
            "macros_e2e::traced",
            "macros_e2e::skip_unit",
            "macros_e2e::inner",
            "macros_e2e::outer",
            "macros_e2e::traced_pool",
            "macros_e2e::keeps_going",
            "macros_e2e::until_lost",
            "macros_e2e::skip_result"
        ]
    );
    for (i, span) in spans.iter().enumerate() {
        let expected = if i == 4 {
            format!("{key}:pool")
        } else {
            key.clone()
        };
        assert_eq!(span["key"], expected, "{span:?}");
        assert!(span["wait_ms"].parse::<u64>().is_ok(), "{span:?}");
    }
    let limits: Vec<&str> = spans.iter().map(|s| s["limit"].as_str()).collect();
    assert_eq!(limits, ["1", "1", "1", "1", "3", "1", "1", "1"]);

    // The fence is recorded once granted: it is the body's, and absent without a grant (or
    // from a release that issues none).
    assert_eq!(spans[0].get("fence"), fence.map(|f| f.to_string()).as_ref());
    assert_eq!(spans[1].get("fence"), None, "skipped: no grant");
    assert_eq!(spans[2].get("fence"), None, "reentrant: no grant");
    assert_eq!(spans[7].get("fence"), None, "failed: no grant");

    // Events inside a call's span carry the same field names.
    let skipped = recorder
        .events()
        .into_iter()
        .find(|e| {
            e.fields
                .get("message")
                .is_some_and(|m| m.starts_with("skipped"))
        })
        .expect("the skip of the `()` function is logged");
    assert_eq!(skipped.span, Some("dflockd_exclusive"));
    assert_eq!(skipped.fields["function"], "macros_e2e::skip_unit");
    assert_eq!(skipped.fields["key"], key);
}
