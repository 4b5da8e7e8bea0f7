//! The TARGET-C module (TM) datagram: the one place that knows its layout.
//!
//! A TM sends UDP datagrams of `k >= 1` back-to-back 144-byte **readouts**
//! (PROTOCOL.md §1), all fields big-endian. This module owns:
//!
//! * the [`Readout`] layout, cast in place from a receive buffer with
//!   `zerocopy` (no copy, no `unsafe`);
//! * datagram validation ([`parse`]): length, source module, timestamps;
//! * the module number from the source IPv4 address ([`module_of`], §2);
//! * building datagrams for simulators and tests ([`Readout::new`]).
//!
//! It must never allocate, log or keep state: it is called once per datagram
//! on the hot path and by the offline replay alike.

use std::net::Ipv4Addr;

use zerocopy::byteorder::big_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of one readout on the wire.
pub const READOUT_SIZE: usize = 144;
/// Modules in the CHEC-S camera.
pub const N_MODULES: usize = 32;
/// Pixels read out by one module.
pub const N_PIXELS: usize = 64;
/// Readouts per datagram that real modules send.
pub const READOUTS_PER_DATAGRAM: usize = 10;

/// One slow-signal readout of one module, exactly as on the wire.
///
/// | offset | field |
/// |---:|---|
/// | 0 | primary timestamp, ns (camera-wide TACK clock: the event key) |
/// | 8 | raw ADC of pixels 0..31 |
/// | 72 | aux timestamp, ns (module-local clock) |
/// | 80 | raw ADC of pixels 32..63 |
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct Readout {
    primary_ts: U64,
    adc_lo: [U16; 32],
    aux_ts: U64,
    adc_hi: [U16; 32],
}

const _: () = assert!(std::mem::size_of::<Readout>() == READOUT_SIZE);

impl Readout {
    /// A readout with the given timestamps and raw ADC counts (pixel order 0..63).
    pub fn new(primary_ts: u64, aux_ts: u64, adc: &[u16; N_PIXELS]) -> Self {
        let mut r = Readout {
            primary_ts: U64::new(primary_ts),
            adc_lo: [U16::ZERO; 32],
            aux_ts: U64::new(aux_ts),
            adc_hi: [U16::ZERO; 32],
        };
        for (i, &v) in adc.iter().enumerate() {
            r.set_adc(i, v);
        }
        r
    }

    /// Primary (TACK) timestamp in ns: the key that matches readouts into events.
    #[inline]
    pub fn primary_ts(&self) -> u64 {
        self.primary_ts.get()
    }

    /// Auxiliary (module-local) timestamp in ns.
    #[inline]
    pub fn aux_ts(&self) -> u64 {
        self.aux_ts.get()
    }

    /// Raw ADC count of `pixel` (0..64).
    #[inline]
    pub fn adc(&self, pixel: usize) -> u16 {
        if pixel < 32 {
            self.adc_lo[pixel].get()
        } else {
            self.adc_hi[pixel - 32].get()
        }
    }

    /// Raw ADC counts of pixels 0..31 and 32..63, in wire order.
    #[inline]
    pub fn adc_halves(&self) -> (&[U16; 32], &[U16; 32]) {
        (&self.adc_lo, &self.adc_hi)
    }

    /// Sets the raw ADC count of `pixel` (0..64).
    pub fn set_adc(&mut self, pixel: usize, raw: u16) {
        if pixel < 32 {
            self.adc_lo[pixel] = U16::new(raw);
        } else {
            self.adc_hi[pixel - 32] = U16::new(raw);
        }
    }

    /// Replaces both timestamps and keeps the 64 ADC counts: a simulator
    /// re-stamps a cached readout with this instead of encoding its counts
    /// again with [`Readout::new`].
    #[inline]
    pub fn set_timestamps(&mut self, primary_ts: u64, aux_ts: u64) {
        self.primary_ts = U64::new(primary_ts);
        self.aux_ts = U64::new(aux_ts);
    }
}

/// Why a datagram was refused. Each cause has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Zero-length datagram.
    Empty,
    /// Length not a multiple of [`READOUT_SIZE`].
    BadLength,
    /// Larger than the receive buffer: the kernel cut it.
    Truncated,
    /// Source address maps to no module 0..31 (and `--relaxed-ip` is off).
    UnknownSource,
    /// A primary timestamp of zero, or readouts not strictly increasing in time.
    BadTimestamp,
}

impl Reject {
    /// Every cause, in the order counters and summaries list them.
    pub const ALL: [Reject; 5] = [
        Reject::Empty,
        Reject::BadLength,
        Reject::Truncated,
        Reject::UnknownSource,
        Reject::BadTimestamp,
    ];

    /// Short name used in logs, status lines and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Empty => "empty",
            Reject::BadLength => "bad_length",
            Reject::Truncated => "truncated",
            Reject::UnknownSource => "unknown_source",
            Reject::BadTimestamp => "bad_timestamp",
        }
    }

    /// Index into per-cause counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The module number of a datagram's source address (PROTOCOL.md §2).
///
/// `last_octet % 100` must be 0..31: the camera's modules sit at `x.y.z.100`
/// to `x.y.z.131`. With `relaxed` an out-of-range number is folded `% 32`,
/// as the original's relaxed option did.
#[inline]
pub fn module_of(src: Ipv4Addr, relaxed: bool) -> Option<u8> {
    let m = src.octets()[3] % 100;
    if (m as usize) < N_MODULES {
        Some(m)
    } else if relaxed {
        Some(m % N_MODULES as u8)
    } else {
        None
    }
}

/// The source address of module `module` in a camera at `base.100..131`.
pub fn module_addr(base: Ipv4Addr, module: u8) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, 100 + module)
}

/// A validated datagram: which module sent it and its readouts, cast in place.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    pub module: u8,
    pub readouts: &'a [Readout],
}

/// Validates one datagram and casts its payload in place.
///
/// Checks, in order: not empty, length a multiple of 144, not truncated by
/// the receive buffer, a known source module, and primary timestamps that
/// are non-zero and strictly increasing (PROTOCOL.md §1: the readouts of a
/// datagram are consecutive in time). A datagram that fails any check is
/// refused as a whole: a half-trusted datagram would shift rows.
#[inline]
pub fn parse(
    payload: &[u8],
    truncated: bool,
    src: Ipv4Addr,
    relaxed: bool,
) -> Result<Packet<'_>, Reject> {
    if payload.is_empty() && !truncated {
        return Err(Reject::Empty);
    }
    if truncated {
        return Err(Reject::Truncated);
    }
    let readouts = <[Readout]>::ref_from_bytes(payload).map_err(|_| Reject::BadLength)?;
    let module = module_of(src, relaxed).ok_or(Reject::UnknownSource)?;
    let mut prev = 0u64;
    for r in readouts {
        let ts = r.primary_ts();
        if ts <= prev {
            return Err(Reject::BadTimestamp);
        }
        prev = ts;
    }
    Ok(Packet { module, readouts })
}

/// Parses a module set such as `0-31`, `0,2,5-7` into a bit mask.
pub fn parse_module_set(s: &str) -> Result<u32, String> {
    let mut mask = 0u32;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |x: &str| -> Result<usize, String> {
            x.parse::<usize>()
                .ok()
                .filter(|&m| m < N_MODULES)
                .ok_or_else(|| format!("`{x}` is not a module number 0..31"))
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("`{part}` is an empty range"));
        }
        for m in a..=b {
            mask |= 1 << m;
        }
    }
    if mask == 0 {
        return Err(format!("`{s}` names no module"));
    }
    Ok(mask)
}

/// Formats a module mask compactly, e.g. `0-4,6-31`.
pub fn format_module_set(mask: u32) -> String {
    let mut out = String::new();
    let mut m = 0;
    while m < N_MODULES {
        if mask & (1 << m) == 0 {
            m += 1;
            continue;
        }
        let start = m;
        while m + 1 < N_MODULES && mask & (1 << (m + 1)) != 0 {
            m += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == m {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{m}"));
        }
        m += 1;
    }
    if out.is_empty() { "none".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(module_ts: &[u64]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, &ts) in module_ts.iter().enumerate() {
            let adc: [u16; 64] = std::array::from_fn(|p| (i * 64 + p) as u16);
            v.extend_from_slice(Readout::new(ts, ts + 7, &adc).as_bytes());
        }
        v
    }

    const SRC: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 105);

    #[test]
    fn layout_is_big_endian_at_protocol_offsets() {
        let adc: [u16; 64] = std::array::from_fn(|p| 0x0100 + p as u16);
        let r = Readout::new(0x0102030405060708, 0x1112131415161718, &adc);
        let b = r.as_bytes();
        assert_eq!(b.len(), 144);
        assert_eq!(&b[0..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[8..10], &[0x01, 0x00]); // pixel 0
        assert_eq!(&b[70..72], &[0x01, 31]); // pixel 31
        assert_eq!(
            &b[72..80],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(&b[80..82], &[0x01, 32]); // pixel 32
        assert_eq!(&b[142..144], &[0x01, 63]); // pixel 63
    }

    #[test]
    fn set_timestamps_rewrites_both_timestamps_and_no_count() {
        let adc: [u16; 64] = std::array::from_fn(|p| 0xA000 + p as u16);
        let mut r = Readout::new(1, 2, &adc);
        r.set_timestamps(0x0102030405060708, 0x1112131415161718);
        assert_eq!(
            (r.primary_ts(), r.aux_ts()),
            (0x0102030405060708, 0x1112131415161718)
        );
        // Byte for byte what `new` builds with the same counts.
        assert_eq!(
            r.as_bytes(),
            Readout::new(0x0102030405060708, 0x1112131415161718, &adc).as_bytes()
        );
    }

    #[test]
    fn ten_readouts_cast_in_place() {
        let d = datagram(&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        let p = parse(&d, false, SRC, false).unwrap();
        assert_eq!(p.module, 5);
        assert_eq!(p.readouts.len(), 10);
        assert_eq!(p.readouts[3].primary_ts(), 40);
        assert_eq!(p.readouts[3].aux_ts(), 47);
        assert_eq!(p.readouts[3].adc(63), 3 * 64 + 63);
        // In place: the readout lives inside the datagram buffer.
        assert_eq!(p.readouts.as_ptr() as usize, d.as_ptr() as usize);
    }

    #[test]
    fn a_datagram_of_143_bytes_is_bad_length() {
        let d = datagram(&[10]);
        assert_eq!(
            parse(&d[..143], false, SRC, false).err(),
            Some(Reject::BadLength)
        );
        assert_eq!(
            parse(&d[..1], false, SRC, false).err(),
            Some(Reject::BadLength)
        );
        let mut long = d.clone();
        long.push(0);
        assert_eq!(
            parse(&long, false, SRC, false).err(),
            Some(Reject::BadLength)
        );
    }

    #[test]
    fn empty_and_truncated_are_their_own_causes() {
        assert_eq!(parse(&[], false, SRC, false).err(), Some(Reject::Empty));
        let d = datagram(&[10]);
        assert_eq!(parse(&d, true, SRC, false).err(), Some(Reject::Truncated));
    }

    #[test]
    fn module_numbers_follow_the_last_octet() {
        let ip = |o| Ipv4Addr::new(10, 0, 0, o);
        assert_eq!(module_of(ip(100), false), Some(0));
        assert_eq!(module_of(ip(131), false), Some(31));
        assert_eq!(module_of(ip(1), false), Some(1));
        assert_eq!(module_of(ip(132), false), None);
        assert_eq!(module_of(ip(99), false), None);
        assert_eq!(module_of(ip(132), true), Some(0));
        assert_eq!(module_of(ip(99), true), Some(99 % 32));
        assert_eq!(module_addr(ip(1), 7), ip(107));
    }

    #[test]
    fn unknown_source_is_refused_unless_relaxed() {
        let d = datagram(&[10]);
        let far = Ipv4Addr::new(127, 0, 0, 140);
        assert_eq!(
            parse(&d, false, far, false).err(),
            Some(Reject::UnknownSource)
        );
        assert_eq!(parse(&d, false, far, true).unwrap().module, 8);
    }

    #[test]
    fn nonsense_timestamps_are_refused() {
        for ts in [&[0u64][..], &[10, 10], &[10, 9], &[10, 20, 15]] {
            let d = datagram(ts);
            assert_eq!(
                parse(&d, false, SRC, false).err(),
                Some(Reject::BadTimestamp),
                "{ts:?}"
            );
        }
    }
}
