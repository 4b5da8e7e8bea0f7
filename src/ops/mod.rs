//! Operations: what a shift crew sees and steers while ssdaqd runs.
//!
//! ```text
//!  stage holding the assembly ──every 100 ms──▶ Board ◀── http (/metrics, /status)
//!        (pipeline.rs)          Snapshot          │   ◀── control (ssdaq-ctl)
//!            ▲                                    │
//!            └──── one Command at a time ◀────────┘
//! ```
//!
//! * [`Board`]: where the stages publish a [`Snapshot`] of every counter
//!   (an `Arc` swapped in without a lock: a scrape never waits for a stage,
//!   a stage never waits for a scrape), and where run control leaves one
//!   [`Command`] for the stages to carry out at their next housekeeping;
//! * [`health`]: per-module health, from the builder's counters;
//! * [`http`]: `--metrics`: Prometheus text on `/metrics`, JSON on `/status`;
//! * [`control`]: `--control`: the run-control commands `ssdaq-ctl` sends.
//!
//! Nothing here runs on the hot path: the stages build a snapshot at most
//! every 100 ms (and only when somebody can read it), and look at the
//! command slot with one relaxed load per housekeeping.

pub mod control;
pub mod health;
pub mod http;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;

use crate::builder::BuilderConfig;
use crate::dump::DumpWriter;
use crate::metrics::Buckets;
use crate::packet::N_MODULES;
use crate::pipeline::Summary;
use health::ModuleHealth;

/// How often the stages publish a snapshot.
pub const SNAPSHOT_EVERY_NS: u64 = 100_000_000;

/// Whether the daemon is recording a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Building, publishing and dumping; every event carries `run`.
    Running { run: u64, since_ns: u64 },
    /// Receiving and counting only (`stop-run`), since `since_ns`.
    Stopped { last_run: u64, since_ns: u64 },
}

impl RunState {
    /// The current run's number, or the last one's.
    pub fn number(&self) -> u64 {
        match *self {
            RunState::Running { run, .. } => run,
            RunState::Stopped { last_run, .. } => last_run,
        }
    }
    pub fn running(&self) -> bool {
        matches!(self, RunState::Running { .. })
    }
    pub fn since_ns(&self) -> u64 {
        match *self {
            RunState::Running { since_ns, .. } | RunState::Stopped { since_ns, .. } => since_ns,
        }
    }
    pub fn name(&self) -> &'static str {
        if self.running() { "running" } else { "stopped" }
    }
}

/// Everything the daemon counts, as of `taken_ns`.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken_ns: u64,
    pub started_ns: u64,
    /// The same figures as the end-of-run summary.
    pub summary: Summary,
    /// The latency histograms, by stage key (`arrival_to_zmq` …).
    pub latency: Vec<(&'static str, Buckets)>,
    pub health: [ModuleHealth; N_MODULES],
    pub run: RunState,
    /// Events emitted in this run (its last event number).
    pub run_events: u64,
    /// Events pending in the builder's ring, and its slots.
    pub pending: usize,
    pub slots: usize,
    /// Modules expected (learned or `--modules`) and waited for.
    pub expected: u32,
    pub waited: u32,
    /// The dump file being written, if any.
    pub dump_path: Option<std::path::PathBuf>,
    /// Datagrams received while no run was recording (counted, not kept).
    pub between_runs: u64,
    /// The builder settings in effect.
    pub builder: BuilderConfig,
}

/// What run control asks the stages to do.
pub enum Command {
    /// Flush the current run (if any), then start run `cfg.run_number` with
    /// these settings, dumping to `dump` (created by the control thread).
    StartRun {
        cfg: Box<BuilderConfig>,
        dump: Option<Box<DumpWriter>>,
        done: SyncSender<Done>,
    },
    /// Flush the current run and close its dump file.
    StopRun { done: SyncSender<Done> },
}

/// What the stages did with a [`Command`].
pub struct Done {
    /// The run before the command, and its events.
    pub previous: RunState,
    pub previous_events: u64,
    /// The dump file the command closed: its writer, for the control
    /// thread to finish (closing can wait on the disk; the stages never do).
    pub closed: Option<Box<DumpWriter>>,
}

/// Where the stages publish snapshots and pick up commands.
pub struct Board {
    snapshot: ArcSwapOption<Snapshot>,
    /// Somebody reads snapshots (`--metrics` or `--control`): build them.
    pub(crate) wanted: bool,
    mail: Mutex<Option<Command>>,
    has_mail: AtomicBool,
}

impl Board {
    pub fn new(wanted: bool) -> Board {
        Board {
            snapshot: ArcSwapOption::const_empty(),
            wanted,
            mail: Mutex::new(None),
            has_mail: AtomicBool::new(false),
        }
    }

    /// The latest snapshot (None before the first, ~100 ms after start).
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    pub(crate) fn publish(&self, s: Snapshot) {
        self.snapshot.store(Some(Arc::new(s)));
    }

    /// Leaves a command for the stages; false if one is still waiting.
    pub fn post(&self, c: Command) -> bool {
        let mut slot = self.mail.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some(c);
        self.has_mail.store(true, Ordering::Release);
        true
    }

    /// Takes back a command the stages have not picked up (they did not
    /// answer in time): true if it was still waiting.
    pub fn withdraw(&self) -> bool {
        let mut slot = self.mail.lock().unwrap_or_else(PoisonError::into_inner);
        self.has_mail.store(false, Ordering::Relaxed);
        slot.take().is_some()
    }

    /// The command waiting, if any (one relaxed load when there is none).
    pub(crate) fn take(&self) -> Option<Command> {
        if !self.has_mail.load(Ordering::Relaxed) {
            return None;
        }
        let mut slot = self.mail.try_lock().ok()?;
        self.has_mail.store(false, Ordering::Relaxed);
        slot.take()
    }
}
