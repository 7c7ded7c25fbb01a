#[dflockd::exclusive(key = "a")]
const fn job() {}

fn main() {}
