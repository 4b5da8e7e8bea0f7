//! tm-ss-sim: a simulated CHEC-S camera, TARGET-C modules sending
//! slow-signal datagrams.
//!
//! This crate replaces the original Python `tm-ss-sim` (its binary is the
//! command line; `ssdaqd --demo` and the tests embed this library). It
//! depends on the protocol crate (`ssdaq_wire`) only. It owns:
//!
//! * a deterministic **pixel model** ([`pixel_adc`], [`aux_ts`], [`readout`],
//!   [`datagram`]): every value a simulated module sends is a pure function of
//!   `(seed, module, pixel, primary timestamp)`, so a test can recompute and
//!   verify every byte it receives;
//! * the **timestamp grid** ([`Grid`]): readout timestamps are multiples of
//!   the readout spacing on the wall clock, so all simulated modules, and two
//!   simulator processes at the same rate, agree on them (PROTOCOL.md §1: the
//!   primary timestamps of one readout are equal across the camera);
//! * **pacing** ([`run`]): one socket per module bound to its camera source
//!   address `127.0.0.(100+m)` (PROTOCOL.md §2), a frame sent right after the
//!   wall clock passes its last readout, sleeping in between; or a **flood**
//!   with `sendmmsg` (or UDP GSO) on a virtual clock, as fast as the core goes;
//! * the **pixel refresh rule** ([`refresh_ts`]): evaluating the model is most
//!   of the simulator's own work, so a paced module re-evaluates it at most
//!   once per [`SimConfig::pixel_refresh`] of camera time (default 40 ms, the
//!   real camera's frame period: at ≤ 25 datagrams/s/module every datagram is
//!   exact) and in between re-stamps the values of the last refresh frame
//!   with each frame's own timestamps; a flood refreshes every
//!   [`FLOOD_REFRESH_FRAMES`] frames. Timestamps are always exact;
//! * **fault injection** ([`Faults`]): loss, dead modules, skipped frames,
//!   malformed, duplicated and reordered datagrams, timestamp jumps — each
//!   seeded and counted, so a test knows exactly what the receiver must see.
//!
//! The readout byte layout is not known here: readouts are built with
//! [`packet::Readout::new`], re-stamped with [`packet::Readout::set_timestamps`]
//! and written with zerocopy. This module must never busy-wait at a paced
//! rate (it sleeps between frames), never allocate per datagram, and never
//! print: [`run`] returns [`SimStats`] and callers decide what to show.
//!
//! Its own cost, paced at the real rate and at 100×, is in
//! docs/performance.md ("The simulator").

pub mod control;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zerocopy::IntoBytes;

use ssdaq_wire::adc::mv_to_adc;
use ssdaq_wire::packet::{self, N_MODULES, N_PIXELS, READOUT_SIZE, Readout};

/// The wall clock (CLOCK_REALTIME) now, in ns since the epoch: the camera's
/// timestamps are on it.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Datagrams per second per module of the reference simulator (PROTOCOL.md §3).
pub const DEFAULT_RATE: f64 = 25.0;
/// The DAQ host's UDP port.
pub const DEFAULT_PORT: u16 = 2009;
/// Datagrams per `sendmmsg` call (or per GSO send) in flood mode.
pub const DEFAULT_BATCH: usize = 32;
/// Most readouts per datagram: 28 × 144 = 4032 bytes fit a 4096-byte receive buffer.
pub const MAX_READOUTS: usize = 28;
/// Most datagrams per `sendmmsg` call (the kernel's `UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;
/// Length of the malformed datagram sent by [`Faults::malformed_every`]: one
/// byte short of a readout.
pub const MALFORMED_LEN: usize = READOUT_SIZE - 1;
/// Offset of the module-local (aux) clock per module number, ns: module `m`'s
/// local clock reads `(m + 1)` ms ahead of the camera clock. See [`aux_ts`].
pub const AUX_STEP_NS: u64 = 1_000_000;
/// In flood mode the pixel values of a module are re-evaluated from the model
/// once every this many frames (timestamps are always exact). See [`run`].
pub const FLOOD_REFRESH_FRAMES: u64 = 256;
/// In paced mode the pixel values are re-evaluated from the model once per
/// this much camera time ([`SimConfig::pixel_refresh`], [`refresh_ts`]): one
/// frame period of the real camera, so at ≤ 25 datagrams/s/module every
/// datagram is exact.
pub const DEFAULT_PIXEL_REFRESH: Duration = Duration::from_millis(40);

/// Longest single sleep while pacing, so a stop request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// Segments the kernel accepts in one UDP GSO send (`UDP_MAX_SEGMENTS`, 64
/// on kernels before 6.10).
const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

// ---------------------------------------------------------------------------
// The pixel model
// ---------------------------------------------------------------------------

/// splitmix64's output function: a fast, well-mixed 64-bit hash.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a seed and two values.
#[inline]
fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed) ^ a) ^ b)
}

/// Uniform in [0, 1) from the top 53 bits of a hash.
#[inline]
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A smooth periodic wave of amplitude 1 at cycle position `pos` (a full
/// cycle is 2^64): two parabolic arcs, within 6 % of `sin`, continuous with
/// its slope. It costs a few integer and float operations (no `sin`, no
/// `floor`) and is exactly reproducible on every IEEE platform.
#[inline]
fn wave(pos: u64) -> f64 {
    let h = unit(pos << 1); // position within the half cycle, [0, 1)
    let arc = 4.0 * h * (1.0 - h); // 0 → 1 → 0
    if pos >> 63 == 0 { arc } else { -arc }
}

/// Cycle-position step per ns of a wave of period `period_s` (2^64 = one cycle).
fn cycle_step(period_s: f64) -> u64 {
    ((1u128 << 64) / (period_s * 1e9) as u128) as u64
}

/// Baseline range of a pixel, mV.
const BASELINE_MV: (f64, f64) = (250.0, 650.0);
/// Fast wave: amplitude (mV) and period (s) ranges.
const WAVE1_MV: (f64, f64) = (10.0, 50.0);
const WAVE1_S: (f64, f64) = (30.0, 120.0);
/// Slow wave: amplitude (mV) and period (s) ranges.
const WAVE2_MV: (f64, f64) = (40.0, 150.0);
const WAVE2_S: (f64, f64) = (300.0, 1200.0);
/// Readout-to-readout noise, ± mV.
const NOISE_MV: f64 = 1.5;

#[inline]
fn lerp((lo, hi): (f64, f64), u: f64) -> f64 {
    lo + (hi - lo) * u
}

/// The slow signal of one pixel: its parameters, derived from
/// `(seed, module, pixel)` once.
#[derive(Clone, Copy, Debug)]
struct PixelModel {
    baseline_mv: f64,
    amp1_mv: f64,
    /// Cycle position (2^64 = one cycle) of the fast wave: step per ns, phase.
    step1: u64,
    phase1: u64,
    amp2_mv: f64,
    step2: u64,
    phase2: u64,
    noise_key: u64,
}

impl PixelModel {
    fn new(seed: u64, module: u8, pixel: usize) -> Self {
        let key = hash3(seed, module as u64, pixel as u64);
        let u = |salt: u64| unit(mix(key ^ salt));
        PixelModel {
            baseline_mv: lerp(BASELINE_MV, u(1)),
            amp1_mv: lerp(WAVE1_MV, u(2)),
            step1: cycle_step(lerp(WAVE1_S, u(3))),
            phase1: mix(key ^ 4),
            amp2_mv: lerp(WAVE2_MV, u(5)),
            step2: cycle_step(lerp(WAVE2_S, u(6))),
            phase2: mix(key ^ 7),
            noise_key: mix(key ^ 8) | 1,
        }
    }

    /// The pixel's value at `ts` (ns), mV: baseline + two slow waves + noise.
    #[inline]
    fn mv(&self, ts: u64) -> f64 {
        // One multiply-xorshift: plenty for noise, and cheap: a full camera
        // at the real rate evaluates 64 × 10 × 800 = 512 000 values/s.
        let h = ts.wrapping_mul(self.noise_key);
        let noise = (2.0 * unit(h ^ (h >> 29)) - 1.0) * NOISE_MV;
        self.baseline_mv
            + self.amp1_mv * wave(ts.wrapping_mul(self.step1).wrapping_add(self.phase1))
            + self.amp2_mv * wave(ts.wrapping_mul(self.step2).wrapping_add(self.phase2))
            + noise
    }
}

/// The 64 pixel models of one module.
#[derive(Clone, Debug)]
struct ModuleModel {
    module: u8,
    pixels: [PixelModel; N_PIXELS],
    /// The same parameters, one array each, for [`ModuleModel::fill_values`].
    lanes: Box<Lanes>,
}

/// The parameters of a module's 64 pixels as one array per parameter, so
/// that evaluating the 64 pixels of a readout is one loop of identical steps
/// over arrays, which the compiler turns into SIMD instructions.
#[derive(Clone, Debug)]
struct Lanes {
    baseline_mv: [f64; N_PIXELS],
    amp1_mv: [f64; N_PIXELS],
    amp2_mv: [f64; N_PIXELS],
    noise_key: [u64; N_PIXELS],
    step1: [u64; N_PIXELS],
    phase1: [u64; N_PIXELS],
    step2: [u64; N_PIXELS],
    phase2: [u64; N_PIXELS],
}

impl Lanes {
    fn new(pixels: &[PixelModel; N_PIXELS]) -> Self {
        Lanes {
            baseline_mv: pixels.map(|p| p.baseline_mv),
            amp1_mv: pixels.map(|p| p.amp1_mv),
            amp2_mv: pixels.map(|p| p.amp2_mv),
            noise_key: pixels.map(|p| p.noise_key),
            step1: pixels.map(|p| p.step1),
            phase1: pixels.map(|p| p.phase1),
            step2: pixels.map(|p| p.step2),
            phase2: pixels.map(|p| p.phase2),
        }
    }
}

/// [`unit`] without converting a 64-bit integer to a float, which x86-64
/// SIMD cannot do before AVX-512: `x >> 12` as the mantissa of a number in
/// [1, 2), minus 1, is the top 52 bits × 2^-52 exactly, and bit 11 adds
/// 2^-53 or nothing. The sum is `(x >> 11) × 2^-53`, a 53-bit number, so it
/// is exact: bit for bit [`unit`]'s value.
#[inline(always)]
fn unit_lanes(x: u64) -> f64 {
    const ONE: u64 = 0x3FF0_0000_0000_0000; // 1.0
    const HALF_ULP: u64 = 0x3CA0_0000_0000_0000; // 2^-53
    let top52 = f64::from_bits(ONE | (x >> 12)) - 1.0;
    let bit11 = f64::from_bits(((x >> 11) & 1).wrapping_neg() & HALF_ULP);
    top52 + bit11
}

/// [`wave`] with [`unit_lanes`], the sign flipped by a bit operation instead
/// of a branch: bit for bit [`wave`]'s value.
#[inline(always)]
fn wave_lanes(pos: u64) -> f64 {
    let h = unit_lanes(pos << 1);
    let arc = 4.0 * h * (1.0 - h);
    f64::from_bits(arc.to_bits() ^ (pos & 1 << 63))
}

impl ModuleModel {
    fn new(seed: u64, module: u8) -> Self {
        let pixels = std::array::from_fn(|p| PixelModel::new(seed, module, p));
        ModuleModel {
            module,
            lanes: Box::new(Lanes::new(&pixels)),
            pixels,
        }
    }

    fn adc(&self, ts: u64) -> [u16; N_PIXELS] {
        std::array::from_fn(|p| mv_to_adc(self.pixels[p].mv(ts)))
    }

    fn readout(&self, ts: u64) -> Readout {
        Readout::new(ts, aux_ts(self.module, ts), &self.adc(ts))
    }

    /// Makes `out[j]` a readout with the model's ADC counts at `first_ts + j
    /// × spacing_ns` (wrapping) and zero timestamps: the counts of
    /// [`ModuleModel::adc`], bit for bit, at a fraction of the cost. All 64
    /// pixels of a readout are evaluated together from [`Lanes`], and from
    /// one readout to the next the noise hash input and the wave positions
    /// (each linear in the timestamp modulo 2^64) step by addition. On
    /// x86-64 CPUs with AVX2 the same code runs compiled for AVX2 (four
    /// values per instruction instead of two); the arithmetic is the same
    /// IEEE operations either way, so the results are too.
    fn fill_values(&self, first_ts: u64, spacing_ns: u64, out: &mut [Readout]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.fill_values_avx2(first_ts, spacing_ns, out) };
        }
        self.fill_values_baseline(first_ts, spacing_ns, out);
    }

    /// [`ModuleModel::fill_values_baseline`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_values_avx2(&self, first_ts: u64, spacing_ns: u64, out: &mut [Readout]) {
        self.fill_values_baseline(first_ts, spacing_ns, out);
    }

    /// [`ModuleModel::fill_values`] for any CPU; inlined into each caller, so
    /// it is compiled for the instruction set the caller enables.
    #[inline(always)]
    fn fill_values_baseline(&self, first_ts: u64, spacing_ns: u64, out: &mut [Readout]) {
        let l = &*self.lanes;
        let linear = |t: u64, mul: &[u64; N_PIXELS], add: Option<&[u64; N_PIXELS]>| {
            let add = add.unwrap_or(&[0; N_PIXELS]);
            std::array::from_fn(|p| t.wrapping_mul(mul[p]).wrapping_add(add[p]))
        };
        // Noise hash input and wave positions of each pixel at `first_ts`,
        // and their steps from one readout to the next.
        let mut h: [u64; N_PIXELS] = linear(first_ts, &l.noise_key, None);
        let mut pos1: [u64; N_PIXELS] = linear(first_ts, &l.step1, Some(&l.phase1));
        let mut pos2: [u64; N_PIXELS] = linear(first_ts, &l.step2, Some(&l.phase2));
        let dh: [u64; N_PIXELS] = linear(spacing_ns, &l.noise_key, None);
        let d1: [u64; N_PIXELS] = linear(spacing_ns, &l.step1, None);
        let d2: [u64; N_PIXELS] = linear(spacing_ns, &l.step2, None);
        for r in out.iter_mut() {
            // `PixelModel::mv`'s arithmetic, operation for operation.
            let counts = std::array::from_fn(|p| {
                let noise = (2.0 * unit_lanes(h[p] ^ (h[p] >> 29)) - 1.0) * NOISE_MV;
                mv_to_adc(
                    l.baseline_mv[p]
                        + l.amp1_mv[p] * wave_lanes(pos1[p])
                        + l.amp2_mv[p] * wave_lanes(pos2[p])
                        + noise,
                )
            });
            *r = Readout::new(0, 0, &counts);
            for p in 0..N_PIXELS {
                h[p] = h[p].wrapping_add(dh[p]);
                pos1[p] = pos1[p].wrapping_add(d1[p]);
                pos2[p] = pos2[p].wrapping_add(d2[p]);
            }
        }
    }
}

/// Raw ADC count of `pixel` (0..64) of `module` at primary timestamp
/// `primary_ts` (ns): the simulated camera's whole pixel model.
///
/// A pure function. The value in mV is a per-pixel baseline (250..650 mV)
/// plus two slow waves with per-pixel amplitude and phase — one with a period
/// of 30..120 s and ±10..50 mV, one of 5..20 min and ±40..150 mV — plus
/// ±1.5 mV of noise hashed from the timestamp; so values stay within about
/// 50..850 mV, wander slowly over time and differ between pixels. The mV are
/// converted with [`mv_to_adc`], the inverse of the DAQ's conversion.
pub fn pixel_adc(seed: u64, module: u8, pixel: usize, primary_ts: u64) -> u16 {
    debug_assert!(pixel < N_PIXELS, "pixel {pixel} out of range 0..{N_PIXELS}");
    mv_to_adc(PixelModel::new(seed, module, pixel).mv(primary_ts))
}

/// Module `module`'s local (aux) clock at primary timestamp `primary_ts`:
/// a fixed offset of `(module + 1) ×` [`AUX_STEP_NS`] (1 ms) ahead, so the aux
/// timestamps of one readout differ between modules while the primary ones agree.
pub fn aux_ts(module: u8, primary_ts: u64) -> u64 {
    primary_ts.wrapping_add((module as u64 + 1) * AUX_STEP_NS)
}

/// The readout `module` sends at `primary_ts`: [`aux_ts`] and [`pixel_adc`]
/// of all 64 pixels.
pub fn readout(seed: u64, module: u8, primary_ts: u64) -> Readout {
    ModuleModel::new(seed, module).readout(primary_ts)
}

/// Writes `module`'s datagram of `k` readouts at `first_ts`,
/// `first_ts + spacing_ns`, … into `out`, replacing its contents (its
/// allocation is reused).
pub fn datagram(
    seed: u64,
    module: u8,
    first_ts: u64,
    spacing_ns: u64,
    k: usize,
    out: &mut Vec<u8>,
) {
    let model = ModuleModel::new(seed, module);
    out.clear();
    for j in 0..k as u64 {
        out.extend_from_slice(model.readout(first_ts + j * spacing_ns).as_bytes());
    }
}

/// The paced-mode pixel refresh rule: the first timestamp of the frame whose
/// pixel values a datagram starting at `first_ts` carries, for frames
/// `period_ns` apart and a refresh interval of `refresh_ns` camera time.
///
/// Camera time is cut into intervals `[n·refresh_ns, (n+1)·refresh_ns)`.
/// The refresh frame of an interval is the first frame on the datagram's
/// grid (`first_ts` minus whole periods) that starts in it — the first one
/// sent in it, except in a run's first interval, where it may precede the
/// run. A datagram carries its refresh frame's values: readout `j` has the
/// ADC counts of [`readout`] at `refresh_ts + j × spacing`, and its own
/// timestamps. So values are less than `refresh_ns` of camera time old, all
/// modules (sharing the grid) refresh on the same frames, and with
/// `period_ns >= refresh_ns` (or `refresh_ns = 0`) every datagram is exact:
/// the result is `first_ts` itself.
///
/// A pure function, like the model, so a receiver can verify every value.
pub fn refresh_ts(first_ts: u64, period_ns: u64, refresh_ns: u64) -> u64 {
    if refresh_ns <= period_ns {
        return first_ts;
    }
    let into_window = first_ts % refresh_ns;
    first_ts - into_window / period_ns * period_ns
}

// ---------------------------------------------------------------------------
// The timestamp grid
// ---------------------------------------------------------------------------

/// The camera-wide timestamp grid: readout `n` is at `n × spacing_ns` ns on
/// the wall clock (CLOCK_REALTIME), frame `g` (one datagram per module)
/// carries readouts `g·k .. g·k + k - 1`.
///
/// Everything that shares a rate and `k` shares the grid: all simulated
/// modules, and two simulator processes started independently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    spacing_ns: u64,
    readouts: usize,
}

impl Grid {
    /// The grid of `rate` datagrams/s/module with `readouts` per datagram:
    /// spacing `1e9 / (rate × readouts)` ns, rounded to whole ns (at least 1).
    pub fn new(rate: f64, readouts: usize) -> Self {
        let readouts = readouts.max(1);
        let spacing = (1e9 / (rate * readouts as f64)).round();
        let spacing_ns = if spacing.is_finite() && spacing >= 1.0 {
            spacing as u64
        } else {
            1
        };
        Grid {
            spacing_ns,
            readouts,
        }
    }

    /// ns between consecutive readouts.
    pub fn spacing_ns(&self) -> u64 {
        self.spacing_ns
    }

    /// Readouts per frame.
    pub fn readouts(&self) -> usize {
        self.readouts
    }

    /// ns between consecutive frames.
    pub fn period_ns(&self) -> u64 {
        self.spacing_ns * self.readouts as u64
    }

    /// Primary timestamp of frame `g`'s first readout.
    pub fn first_ts(&self, g: u64) -> u64 {
        g * self.period_ns()
    }

    /// Primary timestamp of frame `g`'s last readout: the frame is sent right
    /// after the wall clock passes it.
    pub fn last_ts(&self, g: u64) -> u64 {
        self.first_ts(g) + (self.readouts as u64 - 1) * self.spacing_ns
    }

    /// The first frame whose last readout is at or after `t_ns`.
    pub fn frame_at(&self, t_ns: u64) -> u64 {
        let g = t_ns / self.period_ns();
        if self.last_ts(g) < t_ns { g + 1 } else { g }
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Faults to inject, all off by default. Frames are numbered per run: frame 0
/// is the first datagram each module sends, frame `f` its `(f+1)`-th. "Every
/// Nth" means frames `N-1, 2N-1, …` (the Nth, 2Nth … datagram); 0 is off.
/// Module numbers are camera module numbers (0..31), not indices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Drop each frame's datagram with this probability (0..=1), decided by
    /// [`loss_drops`]`(seed, loss, module, frame)`: the same seed drops the
    /// same datagrams, in paced and flood mode alike.
    pub loss: f64,
    /// Modules that never send (their frames count as dropped).
    pub dead_modules: Vec<u8>,
    /// `(module, frame)`: that module omits that frame's datagram, as if lost.
    pub skip: Vec<(u8, u64)>,
    /// Every Nth frame of each module, additionally send a datagram of
    /// [`MALFORMED_LEN`] = 143 bytes (the datagram's first 143 bytes), right
    /// after that frame's datagram slot (also when that datagram was dropped).
    pub malformed_every: u64,
    /// Send every Nth datagram of each module twice, back to back.
    pub duplicate_every: u64,
    /// Swap datagram N and N+1 of each module (frames `N-1` and `N`, then
    /// `2N-1` and `2N`, …): the first is held back and sent right after the
    /// second. A held datagram whose successor is dropped is sent in its
    /// successor's slot; one held at the end of the run is sent at the end.
    pub reorder_every: u64,
    /// `(module, frame, delta_ns)`: from that frame on, the module's primary
    /// timestamps are shifted by `delta_ns` (a restarted module, a clock jump).
    /// Jumps of one module add up. The shifted readouts are exactly
    /// [`readout`]`(seed, module, shifted_ts)`: aux clock and pixel values follow.
    pub ts_jump: Vec<(u8, u64, i64)>,
    /// `(module, at_secs, delta_ns)`: one extra datagram from the module, at
    /// the frame due `at_secs` into the run, stamped `delta_ns` off (what a
    /// stray host taken as that module, or a corrupt clock word, sends).
    pub stray: Vec<(u8, f64, i64)>,
    /// `(module, frame, delta_ns, k)`: frames `frame .. frame+k` of the
    /// module are stamped `delta_ns` off, then it is back on time.
    pub glitch: Vec<(u8, u64, i64, u64)>,
    /// `(module, delta_ns)`: every timestamp of the module is `delta_ns` off.
    pub skew: Vec<(u8, i64)>,
    /// Send each datagram twice, back to back, with this probability
    /// (decided per module and frame from the seed, as `loss` is).
    pub duplicate: f64,
    /// `(p, k)`: hold a datagram back with probability `p` and send it
    /// after the next `1..=k` datagram slots of its module (k ≤
    /// [`MAX_REORDER_DEPTH`]); one held at a time.
    pub reorder: (f64, u64),
    /// Replace a datagram, with this probability, by a corrupt one the
    /// receiver must refuse ([`Corruption`]): a wrong length, the datagram
    /// cut inside a readout, or scrambled bytes with a zeroed clock word.
    pub corrupt: f64,
    /// Datagrams per second from hosts outside the camera,
    /// `a.b.c.200`..`a.b.c.203` of the source network, carrying what module
    /// 0 sends (paced mode, with bound sources).
    pub foreign: f64,
    /// `(module, from_secs, to_secs)`: the module sends nothing in that
    /// part of the run (its frames count as dropped), then comes back.
    pub silent: Vec<(u8, f64, f64)>,
    /// `(module, at_secs)`: the module restarts: from that frame on its
    /// timestamps start again from those of the run's first frame.
    pub restart: Vec<(u8, f64)>,
}

/// The longest a `--reorder` datagram is held back, in datagram slots.
pub const MAX_REORDER_DEPTH: u64 = 4;

/// First of the [`Faults::foreign`] hosts' last octets, and how many.
pub const FOREIGN_FIRST_OCTET: u8 = 200;
pub const FOREIGN_HOSTS: u8 = 4;

/// How a [`Faults::corrupt`] datagram is broken; every kind is refused by
/// a receiver that checks lengths and timestamps (PROTOCOL.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Random bytes, shorter than a datagram and not a whole number of readouts.
    BadLength(usize),
    /// The real datagram cut inside a readout.
    Truncated(usize),
    /// Random bytes of a whole datagram's length, the first readout's
    /// primary timestamp zero.
    Scrambled,
}

/// What [`Faults::corrupt`] makes of `module`'s frame `frame` in a run
/// seeded with `seed`, for datagrams of `frame_len` bytes (a pure function).
pub fn corruption(seed: u64, module: u8, frame: u64, frame_len: usize) -> Corruption {
    let h = hash3(seed ^ 0xC0_88_07, module as u64, frame);
    let r = (h >> 8) as usize;
    match h % 3 {
        0 => {
            // Shorter than a whole datagram (flood mode's slots hold one).
            let mut len = 1 + r % (frame_len - 1);
            if len % READOUT_SIZE == 0 {
                len -= 1;
            }
            Corruption::BadLength(len)
        }
        1 => Corruption::Truncated(
            (r % (frame_len / READOUT_SIZE)) * READOUT_SIZE + 1 + (r >> 16) % (READOUT_SIZE - 1),
        ),
        _ => Corruption::Scrambled,
    }
}

/// Whether a fault with probability `p` (salted by `salt`) hits `module`'s
/// frame `frame` in a run seeded with `seed`.
fn chance(seed: u64, salt: u64, p: f64, module: u8, frame: u64) -> bool {
    p > 0.0 && unit(hash3(seed ^ salt, module as u64, frame)) < p
}

impl Faults {
    /// Whether any fault is switched on.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// What to simulate and where to send it.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The DAQ host.
    pub target: SocketAddr,
    /// How many modules to simulate (1..=32).
    pub modules: u8,
    /// Module number of the first simulated module: modules are
    /// `first_module .. first_module + modules`.
    pub first_module: u8,
    /// Network of the source addresses: module `m` binds
    /// [`packet::module_addr`]`(source_base, m)`, i.e. `a.b.c.(100+m)`.
    pub source_base: Ipv4Addr,
    /// Bind each module's socket to its source address (the receiver tells
    /// modules apart by source IPv4). Off: every socket binds the wildcard
    /// address and the receiver sees one source for all modules.
    pub bind_sources: bool,
    /// Datagrams per second per module; in flood mode it only sets the grid
    /// spacing of the virtual clock.
    pub rate: f64,
    /// Readouts per datagram (1..=28).
    pub readouts: usize,
    /// Stop after this much wall time.
    pub duration: Option<Duration>,
    /// Stop after this many frames (datagrams) per module; faults add or
    /// remove datagrams on top.
    pub count: Option<u64>,
    /// Send as fast as possible on a virtual clock (see [`run`]).
    pub flood: bool,
    /// Paced mode: re-evaluate pixel values once per this much camera time
    /// ([`refresh_ts`]); zero evaluates every readout. The default,
    /// [`DEFAULT_PIXEL_REFRESH`], keeps every datagram exact up to 25
    /// datagrams/s/module and the cost of the model flat above.
    pub pixel_refresh: Duration,
    /// In flood mode, send with UDP GSO instead of `sendmmsg`.
    pub gso: bool,
    /// Datagrams per `sendmmsg` / GSO send in flood mode (1..=1024).
    pub batch: usize,
    /// Seed of the pixel model, of [`Faults::loss`] and of `send_jitter`.
    pub seed: u64,
    /// Paced mode: send each frame up to this long after its last readout,
    /// a delay drawn per frame from the seed (the readout timestamps stay on
    /// the grid). Zero sends at once. A real camera's clock runs
    /// independently of the DAQ host's; a simulator on the same host, with
    /// no jitter, wakes at the same phase of the host's timer tick every
    /// frame, and the tick then lands in the same place of every burst
    /// (measured on these VMs: every burst ended 0.2-0.8 ms after a 4 ms
    /// tick boundary, and the 2.4 % of bursts a tick delayed all in one
    /// 0.2 ms slice of it). A jitter of a tick period or more spreads the
    /// bursts over the whole period, as a camera's drifting clock does.
    pub send_jitter: Duration,
    pub faults: Faults,
}

impl Default for SimConfig {
    /// One module (0, from 127.0.0.100) sending 25 datagrams/s of 10 readouts
    /// to 127.0.0.1:2009, seed 1: the original simulator.
    fn default() -> Self {
        SimConfig {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            modules: 1,
            first_module: 0,
            source_base: Ipv4Addr::new(127, 0, 0, 0),
            bind_sources: true,
            rate: DEFAULT_RATE,
            readouts: packet::READOUTS_PER_DATAGRAM,
            duration: None,
            count: None,
            flood: false,
            pixel_refresh: DEFAULT_PIXEL_REFRESH,
            gso: false,
            batch: DEFAULT_BATCH,
            seed: 1,
            send_jitter: Duration::ZERO,
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// The simulated module numbers.
    pub fn module_numbers(&self) -> std::ops::Range<u8> {
        self.first_module..self.first_module.saturating_add(self.modules)
    }

    /// The readout grid of this rate and readout count.
    pub fn grid(&self) -> Grid {
        Grid::new(self.rate, self.readouts)
    }

    /// [`SimConfig::pixel_refresh`] in ns.
    pub fn pixel_refresh_ns(&self) -> u64 {
        u64::try_from(self.pixel_refresh.as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long after its last readout global frame `frame` is sent, in
    /// paced mode: below [`SimConfig::send_jitter`], a function of the
    /// seed and the frame.
    pub fn send_delay_ns(&self, frame: u64) -> u64 {
        let max = u64::try_from(self.send_jitter.as_nanos()).unwrap_or(u64::MAX);
        if max == 0 {
            return 0;
        }
        hash3(self.seed ^ 0x6a69_7474_6572, 0, frame) % max
    }

    /// The source address module `module` binds.
    pub fn source_addr(&self, module: u8) -> Ipv4Addr {
        packet::module_addr(self.source_base, module)
    }

    /// Checks every range; the message names the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=N_MODULES).contains(&(self.modules as usize)) {
            return Err(format!(
                "modules must be 1..={N_MODULES}, got {}",
                self.modules
            ));
        }
        if self.first_module as usize + self.modules as usize > N_MODULES {
            return Err(format!(
                "first module {} + {} modules exceeds the camera's {N_MODULES} modules (0..31)",
                self.first_module, self.modules
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!(
                "rate must be a positive number of datagrams/s, got {}",
                self.rate
            ));
        }
        if !(1..=MAX_READOUTS).contains(&self.readouts) {
            return Err(format!(
                "readouts per datagram must be 1..={MAX_READOUTS} ({MAX_READOUTS} × {READOUT_SIZE} bytes \
                 fit a 4096-byte receive buffer), got {}",
                self.readouts
            ));
        }
        if 1e9 / (self.rate * self.readouts as f64) < 1.0 {
            return Err(format!(
                "rate {} × {} readouts puts readouts less than 1 ns apart",
                self.rate, self.readouts
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!("batch must be 1..={MAX_BATCH}, got {}", self.batch));
        }
        if !(0.0..=1.0).contains(&self.faults.loss) {
            return Err(format!(
                "loss is a probability 0..=1, got {}",
                self.faults.loss
            ));
        }
        let mut strays: Vec<(u8, u64)> = self
            .faults
            .stray
            .iter()
            .map(|&(m, at, _)| (m, stray_frame(at, self.rate)))
            .collect();
        if let Some(&(_, at, _)) = self
            .faults
            .stray
            .iter()
            .find(|s| !(s.1.is_finite() && s.1 >= 0.0))
        {
            return Err(format!(
                "stray: {at} is not a time in seconds from the start"
            ));
        }
        strays.sort_unstable();
        if let Some(w) = strays.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "stray: two strays of module {} in frame {}: one per module and frame",
                w[0].0, w[0].1
            ));
        }
        let fl = &self.faults;
        for (what, p) in [
            ("duplicate", fl.duplicate),
            ("reorder", fl.reorder.0),
            ("corrupt", fl.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{what} is a probability 0..=1, got {p}"));
            }
        }
        if fl.reorder.0 > 0.0 && !(1..=MAX_REORDER_DEPTH).contains(&fl.reorder.1) {
            return Err(format!(
                "reorder: a datagram is held back 1..={MAX_REORDER_DEPTH} slots, got {}",
                fl.reorder.1
            ));
        }
        if !(fl.foreign.is_finite() && fl.foreign >= 0.0) {
            return Err(format!(
                "foreign must be a number of datagrams/s, got {}",
                fl.foreign
            ));
        }
        if fl.foreign > 0.0 && (self.flood || !self.bind_sources) {
            return Err(
                "foreign: needs paced mode and bound sources (not --flood, not --no-bind)".into(),
            );
        }
        let times = fl
            .silent
            .iter()
            .flat_map(|s| [s.1, s.2])
            .chain(fl.restart.iter().map(|r| r.1));
        if let Some(t) = times.into_iter().find(|t| !(t.is_finite() && *t >= 0.0)) {
            return Err(format!("{t} is not a time in seconds from the start"));
        }
        if let Some(s) = fl.silent.iter().find(|s| s.2 <= s.1) {
            return Err(format!(
                "silent: module {} from {} s to {} s is no time at all",
                s.0, s.1, s.2
            ));
        }
        if let Some(g) = self.faults.glitch.iter().find(|g| g.3 == 0) {
            return Err(format!("glitch of module {}: K must be at least 1", g.0));
        }
        let sim = self.module_numbers();
        let fault_modules = self
            .faults
            .dead_modules
            .iter()
            .copied()
            .map(|m| ("dead module", m));
        let fault_modules = fault_modules
            .chain(self.faults.skip.iter().map(|&(m, _)| ("skip", m)))
            .chain(self.faults.ts_jump.iter().map(|&(m, _, _)| ("ts jump", m)))
            .chain(self.faults.stray.iter().map(|&(m, _, _)| ("stray", m)))
            .chain(self.faults.glitch.iter().map(|&(m, _, _, _)| ("glitch", m)))
            .chain(self.faults.skew.iter().map(|&(m, _)| ("skew", m)))
            .chain(self.faults.silent.iter().map(|&(m, _, _)| ("silent", m)))
            .chain(self.faults.restart.iter().map(|&(m, _)| ("restart", m)));
        for (what, m) in fault_modules {
            if !sim.contains(&m) {
                return Err(format!(
                    "{what}: module {m} is not simulated (modules {}..={})",
                    sim.start,
                    sim.end - 1
                ));
            }
        }
        if self.bind_sources {
            match self.target.ip() {
                IpAddr::V6(_) => {
                    return Err(format!(
                        "target {} is IPv6 but module source addresses are IPv4; \
                         use an IPv4 target or --no-bind",
                        self.target
                    ));
                }
                IpAddr::V4(t) if self.source_base.is_loopback() && !t.is_loopback() => {
                    return Err(format!(
                        "target {} is not on loopback but source addresses {}.100..131 only \
                         exist on loopback; use --no-bind for a remote target",
                        self.target,
                        first_three_octets(self.source_base)
                    ));
                }
                IpAddr::V4(_) => {}
            }
        }
        Ok(())
    }
}

/// `a.b.c` of an IPv4 address.
fn first_three_octets(a: Ipv4Addr) -> String {
    let [a, b, c, _] = a.octets();
    format!("{a}.{b}.{c}")
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// What one simulated module did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleStats {
    /// Camera module number.
    pub module: u8,
    /// Well-formed datagrams sent, duplicates included.
    pub sent: u64,
    /// Of `sent`, the extra copies of [`Faults::duplicate_every`].
    pub duplicates: u64,
    /// Malformed (143-byte) datagrams sent.
    pub malformed: u64,
    /// Frames not sent because of a fault: loss, skip, dead module.
    pub dropped: u64,
    /// Bytes of all datagrams sent (malformed included).
    pub bytes: u64,
    /// Stray datagrams sent ([`Faults::stray`]; not in `sent`).
    pub strays: u64,
    /// Corrupt datagrams sent in place of a frame's ([`Faults::corrupt`];
    /// not in `sent`, and the frame is not in `dropped`).
    pub corrupt: u64,
    /// Datagrams held back and sent after a later one of the module
    /// ([`Faults::reorder_every`], [`Faults::reorder`]; a held one whose
    /// successors were all lost is sent in order and not counted).
    pub reordered: u64,
    /// Datagrams the kernel refused.
    pub send_errors: u64,
}

/// What a [`run`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimStats {
    /// One entry per simulated module, in module order.
    pub modules: Vec<ModuleStats>,
    /// Wall time from the start of the run to its end.
    pub elapsed: Duration,
    /// Primary timestamp of frame 0's first readout (before any
    /// [`Faults::ts_jump`]): frame `f` starts at `first_ts + f × period`.
    pub first_ts: u64,
    /// The first send error, to say why `send_errors` is not zero.
    pub first_error: Option<String>,
    /// [`Faults::foreign`] datagrams sent, by source address.
    pub foreign: Vec<(Ipv4Addr, u64)>,
}

impl SimStats {
    fn total(&self, f: impl Fn(&ModuleStats) -> u64) -> u64 {
        self.modules.iter().map(f).sum()
    }

    /// Well-formed datagrams sent by all modules, duplicates included.
    pub fn sent(&self) -> u64 {
        self.total(|m| m.sent)
    }

    pub fn duplicates(&self) -> u64 {
        self.total(|m| m.duplicates)
    }

    pub fn malformed(&self) -> u64 {
        self.total(|m| m.malformed)
    }

    pub fn dropped(&self) -> u64 {
        self.total(|m| m.dropped)
    }

    pub fn bytes(&self) -> u64 {
        self.total(|m| m.bytes)
    }

    pub fn send_errors(&self) -> u64 {
        self.total(|m| m.send_errors)
    }

    pub fn strays(&self) -> u64 {
        self.total(|m| m.strays)
    }

    pub fn corrupt(&self) -> u64 {
        self.total(|m| m.corrupt)
    }

    pub fn reordered(&self) -> u64 {
        self.total(|m| m.reordered)
    }

    pub fn foreign(&self) -> u64 {
        self.foreign.iter().map(|f| f.1).sum()
    }

    /// Datagrams (well-formed and malformed) per second over the run.
    pub fn datagrams_per_sec(&self) -> f64 {
        (self.sent() + self.malformed()) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for SimStats {
    /// Two lines of totals; the alternate form (`{:#}`) adds one line per module.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "sent {} ({} bytes) from {} in {:.3} s: {:.0} datagrams/s, {:.2} MB/s\n\
             faults: {} dropped, {} duplicated, {} malformed, {} strays, {} corrupt, \
             {} reordered, {} foreign; send errors: {}",
            plural(self.sent(), "datagram"),
            self.bytes(),
            plural(self.modules.len() as u64, "module"),
            secs,
            self.datagrams_per_sec(),
            self.bytes() as f64 / secs.max(1e-9) / 1e6,
            self.dropped(),
            self.duplicates(),
            self.malformed(),
            self.strays(),
            self.corrupt(),
            self.reordered(),
            self.foreign(),
            self.send_errors(),
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (first: {e})")?;
        }
        if f.alternate() {
            write!(
                f,
                "\nmodule       sent  duplicated  malformed    dropped  strays  errors  \
                 corrupt  reordered"
            )?;
            for m in &self.modules {
                write!(
                    f,
                    "\n{:>6} {:>10} {:>11} {:>10} {:>10} {:>7} {:>7} {:>8} {:>10}",
                    m.module,
                    m.sent,
                    m.duplicates,
                    m.malformed,
                    m.dropped,
                    m.strays,
                    m.send_errors,
                    m.corrupt,
                    m.reordered
                )?;
            }
            for (addr, n) in &self.foreign {
                write!(f, "\nforeign {addr}: {n} datagrams")?;
            }
        }
        Ok(())
    }
}

/// "1 module", "2 modules".
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

// ---------------------------------------------------------------------------
// Fault plan: what a module sends for each frame
// ---------------------------------------------------------------------------

/// One datagram to send, named by the frame whose readouts it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Data(u64),
    Duplicate(u64),
    Malformed(u64),
    /// An extra datagram of the frame, stamped off ([`Faults::stray`]).
    Stray(u64),
    /// The frame's datagram, corrupt ([`Faults::corrupt`]).
    Corrupt(u64),
}

impl Item {
    /// The frame whose readouts the datagram carries.
    fn frame(self) -> u64 {
        let (Item::Data(f)
        | Item::Duplicate(f)
        | Item::Malformed(f)
        | Item::Stray(f)
        | Item::Corrupt(f)) = self;
        f
    }

    /// Its length, for a frame of `frame_len` bytes (a corrupt one's is
    /// its [`Corruption`]'s).
    fn len(self, frame_len: usize) -> usize {
        match self {
            Item::Malformed(_) => MALFORMED_LEN,
            _ => frame_len,
        }
    }
}

/// A small FIFO of items: one frame yields at most 6 (held + current, each
/// duplicated, a malformed one and a stray), more only with several strays
/// of one module in one frame (refused by `SimConfig::validate`).
#[derive(Clone, Copy, Debug)]
struct Items {
    buf: [Item; 8],
    head: usize,
    len: usize,
}

impl Items {
    fn new() -> Self {
        Items {
            buf: [Item::Data(0); 8],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, item: Item) {
        debug_assert!(self.head + self.len < self.buf.len());
        self.buf[self.head + self.len] = item;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Item> {
        if self.len == 0 {
            self.head = 0;
            return None;
        }
        let item = self.buf[self.head];
        self.head += 1;
        self.len -= 1;
        if self.len == 0 {
            self.head = 0;
        }
        Some(item)
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `n > 0` and frame `f` is the Nth, 2Nth … datagram.
#[inline]
fn every(n: u64, f: u64) -> bool {
    n > 0 && (f + 1) % n == 0
}

/// The run's frame due `at_secs` into it at `rate` frames per second.
pub fn stray_frame(at_secs: f64, rate: f64) -> u64 {
    (at_secs * rate).round().max(0.0) as u64
}

/// Whether [`Faults::loss`] with probability `p` drops `module`'s frame `f`
/// in a run seeded with `seed`: a pure function, so a test can tell which
/// datagrams a lossy run will not send.
pub fn loss_drops(seed: u64, p: f64, module: u8, frame: u64) -> bool {
    chance(seed, 0x105_5105_5105, p, module, frame)
}

/// The faults of one module, and the datagram it holds back for reordering.
#[derive(Debug)]
struct ModuleFaults {
    module: u8,
    seed: u64,
    dead: bool,
    loss: f64,
    skips: Vec<u64>,
    /// `(frame, delta)` sorted by frame.
    jumps: Vec<(u64, i64)>,
    malformed_every: u64,
    duplicate_every: u64,
    reorder_every: u64,
    duplicate: f64,
    reorder: (f64, u64),
    corrupt: f64,
    /// Frame ranges in which the module is silent.
    silences: Vec<std::ops::Range<u64>>,
    /// The frame held back, the frame after whose slot it is sent, and
    /// whether a later datagram has gone out before it.
    held: Option<(u64, u64, bool)>,
    /// `(frame, delta)` of each stray datagram.
    strays: Vec<(u64, i64)>,
    /// `(first frame, delta, frames)` of each glitch.
    glitches: Vec<(u64, i64, u64)>,
    skew: i64,
}

impl ModuleFaults {
    fn new(cfg: &SimConfig, module: u8) -> Self {
        let f = &cfg.faults;
        let period = cfg.grid().period_ns();
        let restarts = f.restart.iter().filter(|r| r.0 == module).map(|&(_, at)| {
            // Back to frame 0's timestamps: minus the time since then.
            let fr = stray_frame(at, cfg.rate);
            let back = i64::try_from(u128::from(fr) * u128::from(period)).unwrap_or(i64::MAX);
            (fr, -back)
        });
        let mut jumps: Vec<(u64, i64)> = f
            .ts_jump
            .iter()
            .filter(|j| j.0 == module)
            .map(|&(_, fr, d)| (fr, d))
            .chain(restarts)
            .collect();
        jumps.sort_by_key(|j| j.0);
        ModuleFaults {
            module,
            seed: cfg.seed,
            dead: f.dead_modules.contains(&module),
            loss: f.loss,
            skips: f
                .skip
                .iter()
                .filter(|s| s.0 == module)
                .map(|s| s.1)
                .collect(),
            jumps,
            malformed_every: f.malformed_every,
            duplicate_every: f.duplicate_every,
            reorder_every: f.reorder_every,
            duplicate: f.duplicate,
            reorder: f.reorder,
            corrupt: f.corrupt,
            silences: f
                .silent
                .iter()
                .filter(|s| s.0 == module)
                .map(|&(_, a, b)| stray_frame(a, cfg.rate)..stray_frame(b, cfg.rate))
                .collect(),
            held: None,
            strays: f
                .stray
                .iter()
                .filter(|s| s.0 == module)
                .map(|&(_, at, d)| (stray_frame(at, cfg.rate), d))
                .collect(),
            glitches: f
                .glitch
                .iter()
                .filter(|g| g.0 == module)
                .map(|&(_, fr, d, k)| (fr, d, k))
                .collect(),
            skew: f.skew.iter().filter(|s| s.0 == module).map(|s| s.1).sum(),
        }
    }

    /// The timestamp shift of frame `f`: jumps in effect, glitches, skew.
    fn shift(&self, f: u64) -> i64 {
        let jumps: i64 = self
            .jumps
            .iter()
            .take_while(|j| j.0 <= f)
            .map(|j| j.1)
            .sum();
        let glitch: i64 = self
            .glitches
            .iter()
            .filter(|&&(g, _, k)| (g..g.saturating_add(k)).contains(&f))
            .map(|g| g.1)
            .sum();
        jumps + glitch + self.skew
    }

    /// The shift of the datagram `item` carries.
    fn item_shift(&self, item: Item) -> i64 {
        let f = item.frame();
        let extra = match item {
            Item::Stray(_) => self.strays.iter().find(|s| s.0 == f).map_or(0, |s| s.1),
            _ => 0,
        };
        self.shift(f).saturating_add(extra)
    }

    fn push_data(&self, f: u64, out: &mut Items) {
        out.push(Item::Data(f));
        if every(self.duplicate_every, f)
            || chance(self.seed, 0xD0_0B1E, self.duplicate, self.module, f)
        {
            out.push(Item::Duplicate(f));
        }
    }

    /// The items to send for frame `f`, in order.
    fn frame(&mut self, f: u64, out: &mut Items, stats: &mut ModuleStats) {
        if self.dead {
            stats.dropped += 1;
            return;
        }
        let present = !(loss_drops(self.seed, self.loss, self.module, f)
            || self.skips.contains(&f)
            || self.silences.iter().any(|s| s.contains(&f)));
        if !present {
            stats.dropped += 1;
        }
        // A corrupt datagram takes the frame's place (it is not held back).
        let corrupt = present && chance(self.seed, 0xC0_88_07, self.corrupt, self.module, f);
        let data = present && !corrupt;
        match self.held {
            Some((h, after, overtaken)) if f >= after => {
                self.held = None;
                if data {
                    self.push_data(f, out);
                }
                self.release(h, overtaken || data, out, stats);
            }
            Some((_, _, ref mut overtaken)) => {
                if data {
                    *overtaken = true;
                    self.push_data(f, out);
                }
            }
            None if data && every(self.reorder_every, f) => {
                self.held = Some((f, f + 1, false));
            }
            None if data && chance(self.seed, 0x5E_0DE5, self.reorder.0, self.module, f) => {
                let k = self.reorder.1.max(1);
                let depth = 1 + hash3(self.seed ^ 0xDE_9742, self.module as u64, f) % k;
                self.held = Some((f, f + depth, false));
            }
            None => {
                if data {
                    self.push_data(f, out);
                }
            }
        }
        if corrupt {
            out.push(Item::Corrupt(f));
        }
        if every(self.malformed_every, f) {
            out.push(Item::Malformed(f));
        }
        if self.strays.iter().any(|s| s.0 == f) {
            out.push(Item::Stray(f));
        }
    }

    /// Sends the held-back frame `h`; it counts as reordered if a later
    /// datagram went out before it (its successors may all have been lost).
    fn release(&self, h: u64, overtaken: bool, out: &mut Items, stats: &mut ModuleStats) {
        self.push_data(h, out);
        if overtaken {
            stats.reordered += 1;
        }
    }

    /// The items still owed at the end of the run (a held-back datagram).
    fn finish(&mut self, out: &mut Items, stats: &mut ModuleStats) {
        if let Some((h, _, overtaken)) = self.held.take() {
            self.release(h, overtaken, out, stats);
        }
    }
}

// ---------------------------------------------------------------------------
// One simulated module
// ---------------------------------------------------------------------------

struct ModuleSim {
    model: ModuleModel,
    plan: ModuleFaults,
    socket: UdpSocket,
    stats: ModuleStats,
    pending: Items,
    /// Next frame to plan (flood mode).
    next_frame: u64,
    /// All frames planned and the held datagram released (flood mode).
    finished: bool,
    /// The datagram last stamped: readout `j` has the model's values at
    /// `cache_ts + j × spacing` (the last refresh frame's) and the timestamps
    /// of the frame last sent; paced mode sends straight from here.
    cache: Vec<Readout>,
    cache_ts: Option<u64>,
    /// A corrupt datagram's bytes (at most one frame's).
    scratch: Vec<u8>,
    seed: u64,
}

/// Which frame's values a datagram carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    /// Paced: those of the frame [`refresh_ts`] names (its own, at low rates).
    Paced { refresh_ns: u64 },
    /// Flood: those of the first of each [`FLOOD_REFRESH_FRAMES`] frames.
    Flood,
}

impl ModuleSim {
    fn new(cfg: &SimConfig, module: u8) -> io::Result<Self> {
        let socket = if cfg.bind_sources {
            let src = cfg.source_addr(module);
            UdpSocket::bind((src, 0)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot bind source {src}: {e} (source addresses {net}.100..131 only exist \
                         on loopback; use --no-bind for a remote target)",
                        net = first_three_octets(cfg.source_base)
                    ),
                )
            })?
        } else {
            let any: IpAddr = match cfg.target {
                SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            UdpSocket::bind((any, 0))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open a UDP socket: {e}")))?
        };
        // Connected: the kernel keeps the route and the IP id counter per
        // socket (~8 % less CPU per datagram in flood mode), and a target with nobody
        // listening shows up as "Connection refused" send errors.
        socket.connect(cfg.target).map_err(|e| {
            let src = socket
                .local_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            io::Error::new(
                e.kind(),
                format!("cannot send from {src} to {}: {e}", cfg.target),
            )
        })?;
        Ok(ModuleSim {
            model: ModuleModel::new(cfg.seed, module),
            plan: ModuleFaults::new(cfg, module),
            socket,
            stats: ModuleStats {
                module,
                ..Default::default()
            },
            pending: Items::new(),
            next_frame: 0,
            finished: false,
            cache: vec![Readout::new(0, 0, &[0; N_PIXELS]); cfg.readouts],
            cache_ts: None,
            scratch: vec![0; cfg.readouts * READOUT_SIZE],
            seed: cfg.seed,
        })
    }

    /// Primary timestamp of frame `f`'s first readout, shifted by `shift`.
    fn first_ts(grid: &Grid, g0: u64, f: u64, shift: i64) -> u64 {
        grid.first_ts(g0 + f).saturating_add_signed(shift)
    }

    /// Makes the cached readouts the datagram of `item`: the values of the
    /// refresh frame `values` names (evaluated only when it changes),
    /// re-stamped in place with the item's own timestamps.
    fn stamp_frame(&mut self, grid: &Grid, g0: u64, item: Item, values: Values) {
        let f = item.frame();
        let shift = self.plan.item_shift(item);
        let source = match values {
            Values::Paced { refresh_ns } => refresh_ts(
                Self::first_ts(grid, g0, f, shift),
                grid.period_ns(),
                refresh_ns,
            ),
            Values::Flood => {
                let r = f / FLOOD_REFRESH_FRAMES * FLOOD_REFRESH_FRAMES;
                Self::first_ts(grid, g0, r, self.plan.shift(r))
            }
        };
        if self.cache_ts != Some(source) {
            self.model
                .fill_values(source, grid.spacing_ns(), &mut self.cache);
            self.cache_ts = Some(source);
        }
        for (j, r) in self.cache.iter_mut().enumerate() {
            let ts =
                (grid.first_ts(g0 + f) + j as u64 * grid.spacing_ns()).saturating_add_signed(shift);
            r.set_timestamps(ts, aux_ts(self.model.module, ts));
        }
    }

    /// Makes `item`'s datagram: the cached readouts, or for a corrupt one
    /// the scratch buffer. Returns which, and its length ([`Self::made`]).
    fn make(&mut self, grid: &Grid, g0: u64, item: Item, values: Values) -> (bool, usize) {
        self.stamp_frame(grid, g0, item, values);
        let frame_len = self.cache.as_bytes().len();
        let Item::Corrupt(f) = item else {
            return (false, item.len(frame_len));
        };
        let (seed, module) = (self.seed, self.model.module);
        // Noise from the seed, 8 bytes per hash.
        let noise = |out: &mut [u8]| {
            for (i, c) in out.chunks_mut(8).enumerate() {
                let h = hash3(
                    seed ^ 0xBAD_B17E5,
                    f,
                    (i as u64) ^ (u64::from(module) << 32),
                );
                c.copy_from_slice(&h.to_le_bytes()[..c.len()]);
            }
        };
        match corruption(seed, module, f, frame_len) {
            Corruption::BadLength(len) => {
                noise(&mut self.scratch[..len]);
                (true, len)
            }
            Corruption::Truncated(len) => (false, len),
            Corruption::Scrambled => {
                noise(&mut self.scratch[..frame_len]);
                self.scratch[..8].fill(0); // readout 0's primary timestamp
                (true, frame_len)
            }
        }
    }

    /// The datagram [`Self::make`] made.
    fn made(&self, (in_scratch, len): (bool, usize)) -> &[u8] {
        if in_scratch {
            &self.scratch[..len]
        } else {
            &self.cache.as_bytes()[..len]
        }
    }

    /// Writes `item` into `slot` (at least `k × 144` bytes); returns its length.
    fn write_item(
        &mut self,
        grid: &Grid,
        g0: u64,
        item: Item,
        values: Values,
        slot: &mut [u8],
    ) -> usize {
        let made = self.make(grid, g0, item, values);
        let bytes = self.made(made);
        slot[..bytes.len()].copy_from_slice(bytes);
        bytes.len()
    }

    fn count_sent(&mut self, item: Item, len: usize) {
        match item {
            Item::Data(_) => self.stats.sent += 1,
            Item::Duplicate(_) => {
                self.stats.sent += 1;
                self.stats.duplicates += 1;
            }
            Item::Malformed(_) => self.stats.malformed += 1,
            Item::Stray(_) => self.stats.strays += 1,
            Item::Corrupt(_) => self.stats.corrupt += 1,
        }
        self.stats.bytes += len as u64;
    }

    /// Sends every pending item one by one, straight from the cached
    /// readouts (paced mode, end of run).
    fn send_pending(&mut self, ctx: &Ctx, values: Values, first_error: &mut Option<String>) {
        while let Some(item) = self.pending.pop() {
            let made = self.make(&ctx.grid, ctx.g0, item, values);
            let len = made.1;
            match self.socket.send(self.made(made)) {
                Ok(_) => self.count_sent(item, len),
                Err(e) => {
                    self.stats.send_errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// What every module shares during a run.
#[derive(Clone, Copy)]
struct Ctx {
    grid: Grid,
    /// Global frame number of the run's frame 0.
    g0: u64,
    /// Wall clock at the start of the run, ns.
    start_ns: u64,
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

/// Simulates the configured modules until `cfg.duration` or `cfg.count` is
/// reached or `stop` is set; returns what was sent.
///
/// **Paced** (default): frame `g` carries grid readouts `g·k .. g·k+k-1`
/// ([`Grid`]) and is sent by every module right after the wall clock passes
/// its last readout; the thread sleeps in between (never longer than 50 ms,
/// to notice `stop`). Frame 0 of the run is the first whose last readout is
/// not yet past. A run that falls behind (suspended, overloaded) catches up
/// by sending the overdue frames at once: no frame is skipped.
///
/// **Flood**: the same grid, but on a virtual clock that advances one frame
/// per datagram from the current wall-clock frame, so every datagram is a
/// distinct frame and all modules send the same frames (the virtual clock
/// soon runs far ahead of the wall clock: 400 k datagrams/s at 25/s is
/// 16 000× real time). Each module in turn
/// sends a batch of `cfg.batch` datagrams with one `sendmmsg` (or, with
/// `cfg.gso`, one `sendmsg` carrying equal-size segments with `UDP_SEGMENT`;
/// malformed datagrams go separately). Buffers are allocated once.
///
/// **Pixel values.** Timestamps are always exact; readout `j` of a datagram
/// carries the values of readout `j` of a *refresh frame*, evaluated from the
/// model once and re-stamped for each datagram that reuses it. Paced, that is
/// the frame [`refresh_ts`] names for [`SimConfig::pixel_refresh`]: the
/// datagram's own (exact: the model's value at each of its timestamps) when
/// frames are at least that far apart, as at the real rate; at higher rates
/// the first frame of the current refresh interval of camera time. Over one
/// interval (40 ms by default) the model moves by its noise only, so a
/// receiver sees nothing of it, and the model costs what it costs at the real
/// rate at any rate. Flood: the first of every [`FLOOD_REFRESH_FRAMES`].
///
/// Errors: invalid configuration (`InvalidInput`), a source address that
/// cannot be bound, and a kernel without UDP GSO when `gso` is asked for.
/// Send errors are counted, not returned.
pub fn run(cfg: &SimConfig, stop: &AtomicBool) -> io::Result<SimStats> {
    run_live(cfg, stop, None)
}

/// [`run`], steered while it runs through `live` (`--control`; paced mode
/// only: a flood refuses it).
pub fn run_live(
    cfg: &SimConfig,
    stop: &AtomicBool,
    live: Option<&control::Live>,
) -> io::Result<SimStats> {
    if live.is_some() && cfg.flood {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a flood cannot be steered (--control is for paced mode)",
        ));
    }
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut mods = cfg
        .module_numbers()
        .map(|m| ModuleSim::new(cfg, m))
        .collect::<io::Result<Vec<_>>>()?;
    let started = Instant::now();
    let grid = cfg.grid();
    let start_ns = now_ns();
    let ctx = Ctx {
        grid,
        g0: grid.frame_at(start_ns),
        start_ns,
    };
    let mut first_error = None;
    let mut foreign = Foreign::new(cfg)?;
    if cfg.flood {
        run_flood(cfg, &ctx, &mut mods, stop, started, &mut first_error)?;
    } else {
        run_paced(
            cfg,
            &ctx,
            &mut mods,
            &mut foreign,
            stop,
            live,
            &mut first_error,
        );
    }
    // Release what is still held back for reordering.
    let values = if cfg.flood {
        Values::Flood
    } else {
        Values::Paced {
            refresh_ns: cfg.pixel_refresh_ns(),
        }
    };
    for m in &mut mods {
        m.plan.finish(&mut m.pending, &mut m.stats);
        m.send_pending(&ctx, values, &mut first_error);
    }
    Ok(SimStats {
        modules: mods.into_iter().map(|m| m.stats).collect(),
        elapsed: started.elapsed(),
        first_ts: grid.first_ts(ctx.g0),
        first_error,
        foreign: foreign.hosts.iter().map(|h| (h.0, h.2)).collect(),
    })
}

/// The hosts outside the camera of [`Faults::foreign`]: each a socket
/// bound to its address, and what it sent.
struct Foreign {
    /// `(address, socket, datagrams sent)`.
    hosts: Vec<(Ipv4Addr, UdpSocket, u64)>,
    per_frame: f64,
    sent: u64,
}

impl Foreign {
    fn new(cfg: &SimConfig) -> io::Result<Self> {
        let mut hosts = Vec::new();
        if cfg.faults.foreign > 0.0 {
            let [a, b, c, _] = cfg.source_base.octets();
            for i in 0..FOREIGN_HOSTS {
                let addr = Ipv4Addr::new(a, b, c, FOREIGN_FIRST_OCTET + i);
                let sock = UdpSocket::bind((addr, 0))
                    .and_then(|s| s.connect(cfg.target).map(|()| s))
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot send from foreign host {addr}: {e}"),
                        )
                    })?;
                hosts.push((addr, sock, 0));
            }
        }
        Ok(Foreign {
            hosts,
            per_frame: cfg.faults.foreign / cfg.rate,
            sent: 0,
        })
    }

    /// Sends what is due by the end of frame `f`: `datagram` from each host
    /// in turn.
    fn frame(&mut self, f: u64, datagram: &[u8], first_error: &mut Option<String>) {
        if self.hosts.is_empty() {
            return;
        }
        let due = ((f + 1) as f64 * self.per_frame) as u64;
        while self.sent < due {
            let n = self.hosts.len() as u64;
            let host = &mut self.hosts[(self.sent % n) as usize];
            match host.1.send(datagram) {
                Ok(_) => host.2 += 1,
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("foreign {}: {e}", host.0));
                }
            }
            self.sent += 1;
        }
    }
}

/// Why [`sleep_until_or`] returned.
enum Wake {
    Due,
    Stopped,
    Interrupted,
}

/// Sleeps until the wall clock reaches `t_ns` (never longer than
/// `MAX_SLEEP` at a time), returning early on `stop` or when `interrupt` says so.
fn sleep_until_or(t_ns: u64, stop: &AtomicBool, interrupt: impl Fn() -> bool) -> Wake {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Wake::Stopped;
        }
        if interrupt() {
            return Wake::Interrupted;
        }
        let now = now_ns();
        if now >= t_ns {
            return Wake::Due;
        }
        std::thread::sleep(Duration::from_nanos(t_ns - now).min(MAX_SLEEP));
    }
}

fn run_paced(
    cfg: &SimConfig,
    ctx: &Ctx,
    mods: &mut [ModuleSim],
    foreign: &mut Foreign,
    stop: &AtomicBool,
    live: Option<&control::Live>,
    first_error: &mut Option<String>,
) {
    let mut steered = Ctx { ..*ctx };
    let ctx = &mut steered;
    // The faults the flags set, which the run-time ones add to.
    let base: Vec<(i64, f64)> = mods.iter().map(|m| (m.plan.skew, m.plan.loss)).collect();
    let values = Values::Paced {
        refresh_ns: cfg.pixel_refresh_ns(),
    };
    let end_ns = cfg.duration.map(|d| {
        ctx.start_ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    let mut f = 0;
    loop {
        if cfg.count.is_some_and(|c| f >= c) {
            break;
        }
        if let Some(rate) = live.and_then(control::Live::take_rate_change) {
            // A new frame clock from now on: frame f is the next one due
            // on it, so no frame is sent twice or in the past.
            ctx.grid = Grid::new(rate, cfg.readouts);
            ctx.g0 = (ctx.grid.frame_at(now_ns()) + 1).saturating_sub(f);
        }
        let due = ctx.grid.last_ts(ctx.g0 + f);
        if end_ns.is_some_and(|end| due > end) {
            break;
        }
        // A rate change wakes the wait: the next frame is due on the new clock.
        let changed = || live.is_some_and(control::Live::rate_pending);
        match sleep_until_or(
            due.saturating_add(cfg.send_delay_ns(ctx.g0 + f)),
            stop,
            changed,
        ) {
            Wake::Due => {}
            Wake::Interrupted => continue,
            Wake::Stopped => break,
        }
        for (i, m) in mods.iter_mut().enumerate() {
            if let Some(l) = live {
                let module = m.plan.module;
                if !l.sending(module) {
                    continue;
                }
                m.plan.skew = base[i].0.saturating_add(l.skew(module));
                m.plan.loss = (base[i].1 + l.loss()).min(1.0);
            }
            m.plan.frame(f, &mut m.pending, &mut m.stats);
            m.send_pending(ctx, values, first_error);
            if let Some(l) = live {
                l.set_sent(m.plan.module, m.stats.sent);
            }
        }
        // What the first module's datagram looked like: camera-like content.
        foreign.frame(f, mods[0].cache.as_bytes(), first_error);
        f += 1;
    }
}

/// Reusable buffers of one flood batch: `slots` datagrams at a fixed stride.
struct Batch {
    stride: usize,
    buf: Vec<u8>,
    lens: Vec<usize>,
    items: Vec<Item>,
    n: usize,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

impl Batch {
    fn new(slots: usize, stride: usize) -> Self {
        // SAFETY: mmsghdr and iovec are plain C structs; all-zero is valid (null pointers).
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Batch {
            stride,
            buf: vec![0; slots * stride],
            lens: vec![0; slots],
            items: vec![Item::Data(0); slots],
            n: 0,
            hdrs: vec![zero_hdr; slots],
            iovs: vec![zero_iov; slots],
        }
    }
}

/// Fills `b` with module `m`'s next datagrams: at most `b`'s capacity, and
/// at most that many frames planned (so a dead module cannot spin forever).
fn fill(cfg: &SimConfig, ctx: &Ctx, m: &mut ModuleSim, b: &mut Batch) {
    let cap = b.lens.len();
    let mut planned = 0;
    b.n = 0;
    while b.n < cap {
        if m.pending.is_empty() {
            if m.finished || planned == cap {
                break;
            }
            if cfg.count.is_some_and(|c| m.next_frame >= c) {
                m.plan.finish(&mut m.pending, &mut m.stats);
                m.finished = true;
                continue;
            }
            m.plan.frame(m.next_frame, &mut m.pending, &mut m.stats);
            m.next_frame += 1;
            planned += 1;
            continue;
        }
        let item = m.pending.pop().expect("not empty");
        let i = b.n;
        let slot = &mut b.buf[i * b.stride..(i + 1) * b.stride];
        let len = m.write_item(&ctx.grid, ctx.g0, item, Values::Flood, slot);
        b.lens[i] = len;
        b.items[i] = item;
        b.n += 1;
    }
}

fn run_flood(
    cfg: &SimConfig,
    ctx: &Ctx,
    mods: &mut [ModuleSim],
    stop: &AtomicBool,
    started: Instant,
    first_error: &mut Option<String>,
) -> io::Result<()> {
    let dlen = ctx.grid.readouts() * READOUT_SIZE;
    let mut b = Batch::new(cfg.batch, dlen);
    let gso_segments = GSO_MAX_SEGMENTS.min(MAX_UDP_PAYLOAD / dlen).max(1);
    let mut gso_ok = false;
    loop {
        if stop.load(Ordering::Relaxed) || cfg.duration.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        let mut active = false;
        for m in mods.iter_mut() {
            if m.finished && m.pending.is_empty() {
                continue;
            }
            active = true;
            fill(cfg, ctx, m, &mut b);
            if b.n == 0 {
                continue;
            }
            if cfg.gso {
                send_gso_batch(&mut b, dlen, gso_segments, m, &mut gso_ok, first_error)?;
            } else {
                let items = &b.items;
                let lens = &b.lens;
                sendmmsg_all(
                    m.socket.as_raw_fd(),
                    &b.buf,
                    b.stride,
                    &lens[..b.n],
                    &mut b.hdrs,
                    &mut b.iovs,
                    |i, r| match r {
                        Ok(()) => m.count_sent(items[i], lens[i]),
                        Err(e) => {
                            m.stats.send_errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    },
                );
            }
        }
        if !active {
            return Ok(());
        }
    }
}

/// Sends datagram `i` = `buf[i·stride ..][..lens[i]]` for every `i` with
/// `sendmmsg`, resubmitting after partial sends; reports each datagram's fate
/// to `done`. A datagram the kernel refuses is reported and skipped.
fn sendmmsg_all(
    fd: RawFd,
    buf: &[u8],
    stride: usize,
    lens: &[usize],
    hdrs: &mut [libc::mmsghdr],
    iovs: &mut [libc::iovec],
    mut done: impl FnMut(usize, io::Result<()>),
) {
    let n = lens.len();
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: buf[i * stride..].as_ptr() as *mut libc::c_void,
            iov_len: lens[i],
        };
        let h = &mut hdrs[i];
        // Connected socket: no address.
        h.msg_hdr.msg_name = std::ptr::null_mut();
        h.msg_hdr.msg_namelen = 0;
        h.msg_hdr.msg_iov = &mut iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = std::ptr::null_mut();
        h.msg_hdr.msg_controllen = 0;
        h.msg_len = 0;
    }
    let mut i = 0;
    while i < n {
        // SAFETY: hdrs[i..n] point at iovecs and buffer
        // ranges that all outlive the call; the kernel only reads them.
        let r = unsafe { libc::sendmmsg(fd, hdrs[i..n].as_mut_ptr(), (n - i) as libc::c_uint, 0) };
        if r > 0 {
            for j in i..i + r as usize {
                done(j, Ok(()));
            }
            i += r as usize;
        } else {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            done(i, Err(e));
            i += 1;
        }
    }
}

/// Sends batch `b` of module `m` with UDP GSO: each run of consecutive
/// full-size datagrams (contiguous in `b.buf`, as the stride is their size)
/// goes out in sends of at most `max_segments`; malformed ones one by one.
fn send_gso_batch(
    b: &mut Batch,
    dlen: usize,
    max_segments: usize,
    m: &mut ModuleSim,
    gso_ok: &mut bool,
    first_error: &mut Option<String>,
) -> io::Result<()> {
    let fd = m.socket.as_raw_fd();
    let mut i = 0;
    while i < b.n {
        let mut end = i;
        while end < b.n && end - i < max_segments && b.lens[end] == dlen {
            end += 1;
        }
        let (segments, len) = if end > i {
            (end - i, dlen)
        } else {
            (1, b.lens[i])
        };
        let data = &b.buf[i * b.stride..i * b.stride + (segments - 1) * dlen + len];
        let r = if segments > 1 {
            send_gso(fd, data, dlen)
        } else {
            m.socket.send(data).map(|_| ())
        };
        match r {
            Ok(()) => {
                *gso_ok |= segments > 1;
                for j in i..i + segments {
                    m.count_sent(b.items[j], b.lens[j]);
                }
            }
            Err(e) if segments > 1 && !*gso_ok && gso_unsupported(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("UDP GSO (UDP_SEGMENT) refused by the kernel: {e}; run without --gso"),
                ));
            }
            Err(e) => {
                m.stats.send_errors += segments as u64;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        i += segments;
    }
    Ok(())
}

fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// One `sendmsg` of `data`, cut by the kernel into datagrams of `segment` bytes.
fn send_gso(fd: RawFd, data: &[u8], segment: usize) -> io::Result<()> {
    // Room for one cmsghdr carrying a u16, 8-byte aligned.
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is a plain C struct; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    // SAFETY: the CMSG_* macros compute sizes and pointers inside `control`,
    // which is large enough for one header and a u16 (CMSG_SPACE(2) = 24).
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(2) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, segment as u16);
    }
    loop {
        // SAFETY: msg points at `iov` and `control`, both alive here.
        let r = unsafe { libc::sendmsg(fd, &msg, 0) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use zerocopy::FromBytes;

    use super::*;
    use ssdaq_wire::adc::adc_to_mv;
    use ssdaq_wire::packet::{Reject, module_of, parse};

    const SEED: u64 = 42;
    const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 0);

    // -- the model ---------------------------------------------------------

    #[test]
    fn the_grid_puts_readouts_at_multiples_of_the_spacing() {
        let g = Grid::new(25.0, 10);
        assert_eq!(
            (g.spacing_ns(), g.period_ns(), g.readouts()),
            (4_000_000, 40_000_000, 10)
        );
        let f = 44_000_000_000; // a frame in 2025
        assert_eq!(g.first_ts(f), f * 40_000_000);
        assert_eq!(g.last_ts(f), f * 40_000_000 + 36_000_000);
        // A frame is due once its last readout time has passed.
        assert_eq!(g.frame_at(g.first_ts(f)), f);
        assert_eq!(g.frame_at(g.last_ts(f)), f);
        assert_eq!(g.frame_at(g.last_ts(f) + 1), f + 1);
        // Odd rates round the spacing to whole ns.
        assert_eq!(Grid::new(3.0, 7).spacing_ns(), 47_619_048);
        assert_eq!(Grid::new(1e12, 10).spacing_ns(), 1);
    }

    #[test]
    fn a_datagram_decodes_to_the_module_timestamps_and_model_values() {
        let (module, first, spacing) = (5u8, 1_764_000_000_000_000_000u64, 4_000_000u64);
        let mut d = Vec::new();
        datagram(SEED, module, first, spacing, 10, &mut d);
        assert_eq!(d.len(), 10 * READOUT_SIZE);
        let p = parse(&d, false, packet::module_addr(LOOPBACK, module), false).unwrap();
        assert_eq!(p.module, module);
        assert_eq!(p.readouts.len(), 10);
        for (j, r) in p.readouts.iter().enumerate() {
            let ts = first + j as u64 * spacing;
            assert_eq!(r.primary_ts(), ts);
            assert_eq!(r.aux_ts(), ts + (module as u64 + 1) * AUX_STEP_NS);
            assert_eq!(r.aux_ts(), aux_ts(module, ts));
            for px in 0..N_PIXELS {
                assert_eq!(
                    r.adc(px),
                    pixel_adc(SEED, module, px, ts),
                    "readout {j} pixel {px}"
                );
            }
            assert_eq!(r.as_bytes(), readout(SEED, module, ts).as_bytes());
        }
        // The buffer is reused, not appended to.
        datagram(SEED, module, first, spacing, 3, &mut d);
        assert_eq!(d.len(), 3 * READOUT_SIZE);
    }

    #[test]
    fn pixel_values_wander_slowly_differ_between_pixels_and_stay_sane() {
        let t0 = 1_764_000_000_000_000_000u64;
        let mv = |m: u8, p: usize, t: u64| adc_to_mv(pixel_adc(SEED, m, p, t));
        for m in [0u8, 17, 31] {
            for p in 0..N_PIXELS {
                // Sampled every 0.5 s over 20 minutes.
                let series: Vec<f64> = (0..2400).map(|i| mv(m, p, t0 + i * 500_000_000)).collect();
                let (lo, hi) = series
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                assert!(
                    lo > 40.0 && hi < 900.0,
                    "module {m} pixel {p}: {lo:.1}..{hi:.1} mV"
                );
                assert!(
                    hi - lo > 40.0,
                    "module {m} pixel {p} hardly moves: {lo:.1}..{hi:.1} mV"
                );
                // Slow: consecutive readouts 4 ms apart differ by the noise only.
                for i in 0..50 {
                    let t = t0 + i * 7_919_000_000;
                    let step = (mv(m, p, t + 4_000_000) - mv(m, p, t)).abs();
                    assert!(
                        step < 2.0 * NOISE_MV + 0.5,
                        "module {m} pixel {p}: jump of {step:.2} mV"
                    );
                }
            }
        }
        // Pixels differ from each other, and modules from each other.
        let mut row: Vec<u16> = (0..N_PIXELS).map(|p| pixel_adc(SEED, 3, p, t0)).collect();
        row.sort();
        row.dedup();
        assert!(
            row.len() > 60,
            "only {} distinct values in a module",
            row.len()
        );
        assert_ne!(pixel_adc(SEED, 3, 9, t0), pixel_adc(SEED, 4, 9, t0));
        assert_ne!(pixel_adc(SEED, 3, 9, t0), pixel_adc(SEED + 1, 3, 9, t0));
        // Pure: the same arguments give the same value.
        assert_eq!(pixel_adc(SEED, 3, 9, t0), pixel_adc(SEED, 3, 9, t0));
    }

    #[test]
    fn the_wave_is_continuous_and_bounded() {
        let n = 1u64 << 16;
        let step = u64::MAX / n + 1;
        let mut prev = wave(0);
        for i in 1..=n {
            let w = wave(i.wrapping_mul(step));
            assert!((-1.0..=1.0).contains(&w));
            assert!((w - prev).abs() < 1e-3, "step {i}");
            prev = w;
        }
        assert_eq!(wave(1 << 62), 1.0);
        assert_eq!(wave(3 << 62), -1.0);
    }

    /// splitmix64: arbitrary test inputs.
    fn arbitrary(n: usize) -> impl Iterator<Item = u64> {
        (0..n as u64).map(|i| mix(i ^ 0x5EED))
    }

    #[test]
    fn the_simd_friendly_unit_and_wave_are_bit_identical_to_the_plain_ones() {
        let edges = [
            0,
            1,
            1 << 11,
            (1 << 11) - 1,
            1 << 12,
            1 << 63,
            u64::MAX,
            u64::MAX - (1 << 11),
        ];
        for x in edges.into_iter().chain(arbitrary(1_000_000)) {
            assert_eq!(unit_lanes(x).to_bits(), unit(x).to_bits(), "unit({x:#x})");
            assert_eq!(wave_lanes(x).to_bits(), wave(x).to_bits(), "wave({x:#x})");
        }
    }

    #[test]
    fn fill_values_gives_the_models_counts_bit_for_bit() {
        let mut got = vec![Readout::new(1, 2, &[3; N_PIXELS]); MAX_READOUTS];
        for (i, x) in arbitrary(300).enumerate() {
            let (seed, module) = (x >> 32, (x % 32) as u8);
            // Real timestamps, and near the top of u64 (the timestamps wrap).
            let first = match i % 3 {
                0 => 1_764_000_000_000_000_000 + (x % 1_000_000_000_000),
                1 => u64::MAX - (x % 100_000_000),
                _ => x,
            };
            let spacing = [4_000_000, 40_000, 1, 47_619_048, x % 10_000_000 + 1][i % 5];
            let k = i % MAX_READOUTS + 1;
            let model = ModuleModel::new(seed, module);
            for baseline in [false, true] {
                if baseline {
                    model.fill_values_baseline(first, spacing, &mut got[..k]);
                } else {
                    model.fill_values(first, spacing, &mut got[..k]);
                }
                for (j, r) in got[..k].iter().enumerate() {
                    let ts = first.wrapping_add(j as u64 * spacing);
                    assert_eq!((r.primary_ts(), r.aux_ts()), (0, 0));
                    assert!(
                        (0..N_PIXELS).all(|p| r.adc(p) == pixel_adc(seed, module, p, ts)),
                        "seed {seed} module {module} at {ts}, baseline {baseline}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_refresh_rule_names_the_first_frame_of_each_interval() {
        const MS: u64 = 1_000_000;
        // Frames at least one interval apart (the real rate) are their own.
        let t = 44_100_000_000 * 40 * MS;
        for first in [t, t + 40 * MS, t + 4 * MS, 7] {
            assert_eq!(refresh_ts(first, 40 * MS, 40 * MS), first);
            assert_eq!(refresh_ts(first, 100 * MS, 40 * MS), first);
            assert_eq!(refresh_ts(first, 400_000, 0), first);
        }
        // 2500 datagrams/s: 100 frames of 0.4 ms per 40 ms interval.
        let period = 400_000;
        for f in 0..1000u64 {
            let first = t + f * period;
            assert_eq!(
                refresh_ts(first, period, 40 * MS),
                t + f / 100 * 100 * period
            );
        }
        // An interval that is no multiple of the period: the first frame that
        // starts in the interval, never more than one interval back.
        let period = 3 * MS;
        let mut refreshes = Vec::new();
        for f in 0..100u64 {
            let first = 5 * MS + f * period;
            let r = refresh_ts(first, period, 40 * MS);
            assert!(r <= first && first - r < 40 * MS && (first - r) % period == 0);
            assert_eq!(r / (40 * MS), first / (40 * MS), "same interval");
            assert!(r % (40 * MS) < period, "first frame of its interval");
            assert_eq!(
                refresh_ts(r, period, 40 * MS),
                r,
                "a refresh frame is its own"
            );
            if r == first {
                refreshes.push(f);
            }
        }
        // 5..302 ms touches 8 intervals; the first one's refresh frame, at
        // 2 ms, is before these frames (it is on their grid all the same).
        assert_eq!(refresh_ts(5 * MS, period, 40 * MS), 2 * MS);
        assert_eq!(refreshes, [12, 25, 39, 52, 65, 79, 92]);
    }

    #[test]
    fn loss_drops_about_the_asked_fraction_and_depends_on_the_seed() {
        let dropped = (0..10_000).filter(|&f| loss_drops(SEED, 0.2, 3, f)).count();
        assert!((1_700..2_300).contains(&dropped), "{dropped}");
        assert!((0..1000).all(|f| !loss_drops(SEED, 0.0, 3, f)));
        assert!((0..1000).all(|f| loss_drops(SEED, 1.0, 3, f)));
        let a: Vec<bool> = (0..64).map(|f| loss_drops(1, 0.5, 3, f)).collect();
        let b: Vec<bool> = (0..64).map(|f| loss_drops(2, 0.5, 3, f)).collect();
        assert_ne!(a, b);
    }

    // -- configuration -----------------------------------------------------

    #[test]
    fn the_default_is_the_original_simulator() {
        let c = SimConfig::default();
        assert_eq!(c.target, "127.0.0.1:2009".parse().unwrap());
        assert_eq!(
            (c.modules, c.first_module, c.rate, c.readouts, c.seed),
            (1, 0, 25.0, 10, 1)
        );
        assert!(c.bind_sources && !c.flood && !c.faults.any());
        assert_eq!(c.source_addr(0), Ipv4Addr::new(127, 0, 0, 100));
        assert_eq!(c.grid().spacing_ns(), 4_000_000);
        c.validate().unwrap();
    }

    #[test]
    fn invalid_configurations_are_refused_with_the_setting_named() {
        let bad = |f: &dyn Fn(&mut SimConfig), needle: &str| {
            let mut c = SimConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(needle), "{e:?} does not mention {needle:?}");
            let e = run(&c, &AtomicBool::new(false)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        };
        bad(&|c| c.modules = 0, "modules must be 1..=32");
        bad(&|c| c.modules = 33, "modules must be 1..=32");
        bad(&|c| (c.first_module, c.modules) = (30, 3), "exceeds");
        bad(&|c| c.rate = 0.0, "rate");
        bad(&|c| c.rate = f64::NAN, "rate");
        bad(&|c| c.readouts = 0, "readouts");
        bad(&|c| c.readouts = 29, "readouts");
        bad(&|c| c.batch = 0, "batch");
        bad(&|c| c.faults.loss = 1.5, "probability");
        bad(
            &|c| c.faults.dead_modules = vec![3],
            "dead module: module 3 is not simulated",
        );
        bad(&|c| c.faults.skip = vec![(1, 0)], "skip: module 1");
        bad(&|c| c.faults.ts_jump = vec![(9, 0, 1)], "ts jump: module 9");
        bad(&|c| c.target = "[::1]:2009".parse().unwrap(), "--no-bind");
        bad(
            &|c| c.target = "192.0.2.1:2009".parse().unwrap(),
            "--no-bind",
        );
        let mut c = SimConfig::default();
        (c.bind_sources, c.target) = (false, "192.0.2.1:2009".parse().unwrap());
        c.validate().unwrap();
    }

    #[test]
    fn a_source_that_cannot_be_bound_gives_an_actionable_error() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cfg = SimConfig {
            target: rx.local_addr().unwrap(),
            source_base: Ipv4Addr::new(192, 0, 2, 0), // TEST-NET-1: on no interface
            count: Some(1),
            ..SimConfig::default()
        };
        let e = run(&cfg, &AtomicBool::new(false)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("cannot bind source 192.0.2.100: "), "{msg}");
        assert!(msg.contains("use --no-bind for a remote target"), "{msg}");
    }

    // -- runs against a real receiver --------------------------------------

    /// A UDP receiver on 127.0.0.1 draining on its own thread.
    struct Receiver {
        addr: SocketAddr,
        done: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<Vec<(Ipv4Addr, Vec<u8>)>>,
    }

    impl Receiver {
        fn start() -> Self {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.set_recv_buffer_size(8 << 20).unwrap();
            s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
                .unwrap();
            let socket = UdpSocket::from(s);
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let addr = socket.local_addr().unwrap();
            let done = Arc::new(AtomicBool::new(false));
            let stop = done.clone();
            let thread = std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, SocketAddr::V4(src))) => got.push((*src.ip(), buf[..n].to_vec())),
                        Ok(_) => unreachable!("IPv4 socket"),
                        // Empty queue: stop once the sender is done.
                        Err(_) if stop.load(Ordering::Acquire) => return got,
                        Err(_) => {}
                    }
                }
            });
            Receiver { addr, done, thread }
        }

        /// Everything received, once the sender has returned.
        fn finish(self) -> Vec<(Ipv4Addr, Vec<u8>)> {
            self.done.store(true, Ordering::Release);
            self.thread.join().unwrap()
        }
    }

    /// Runs `cfg` (its target replaced) against a fresh receiver.
    fn run_against_receiver(mut cfg: SimConfig) -> (SimStats, Vec<(u8, Vec<u8>)>) {
        let rx = Receiver::start();
        cfg.target = rx.addr;
        let stats = run(&cfg, &AtomicBool::new(false)).unwrap();
        let got = rx
            .finish()
            .into_iter()
            .map(|(src, d)| (module_of(src, false).expect("a camera source address"), d))
            .collect();
        (stats, got)
    }

    /// What a receiver saw: a well-formed datagram of frame `f`, or a malformed one.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Seen {
        Frame(u64),
        Malformed(u64),
    }

    /// A paced run fast enough for a test.
    fn paced(modules: u8, count: u64) -> SimConfig {
        SimConfig {
            modules,
            count: Some(count),
            rate: 5_000.0,
            seed: SEED,
            ..SimConfig::default()
        }
    }

    /// Classifies each received datagram by frame, per module, in arrival
    /// order, checking every byte: the timestamps exactly, the values those
    /// of [`datagram`] at the refresh frame of `cfg`'s mode (paced:
    /// [`refresh_ts`]; flood: every [`FLOOD_REFRESH_FRAMES`]).
    fn frames(cfg: &SimConfig, stats: &SimStats, got: &[(u8, Vec<u8>)]) -> BTreeMap<u8, Vec<Seen>> {
        let grid = cfg.grid();
        let k = grid.readouts();
        let plans: BTreeMap<u8, ModuleFaults> = cfg
            .module_numbers()
            .map(|m| (m, ModuleFaults::new(cfg, m)))
            .collect();
        let frame_ts = |m: u8, f: u64| {
            (stats.first_ts + f * grid.period_ns()).saturating_add_signed(plans[&m].shift(f))
        };
        let expected = |m: u8, f: u64| {
            let first = frame_ts(m, f);
            let source = if cfg.flood {
                frame_ts(m, f / FLOOD_REFRESH_FRAMES * FLOOD_REFRESH_FRAMES)
            } else {
                refresh_ts(first, grid.period_ns(), cfg.pixel_refresh_ns())
            };
            let mut d = Vec::new();
            datagram(cfg.seed, m, source, grid.spacing_ns(), k, &mut d);
            let rs = <[Readout]>::mut_from_bytes(&mut d[..]).unwrap();
            for (j, r) in rs.iter_mut().enumerate() {
                let ts = first + j as u64 * grid.spacing_ns();
                r.set_timestamps(ts, aux_ts(m, ts));
            }
            d
        };
        // The frame whose datagram starts at `ts`, searched near the unshifted one.
        let frame_of = |m: u8, ts: u64| -> u64 {
            (0..cfg.count.unwrap_or(u64::MAX))
                .find(|&f| frame_ts(m, f) == ts)
                .unwrap_or_else(|| panic!("module {m}: {ts} is no frame's timestamp"))
        };
        let mut out: BTreeMap<u8, Vec<Seen>> = BTreeMap::new();
        for (m, d) in got {
            let seen = if d.len() == MALFORMED_LEN {
                assert_eq!(
                    parse(d, false, cfg.source_addr(*m), false).err(),
                    Some(Reject::BadLength)
                );
                let mut padded = [0u8; READOUT_SIZE];
                padded[..MALFORMED_LEN].copy_from_slice(d);
                let f = frame_of(
                    *m,
                    Readout::read_from_bytes(&padded[..]).unwrap().primary_ts(),
                );
                assert_eq!(
                    d[..],
                    expected(*m, f)[..MALFORMED_LEN],
                    "module {m} malformed frame {f}"
                );
                Seen::Malformed(f)
            } else {
                let p = parse(d, false, cfg.source_addr(*m), false).expect("a valid datagram");
                assert_eq!((p.module, p.readouts.len()), (*m, k));
                let f = frame_of(*m, p.readouts[0].primary_ts());
                assert!(
                    d[..] == expected(*m, f)[..],
                    "module {m} frame {f}: bytes differ from the model"
                );
                Seen::Frame(f)
            };
            out.entry(*m).or_default().push(seen);
        }
        out
    }

    fn all_frames(count: u64) -> Vec<Seen> {
        (0..count).map(Seen::Frame).collect()
    }

    #[test]
    fn a_paced_run_sends_the_same_grid_timestamps_from_every_module() {
        let cfg = SimConfig {
            first_module: 4,
            ..paced(3, 5)
        };
        let (stats, got) = run_against_receiver(cfg.clone());
        assert_eq!(got.len(), 15);
        let seen = frames(&cfg, &stats, &got);
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [4, 5, 6]);
        for s in seen.values() {
            assert_eq!(*s, all_frames(5));
        }
        // Frame f: the same k grid points from every module.
        let grid = cfg.grid();
        assert_eq!(stats.first_ts % grid.period_ns(), 0);
        for (m, d) in &got {
            let p = parse(d, false, cfg.source_addr(*m), false).unwrap();
            for (j, r) in p.readouts.iter().enumerate() {
                assert_eq!(r.primary_ts() % grid.spacing_ns(), 0);
                assert_eq!(
                    (r.primary_ts() - stats.first_ts) / grid.spacing_ns() % 10,
                    j as u64
                );
            }
        }
        // Each frame's datagrams arrive together, all modules before the next frame.
        let firsts: Vec<u64> = got
            .iter()
            .map(|(m, d)| {
                parse(d, false, cfg.source_addr(*m), false)
                    .unwrap()
                    .readouts[0]
                    .primary_ts()
            })
            .collect();
        for f in 0..5 {
            assert!(
                firsts[f * 3..f * 3 + 3]
                    .iter()
                    .all(|&t| t == stats.first_ts + f as u64 * grid.period_ns())
            );
        }
        assert_eq!(
            stats
                .modules
                .iter()
                .map(|m| (m.module, m.sent))
                .collect::<Vec<_>>(),
            [(4, 5), (5, 5), (6, 5)]
        );
        assert_eq!(stats.bytes(), 15 * 1440);
        assert_eq!(
            (stats.dropped(), stats.malformed(), stats.send_errors()),
            (0, 0, 0)
        );
    }

    /// Every datagram of `got`, as (module, readouts).
    fn parsed<'a>(cfg: &SimConfig, got: &'a [(u8, Vec<u8>)]) -> Vec<(u8, &'a [Readout])> {
        got.iter()
            .map(|(m, d)| {
                (
                    *m,
                    parse(d, false, cfg.source_addr(*m), false)
                        .unwrap()
                        .readouts,
                )
            })
            .collect()
    }

    /// Whether every value of every datagram is the model's at its own timestamp.
    fn all_exact(cfg: &SimConfig, got: &[(u8, Vec<u8>)]) -> bool {
        parsed(cfg, got).iter().all(|(m, rs)| {
            rs.iter()
                .all(|r| r.as_bytes() == readout(cfg.seed, *m, r.primary_ts()).as_bytes())
        })
    }

    #[test]
    fn at_the_real_rate_every_paced_datagram_is_exact() {
        let cfg = SimConfig {
            rate: DEFAULT_RATE,
            ..paced(2, 3)
        };
        assert_eq!(cfg.pixel_refresh, DEFAULT_PIXEL_REFRESH);
        let (stats, got) = run_against_receiver(cfg.clone());
        assert_eq!(got.len(), 6);
        assert!(all_exact(&cfg, &got));
        assert_eq!(stats.sent(), 6);
    }

    #[test]
    fn send_delays_stay_below_the_jitter_and_spread_over_it() {
        let cfg = SimConfig {
            send_jitter: Duration::from_millis(4),
            ..SimConfig::default()
        };
        let delays: Vec<u64> = (0..10_000).map(|f| cfg.send_delay_ns(f)).collect();
        assert!(delays.iter().all(|&d| d < 4_000_000));
        // Each millisecond of the 4 gets about a quarter of the frames.
        for q in 0..4 {
            let n = delays.iter().filter(|&&d| d / 1_000_000 == q).count();
            assert!((2_200..2_800).contains(&n), "quarter {q}: {n} of 10 000");
        }
        assert_eq!(
            cfg.send_delay_ns(17),
            cfg.send_delay_ns(17),
            "a function of the frame"
        );
        let other = SimConfig {
            seed: 2,
            ..cfg.clone()
        };
        assert_ne!(
            (0..8).map(|f| cfg.send_delay_ns(f)).collect::<Vec<_>>(),
            (0..8).map(|f| other.send_delay_ns(f)).collect::<Vec<_>>(),
            "and of the seed"
        );
        assert_eq!(SimConfig::default().send_delay_ns(17), 0, "none by default");
    }

    #[test]
    fn a_jittered_paced_run_still_sends_every_frame_exactly_on_the_grid() {
        let cfg = SimConfig {
            rate: 500.0,
            send_jitter: Duration::from_micros(1500),
            pixel_refresh: Duration::ZERO,
            ..paced(2, 10)
        };
        let (stats, got) = run_against_receiver(cfg.clone());
        assert_eq!(got.len(), 20);
        assert!(all_exact(&cfg, &got));
        for s in frames(&cfg, &stats, &got).values() {
            assert_eq!(*s, all_frames(10), "every frame, in order");
        }
    }

    #[test]
    fn with_no_pixel_refresh_interval_every_paced_datagram_is_exact() {
        let cfg = SimConfig {
            pixel_refresh: Duration::ZERO,
            ..paced(2, 50)
        };
        let (_, got) = run_against_receiver(cfg.clone());
        assert_eq!(got.len(), 100);
        assert!(all_exact(&cfg, &got));
    }

    #[test]
    fn at_high_rates_values_are_refreshed_once_per_interval_of_camera_time() {
        // 5000 datagrams/s: 200 frames per 40 ms; 450 frames touch 3 or 4 intervals.
        let cfg = paced(2, 450);
        let (stats, got) = run_against_receiver(cfg.clone());
        // Every byte as the rule says (timestamps exact, values of the refresh frame).
        assert_eq!(frames(&cfg, &stats, &got)[&1], all_frames(450));
        let interval = cfg.pixel_refresh_ns();
        let period = cfg.grid().period_ns();
        for (m, rs) in parsed(&cfg, &got) {
            let first = rs[0].primary_ts();
            let source = refresh_ts(first, period, interval);
            assert!(first - source < interval);
            // A refresh frame is exact; the values change only at refresh frames.
            let exact = rs
                .iter()
                .all(|r| r.as_bytes() == readout(cfg.seed, m, r.primary_ts()).as_bytes());
            assert_eq!(exact, source == first, "module {m} frame at {first}");
        }
        let intervals = |m: u8| {
            let mut values: Vec<Vec<u16>> = parsed(&cfg, &got)
                .iter()
                .filter(|(mm, _)| *mm == m)
                .map(|(_, rs)| (0..N_PIXELS).map(|p| rs[3].adc(p)).collect())
                .collect();
            values.dedup();
            values.len() as u64
        };
        let first = stats.first_ts;
        let last = first + 449 * period;
        let spanned = last / interval - first / interval + 1;
        assert!((3..=4).contains(&spanned));
        assert_eq!((intervals(0), intervals(1)), (spanned, spanned));
    }

    /// Runs `cfg` paced and in both flood modes; every mode must deliver
    /// exactly the same sequence per module. Returns it and the paced stats.
    fn in_every_mode(cfg: SimConfig) -> (BTreeMap<u8, Vec<Seen>>, SimStats) {
        let (stats, got) = run_against_receiver(cfg.clone());
        let seen = frames(&cfg, &stats, &got);
        for gso in [false, true] {
            let flood = SimConfig {
                flood: true,
                gso,
                batch: 4,
                ..cfg.clone()
            };
            let (fstats, fgot) = run_against_receiver(flood.clone());
            assert_eq!(frames(&flood, &fstats, &fgot), seen, "flood, gso {gso}");
            let strip = |s: &SimStats| s.modules.clone();
            assert_eq!(strip(&fstats), strip(&stats), "flood, gso {gso}");
        }
        (seen, stats)
    }

    #[test]
    fn loss_drops_the_datagrams_loss_drops_says() {
        let mut cfg = paced(2, 200);
        cfg.faults.loss = 0.3;
        let (seen, stats) = in_every_mode(cfg);
        for m in [0u8, 1] {
            let want: Vec<Seen> = (0..200)
                .filter(|&f| !loss_drops(SEED, 0.3, m, f))
                .map(Seen::Frame)
                .collect();
            assert!((100..180).contains(&want.len()), "{}", want.len());
            assert_eq!(seen[&m], want);
            assert_eq!(stats.modules[m as usize].dropped, 200 - want.len() as u64);
        }
    }

    #[test]
    fn loss_one_sends_nothing_and_loss_zero_everything() {
        let mut cfg = paced(2, 10);
        cfg.faults.loss = 1.0;
        let (stats, got) = run_against_receiver(cfg.clone());
        assert!(got.is_empty());
        assert_eq!((stats.sent(), stats.dropped()), (0, 20));
        cfg.faults.loss = 0.0;
        let (stats, got) = run_against_receiver(cfg);
        assert_eq!((got.len(), stats.sent(), stats.dropped()), (20, 20, 0));
    }

    #[test]
    fn a_dead_module_never_sends() {
        let mut cfg = paced(3, 6);
        cfg.faults.dead_modules = vec![1];
        let (seen, stats) = in_every_mode(cfg);
        assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [0, 2]);
        assert_eq!(seen[&0], all_frames(6));
        assert_eq!((stats.modules[1].sent, stats.modules[1].dropped), (0, 6));
    }

    #[test]
    fn a_skipped_frame_is_missing_from_that_module_only() {
        let mut cfg = paced(2, 6);
        cfg.faults.skip = vec![(0, 2), (1, 0), (1, 5)];
        let (seen, stats) = in_every_mode(cfg);
        use Seen::Frame as F;
        assert_eq!(seen[&0], [F(0), F(1), F(3), F(4), F(5)]);
        assert_eq!(seen[&1], [F(1), F(2), F(3), F(4)]);
        assert_eq!((stats.modules[0].dropped, stats.modules[1].dropped), (1, 2));
    }

    #[test]
    fn every_nth_datagram_is_followed_by_a_143_byte_malformed_one() {
        let mut cfg = paced(2, 7);
        cfg.faults.malformed_every = 3;
        let (seen, stats) = in_every_mode(cfg);
        use Seen::{Frame as F, Malformed as M};
        for m in [0, 1] {
            assert_eq!(
                seen[&m],
                [F(0), F(1), F(2), M(2), F(3), F(4), F(5), M(5), F(6)]
            );
        }
        assert_eq!((stats.sent(), stats.malformed()), (14, 4));
        assert_eq!(stats.bytes(), 14 * 1440 + 4 * 143);
    }

    #[test]
    fn every_nth_datagram_is_sent_twice() {
        let mut cfg = paced(2, 5);
        cfg.faults.duplicate_every = 2;
        let (seen, stats) = in_every_mode(cfg);
        use Seen::Frame as F;
        assert_eq!(seen[&1], [F(0), F(1), F(1), F(2), F(3), F(3), F(4)]);
        assert_eq!((stats.sent(), stats.duplicates()), (14, 4));
    }

    #[test]
    fn reordering_swaps_datagram_n_and_n_plus_1() {
        use Seen::Frame as F;
        let mut cfg = paced(2, 7);
        cfg.faults.reorder_every = 3;
        let (seen, _) = in_every_mode(cfg.clone());
        assert_eq!(seen[&0], [F(0), F(1), F(3), F(2), F(4), F(6), F(5)]);
        // One held back at the end of the run is still sent.
        cfg.count = Some(6);
        let (seen, stats) = in_every_mode(cfg.clone());
        assert_eq!(seen[&1], [F(0), F(1), F(3), F(2), F(4), F(5)]);
        assert_eq!(stats.sent(), 12);
        // One whose successor is lost goes out in the successor's slot.
        cfg.faults.skip = vec![(0, 3)];
        let (seen, _) = in_every_mode(cfg);
        assert_eq!(seen[&0], [F(0), F(1), F(2), F(4), F(5)]);
    }

    #[test]
    fn a_timestamp_jump_shifts_one_module_from_its_frame_on() {
        let mut cfg = paced(2, 6);
        cfg.faults.ts_jump = vec![(1, 2, -3_000_000_000), (1, 4, 1_000_000_000)];
        // `frames` locates each datagram at its shifted timestamps and checks
        // that the content is the model's at those timestamps.
        let (seen, stats) = in_every_mode(cfg.clone());
        assert_eq!(seen[&0], all_frames(6));
        assert_eq!(seen[&1], all_frames(6));
        let plan = ModuleFaults::new(&cfg, 1);
        assert_eq!(
            (0..6).map(|f| plan.shift(f)).collect::<Vec<_>>(),
            [
                0,
                0,
                -3_000_000_000,
                -3_000_000_000,
                -2_000_000_000,
                -2_000_000_000
            ]
        );
        assert_eq!(stats.sent(), 12);
    }

    #[test]
    fn all_faults_at_once_agree_between_paced_and_flood() {
        let mut cfg = paced(4, 40);
        cfg.faults = Faults {
            loss: 0.1,
            dead_modules: vec![2],
            skip: vec![(0, 7), (3, 8)],
            malformed_every: 5,
            duplicate_every: 7,
            reorder_every: 4,
            ts_jump: vec![(3, 20, 123_456)],
            stray: vec![],
            glitch: vec![(1, 10, 5_000_000_000, 2)],
            skew: vec![(0, 3_000)],
            duplicate: 0.1,
            reorder: (0.1, 3),
            silent: vec![(1, 0.002, 0.003)],
            restart: vec![(3, 0.006)],
            ..Faults::default()
        };
        let (seen, stats) = in_every_mode(cfg);
        assert!(!seen.contains_key(&2));
        assert!(stats.dropped() > 40 && stats.malformed() == 3 * 8 && stats.duplicates() > 0);
    }

    #[test]
    fn a_flood_sends_distinct_consecutive_frames_with_exact_timestamps() {
        for gso in [false, true] {
            let cfg = SimConfig {
                flood: true,
                gso,
                modules: 3,
                count: Some(700),
                seed: SEED,
                ..SimConfig::default()
            };
            let (stats, got) = run_against_receiver(cfg.clone());
            // `frames` checks each datagram's bytes, with values refreshed every 256 frames.
            let seen = frames(&cfg, &stats, &got);
            for m in 0..3 {
                assert_eq!(seen[&m], all_frames(700), "gso {gso}");
            }
            assert_eq!((stats.sent(), stats.send_errors()), (2100, 0));
        }
    }

    #[test]
    fn gso_segments_are_limited_by_the_udp_payload() {
        // 28 readouts = 4032 bytes: at most 16 segments per GSO send.
        let cfg = SimConfig {
            flood: true,
            gso: true,
            batch: 64,
            readouts: 28,
            count: Some(100),
            seed: SEED,
            ..SimConfig::default()
        };
        let (stats, got) = run_against_receiver(cfg.clone());
        assert_eq!(frames(&cfg, &stats, &got)[&0], all_frames(100));
        assert!(got.iter().all(|(_, d)| d.len() == 4032));
    }

    #[test]
    fn a_run_ends_on_duration_or_stop() {
        let rx = Receiver::start();
        let cfg = SimConfig {
            target: rx.addr,
            flood: true,
            duration: Some(Duration::from_millis(30)),
            ..SimConfig::default()
        };
        let stats = run(&cfg, &AtomicBool::new(false)).unwrap();
        assert!(stats.sent() > 0);
        let paced = SimConfig {
            flood: false,
            rate: 1000.0,
            ..cfg.clone()
        };
        let stats = run(&paced, &AtomicBool::new(false)).unwrap();
        assert!(stats.sent() > 0);
        // Stop requested before the start: nothing is sent.
        for flood in [false, true] {
            let c = SimConfig {
                flood,
                duration: None,
                ..cfg.clone()
            };
            assert_eq!(run(&c, &AtomicBool::new(true)).unwrap().sent(), 0);
        }
        rx.finish();
    }

    #[test]
    fn the_summary_names_every_counter() {
        let (stats, _) = run_against_receiver(SimConfig {
            faults: Faults {
                malformed_every: 2,
                ..Faults::default()
            },
            ..paced(2, 4)
        });
        let short = stats.to_string();
        assert!(
            short.starts_with("sent 8 datagrams (12092 bytes) from 2 modules in "),
            "{short}"
        );
        assert!(
            short.contains(
                "faults: 0 dropped, 0 duplicated, 4 malformed, 0 strays, 0 corrupt, \
                 0 reordered, 0 foreign; send errors: 0"
            ),
            "{short}"
        );
        let long = format!("{stats:#}");
        assert_eq!(long.lines().count(), 5, "{long}");
        assert!(
            long.lines()
                .nth(3)
                .unwrap()
                .split_whitespace()
                .eq(["0", "4", "0", "2", "0", "0", "0", "0", "0"]),
            "{long}"
        );
    }

    #[test]
    fn a_stray_is_one_extra_datagram_of_its_frame_stamped_off() {
        const DELTA: i64 = 8_000_000_000;
        let cfg = SimConfig {
            faults: Faults {
                // At the 5000 Hz of `paced`: frame 10.
                stray: vec![(1, 0.002, DELTA)],
                ..Faults::default()
            },
            ..paced(2, 20)
        };
        let (stats, got) = run_against_receiver(cfg.clone());
        assert_eq!((stats.strays(), stats.sent()), (1, 40));
        assert_eq!(stats.modules[1].strays, 1);
        let period = cfg.grid().period_ns();
        let first_ts = |d: &[u8]| u64::from_be_bytes(d[..8].try_into().unwrap());
        let from_1: Vec<u64> = got
            .iter()
            .filter(|(m, _)| *m == 1)
            .map(|(_, d)| first_ts(d))
            .collect();
        let frame10 = stats.first_ts + 10 * period;
        let at = from_1.iter().position(|&t| t == frame10 + DELTA as u64);
        assert_eq!(at, Some(11), "right after frame 10: {from_1:?}");
        let mut rest = from_1.clone();
        rest.remove(11);
        assert_eq!(
            rest,
            (0..20)
                .map(|f| stats.first_ts + f * period)
                .collect::<Vec<_>>()
        );
    }

    /// Per module, in arrival order: the first timestamp of each datagram a
    /// receiver accepts, or None for one it refuses.
    fn arrivals(cfg: &SimConfig, got: &[(Ipv4Addr, Vec<u8>)]) -> BTreeMap<u8, Vec<Option<u64>>> {
        let mut out: BTreeMap<u8, Vec<Option<u64>>> = BTreeMap::new();
        for (src, d) in got {
            let m = module_of(*src, false).unwrap();
            let ts = parse(d, false, *src, false)
                .ok()
                .map(|p| p.readouts[0].primary_ts());
            assert!(cfg.module_numbers().contains(&m));
            out.entry(m).or_default().push(ts);
        }
        out
    }

    #[test]
    fn seeded_duplicates_reorders_and_corruption_are_counted_exactly_and_repeat() {
        let mut cfg = paced(4, 400);
        cfg.faults.duplicate = 0.05;
        cfg.faults.reorder = (0.05, 3);
        cfg.faults.corrupt = 0.05;
        let run = |cfg: &SimConfig| {
            let rx = Receiver::start();
            let mut c = cfg.clone();
            c.target = rx.addr;
            let stats = run(&c, &AtomicBool::new(false)).unwrap();
            (stats, rx.finish())
        };
        let (stats, got) = run(&cfg);
        let period = cfg.grid().period_ns();
        let seen = arrivals(&cfg, &got);
        for (m, st) in seen.keys().zip(&stats.modules) {
            let a = &seen[m];
            let refused = a.iter().filter(|t| t.is_none()).count() as u64;
            let ok: Vec<u64> = a.iter().flatten().copied().collect();
            assert_eq!(
                refused, st.corrupt,
                "module {m}: every corrupt one is refused"
            );
            assert_eq!(ok.len() as u64, st.sent, "module {m}");
            assert!(
                st.corrupt > 5 && st.duplicates > 5 && st.reordered > 5,
                "{st:?}"
            );
            // Copies: back to back, equal.
            let copies = ok.windows(2).filter(|w| w[0] == w[1]).count() as u64;
            assert_eq!(copies, st.duplicates, "module {m}");
            // Each held datagram arrives once behind a later one, at most 3
            // frames late.
            let (mut late, mut max, mut prev) = (0, 0, 0);
            for &t in &ok {
                if t < max && t != prev {
                    late += 1;
                    assert!(max - t <= 3 * period, "module {m}: held too long");
                }
                (max, prev) = (max.max(t), t);
            }
            assert_eq!(late, st.reordered, "module {m}");
            // Every frame once: sent (and maybe copied) or corrupt.
            let mut frames: Vec<u64> = ok.iter().map(|t| (t - stats.first_ts) / period).collect();
            frames.sort_unstable();
            frames.dedup();
            assert_eq!(frames.len() as u64 + st.corrupt, 400, "module {m}");
            assert_eq!(st.dropped, 0);
        }
        assert_eq!(
            stats.corrupt(),
            stats.modules.iter().map(|m| m.corrupt).sum::<u64>()
        );
        // The same seed, the same faults (the clock's start aside).
        let (again, _) = run(&cfg);
        let key = |s: &SimStats| {
            s.modules
                .iter()
                .map(|m| (m.sent, m.duplicates, m.corrupt, m.reordered))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&again), key(&stats));
        // Each kind of corruption occurs, each with its promised length.
        let kinds: Vec<Corruption> = (0..300).map(|f| corruption(SEED, 0, f, 1440)).collect();
        assert!(kinds.contains(&Corruption::Scrambled));
        assert!(kinds.iter().any(|k| matches!(k, Corruption::BadLength(_))));
        for k in kinds {
            if let Corruption::BadLength(n) | Corruption::Truncated(n) = k {
                assert!(n > 0 && n < 1440 && n % READOUT_SIZE != 0, "{k:?}");
            }
        }
    }

    #[test]
    fn a_silent_module_comes_back_and_a_restarted_one_starts_its_clock_again() {
        let mut cfg = paced(2, 200);
        // 5000 frames/s: frames 50..100 silent, frame 120 on restarted.
        cfg.faults.silent = vec![(0, 0.01, 0.02)];
        cfg.faults.restart = vec![(1, 0.024)];
        let rx = Receiver::start();
        cfg.target = rx.addr;
        let stats = run(&cfg, &AtomicBool::new(false)).unwrap();
        let seen = arrivals(&cfg, &rx.finish());
        let period = cfg.grid().period_ns();
        let frame = |t: &Option<u64>| (t.unwrap() - stats.first_ts) / period;
        let m0: Vec<u64> = seen[&0].iter().map(frame).collect();
        let expected: Vec<u64> = (0..50).chain(100..200).collect();
        assert_eq!(m0, expected);
        assert_eq!(stats.modules[0].dropped, 50);
        let m1: Vec<u64> = seen[&1].iter().map(frame).collect();
        let expected: Vec<u64> = (0..120).chain(0..80).collect();
        assert_eq!(m1, expected);
    }

    #[test]
    fn foreign_hosts_send_at_their_rate_from_outside_the_camera() {
        let mut cfg = paced(1, 100);
        cfg.faults.foreign = 10_000.0; // 2 per frame at 5000 frames/s
        let rx = Receiver::start();
        cfg.target = rx.addr;
        let stats = run(&cfg, &AtomicBool::new(false)).unwrap();
        let got = rx.finish();
        let mut by_src: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
        for (src, _) in &got {
            *by_src.entry(*src).or_default() += 1;
        }
        let foreign: Vec<(Ipv4Addr, u64)> = (0..FOREIGN_HOSTS)
            .map(|i| (Ipv4Addr::new(127, 0, 0, FOREIGN_FIRST_OCTET + i), 50))
            .collect();
        assert_eq!(stats.foreign, foreign);
        for (a, n) in &foreign {
            assert_eq!(by_src.get(a), Some(n), "{by_src:?}");
        }
        assert_eq!(by_src[&cfg.source_addr(0)], 100);
        assert!(format!("{stats:#}").contains("foreign 127.0.0.200: 50 datagrams"));
        // Paced only, from bound sources.
        cfg.flood = true;
        assert!(cfg.validate().unwrap_err().contains("foreign"));
    }
}
