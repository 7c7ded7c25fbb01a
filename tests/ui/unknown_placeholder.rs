// A placeholder that names no parameter is reported at the key literal. The function is
// still emitted, so `main` finds it.
#[dflockd::exclusive(key = "report:{tenant}")]
async fn build_report(tenant_id: u64) {}

#[dflockd::exclusive(key = "job:{self.name}")]
async fn not_a_method() {}

fn main() {
    let _ = build_report(1);
    let _ = not_a_method();
}
