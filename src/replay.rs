//! Offline reprocessing: raw dumps through the live daemon's builder.
//!
//! This module owns the replay loop: every recorded datagram, with its
//! recorded arrival time and source, goes through the same receive-side
//! checks and the same [`Builder`] as in `ssdaqd`, so replaying the dump of
//! a live run reproduces the events that run published, byte for byte (the
//! builder reads no clock: its time is the recorded arrival times). Corrupt
//! regions of a dump are reported with their file and offset and skipped.
//!
//! It never allocates per record and keeps no more of a dump in memory than
//! the reader's window: memory does not grow with the dump's size.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::builder::{Builder, BuilderConfig, Datagram, EventSink};
use crate::dump::{Dump, Entry, Record};
use crate::event::Format;
use crate::packet::{self, N_MODULES};

/// The builder settings and format recorded in a dump's header (what the
/// live run used), starting from the defaults for anything not recorded.
pub fn recorded_settings(dump: &Dump) -> Result<(BuilderConfig, Format), String> {
    let mut cfg = BuilderConfig::default();
    let mut format = Format::V1;
    for (k, v) in &dump.info().settings {
        if k == "format" {
            format = v
                .parse()
                .map_err(|e| format!("{}: header: {e}", dump.path().display()))?;
        } else {
            cfg.set_pair(k, v)
                .map_err(|e| format!("{}: header: {e}", dump.path().display()))?;
        }
    }
    Ok((cfg, format))
}

/// Checks that `dumps` (in recording order, as `dump::open_set` returns
/// them) are one recording: the files of one rotated set. Two runs' dumps
/// side by side in a directory are not one stream: built as one, the
/// second run would be built with the first one's settings, its events
/// numbered on from the first's. The error names each set by its first
/// file, so the user can replay them one at a time.
pub fn one_recording(dumps: &[Dump]) -> Result<(), String> {
    let mut sets: Vec<(u64, &Dump, usize)> = Vec::new();
    for d in dumps {
        match sets.iter_mut().find(|(id, _, _)| *id == d.info().set_id) {
            Some((_, _, n)) => *n += 1,
            None => sets.push((d.info().set_id, d, 1)),
        }
    }
    if sets.len() <= 1 {
        return Ok(());
    }
    let list: Vec<String> = sets
        .iter()
        .map(|(_, first, n)| {
            format!(
                "{} ({n} file{}, started {})",
                first.path().display(),
                if *n == 1 { "" } else { "s" },
                ssdaq_wire::utc::iso(first.info().created_ns)
            )
        })
        .collect();
    Err(format!(
        "these dumps are {} separate recordings: {}; replay one at a time by naming its \
         first file (it brings its rotated files along), or survey them all with --info",
        sets.len(),
        list.join("; ")
    ))
}

/// What a replay read.
#[derive(Clone, Debug, Default)]
pub struct ReplayStats {
    pub files: usize,
    pub records: u64,
    /// Bytes of the dump files read (headers and padding included).
    pub bytes: u64,
    pub corrupt_regions: u64,
    pub corrupt_bytes: u64,
    /// Files whose writer did not close them (killed): data ends early.
    pub unfinished: Vec<(PathBuf, u64)>,
    /// Datagrams per module number (by source address), and from no module.
    pub per_module: [u64; N_MODULES],
    pub unknown_source: u64,
}

impl ReplayStats {
    fn count_source(&mut self, r: &Record<'_>, relaxed: bool) {
        match packet::module_of(*r.src.ip(), relaxed) {
            Some(m) => self.per_module[m as usize] += 1,
            None => self.unknown_source += 1,
        }
    }
}

impl std::fmt::Display for ReplayStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "read {} file(s), {} bytes, {} datagrams; corrupt regions {} ({} bytes skipped)",
            self.files, self.bytes, self.records, self.corrupt_regions, self.corrupt_bytes
        )?;
        for (path, offset) in &self.unfinished {
            writeln!(
                f,
                "{}: data ends at offset {offset} (its writer was stopped abruptly)",
                path.display()
            )?;
        }
        write!(f, "datagrams per module:")?;
        for (m, n) in self.per_module.iter().enumerate().filter(|(_, n)| **n > 0) {
            write!(f, " {m}:{n}")?;
        }
        if self.unknown_source > 0 {
            write!(f, " unknown:{}", self.unknown_source)?;
        }
        writeln!(f)
    }
}

/// Reports a problem entry (logged) and counts it.
fn note_problem(stats: &mut ReplayStats, path: &Path, e: &Entry<'_>) {
    match *e {
        Entry::Corrupt { offset, len } => {
            stats.corrupt_regions += 1;
            stats.corrupt_bytes += len;
            warn!(
                "{}: {len} corrupt bytes at offset {offset} skipped",
                path.display()
            );
        }
        Entry::Unfinished { offset, file_len } => {
            stats.unfinished.push((path.to_path_buf(), offset));
            warn!(
                "{}: data ends at offset {offset} of {file_len} (the writer did not close the file: killed?)",
                path.display()
            );
        }
        Entry::Record(_) => {}
    }
}

/// Feeds every record of `dumps`, in order, through `builder` into `sink`,
/// then flushes the builder. `each` sees every record first (pacing,
/// progress) and may stop the replay by returning false.
pub fn run(
    dumps: &[Dump],
    builder: &mut Builder,
    sink: &mut impl EventSink,
    mut each: impl FnMut(&Record<'_>) -> bool,
) -> ReplayStats {
    let relaxed = builder.config().relaxed_ip;
    let stats = walk(dumps, relaxed, |r| {
        if !each(r) {
            return false;
        }
        let d = Datagram {
            payload: r.payload,
            src: *r.src.ip(),
            arrival_ns: r.arrival_ns,
            truncated: r.truncated,
        };
        builder.push(d, sink);
        true
    });
    builder.flush(sink);
    stats
}

/// Counts what `dumps` hold without building (`ssdaq-replay --info`).
pub fn survey(dumps: &[Dump], relaxed: bool) -> ReplayStats {
    walk(dumps, relaxed, |_| true)
}

/// Reads every record of `dumps` in order, counting records, sources and
/// problems; `take` handles each record and may stop the walk with false.
fn walk(dumps: &[Dump], relaxed: bool, mut take: impl FnMut(&Record<'_>) -> bool) -> ReplayStats {
    let mut stats = ReplayStats::default();
    for dump in dumps {
        stats.files += 1;
        stats.bytes += dump.len();
        for e in dump.entries() {
            let Entry::Record(r) = e else {
                note_problem(&mut stats, dump.path(), &e);
                continue;
            };
            if !take(&r) {
                return stats;
            }
            stats.records += 1;
            stats.count_source(&r, relaxed);
        }
    }
    stats
}
