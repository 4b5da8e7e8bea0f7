//! The camera's timeline: which datagrams carry timestamps worth building.
//!
//! This module owns each module's *line* (the span of primary timestamps of
//! its newest datagram taken, with the datagram period it implies), the
//! datagrams held as suspect, and the judgement of every datagram against
//! both. It decides; the builder acts (places readouts, flushes, counts).
//! It never reads a clock, never allocates after construction (suspects
//! are copied into buffers made up front) and never logs.
//!
//! # The rules (docs/design.md, "The camera's timeline")
//!
//! The camera's modules share one clock (TACK): the readouts of one moment
//! carry the same primary timestamp in every module, and every module sends
//! one datagram per period `P` (10 readouts, 40 ms at the real rate; `P` is
//! read off each datagram's own timestamps). The *camera's time* `C` is what
//! the modules agree on: the median of the other active modules' newest
//! timestamps — never the largest timestamp seen, so one datagram cannot
//! move it.
//!
//! 1. **Along its own line.** A datagram that continues its module's line
//!    (its first timestamp after the line, its last within two periods of
//!    the line's end: at most one datagram lost), repeats it (a duplicate),
//!    or precedes it (by at most two periods plus the reorder grace) and
//!    arrives within the reorder grace of the line's datagram (a datagram
//!    overtaken by later ones of its module) is taken. This is every datagram of a
//!    healthy camera, and costs a few comparisons.
//! 2. **Against the camera.** Any other datagram (a gap, a jump, a module's
//!    first datagram) is taken if it lies within one period of `C`: its
//!    first timestamp no more than a period ahead of `C` (moved on by the
//!    arrival time since, so a camera-wide gap in the data is no jump) and
//!    its last no more than a period behind — or, for a module's first
//!    datagram, behind but no older than the oldest event the builder still
//!    holds: it fills events that are waiting for it (modules that join a
//!    flood one after another, each a batch behind the first). A module
//!    with nobody to agree with is taken as it is (the first module of a run).
//! 3. **Otherwise it is suspect**, and held (a copy, one per module):
//!    * the module's next datagram back in line shows it was a stray: it is
//!      counted out of sync (datagram and readouts) and nothing else moved;
//!    * if the module continues on the suspect's timeline, it is **off the
//!      timeline**: both are counted out of sync, the builder stops waiting
//!      for it, and every datagram it sends is counted out of sync until
//!      one is back in line (rule 2);
//!    * if more than half of the active modules are suspect or off on one
//!      timeline, the **camera's clock stepped** (forward or back, any size):
//!      the builder ends the old timeline (flushes what it holds) and builds
//!      the held datagrams and this one on the new one. Nothing is lost.
//!
//! A module is *active* while it has sent anything within the module
//! timeout (arrival time). All times are the builder's: arrival stamps and
//! primary timestamps, so a replay judges exactly as the live run did.

use crate::packet::{N_MODULES, READOUT_SIZE, Readout};

/// Most readouts a suspect datagram may carry to be held (a real module
/// sends 10); a longer one off the timeline is counted out of sync at once.
pub const HELD_READOUTS: usize = 28;
const HELD_BYTES: usize = HELD_READOUTS * READOUT_SIZE;

/// Consecutive suspect datagrams of one module, each continuing the one
/// before, that make the module off the timeline.
const OFF_AFTER: u32 = 2;

/// A span of primary timestamps: one datagram's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
    /// Readouts in the datagram.
    pub readouts: u64,
    /// Time between its readouts (ns); zero while unknown (one readout).
    pub spacing: u64,
    /// When it arrived (ns).
    pub arrival: u64,
}

impl Span {
    /// The datagram period it implies (its readouts × their spacing), zero
    /// if unknown.
    fn period(&self) -> u64 {
        self.spacing.saturating_mul(self.readouts)
    }

    /// Whether `self` and `other` lie within `near` of each other.
    fn overlaps(&self, other: &Span, near: u64) -> bool {
        self.first <= other.last.saturating_add(near)
            && other.first <= self.last.saturating_add(near)
    }
}

/// The timestamps the active modules cover now (see `camera_time`).
#[derive(Clone, Copy, Debug)]
struct CameraSpan {
    /// The oldest of their newest timestamps.
    oldest: u64,
    /// The newest of them, moved on by the arrival time since.
    newest: u64,
}

/// A datagram held as suspect.
struct Held {
    span: Span,
    readouts: usize,
    len: usize,
}

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Build it.
    Take,
    /// Held as suspect: neither built nor lost yet.
    Held,
    /// Off the timeline: counted out of sync, not built.
    OutOfSync,
    /// The camera's clock stepped. End the old timeline, then build the held
    /// datagrams of the modules in `held` ([`Timeline::held_in_arrival_order`])
    /// and this one.
    Step { held: u32 },
}

/// What the timeline counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimelineCounters {
    /// Datagrams counted out of sync (strays, and everything a module sent
    /// while off the timeline).
    pub datagrams: u64,
    /// Their readouts.
    pub readouts: u64,
    /// Times the module went off the timeline.
    pub off_episodes: u64,
}

/// The camera's timeline. See the module documentation.
pub struct Timeline {
    lines: [Option<Span>; N_MODULES],
    /// Arrival of the module's newest datagram of any kind (is it active?).
    seen: [Option<u64>; N_MODULES],
    held: [Option<Held>; N_MODULES],
    n_held: usize,
    held_bytes: Vec<Box<[u8]>>,
    /// Consecutive suspects of each module, each continuing the one before.
    runs: [u32; N_MODULES],
    /// Modules off the timeline.
    off: u32,
    /// Newest datagram of an off module (for agreement) and its offset from
    /// the camera's time when it went off.
    off_span: [Option<Span>; N_MODULES],
    off_offset: [i64; N_MODULES],
    counters: [TimelineCounters; N_MODULES],
    /// Some counter changed since [`Timeline::take_changed`] last looked.
    changed: bool,
    steps: u64,
    reorder_ns: u64,
    active_ns: u64,
    /// Tolerance when no period is known (datagrams of one readout).
    fallback_ns: u64,
    /// The smallest tolerance: the builder's matching window must fit.
    min_period_ns: u64,
}

impl Timeline {
    /// A timeline whose modules count as active for `active_ns` after their
    /// last datagram, with a reorder grace of `reorder_ns`. `fallback_ns`
    /// stands for the period while none is known, and every tolerance is at
    /// least `min_period_ns`.
    pub fn new(reorder_ns: u64, active_ns: u64, fallback_ns: u64, min_period_ns: u64) -> Timeline {
        Timeline {
            lines: [None; N_MODULES],
            seen: [None; N_MODULES],
            held: std::array::from_fn(|_| None),
            n_held: 0,
            held_bytes: (0..N_MODULES)
                .map(|_| vec![0u8; HELD_BYTES].into_boxed_slice())
                .collect(),
            runs: [0; N_MODULES],
            off: 0,
            off_span: [None; N_MODULES],
            off_offset: [0; N_MODULES],
            counters: [TimelineCounters::default(); N_MODULES],
            changed: false,
            steps: 0,
            reorder_ns,
            active_ns,
            fallback_ns,
            min_period_ns,
        }
    }

    /// Modules currently off the timeline.
    pub fn off(&self) -> u32 {
        self.off
    }

    /// How far module `m`'s timestamps were from the camera's when it went
    /// off the timeline (ns, positive: ahead).
    pub fn off_offset(&self, m: usize) -> i64 {
        self.off_offset[m]
    }

    /// Datagrams held as suspect right now.
    pub fn n_held(&self) -> usize {
        self.n_held
    }

    pub fn counters(&self, m: usize) -> TimelineCounters {
        self.counters[m]
    }

    /// Whether any counter or the held datagrams changed since the last call.
    #[inline]
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Camera clock steps followed.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Module `m`'s line: its newest datagram taken.
    pub fn line(&self, m: usize) -> Option<Span> {
        self.lines[m]
    }

    /// The span of a datagram of module `m` with readouts `rs` arriving at
    /// `arrival`.
    fn span_of(&self, m: usize, rs: &[Readout], arrival: u64) -> Span {
        let (first, last) = (rs[0].primary_ts(), rs[rs.len() - 1].primary_ts());
        let k = rs.len() as u64;
        let spacing = if k >= 2 {
            (last - first) / (k - 1)
        } else {
            self.lines[m].map_or(0, |l| l.spacing)
        };
        Span {
            first,
            last,
            readouts: k,
            spacing,
            arrival,
        }
    }

    /// The tolerance for a datagram period `p`.
    fn tol(&self, p: u64) -> u64 {
        if p == 0 {
            self.fallback_ns
        } else {
            p.max(self.min_period_ns)
        }
    }

    fn active(&self, m: usize, now: u64) -> bool {
        self.seen[m].is_some_and(|t| now < t.saturating_add(self.active_ns))
    }

    /// Judges one datagram of module `m` (readouts `rs`, already checked by
    /// `packet::parse`, bytes `payload`) arriving at `arrival`. `pending_from`
    /// gives the oldest primary timestamp the builder still holds an event
    /// for (None if it holds none), asked only when needed: a module's first datagram from there on
    /// fills events still waiting, so it is not judged behind the camera.
    pub fn judge(
        &mut self,
        m: usize,
        rs: &[Readout],
        payload: &[u8],
        arrival: u64,
        pending_from: impl FnOnce() -> Option<u64>,
    ) -> Verdict {
        self.seen[m] = Some(arrival);
        let bit = 1u32 << m;
        // The common case, every datagram of a healthy camera: the next one
        // of the module's line, as many readouts as the last and as closely
        // spaced. Rule 1 without a division: the line keeps its spacing.
        let (first, last) = (rs[0].primary_ts(), rs[rs.len() - 1].primary_ts());
        if self.off & bit == 0
            && self.held[m].is_none()
            && let Some(line) = &mut self.lines[m]
            && line.spacing != 0
            && line.readouts == rs.len() as u64
        {
            let period = line.spacing.saturating_mul(line.readouts);
            let near = period.max(self.min_period_ns).saturating_mul(2);
            let spread = line.spacing.saturating_mul(2 * (line.readouts - 1));
            if first > line.last
                && first <= line.last.saturating_add(near)
                && last - first <= spread
            {
                line.first = first;
                line.last = last;
                line.arrival = arrival;
                return Verdict::Take;
            }
        }
        let d = self.span_of(m, rs, arrival);
        if self.off & bit == 0
            && let Some(line) = self.lines[m]
            && self.along(&line, &d)
        {
            self.drop_held(m);
            self.extend_line(m, &line, d);
            return Verdict::Take;
        }
        let Some(camera) = self.camera_time(m, arrival) else {
            // Nobody to agree with: a module's first datagram is taken as it
            // is; a lone module that jumps is the whole camera stepping.
            if self.lines[m].is_none() || self.off & bit != 0 {
                self.off &= !bit;
                self.lines[m] = Some(d);
                return Verdict::Take;
            }
            return self.step(m, d, 0);
        };
        let (camera, span) = camera;
        let tol = self.tol(camera.period());
        let ahead_limit = span.newest;
        let in_line = d.first <= ahead_limit.saturating_add(tol)
            && d.last <= ahead_limit.saturating_add(tol.saturating_mul(2))
            && (d.last.saturating_add(tol) >= span.oldest
                || (self.lines[m].is_none() && pending_from().is_some_and(|p| d.first >= p)));
        if in_line {
            self.drop_held(m);
            self.off &= !bit;
            self.off_span[m] = None;
            if self.lines[m].is_none_or(|l| d.first > l.last) {
                self.lines[m] = Some(d);
            }
            return Verdict::Take;
        }
        // Off the camera's time: suspect.
        let near = self.tol(d.period().max(camera.period())).saturating_mul(2);
        let continues = |s: &Span| d.first > s.last && d.last <= s.last.saturating_add(near);
        if self.off & bit == 0 {
            match &self.held[m] {
                Some(h) if continues(&h.span) => self.runs[m] += 1,
                Some(_) => {
                    self.drop_held(m);
                    self.runs[m] = 1;
                }
                None => self.runs[m] = 1,
            }
        }
        let agreeing = self.agreeing(m, &d, near, arrival);
        if let Some(held) = agreeing {
            return self.step(m, d, held);
        }
        if self.off & bit != 0 {
            self.count_out_of_sync(m, rs.len());
            self.off_span[m] = Some(d);
            return Verdict::OutOfSync;
        }
        if self.runs[m] >= OFF_AFTER {
            // It goes on where the suspect went: the module is off.
            self.drop_held(m);
            self.count_out_of_sync(m, rs.len());
            self.off |= bit;
            self.off_span[m] = Some(d);
            // How far off the next readout the camera expects.
            let due = camera.last.saturating_add(camera.spacing);
            self.off_offset[m] = clamp_i64(d.first as i128 - due as i128);
            self.counters[m].off_episodes += 1;
            self.changed = true;
            self.runs[m] = 0;
            return Verdict::OutOfSync;
        }
        if payload.len() > HELD_BYTES {
            self.count_out_of_sync(m, rs.len());
            return Verdict::OutOfSync;
        }
        self.held_bytes[m][..payload.len()].copy_from_slice(payload);
        self.n_held += 1;
        self.changed = true;
        self.held[m] = Some(Held {
            span: d,
            readouts: rs.len(),
            len: payload.len(),
        });
        Verdict::Held
    }

    /// Rule 1: `d` continues, repeats or just precedes the module's line.
    fn along(&self, line: &Span, d: &Span) -> bool {
        let near = self.tol(line.period()).saturating_mul(2);
        // Its readouts no further apart than twice the line's: a datagram
        // cannot reach far ahead by spreading them.
        let plausible = line.spacing == 0 || d.spacing <= line.spacing.saturating_mul(2);
        let continues =
            d.first > line.last && d.first <= line.last.saturating_add(near) && plausible;
        let repeats = d.first >= line.first && d.last <= line.last;
        // Behind the line by at most what the reorder grace can cover: its
        // successor was sent (camera time runs with the wall clock) at
        // least `line.first - d.last` before the line's datagram, so one
        // further behind than the grace allows is past it anyway (then the
        // builder counts it late, not out of sync: it is the module's own).
        let behind = near.saturating_add(self.reorder_ns);
        let precedes = d.last < line.first
            && d.first.saturating_add(behind) >= line.first
            && d.arrival <= line.arrival.saturating_add(self.reorder_ns);
        continues || repeats || precedes
    }

    /// Moves module `m`'s line on to `d` if `d` is newer than `line`.
    fn extend_line(&mut self, m: usize, line: &Span, mut d: Span) {
        if d.first <= line.last {
            return;
        }
        if d.readouts == 1 {
            // One readout per datagram: the gap is the spacing.
            let gap = d.first - line.last;
            d.spacing = if line.spacing == 0 {
                gap
            } else {
                line.spacing.min(gap)
            };
        }
        self.lines[m] = Some(d);
    }

    /// The camera's time as module `m` sees it at `now`: the line (lower
    /// median by its last timestamp) of the other active modules on the
    /// timeline, and the span the others cover (None if there are none).
    ///
    /// The span runs from the oldest of their newest timestamps to the
    /// newest, each moved on by the arrival time since (so a module that
    /// fell silent does not hold it back), the extreme one on each side left
    /// out once there are four: modules can be a batch apart (a flood sends
    /// each module's 64 datagrams in turn; the kernel drops some of them
    /// under overload), and a datagram anywhere among them is in line.
    fn camera_time(&self, m: usize, now: u64) -> Option<(Span, CameraSpan)> {
        let mut v = [Span {
            first: 0,
            last: 0,
            readouts: 0,
            spacing: 0,
            arrival: 0,
        }; N_MODULES];
        let mut ahead = [0u64; N_MODULES];
        let mut n = 0;
        for (x, line) in self.lines.iter().enumerate() {
            if x == m || self.off & (1 << x) != 0 || !self.active(x, now) {
                continue;
            }
            if let Some(l) = line {
                v[n] = *l;
                ahead[n] = l.last.saturating_add(now.saturating_sub(l.arrival));
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        let trim = usize::from(n >= 4);
        let v = &mut v[..n];
        let ahead = &mut ahead[..n];
        v.sort_unstable_by_key(|s| s.last);
        ahead.sort_unstable();
        let span = CameraSpan {
            oldest: v[trim].last,
            newest: ahead[n - 1 - trim],
        };
        Some((v[(n - 1) / 2], span))
    }

    /// If more than half of the active modules (`m` with `d` among them) are
    /// suspect or off on `d`'s timeline: the held modules among them.
    fn agreeing(&self, m: usize, d: &Span, near: u64, now: u64) -> Option<u32> {
        let mut active = 0;
        let mut agree = 0;
        let mut held = 0u32;
        for x in 0..N_MODULES {
            if x != m && !self.active(x, now) {
                continue;
            }
            active += 1;
            if x == m {
                agree += 1;
                if self.off & (1 << m) == 0
                    && self.held[m]
                        .as_ref()
                        .is_some_and(|h| d.first > h.span.last && h.span.overlaps(d, near))
                {
                    held |= 1 << m;
                }
                continue;
            }
            if let Some(h) = &self.held[x]
                && h.span.overlaps(d, near)
            {
                agree += 1;
                held |= 1 << x;
            } else if self.off & (1 << x) != 0
                && self.off_span[x].is_some_and(|s| s.overlaps(d, near))
            {
                agree += 1;
            }
        }
        (2 * agree > active).then_some(held)
    }

    /// The camera's clock stepped to `d`'s timeline: every line starts
    /// afresh there. Held datagrams of modules not in `held` were strays.
    fn step(&mut self, m: usize, d: Span, held: u32) -> Verdict {
        self.steps += 1;
        for x in 0..N_MODULES {
            if held & (1 << x) == 0 {
                self.drop_held(x);
            }
            self.lines[x] = None;
            self.runs[x] = 0;
            self.off_span[x] = None;
        }
        self.off = 0;
        // Lines of the modules built on the new timeline, oldest first.
        for x in 0..N_MODULES {
            if let Some(h) = &self.held[x] {
                self.lines[x] = Some(h.span);
            }
        }
        if self.lines[m].is_none_or(|l| d.first > l.last) {
            self.lines[m] = Some(d);
        }
        Verdict::Step { held }
    }

    /// The held datagram of module `m`: its bytes, readouts and arrival, and
    /// forgets it (for [`Verdict::Step`]). Give the bytes back with
    /// [`Timeline::return_held`] when built.
    pub fn take_held(&mut self, m: usize) -> Option<(Box<[u8]>, usize, u64)> {
        let h = self.held[m].take()?;
        self.n_held -= 1;
        let bytes = std::mem::take(&mut self.held_bytes[m]);
        Some((bytes, h.len, h.span.arrival))
    }

    pub fn return_held(&mut self, m: usize, bytes: Box<[u8]>) {
        self.held_bytes[m] = bytes;
    }

    /// Modules of `mask` in the order their held datagrams arrived.
    pub fn held_in_arrival_order(&self, mask: u32) -> impl Iterator<Item = usize> + use<> {
        let mut order: [(u64, usize); N_MODULES] = [(u64::MAX, 0); N_MODULES];
        let mut n = 0;
        for (x, h) in self.held.iter().enumerate() {
            if mask & (1 << x) != 0
                && let Some(h) = h
            {
                order[n] = (h.span.arrival, x);
                n += 1;
            }
        }
        order[..n].sort_unstable();
        order.into_iter().take(n).map(|(_, x)| x)
    }

    /// A held datagram proved a stray: counted out of sync.
    fn drop_held(&mut self, m: usize) {
        if let Some(h) = self.held[m].take() {
            self.n_held -= 1;
            self.count_out_of_sync(m, h.readouts);
        }
    }

    /// The run ends: every held datagram is counted out of sync.
    pub fn drop_all_held(&mut self) {
        for m in 0..N_MODULES {
            self.drop_held(m);
        }
    }

    fn count_out_of_sync(&mut self, m: usize, readouts: usize) {
        self.changed = true;
        let c = &mut self.counters[m];
        c.datagrams += 1;
        c.readouts += readouts as u64;
    }

    /// Forgets every line (the camera fell silent): held datagrams are
    /// counted out of sync. Counters stay.
    pub fn reset(&mut self) {
        for m in 0..N_MODULES {
            self.drop_held(m);
            self.lines[m] = None;
            self.runs[m] = 0;
            self.off_span[m] = None;
        }
        self.off = 0;
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;
    /// Readout spacing 4 ms, 10 per datagram: period 40 ms.
    const P: u64 = 40 * MS;

    fn frame(f: u64, shift: i64) -> Vec<Readout> {
        (0..10)
            .map(|i| {
                let t = (T0 + f * P + i * 4 * MS).saturating_add_signed(shift);
                Readout::new(t, 0, &[0; 64])
            })
            .collect()
    }

    fn judge(t: &mut Timeline, m: usize, f: u64, shift: i64, at: u64) -> Verdict {
        let rs = frame(f, shift);
        t.judge(m, &rs, rs.as_bytes(), at, || None)
    }

    fn timeline() -> Timeline {
        Timeline::new(2 * MS, 2000 * MS, 100 * MS, 20_000)
    }

    /// 8 modules on frames 0..n, arriving with the camera (40 ms apart).
    fn camera(t: &mut Timeline, frames: std::ops::Range<u64>) {
        for f in frames {
            for m in 0..8 {
                assert_eq!(judge(t, m, f, 0, T0 + f * P + m as u64), Verdict::Take);
            }
        }
    }

    #[test]
    fn a_module_a_batch_behind_is_taken_while_its_events_wait() {
        // A flood sends each module's batch of 64 frames in turn, within
        // microseconds: module 4 starts 63 frames behind modules 0..3.
        let mut t = timeline();
        let at = T0;
        for m in 0..4 {
            for f in 0..64 {
                // Frame 0's events wait, as they would in the builder.
                let rs = frame(f, 0);
                let v = t.judge(m, &rs, rs.as_bytes(), at + f, || Some(T0));
                assert_eq!(v, Verdict::Take);
            }
        }
        // With no event waiting for it, module 4's first datagram is behind
        // the camera; so it is if it is older than the oldest waiting one.
        let rs = frame(0, 0);
        assert_eq!(
            t.judge(4, &rs, rs.as_bytes(), at + 100, || None),
            Verdict::Held
        );
        let later = Some(T0 + P);
        assert_eq!(
            t.judge(5, &rs, rs.as_bytes(), at + 101, || later),
            Verdict::Held
        );
        // While the events of frame 0 wait for it, it fills them.
        let waiting = Some(T0);
        assert_eq!(
            t.judge(6, &rs, rs.as_bytes(), at + 102, || waiting),
            Verdict::Take
        );
    }

    #[test]
    fn a_stray_is_held_then_counted_when_its_module_goes_on() {
        let mut t = timeline();
        camera(&mut t, 0..5);
        let at = T0 + 5 * P;
        assert_eq!(judge(&mut t, 1, 5, 8_000 * MS as i64, at), Verdict::Held);
        assert_eq!(judge(&mut t, 1, 5, 0, at + 1), Verdict::Take);
        assert_eq!(t.counters(1).datagrams, 1);
        assert_eq!(t.counters(1).readouts, 10);
        assert_eq!((t.off(), t.steps()), (0, 0));
    }

    #[test]
    fn a_module_that_goes_on_off_the_camera_is_off_until_back() {
        let mut t = timeline();
        camera(&mut t, 0..5);
        for (f, back) in [(5, -100), (6, -100), (7, -100), (8, 0)] {
            let at = T0 + f * P + 5;
            for m in [0, 1, 2, 3, 4, 6, 7] {
                assert_eq!(judge(&mut t, m, f, 0, at), Verdict::Take);
            }
            let v = judge(&mut t, 5, f, back * MS as i64, at + 1);
            let want = match f {
                5 => Verdict::Held,
                8 => Verdict::Take,
                _ => Verdict::OutOfSync,
            };
            assert_eq!(v, want, "frame {f}");
            if f == 6 {
                assert_eq!(t.off(), 1 << 5);
                assert!(t.off_offset(5) < -60 * MS as i64);
            }
        }
        assert_eq!(t.off(), 0, "back in line");
        assert_eq!(t.counters(5).datagrams, 3);
        assert_eq!(t.counters(5).off_episodes, 1);
    }

    #[test]
    fn a_camera_wide_step_is_followed_and_nothing_is_lost() {
        for shift in [
            -5_000 * MS as i64,
            3_000 * MS as i64,
            -1000 * 1000 * MS as i64,
        ] {
            let mut t = timeline();
            camera(&mut t, 0..5);
            let at = T0 + 5 * P;
            let mut verdicts = Vec::new();
            for m in 0..8 {
                verdicts.push(judge(&mut t, m, 5, shift, at + m as u64));
            }
            assert_eq!(&verdicts[..4], &[Verdict::Held; 4], "{shift}");
            assert_eq!(verdicts[4], Verdict::Step { held: 0b1111 }, "{shift}");
            assert_eq!(&verdicts[5..], &[Verdict::Take; 3], "{shift}");
            assert_eq!(
                t.held_in_arrival_order(0b1111).collect::<Vec<_>>(),
                [0, 1, 2, 3]
            );
            assert!((0..8).all(|m| t.counters(m).datagrams == 0));
            assert_eq!(t.steps(), 1);
        }
    }

    #[test]
    fn a_swapped_pair_within_the_grace_is_taken_and_after_it_is_judged_by_the_camera() {
        let mut t = timeline();
        camera(&mut t, 0..5);
        let at = T0 + 6 * P;
        assert_eq!(judge(&mut t, 0, 6, 0, at), Verdict::Take);
        assert_eq!(judge(&mut t, 0, 5, 0, at + MS), Verdict::Take);
        assert_eq!(
            judge(&mut t, 0, 6, 0, at + 30 * MS),
            Verdict::Take,
            "a repeat"
        );
        assert_eq!(t.line(0).unwrap().first, T0 + 6 * P);
    }

    #[test]
    fn a_datagram_overtaken_by_several_of_its_module_is_taken_within_the_grace() {
        // Found by tm-ss-sim --reorder 0.05:3 at 10x (period 4 ms, grace
        // 20 ms): held behind 3 later datagrams, 58 of 9600 were counted
        // out of sync, the events left partial. The grace, not two
        // periods, bounds how far behind a module's own datagram may be.
        let run = |grace: u64| {
            let mut t = Timeline::new(grace, 2000 * MS, 100 * MS, 20_000);
            // Module 0's frame 5 is held back behind its frames 6..9.
            for f in 0..10 {
                for m in (0..8).filter(|&m| !(m == 0 && f == 5)) {
                    assert_eq!(judge(&mut t, m, f, 0, T0 + f * P + m as u64), Verdict::Take);
                }
            }
            // Four periods (160 ms) behind its line, 1 ms after it.
            judge(&mut t, 0, 5, 0, T0 + 9 * P + MS)
        };
        // Within two periods plus a 130 ms grace: taken.
        assert_eq!(run(130 * MS), Verdict::Take);
        // The default grace (2 ms) keeps the old bound of two periods.
        assert_ne!(run(2 * MS), Verdict::Take);
    }

    #[test]
    fn a_camera_wide_gap_is_no_jump() {
        let mut t = timeline();
        camera(&mut t, 0..5);
        // 10 frames lost by everybody (a network outage), then on again.
        camera(&mut t, 15..17);
        assert_eq!(t.steps(), 0);
    }

    #[test]
    fn one_module_alone_follows_its_own_clock() {
        let mut t = timeline();
        assert_eq!(judge(&mut t, 3, 0, 0, T0), Verdict::Take);
        assert_eq!(judge(&mut t, 3, 1, 0, T0 + P), Verdict::Take);
        assert_eq!(
            judge(&mut t, 3, 2, -5_000 * MS as i64, T0 + 2 * P),
            Verdict::Step { held: 0 }
        );
    }
}
