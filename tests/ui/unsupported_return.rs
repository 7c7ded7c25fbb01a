// Return types that cannot say "not run" are rejected with what to use instead.
#[dflockd::exclusive(key = "a")]
async fn count() -> u32 {
    1
}

struct AppError;

#[dflockd::exclusive(key = "b")]
async fn no_from() -> Result<(), AppError> {
    Ok(())
}

fn main() {}
