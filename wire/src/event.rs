//! The published event messages (PROTOCOL.md §4, §5): their layouts and a
//! decoder for subscribers.
//!
//! This module owns wire format v1 (`SSEvent`, 16 920 bytes, the default)
//! and v2 (`SSReadout`, 16 416 bytes), all fields little-endian, and
//! [`EventView`], which casts a received message in place. The daemon
//! assembles events in a buffer laid out so both formats are slices of it
//! (`ssdaq::event::EventBuf`); this is what a subscriber needs, with no I/O.

use zerocopy::byteorder::little_endian::{F64, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::adc::MV_MAX;
use crate::packet::{N_MODULES, N_PIXELS};

/// Which wire format to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// `SSEvent`, PROTOCOL.md §4: 16 920 bytes with per-module timestamps.
    #[default]
    V1,
    /// `SSReadout`, PROTOCOL.md §5: 16 416 bytes.
    V2,
}

impl Format {
    /// The format's stable name, as written in dump headers: `v1` or `v2`.
    pub const fn name(self) -> &'static str {
        match self {
            Format::V1 => "v1",
            Format::V2 => "v2",
        }
    }

    /// Size of one message in this format.
    pub const fn message_len(self) -> usize {
        match self {
            Format::V1 => V1_LEN,
            Format::V2 => V2_LEN,
        }
    }
}

/// Bytes of a v1 message.
pub const V1_LEN: usize = std::mem::size_of::<WireV1>();
/// Bytes of a v2 message.
pub const V2_LEN: usize = std::mem::size_of::<WireV2>();

/// Wire format v1 (`SSEvent`), PROTOCOL.md §4.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct WireV1 {
    pub event_number: U64,
    pub run_number: U64,
    /// Mean primary timestamp of the modules present, ns.
    pub timestamp: U64,
    /// mV, row = module; NaN rows for missing modules.
    pub mv: [[F64; N_PIXELS]; N_MODULES],
    /// (primary, aux) timestamps per module; zero for missing modules.
    pub timestamps: [[U64; 2]; N_MODULES],
}

/// Wire format v2 (`SSReadout`), PROTOCOL.md §5.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct WireV2 {
    pub readout_number: U64,
    pub tack_ns: U64,
    pub cpu_time_s: U64,
    pub cpu_time_ns: U64,
    pub mv: [[F64; N_PIXELS]; N_MODULES],
}

const _: () = assert!(V1_LEN == 16_920);
const _: () = assert!(V2_LEN == 16_416);

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is neither `v1` nor `v2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl std::fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown event format {:?} (known: v1, v2)", self.0)
    }
}

impl std::error::Error for UnknownFormat {}

impl std::str::FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "v1" => Ok(Format::V1),
            "v2" => Ok(Format::V2),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

/// Why a received message is not an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DecodeError {
    /// Its length is neither v1's nor v2's.
    Length(usize),
    /// The right length, but a pixel value no readout gives: outside
    /// `0..=MV_MAX` mV, or a NaN in a module row that is not all NaN (a
    /// missing module's row is NaN throughout, a present one's nowhere).
    Value {
        module: usize,
        pixel: usize,
        value: f64,
    },
    /// The right length and values, but no event the daemon publishes:
    /// number 0 (numbers start at 1), no module present, or (v1) a present
    /// module with no timestamp or a missing one with one.
    Header(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            DecodeError::Length(len) => write!(
                f,
                "a message of {len} bytes is neither wire format v1 ({V1_LEN} bytes) nor v2 ({V2_LEN} bytes)"
            ),
            DecodeError::Value {
                module,
                pixel,
                value,
            } => write!(
                f,
                "a message of an event's length whose module {module} pixel {pixel} is {value} mV, \
                 which no readout gives (0..={MV_MAX:.4} mV, or NaN for the whole row of a \
                 missing module): not an event"
            ),
            DecodeError::Header(why) => write!(
                f,
                "a message of an event's length with {why}, which no ssdaqd publishes: not an event"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A published message, decoded in place.
#[derive(Clone, Copy)]
pub enum EventView<'a> {
    V1(&'a WireV1),
    V2(&'a WireV2),
}

impl<'a> EventView<'a> {
    /// Recognises the format by the message length, and trusts the values
    /// (for messages the daemon built itself; see [`EventView::decode`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let err = DecodeError::Length(bytes.len());
        match bytes.len() {
            V1_LEN => WireV1::ref_from_bytes(bytes)
                .map(EventView::V1)
                .map_err(|_| err),
            V2_LEN => WireV2::ref_from_bytes(bytes)
                .map(EventView::V2)
                .map_err(|_| err),
            _ => Err(err),
        }
    }

    /// Decodes a message from outside: [`EventView::parse`], then every
    /// pixel value checked against what a readout can give
    /// ([`DecodeError::Value`]). A subscriber's socket takes messages from
    /// any publisher on the endpoint; random bytes of an event's length pass
    /// this with a probability below 2^-2000.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let ev = EventView::parse(bytes)?;
        if ev.number() == 0 {
            return Err(DecodeError::Header("event number 0"));
        }
        for (module, row) in ev.mv_rows().iter().enumerate() {
            let absent = row[0].get().is_nan();
            for (pixel, v) in row.iter().enumerate() {
                let value = v.get();
                let ok = if absent {
                    value.is_nan()
                } else {
                    (0.0..=MV_MAX).contains(&value)
                };
                if !ok {
                    return Err(DecodeError::Value {
                        module,
                        pixel,
                        value,
                    });
                }
            }
        }
        let present = ev.present_mask();
        if present == 0 {
            return Err(DecodeError::Header("no module present"));
        }
        if let EventView::V1(w) = ev {
            for (m, [primary, aux]) in w.timestamps.iter().enumerate() {
                let stamped = primary.get() != 0;
                if present & (1 << m) != 0 && !stamped {
                    return Err(DecodeError::Header("a present module without a timestamp"));
                }
                if present & (1 << m) == 0 && (stamped || aux.get() != 0) {
                    return Err(DecodeError::Header("a missing module with a timestamp"));
                }
            }
            if w.timestamp.get() == 0 {
                return Err(DecodeError::Header("event timestamp 0"));
            }
        }
        Ok(ev)
    }

    pub fn format(&self) -> Format {
        match self {
            EventView::V1(_) => Format::V1,
            EventView::V2(_) => Format::V2,
        }
    }

    /// Event (v1) or readout (v2) number: 1, 2, 3 … in publication order.
    pub fn number(&self) -> u64 {
        match self {
            EventView::V1(w) => w.event_number.get(),
            EventView::V2(w) => w.readout_number.get(),
        }
    }

    /// Run number (v1 only).
    pub fn run(&self) -> Option<u64> {
        match self {
            EventView::V1(w) => Some(w.run_number.get()),
            EventView::V2(_) => None,
        }
    }

    /// Event timestamp: the mean primary timestamp of the modules present, ns.
    pub fn timestamp(&self) -> u64 {
        match self {
            EventView::V1(w) => w.timestamp.get(),
            EventView::V2(w) => w.tack_ns.get(),
        }
    }

    fn mv_rows(&self) -> &'a [[F64; N_PIXELS]; N_MODULES] {
        match *self {
            EventView::V1(w) => &w.mv,
            EventView::V2(w) => &w.mv,
        }
    }

    /// mV of `pixel` of `module` (NaN if the module is missing).
    pub fn mv(&self, module: usize, pixel: usize) -> f64 {
        self.mv_rows()[module][pixel].get()
    }

    /// The mV row of `module`.
    pub fn row(&self, module: usize) -> [f64; N_PIXELS] {
        self.mv_rows()[module].map(|v| v.get())
    }

    /// (primary, aux) timestamps of `module` (v1 only; zero if missing).
    pub fn module_timestamps(&self, module: usize) -> Option<(u64, u64)> {
        match self {
            EventView::V1(w) => {
                Some((w.timestamps[module][0].get(), w.timestamps[module][1].get()))
            }
            EventView::V2(_) => None,
        }
    }

    /// Arrival time (CLOCK_REALTIME) of the event's newest datagram as
    /// (seconds, nanoseconds) (v2 only).
    pub fn cpu_time(&self) -> Option<(u64, u64)> {
        match self {
            EventView::V1(_) => None,
            EventView::V2(w) => Some((w.cpu_time_s.get(), w.cpu_time_ns.get())),
        }
    }

    /// Whether `module` contributed to this event (its row is not NaN).
    pub fn has_module(&self, module: usize) -> bool {
        !self.mv_rows()[module][0].get().is_nan()
    }

    /// Bit `m` set for each module present.
    pub fn present_mask(&self) -> u32 {
        (0..N_MODULES)
            .filter(|&m| self.has_module(m))
            .fold(0, |acc, m| acc | 1 << m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_are_stable_and_unknown_ones_refused() {
        for f in [Format::V1, Format::V2] {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        assert_eq!("V1".parse::<Format>(), Err(UnknownFormat("V1".into())));
    }

    #[test]
    fn wrong_lengths_do_not_decode() {
        for n in [0, 16_919, 16_921, 16_415] {
            assert_eq!(
                EventView::parse(&vec![0; n]).err(),
                Some(DecodeError::Length(n))
            );
        }
    }

    #[test]
    fn decode_refuses_values_no_readout_gives_and_half_missing_modules() {
        let mut msg = vec![0u8; V1_LEN];
        let set = |msg: &mut [u8], m: usize, p: usize, v: f64| {
            let w = WireV1::mut_from_bytes(msg).unwrap();
            w.mv[m][p] = F64::new(v);
        };
        assert_eq!(
            EventView::decode(&msg).err(),
            Some(DecodeError::Header("event number 0")),
            "all zero bytes"
        );
        {
            let w = WireV1::mut_from_bytes(&mut msg).unwrap();
            w.event_number = U64::new(1);
            w.timestamp = U64::new(1_700_000_000_000_000_000);
            for m in 0..N_MODULES {
                w.timestamps[m] = [U64::new(1_700_000_000_000_000_000); 2];
            }
        }
        assert!(EventView::decode(&msg).is_ok(), "0 mV, every module: valid");
        for p in 0..N_PIXELS {
            set(&mut msg, 7, p, f64::NAN);
        }
        assert!(
            matches!(EventView::decode(&msg), Err(DecodeError::Header(_))),
            "module 7 missing but stamped"
        );
        WireV1::mut_from_bytes(&mut msg).unwrap().timestamps[7] = [U64::new(0); 2];
        set(&mut msg, 3, 5, MV_MAX);
        let ev = EventView::decode(&msg).expect("module 7 missing, a full-scale pixel");
        assert_eq!(ev.present_mask(), !(1 << 7));
        for (m, p, v) in [
            (3, 5, MV_MAX * (1.0 + f64::EPSILON)),
            (0, 0, -0.0763),
            (31, 63, f64::INFINITY),
            (2, 0, f64::NAN), // NaN at pixel 0 only: neither present nor missing
            (7, 9, 1.0),      // one value in a missing module's row
        ] {
            let mut bad = msg.clone();
            set(&mut bad, m, p, v);
            match EventView::decode(&bad) {
                Err(DecodeError::Value { module, pixel, .. }) => {
                    assert_eq!(module, m);
                    assert!(pixel == p || (m == 2 && pixel == 1), "{pixel}");
                }
                other => panic!("{m}/{p}/{v}: {:?}", other.map(|e| e.number())),
            }
            assert!(EventView::parse(&bad).is_ok(), "parse trusts the values");
        }
        // Random bytes of an event's length are not an event.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let random: Vec<u8> = (0..V2_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(EventView::decode(&random).is_err());
        // Every module missing: no event.
        let mut none = msg.clone();
        {
            let w = WireV1::mut_from_bytes(&mut none).unwrap();
            for m in 0..N_MODULES {
                w.mv[m] = [F64::new(f64::NAN); N_PIXELS];
                w.timestamps[m] = [U64::new(0); 2];
            }
        }
        assert_eq!(
            EventView::decode(&none).err(),
            Some(DecodeError::Header("no module present"))
        );
    }
}
