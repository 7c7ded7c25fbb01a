#[dflockd::exclusive(key = "a")]
struct Job;

fn main() {}
