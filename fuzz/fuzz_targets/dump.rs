#![no_main]
//! `cargo fuzz run dump`: see ../targets.rs. Files go to a tmpfs when
//! there is one.

#[path = "../targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("ssdaq-fuzz-dump-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::dump(data, dir()));
