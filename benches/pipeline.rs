//! The pipeline benchmark against the simulator (being written).
fn main() {}
