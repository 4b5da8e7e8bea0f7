//! Criterion micro-benchmarks (being written).
fn main() {}
