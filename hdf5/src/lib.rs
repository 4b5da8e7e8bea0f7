//! ssdaq-hdf5: camera events to the HDF5 files astronomers open.
//!
//! The original SSDAQ wrote its events with PyTables; its readers (and the
//! successor's `SSDataReader`) open `/SlowSignal/readout`, one row per
//! event. This crate writes exactly those files from published events
//! ([`ssdaq_wire::event::EventView`]), so `ssdaq-write` (live, from a
//! subscriber) and `ssdaq-replay --hdf5` (from a raw dump) write the same
//! rows for the same events:
//!
//! * [`layout`]: the two layouts (`seed`, `successor`), row by row;
//! * [`file`]: one file, appended in chunk-sized batches, flushed, closed;
//! * [`set`]: a run's files, named by start time and rotated by size or count.
//!
//! It links the system's HDF5 library (Debian: `libhdf5-dev`), so it is
//! not part of the daemon's default build: `cargo build --features hdf5`.
//! docs/formats.md describes the files.

#[cfg(not(h5_direct_chunk))]
compile_error!(
    "ssdaq-hdf5 needs HDF5 1.10.3 or later (H5Dwrite_chunk); \
     install a newer libhdf5-dev or point HDF5_DIR at one"
);

mod chunk;
pub mod file;
mod h5;
pub mod layout;
pub mod set;

pub use file::{EventFile, Options};
pub use layout::Layout;
pub use set::{FileSet, Limits, Numbering};
