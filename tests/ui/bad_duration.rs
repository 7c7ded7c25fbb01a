// Duration literals are checked at compile time, with the grammar of the `DFLOCKD_*`
// variables.
#[dflockd::exclusive(key = "a", wait = "10x")]
async fn unknown_unit() {}

#[dflockd::exclusive(key = "b", wait = "1m30")]
async fn no_unit_after_a_unit() {}

#[dflockd::exclusive(key = "c", lease = "0s")]
async fn zero_lease() {}

#[dflockd::exclusive(key = "d", hold_at_least = "-1s")]
async fn negative() {}

fn main() {}
