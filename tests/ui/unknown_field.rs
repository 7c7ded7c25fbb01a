// `{param.field}` is checked by the compiler; the error points at the key literal.
struct Day {
    year: u32,
}

#[dflockd::exclusive(key = "report:{day.month}")]
async fn build_report(day: Day) {}

struct NoDisplay;

#[dflockd::exclusive(key = "report:{value}")]
async fn not_display(value: NoDisplay) {}

fn main() {}
