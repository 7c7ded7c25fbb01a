// `key`, `wait`, `lease` and `hold_at_least` take expressions too; the compiler checks their
// types, and the errors point at the expressions.
use std::time::Duration;

struct Order {
    id: u64,
}

struct Config {
    wait_secs: u64,
    lease: Option<Duration>,
}

#[dflockd::exclusive(key = order, wait = config.wait_secs)]
async fn wrong_types(order: Order, config: Config) {
    let _ = order.id;
}

// `Option<Duration>` is not taken: `None` would silently mean the client's default.
#[dflockd::exclusive(key = format!("order:{}", order.id), lease = config.lease)]
async fn optional_lease(order: Order, config: Config) {}

struct Request {
    order: Order,
}

#[dflockd::exclusive(key = request.order, hold_at_least = request.order.id * 2)]
async fn field_access(request: Request) {}

// Numbers are not durations: a unit is needed, in a string.
#[dflockd::exclusive(key = 42, wait = 10, hold_at_least = 1.5)]
async fn number_literals() {}

fn main() {}
