//! Per-module health: is each module heard, at what rate, how often is it
//! missing from events, and does its clock agree with the camera's.
//!
//! [`Health::update`] is called by the stage that holds the builder, at
//! most every 100 ms, and reads only the builder's counters and timeline: it
//! never touches a datagram. It keeps ten one-second samples of each
//! module's counters (fixed memory), from which rates and shares are taken.
//! It says what changed ([`Changes`]) so the daemon logs each transition
//! once; it logs nothing itself.

use std::collections::VecDeque;

use crate::builder::Builder;
use crate::packet::N_MODULES;

/// Samples are taken this far apart.
const SAMPLE_EVERY_NS: u64 = 1_000_000_000;
/// Rates and shares are over this many samples (10 s).
const SAMPLES: usize = 10;
/// A module is persistently offset after this many samples in a row off
/// by more than the tolerance, and in line again after as many within it.
const OFFSET_SAMPLES: u8 = 3;
/// The smallest offset tolerance: the estimate holds the arrival spread
/// between modules (which send in turn), several ms on a loaded host.
const MIN_OFFSET_TOLERANCE_NS: u64 = 10_000_000;

/// One module's health.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModuleHealth {
    /// Watched: heard at least once since the daemon started, or named by
    /// `--modules`.
    pub watched: bool,
    /// Arrival of its last datagram taken (CLOCK_REALTIME ns; 0: never).
    pub last_heard_ns: u64,
    /// Nothing heard for longer than `--module-timeout`.
    pub silent: bool,
    /// Datagrams accepted per second over the last ~10 s.
    pub rate: f64,
    /// Share (0..=1) of the events of the last ~10 s it was missing from.
    pub missing_share: f64,
    /// Its clock's offset from the camera's median, ns (None: unknown).
    pub offset_ns: Option<i64>,
    /// The offset has been over the tolerance for 3 s.
    pub offset: bool,
    /// Off the camera's timeline (its datagrams are not built).
    pub off_timeline: bool,
}

impl ModuleHealth {
    /// Heard, on time, and on the camera's clock.
    pub fn healthy(&self) -> bool {
        self.watched && !self.silent && !self.offset && !self.off_timeline
    }
}

/// What changed in one update, as module masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub went_silent: u32,
    pub heard_again: u32,
    pub went_offset: u32,
    pub back_in_line: u32,
}

#[derive(Clone, Copy)]
struct Sample {
    at_ns: u64,
    datagrams: [u64; N_MODULES],
    missing: [u64; N_MODULES],
    events: u64,
}

/// The health of every module, updated from the builder.
pub struct Health {
    modules: [ModuleHealth; N_MODULES],
    samples: VecDeque<Sample>,
    /// Samples in a row off (positive) or in line (negative) since the
    /// last change of `offset`.
    offset_run: [i8; N_MODULES],
    tolerance: [u64; N_MODULES],
    timeout_ns: u64,
}

impl Health {
    /// `fixed`: the modules given by `--modules` (watched from the start,
    /// as if heard at `now_ns`); `timeout_ns`: `--module-timeout`.
    pub fn new(fixed: u32, timeout_ns: u64, now_ns: u64) -> Health {
        let mut modules = [ModuleHealth::default(); N_MODULES];
        for (m, h) in modules.iter_mut().enumerate() {
            if fixed & (1 << m) != 0 {
                h.watched = true;
                h.last_heard_ns = now_ns;
            }
        }
        Health {
            modules,
            samples: VecDeque::with_capacity(SAMPLES + 1),
            offset_run: [0; N_MODULES],
            tolerance: [MIN_OFFSET_TOLERANCE_NS; N_MODULES],
            timeout_ns,
        }
    }

    /// Module `m` was heard at `arrival_ns` although the builder did not
    /// take the datagram (between runs).
    pub fn heard(&mut self, m: usize, arrival_ns: u64) {
        let h = &mut self.modules[m];
        if arrival_ns > h.last_heard_ns {
            h.last_heard_ns = arrival_ns;
            h.watched = true;
        }
    }

    /// `--module-timeout`, as the current run has it.
    pub fn set_timeout(&mut self, ns: u64) {
        self.timeout_ns = ns;
    }

    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }

    pub fn modules(&self) -> &[ModuleHealth; N_MODULES] {
        &self.modules
    }

    /// Watched modules that are silent.
    pub fn silent(&self) -> u32 {
        self.mask(|h| h.watched && h.silent)
    }

    fn mask(&self, f: impl Fn(&ModuleHealth) -> bool) -> u32 {
        (0..N_MODULES)
            .filter(|&m| f(&self.modules[m]))
            .fold(0, |a, m| a | 1 << m)
    }

    /// Brings the health up to `now_ns` (wall clock) from the builder.
    pub fn update(&mut self, now_ns: u64, b: &Builder) -> Changes {
        let before = (
            self.mask(|h| h.watched && h.silent),
            self.mask(|h| h.offset),
        );
        let s = b.stats();
        let tl = b.timeline();
        let off = tl.off();
        for (m, h) in self.modules.iter_mut().enumerate() {
            if let Some(t) = b.last_heard(m)
                && t > h.last_heard_ns
            {
                h.last_heard_ns = t;
                h.watched = true;
            }
            h.off_timeline = off & (1 << m) != 0;
            // Off the timeline it is heard, only not built: not silent.
            h.silent = h.watched
                && !h.off_timeline
                && now_ns.saturating_sub(h.last_heard_ns) > self.timeout_ns;
        }
        self.offsets(b);
        if self
            .samples
            .back()
            .is_none_or(|l| now_ns >= l.at_ns + SAMPLE_EVERY_NS)
        {
            self.sample(now_ns, s);
        }
        let after = (
            self.mask(|h| h.watched && h.silent),
            self.mask(|h| h.offset),
        );
        Changes {
            went_silent: after.0 & !before.0,
            heard_again: before.0 & !after.0,
            went_offset: after.1 & !before.1,
            back_in_line: before.1 & !after.1,
        }
    }

    /// Each module's clock offset: its newest timestamp less its arrival,
    /// against the median of the modules heard (a module off the timeline:
    /// the offset the timeline measured).
    #[allow(clippy::needless_range_loop)] // three arrays indexed by module
    fn offsets(&mut self, b: &Builder) {
        let tl = b.timeline();
        let mut lead = [0i128; N_MODULES];
        let mut n = 0;
        let mut sorted = [0i128; N_MODULES];
        for m in 0..N_MODULES {
            let h = &self.modules[m];
            if let Some(l) = tl.line(m) {
                let period = l.spacing.saturating_mul(l.readouts);
                self.tolerance[m] = (period / 4).max(MIN_OFFSET_TOLERANCE_NS);
            }
            if let Some(l) = tl.line(m)
                && h.watched
                && !h.silent
                && !h.off_timeline
            {
                lead[m] = i128::from(l.last) - i128::from(l.arrival);
                sorted[n] = lead[m];
                n += 1;
            }
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable();
        let median = (n > 0).then(|| sorted[n / 2]);
        for m in 0..N_MODULES {
            let h = &mut self.modules[m];
            h.offset_ns = if h.off_timeline {
                Some(tl.off_offset(m))
            } else {
                match (tl.line(m), median) {
                    (Some(_), Some(med)) if h.watched && !h.silent => {
                        Some((lead[m] - med).clamp(i64::MIN.into(), i64::MAX.into()) as i64)
                    }
                    _ => None,
                }
            };
        }
    }

    /// Takes a sample: rates, shares, and the persistence of offsets.
    fn sample(&mut self, now_ns: u64, s: &crate::builder::BuilderStats) {
        let new = Sample {
            at_ns: now_ns,
            datagrams: std::array::from_fn(|m| s.modules[m].datagrams),
            missing: std::array::from_fn(|m| s.modules[m].missing),
            events: s.events(),
        };
        if self.samples.len() == SAMPLES + 1 {
            self.samples.pop_front();
        }
        self.samples.push_back(new);
        let old = self.samples[0];
        let dt = now_ns.saturating_sub(old.at_ns) as f64 / 1e9;
        let events = new.events - old.events;
        for m in 0..N_MODULES {
            let h = &mut self.modules[m];
            h.rate = if dt > 0.0 {
                (new.datagrams[m] - old.datagrams[m]) as f64 / dt
            } else {
                0.0
            };
            h.missing_share = if events > 0 {
                (new.missing[m] - old.missing[m]) as f64 / events as f64
            } else {
                0.0
            };
            let over = h
                .offset_ns
                .is_some_and(|o| o.unsigned_abs() > self.tolerance[m]);
            let run = &mut self.offset_run[m];
            *run = match (over, *run) {
                (true, r) if r > 0 => r.saturating_add(1),
                (true, _) => 1,
                (false, r) if r < 0 => r.saturating_sub(1),
                (false, _) => -1,
            };
            if *run >= OFFSET_SAMPLES as i8 {
                h.offset = true;
            } else if *run <= -(OFFSET_SAMPLES as i8) || h.silent {
                h.offset = false;
            }
        }
    }

    /// How far module `m`'s clock may be from the camera's: a quarter of
    /// its datagram period, at least 10 ms (the estimate holds the arrival
    /// spread between modules).
    pub fn tolerance_ns(&self, m: usize) -> u64 {
        self.tolerance[m]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{BuilderConfig, Datagram, Event, EventSink};

    struct Discard;
    impl EventSink for Discard {
        fn event(&mut self, _: Event<'_>) {}
    }

    fn push(b: &mut Builder, m: u8, ts: u64, arrival: u64) {
        let mut bytes = Vec::new();
        tm_ss_sim::datagram(1, m, ts, 4_000_000, 10, &mut bytes);
        b.push(
            Datagram {
                payload: &bytes,
                src: std::net::Ipv4Addr::new(127, 0, 0, 100 + m),
                arrival_ns: arrival,
                truncated: false,
            },
            &mut Discard,
        );
    }

    #[test]
    fn a_module_is_silent_after_the_timeout_and_heard_again_after() {
        let mut b = Builder::new(BuilderConfig::default());
        let t0 = 1_000_000_000_000;
        let mut h = Health::new(0, 2_000_000_000, t0);
        let sec = 1_000_000_000;
        for i in 0..3 {
            for m in 0..2 {
                push(&mut b, m, t0 + i * sec, t0 + i * sec + 1000);
            }
            h.update(t0 + i * sec + 2000, &b);
        }
        assert!(h.modules()[0].healthy() && h.modules()[1].healthy());
        assert!(!h.modules()[2].watched, "never heard: not watched");
        // Module 1 stops; module 0 goes on.
        let mut went = 0;
        for i in 3..8 {
            push(&mut b, 0, t0 + i * sec, t0 + i * sec + 1000);
            went |= h.update(t0 + i * sec + 2000, &b).went_silent;
        }
        assert_eq!(went, 0b10, "module 1 went silent, once");
        assert!(!h.modules()[1].healthy() && h.modules()[0].healthy());
        assert!(h.modules()[0].rate > 0.5 && h.modules()[1].rate < 0.9);
        push(&mut b, 1, t0 + 8 * sec, t0 + 8 * sec + 1000);
        let c = h.update(t0 + 8 * sec + 2000, &b);
        assert_eq!((c.heard_again, c.went_silent), (0b10, 0));
        assert!(h.modules()[1].healthy());
    }

    #[test]
    fn a_clock_offset_persisting_three_seconds_is_flagged_and_cleared() {
        let mut b = Builder::new(BuilderConfig::default());
        let t0 = 1_000_000_000_000;
        let sec = 1_000_000_000;
        let mut h = Health::new(0, 2_000_000_000, t0);
        let mut c = Changes::default();
        // Module 2's timestamps are 15 ms ahead of the others' (and of the
        // arrival clock): over a quarter of its 40 ms period, well inside
        // the timeline's tolerance of two periods.
        for i in 0..5 {
            for m in 0..4u8 {
                let skew = if m == 2 { 15_000_000 } else { 0 };
                push(&mut b, m, t0 + i * sec + skew, t0 + i * sec + 1000);
            }
            let ch = h.update(t0 + i * sec + 2000, &b);
            c.went_offset |= ch.went_offset;
        }
        assert_eq!(c.went_offset, 0b100, "{:?}", h.modules()[2]);
        assert!((14_900_000..15_100_000).contains(&h.modules()[2].offset_ns.unwrap()));
        assert!(!h.modules()[2].healthy() && h.modules()[1].healthy());
        for i in 5..9 {
            for m in 0..4u8 {
                push(&mut b, m, t0 + i * sec, t0 + i * sec + 1000);
            }
            c.back_in_line |= h.update(t0 + i * sec + 2000, &b).back_in_line;
        }
        assert_eq!(c.back_in_line, 0b100);
        assert!(h.modules()[2].healthy());
    }
}
