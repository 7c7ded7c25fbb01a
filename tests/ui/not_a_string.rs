#[dflockd::exclusive(key = job)]
async fn a() {}

#[dflockd::exclusive(key = "e", wait = 10)]
async fn not_a_string() {}

fn main() {}
