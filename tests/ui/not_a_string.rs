// `on_lease_loss` and `crate` take string literals (`key`, `limit` and the durations take
// expressions too: see bad_expression.rs).
#[dflockd::exclusive(key = "a", on_lease_loss = continue)]
async fn policy() {}

#[dflockd::exclusive(key = "b", crate = dflockd)]
async fn path() {}

fn main() {}
