//! Where the daemon assembles camera events, in both wire formats at once.
//!
//! The formats themselves (PROTOCOL.md §4/§5), their decoder [`EventView`]
//! and the ADC conversion live in the protocol crate (`ssdaq_wire`) and are
//! re-exported here. This module owns [`EventBuf`]: the builder assembles
//! each event directly in it, and its
//! layout is chosen so that *both* wire formats are contiguous slices of it:
//!
//! ```text
//! byte 0        8             32                       16416          16928
//!      | v2 hdr | v1 header   | f64[32][64] mV         | u64[32][2] ts |
//!      |<--------------- v2 message ------------------>|               |
//!               |<------------------- v1 message ---------------------->|
//! ```
//!
//! so publishing an event writes a 24- or 32-byte header in place and hands
//! the slice to ZeroMQ: no encoding copy. All fields are little-endian.
//!
//! Filling a row converts ADC → mV with SIMD and non-temporal stores; the
//! rows are fenced by the code that hands them on ([`fence_rows`]). Nothing
//! here allocates, logs or blocks.

use zerocopy::byteorder::little_endian::{F64, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

pub use ssdaq_wire::adc::{MV_PER_COUNT, adc_to_mv, mv_to_adc};
pub use ssdaq_wire::event::{
    DecodeError, EventView, Format, UnknownFormat, V1_LEN, V2_LEN, WireV1, WireV2,
};

use crate::packet::{N_MODULES, N_PIXELS, Readout};

/// Converts 32 big-endian raw counts to little-endian mV.
///
/// On x86-64 with explicit SSE2 (part of the x86-64 baseline): swap bytes,
/// flip the top bit, widen, convert and scale eight counts at a time, and
/// write the result with non-temporal stores. An event buffer is written
/// once per event, 40 ms after it was last touched, so its lines are no
/// longer in cache; an ordinary store first reads each line it writes
/// ("read for ownership"), a non-temporal store writes whole lines without
/// reading them (docs/design.md, "The builder", has the gain). Other
/// threads may only read the
/// rows after [`fence_rows`]. The result is bit-identical to
/// [`adc_to_mv`] (the widening and conversion are exact, the product is
/// one IEEE multiplication either way).
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
fn convert_half(src: &[zerocopy::byteorder::big_endian::U16; 32], dst: &mut MvHalf) {
    use std::arch::x86_64::*;
    let out = dst.0.as_mut_ptr().cast::<f64>();
    let input = src.as_ptr().cast::<__m128i>();
    // SAFETY: SSE2 is part of the x86-64 baseline. `input` covers the 64
    // bytes of `src` (4 unaligned 16-byte loads); `out` covers the 256
    // bytes of `dst`, which we borrow mutably: 16 aligned 16-byte stores,
    // aligned because `MvHalf` is `repr(align(16))`.
    unsafe {
        let flip = _mm_set1_epi16(0x8000u16 as i16);
        let zero = _mm_setzero_si128();
        let scale = _mm_set1_pd(MV_PER_COUNT);
        for i in 0..4 {
            let raw = _mm_loadu_si128(input.add(i));
            let native = _mm_or_si128(_mm_slli_epi16::<8>(raw), _mm_srli_epi16::<8>(raw));
            let v = _mm_xor_si128(native, flip);
            for (j, four) in [_mm_unpacklo_epi16(v, zero), _mm_unpackhi_epi16(v, zero)]
                .into_iter()
                .enumerate()
            {
                let at = out.add(8 * i + 4 * j);
                _mm_stream_pd(at, _mm_mul_pd(_mm_cvtepi32_pd(four), scale));
                let upper = _mm_srli_si128::<8>(four);
                _mm_stream_pd(at.add(2), _mm_mul_pd(_mm_cvtepi32_pd(upper), scale));
            }
        }
    }
}

/// Converts 32 big-endian raw counts to little-endian mV. Written as plain
/// array arithmetic into a local array so the compiler vectorizes it (swap,
/// flip, widen, scale), then stored as bytes (not `array::map`, which was
/// not inlined in the daemon's build). Also what Miri runs: it cannot run
/// the streaming stores' inline assembly.
#[cfg(any(not(target_arch = "x86_64"), miri))]
#[inline(always)]
fn convert_half(src: &[zerocopy::byteorder::big_endian::U16; 32], dst: &mut MvHalf) {
    let mut mv = [0f64; 32];
    for (out, raw) in mv.iter_mut().zip(src) {
        *out = (raw.get() ^ 0x8000) as f64 * MV_PER_COUNT;
    }
    dst.0.as_mut_bytes().copy_from_slice(mv.as_bytes());
}

/// Makes the rows this thread has written visible to other threads.
///
/// [`EventBuf::fill_row`] may write with non-temporal stores, which other
/// cores see in no particular order until the *writing* thread fences them.
/// So the thread that filled rows calls this before any other thread may
/// read them: before an event leaves the builder (the builder does, once
/// per event), and before it hands the builder to another thread (the
/// pipeline's lock on the assembly does when it lets go of it).
#[inline]
pub fn fence_rows() {
    // (Miri runs the portable conversion, which needs no fence.)
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: SSE is part of the x86-64 baseline; a fence has no operands.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Half a module's row of mV: 32 values, 16-byte aligned by its type, which
/// is what `convert_half`'s aligned non-temporal stores need.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(16))]
struct MvHalf([F64; N_PIXELS / 2]);

/// Where an event is assembled: both wire formats are slices of it.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(32))]
pub struct EventBuf {
    head: [U64; 4],
    mv: [[MvHalf; 2]; N_MODULES],
    ts: [[U64; 2]; N_MODULES],
}

const V1_OFFSET: usize = 8;
// The alignment adds no padding: the layout is the wire formats'.
const _: () = assert!(std::mem::size_of::<MvHalf>() == 8 * N_PIXELS / 2);
const _: () = assert!(std::mem::size_of::<EventBuf>() == V1_OFFSET + V1_LEN);

/// The header fields of one event, filled in when it is emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// 1, 2, 3 … in publication order.
    pub number: u64,
    pub run: u64,
    /// Mean primary timestamp of the modules present, ns.
    pub timestamp: u64,
    /// Arrival time (CLOCK_REALTIME ns) of the newest datagram in the event:
    /// v2's `cpu_time`, and deterministic under replay.
    pub arrival_ns: u64,
}

impl EventBuf {
    /// A zeroed buffer on the heap (16 928 bytes).
    pub fn new_boxed() -> Box<EventBuf> {
        EventBuf::new_box_zeroed().expect("allocating an event buffer")
    }

    /// Converts `r` into the row of `module`: ADC → mV and both timestamps.
    #[inline]
    pub fn fill_row(&mut self, module: usize, r: &Readout) {
        let (lo, hi) = r.adc_halves();
        let [row_lo, row_hi] = &mut self.mv[module];
        convert_half(lo, row_lo);
        convert_half(hi, row_hi);
        self.ts[module] = [U64::new(r.primary_ts()), U64::new(r.aux_ts())];
    }

    /// Marks `module` missing: NaN row, zero timestamps (PROTOCOL.md §4).
    #[inline]
    pub fn clear_row(&mut self, module: usize) {
        self.mv[module] = [
            MvHalf([F64::new(f64::NAN); N_PIXELS / 2]),
            MvHalf([F64::new(f64::NAN); N_PIXELS / 2]),
        ];
        self.ts[module] = [U64::ZERO; 2];
    }

    /// The mV row of `module`.
    pub fn row(&self, module: usize) -> [f64; N_PIXELS] {
        let [lo, hi] = &self.mv[module];
        std::array::from_fn(|p| {
            let half = if p < N_PIXELS / 2 { lo } else { hi };
            half.0[p % (N_PIXELS / 2)].get()
        })
    }

    /// Primary timestamp stored for `module` (zero if missing).
    pub fn primary_ts(&self, module: usize) -> u64 {
        self.ts[module][0].get()
    }

    /// Where the message of `format` starts inside the buffer.
    pub const fn message_offset(format: Format) -> usize {
        match format {
            Format::V1 => V1_OFFSET,
            Format::V2 => 0,
        }
    }

    /// Writes the header for `format` in place and returns the message bytes.
    pub fn encode(&mut self, format: Format, h: &EventHeader) -> &[u8] {
        match format {
            Format::V1 => {
                self.head[1] = U64::new(h.number);
                self.head[2] = U64::new(h.run);
                self.head[3] = U64::new(h.timestamp);
                &self.as_bytes()[V1_OFFSET..]
            }
            Format::V2 => {
                self.head = [
                    U64::new(h.number),
                    U64::new(h.timestamp),
                    U64::new(h.arrival_ns / 1_000_000_000),
                    U64::new(h.arrival_ns % 1_000_000_000),
                ];
                &self.as_bytes()[..V2_LEN]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_holds_the_protocol_conversion_of_every_count() {
        let mut b = EventBuf::new_boxed();
        for chunk in 0..1024u32 {
            let adc: [u16; 64] = std::array::from_fn(|p| (chunk * 64 + p as u32) as u16);
            b.fill_row(7, &Readout::new(1, 2, &adc));
            let row = b.row(7);
            for p in 0..64 {
                assert_eq!(
                    row[p].to_bits(),
                    adc_to_mv(adc[p]).to_bits(),
                    "raw {:#06x}",
                    adc[p]
                );
            }
        }
    }

    fn sample(module: usize) -> Readout {
        let adc: [u16; 64] = std::array::from_fn(|p| (module * 100 + p) as u16);
        Readout::new(1_000 + module as u64, 2_000 + module as u64, &adc)
    }

    #[test]
    fn v1_is_byte_exact_at_protocol_offsets() {
        let mut b = EventBuf::new_boxed();
        for m in 0..N_MODULES {
            if m == 3 {
                b.clear_row(m);
            } else {
                b.fill_row(m, &sample(m));
            }
        }
        let h = EventHeader {
            number: 7,
            run: 42,
            timestamp: 1_234,
            arrival_ns: 5_000_000_123,
        };
        let msg = b.encode(Format::V1, &h).to_vec();
        assert_eq!(msg.len(), 16_920);
        let u64_at = |o: usize| u64::from_le_bytes(msg[o..o + 8].try_into().unwrap());
        let f64_at = |o: usize| f64::from_le_bytes(msg[o..o + 8].try_into().unwrap());
        assert_eq!((u64_at(0), u64_at(8), u64_at(16)), (7, 42, 1_234));
        // Row 2, pixel 5 at 24 + (2*64+5)*8.
        assert_eq!(f64_at(24 + (2 * 64 + 5) * 8), adc_to_mv(205));
        // Row 3 missing: NaN, timestamps zero.
        assert!(f64_at(24 + 3 * 64 * 8).is_nan());
        assert_eq!((u64_at(16408 + 3 * 16), u64_at(16408 + 3 * 16 + 8)), (0, 0));
        // Module 31's (primary, aux).
        assert_eq!(
            (u64_at(16408 + 31 * 16), u64_at(16408 + 31 * 16 + 8)),
            (1_031, 2_031)
        );

        let v = EventView::parse(&msg).unwrap();
        assert_eq!(v.format(), Format::V1);
        assert_eq!((v.number(), v.run(), v.timestamp()), (7, Some(42), 1_234));
        assert_eq!(v.mv(2, 5), adc_to_mv(205));
        assert!(!v.has_module(3));
        assert_eq!(v.present_mask(), !(1u32 << 3));
        assert_eq!(v.module_timestamps(31), Some((1_031, 2_031)));
    }

    #[test]
    fn v2_is_byte_exact_at_protocol_offsets() {
        let mut b = EventBuf::new_boxed();
        for m in 0..N_MODULES {
            b.fill_row(m, &sample(m));
        }
        let h = EventHeader {
            number: 9,
            run: 1,
            timestamp: 77,
            arrival_ns: 5_000_000_123,
        };
        let msg = b.encode(Format::V2, &h).to_vec();
        assert_eq!(msg.len(), 16_416);
        let u64_at = |o: usize| u64::from_le_bytes(msg[o..o + 8].try_into().unwrap());
        assert_eq!(
            (u64_at(0), u64_at(8), u64_at(16), u64_at(24)),
            (9, 77, 5, 123)
        );
        let f = f64::from_le_bytes(msg[32 + 8 * (31 * 64 + 63)..][..8].try_into().unwrap());
        assert_eq!(f, adc_to_mv(31 * 100 + 63));
        let v = EventView::parse(&msg).unwrap();
        assert_eq!(
            (v.format(), v.number(), v.run(), v.timestamp()),
            (Format::V2, 9, None, 77)
        );
        // Re-encoding as v1 afterwards still gives a valid v1 message.
        let v1 = b.encode(Format::V1, &h).to_vec();
        assert_eq!(EventView::parse(&v1).unwrap().number(), 9);
    }
}
