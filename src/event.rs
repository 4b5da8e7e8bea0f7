//! The camera event: ADC conversion and the two published wire formats.
//!
//! This module owns PROTOCOL.md §1's ADC → mV conversion and the byte layout
//! of the published messages: wire format v1 (`SSEvent`, §4, 16 920 bytes,
//! the default) and v2 (`SSReadout`, §5, 16 416 bytes).
//!
//! The builder assembles each event directly in an [`EventBuf`], whose
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
//! Decoding for subscribers ([`EventView`]) casts a received message in place.
//! Nothing here allocates, logs or blocks.

use zerocopy::byteorder::little_endian::{F64, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::packet::{N_MODULES, N_PIXELS, Readout};

/// Millivolts per ADC count: PROTOCOL.md §1 writes `mV = v * 0.03815 * 2.0`.
pub const MV_PER_COUNT: f64 = 0.03815 * 2.0;

/// Raw ADC count to millivolts (PROTOCOL.md §1): flip the top bit, scale.
///
/// `raw ^ 0x8000` is the original's "if raw < 0x8000 then raw + 0x8000 else
/// raw & 0x7FFF".
#[inline(always)]
pub fn adc_to_mv(raw: u16) -> f64 {
    (raw ^ 0x8000) as f64 * MV_PER_COUNT
}

/// Converts 32 big-endian raw counts to little-endian mV.
///
/// On x86-64 with explicit SSE2 (part of the x86-64 baseline): swap bytes,
/// flip the top bit, widen, convert and scale eight counts at a time, and
/// write the result with non-temporal stores. An event buffer is written
/// once per event, 40 ms after it was last touched, so its lines are no
/// longer in cache; an ordinary store first reads each line it writes
/// ("read for ownership"), a non-temporal store writes whole lines without
/// reading them. Measured: building a camera burst of 32 datagrams in one
/// batch, 1.40 → 1.10 µs per datagram. Other threads may only read the
/// rows after [`fence_rows`]. The result is bit-identical to
/// [`adc_to_mv`] (the widening and conversion are exact, the product is
/// one IEEE multiplication either way).
#[cfg(target_arch = "x86_64")]
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
/// flip, widen, scale), then stored as bytes (`array::map` here was not
/// inlined in the daemon's build and cost 40 % of a drain: measured).
#[cfg(not(target_arch = "x86_64"))]
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
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline; a fence has no operands.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// The raw ADC count whose conversion is nearest to `mv` (for simulators).
///
/// `mv / MV_PER_COUNT` rounded half away from zero and clamped to 0..=65535,
/// then the top bit flipped. A simulator calls this for every pixel value it
/// sends, so it rounds without libm's `round` (a function call on x86-64's
/// baseline instruction set) and with float operations only, which a loop
/// over many values turns into SIMD instructions; the result is bit-identical
/// to `(mv / MV_PER_COUNT).round().clamp(0.0, 65535.0) as u16 ^ 0x8000`.
#[inline]
pub fn mv_to_adc(mv: f64) -> u16 {
    round_count(mv / MV_PER_COUNT) ^ 0x8000
}

/// `x.round().clamp(0.0, 65535.0) as u16`, with float additions only.
///
/// Clamping first changes nothing: `round` is monotonic and keeps 0 and
/// 65535 (NaN gives 0 either way). For `0 <= x <= 65535`, `x + 2^52` lands
/// where doubles are whole numbers, so `r = (x + 2^52) - 2^52` is `x`
/// rounded to nearest, ties to even, exactly; it differs from rounding half
/// away from zero only at a tie rounded down, where `x - r` is 0.5 (`x - r`
/// is exact: `r = 0`, or `r/2 <= x <= 2r` and Sterbenz's lemma applies). The
/// whole number `n < 2^16` is then the low mantissa bits of `n + 2^52`. (The shorter `(x + 0.5) as u16` is not exact:
/// `0.49999999999999994 + 0.5` rounds to 1.0.)
#[inline(always)]
fn round_count(x: f64) -> u16 {
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    // `>` and `<` rather than `clamp`: NaN goes to 0, and they map to SIMD min/max.
    let x = if x > 0.0 { x } else { 0.0 };
    let x = if x < u16::MAX as f64 {
        x
    } else {
        u16::MAX as f64
    };
    let r = (x + TWO_52) - TWO_52;
    let n = if x - r == 0.5 { r + 1.0 } else { r };
    (n + TWO_52).to_bits() as u16
}

/// Which wire format to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `SSEvent`, PROTOCOL.md §4: 16 920 bytes with per-module timestamps.
    #[default]
    V1,
    /// `SSReadout`, PROTOCOL.md §5: 16 416 bytes.
    V2,
}

impl Format {
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

/// Why a received message is not an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    pub len: usize,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a message of {} bytes is neither wire format v1 ({V1_LEN} bytes) nor v2 ({V2_LEN} bytes)",
            self.len
        )
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
    /// Recognises the format by the message length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let err = DecodeError { len: bytes.len() };
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
    fn adc_conversion_matches_the_protocol_formula_for_every_count() {
        for raw in 0..=u16::MAX {
            let v = if raw < 0x8000 {
                raw as u32 + 0x8000
            } else {
                (raw & 0x7FFF) as u32
            };
            let expected = v as f64 * 0.03815 * 2.0;
            assert_eq!(
                adc_to_mv(raw).to_bits(),
                expected.to_bits(),
                "raw {raw:#06x}"
            );
        }
        assert_eq!(adc_to_mv(0x8000), 0.0);
        assert_eq!(adc_to_mv(0x0000), 32768.0 * 0.03815 * 2.0);
    }

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

    #[test]
    fn mv_to_adc_inverts_the_conversion() {
        for raw in [0u16, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 12345] {
            assert_eq!(mv_to_adc(adc_to_mv(raw)), raw);
        }
    }

    /// The next double towards +∞ (`f64::next_up` needs Rust 1.86).
    fn next_up(x: f64) -> f64 {
        match x {
            0.0 => f64::from_bits(1),
            x if x > 0.0 => f64::from_bits(x.to_bits() + 1),
            x => f64::from_bits(x.to_bits() - 1),
        }
    }

    /// The next double towards -∞.
    fn next_down(x: f64) -> f64 {
        -next_up(-x)
    }

    /// What `mv_to_adc` computed before it stopped calling libm's `round`.
    fn mv_to_adc_with_round(mv: f64) -> u16 {
        ((mv / MV_PER_COUNT).round().clamp(0.0, u16::MAX as f64) as u16) ^ 0x8000
    }

    #[test]
    fn rounding_a_count_is_round_at_every_half_and_its_neighbours() {
        let reference = |x: f64| x.round().clamp(0.0, u16::MAX as f64) as u16;
        let check = |x: f64| assert_eq!(round_count(x), reference(x), "x = {x:e} ({x:?})");
        // Every count from below 0 to above 65535, its half-way points and
        // the 4 doubles on either side of each.
        for n in -3..=65_538i32 {
            for base in [n as f64, n as f64 + 0.5] {
                let (mut up, mut down) = (base, base);
                check(base);
                for _ in 0..4 {
                    (up, down) = (next_up(up), next_down(down));
                    check(up);
                    check(down);
                }
            }
        }
        // The usual traps, and values outside the range.
        for x in [
            0.49999999999999994,
            0.5,
            -0.0,
            -0.5,
            -0.49999999999999994,
            1.5,
            2.5,
            65_534.5,
            65_535.49999999999,
            65_535.5,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            5e-324,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            check(x);
        }
    }

    #[test]
    fn mv_to_adc_is_bit_identical_to_rounding_with_round() {
        let check = |mv: f64| {
            assert_eq!(mv_to_adc(mv), mv_to_adc_with_round(mv), "{mv:?} mV");
        };
        // Densely over the whole count range and beyond (a count is 0.0763
        // mV: about 18 samples per count, at steps unrelated to it), and
        // the conversion of every count with its neighbours.
        let mut mv = -10.0;
        while mv < 5_010.0 {
            check(mv);
            mv += 0.004_172_9;
        }
        for raw in 0..=u16::MAX {
            let v = adc_to_mv(raw);
            check(v);
            check(next_up(v));
            check(next_down(v));
            check(v + 0.5 * MV_PER_COUNT);
            check(next_down(v + 0.5 * MV_PER_COUNT));
        }
        // Any double at all: 1 M bit patterns (NaNs, infinities, subnormals).
        let mut z = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..1_000_000 {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut h = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            check(f64::from_bits(h ^ (h >> 31)));
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

    #[test]
    fn wrong_lengths_do_not_decode() {
        for n in [0, 16_919, 16_921, 16_415] {
            assert_eq!(
                EventView::parse(&vec![0; n]).err(),
                Some(DecodeError { len: n })
            );
        }
    }
}
