//! Tells the crate what the linked HDF5 can do, from the versions
//! hdf5-metno-sys reports to its dependents: switch off file locking
//! (H5Pset_file_locking: 1.10.7 on the 1.10 line, 1.12.1 and later) and
//! choose the file-space strategy (1.10.1 and later); and that it can
//! write encoded chunks directly (H5Dwrite_chunk, 1.10.3), which the
//! writer needs.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(h5_file_locking)");
    println!("cargo::rustc-check-cfg=cfg(h5_fspace_strategy)");
    println!("cargo::rustc-check-cfg=cfg(h5_direct_chunk)");
    let has = |v: &str| std::env::var_os(format!("DEP_HDF5_VERSION_{v}")).is_some();
    if has("1_10_3") {
        println!("cargo::rustc-cfg=h5_direct_chunk");
    }
    if has("1_10_1") {
        println!("cargo::rustc-cfg=h5_fspace_strategy");
    }
    if (has("1_10_7") && !has("1_12_0")) || has("1_12_1") {
        println!("cargo::rustc-cfg=h5_file_locking");
    }
}
