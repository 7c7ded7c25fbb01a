#[dflockd::exclusive_semaphore(key = "a", limit = 0)]
async fn zero() {}

#[dflockd::exclusive_semaphore(key = "b", limit = 5000000000)]
async fn too_big() {}

#[dflockd::exclusive_semaphore(key = "c", limit = "3")]
async fn string() {}

#[dflockd::exclusive_semaphore(key = "d")]
async fn missing() {}

#[dflockd::exclusive_semaphore(key = "e", limit = -1)]
async fn negative() {}

fn main() {}
