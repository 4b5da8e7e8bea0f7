//! Tells the crate whether the linked HDF5 can switch off file locking
//! (H5Pset_file_locking: 1.10.7 on the 1.10 line, 1.12.1 and later), from
//! the versions hdf5-metno-sys reports to its dependents.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(h5_file_locking)");
    let has = |v: &str| std::env::var_os(format!("DEP_HDF5_VERSION_{v}")).is_some();
    if (has("1_10_7") && !has("1_12_0")) || has("1_12_1") {
        println!("cargo::rustc-cfg=h5_file_locking");
    }
}
