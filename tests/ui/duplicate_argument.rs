#[dflockd::exclusive(key = "a", wait = "1s", wait = "2s")]
async fn job() {}

fn main() {}
