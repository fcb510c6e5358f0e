//! `softphone-bench`: the load generator and comparison runs (see the README's
//! Performance section once it lands). For now it only names itself, so the
//! workspace layout is final.

fn main() {
    println!(
        "softphone-bench {}: no scenarios yet",
        env!("CARGO_PKG_VERSION")
    );
}
