#[dflockd::exclusive(key = "a", timeout = "1s")]
async fn job() {}

#[dflockd::exclusive(key = "a", limit = 2)]
async fn lock_with_limit() {}

#[dflockd::exclusive(key = "a", on_lease_loss = "ignore")]
async fn bad_policy() {}

#[dflockd::exclusive(key = "a", crate = "not a path")]
async fn bad_crate() {}

fn main() {}
