//! The live daemon: its two stages, how they hand datagrams over, shutdown.
//!
//! ```text
//!              ┌──────────── recv thread (core A) ───────────┐
//!  UDP socket ─┤ Receiver::recv → batch ──┬─ small batch, builder idle:   │
//!              │                          │    build it right here (inline)│
//!              │                          └─ otherwise: SPSC queue ──┐     │
//!              └─────────────────────────────────────────────────── │ ────┘
//!                                                                    ▼
//!              ┌──────────── build thread (core B) ──────────────────────┐
//!              │ drain queue → Assembly (builder + publisher) → ZMQ PUB   │
//!              └──────────────────────────────────────────────────────────┘
//! ```
//!
//! This module owns the threads, the two bounded SPSC queues between them
//! (datagram references forward, emptied buffers back), and the order of
//! shutdown. The `Assembly` — builder, publisher and their metrics — is
//! owned by whichever stage holds its lock: the build thread while it drains
//! the queue, or the receive thread for a batch small enough to build
//! inline. Why both: on these VMs waking a sleeping thread takes p50 22 µs,
//! p99 150–250 µs (measured, docs/performance.md), which alone breaks the
//! 20 µs latency target at the camera's real rate; building inline avoids
//! the wake-up, while under load the queue spreads receive and build over
//! two cores. Inline is chosen only when the queue is empty and the lock is
//! free, so datagrams are always built in arrival order, and only while the
//! rate is below 100 000 datagrams/s (a full batch also counts as heavy):
//! above that, receiving alone needs a core and building moves to the other.
//!
//! Time: whoever holds the assembly moves the builder's clock on the wall
//! clock ("housekeeping": flush what timed out, poll subscriptions, print
//! the status line) only to a time before which every datagram is already
//! built. The receive thread knows that time exactly when it is idle (it is
//! the receiver); the build thread uses the receive thread's watermark
//! `built_before`, "every datagram stamped before this has been built or
//! queued". The builder thus
//! sees the same sequence of times a replay of the raw dump will, which is
//! what makes the replay byte-exact. When idle, the receive thread sleeps
//! in the kernel until the builder's next deadline (or a datagram), and the
//! build thread until it is handed work: an idle daemon costs nothing.
//!
//! Nothing here allocates or logs per datagram; problems are counted and
//! logged at most once per interval.

use std::fmt;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::builder::{
    self, Builder, BuilderConfig, BuilderStats, Datagram, Event, EventSink, Outcome,
};
use crate::clock::{self, since};
use crate::dump::{DumpConfig, DumpStats, DumpSummary, DumpWriter};
use crate::event::Format;
use crate::metrics::{BatchSizes, BatchSummary, Quantiles, RateLimit, StageLatency, human_ns};
use crate::ops::health::{Changes, Health};
use crate::ops::{self, Board, Command, Done, RunState, Snapshot};
use crate::packet::{self, Reject};
use crate::publish::{BindError, PublishStats, Publisher, Subscription};
use crate::recv::{self, BATCH, Backend, BufId, IoMode, PacketPool, Receiver, RecvMeta};

/// Datagrams per 10 ms above which the receive thread stops building inline
/// and hands building to the other core: 100 000 datagrams/s, 125× the
/// camera's real rate. Below it a burst from the whole camera is built
/// inline without a thread wake-up; above it receiving alone needs a core.
/// (io_uring hands over ~33 completions per call, so batch size alone never
/// showed a backlog: measured, every batch of a drain was built inline.)
pub const OFFLOAD_PER_WINDOW: u64 = 1_000;
const LOAD_WINDOW_NS: u64 = 10_000_000;

/// Datagrams received in the current and the previous 10 ms window
/// (monotonic time: [`clock::mono_ns`]).
#[derive(Default)]
struct LoadMeter {
    window_start_ns: u64,
    count: u64,
    previous: u64,
}

impl LoadMeter {
    fn add(&mut self, n: usize, now_ns: u64) {
        if now_ns >= self.window_start_ns + LOAD_WINDOW_NS {
            let consecutive = now_ns < self.window_start_ns + 2 * LOAD_WINDOW_NS;
            self.previous = if consecutive { self.count } else { 0 };
            self.count = 0;
            self.window_start_ns = now_ns;
        }
        self.count += n as u64;
    }

    /// The recent rate needs two cores.
    fn heavy(&self) -> bool {
        self.count > OFFLOAD_PER_WINDOW || self.previous > OFFLOAD_PER_WINDOW
    }
}
/// How long the build stage waits awake for the next batch after one
/// before it parks. Only under load does it build at all (the receive stage
/// builds a light load itself), and then batches come every few tens of µs.
const SPIN_BEFORE_PARK_NS: u64 = 100_000;
/// How often subscriptions are checked (for the log).
const SUBSCRIPTION_POLL_NS: u64 = 100_000_000;
/// The longest the receive thread sleeps in the kernel when idle.
const IDLE_WAIT_NS: u64 = 1_000_000_000;
/// Wait while the build thread holds buffers, so returned ones recycle fast.
const BUSY_WAIT: Duration = Duration::from_micros(200);
/// On a stop signal, the longest the receive stage goes on taking what is
/// already queued in the socket.
const DRAIN_ON_STOP_NS: u64 = 200_000_000;
/// At most one log line per cause per this interval.
const LOG_EVERY_NS: u64 = 10_000_000_000;

/// Everything `ssdaqd` needs to run.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub listen: SocketAddrV4,
    pub endpoint: String,
    pub format: Format,
    /// Per-subscriber queue of the publisher, in messages.
    pub hwm: i32,
    pub io: IoMode,
    /// Pin (receive, build) threads to these cores.
    pub cores: Option<(usize, usize)>,
    pub builder: BuilderConfig,
    /// Socket receive buffer to ask for, bytes.
    pub rcvbuf: usize,
    /// Packet buffers shared by the stages (power of two).
    pub buffers: usize,
    /// Interval of the status line; zero for none.
    pub status_interval: Duration,
    /// Record every datagram received in a raw dump.
    pub dump: Option<DumpConfig>,
    /// Poll the socket instead of sleeping: lowest latency, a whole core.
    pub busy_poll: bool,
    /// Fault injection, for tests: this stage panics on its first batch.
    pub inject_panic: Option<Stage>,
    /// Serve Prometheus metrics and JSON status over HTTP here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Take run-control commands on this ZeroMQ REP endpoint.
    pub control: Option<String>,
    /// Start without a run: receive and count, record nothing until
    /// `start-run`.
    pub start_stopped: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            listen: SocketAddrV4::new([0, 0, 0, 0].into(), 2009),
            endpoint: crate::publish::DEFAULT_ENDPOINT.to_string(),
            format: Format::V1,
            hwm: crate::publish::DEFAULT_HWM,
            io: IoMode::Auto,
            cores: None,
            builder: BuilderConfig::default(),
            rcvbuf: 64 << 20,
            buffers: 512,
            status_interval: Duration::from_secs(5),
            dump: None,
            busy_poll: false,
            inject_panic: None,
            metrics: None,
            control: None,
            start_stopped: false,
        }
    }
}

/// The pipeline's two stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Receive,
    Build,
}

impl Stage {
    /// The stage's name: `receive` or `build`.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::Receive => "receive",
            Stage::Build => "build",
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Stage, String> {
        match s {
            "receive" => Ok(Stage::Receive),
            "build" => Ok(Stage::Build),
            _ => Err(format!("no stage {s:?} (receive, build)")),
        }
    }
}

/// Why the daemon could not start. Each is something the operator can fix.
#[derive(Debug)]
pub enum StartError {
    Config(String),
    Listen {
        addr: SocketAddrV4,
        source: std::io::Error,
    },
    Publish(BindError),
    Dump(std::io::Error),
    Io(std::io::Error),
    /// The metrics server or the control endpoint cannot bind.
    Ops(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Listen { addr, source } => {
                // `source` already names the address (recv::bind_udp adds it).
                write!(f, "cannot listen: {source}")?;
                if source.kind() == std::io::ErrorKind::AddrInUse {
                    write!(
                        f,
                        " (another ssdaqd running? choose another port with -l, not {})",
                        addr.port()
                    )?;
                }
                Ok(())
            }
            StartError::Publish(e) => write!(f, "{e}"),
            StartError::Dump(e) => write!(f, "cannot dump: {e}"),
            StartError::Io(e) => write!(f, "cannot set up receiving: {e}"),
            StartError::Ops(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Counters written by the receive thread (relaxed atomics, read by anyone).
#[derive(Default)]
struct RecvCounters {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    inline_batches: AtomicU64,
    queued_batches: AtomicU64,
    errors: AtomicU64,
    kernel_drops: AtomicU64,
    /// Times the receive stage waited for the build stage to hand buffers
    /// back (it held every one: building was the slower stage).
    build_bound: AtomicU64,
    /// From the receiver's own [`recv::RecvStats`], copied once a second.
    starved: AtomicU64,
    rearms: AtomicU64,
    unusable: AtomicU64,
    unstamped: AtomicU64,
}

impl RecvCounters {
    /// Copies what the receiver and the kernel counted.
    fn update(&self, rx: &Receiver) {
        if let Some(d) = rx.kernel_drops() {
            self.kernel_drops.store(d, Ordering::Relaxed);
        }
        let s = rx.stats();
        self.starved.store(s.starved, Ordering::Relaxed);
        self.rearms.store(s.rearms, Ordering::Relaxed);
        self.unusable.store(s.unusable, Ordering::Relaxed);
        self.unstamped.store(s.unstamped, Ordering::Relaxed);
    }
}

/// State shared by the two stages.
struct Shared {
    assembly: Mutex<Assembly>,
    /// Every datagram the kernel stamped before this (ns) has been built or
    /// queued: the build stage may move the builder's clock to it.
    built_before: AtomicU64,
    stop: Arc<AtomicBool>,
    /// Stop without draining the socket ([`Daemon::hurry`]).
    hurry: Arc<AtomicBool>,
    recv_done: AtomicBool,
    /// The build stage has ended (after `recv_done`, or by a panic).
    build_done: AtomicBool,
    /// A stage ended by a panic; the daemon stopped.
    failed: AtomicBool,
    inject_panic: Option<Stage>,
    /// When the assembly next needs the wall clock (ns): the receive thread
    /// sleeps no longer than this.
    next_wake: AtomicU64,
    recv: RecvCounters,
    batches: BatchSizes,
    dump: Arc<DumpStats>,
    dumping: bool,
    /// Snapshots out, run-control commands in.
    board: Arc<Board>,
    started_ns: u64,
    backend: Backend,
    rcvbuf: usize,
}

impl Shared {
    /// Takes the assembly, waiting for the other stage to let go of it.
    fn lock(&self) -> Locked<'_> {
        Locked(self.assembly.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Takes the assembly if the other stage does not hold it.
    fn try_lock(&self) -> Option<Locked<'_>> {
        self.assembly.try_lock().ok().map(Locked)
    }
}

/// The assembly, held by one stage. Letting go of it fences the event rows
/// this thread wrote (they may be non-temporal stores, `event::fence_rows`),
/// so the stage that takes it next sees them whole: no caller has to
/// remember to.
struct Locked<'a>(MutexGuard<'a, Assembly>);

impl std::ops::Deref for Locked<'_> {
    type Target = Assembly;
    fn deref(&self) -> &Assembly {
        &self.0
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Assembly {
        &mut self.0
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        crate::event::fence_rows();
    }
}

/// The builder and the publisher, with what they measure, and the raw
/// dump: every datagram is recorded where it is built, in arrival order.
struct Assembly {
    builder: Builder,
    publisher: Publisher,
    /// Written by whichever stage builds (see [`Assembly::process`]).
    dump: Option<DumpWriter>,
    latency: StageLatency,
    reject_logs: [RateLimit; Reject::ALL.len()],
    out_of_sync_log: RateLimit,
    readout_log: RateLimit,
    expected_logged: u32,
    /// What the timeline log has said so far.
    off_logged: u32,
    /// Sources outside the camera's addresses logged so far.
    odd_logged: usize,
    steps_logged: u64,
    out_of_sync_logged: u64,
    status: StatusState,
    status_interval_ns: u64,
    next_subscription_poll_ns: u64,
    span: Span,
    /// Recording a run, or only counting (`stop-run`).
    run: RunState,
    /// Datagrams received while no run was recording.
    between_runs: u64,
    health: Health,
    next_health_ns: u64,
    /// Modules gone silent, not yet logged ([`SILENCE_GROUPING_NS`]).
    silence_pending: u32,
    silence_since: u64,
    started_ns: u64,
}

/// How long the silence of some modules waits to be logged: if the whole
/// camera falls silent meanwhile, it is one line.
const SILENCE_GROUPING_NS: u64 = 500_000_000;

/// When the run's datagrams came and went (CLOCK_REALTIME ns): the
/// benchmark derives throughput from it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    /// Arrival stamp of the first datagram built.
    pub first_arrival_ns: u64,
    /// When the first datagram had been built.
    pub first_built_ns: u64,
    /// Arrival stamp of the last datagram built.
    pub last_arrival_ns: u64,
    /// When the last datagram had been built (and its events handed to ZeroMQ).
    pub last_built_ns: u64,
}

/// Sends each event the builder emits, timing it.
struct PublishSink<'a> {
    publisher: &'a mut Publisher,
    latency: &'a mut StageLatency,
    /// When ssdaqd read the datagram being built (None in housekeeping):
    /// the one that completes the events emitted while it is built.
    read_ns: Option<u64>,
}

impl EventSink for PublishSink<'_> {
    #[inline]
    fn event(&mut self, mut ev: Event<'_>) {
        let arrival = ev.header.arrival_ns;
        let complete = ev.is_complete();
        if complete {
            self.latency
                .to_built
                .record(since(arrival, clock::now_ns()));
        }
        self.publisher.send_event(&mut ev);
        let now = clock::now_ns();
        let sent = since(arrival, now);
        if complete {
            self.latency.to_zmq.record(sent);
            if let Some(read) = self.read_ns {
                self.latency.to_read.record(since(arrival, read));
                self.latency.read_to_zmq.record(since(read, now));
            }
        } else {
            self.latency.partial_to_zmq.record(sent);
        }
    }
}

impl Assembly {
    fn sink(&mut self, read_ns: Option<u64>) -> (&mut Builder, PublishSink<'_>) {
        (
            &mut self.builder,
            PublishSink {
                publisher: &mut self.publisher,
                latency: &mut self.latency,
                read_ns,
            },
        )
    }

    /// Records one received datagram in the dump, if any, and builds it.
    ///
    /// The dump is written here, by the stage that builds, rather than by
    /// the receive stage: under load the receive thread is the one at its
    /// limit (the kernel's copy), while the build thread has the payload in
    /// cache and time to spare. Datagrams are built in arrival order, so
    /// the dump keeps that order; every datagram passes here, refused ones
    /// included.
    #[inline]
    fn process(&mut self, pool: &PacketPool, m: &RecvMeta) {
        if !self.run.running() {
            // Between runs (`stop-run`): received and counted, not kept;
            // its module is heard all the same (health).
            self.between_runs += 1;
            if let Some(module) = packet::module_of(*m.src.ip(), self.builder.config().relaxed_ip) {
                self.health.heard(usize::from(module), m.arrival_ns);
            }
            return;
        }
        let d = Datagram {
            payload: pool.payload(&m.buf, m.len as usize),
            src: *m.src.ip(),
            arrival_ns: m.arrival_ns,
            truncated: m.truncated,
        };
        if let Some(w) = &mut self.dump {
            w.append(m.arrival_ns, m.src, m.truncated, d.payload);
        }
        self.publisher.prepare(m.read_ns);
        let (builder, mut sink) = self.sink(Some(m.read_ns));
        let outcome = builder.push(d, &mut sink);
        let now = clock::now_ns();
        if self.span.first_arrival_ns == 0 {
            self.span.first_arrival_ns = d.arrival_ns;
            self.span.first_built_ns = now;
        }
        self.span.last_arrival_ns = d.arrival_ns;
        self.span.last_built_ns = now;
        match outcome {
            Outcome::Accepted { dropped_readouts } => {
                self.latency.to_slot.record(since(d.arrival_ns, now));
                if dropped_readouts == 0 {
                    return;
                }
                if let Some(held) = self.readout_log.allow(now) {
                    let s = self.builder.stats();
                    warn!(
                        "{dropped_readouts} late or duplicate readouts in a datagram from {} \
                         (late {} duplicate {} in all; {held} such datagrams not logged)",
                        m.src,
                        s.late(),
                        s.duplicate()
                    );
                }
            }
            Outcome::Rejected(cause) => {
                if let Some(held) = self.reject_logs[cause.index()].allow(now) {
                    warn!(
                        "dropped a datagram of {} bytes from {}: {} ({} such in all, {held} not logged since the last message)",
                        m.len,
                        m.src,
                        cause.name(),
                        self.builder.stats().rejected[cause.index()]
                    );
                }
            }
            // Logged from `housekeeping`: once when a module goes off the
            // timeline, rate-limited for strays.
            Outcome::OutOfSync | Outcome::Held => {}
        }
    }

    /// Wall-clock work: moves the builder's clock to `built_until` (a time
    /// before which every datagram the kernel stamped has been built) and
    /// flushes what timed out; notes subscriptions, modules and the
    /// timeline; prints the status line when due. Tells the receive thread
    /// when to come back.
    fn housekeeping(&mut self, built_until: Option<u64>, shared: &Shared) {
        if let Some(t) = built_until {
            let (builder, mut sink) = self.sink(None);
            builder.advance(t, &mut sink);
        }
        let now = clock::now_ns();
        if now >= self.next_subscription_poll_ns {
            self.next_subscription_poll_ns = now + SUBSCRIPTION_POLL_NS;
            match self.publisher.poll_subscriptions() {
                Some(Subscription::Joined) => {
                    info!(
                        "subscriber joined (subscriptions: {})",
                        self.publisher.stats().subscriptions
                    )
                }
                Some(Subscription::Left) => {
                    info!(
                        "subscriber left (subscriptions: {})",
                        self.publisher.stats().subscriptions
                    )
                }
                None => {}
            }
        }
        self.log_modules();
        self.log_timeline(now);
        if let Some(c) = shared.board.take() {
            self.execute(c, now, shared);
        }
        if now >= self.next_health_ns {
            self.next_health_ns = now + ops::SNAPSHOT_EVERY_NS;
            let changes = self.health.update(now, &self.builder);
            self.log_health(changes, now);
            if shared.board.wanted {
                shared.board.publish(snapshot(self, shared, now));
            }
        }
        let mut next = self.next_subscription_poll_ns.min(self.next_health_ns);
        if self.status_interval_ns > 0 {
            let due = self.status.at_ns + self.status_interval_ns;
            if now >= due {
                status_line(self, shared, now);
            }
            next = next.min(self.status.at_ns + self.status_interval_ns);
        }
        if let Some(d) = self.builder.next_deadline() {
            // The receiver vouches for stamps STAMP_SETTLE_NS older than
            // its check: come back when the deadline is that far past.
            next = next.min(d.saturating_add(recv::STAMP_SETTLE_NS));
        }
        shared.next_wake.store(next, Ordering::Relaxed);
    }

    /// Logs changes of the expected set, and each source outside the
    /// camera's addresses taken as a module, once.
    fn log_modules(&mut self) {
        let odd = &self.builder.stats().odd_sources;
        for (addr, m) in &odd[self.odd_logged.min(odd.len())..] {
            warn!(
                "datagrams from {addr} are taken as module {m} (last octet % 100, PROTOCOL.md §2; \
                 the camera's modules send from .100-.131; --allow limits which sources are modules)"
            );
        }
        self.odd_logged = odd.len();
        let expected = self.builder.expected();
        if expected == self.expected_logged {
            return;
        }
        // A module that leaves the learned set is silent, or off the
        // timeline: each is logged once by `log_health` / `log_timeline`.
        let joined = expected & !self.expected_logged;
        if joined != 0 {
            info!(
                modules = %builder::format_module_set(joined),
                "modules heard from: {} (now waiting for {})",
                builder::format_module_set(joined),
                describe(expected)
            );
        }
        self.expected_logged = expected;
    }

    /// Logs the timeline: each module that goes off it or comes back, once;
    /// each camera clock step; strays, at most once per interval.
    fn log_timeline(&mut self, now: u64) {
        let tl = self.builder.timeline();
        let off = tl.off();
        let (went, back) = (off & !self.off_logged, self.off_logged & !off);
        for m in (0..packet::N_MODULES).filter(|m| went & (1 << m) != 0) {
            let dt = tl.off_offset(m);
            warn!(
                "module {m}: its timestamps are {}{} from the camera's (clock fault or restart?): \
                 its datagrams are counted out of sync and it is not waited for until back in line",
                if dt < 0 { "-" } else { "+" },
                human_ns(dt.unsigned_abs())
            );
        }
        for m in (0..packet::N_MODULES).filter(|m| back & (1 << m) != 0) {
            info!("module {m}: back on the camera's timeline");
        }
        self.off_logged = off;
        let s = self.builder.stats();
        if s.clock_steps > self.steps_logged {
            warn!(
                "the camera's clock stepped (most modules moved to a new timeline together): \
                 following it; pending events went out ({} steps in all)",
                s.clock_steps
            );
            self.steps_logged = s.clock_steps;
        }
        let strays = s.out_of_sync;
        if strays > self.out_of_sync_logged
            && let Some(held) = self.out_of_sync_log.allow(now)
        {
            let per_module: Vec<String> = (0..packet::N_MODULES)
                .filter(|&m| s.modules[m].out_of_sync > 0)
                .map(|m| format!("{m}:{}", s.modules[m].out_of_sync))
                .collect();
            warn!(
                "{} datagrams off the camera's timeline, not built (in all, by module: {}; \
                 {held} such notes held back)",
                strays,
                per_module.join(" ")
            );
            self.out_of_sync_logged = strays;
        }
    }

    /// Logs each module's health transitions once: silent past
    /// `--module-timeout`, heard again, persistently offset, back in line.
    /// The whole camera falling silent at once (it stopped, or the run
    /// ended) is one line, not a warning per module.
    fn log_health(&mut self, c: Changes, now: u64) {
        let h = self.health.modules();
        let age = |m: usize| human_ns(now.saturating_sub(h[m].last_heard_ns));
        let watched = (0..packet::N_MODULES)
            .filter(|&m| h[m].watched)
            .fold(0u32, |a, m| a | 1 << m);
        let timeout = human_ns(self.health.timeout_ns());
        // Silences are said half a second late, so that a camera stopping
        // over tens of milliseconds is one line, not one per module.
        let silent_now = self.health.silent();
        if c.went_silent != 0 && self.silence_pending == 0 {
            self.silence_since = now;
        }
        // A silence heard again before it was said is said neither way.
        let unsaid = self.silence_pending | c.went_silent;
        let back = c.heard_again & !unsaid;
        self.silence_pending = unsaid & silent_now;
        if self.silence_pending != 0 && silent_now == watched && watched.count_ones() > 1 {
            info!(
                modules = %builder::format_module_set(watched),
                "camera silent: no datagram from any of its {} modules for {timeout} (stopped?)",
                watched.count_ones(),
            );
            self.silence_pending = 0;
        } else if self.silence_pending != 0 && now >= self.silence_since + SILENCE_GROUPING_NS {
            for m in (0..packet::N_MODULES).filter(|m| self.silence_pending & (1 << m) != 0) {
                if h[m].last_heard_ns <= self.started_ns {
                    warn!(
                        module = m,
                        "module {m}: not heard since the start (--modules names it)"
                    );
                } else {
                    warn!(
                        module = m,
                        "module {m}: silent for {} (past --module-timeout {timeout}; no longer waited for)",
                        age(m),
                    );
                }
            }
            self.silence_pending = 0;
        }
        if back.count_ones() > 3 {
            info!(modules = %builder::format_module_set(back), "modules {} heard again", builder::format_module_set(back));
        } else {
            for m in (0..packet::N_MODULES).filter(|m| back & (1 << m) != 0) {
                info!(module = m, "module {m}: heard again");
            }
        }
        for m in (0..packet::N_MODULES).filter(|m| c.went_offset & (1 << m) != 0) {
            let o = h[m].offset_ns.unwrap_or(0);
            warn!(
                module = m,
                offset_ns = o,
                "module {m}: its clock is {}{} from the camera's median for 3 s (tolerance {})",
                if o < 0 { "-" } else { "+" },
                human_ns(o.unsigned_abs()),
                human_ns(self.health.tolerance_ns(m))
            );
        }
        for m in (0..packet::N_MODULES).filter(|m| c.back_in_line & (1 << m) != 0) {
            info!(
                module = m,
                "module {m}: its clock agrees with the camera's again"
            );
        }
    }

    /// Carries out a run-control command (from the control thread).
    fn execute(&mut self, c: Command, now: u64, shared: &Shared) {
        let previous = self.run;
        // Every event of the run before goes out, and its dump is closed.
        if previous.running() {
            let (builder, mut sink) = self.sink(None);
            builder.flush(&mut sink);
        }
        let previous_events = self.builder.run_events();
        let closed = self.dump.take().map(Box::new);
        let done = match c {
            Command::StartRun { cfg, dump, done } => {
                let run = cfg.run_number;
                self.health.set_timeout(cfg.module_timeout_ns);
                self.builder.start_run(*cfg);
                self.dump = dump.map(|d| *d);
                self.run = RunState::Running { run, since_ns: now };
                self.expected_logged = self.builder.expected();
                self.off_logged = 0;
                info!(run, "run {run} started (event numbers from 1)");
                done
            }
            Command::StopRun { done } => {
                self.run = RunState::Stopped {
                    last_run: previous.number(),
                    since_ns: now,
                };
                done
            }
        };
        if previous.running() {
            info!(
                run = previous.number(),
                "run {} ended: {previous_events} events",
                previous.number()
            );
        }
        // Published before the reply, so a status right after it shows it.
        if shared.board.wanted {
            shared.board.publish(snapshot(self, shared, now));
        }
        let _ = done.try_send(Done {
            previous,
            previous_events,
            closed,
        });
    }

    /// The end of the run: every pending event out, the dump closed.
    fn flush(&mut self) {
        let (builder, mut sink) = self.sink(None);
        builder.flush(&mut sink);
        if let Some(w) = self.dump.take() {
            w.finish();
        }
    }
}

/// The modules waited for, and those expected but off the timeline.
fn describe_waited(waited: u32, expected: u32) -> String {
    let off = expected & !waited;
    if off == 0 {
        describe(waited)
    } else {
        format!(
            "{} (off the timeline: {})",
            describe(waited),
            builder::format_module_set(off)
        )
    }
}

fn describe(mask: u32) -> String {
    format!(
        "{} module(s): {}",
        mask.count_ones(),
        builder::format_module_set(mask)
    )
}

/// Counters as of the last status line, to print rates.
#[derive(Default)]
struct StatusState {
    at_ns: u64,
    datagrams: u64,
    events: u64,
    complete: u64,
}

/// A running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    recv: JoinHandle<()>,
    build: JoinHandle<()>,
    endpoint: String,
    listen: SocketAddrV4,
    /// The metrics server and the control endpoint, if asked for.
    ops: Vec<JoinHandle<()>>,
    metrics_addr: Option<std::net::SocketAddr>,
    control_endpoint: Option<String>,
}

impl DaemonConfig {
    /// Checks what the library cannot take (the binary checks its flags
    /// first and names them).
    fn check(&self) -> Result<(), String> {
        self.builder.validate().map_err(|e| e.to_string())?;
        if !self.buffers.is_power_of_two() || !(BATCH..=recv::MAX_BUFFERS).contains(&self.buffers) {
            return Err(format!(
                "buffers must be a power of two from {BATCH} to {}, not {}",
                recv::MAX_BUFFERS,
                self.buffers
            ));
        }
        if !(1..=crate::publish::MAX_HWM).contains(&self.hwm) {
            return Err(format!(
                "hwm must be 1..={}, not {}",
                crate::publish::MAX_HWM,
                self.hwm
            ));
        }
        Ok(())
    }
}

impl Assembly {
    fn new(
        cfg: &DaemonConfig,
        publisher: Publisher,
        dump: Option<DumpWriter>,
        now: u64,
    ) -> Assembly {
        Assembly {
            builder: Builder::new(cfg.builder.clone()),
            publisher,
            dump,
            latency: StageLatency::default(),
            reject_logs: [RateLimit::new(LOG_EVERY_NS); Reject::ALL.len()],
            out_of_sync_log: RateLimit::new(LOG_EVERY_NS),
            readout_log: RateLimit::new(LOG_EVERY_NS),
            expected_logged: cfg.builder.modules.unwrap_or(0),
            off_logged: 0,
            steps_logged: 0,
            odd_logged: 0,
            out_of_sync_logged: 0,
            status: StatusState {
                at_ns: now,
                ..Default::default()
            },
            status_interval_ns: cfg.status_interval.as_nanos() as u64,
            next_subscription_poll_ns: now,
            span: Span::default(),
            run: if cfg.start_stopped {
                RunState::Stopped {
                    last_run: cfg.builder.run_number,
                    since_ns: now,
                }
            } else {
                RunState::Running {
                    run: cfg.builder.run_number,
                    since_ns: now,
                }
            },
            between_runs: 0,
            health: Health::new(
                cfg.builder.modules.unwrap_or(0),
                cfg.builder.module_timeout_ns,
                now,
            ),
            next_health_ns: now,
            silence_pending: 0,
            silence_since: 0,
            started_ns: now,
        }
    }
}

impl Daemon {
    /// Binds the socket and the publisher, then starts both stages. Errors
    /// are about the environment (port in use, bad endpoint) and say so.
    pub fn start(cfg: DaemonConfig, stop: Arc<AtomicBool>) -> Result<Daemon, StartError> {
        cfg.check().map_err(StartError::Config)?;
        let (socket, rcvbuf) =
            recv::bind_udp(cfg.listen, cfg.rcvbuf).map_err(|source| StartError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let publisher =
            Publisher::bind(&cfg.endpoint, cfg.format, cfg.hwm).map_err(StartError::Publish)?;
        let endpoint = publisher.endpoint().to_string();
        let pool = PacketPool::new(cfg.buffers);
        let receiver = Receiver::new(socket, pool.clone(), cfg.io).map_err(StartError::Io)?;
        // Last of what can refuse the start: a dump file created before a
        // refusal would be left behind, and refuse the next start with the
        // same --dump as an overwrite.
        let dump_stats = Arc::new(DumpStats::default());
        let dump = match &cfg.dump {
            // Started without a run: the first file is the first run's.
            Some(_) if cfg.start_stopped => None,
            Some(d) => {
                // The helper's page-cache work goes to the build core.
                let d = DumpConfig {
                    helper_core: d.helper_core.or(cfg.cores.map(|c| c.1)),
                    ..d.clone()
                };
                Some(DumpWriter::create(&d, dump_stats.clone()).map_err(StartError::Dump)?)
            }
            None => None,
        };
        let backend = receiver.backend();
        // The port really bound (`-l 0` picks a free one).
        let listen = match receiver.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => a,
            _ => cfg.listen,
        };
        let now = clock::now_ns();
        let dumping = cfg.dump.is_some();
        let board = Arc::new(Board::new(cfg.metrics.is_some() || cfg.control.is_some()));
        // Bound before the stages start, so a refusal leaves nothing running.
        let http = match cfg.metrics {
            Some(addr) => Some(ops::http::MetricsServer::bind(addr).map_err(StartError::Ops)?),
            None => None,
        };
        let control = match &cfg.control {
            Some(ep) => Some(
                ssdaq_listener::control::Server::bind(ep)
                    .map_err(|e| StartError::Ops(format!("--control: {e}")))?,
            ),
            None => None,
        };
        let assembly = Assembly::new(&cfg, publisher, dump, now);
        let shared = Arc::new(Shared {
            assembly: Mutex::new(assembly),
            built_before: AtomicU64::new(now),
            stop,
            hurry: Arc::new(AtomicBool::new(false)),
            recv_done: AtomicBool::new(false),
            build_done: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            inject_panic: cfg.inject_panic,
            next_wake: AtomicU64::new(now),
            recv: RecvCounters::default(),
            batches: BatchSizes::new(BATCH),
            dumping,
            dump: dump_stats.clone(),
            board: board.clone(),
            started_ns: now,
            backend,
            rcvbuf,
        });
        // A first snapshot before anything runs: a scrape never finds none.
        if board.wanted {
            let a = shared.lock();
            board.publish(snapshot(&a, &shared, now));
        }
        let (to_build, from_recv) = rtrb::RingBuffer::<RecvMeta>::new(cfg.buffers);
        let (to_recv, from_build) = rtrb::RingBuffer::<BufId>::new(cfg.buffers);
        let (core_recv, core_build) = cfg.cores.unzip();
        let busy_poll = cfg.busy_poll;
        if busy_poll {
            info!(
                "busy-polling: the receive stage{} uses a whole core, never sleeping",
                core_recv
                    .map(|c| format!(" (core {c})"))
                    .unwrap_or_default()
            );
        }
        let s = shared.clone();
        let build = thread::Builder::new()
            .name("ssdaq-build".into())
            .spawn(move || build_stage(&s, from_recv, to_recv, pool, core_build))
            .map_err(StartError::Io)?;
        let s = shared.clone();
        let build_thread = build.thread().clone();
        let recv = thread::Builder::new()
            .name("ssdaq-recv".into())
            .spawn(move || {
                let stage = RecvStage {
                    rx: receiver,
                    busy_poll,
                    to_build,
                    returned: from_build,
                    build_thread,
                    core: core_recv,
                };
                stage.run(&s)
            })
            .map_err(StartError::Io)?;
        info!(
            "listening on UDP {listen} ({backend}, {}), publishing {:?} on {endpoint}",
            recv::describe_rcvbuf(cfg.rcvbuf, rcvbuf),
            cfg.format
        );
        // The ops threads stay off the stages' cores (when pinned and there
        // are others): a storm of scrapes competes with nothing that receives.
        let avoid = cfg.cores.map(|(a, b)| [a, b]);
        let mut ops_threads = Vec::new();
        let metrics_addr = http.as_ref().map(|h| h.addr());
        if let Some(h) = http {
            let (board, stop) = (board.clone(), shared.stop.clone());
            // Not joined at the end: a client holding a request must not
            // hold up the daemon's stop.
            thread::Builder::new()
                .name("ssdaq-metrics".into())
                .spawn(move || {
                    crate::cores::avoid_current(avoid);
                    h.serve(board, &stop)
                })
                .map_err(StartError::Io)?;
            let a = metrics_addr.expect("bound");
            info!("metrics: http://{a}/metrics (Prometheus), /status (JSON)");
            if !a.ip().is_loopback() {
                warn!("metrics: {a} answers any host that reaches it (read-only)");
            }
        }
        let control_endpoint = control.as_ref().map(|c| c.endpoint().to_string());
        if let Some(server) = control {
            let ctl = ops::control::Control::new(&cfg, board.clone(), dump_stats);
            let stop = shared.stop.clone();
            let ep = server.endpoint().to_string();
            if !ssdaq_listener::control::is_loopback(&ep) {
                warn!("control: {ep} takes commands from any host that reaches it");
            }
            ops_threads.push(
                thread::Builder::new()
                    .name("ssdaq-control".into())
                    .spawn(move || {
                        crate::cores::avoid_current(avoid);
                        ctl.serve(&server, &stop)
                    })
                    .map_err(StartError::Io)?,
            );
            info!("control: {ep} (ssdaq-ctl --control {ep} status)");
        }
        Ok(Daemon {
            shared,
            recv,
            build,
            endpoint,
            listen,
            ops: ops_threads,
            metrics_addr,
            control_endpoint,
        })
    }

    /// The endpoint subscribers connect to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn listen_addr(&self) -> SocketAddrV4 {
        self.listen
    }

    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// Where `/metrics` is served (`--metrics`; a `:0` port resolved).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The run-control endpoint (`--control`; a `:0` port resolved).
    pub fn control_endpoint(&self) -> Option<&str> {
        self.control_endpoint.as_deref()
    }

    /// Waits for the stop flag, then for both stages: the build stage
    /// flushes every pending event before it ends. Returns the run's summary.
    /// A flag that, set with the stop flag, stops the daemon without taking
    /// what still waits in the socket: pending events are flushed and the
    /// dump is closed all the same. For an operator's second stop signal.
    pub fn hurry(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.hurry)
    }

    pub fn wait(self) -> Summary {
        let _ = self.recv.join();
        let _ = self.build.join();
        for t in self.ops {
            let _ = t.join();
        }
        let assembly = self.shared.lock();
        summary(&assembly, &self.shared, clock::now_ns())
    }
}

/// Everything counted so far, as the summary prints it.
fn summary(assembly: &Assembly, shared: &Shared, now: u64) -> Summary {
    let r = &shared.recv;
    Summary {
        stage_failed: shared.failed.load(Ordering::Relaxed),
        elapsed_ns: since(shared.started_ns, now),
        backend: shared.backend,
        rcvbuf: shared.rcvbuf,
        received: r.datagrams.load(Ordering::Relaxed),
        received_bytes: r.bytes.load(Ordering::Relaxed),
        inline_batches: r.inline_batches.load(Ordering::Relaxed),
        queued_batches: r.queued_batches.load(Ordering::Relaxed),
        build_bound: r.build_bound.load(Ordering::Relaxed),
        recv_errors: r.errors.load(Ordering::Relaxed),
        kernel_drops: r.kernel_drops.load(Ordering::Relaxed),
        receiver: recv::RecvStats {
            unusable: r.unusable.load(Ordering::Relaxed),
            starved: r.starved.load(Ordering::Relaxed),
            rearms: r.rearms.load(Ordering::Relaxed),
            unstamped: r.unstamped.load(Ordering::Relaxed),
        },
        batches: shared.batches.summary(),
        builder: assembly.builder.stats().clone(),
        publish: assembly.publisher.stats(),
        latency: assembly.latency.all().map(|l| (l.name, l.total())).to_vec(),
        dump: shared.dumping.then(|| shared.dump.snapshot()),
        span: assembly.span,
        cpu_ns: process_cpu_ns(),
        run: assembly.run,
        between_runs: assembly.between_runs,
    }
}

/// What the ops threads read: the summary's figures and more.
fn snapshot(a: &Assembly, shared: &Shared, now: u64) -> Snapshot {
    Snapshot {
        taken_ns: now,
        started_ns: shared.started_ns,
        summary: summary(a, shared, now),
        latency: a
            .latency
            .all()
            .map(|l| (latency_key(l.name), l.buckets()))
            .to_vec(),
        health: *a.health.modules(),
        run: a.run,
        run_events: a.builder.run_events(),
        pending: a.builder.pending(),
        slots: a.builder.config().slots,
        expected: a.builder.expected(),
        waited: a.builder.waited(),
        dump_path: a.dump.as_ref().and_then(|d| d.path()).map(Into::into),
        between_runs: a.between_runs,
        builder: a.builder.config().clone(),
    }
}

/// A latency stage's name as a key: `arrival→zmq` is `arrival_to_zmq`.
pub fn latency_key(name: &str) -> &'static str {
    match name {
        "arrival→read" => "arrival_to_read",
        "arrival→slot" => "arrival_to_slot",
        "arrival→built" => "arrival_to_built",
        "arrival→zmq" => "arrival_to_zmq",
        "partial arrival→zmq" => "partial_arrival_to_zmq",
        "read→zmq" => "read_to_zmq",
        _ => "other",
    }
}

/// Ends a stage's part however the stage ends, a panic included, so that
/// the other stage and the daemon stop rather than wait for it forever: the
/// receive stage's end lets the build stage flush and return, the build
/// stage's end lets a receive stage that waits for buffers give up.
struct StageEnd<'a> {
    shared: &'a Shared,
    stage: Stage,
    /// The build thread, which the receive stage's end wakes for the flush.
    build_thread: Option<thread::Thread>,
}

impl Drop for StageEnd<'_> {
    fn drop(&mut self) {
        let shared = self.shared;
        if thread::panicking() {
            shared.failed.store(true, Ordering::Relaxed);
            shared.stop.store(true, Ordering::Relaxed);
            error!(
                "the {} stage failed (the panic is above); stopping",
                self.stage.name()
            );
        }
        match self.stage {
            Stage::Receive => {
                shared
                    .built_before
                    .store(clock::now_ns(), Ordering::Release);
                shared.recv_done.store(true, Ordering::Release);
                if let Some(t) = &self.build_thread {
                    t.unpark();
                }
            }
            Stage::Build => shared.build_done.store(true, Ordering::Release),
        }
    }
}

/// The receive stage: socket → inline build or queue. It owns these.
struct RecvStage {
    rx: Receiver,
    /// Poll instead of sleeping in the kernel.
    busy_poll: bool,
    to_build: rtrb::Producer<RecvMeta>,
    returned: rtrb::Consumer<BufId>,
    build_thread: thread::Thread,
    core: Option<usize>,
}

impl RecvStage {
    /// The receive stage's loop, until the stop flag: take emptied buffers
    /// back, receive a batch, then build it here or queue it to the build
    /// stage.
    fn run(self, shared: &Shared) {
        let RecvStage {
            rx,
            busy_poll,
            to_build,
            returned,
            build_thread,
            core,
        } = self;
        crate::cores::pin_current(core, "the receive stage");
        let _end = StageEnd {
            shared,
            stage: Stage::Receive,
            build_thread: Some(build_thread.clone()),
        };
        let mut l = RecvLoop {
            pool: rx.pool().clone(),
            capacity: to_build.buffer().capacity(),
            rx,
            busy_poll,
            to_build,
            returned,
            build_thread,
            batch: Vec::with_capacity(BATCH),
            error_log: RateLimit::new(LOG_EVERY_NS),
            next_drop_check: 0,
            load: LoadMeter::default(),
            lent: 0,
            draining: None,
        };
        loop {
            if l.stopped(shared) {
                break;
            }
            l.take_back();
            if l.lent == l.capacity {
                if l.wait_for_buffers(shared) {
                    continue;
                }
                break; // The build stage failed: nothing can be built.
            }
            let now = clock::now_ns();
            let Some(n) = l.receive(shared, now) else {
                continue;
            };
            let now = clock::now_ns();
            // Build here when the build stage is idle and the load is light.
            // (A busy-polling thread does its wall-clock work only when due.)
            let idle = l.to_build.slots() == l.capacity;
            let light = n < BATCH && !l.load.heavy();
            let due = !busy_poll || n > 0 || now >= shared.next_wake.load(Ordering::Relaxed);
            let inline = if idle && light && due {
                shared.try_lock()
            } else {
                None
            };
            if let Some(assembly) = inline {
                l.build_inline(assembly, shared, n);
            } else if n > 0 {
                l.queue(shared, n, light);
            }
        }
        shared.recv.update(&l.rx);
        // `_end` now tells the build stage that all is queued.
    }
}

/// The receive stage's state between batches.
struct RecvLoop {
    rx: Receiver,
    pool: Arc<PacketPool>,
    busy_poll: bool,
    to_build: rtrb::Producer<RecvMeta>,
    returned: rtrb::Consumer<BufId>,
    build_thread: thread::Thread,
    /// The queue's size: as many entries as there are buffers.
    capacity: usize,
    batch: Vec<RecvMeta>,
    error_log: RateLimit,
    next_drop_check: u64,
    load: LoadMeter,
    /// Buffers handed to the build stage and not yet back.
    lent: usize,
    /// On the stop signal, what the kernel has already accepted is still
    /// taken and built: receiving goes on, without waiting, until the
    /// socket is empty (two polls in a row find nothing), for at most
    /// DRAIN_ON_STOP_NS should the camera keep sending (until, empty polls).
    draining: Option<(u64, u32)>,
}

impl RecvLoop {
    /// Whether to end the loop: the stop flag seen and the socket drained
    /// (or the drain's time up, or a hurried stop).
    #[inline]
    fn stopped(&mut self, shared: &Shared) -> bool {
        if self.draining.is_none() && shared.stop.load(Ordering::Relaxed) {
            self.draining = Some((clock::mono_ns() + DRAIN_ON_STOP_NS, 0));
        }
        self.draining.is_some_and(|(until, empty_polls)| {
            empty_polls >= 2 || clock::mono_ns() >= until || shared.hurry.load(Ordering::Relaxed)
        })
    }

    /// Emptied buffers, taken back in one go (one read of the queue's
    /// shared index per batch, not per buffer).
    #[inline]
    fn take_back(&mut self) {
        if let Ok(back) = self.returned.read_chunk(self.returned.slots()) {
            self.lent -= back.len();
            for b in back {
                self.rx.release(b);
            }
        }
    }

    /// The build stage holds every buffer: nothing can be received until it
    /// hands some back, within microseconds (it returns them batch by
    /// batch). Waits for that awake, rather than asleep in the receiver for
    /// a whole timeout. False if the build stage has ended (failed).
    fn wait_for_buffers(&mut self, shared: &Shared) -> bool {
        // (The build stage runs until this stage is done, stop or not.)
        let give_up = self.draining.map_or(u64::MAX, |(until, _)| until);
        while self.returned.is_empty()
            && clock::mono_ns() < give_up
            && !shared.build_done.load(Ordering::Acquire)
        {
            thread::yield_now();
        }
        if self.returned.is_empty() && shared.build_done.load(Ordering::Acquire) {
            return false;
        }
        shared.recv.build_bound.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Receives one batch into `self.batch`, waiting no longer than the
    /// builder's next deadline; counts it. None after a receive error
    /// (counted, logged rate-limited).
    #[inline]
    fn receive(&mut self, shared: &Shared, now: u64) -> Option<usize> {
        let queued = self.to_build.slots() < self.capacity;
        let wait = if self.busy_poll || self.draining.is_some() {
            Duration::ZERO
        } else if queued {
            BUSY_WAIT
        } else {
            let until = shared
                .next_wake
                .load(Ordering::Relaxed)
                .min(now + IDLE_WAIT_NS);
            Duration::from_nanos(until.saturating_sub(now))
        };
        let n = match self.rx.recv(&mut self.batch, wait) {
            Ok(n) => n,
            Err(e) => {
                shared.recv.errors.fetch_add(1, Ordering::Relaxed);
                if let Some(held) = self.error_log.allow(clock::now_ns()) {
                    warn!("receive error: {e} ({held} more not logged)");
                }
                thread::sleep(Duration::from_millis(1));
                return None;
            }
        };
        let mono = clock::mono_ns();
        if mono >= self.next_drop_check {
            shared.recv.update(&self.rx);
            self.next_drop_check = mono + 1_000_000_000;
        }
        if let Some((_, empty_polls)) = &mut self.draining {
            *empty_polls = if n == 0 { *empty_polls + 1 } else { 0 };
        }
        self.load.add(n, mono);
        if n > 0 && shared.inject_panic == Some(Stage::Receive) {
            panic!("fault injected into the receive stage (--inject-panic)");
        }
        if n > 0 {
            shared.batches.record(n);
            shared.recv.datagrams.fetch_add(n as u64, Ordering::Relaxed);
            let bytes: u64 = self.batch.iter().map(|m| m.len as u64).sum();
            shared.recv.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Some(n)
    }

    /// Builds the batch on this thread (the build stage is idle).
    #[inline]
    fn build_inline(&mut self, mut assembly: Locked<'_>, shared: &Shared, n: usize) {
        for m in self.batch.drain(..) {
            assembly.process(&self.pool, &m);
            self.rx.release(m.buf);
        }
        if n > 0 {
            shared.recv.inline_batches.fetch_add(1, Ordering::Relaxed);
        }
        // Nothing is queued: once the socket is shown empty, every
        // datagram stamped before the check has been built.
        let caught_up = self.rx.caught_up();
        if let Some(t) = caught_up {
            shared.built_before.store(t, Ordering::Release);
        }
        assembly.housekeeping(caught_up, shared);
    }

    /// Hands the batch to the build stage.
    #[inline]
    fn queue(&mut self, shared: &Shared, n: usize, light: bool) {
        // The whole batch is made visible with one store of the queue's
        // shared index, so the cache line holding it moves to the build
        // core once per batch instead of per datagram. Cannot fail: the
        // queue holds as many entries as there are buffers.
        if let Ok(chunk) = self.to_build.write_chunk_uninit(n) {
            chunk.fill_from_iter(self.batch.drain(..));
        }
        self.lent += n;
        shared.recv.queued_batches.fetch_add(1, Ordering::Relaxed);
        // Under heavy load the socket is never empty and the arrival
        // stamps move the builder's clock: no check then.
        if light && let Some(t) = self.rx.caught_up() {
            shared.built_before.store(t, Ordering::Release);
        }
        self.build_thread.unpark();
    }
}

/// The build stage: queue → builder → publisher.
fn build_stage(
    shared: &Shared,
    mut from_recv: rtrb::Consumer<RecvMeta>,
    mut to_recv: rtrb::Producer<BufId>,
    pool: Arc<PacketPool>,
    core: Option<usize>,
) {
    crate::cores::pin_current(core, "the build stage");
    let _end = StageEnd {
        shared,
        stage: Stage::Build,
        build_thread: None,
    };
    // Buffers built, handed back to the receive stage after each batch.
    let mut built: Vec<BufId> = Vec::with_capacity(BATCH);
    loop {
        // Read before draining: everything stamped before it is in the queue.
        let built_before = shared.built_before.load(Ordering::Acquire);
        let done = shared.recv_done.load(Ordering::Acquire);
        let queued = from_recv.slots();
        if queued > 0 || done {
            if queued > 0 && shared.inject_panic == Some(Stage::Build) {
                panic!("fault injected into the build stage (--inject-panic)");
            }
            let mut assembly = shared.lock();
            // Everything queued when the watermark was read, a batch at a time,
            // so that emptied buffers go back to the receive stage while the
            // rest is built. (Only then may the clock move to the watermark.)
            let mut left = queued;
            while left > 0 {
                let k = left.min(BATCH);
                left -= k;
                if let Ok(chunk) = from_recv.read_chunk(k) {
                    // Each datagram is built while the next one, written by the
                    // kernel on the other core, is fetched into this core's cache.
                    let mut current: Option<RecvMeta> = None;
                    for next in chunk {
                        prefetch(pool.payload(&next.buf, next.len as usize));
                        if let Some(m) = current.replace(next) {
                            assembly.process(&pool, &m);
                            built.push(m.buf);
                        }
                    }
                    if let Some(m) = current {
                        assembly.process(&pool, &m);
                        built.push(m.buf);
                    }
                }
                // Cannot fail: the queue holds as many entries as there are buffers.
                if let Ok(chunk) = to_recv.write_chunk_uninit(built.len()) {
                    chunk.fill_from_iter(built.drain(..));
                }
            }
            assembly.housekeeping(Some(built_before), shared);
            if done {
                assembly.flush();
                return;
            }
            // The receive stage may take the assembly next.
            drop(assembly);
            // Under load the next batch is due within tens of µs: wait for it
            // awake, so the receive stage's hand-over needs no wake-up call
            // (a futex wake and, on these VMs, ~20 µs for a halted core).
            // Yielding, so a thread that shares this core (the dump's helper,
            // libzmq's I/O thread) runs at once when it has work.
            let spin_until = clock::mono_ns() + SPIN_BEFORE_PARK_NS;
            while from_recv.is_empty()
                && !shared.recv_done.load(Ordering::Relaxed)
                && clock::mono_ns() < spin_until
            {
                thread::yield_now();
            }
            continue;
        }
        // Woken by the receive stage when it queues work or stops.
        thread::park_timeout(Duration::from_secs(1));
    }
}

/// Asks the CPU to bring `bytes` into cache (a hint only). The whole
/// datagram: validation reads a timestamp from each of its ten readouts,
/// spread over ~23 cache lines.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never
        // dereferences its address (it is a hint that cannot fault); the
        // address is inside a live slice anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// The periodic one-line status.
fn status_line(assembly: &mut Assembly, shared: &Shared, now: u64) {
    if assembly.status.datagrams == 0 && shared.recv.datagrams.load(Ordering::Relaxed) == 0 {
        // Nothing yet: say so once per interval without a wall of zeros.
        assembly.status.at_ns = now;
        info!("status: no datagram received yet");
        return;
    }
    let dt = since(assembly.status.at_ns, now).max(1) as f64 / 1e9;
    let s = assembly.builder.stats();
    let datagrams = shared.recv.datagrams.load(Ordering::Relaxed);
    let (events, complete) = (s.events(), s.complete);
    let rate = |now: u64, then: u64| (now - then) as f64 / dt;
    let p = assembly.publisher.stats();
    let line = format!(
        "{:.0} datagrams/s → {:.1} events/s (complete {:.1}, partial {:.1}) | {} | dropped: refused {} off-timeline {} late {} dup {} kernel {} subscriber-missed ≥{} | pending {}",
        rate(datagrams, assembly.status.datagrams),
        rate(events, assembly.status.events),
        rate(complete, assembly.status.complete),
        rate(
            events - complete,
            assembly.status.events - assembly.status.complete
        ),
        describe_waited(assembly.builder.waited(), assembly.builder.expected()),
        s.rejected.iter().sum::<u64>(),
        s.out_of_sync,
        s.late(),
        s.duplicate(),
        shared.recv.kernel_drops.load(Ordering::Relaxed),
        p.overflows,
        assembly.builder.pending(),
    );
    assembly.status = StatusState {
        at_ns: now,
        datagrams,
        events,
        complete,
    };
    // Latency p50/p99 of each stage over this interval.
    let mut stages = String::new();
    for l in assembly.latency.all_mut() {
        let q = l.take_interval();
        if q.count > 0 {
            stages.push_str(&format!(
                " {} {}/{}",
                l.name,
                human_ns(q.p50),
                human_ns(q.p99)
            ));
        }
    }
    let b = shared.batches.summary();
    let dump = if shared.dumping {
        let d = shared.dump.snapshot();
        let state = if d.failed { " STOPPED" } else { "" };
        format!(
            " | dump {} MB{state}, lost {}",
            d.bytes >> 20,
            d.lost + d.not_recorded
        )
    } else {
        String::new()
    };
    let run = match assembly.run {
        RunState::Running { run, .. } => format!("run {run}"),
        RunState::Stopped { last_run, .. } => format!(
            "NO RUN (stopped after run {last_run}; {} datagrams counted, not recorded)",
            assembly.between_runs
        ),
    };
    info!(
        "status: {run} | {line}{dump} | batch mean {:.1} | latency p50/p99:{stages}",
        b.mean
    );
}

/// What a run did, printed when it ends.
#[derive(Clone, Debug)]
pub struct Summary {
    /// A stage ended by a panic and stopped the daemon: the figures are
    /// what was counted until then.
    pub stage_failed: bool,
    pub elapsed_ns: u64,
    pub backend: Backend,
    pub rcvbuf: usize,
    pub received: u64,
    pub received_bytes: u64,
    pub inline_batches: u64,
    pub queued_batches: u64,
    /// Times receiving waited for the build stage to hand buffers back.
    pub build_bound: u64,
    pub recv_errors: u64,
    pub kernel_drops: u64,
    /// What the receive backend counted (none of it a loss).
    pub receiver: recv::RecvStats,
    pub batches: BatchSummary,
    pub builder: BuilderStats,
    pub publish: PublishStats,
    pub latency: Vec<(&'static str, Quantiles)>,
    pub dump: Option<DumpSummary>,
    pub span: Span,
    /// CPU time of the whole process (all threads, user + system).
    pub cpu_ns: u64,
    /// The run at the end (or at the snapshot).
    pub run: RunState,
    /// Datagrams received while no run was recording (`stop-run`).
    pub between_runs: u64,
}

/// CPU time used by this process so far, ns.
fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru = unsafe { std::mem::zeroed::<libc::rusage>() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    t(ru.ru_utime) + t(ru.ru_stime)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed_ns as f64 / 1e9;
        writeln!(
            f,
            "ssdaqd summary after {secs:.1} s ({} receive){}",
            self.backend,
            if self.stage_failed {
                ", STOPPED BY A FAILED STAGE"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "received {} datagrams, {} bytes; kernel drops {}; receive errors {}",
            self.received, self.received_bytes, self.kernel_drops, self.recv_errors
        )?;
        writeln!(
            f,
            "receive batches: {}; built inline {}, queued to the build stage {} \
             (receiving waited for it to hand buffers back {} times)",
            self.batches, self.inline_batches, self.queued_batches, self.build_bound
        )?;
        let r = &self.receiver;
        writeln!(
            f,
            "receiver: out of buffers {} times (datagrams waited in the socket), \
             io_uring receive re-armed {}, unusable completions {}",
            r.starved, r.rearms, r.unusable
        )?;
        write!(f, "{}", self.builder)?;
        writeln!(f, "published: {}", self.publish)?;
        writeln!(f, "latency from datagram arrival:")?;
        for (name, q) in &self.latency {
            writeln!(f, "  {name:<22} {q}")?;
        }
        if let Some(d) = &self.dump {
            writeln!(f, "dump: {d}")?;
        }
        self.write_stats_line(f)
    }
}

impl Summary {
    /// The last line of the summary: every figure as `key=value`, for scripts
    /// and the benchmark.
    fn write_stats_line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stats:")?;
        for (k, v) in self.figures() {
            write!(f, " {k}={v}")?;
        }
        writeln!(f)
    }

    /// Every figure by name: the summary's `stats:` line, and the `stats`
    /// object of `/status`.
    pub fn figures(&self) -> Vec<(String, u64)> {
        let b = &self.builder;
        let mut kv: Vec<(String, u64)> = vec![
            ("received".into(), self.received),
            ("received_bytes".into(), self.received_bytes),
            ("stage_failed".into(), self.stage_failed as u64),
            ("accepted".into(), b.datagrams()),
            ("refused".into(), b.rejected.iter().sum::<u64>()),
            ("late".into(), b.late()),
            ("duplicate".into(), b.duplicate()),
            ("events".into(), b.events()),
            ("complete".into(), b.complete),
            ("all_modules".into(), b.all_modules),
            ("pushed".into(), b.pushed),
            ("readouts_in".into(), b.readouts_in()),
            ("readouts_complete".into(), b.readouts_complete),
            ("readouts_partial".into(), b.readouts_partial),
            ("balanced".into(), b.balance().is_ok() as u64),
            ("out_of_sync".into(), b.out_of_sync),
            ("out_of_sync_readouts".into(), b.out_of_sync_readouts()),
            ("clock_steps".into(), b.clock_steps),
            ("held".into(), b.held),
            ("partial".into(), b.partial()),
            ("kernel_drops".into(), self.kernel_drops),
            ("recv_errors".into(), self.recv_errors),
            ("published".into(), self.publish.sent),
            ("hwm_overflows".into(), self.publish.overflows),
            ("publish_errors".into(), self.publish.errors),
            ("inline_batches".into(), self.inline_batches),
            ("build_bound".into(), self.build_bound),
            ("recv_starved".into(), self.receiver.starved),
            ("recv_rearms".into(), self.receiver.rearms),
            ("recv_unusable".into(), self.receiver.unusable),
            ("queued_batches".into(), self.queued_batches),
            ("first_arrival_ns".into(), self.span.first_arrival_ns),
            ("first_built_ns".into(), self.span.first_built_ns),
            ("last_arrival_ns".into(), self.span.last_arrival_ns),
            ("last_built_ns".into(), self.span.last_built_ns),
            ("cpu_ns".into(), self.cpu_ns),
            ("elapsed_ns".into(), self.elapsed_ns),
            ("run_number".into(), self.run.number()),
            ("run_active".into(), self.run.running() as u64),
            ("between_runs".into(), self.between_runs),
        ];
        for (name, q) in &self.latency {
            let key = name.replace("partial ", "partial_").replace('→', "_to_");
            for (what, v) in [
                ("p50", q.p50),
                ("p99", q.p99),
                ("p999", q.p999),
                ("max", q.max),
                ("n", q.count),
            ] {
                kv.push((format!("{key}_{what}"), v));
            }
        }
        if let Some(d) = &self.dump {
            kv.extend([
                ("dump_records".into(), d.records),
                ("dump_bytes".into(), d.bytes),
                ("dump_lost".into(), d.lost + d.not_recorded),
                ("dump_failed".into(), d.failed as u64),
                ("dump_files".into(), d.files),
            ]);
        }
        kv
    }
}
