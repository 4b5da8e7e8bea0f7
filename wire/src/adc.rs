//! ADC counts ↔ millivolts (PROTOCOL.md §1), both ways.
//!
//! This module owns the conversion every reader of slow-signal data must
//! agree on: [`adc_to_mv`] for receivers, [`mv_to_adc`] for simulators. It
//! is pure arithmetic: nothing here allocates, logs or keeps state.

/// Millivolts per ADC count: PROTOCOL.md §1 writes `mV = v * 0.03815 * 2.0`.
pub const MV_PER_COUNT: f64 = 0.03815 * 2.0;

/// The largest value [`adc_to_mv`] gives (count 65535): every pixel value
/// of a module read out lies in `0.0..=MV_MAX`.
pub const MV_MAX: f64 = u16::MAX as f64 * MV_PER_COUNT;

/// Raw ADC count to millivolts (PROTOCOL.md §1): flip the top bit, scale.
///
/// `raw ^ 0x8000` is the original's "if raw < 0x8000 then raw + 0x8000 else
/// raw & 0x7FFF".
#[inline(always)]
pub fn adc_to_mv(raw: u16) -> f64 {
    (raw ^ 0x8000) as f64 * MV_PER_COUNT
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
}
