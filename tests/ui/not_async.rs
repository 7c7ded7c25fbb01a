#[dflockd::exclusive(key = "a")]
fn job() {}

fn main() {
    job();
}
