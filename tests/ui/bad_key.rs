// Malformed key templates.
#[dflockd::exclusive(key = "report:{id")]
async fn unclosed(id: u32) {}

#[dflockd::exclusive(key = "report:id}")]
async fn unmatched() {}

#[dflockd::exclusive(key = "report:{}")]
async fn empty_placeholder(id: u32) {}

#[dflockd::exclusive(key = "report:{id:?}")]
async fn format_spec(id: u32) {}

#[dflockd::exclusive(key = "nightly report")]
async fn whitespace() {}

#[dflockd::exclusive(key = "")]
async fn empty() {}

fn main() {}
