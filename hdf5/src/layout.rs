//! The two table layouts astronomers' readers know, row by row.
//!
//! This module owns what one row of `/SlowSignal/readout` holds in each
//! layout (docs/formats.md, "HDF5 files"), the byte layout of that row (one
//! packed, little-endian record, which is the HDF5 compound type exactly:
//! no conversion on write), and how a published event fills it. It does no
//! I/O.
//!
//! * [`Layout::Seed`], the original's `EventFileWriter`: `data`, `ev_time`,
//!   `event_number`, `runt_number` (sic), `time_stamps`.
//! * [`Layout::Successor`], the later `SSDataWriter` that `SSDataReader`
//!   opens: `cpu_t`, `cpu_t_ns`, `cpu_t_s`, `data`, `iro`, `time`.
//!
//! The columns are in the order PyTables gives them (it sorts a table
//! description's columns by name), so a file is what the original's own
//! PyTables code would have written. Both layouts add one column after
//! them, `module_mask` (bit m set for each module present), which readers
//! that ask for columns by name never see.
//!
//! A field the event's wire format does not carry is written as 0: a v2
//! event has no run number or per-module timestamps, a v1 event no CPU time
//! (docs/formats.md says which; run `ssdaqd --format v2` for the successor
//! layout's CPU times).

use std::mem::offset_of;

use ssdaq_wire::event::EventView;
use ssdaq_wire::packet::{N_MODULES, N_PIXELS};
use zerocopy::byteorder::little_endian::{F32, F64, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Which reader's layout a file is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// The original's `EventFileWriter` (PROTOCOL.md §6).
    #[default]
    Seed,
    /// The successor's `SSDataWriter` (PROTOCOL.md §8).
    Successor,
}

/// The type of one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    U32,
    U64,
    F64,
    /// `float32 (32, 64)`: mV, row = module (one 2-D HDF5 array type).
    Mv,
    /// `uint64 (32, 2)`: (primary, aux) timestamp per module.
    ModuleTimestamps,
}

/// One column: its name, byte offset in the row and type.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name: &'static str,
    pub offset: usize,
    pub column: Column,
}

/// A row of the seed layout, byte for byte as stored.
#[derive(IntoBytes, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SeedRow {
    data: [[F32; N_PIXELS]; N_MODULES],
    ev_time: U64,
    event_number: U64,
    runt_number: U64,
    time_stamps: [[U64; 2]; N_MODULES],
    module_mask: U32,
}

/// A row of the successor layout, byte for byte as stored.
#[derive(IntoBytes, FromBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SuccessorRow {
    cpu_t: F64,
    cpu_t_ns: U64,
    cpu_t_s: U64,
    data: [[F32; N_PIXELS]; N_MODULES],
    iro: U64,
    time: U64,
    module_mask: U32,
}

macro_rules! member {
    ($row:ty, $field:ident, $column:expr) => {
        Member {
            name: stringify!($field),
            offset: offset_of!($row, $field),
            column: $column,
        }
    };
}

const SEED: &[Member] = &[
    member!(SeedRow, data, Column::Mv),
    member!(SeedRow, ev_time, Column::U64),
    member!(SeedRow, event_number, Column::U64),
    member!(SeedRow, runt_number, Column::U64),
    member!(SeedRow, time_stamps, Column::ModuleTimestamps),
    member!(SeedRow, module_mask, Column::U32),
];

const SUCCESSOR: &[Member] = &[
    member!(SuccessorRow, cpu_t, Column::F64),
    member!(SuccessorRow, cpu_t_ns, Column::U64),
    member!(SuccessorRow, cpu_t_s, Column::U64),
    member!(SuccessorRow, data, Column::Mv),
    member!(SuccessorRow, iro, Column::U64),
    member!(SuccessorRow, time, Column::U64),
    member!(SuccessorRow, module_mask, Column::U32),
];

/// Columns that ssdaq adds after the original's (readers ignore them).
pub const EXTRA_COLUMNS: &[&str] = &["module_mask"];

/// The successor's slow-signal index → ASIC channel map, stored as the
/// table attribute `ssl2asic_ch` (PROTOCOL.md §8).
pub const SSL2ASIC_CH: [i64; N_PIXELS] = [
    29, 23, 21, 22, 30, 27, 24, 0, 25, 31, 20, 18, 28, 26, 17, 3, 2, 16, 10, 12, 19, 4, 15, 9, 1,
    8, 11, 14, 6, 7, 5, 13, 62, 56, 54, 53, 59, 60, 55, 50, 57, 58, 52, 49, 61, 63, 32, 35, 51, 47,
    42, 46, 33, 34, 45, 48, 44, 36, 41, 43, 40, 38, 39, 37,
];

impl Layout {
    /// The layout's name on the command line and in the file: `seed` or `successor`.
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Seed => "seed",
            Layout::Successor => "successor",
        }
    }

    /// Bytes of one row.
    pub const fn row_len(self) -> usize {
        match self {
            Layout::Seed => size_of::<SeedRow>(),
            Layout::Successor => size_of::<SuccessorRow>(),
        }
    }

    /// The columns, in stored order.
    pub const fn members(self) -> &'static [Member] {
        match self {
            Layout::Seed => SEED,
            Layout::Successor => SUCCESSOR,
        }
    }

    /// Fills `row` (exactly [`Layout::row_len`] bytes) from `ev`. `run` is
    /// the run number to store where the event carries none (v2).
    pub fn fill_row(self, ev: &EventView<'_>, run: u64, row: &mut [u8]) {
        let mask = U32::new(ev.present_mask());
        match self {
            Layout::Seed => {
                let r = SeedRow::mut_from_bytes(row).expect("a buffer of one seed row");
                fill_mv(ev, &mut r.data);
                r.ev_time = U64::new(ev.timestamp());
                r.event_number = U64::new(ev.number());
                r.runt_number = U64::new(ev.run().unwrap_or(run));
                for (m, ts) in r.time_stamps.iter_mut().enumerate() {
                    let (p, a) = ev.module_timestamps(m).unwrap_or((0, 0));
                    *ts = [U64::new(p), U64::new(a)];
                }
                r.module_mask = mask;
            }
            Layout::Successor => {
                let r = SuccessorRow::mut_from_bytes(row).expect("a buffer of one successor row");
                let (s, ns) = ev.cpu_time().unwrap_or((0, 0));
                r.cpu_t = F64::new(s as f64 + ns as f64 * 1e-9);
                r.cpu_t_ns = U64::new(ns);
                r.cpu_t_s = U64::new(s);
                fill_mv(ev, &mut r.data);
                r.iro = U64::new(ev.number());
                r.time = U64::new(ev.timestamp());
                r.module_mask = mask;
            }
        }
    }
}

/// The event's mV as float32, in place (f64 → f32 rounds to nearest, as
/// numpy's `astype(float32)`; NaN stays NaN).
fn fill_mv(ev: &EventView<'_>, out: &mut [[F32; N_PIXELS]; N_MODULES]) {
    for (m, row) in out.iter_mut().enumerate() {
        for (o, v) in row.iter_mut().zip(ev.row(m)) {
            *o = F32::new(v as f32);
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Layout, String> {
        match s {
            "seed" => Ok(Layout::Seed),
            "successor" => Ok(Layout::Successor),
            _ => Err(format!(
                "unknown HDF5 layout {s:?} (known: seed, successor)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssdaq_wire::event::{V1_LEN, WireV1};
    use zerocopy::FromBytes;

    #[test]
    fn rows_are_packed_and_members_tile_them() {
        assert_eq!(Layout::Seed.row_len(), 8192 + 3 * 8 + 512 + 4);
        assert_eq!(Layout::Successor.row_len(), 8192 + 5 * 8 + 4);
        for l in [Layout::Seed, Layout::Successor] {
            let mut end = 0;
            for m in l.members() {
                assert_eq!(m.offset, end, "{l} {}: members are back to back", m.name);
                end += match m.column {
                    Column::U32 => 4,
                    Column::U64 | Column::F64 => 8,
                    Column::Mv => 4 * N_MODULES * N_PIXELS,
                    Column::ModuleTimestamps => 16 * N_MODULES,
                };
            }
            assert_eq!(end, l.row_len(), "{l}");
            assert_eq!(l.name().parse::<Layout>(), Ok(l));
        }
        assert!("Seed".parse::<Layout>().is_err());
    }

    #[test]
    fn a_v1_event_fills_a_seed_row() {
        let mut msg = vec![0u8; V1_LEN];
        let w = WireV1::mut_from_bytes(&mut msg).unwrap();
        w.event_number = U64::new(7);
        w.run_number = U64::new(3);
        w.timestamp = U64::new(1_000);
        for m in 0..N_MODULES {
            for p in 0..N_PIXELS {
                w.mv[m][p] = zerocopy::byteorder::little_endian::F64::new(if m == 5 {
                    f64::NAN
                } else {
                    (m * 100 + p) as f64 + 0.1
                });
            }
            w.timestamps[m] = [U64::new(if m == 5 { 0 } else { 999 }), U64::new(m as u64)];
        }
        let ev = EventView::parse(&msg).unwrap();
        let mut row = vec![0u8; Layout::Seed.row_len()];
        Layout::Seed.fill_row(&ev, 0, &mut row);
        let r = SeedRow::ref_from_bytes(&row).unwrap();
        assert_eq!(r.event_number.get(), 7);
        assert_eq!(r.runt_number.get(), 3);
        assert_eq!(r.ev_time.get(), 1_000);
        assert_eq!(r.data[2][3].get(), 203.1f64 as f32);
        assert!(r.data[5][0].get().is_nan());
        assert_eq!(r.time_stamps[4][1].get(), 4);
        assert_eq!(r.module_mask.get(), !(1u32 << 5));
    }
}
