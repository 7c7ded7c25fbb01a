// Durations are checked at compile time.
#[dflockd::exclusive(key = "a", wait = "10x")]
async fn unknown_unit() {}

#[dflockd::exclusive(key = "b", wait = "10")]
async fn no_unit() {}

#[dflockd::exclusive(key = "c", lease = "0s")]
async fn zero_lease() {}

#[dflockd::exclusive(key = "d", hold_at_least = "1.5ms")]
async fn sub_millisecond() {}

fn main() {}
