#![no_main]
//! `cargo fuzz run builder`: see ../targets.rs.

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::builder(data));
