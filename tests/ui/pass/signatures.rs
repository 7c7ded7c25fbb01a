//! Every supported signature shape compiles, and the futures are `Send`.
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use dflockd::{Client, Error};

#[derive(Debug)]
struct AppError;

impl From<Error> for AppError {
    fn from(_: Error) -> Self {
        AppError
    }
}

struct Day {
    year: u32,
    pair: (u8, u8),
}

#[dflockd::exclusive(
    key = "report:{tenant_id}:{day.year}:{day.pair.1}",
    wait = "10s",
    lease = "30s"
)]
async fn free_fn(tenant_id: u64, day: Day) -> Result<u32, AppError> {
    let n: u32 = "5".parse().map_err(|_| AppError)?;
    if n > 3 {
        return Ok(n + day.year);
    }
    Ok(0)
}

#[dflockd::exclusive(key = "cleanup", wait = "0s")]
async fn unit() {}

#[dflockd::exclusive(key = "opt:{{literal}}:{x}", hold_at_least = "1m30s")]
async fn option(x: &str) -> Option<String> {
    Some(x.to_owned())
}

#[dflockd::exclusive(key = "generic:{value}", on_lease_loss = "continue")]
async fn generic<T: Display + Send + Sync>(
    value: T,
    other: impl Display + Send,
) -> Result<String, Error> {
    Ok(format!("{value}{other}"))
}

#[dflockd::exclusive(key = "refs:{a}", client = client)]
async fn references<'a>(client: &Client, a: &'a str, b: &mut Vec<u8>) -> Result<&'a str, Error> {
    b.push(1);
    Ok(a)
}

struct Service {
    client: Client,
    shared: Arc<Client>,
    name: String,
    count: u32,
}

impl Service {
    #[dflockd::exclusive(key = "svc:{self.name}", client = &self.client)]
    async fn by_ref(&self) -> Result<u32, Error> {
        Ok(self.count)
    }

    #[dflockd::exclusive(key = "svc:{self.name}:{n}", client = self.shared)]
    async fn by_mut(&mut self, n: u32) -> Result<(), Error> {
        self.count += n;
        Ok(())
    }

    #[dflockd::exclusive_semaphore(key = "svc-pool", limit = 3, client = self.client.clone())]
    pub async fn semaphore(&self) -> Option<u32> {
        Some(self.count)
    }
}

impl Service {
    #[dflockd::exclusive(key = "svc:{self.name}", client = self.client.clone())]
    async fn by_value(self) -> std::io::Result<u32> {
        Ok(self.count)
    }
}

#[dflockd::exclusive(key = "mut:{n}")]
async fn mutable_param(mut n: u32) -> Option<impl Display> {
    n += 1;
    Some(n)
}

#[dflockd::exclusive(key = "pattern")]
async fn destructured(
    (a, b): (u8, u8),
    _: u8,
) -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    Ok(a + b)
}

const WORKERS: u32 = 2;

#[dflockd::exclusive_semaphore(key = "pool:{id}", limit = WORKERS, wait = "500ms")]
async fn semaphore_expr(id: u8) {
    let _ = id;
}

// Expressions: a whole key, durations from configuration, evaluated at each call.
struct Config {
    wait: Duration,
    lease: Duration,
}

impl Config {
    fn hold(&self) -> Duration {
        self.lease / 2
    }
}

struct Request {
    tenant: String,
    id: u64,
}

impl Request {
    fn key(&self) -> String {
        format!("req:{}", self.id)
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[dflockd::exclusive(
    key = format!("order:{}:{}", request.tenant, request.id),
    wait = config.wait,
    lease = &config.lease,
    hold_at_least = config.hold()
)]
async fn key_expression(request: Request, config: &Config) -> Result<u64, Error> {
    // `request` was borrowed by the key, not moved.
    Ok(request.id)
}

#[dflockd::exclusive(key = request.key(), lease = LEASE, wait = "10")]
async fn method_key(request: &Request) -> Option<String> {
    Some(request.tenant.clone())
}

#[dflockd::exclusive(key = name, wait = Duration::ZERO)]
async fn string_key(name: String) -> Option<String> {
    Some(name)
}

struct Configured {
    name: String,
    count: u32,
    config: Config,
}

impl Configured {
    #[dflockd::exclusive_semaphore(key = self.name, limit = self.count, wait = self.config.wait)]
    async fn run(&self) -> Option<u32> {
        Some(self.count)
    }
}

trait Job {
    fn run(&self) -> impl std::future::Future<Output = Result<(), AppError>> + Send;
    async fn run_local(&self) -> Option<()>;
}

impl Job for Service {
    #[dflockd::exclusive(key = "job:{self.name}", client = self.client)]
    async fn run(&self) -> Result<(), AppError> {
        Ok(())
    }

    #[dflockd::exclusive(key = "job-local", client = self.client)]
    async fn run_local(&self) -> Option<()> {
        Some(())
    }
}

#[dflockd::exclusive(key = "fence", crate = "::dflockd")]
async fn renamed() -> Result<u64, Error> {
    Ok(dflockd::current_lock().and_then(|l| l.fence()).unwrap_or(0))
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let client = Client::builder().build().unwrap();
    let mut service = Service {
        client: client.clone(),
        shared: Arc::new(client.clone()),
        name: "a".into(),
        count: 0,
    };
    let mut buf = Vec::new();
    assert_send(&free_fn(
        1,
        Day {
            year: 2024,
            pair: (1, 2),
        },
    ));
    assert_send(&unit());
    assert_send(&option("x"));
    assert_send(&generic(1, "x"));
    assert_send(&references(&client, "a", &mut buf));
    assert_send(&service.by_ref());
    assert_send(&service.semaphore());
    assert_send(&service.run());
    assert_send(&semaphore_expr(1));
    assert_send(&renamed());
    assert_send(&service.by_mut(1));
    assert_send(&mutable_param(1));
    assert_send(&destructured((1, 2), 3));
    assert_send(&service.by_value());

    let config = Config {
        wait: Duration::from_secs(1),
        lease: Duration::from_secs(10),
    };
    let request = Request {
        tenant: "acme".into(),
        id: 7,
    };
    assert_send(&method_key(&request));
    assert_send(&key_expression(request, &config));
    assert_send(&string_key("a".into()));
    let configured = Configured {
        name: "pool".into(),
        count: 2,
        config,
    };
    assert_send(&configured.run());
}
