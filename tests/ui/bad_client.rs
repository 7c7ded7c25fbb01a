#[dflockd::exclusive(key = "a", client = "127.0.0.1:6388")]
async fn job() {}

fn main() {}
