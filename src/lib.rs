//! ssdaq: slow-signal data acquisition for the CHEC-S Cherenkov camera.
//!
//! 32 TARGET-C modules send UDP datagrams of 144-byte readouts. ssdaq
//! receives them, builds camera-wide events and publishes each one on ZeroMQ
//! the moment it is complete. The data path, stage by stage:
//!
//! ```text
//! TM 0..31 ─UDP─▶ recv ─▶ builder ─▶ publish ─ZMQ PUB─▶ listen (Rust, Python)
//! ```
//!
//! * [`packet`]: the wire layout of a readout, validation, module numbering
//!   (re-exported from the protocol crate `ssdaq_wire`, with the formats);
//! * [`event`]: the buffer an event is assembled in, both wire formats at once;
//! * [`builder`]: the timestamp-indexed ring of event slots;
//! * [`recv`]: UDP receive (io_uring multishot, recvmmsg fallback);
//! * [`publish`] / [`listen`]: the ZeroMQ publisher, and the subscriber API
//!   (the crate `ssdaq_listener`, re-exported);
//! * [`pipeline`]: the live daemon's stages, threads and shutdown
//!   ([`cores`]: pinning them);
//! * [`metrics`]: counters and latency histograms of every stage;
//! * [`dump`] / [`replay`]: the raw dump of every datagram, and rebuilding
//!   its events offline through the same builder.
//!
//! The binaries (`ssdaqd`, `ssdaq-replay`, `ssdaq-listen`) are thin: they
//! parse flags ([`cli`]) and call into this library. The protocol is the
//! crate `ssdaq_wire`; the simulated camera is the crate `tm_ss_sim`
//! (`tm-ss-sim/`), which `ssdaqd --demo` embeds.

#[cfg(not(target_endian = "little"))]
compile_error!("ssdaq assumes a little-endian host");

pub mod builder;
pub mod cli;
pub mod clock;
pub mod cores;
pub mod dump;
pub mod event;
pub mod metrics;
pub mod ops;
pub use ssdaq_listener as listen;
pub use ssdaq_wire::packet;
pub mod pipeline;
pub mod publish;
pub mod recv;
pub mod replay;
pub mod view;
