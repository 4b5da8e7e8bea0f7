//! ssdaq-wire: the CHEC-S slow-signal protocol, with no I/O.
//!
//! What a module sends and what a subscriber receives, in one small crate a
//! Rust subscriber can depend on without the daemon's io_uring code:
//!
//! * [`packet`]: the 144-byte readout (PROTOCOL.md §1), datagram validation,
//!   module numbering from the source address (§2);
//! * [`adc`]: ADC counts ↔ mV (§1), both ways;
//! * [`event`]: the published formats v1 (§4) and v2 (§5) and [`event::EventView`],
//!   which decodes a message in place;
//! * [`utc`]: the UTC dates that name dump and HDF5 files.
//!
//! Every layout is cast in place with `zerocopy`; the crate has no `unsafe`.

#![forbid(unsafe_code)]

#[cfg(not(target_endian = "little"))]
compile_error!("ssdaq-wire assumes a little-endian host");

pub mod adc;
pub mod event;
pub mod geometry;
pub mod packet;
pub mod utc;
