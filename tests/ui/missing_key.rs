#[dflockd::exclusive(wait = "0s")]
async fn job() {}

#[dflockd::exclusive]
async fn no_arguments() {}

fn main() {}
