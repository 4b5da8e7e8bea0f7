//! The event builder: readouts in, camera events out, in timestamp order.
//!
//! This module owns the ring of event slots and every decision about which
//! readouts form an event. It is fed datagrams with their arrival time and
//! source (live from [`crate::recv`], or from a raw dump by the replay) and
//! hands finished events to an [`EventSink`]. It never reads a clock, never
//! allocates after construction, never logs per datagram and never blocks:
//! its only notion of time is the arrival stamps it is given and the
//! `advance(now)` calls of its owner, which is what makes a replay of a raw
//! dump reproduce the live event stream byte for byte.
//!
//! # How readouts become events
//!
//! * A datagram is validated by [`packet::parse`] (length, source module,
//!   timestamps) and judged against the camera's timeline ([`timeline`]:
//!   the camera's time is what its modules agree on, so one datagram or one
//!   module far from it never moves it). A refused datagram is counted by
//!   cause and changes nothing else; one held as suspect waits, copied,
//!   until its module or the camera shows whether it was a stray.
//! * Each readout is matched on its **primary timestamp**: it joins the
//!   pending slot whose anchor (the first timestamp seen for that event) is
//!   within `window_ns`, never on arrival order (PROTOCOL.md §7). Slots are
//!   kept in timestamp order; each module remembers where its last readout
//!   went, so regular data finds its slot in O(1) and irregular data by
//!   binary search. A readout is converted ADC → mV straight into the slot.
//! * A readout for a module already present in its slot is a **duplicate**,
//!   also when that slot was already emitted (the modules of the last
//!   `slots` events emitted are remembered); one older than the last
//!   emitted event that its module had not delivered is **late**. Both are
//!   counted and dropped, never merged.
//! * A slot is emitted, oldest first, as soon as it is
//!   - **complete**: every module waited for is present; or
//!   - **passed**: every missing module has delivered a readout for a newer
//!     event at least `reorder_ns` ago, so (modules send in time order, and
//!     a swapped pair arrives within that grace) its readout for this one
//!     was lost — this resolves a lost datagram at the module's next
//!     datagram instead of waiting for the timeout; or
//!   - **expired**: `timeout_ns` after its first readout arrived (on the
//!     arrival clock, or the wall clock via `advance`, so a silent camera
//!     still flushes); or
//!   - **forced**: the ring is full and the oldest slot must make room.
//!
//!   Missing modules get NaN rows and zero timestamps. Events are numbered
//!   1, 2, 3 … in the order they are emitted.
//! * The modules **waited for** are the expected set minus the modules off
//!   the timeline. The expected set is learned (modules whose datagrams
//!   were taken within `module_timeout_ns`) or fixed with `modules`. After a
//!   quiet spell (nobody expected) the builder first listens for
//!   `timeout_ns` before it calls anything complete, so the first module to
//!   speak does not make one-module events of a 32-module camera.
//! * A **camera clock step** confirmed by the timeline ends the old
//!   timeline: what is pending is emitted, and the held datagrams of the
//!   step are built on the new one. After `module_timeout_ns` without any
//!   datagram taken the timeline starts afresh.
//!
//! Arrival times are the kernel's receive stamps (live) or the recorded
//! ones (replay): a daemon that stalled builds its backlog on the times the
//! datagrams really arrived.

pub mod timeline;

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;

use zerocopy::FromBytes;

use crate::event::{EventBuf, EventHeader, Format};
use crate::packet::{self, N_MODULES, Readout, Reject};
use timeline::{Timeline, Verdict};

/// Whether `present` holds every module of a non-empty `expected` set.
#[inline]
pub fn covers(present: u32, expected: u32) -> bool {
    expected != 0 && present & expected == expected
}

/// Default reorder grace: 2 ms. A swapped pair from the simulator arrived
/// a median 4-7 µs and a p99 25-76 µs apart (loopback, kernel stamps);
/// 2 ms is a twentieth of the real camera's datagram period, and only
/// events after a lost datagram wait for it (docs/design.md).
pub const DEFAULT_REORDER_NS: u64 = 2_000_000;
/// Fewest and most event slots.
pub const MIN_SLOTS: usize = 64;
/// The widest event window: half the real camera's readout spacing (4 ms).
pub const MAX_WINDOW_NS: u64 = 2_000_000;

/// The longest the builder waits for a silent module (a day): longer is a
/// typo, and a value that overflowed its nanoseconds is refused, not clamped.
pub const MAX_MODULE_TIMEOUT_NS: u64 = 86_400 * 1_000_000_000;
pub const MAX_SLOTS: usize = 65_536;

/// Builder settings. All times are nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuilderConfig {
    /// Readouts whose primary timestamps differ by at most this are the same
    /// event. Must stay well under half the readout spacing (4 ms at the
    /// camera's real rate, 40 µs at 100×).
    pub window_ns: u64,
    /// A slot still incomplete this long after its first readout arrived is
    /// emitted partial.
    pub timeout_ns: u64,
    /// A module not heard from for this long is no longer waited for.
    pub module_timeout_ns: u64,
    /// Fixed expected modules (bit mask) instead of the learned set.
    pub modules: Option<u32>,
    /// Fold out-of-range module numbers `% 32` instead of refusing them.
    pub relaxed_ip: bool,
    /// Written into every v1 event.
    pub run_number: u64,
    /// Event slots in the ring: the most events that can be pending at once.
    pub slots: usize,
    /// A module's datagram that arrives this long after its successor is
    /// still built (a swapped pair), and a module's newer datagram shows
    /// its older one lost only once this long has passed.
    pub reorder_ns: u64,
    /// The only networks modules send from; empty: any source (the module
    /// is then the last octet's rule alone, PROTOCOL.md §2). A datagram
    /// from elsewhere is refused as an unknown source, counted by address.
    pub allow: Vec<Net>,
}

/// An IPv4 network, `a.b.c.d/len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: u32,
    len: u8,
}

impl Net {
    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.addr
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    /// `a.b.c.d/len` or a bare address, host bits dropped: how a dump
    /// header's networks are read (ssdaqd before 0.2 took host bits as
    /// given, and masked them when matching, as this does).
    fn parse_masked(s: &str) -> Result<(Net, Ipv4Addr), String> {
        let bad = || format!("`{s}` is not a network like 10.0.1.0/24 or 127.0.0.100");
        let (a, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let len: u8 = len.trim().parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        let mut net = Net {
            addr: u32::from(addr),
            len,
        };
        net.addr &= net.mask();
        Ok((net, addr))
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl std::str::FromStr for Net {
    type Err = String;
    /// `a.b.c.d/len`, or a bare address (`/32`); a network with host bits
    /// set (`10.0.1.5/24`) is refused: it is a typo for one of two things.
    fn from_str(s: &str) -> Result<Net, String> {
        let (net, given) = Net::parse_masked(s)?;
        if u32::from(given) != net.addr {
            return Err(format!(
                "`{s}` has host bits set: the network is {net}, the address alone {given}"
            ));
        }
        Ok(net)
    }
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            window_ns: 10_000,
            timeout_ns: 100_000_000,
            module_timeout_ns: 2_000_000_000,
            modules: None,
            relaxed_ip: false,
            run_number: 0,
            slots: 1024,
            reorder_ns: DEFAULT_REORDER_NS,
            allow: Vec::new(),
        }
    }
}

/// One of the builder's settings, as named in a [`ConfigError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Window,
    Timeout,
    ModuleTimeout,
    Reorder,
    Slots,
    Modules,
}

impl Setting {
    /// The setting's field name in [`BuilderConfig`] (and in dump headers).
    pub const fn field(self) -> &'static str {
        match self {
            Setting::Window => "window_ns",
            Setting::Timeout => "timeout_ns",
            Setting::ModuleTimeout => "module_timeout_ns",
            Setting::Reorder => "reorder_ns",
            Setting::Slots => "slots",
            Setting::Modules => "modules",
        }
    }
}

/// Builder settings that do not fit together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    WindowZero,
    WindowTooWide(u64),
    TimeoutZero,
    ModuleTimeoutTooLong(u64),
    ModuleTimeoutTooShort {
        module_timeout_ns: u64,
        timeout_ns: u64,
    },
    ReorderTooLong {
        reorder_ns: u64,
        timeout_ns: u64,
    },
    Slots(usize),
    NoModules,
}

impl ConfigError {
    /// The message, with each setting called what `name` calls it (a
    /// command-line flag, say); [`Display`](std::fmt::Display) uses the
    /// field names.
    pub fn describe(&self, name: impl Fn(Setting) -> &'static str) -> String {
        use Setting::*;
        match *self {
            ConfigError::WindowZero => format!("{} must be at least 1", name(Window)),
            ConfigError::WindowTooWide(w) => format!(
                "{} must be at most {MAX_WINDOW_NS} (half the real camera's readout spacing), \
                 not {w}: wider, neighbouring readouts of one module fall into one event",
                name(Window)
            ),
            ConfigError::TimeoutZero => format!("{} must be positive", name(Timeout)),
            ConfigError::ModuleTimeoutTooLong(ns) => format!(
                "{} must be at most {} s (a day), not {}",
                name(ModuleTimeout),
                MAX_MODULE_TIMEOUT_NS / 1_000_000_000,
                if ns == u64::MAX {
                    "a value that large".to_string()
                } else {
                    format!("{} s", ns as f64 / 1e9)
                }
            ),
            ConfigError::ModuleTimeoutTooShort {
                module_timeout_ns,
                timeout_ns,
            } => format!(
                "{} ({} ms) must be longer than {} ({} ms)",
                name(ModuleTimeout),
                module_timeout_ns / 1_000_000,
                name(Timeout),
                timeout_ns / 1_000_000
            ),
            ConfigError::ReorderTooLong {
                reorder_ns,
                timeout_ns,
            } => format!(
                "{} ({reorder_ns} ns) must be shorter than {} ({} ms)",
                name(Reorder),
                name(Timeout),
                timeout_ns / 1_000_000
            ),
            ConfigError::Slots(n) => format!(
                "{} must be {MIN_SLOTS}..={MAX_SLOTS}, not {n} (a 32-module camera keeps \
                 1-3 datagrams of 10 readouts pending: fewer slots force events out partial)",
                name(Slots)
            ),
            ConfigError::NoModules => format!("{} names no module", name(Modules)),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(Setting::field))
    }
}

impl std::error::Error for ConfigError {}

impl BuilderConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window_ns == 0 {
            return Err(ConfigError::WindowZero);
        }
        if self.window_ns > MAX_WINDOW_NS {
            return Err(ConfigError::WindowTooWide(self.window_ns));
        }
        if self.timeout_ns == 0 {
            return Err(ConfigError::TimeoutZero);
        }
        if self.module_timeout_ns > MAX_MODULE_TIMEOUT_NS {
            return Err(ConfigError::ModuleTimeoutTooLong(self.module_timeout_ns));
        }
        if self.module_timeout_ns <= self.timeout_ns {
            return Err(ConfigError::ModuleTimeoutTooShort {
                module_timeout_ns: self.module_timeout_ns,
                timeout_ns: self.timeout_ns,
            });
        }
        if self.reorder_ns >= self.timeout_ns {
            return Err(ConfigError::ReorderTooLong {
                reorder_ns: self.reorder_ns,
                timeout_ns: self.timeout_ns,
            });
        }
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&self.slots) {
            return Err(ConfigError::Slots(self.slots));
        }
        if self.modules == Some(0) {
            return Err(ConfigError::NoModules);
        }
        Ok(())
    }
}

impl BuilderConfig {
    /// The settings as `key=value` pairs (stored in raw dump headers, so a
    /// replay can use exactly the settings of the run it replays).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("window_ns", self.window_ns.to_string()),
            ("timeout_ns", self.timeout_ns.to_string()),
            ("module_timeout_ns", self.module_timeout_ns.to_string()),
            (
                "modules",
                self.modules.map_or("learned".into(), format_module_set),
            ),
            ("relaxed_ip", self.relaxed_ip.to_string()),
            ("run_number", self.run_number.to_string()),
            ("slots", self.slots.to_string()),
            ("reorder_ns", self.reorder_ns.to_string()),
            (
                "allow",
                if self.allow.is_empty() {
                    "any".to_string()
                } else {
                    let nets: Vec<String> = self.allow.iter().map(Net::to_string).collect();
                    nets.join(",")
                },
            ),
        ];
        v.drain(..).map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Sets the setting named `key` from its `to_pairs` form. Unknown keys
    /// are not builder settings: `Ok(false)`.
    pub fn set_pair(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{key}={v} is not a number"))
        };
        match key {
            "window_ns" => self.window_ns = num(value)?,
            "timeout_ns" => self.timeout_ns = num(value)?,
            "module_timeout_ns" => self.module_timeout_ns = num(value)?,
            "modules" if value == "learned" => self.modules = None,
            "modules" => self.modules = Some(parse_module_set(value)?),
            "relaxed_ip" => self.relaxed_ip = value == "true",
            "run_number" => self.run_number = num(value)?,
            "slots" => self.slots = num(value)? as usize,
            "reorder_ns" => self.reorder_ns = num(value)?,
            "allow" if value == "any" => self.allow.clear(),
            "allow" => {
                self.allow = value
                    .split(',')
                    .map(|n| Net::parse_masked(n).map(|(net, _)| net))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("allow={value}: {e}"))?
            }
            // Written by ssdaqd before 0.2: the timeline no longer needs it.
            "max_jump_ns" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }
}

pub use ssdaq_wire::packet::{format_module_set, parse_module_set};

/// Why an event was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Every expected module present.
    Complete,
    /// Every missing expected module has moved on to newer events.
    Passed,
    /// Timed out.
    Expired,
    /// Pushed out to make room in a full ring.
    Forced,
    /// Emitted at the end of a run or at a timeline reset.
    Flushed,
}

impl Emit {
    pub const ALL: [Emit; 5] = [
        Emit::Complete,
        Emit::Passed,
        Emit::Expired,
        Emit::Forced,
        Emit::Flushed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Emit::Complete => "complete",
            Emit::Passed => "passed",
            Emit::Expired => "expired",
            Emit::Forced => "forced",
            Emit::Flushed => "flushed",
        }
    }
}

/// An event handed to the sink. It borrows the slot: encode or copy what you
/// need before returning.
pub struct Event<'a> {
    pub header: EventHeader,
    /// Modules present (bit m for module m).
    pub present: u32,
    /// Modules the builder waited for.
    pub expected: u32,
    pub reason: Emit,
    buf: &'a mut Box<EventBuf>,
}

impl Event<'_> {
    /// Every expected module present.
    pub fn is_complete(&self) -> bool {
        covers(self.present, self.expected)
    }

    /// The message in `format`, written in place in the slot.
    pub fn encode(&mut self, format: Format) -> &[u8] {
        self.buf.encode(format, &self.header)
    }

    /// The assembled rows and timestamps.
    pub fn buf(&self) -> &EventBuf {
        self.buf
    }

    /// Takes the assembled buffer, leaving `spare` in the slot for a later
    /// event (its contents do not matter). For a publisher that lends the
    /// buffer to its transport instead of copying it. Afterwards this event's
    /// data is in `spare`; encode it there with `self.header`.
    pub fn swap_buf(&mut self, spare: &mut Box<EventBuf>) {
        std::mem::swap(self.buf, spare);
    }
}

/// Where the builder puts finished events.
pub trait EventSink {
    fn event(&mut self, ev: Event<'_>);
}

impl<F: FnMut(Event<'_>)> EventSink for F {
    fn event(&mut self, ev: Event<'_>) {
        self(ev)
    }
}

/// A datagram as the builder sees it.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub payload: &'a [u8],
    pub src: Ipv4Addr,
    /// CLOCK_REALTIME ns when it arrived (the kernel's receive stamp).
    pub arrival_ns: u64,
    /// The kernel cut it to fit the receive buffer.
    pub truncated: bool,
}

/// Counters of one module.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModuleCounters {
    /// Datagrams accepted.
    pub datagrams: u64,
    /// The readouts of those datagrams: each is placed, late or duplicate.
    pub readouts_in: u64,
    /// Readouts placed in an event.
    pub readouts: u64,
    /// Payload bytes accepted.
    pub bytes: u64,
    /// Datagrams refused, by [`Reject`] cause (UnknownSource stays zero).
    pub rejected: [u64; Reject::ALL.len()],
    /// Datagrams off the camera's timeline: strays, and what the module
    /// sent while off it (docs/design.md, "The camera's timeline").
    pub out_of_sync: u64,
    /// The readouts of those datagrams.
    pub out_of_sync_readouts: u64,
    /// Times the module went off the timeline (each logged once).
    pub off_timeline: u64,
    /// Readouts older than the last emitted event, that their event lacks.
    pub late: u64,
    /// Readouts for an event that already held this module.
    pub duplicate: u64,
    /// Events emitted without this module while it was expected.
    pub missing: u64,
}

/// How many distinct unknown source addresses are counted individually.
pub const UNKNOWN_SOURCES: usize = 16;

/// The last octets the camera's modules send from (PROTOCOL.md §2).
const CAMERA_OCTETS: std::ops::RangeInclusive<u8> = 100..=131;

/// Everything the builder counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuilderStats {
    pub modules: [ModuleCounters; N_MODULES],
    /// Datagrams refused, by cause, over all modules and unknown sources.
    pub rejected: [u64; Reject::ALL.len()],
    /// Out-of-sync datagrams over all modules.
    pub out_of_sync: u64,
    /// Datagrams held as suspect right now (neither built nor lost yet).
    pub held: u64,
    /// Unknown source addresses and their datagram counts (first 16 seen).
    pub unknown_sources: Vec<(Ipv4Addr, u64)>,
    /// Unknown-source datagrams from addresses beyond the first 16.
    pub unknown_other: u64,
    /// Sources outside `.100`–`.131` taken as modules by the last octet,
    /// with the module each was taken as (the first 16, in order seen).
    pub odd_sources: Vec<(Ipv4Addr, u8)>,
    /// Events emitted, by [`Emit`] reason.
    pub emitted: [u64; Emit::ALL.len()],
    /// Events emitted with every module waited for present.
    pub complete: u64,
    /// Events emitted with all 32 modules of the camera.
    pub all_modules: u64,
    /// Datagrams given to the builder ([`Builder::push`]).
    pub pushed: u64,
    /// Readouts in complete events, and in partial ones.
    pub readouts_complete: u64,
    pub readouts_partial: u64,
    /// Camera clock steps followed.
    pub clock_steps: u64,
    /// The most slots ever pending at once.
    pub pending_max: usize,
}

impl BuilderStats {
    pub fn events(&self) -> u64 {
        self.emitted.iter().sum()
    }
    pub fn partial(&self) -> u64 {
        self.events() - self.complete
    }
    pub fn datagrams(&self) -> u64 {
        self.modules.iter().map(|m| m.datagrams).sum()
    }
    pub fn readouts(&self) -> u64 {
        self.modules.iter().map(|m| m.readouts).sum()
    }
    pub fn late(&self) -> u64 {
        self.modules.iter().map(|m| m.late).sum()
    }
    pub fn readouts_in(&self) -> u64 {
        self.modules.iter().map(|m| m.readouts_in).sum()
    }

    /// Every datagram and readout given to the builder has exactly one fate;
    /// this checks the sums (after [`Builder::flush`], with nothing pending):
    /// datagrams pushed = accepted + refused + out of sync + held, and the
    /// readouts of the accepted ones = in complete events + in partial ones
    /// + late + duplicate. `Err` says which sum is off, and by how much.
    pub fn balance(&self) -> Result<(), String> {
        let (given, fates) = (
            self.pushed,
            self.datagrams() + self.rejected.iter().sum::<u64>() + self.out_of_sync + self.held,
        );
        if given != fates {
            return Err(format!(
                "datagrams given {given} != accepted + refused + out of sync + held {fates}"
            ));
        }
        let (r_in, r_fates) = (
            self.readouts_in(),
            self.readouts_complete + self.readouts_partial + self.late() + self.duplicate(),
        );
        if r_in != r_fates {
            return Err(format!(
                "readouts accepted {r_in} != in complete + partial events + late + duplicate {r_fates}"
            ));
        }
        Ok(())
    }
    pub fn duplicate(&self) -> u64 {
        self.modules.iter().map(|m| m.duplicate).sum()
    }
    pub fn out_of_sync_readouts(&self) -> u64 {
        self.modules.iter().map(|m| m.out_of_sync_readouts).sum()
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum::<u64>() + self.out_of_sync
    }
}

/// What happened to one datagram, for the caller's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; this many of its readouts were late or duplicates.
    Accepted {
        dropped_readouts: u32,
    },
    Rejected(Reject),
    /// Off the camera's timeline: counted, not built.
    OutOfSync,
    /// Held as suspect: built or counted later.
    Held,
}

#[derive(Clone, Copy, Default)]
struct SlotMeta {
    anchor: u64,
    present: u32,
    created_ns: u64,
    last_arrival_ns: u64,
    ts_sum: u128,
}

#[derive(Clone, Copy, Default)]
struct ModuleState {
    /// Arrival of the last datagram taken.
    last_heard_ns: Option<u64>,
    /// Anchor of the newest slot this module contributed to.
    last_anchor: u64,
    /// When `last_anchor` last moved on (arrival ns): the module has passed
    /// the older events it lacks once `reorder_ns` has gone by since.
    moved_on_ns: u64,
    /// Logical position just after its last slot: where its next readout
    /// most likely goes.
    hint: u64,
}

/// An emitted event, remembered while its slot could still be in the
/// ring, to tell a duplicate from a late readout.
#[derive(Clone, Copy)]
struct Emitted {
    anchor: u64,
    present: u32,
}

/// The event builder. See the module documentation.
pub struct Builder {
    cfg: BuilderConfig,
    bufs: Vec<Box<EventBuf>>,
    meta: Vec<SlotMeta>,
    /// Free slot ids, used last-in first-out so few slots stay hot in cache.
    free: Vec<u32>,
    /// Pending slot ids in timestamp order.
    order: VecDeque<u32>,
    /// Logical position of `order[0]`.
    front_pos: u64,
    modules: [ModuleState; N_MODULES],
    expected: u32,
    /// No module of the learned set can time out before this.
    next_module_expiry_ns: u64,
    learning_until: Option<u64>,
    now_ns: u64,
    last_accept_ns: Option<u64>,
    /// The newest anchor emitted: readouts up to it (and the window) are old.
    watermark: Option<u64>,
    /// The last `slots` events emitted, oldest first.
    emitted: VecDeque<Emitted>,
    timeline: Timeline,
    next_event: u64,
    stats: BuilderStats,
}

impl Builder {
    /// A builder with all its memory allocated up front.
    ///
    /// Panics if `cfg` does not [validate](BuilderConfig::validate).
    pub fn new(cfg: BuilderConfig) -> Builder {
        if let Err(e) = cfg.validate() {
            panic!("invalid builder configuration: {e}");
        }
        let bufs = (0..cfg.slots).map(|_| EventBuf::new_boxed()).collect();
        Builder::with_bufs(cfg, bufs)
    }

    /// Starts again as a new builder of the same settings (event numbers
    /// from 1, no module known, counters zero), keeping its event buffers:
    /// a new run, or the next input of a fuzzer, without allocating and
    /// zeroing the slots again. Nothing pending is emitted: flush first.
    pub fn reset(&mut self) {
        let bufs = std::mem::take(&mut self.bufs);
        *self = Builder::with_bufs(self.cfg.clone(), bufs);
    }

    /// Starts a new run with the settings `cfg` (its `run_number` goes in
    /// every event; numbers start again at 1): as [`Builder::reset`], but
    /// the counters go on, since they count the daemon's life and a
    /// scraper's counters must never go back. Nothing pending is emitted:
    /// flush first. Panics if `cfg` does not validate.
    pub fn start_run(&mut self, cfg: BuilderConfig) {
        if let Err(e) = cfg.validate() {
            panic!("invalid builder configuration: {e}");
        }
        let stats = std::mem::take(&mut self.stats);
        let bufs = if cfg.slots == self.cfg.slots {
            std::mem::take(&mut self.bufs)
        } else {
            (0..cfg.slots).map(|_| EventBuf::new_boxed()).collect()
        };
        *self = Builder::with_bufs(cfg, bufs);
        self.stats = stats;
    }

    /// Events emitted since the run started (the last event number).
    pub fn run_events(&self) -> u64 {
        self.next_event - 1
    }

    /// When module `m`'s last datagram was taken (arrival ns), this run.
    pub fn last_heard(&self, m: usize) -> Option<u64> {
        self.modules[m].last_heard_ns
    }

    /// [`Builder::new`] with its `cfg.slots` event buffers given. What a
    /// buffer holds does not matter: every row of an event is written (or
    /// cleared for a missing module) before it is emitted.
    fn with_bufs(cfg: BuilderConfig, bufs: Vec<Box<EventBuf>>) -> Builder {
        let n = cfg.slots;
        debug_assert_eq!(bufs.len(), n);
        Builder {
            bufs,
            meta: vec![SlotMeta::default(); n],
            free: (0..n as u32).rev().collect(),
            order: VecDeque::with_capacity(n),
            front_pos: 0,
            modules: [ModuleState::default(); N_MODULES],
            expected: cfg.modules.unwrap_or(0),
            next_module_expiry_ns: 0,
            learning_until: None,
            now_ns: 0,
            last_accept_ns: None,
            watermark: None,
            emitted: VecDeque::with_capacity(n),
            timeline: Timeline::new(
                cfg.reorder_ns,
                cfg.module_timeout_ns,
                cfg.timeout_ns,
                2 * cfg.window_ns,
            ),
            next_event: 1,
            stats: BuilderStats {
                unknown_sources: Vec::with_capacity(UNKNOWN_SOURCES),
                odd_sources: Vec::with_capacity(UNKNOWN_SOURCES),
                ..Default::default()
            },
            cfg,
        }
    }

    pub fn config(&self) -> &BuilderConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &BuilderStats {
        &self.stats
    }

    /// The expected modules: learned, or fixed by the configuration.
    pub fn expected(&self) -> u32 {
        self.expected
    }

    /// The modules waited for: expected and on the camera's timeline.
    pub fn waited(&self) -> u32 {
        self.expected & !self.timeline.off()
    }

    /// The camera's timeline (which modules are off it, and by how much).
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Slots currently holding an unfinished event.
    pub fn pending(&self) -> usize {
        self.order.len()
    }

    /// The builder's clock: the newest arrival or `advance` time seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The earliest time at which [`advance`](Self::advance) would emit
    /// something or change the expected set, if nothing else arrives.
    pub fn next_deadline(&self) -> Option<u64> {
        let front = self.order.front().map(|&id| {
            let s = &self.meta[id as usize];
            let expiry = s.created_ns.saturating_add(self.cfg.timeout_ns);
            self.passed_at(s).map_or(expiry, |p| p.min(expiry))
        });
        let learned = (self.cfg.modules.is_none() && self.expected != 0)
            .then_some(self.next_module_expiry_ns);
        let silent = self
            .last_accept_ns
            .map(|t| t.saturating_add(self.cfg.module_timeout_ns));
        [front, learned, silent, self.learning_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Takes one datagram: validates it, judges it against the timeline,
    /// places its readouts, and emits every event that became ready.
    pub fn push(&mut self, d: Datagram<'_>, sink: &mut impl EventSink) -> Outcome {
        self.stats.pushed += 1;
        self.advance(d.arrival_ns, sink);
        if !self.cfg.allow.is_empty() && !self.cfg.allow.iter().any(|n| n.contains(d.src)) {
            self.count_reject(Reject::UnknownSource, d.src);
            return Outcome::Rejected(Reject::UnknownSource);
        }
        let pkt = match packet::parse(d.payload, d.truncated, d.src, self.cfg.relaxed_ip) {
            Ok(p) => p,
            Err(cause) => {
                self.count_reject(cause, d.src);
                return Outcome::Rejected(cause);
            }
        };
        let m = pkt.module as usize;
        if !CAMERA_OCTETS.contains(&d.src.octets()[3]) {
            self.note_odd_source(d.src, pkt.module);
        }
        // Asked for only off the common path (a module's first datagram).
        let (order, meta, window) = (&self.order, &self.meta, self.cfg.window_ns);
        let pending_from = || {
            order
                .front()
                .map(|&id| meta[id as usize].anchor.saturating_sub(window))
        };
        let verdict = self
            .timeline
            .judge(m, pkt.readouts, d.payload, d.arrival_ns, pending_from);
        if self.timeline.take_changed() {
            self.sync_timeline_counts(m);
        }
        match verdict {
            Verdict::Take => {}
            Verdict::Held => return Outcome::Held,
            Verdict::OutOfSync => return Outcome::OutOfSync,
            Verdict::Step { held } => self.step(held, sink),
        }
        let dropped = self.build(m, pkt.readouts, d.arrival_ns, d.payload.len(), sink);
        Outcome::Accepted {
            dropped_readouts: dropped,
        }
    }

    /// Builds the readouts of a datagram the timeline took; returns how
    /// many were late or duplicates.
    fn build(
        &mut self,
        m: usize,
        readouts: &[Readout],
        arrival_ns: u64,
        len: usize,
        sink: &mut impl EventSink,
    ) -> u32 {
        self.note_heard(m);
        let mc = &mut self.stats.modules[m];
        mc.datagrams += 1;
        mc.readouts_in += readouts.len() as u64;
        mc.bytes += len as u64;
        let mut dropped = 0;
        for r in readouts {
            if !self.place(m, r, arrival_ns, sink) {
                dropped += 1;
            }
        }
        self.emit_ready(sink);
        dropped
    }

    /// The camera's clock stepped: everything pending belongs to the old
    /// timeline and goes out; the held datagrams of the step are built on
    /// the new one, in the order they arrived.
    fn step(&mut self, held: u32, sink: &mut impl EventSink) {
        self.stats.clock_steps += 1;
        self.flush_all(Emit::Flushed, sink);
        self.forget_emitted();
        for m in 0..N_MODULES {
            self.sync_timeline_counts(m);
        }
        for x in self.timeline.held_in_arrival_order(held) {
            let Some((bytes, len, arrival)) = self.timeline.take_held(x) else {
                continue;
            };
            let readouts =
                <[Readout]>::ref_from_bytes(&bytes[..len]).expect("a held datagram was parsed");
            self.build(x, readouts, arrival, len, sink);
            self.timeline.return_held(x, bytes);
        }
        self.stats.held = self.timeline.n_held() as u64;
    }

    /// Copies what the timeline counted for module `m` into the stats.
    #[inline]
    fn sync_timeline_counts(&mut self, m: usize) {
        let c = self.timeline.counters(m);
        let mc = &mut self.stats.modules[m];
        self.stats.out_of_sync += c.datagrams - mc.out_of_sync;
        mc.out_of_sync = c.datagrams;
        mc.out_of_sync_readouts = c.readouts;
        mc.off_timeline = c.off_episodes;
        self.stats.held = self.timeline.n_held() as u64;
    }

    /// Moves the builder's clock to `now_ns` (if later) and emits what
    /// became ready: expired slots, slots no longer waiting for a module
    /// that fell silent. Call it when no datagram arrives (wall clock).
    pub fn advance(&mut self, now_ns: u64, sink: &mut impl EventSink) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        let now = self.now_ns;
        if self.cfg.modules.is_none() && now >= self.next_module_expiry_ns {
            self.expire_modules();
        }
        if self
            .last_accept_ns
            .is_some_and(|t| now >= t.saturating_add(self.cfg.module_timeout_ns))
        {
            // The camera fell silent: finish everything and start a new timeline.
            self.flush_all(Emit::Expired, sink);
            self.reset_timeline();
        }
        if self.learning_until.is_some_and(|t| now >= t) {
            self.learning_until = None;
        }
        self.emit_ready(sink);
    }

    /// Emits every pending event, oldest first (end of run). Datagrams
    /// still held as suspect are counted out of sync.
    pub fn flush(&mut self, sink: &mut impl EventSink) {
        self.flush_all(Emit::Flushed, sink);
        self.timeline.drop_all_held();
        for m in 0..N_MODULES {
            self.sync_timeline_counts(m);
        }
    }

    /// Drops silent modules from the learned expected set.
    fn expire_modules(&mut self) {
        let mut next = u64::MAX;
        let mut set = self.expected;
        while set != 0 {
            let m = set.trailing_zeros() as usize;
            set &= set - 1;
            let until = self.modules[m]
                .last_heard_ns
                .map_or(0, |t| t.saturating_add(self.cfg.module_timeout_ns));
            if self.now_ns >= until {
                self.expected &= !(1 << m);
            } else {
                next = next.min(until);
            }
        }
        self.next_module_expiry_ns = next;
    }

    /// Remembers a source outside the camera's `.100`–`.131` taken as
    /// module `m` (the first [`UNKNOWN_SOURCES`] of them), for one log line
    /// each.
    #[cold]
    fn note_odd_source(&mut self, src: Ipv4Addr, m: u8) {
        let odd = &mut self.stats.odd_sources;
        if odd.len() < UNKNOWN_SOURCES && !odd.iter().any(|(a, _)| *a == src) {
            odd.push((src, m));
        }
    }

    fn count_reject(&mut self, cause: Reject, src: Ipv4Addr) {
        self.stats.rejected[cause.index()] += 1;
        if cause == Reject::UnknownSource {
            let s = &mut self.stats;
            if let Some(e) = s.unknown_sources.iter_mut().find(|(a, _)| *a == src) {
                e.1 += 1;
            } else if s.unknown_sources.len() < UNKNOWN_SOURCES {
                s.unknown_sources.push((src, 1));
            } else {
                s.unknown_other += 1;
            }
        } else if let Some(m) = packet::module_of(src, self.cfg.relaxed_ip) {
            self.stats.modules[m as usize].rejected[cause.index()] += 1;
        }
    }

    /// The camera fell silent: the next datagram starts a new timeline.
    fn reset_timeline(&mut self) {
        self.last_accept_ns = None;
        self.timeline.reset();
        for m in 0..N_MODULES {
            self.sync_timeline_counts(m);
        }
        self.forget_emitted();
    }

    /// Forgets the old timeline's emitted events: nothing on a new one is late.
    fn forget_emitted(&mut self) {
        self.watermark = None;
        self.emitted.clear();
        for s in &mut self.modules {
            s.last_anchor = 0;
        }
    }

    /// Records a datagram taken from `m` for the expected set.
    fn note_heard(&mut self, m: usize) {
        let now = self.now_ns;
        self.modules[m].last_heard_ns = Some(now);
        self.last_accept_ns = Some(now);
        if self.cfg.modules.is_none() && self.expected & (1 << m) == 0 {
            if self.expected == 0 {
                self.learning_until = Some(now.saturating_add(self.cfg.timeout_ns));
            }
            self.expected |= 1 << m;
            self.next_module_expiry_ns = self
                .next_module_expiry_ns
                .min(now.saturating_add(self.cfg.module_timeout_ns));
        }
    }

    /// Places one readout of module `m`. False if it was late or a duplicate.
    fn place(&mut self, m: usize, r: &Readout, arrival_ns: u64, sink: &mut impl EventSink) -> bool {
        let ts = r.primary_ts();
        let pos = match self.find(m, ts) {
            Ok(pos) => pos,
            Err(insert_at) => {
                if self
                    .watermark
                    .is_some_and(|w| ts <= w.saturating_add(self.cfg.window_ns))
                {
                    self.count_old(m, ts);
                    return false;
                }
                match self.open_slot(insert_at, ts, arrival_ns, sink) {
                    Some(pos) => pos,
                    None => {
                        self.count_old(m, ts);
                        return false;
                    }
                }
            }
        };
        let id = self.order[pos] as usize;
        let slot = &mut self.meta[id];
        if slot.present & (1 << m) != 0 {
            self.stats.modules[m].duplicate += 1;
            return false;
        }
        slot.present |= 1 << m;
        slot.ts_sum += ts as u128;
        slot.last_arrival_ns = slot.last_arrival_ns.max(arrival_ns);
        let anchor = slot.anchor;
        self.bufs[id].fill_row(m, r);
        let st = &mut self.modules[m];
        if anchor > st.last_anchor {
            st.last_anchor = anchor;
            st.moved_on_ns = arrival_ns;
        }
        st.hint = self.front_pos + pos as u64 + 1;
        self.stats.modules[m].readouts += 1;
        true
    }

    /// Counts a readout of module `m` older than the last emitted event: a
    /// duplicate if the event it matches held the module, late otherwise.
    fn count_old(&mut self, m: usize, ts: u64) {
        let w = self.cfg.window_ns;
        let i = self
            .emitted
            .partition_point(|e| e.anchor.saturating_add(w) < ts);
        let held = self
            .emitted
            .get(i)
            .is_some_and(|e| e.anchor.abs_diff(ts) <= w && e.present & (1 << m) != 0);
        let c = &mut self.stats.modules[m];
        if held {
            c.duplicate += 1;
        } else {
            c.late += 1;
        }
    }

    /// The position of the pending slot matching `ts`, or where a new slot
    /// for it belongs.
    fn find(&self, m: usize, ts: u64) -> Result<usize, usize> {
        let w = self.cfg.window_ns;
        let anchor = |pos: usize| self.meta[self.order[pos] as usize].anchor;
        let n = self.order.len();
        // Regular data: the slot after this module's last one.
        let hint = self.modules[m].hint.wrapping_sub(self.front_pos);
        if hint < n as u64 && anchor(hint as usize).abs_diff(ts) <= w {
            return Ok(hint as usize);
        }
        // The first module of a new datagram: newer than everything pending.
        if n == 0 || ts > anchor(n - 1).saturating_add(w) {
            return Err(n);
        }
        // Irregular data: binary search for the first anchor >= ts - w.
        let i = self
            .order
            .partition_point(|&id| self.meta[id as usize].anchor.saturating_add(w) < ts);
        if i < n && anchor(i).abs_diff(ts) <= w {
            // Two slots may both be within the window if it is wider than half
            // the readout spacing: take the nearer.
            if i + 1 < n && anchor(i + 1).abs_diff(ts) < anchor(i).abs_diff(ts) {
                return Ok(i + 1);
            }
            return Ok(i);
        }
        Err(i)
    }

    /// Opens a slot for `ts` at position `at`; makes room by emitting the
    /// oldest slot if the ring is full. None if `ts` became late doing so.
    fn open_slot(
        &mut self,
        mut at: usize,
        ts: u64,
        arrival_ns: u64,
        sink: &mut impl EventSink,
    ) -> Option<usize> {
        if self.free.is_empty() {
            self.emit_front(Emit::Forced, sink);
            if at == 0 {
                return None; // Older than the event just emitted.
            }
            at -= 1;
        }
        let id = self.free.pop().expect("a slot was just freed");
        self.meta[id as usize] = SlotMeta {
            anchor: ts,
            present: 0,
            created_ns: arrival_ns,
            last_arrival_ns: arrival_ns,
            ts_sum: 0,
        };
        self.order.insert(at, id);
        self.stats.pending_max = self.stats.pending_max.max(self.order.len());
        Some(at)
    }

    /// Emits slots from the front while they are ready.
    fn emit_ready(&mut self, sink: &mut impl EventSink) {
        while let Some(&id) = self.order.front() {
            let s = self.meta[id as usize];
            let reason = if self.now_ns >= s.created_ns.saturating_add(self.cfg.timeout_ns) {
                Emit::Expired
            } else if self.learning_until.is_some() {
                break;
            } else if covers(s.present, self.waited()) {
                Emit::Complete
            } else if self.passed_at(&s).is_some_and(|t| self.now_ns >= t) {
                Emit::Passed
            } else {
                break;
            };
            self.emit_front(reason, sink);
        }
    }

    /// When every waited-for module missing from `s` will have passed it:
    /// each has delivered a readout for a newer event, and the reorder
    /// grace since has gone by. None while one of them has not moved on.
    fn passed_at(&self, s: &SlotMeta) -> Option<u64> {
        let mut missing = self.waited() & !s.present;
        let mut at = 0;
        while missing != 0 {
            let m = missing.trailing_zeros() as usize;
            let st = &self.modules[m];
            if st.last_anchor <= s.anchor {
                return None;
            }
            at = at.max(st.moved_on_ns.saturating_add(self.cfg.reorder_ns));
            missing &= missing - 1;
        }
        Some(at)
    }

    fn flush_all(&mut self, reason: Emit, sink: &mut impl EventSink) {
        while !self.order.is_empty() {
            self.emit_front(reason, sink);
        }
    }

    fn emit_front(&mut self, reason: Emit, sink: &mut impl EventSink) {
        let id = self.order.pop_front().expect("emit_front on an empty ring") as usize;
        self.front_pos += 1;
        let s = self.meta[id];
        let buf = &mut self.bufs[id];
        let mut absent = !s.present;
        while absent != 0 {
            let m = absent.trailing_zeros() as usize;
            buf.clear_row(m);
            absent &= absent - 1;
        }
        let expected = self.expected & !self.timeline.off();
        let mut missing = expected & !s.present;
        while missing != 0 {
            let m = missing.trailing_zeros() as usize;
            self.stats.modules[m].missing += 1;
            missing &= missing - 1;
        }
        let header = EventHeader {
            number: self.next_event,
            run: self.cfg.run_number,
            timestamp: (s.ts_sum / s.present.count_ones() as u128) as u64,
            arrival_ns: s.last_arrival_ns,
        };
        self.next_event += 1;
        self.watermark = Some(self.watermark.map_or(s.anchor, |w| w.max(s.anchor)));
        if self.emitted.len() == self.cfg.slots {
            self.emitted.pop_front();
        }
        self.emitted.push_back(Emitted {
            anchor: s.anchor,
            present: s.present,
        });
        let complete = covers(s.present, expected);
        let reason = if complete { Emit::Complete } else { reason };
        self.stats.emitted[reason as usize] += 1;
        self.stats.complete += complete as u64;
        self.stats.all_modules += (s.present == u32::MAX) as u64;
        let n = u64::from(s.present.count_ones());
        if complete {
            self.stats.readouts_complete += n;
        } else {
            self.stats.readouts_partial += n;
        }
        self.free.push(id as u32);
        crate::event::fence_rows();
        sink.event(Event {
            header,
            present: s.present,
            expected,
            reason,
            buf,
        });
    }
}

impl fmt::Display for BuilderStats {
    /// The end-of-run summary of the builder.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "datagrams accepted {}  readouts {}  events {} (complete {}, partial {}); \
             complete = every module waited for present; with all 32 modules: {}",
            self.datagrams(),
            self.readouts(),
            self.events(),
            self.complete,
            self.partial(),
            self.all_modules
        )?;
        write!(f, "events by reason:")?;
        for (i, r) in Emit::ALL.iter().enumerate() {
            write!(f, " {} {}", r.name(), self.emitted[i])?;
        }
        writeln!(f, "  (most pending at once: {})", self.pending_max)?;
        write!(f, "dropped datagrams:")?;
        for c in Reject::ALL {
            write!(f, " {} {}", c.name(), self.rejected[c.index()])?;
        }
        writeln!(
            f,
            " out_of_sync {}  (camera clock steps followed: {})",
            self.out_of_sync, self.clock_steps
        )?;
        writeln!(
            f,
            "dropped readouts: late {} duplicate {} out_of_sync {}",
            self.late(),
            self.duplicate(),
            self.out_of_sync_readouts()
        )?;
        writeln!(
            f,
            "fates: datagrams {} = accepted {} + refused {} + out of sync {} + held {}; \
             their readouts {} = in complete events {} + in partial events {} + late {} + \
             duplicate {}: {}",
            self.pushed,
            self.datagrams(),
            self.rejected.iter().sum::<u64>(),
            self.out_of_sync,
            self.held,
            self.readouts_in(),
            self.readouts_complete,
            self.readouts_partial,
            self.late(),
            self.duplicate(),
            match self.balance() {
                Ok(()) => "balanced".to_string(),
                Err(e) => format!("NOT BALANCED ({e}; please report)"),
            }
        )?;
        let off: Vec<String> = (0..N_MODULES)
            .filter(|&m| self.modules[m].off_timeline > 0)
            .map(|m| format!("{m} ({}×)", self.modules[m].off_timeline))
            .collect();
        if !off.is_empty() {
            writeln!(
                f,
                "modules that went off the camera's timeline: {}",
                off.join(", ")
            )?;
        }
        for (addr, n) in &self.unknown_sources {
            writeln!(f, "unknown source {addr}: {n} datagrams")?;
        }
        if self.unknown_other > 0 {
            writeln!(
                f,
                "unknown sources beyond the first {UNKNOWN_SOURCES}: {} datagrams",
                self.unknown_other
            )?;
        }
        writeln!(
            f,
            "module  datagrams   readouts  missing     late      dup  refused  out_of_sync"
        )?;
        for (m, c) in self.modules.iter().enumerate() {
            let refused: u64 = c.rejected.iter().sum::<u64>();
            if c.datagrams + refused + c.out_of_sync + c.missing == 0 {
                continue;
            }
            writeln!(
                f,
                "{m:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>12}",
                c.datagrams, c.readouts, c.missing, c.late, c.duplicate, refused, c.out_of_sync
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventView, adc_to_mv};
    use zerocopy::IntoBytes;

    const MS: u64 = 1_000_000;
    /// Readout spacing at the camera's real rate.
    const SPACING: u64 = 4 * MS;
    const T0: u64 = 1_700_000_000_000_000_000;

    fn adc(m: usize, ts: u64, p: usize) -> u16 {
        (m as u64 * 1000 + (ts / SPACING) % 512 + p as u64) as u16
    }

    fn bytes(m: usize, ts: &[u64]) -> Vec<u8> {
        let mut v = Vec::new();
        for &t in ts {
            let a: [u16; 64] = std::array::from_fn(|p| adc(m, t, p));
            v.extend_from_slice(Readout::new(t, t.wrapping_add(17 + m as u64), &a).as_bytes());
        }
        v
    }

    fn src(m: usize) -> Ipv4Addr {
        packet::module_addr(Ipv4Addr::new(127, 0, 0, 1), m as u8)
    }

    /// Timestamps of frame `f` (10 readouts).
    fn frame(f: u64) -> Vec<u64> {
        (0..10).map(|i| T0 + (f * 10 + i) * SPACING).collect()
    }

    struct Out {
        msg: Vec<u8>,
        reason: Emit,
        present: u32,
    }

    impl Out {
        fn view(&self) -> EventView<'_> {
            EventView::parse(&self.msg).unwrap()
        }
    }

    struct Rig {
        b: Builder,
        out: Vec<Out>,
    }

    /// Every test ends with the fates balanced: flushed, nothing pending.
    impl Drop for Rig {
        fn drop(&mut self) {
            if std::thread::panicking() {
                return;
            }
            self.b.flush(&mut Self::sink(&mut self.out));
            if let Err(e) = self.b.stats().balance() {
                panic!("fates do not balance: {e}");
            }
        }
    }

    impl Rig {
        fn new(cfg: BuilderConfig) -> Rig {
            Rig {
                b: Builder::new(cfg),
                out: Vec::new(),
            }
        }
        fn fixed(n: usize) -> Rig {
            Rig::new(BuilderConfig {
                modules: Some(((1u64 << n) - 1) as u32),
                ..Default::default()
            })
        }
        fn sink(out: &mut Vec<Out>) -> impl FnMut(Event<'_>) + '_ {
            |mut ev: Event<'_>| {
                let (reason, present) = (ev.reason, ev.present);
                out.push(Out {
                    msg: ev.encode(Format::V1).to_vec(),
                    reason,
                    present,
                })
            }
        }
        fn push_raw(&mut self, payload: &[u8], from: Ipv4Addr, at: u64) -> Outcome {
            let d = Datagram {
                payload,
                src: from,
                arrival_ns: at,
                truncated: false,
            };
            self.b.push(d, &mut Self::sink(&mut self.out))
        }
        fn send(&mut self, m: usize, ts: &[u64], at: u64) -> Outcome {
            self.push_raw(&bytes(m, ts), src(m), at)
        }
        fn advance(&mut self, at: u64) {
            self.b.advance(at, &mut Self::sink(&mut self.out));
        }
        /// Flushes, and checks that every datagram and readout had one fate.
        fn flush(&mut self) {
            self.b.flush(&mut Self::sink(&mut self.out));
            if let Err(e) = self.b.stats().balance() {
                panic!("fates do not balance: {e}");
            }
        }
        /// Every module of `mods` sends frame `f` at `at`.
        fn frame(&mut self, mods: impl IntoIterator<Item = usize>, f: u64, at: u64) {
            for m in mods {
                self.send(m, &frame(f), at);
            }
        }
    }

    #[test]
    fn a_reset_builder_builds_what_a_new_one_does() {
        // Two runs: 4 modules, module 2 dead in frame 1 and a stray, then
        // the same from a builder reset after the first.
        let run = |r: &mut Rig| {
            for f in 0..6 {
                let mods: Vec<usize> = (0..4).filter(|&m| !(m == 2 && f == 1)).collect();
                r.frame(mods, f, T0 + f * 40 * MS);
            }
            r.send(3, &[T0 + 7_000 * MS], T0 + 250 * MS);
            r.advance(T0 + 10_000 * MS);
            r.flush();
        };
        let mut fresh = Rig::fixed(4);
        run(&mut fresh);
        let mut reused = Rig::fixed(4);
        run(&mut reused);
        let first = std::mem::take(&mut reused.out);
        reused.b.reset();
        assert_eq!(reused.b.stats().events(), 0, "counters start again");
        run(&mut reused);
        for outs in [&first, &reused.out] {
            assert_eq!(outs.len(), fresh.out.len());
            for (a, b) in outs.iter().zip(&fresh.out) {
                assert_eq!(
                    (a.msg.as_slice(), a.reason, a.present),
                    (b.msg.as_slice(), b.reason, b.present)
                );
            }
        }
        assert_eq!(reused.b.stats().to_string(), fresh.b.stats().to_string());
    }

    /// Asserts that event `o` holds exactly module `m`'s readout at `ts`.
    fn assert_row(o: &Out, m: usize, ts: u64) {
        let v = o.view();
        for p in 0..64 {
            assert_eq!(
                v.mv(m, p),
                adc_to_mv(adc(m, ts, p)),
                "module {m} pixel {p} ts {ts}"
            );
        }
        assert_eq!(v.module_timestamps(m), Some((ts, ts + 17 + m as u64)));
    }

    fn assert_missing(o: &Out, m: usize) {
        let v = o.view();
        assert!(
            (0..64).all(|p| v.mv(m, p).is_nan()),
            "module {m} should be NaN"
        );
        assert_eq!(v.module_timestamps(m), Some((0, 0)));
    }

    #[test]
    fn an_event_is_emitted_the_moment_its_last_module_arrives() {
        let mut r = Rig::fixed(32);
        for m in 0..31 {
            r.send(m, &frame(0), T0 + m as u64);
        }
        assert!(r.out.is_empty(), "31 of 32 modules: nothing yet");
        r.send(31, &frame(0), T0 + 40);
        assert_eq!(r.out.len(), 10);
        for (i, o) in r.out.iter().enumerate() {
            let ts = frame(0)[i];
            assert_eq!(o.reason, Emit::Complete);
            assert_eq!(o.view().number(), i as u64 + 1);
            assert_eq!(o.view().timestamp(), ts);
            assert_eq!(o.present, u32::MAX);
            for m in 0..32 {
                assert_row(o, m, ts);
            }
        }
    }

    #[test]
    fn modules_arriving_in_any_order_build_the_same_events() {
        let mut a = Rig::fixed(4);
        let mut b = Rig::fixed(4);
        for f in 0..3 {
            a.frame(0..4, f, T0 + f * 40 * MS);
            b.frame([3, 1, 0, 2], f, T0 + f * 40 * MS);
        }
        assert_eq!(a.out.len(), 30);
        let msgs = |r: &Rig| r.out.iter().map(|o| o.msg.clone()).collect::<Vec<_>>();
        assert_eq!(msgs(&a), msgs(&b));
        // Readouts interleaved one by one across modules and frames, too.
        let mut c = Rig::fixed(4);
        for f in 0..3 {
            for t in frame(f) {
                for m in [2, 0, 3, 1] {
                    c.send(m, &[t], T0 + f * 40 * MS);
                }
            }
        }
        assert_eq!(msgs(&a), msgs(&c));
    }

    #[test]
    fn after_one_lost_datagram_the_next_events_are_complete_and_unmixed() {
        // PROTOCOL.md §7: the seed paired queue heads, so one lost datagram
        // mixed readout r+10 of one module with r of the others forever.
        let mut r = Rig::fixed(4);
        r.frame(0..4, 0, T0);
        r.frame([0, 1, 3], 1, T0 + 40 * MS); // module 2 loses frame 1
        assert_eq!(r.out.len(), 10, "frame 1 waits: module 2 may still come");
        r.frame(0..4, 2, T0 + 80 * MS);
        assert_eq!(r.out.len(), 10, "a swapped datagram may still come");
        r.advance(T0 + 80 * MS + DEFAULT_REORDER_NS);
        assert_eq!(r.out.len(), 30, "module 2's frame 2 shows frame 1 is lost");
        for (i, o) in r.out[10..20].iter().enumerate() {
            assert_eq!(o.reason, Emit::Passed);
            assert_missing(o, 2);
            for m in [0, 1, 3] {
                assert_row(o, m, frame(1)[i]);
            }
        }
        for (i, o) in r.out[20..].iter().enumerate() {
            assert_eq!(o.reason, Emit::Complete);
            for m in 0..4 {
                assert_row(o, m, frame(2)[i]);
            }
        }
        let numbers: Vec<u64> = r.out.iter().map(|o| o.view().number()).collect();
        assert_eq!(numbers, (1..=30).collect::<Vec<_>>());
        assert_eq!(r.b.stats().modules[2].missing, 10);
    }

    #[test]
    fn a_duplicate_is_counted_and_never_overwrites() {
        let mut r = Rig::fixed(2);
        r.send(0, &frame(0), T0);
        // Same timestamps from module 0 again, different values.
        let mut other = bytes(0, &frame(0));
        other[8] ^= 0xFF;
        r.push_raw(&other, src(0), T0 + 1);
        assert_eq!(r.b.stats().modules[0].duplicate, 10);
        r.send(1, &frame(0), T0 + 2);
        assert_eq!(r.out.len(), 10);
        for (i, o) in r.out.iter().enumerate() {
            assert_row(o, 0, frame(0)[i]);
        }
    }

    #[test]
    fn a_window_narrower_than_the_spacing_never_merges_consecutive_readouts() {
        // PROTOCOL.md §7: a 51 ms window over 40 ms datagrams lost half the data.
        let mut r = Rig::fixed(1);
        r.frame([0], 0, T0);
        r.frame([0], 1, T0 + 40 * MS);
        assert_eq!(r.out.len(), 20);
        assert_eq!(r.b.stats().modules[0].duplicate, 0);
        let too_wide = BuilderConfig {
            window_ns: 3 * SPACING,
            modules: Some(1),
            ..Default::default()
        };
        // A window that would match readout i+1 into slot i is refused.
        assert_eq!(
            too_wide.validate(),
            Err(ConfigError::WindowTooWide(3 * SPACING))
        );
    }

    #[test]
    fn a_late_readout_is_counted_and_never_merged() {
        let mut r = Rig::fixed(2);
        r.frame([0], 0, T0);
        r.advance(T0 + 101 * MS); // frame 0 times out without module 1
        assert_eq!(r.out.len(), 10);
        assert!(r.out.iter().all(|o| o.reason == Emit::Expired));
        r.frame([1], 0, T0 + 102 * MS);
        assert_eq!(r.b.stats().modules[1].late, 10);
        assert_eq!(r.out.len(), 10, "late readouts make no new events");
        r.frame([0, 1], 1, T0 + 140 * MS);
        assert_eq!(r.out.len(), 20);
        assert!(r.out[10..].iter().all(|o| o.reason == Emit::Complete));
    }

    #[test]
    fn a_dead_module_gives_partial_events_after_the_timeout_on_the_packet_clock() {
        let mut r = Rig::fixed(3);
        r.frame([0, 1], 0, T0);
        assert!(r.out.is_empty());
        r.frame([0, 1], 1, T0 + 40 * MS); // module 2 silent: not passed
        assert!(r.out.is_empty());
        r.frame([0, 1], 2, T0 + 100 * MS); // the packet clock passes frame 0's deadline
        assert_eq!(r.out.len(), 10);
        for o in &r.out {
            assert_eq!(o.reason, Emit::Expired);
            assert_missing(o, 2);
        }
    }

    #[test]
    fn a_camera_that_goes_quiet_is_flushed_on_the_wall_clock() {
        let mut r = Rig::fixed(2);
        r.frame([0], 0, T0);
        r.advance(T0 + 99 * MS);
        assert!(r.out.is_empty());
        r.advance(T0 + 100 * MS);
        assert_eq!(r.out.len(), 10);
        assert!(
            r.out
                .iter()
                .all(|o| o.reason == Emit::Expired && o.present == 1)
        );
    }

    #[test]
    fn the_tail_of_a_run_is_flushed() {
        let mut r = Rig::fixed(2);
        r.frame([0], 0, T0);
        r.flush();
        assert_eq!(r.out.len(), 10);
        assert!(r.out.iter().all(|o| o.reason == Emit::Flushed));
        assert_eq!(r.b.pending(), 0);
    }

    #[test]
    fn one_module_alone_gives_prompt_one_module_events() {
        let mut r = Rig::new(BuilderConfig::default());
        r.frame([0], 0, T0);
        assert!(r.out.is_empty(), "first listens for the rest of the camera");
        r.frame([0], 1, T0 + 40 * MS);
        assert!(r.out.is_empty());
        r.advance(T0 + 100 * MS);
        assert_eq!(r.out.len(), 20, "after the listening period");
        r.frame([0], 2, T0 + 120 * MS);
        assert_eq!(r.out.len(), 30, "then at once");
        assert!(
            r.out[20..]
                .iter()
                .all(|o| o.reason == Emit::Complete && o.present == 1)
        );
    }

    #[test]
    fn a_learned_camera_does_not_make_one_module_events_at_start() {
        let mut r = Rig::new(BuilderConfig::default());
        for m in 0..32 {
            r.send(m, &frame(0), T0 + m as u64 * MS); // 1 ms apart
        }
        r.frame(0..32, 1, T0 + 40 * MS);
        r.advance(T0 + 100 * MS);
        assert_eq!(r.out.len(), 20);
        assert!(
            r.out
                .iter()
                .all(|o| o.present == u32::MAX && o.reason == Emit::Complete)
        );
        r.frame(0..32, 2, T0 + 120 * MS);
        assert_eq!(r.out.len(), 30, "complete at once after learning");
    }

    #[test]
    fn a_dead_module_stops_holding_events_back_after_the_module_timeout() {
        let mut r = Rig::new(BuilderConfig::default());
        let mut at = T0;
        for f in 0..3 {
            r.frame(0..4, f, at);
            at += 40 * MS;
        }
        r.advance(at);
        assert_eq!(r.out.len(), 30);
        // Module 3 dies. Its events wait for the timeout until 2 s of silence.
        let mut f = 3;
        while at <= T0 + 80 * MS + 2000 * MS {
            r.frame(0..3, f, at);
            f += 1;
            at += 40 * MS;
        }
        assert_eq!(r.b.expected(), 0b0111, "module 3 dropped out");
        assert_eq!(
            r.b.pending(),
            0,
            "what waited for module 3 went out when it dropped"
        );
        let n = r.out.len();
        r.frame(0..3, f, at);
        assert_eq!(r.out.len(), n + 10, "the next frame is complete at once");
        assert!(
            r.out[n..]
                .iter()
                .all(|o| o.reason == Emit::Complete && o.present == 0b0111)
        );
        // It comes back when it speaks again. Its first datagram after the
        // others' finds that frame already published (it was not waited for).
        r.frame(0..4, f + 1, at + 40 * MS);
        assert_eq!(r.b.expected(), 0b1111);
        assert_eq!(r.b.stats().modules[3].late, 10);
        r.frame(0..4, f + 2, at + 80 * MS);
        assert!(
            r.out[r.out.len() - 10..]
                .iter()
                .all(|o| o.reason == Emit::Complete && o.present == 0b1111)
        );
    }

    #[test]
    fn a_restarted_module_with_timestamps_going_backwards_is_out_of_sync() {
        let mut r = Rig::new(BuilderConfig::default());
        let mut at = T0;
        for f in 0..3 {
            r.frame(0..4, f, at);
            at += 40 * MS;
        }
        r.advance(at);
        let before = r.out.len();
        // Module 1 restarts: its clock starts again near zero.
        let restarted = |f: u64| {
            (0..10)
                .map(|i| 1_000 + (f * 10 + i) * SPACING)
                .collect::<Vec<_>>()
        };
        for f in 3..60 {
            r.frame([0, 2, 3], f, at);
            r.send(1, &restarted(f - 3), at);
            at += 40 * MS;
        }
        let s = r.b.stats();
        assert_eq!(s.modules[1].out_of_sync, 57);
        assert_eq!(s.modules[1].out_of_sync_readouts, 570);
        assert_eq!(s.modules[1].off_timeline, 1, "reported once");
        assert_eq!(
            s.modules[1].readouts, 30,
            "nothing after the restart was merged"
        );
        assert_eq!(s.clock_steps, 0, "one module of four is no camera reset");
        assert_eq!(r.b.expected(), 0b1101);
        // The other modules' events went on: early ones waited for module 1, then complete.
        assert!(r.out.len() - before >= 10 * 50);
        let tail = &r.out[r.out.len() - 10..];
        assert!(
            tail.iter()
                .all(|o| o.reason == Emit::Complete && o.present == 0b1101)
        );
        for o in tail {
            assert_missing(o, 1);
        }
    }

    #[test]
    fn a_camera_clock_reset_is_followed() {
        let mut r = Rig::fixed(4);
        r.frame(0..4, 0, T0);
        assert_eq!(r.out.len(), 10);
        // The whole camera restarts its clock at 5 ms.
        let new = |f: u64| {
            (0..10)
                .map(|i| 5 * MS + (f * 10 + i) * SPACING)
                .collect::<Vec<_>>()
        };
        for m in 0..4 {
            r.send(m, &new(0), T0 + 40 * MS);
        }
        for m in 0..4 {
            r.send(m, &new(1), T0 + 80 * MS);
        }
        let s = r.b.stats();
        assert_eq!(s.clock_steps, 1);
        // Modules 0 and 1 were held until the majority agreed, then built.
        assert_eq!(s.out_of_sync, 0);
        assert_eq!(s.held, 0);
        // Both frames of the new timeline are complete, numbering goes on.
        let last = &r.out[r.out.len() - 20..];
        let new_ts = [new(0), new(1)].concat();
        for (i, o) in last.iter().enumerate() {
            assert_eq!(o.reason, Emit::Complete);
            assert_eq!(o.view().timestamp(), new_ts[i]);
            for m in 0..4 {
                assert_row(o, m, new_ts[i]);
            }
        }
        assert_eq!(r.out.last().unwrap().view().number(), r.out.len() as u64);
    }

    #[test]
    fn a_single_module_clock_reset_is_followed_at_once() {
        let mut r = Rig::new(BuilderConfig::default());
        r.frame([0], 0, T0);
        r.advance(T0 + 100 * MS);
        r.send(0, &[7 * MS, 8 * MS], T0 + 120 * MS);
        assert_eq!(r.b.stats().clock_steps, 1);
        assert_eq!(r.b.stats().out_of_sync, 0);
        r.advance(T0 + 120 * MS);
        assert_eq!(r.out.len(), 12);
    }

    #[test]
    fn after_a_long_silence_the_timeline_starts_afresh() {
        let mut r = Rig::fixed(2);
        r.frame(0..2, 0, T0);
        // An hour later the camera resumes, far beyond --max-jump.
        let later = |f| {
            frame(f)
                .iter()
                .map(|t| t + 3600 * 1000 * MS)
                .collect::<Vec<_>>()
        };
        for m in 0..2 {
            r.send(m, &later(0), T0 + 3600 * 1000 * MS);
        }
        assert_eq!(r.b.stats().out_of_sync, 0);
        assert_eq!(r.b.stats().clock_steps, 0);
        assert_eq!(r.out.len(), 20);
        assert!(r.out.iter().all(|o| o.reason == Emit::Complete));
    }

    #[test]
    fn malformed_and_foreign_datagrams_change_nothing_else() {
        let run = |noise: bool| {
            let mut r = Rig::fixed(3);
            for f in 0..3 {
                for m in 0..3 {
                    if noise {
                        let good = bytes(m, &frame(f));
                        assert_eq!(
                            r.push_raw(&good[..143], src(m), T0),
                            Outcome::Rejected(Reject::BadLength)
                        );
                        assert_eq!(
                            r.push_raw(&[], src(m), T0),
                            Outcome::Rejected(Reject::Empty)
                        );
                        let far = Ipv4Addr::new(127, 0, 0, 150);
                        assert_eq!(
                            r.push_raw(&good, far, T0),
                            Outcome::Rejected(Reject::UnknownSource)
                        );
                        let zero = bytes(m, &[0, 5]);
                        assert_eq!(
                            r.push_raw(&zero, src(m), T0),
                            Outcome::Rejected(Reject::BadTimestamp)
                        );
                        let d = Datagram {
                            payload: &good,
                            src: src(m),
                            arrival_ns: T0,
                            truncated: true,
                        };
                        assert_eq!(
                            r.b.push(d, &mut Rig::sink(&mut r.out)),
                            Outcome::Rejected(Reject::Truncated)
                        );
                    }
                    r.send(m, &frame(f), T0 + f * 40 * MS);
                }
            }
            r
        };
        let clean = run(false);
        let noisy = run(true);
        let msgs = |r: &Rig| r.out.iter().map(|o| o.msg.clone()).collect::<Vec<_>>();
        assert_eq!(msgs(&clean).len(), 30);
        assert_eq!(msgs(&clean), msgs(&noisy));
        let s = noisy.b.stats();
        assert_eq!(s.rejected, [9, 9, 9, 9, 9]);
        assert_eq!(s.unknown_sources, vec![(Ipv4Addr::new(127, 0, 0, 150), 9)]);
        assert_eq!(s.modules[1].rejected, [3, 3, 3, 0, 3]);
    }

    #[test]
    fn a_datagram_of_two_readouts_shifts_nothing() {
        // PROTOCOL.md §7: a 288-byte datagram shifted one module's rows forever.
        let mut r = Rig::fixed(2);
        let f0 = frame(0);
        r.send(0, &f0[..2], T0);
        r.send(0, &f0[2..], T0);
        r.send(1, &f0, T0);
        r.frame(0..2, 1, T0 + 40 * MS);
        assert_eq!(r.out.len(), 20);
        for (i, o) in r.out.iter().enumerate() {
            let ts = [frame(0), frame(1)].concat()[i];
            assert_row(o, 0, ts);
            assert_row(o, 1, ts);
        }
    }

    #[test]
    fn event_timestamp_is_the_mean_of_the_modules_present() {
        let cfg = BuilderConfig {
            modules: Some(0b111),
            window_ns: 1000,
            ..Default::default()
        };
        let mut r = Rig::new(cfg);
        r.send(0, &[T0], T0);
        r.send(1, &[T0 + 300], T0);
        r.send(2, &[T0 + 901], T0);
        assert_eq!(r.out.len(), 1);
        assert_eq!(r.out[0].view().timestamp(), T0 + 400);
    }

    #[test]
    fn a_full_ring_forces_out_the_oldest_event_and_memory_stays_bounded() {
        let cfg = BuilderConfig {
            modules: Some(0b11),
            slots: MIN_SLOTS,
            ..Default::default()
        };
        let mut r = Rig::new(cfg);
        for f in 0..10 {
            r.frame([0], f, T0 + f * MS); // module 1 never comes
        }
        assert_eq!(r.b.pending(), MIN_SLOTS);
        assert_eq!(r.out.len(), 100 - MIN_SLOTS);
        assert!(r.out.iter().all(|o| o.reason == Emit::Forced));
        assert_eq!(r.b.stats().pending_max, MIN_SLOTS);
        let ts: Vec<u64> = r.out.iter().map(|o| o.view().timestamp()).collect();
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "still in timestamp order"
        );
    }

    #[test]
    fn events_are_published_in_timestamp_order_whatever_the_arrival_order() {
        let mut r = Rig::fixed(2);
        // Module 0 loses frame 0; its frame 1 arrives first of all.
        r.frame([0], 1, T0);
        r.frame([1], 0, T0 + 1);
        r.frame([1], 1, T0 + 2);
        r.frame(0..2, 2, T0 + 40 * MS);
        let ts: Vec<u64> = r.out.iter().map(|o| o.view().timestamp()).collect();
        assert_eq!(ts, [frame(0), frame(1), frame(2)].concat());
        assert!(
            r.out[..10]
                .iter()
                .all(|o| o.reason == Emit::Passed && o.present == 0b10)
        );
    }

    #[test]
    fn a_swapped_pair_within_the_grace_is_built_and_after_it_is_late() {
        let g = DEFAULT_REORDER_NS;
        let mut r = Rig::fixed(2);
        r.frame(0..2, 0, T0);
        // Module 1 sends frame 2 before frame 1, 10 µs apart: built.
        r.send(0, &frame(1), T0 + 40 * MS);
        r.send(1, &frame(2), T0 + 40 * MS);
        r.send(1, &frame(1), T0 + 40 * MS + 10_000);
        r.send(0, &frame(2), T0 + 40 * MS + 20_000);
        assert_eq!(r.out.len(), 30);
        assert!(r.out.iter().all(|o| o.reason == Emit::Complete));
        // Frames 4 before 3 again, but the grace goes by in between: frame 3
        // went out without module 1, whose frame 3 is then late.
        r.send(0, &frame(3), T0 + 120 * MS);
        r.send(1, &frame(4), T0 + 120 * MS);
        r.advance(T0 + 120 * MS + g);
        assert_eq!(r.out.len(), 40);
        assert!(r.out[30..].iter().all(|o| o.reason == Emit::Passed));
        r.send(1, &frame(3), T0 + 120 * MS + g + 1);
        assert_eq!(r.b.stats().modules[1].late, 10);
        assert_eq!(r.b.stats().modules[1].out_of_sync, 0);
    }

    #[test]
    fn a_copy_of_a_datagram_already_built_is_a_duplicate_not_late() {
        let mut r = Rig::fixed(2);
        r.frame(0..2, 0, T0);
        r.frame(0..2, 1, T0 + 40 * MS);
        assert_eq!(r.out.len(), 20);
        // A copy of frame 0 from module 0, long after frame 0 went out.
        r.send(0, &frame(0), T0 + 60 * MS);
        let s = r.b.stats();
        assert_eq!((s.modules[0].duplicate, s.modules[0].late), (10, 0));
        assert_eq!(r.out.len(), 20, "no new event");
    }

    #[test]
    fn a_stray_far_ahead_blacks_nothing_out() {
        // Before: its slots expired and moved the timeline 8 s ahead, so
        // every readout after it was late for 8 s.
        let mut r = Rig::fixed(4);
        r.frame(0..4, 0, T0);
        r.send(1, &frame(200), T0 + 10 * MS);
        for f in 1..10 {
            r.frame(0..4, f, T0 + f * 40 * MS);
        }
        r.advance(T0 + 2000 * MS);
        assert_eq!(r.out.len(), 100);
        assert!(r.out.iter().all(|o| o.reason == Emit::Complete));
        let s = r.b.stats();
        assert_eq!((s.out_of_sync, s.modules[1].out_of_sync_readouts), (1, 10));
        assert_eq!((s.late(), s.duplicate()), (0, 0));
    }

    #[test]
    fn module_sets_parse_and_print() {
        assert_eq!(parse_module_set("0-31"), Ok(u32::MAX));
        assert_eq!(parse_module_set("0,2,5-7"), Ok(0b1110_0101));
        assert!(parse_module_set("32").is_err());
        assert!(parse_module_set("5-3").is_err());
        assert!(parse_module_set("").is_err());
        assert_eq!(format_module_set(0b1110_0101), "0,2,5-7");
        assert_eq!(format_module_set(!(1 << 5)), "0-4,6-31");
        assert_eq!(format_module_set(0), "none");
    }

    #[test]
    fn settings_survive_their_text_form() {
        let c = BuilderConfig {
            modules: Some(0b1011),
            relaxed_ip: true,
            run_number: 9,
            ..Default::default()
        };
        let mut back = BuilderConfig::default();
        for (k, v) in c.to_pairs() {
            assert_eq!(back.set_pair(&k, &v), Ok(true));
        }
        assert_eq!(back, c);
        assert_eq!(back.set_pair("format", "v1"), Ok(false));
        assert!(back.set_pair("window_ns", "x").is_err());
    }

    #[test]
    fn readouts_spread_over_the_whole_clock_overflow_nothing() {
        // Found by tests/fuzz.rs in a debug build: a datagram whose two
        // readouts lie ~1.7e19 ns apart made `2 * tolerance` overflow.
        let mut r = Rig::new(BuilderConfig::default());
        r.frame([0, 1, 2], 0, T0);
        for (i, ts) in [[T0 + 40 * MS, u64::MAX - 1], [1, u64::MAX / 2]]
            .iter()
            .enumerate()
        {
            r.send(3, ts, T0 + (i as u64 + 1) * 40 * MS);
            r.send(
                3,
                &[ts[1] - 2, ts[1] - 1],
                T0 + (i as u64 + 1) * 40 * MS + 1,
            );
        }
        r.frame([0, 1, 2], 1, T0 + 120 * MS);
    }

    #[test]
    fn sources_outside_allow_are_refused_by_address_and_odd_ones_noted() {
        let allow = vec![
            "127.0.0.96/27".parse().unwrap(),
            "127.0.0.128/30".parse().unwrap(),
        ];
        let mut r = Rig::new(BuilderConfig {
            allow,
            ..Default::default()
        });
        let stray = Ipv4Addr::new(127, 0, 0, 1);
        let ts = [T0, T0 + SPACING];
        assert_eq!(
            r.push_raw(&bytes(1, &ts), stray, T0),
            Outcome::Rejected(Reject::UnknownSource)
        );
        assert!(matches!(r.send(1, &ts, T0 + 1), Outcome::Accepted { .. }));
        let s = r.b.stats();
        assert_eq!(s.unknown_sources, vec![(stray, 1)]);
        assert_eq!(
            s.modules[1].datagrams, 1,
            "only the camera's module 1 counted"
        );
        assert!(s.odd_sources.is_empty());
        // Without --allow the last octet's rule stays, and the address is noted.
        let mut open = Rig::new(BuilderConfig::default());
        for at in [T0, T0 + 40 * MS] {
            open.push_raw(&bytes(1, &[at, at + SPACING]), stray, at);
        }
        assert_eq!(open.b.stats().odd_sources, vec![(stray, 1)]);
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("127.0.0.100".parse::<Net>().unwrap().contains(src(0)));
        let e = "127.0.0.100/24".parse::<Net>().unwrap_err();
        assert!(
            e.contains("127.0.0.0/24") && e.contains("127.0.0.100"),
            "{e}"
        );
        // A dump header written before host bits were refused still reads.
        let mut old = BuilderConfig::default();
        assert!(old.set_pair("allow", "127.0.0.100/24").unwrap());
        assert_eq!(old.allow, vec!["127.0.0.0/24".parse().unwrap()]);
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag_named() {
        let bad = BuilderConfig {
            module_timeout_ns: 50 * MS,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.describe(crate::cli::flag).contains("--module-timeout"));
        assert!(e.to_string().contains("module_timeout_ns"), "{e}");
        assert!(
            BuilderConfig {
                window_ns: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(BuilderConfig::default().validate().is_ok());
        // A module timeout past a day, or one that overflowed, is refused.
        for ns in [MAX_MODULE_TIMEOUT_NS + 1, u64::MAX] {
            let e = BuilderConfig {
                module_timeout_ns: ns,
                ..Default::default()
            }
            .validate()
            .unwrap_err();
            assert_eq!(e, ConfigError::ModuleTimeoutTooLong(ns));
            assert!(e.describe(crate::cli::flag).contains("at most 86400 s"));
        }
    }
}
