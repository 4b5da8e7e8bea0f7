//! The HDF5 writer against the original's own (docs/performance.md, "HDF5
//! files"): the same 100 000 events written by `ssdaq_hdf5` and by a
//! PyTables script doing what the original's `EventFileWriter` did
//! (batched, to be fair: 1000 rows per append), with compression off and
//! with deflate level 1 (shuffle then zlib on both sides, as ssdaq writes
//! them; ssdaq encodes its chunks with libdeflate). Reports events/s of
//! each and their ratio, bytes per event and the writer's peak memory,
//! median of interleaved trials.
//!
//! Run: `cargo bench --features hdf5 --bench hdf5` (needs `$SSDAQ_PYTHON`
//! with PyTables, as `./tools/test` sets up; without it only ssdaq's side).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ssdaq::event::{EventView, V1_LEN, WireV1};
use ssdaq::packet::{N_MODULES, N_PIXELS};
use ssdaq_hdf5::{EventFile, Layout, Options};
use ssdaq_wire::adc::adc_to_mv;
use zerocopy::FromBytes;
use zerocopy::byteorder::little_endian::{F64, U64};

const EVENTS: usize = 100_000;
/// Distinct events, cycled (renumbered) to make [`EVENTS`].
const DISTINCT: usize = 10_000;
const TRIALS: usize = 3;
const SPACING: u64 = 4_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

/// `DISTINCT` v1 messages of the simulated camera, one readout per module.
fn messages() -> Vec<u8> {
    let mut out = vec![0u8; DISTINCT * V1_LEN];
    for (e, msg) in out.chunks_exact_mut(V1_LEN).enumerate() {
        let ts = T0 + e as u64 * SPACING;
        let w = WireV1::mut_from_bytes(msg).unwrap();
        w.event_number = U64::new(e as u64 + 1);
        w.timestamp = U64::new(ts);
        for m in 0..N_MODULES {
            let r = tm_ss_sim::readout(7, m as u8, ts);
            for p in 0..N_PIXELS {
                w.mv[m][p] = F64::new(adc_to_mv(r.adc(p)));
            }
            w.timestamps[m] = [U64::new(r.primary_ts()), U64::new(r.aux_ts())];
        }
    }
    out
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// ssdaq's writer: (events/s, bytes).
fn ssdaq_trial(msgs: &[u8], path: &Path, compress: u8) -> (f64, u64) {
    let _ = std::fs::remove_file(path);
    let opts = Options {
        layout: Layout::Seed,
        compress,
        ..Options::default()
    };
    let mut msg = vec![0u8; V1_LEN];
    let t = Instant::now();
    let mut f = EventFile::create(path, ssdaq::event::Format::V1, T0, &opts).unwrap();
    for i in 0..EVENTS {
        let src = &msgs[(i % DISTINCT) * V1_LEN..][..V1_LEN];
        msg.copy_from_slice(src);
        msg[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        let now = T0 + i as u64 * SPACING;
        f.append(&EventView::parse(&msg).unwrap(), now).unwrap();
        if i % 250 == 249 {
            f.flush(now).unwrap(); // once a second of camera time, as live
        }
    }
    f.finish(T0 + EVENTS as u64 * SPACING).unwrap();
    let secs = t.elapsed().as_secs_f64();
    (EVENTS as f64 / secs, std::fs::metadata(path).unwrap().len())
}

const PYTABLES: &str = r#"
import sys, time, resource, numpy as np, tables
from tables import IsDescription, open_file, UInt64Col, Float32Col
msgs, path, level, events, distinct = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
class SSEventTableDs(IsDescription):
    event_number = UInt64Col()
    runt_number = UInt64Col()
    ev_time = UInt64Col()
    data = Float32Col((32, 64))
    time_stamps = UInt64Col((32, 2))
raw = np.fromfile(msgs, np.uint8).reshape(distinct, 16920)
head = raw[:, :24].copy().view("<u8").reshape(distinct, 3)
data = raw[:, 24:16408].copy().view("<f8").reshape(distinct, 32, 64)
tss = raw[:, 16408:].copy().view("<u8").reshape(distinct, 32, 2)
filters = tables.Filters(complevel=level, complib="zlib", shuffle=True) if level else None
t0 = time.perf_counter()
f = open_file(path, mode="w", title="CHEC-S Slow signal monitor data", filters=filters)
g = f.create_group("/", "SlowSignal", "Slow signal data")
t = f.create_table(g, "readout", SSEventTableDs, "Slow signal readout", expectedrows=events)
batch = np.zeros(1000, dtype=t.dtype)
for start in range(0, events, 1000):
    idx = np.arange(start, start + 1000) % distinct
    batch["event_number"] = np.arange(start + 1, start + 1001)
    batch["ev_time"] = head[idx, 2]
    batch["data"] = data[idx].astype(np.float32)
    batch["time_stamps"] = tss[idx]
    t.append(batch)
    t.flush()
f.close()
secs = time.perf_counter() - t0
print(events / secs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"#;

/// PyTables: (events/s, bytes, peak RSS KiB) or None without PyTables.
fn pytables_trial(py: &str, msgs: &Path, path: &Path, level: u8) -> Option<(f64, u64, u64)> {
    let _ = std::fs::remove_file(path);
    let out = Command::new(py)
        .args(["-c", PYTABLES])
        .arg(msgs)
        .arg(path)
        .args([level.to_string(), EVENTS.to_string(), DISTINCT.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PyTables trial failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    let rate: f64 = it.next()?.parse().ok()?;
    let rss: u64 = it.next()?.parse().ok()?;
    Some((rate, std::fs::metadata(path).ok()?.len(), rss))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("ssdaq-bench-hdf5-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let msgs = messages();
    let msgs_path = dir.join("events.bin");
    std::fs::write(&msgs_path, &msgs).unwrap();
    let py = std::env::var("SSDAQ_PYTHON").unwrap_or_else(|_| "python3".into());
    println!(
        "HDF5 writer, {EVENTS} events (seed layout), median of {TRIALS}, on {}",
        cpu_name()
    );
    let rss0 = peak_rss_kib();
    println!(
        "{:<12} {:>14} {:>14} {:>8} {:>12} {:>12} {:>14}",
        "compression",
        "ssdaq ev/s",
        "PyTables ev/s",
        "ratio",
        "ssdaq B/ev",
        "PyT. B/ev",
        "PyT. RSS MiB"
    );
    for level in [0u8, 1] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let (mut our_bytes, mut their_bytes, mut their_rss) = (0, 0, 0);
        for _ in 0..TRIALS {
            let (r, b) = ssdaq_trial(&msgs, &dir.join("ssdaq.h5"), level);
            ours.push(r);
            our_bytes = b;
            if let Some((r, b, rss)) =
                pytables_trial(&py, &msgs_path, &dir.join("pytables.h5"), level)
            {
                theirs.push(r);
                their_bytes = b;
                their_rss = rss;
            }
        }
        let o = median(&mut ours);
        let name = if level == 0 { "none" } else { "deflate 1" };
        if theirs.is_empty() {
            println!(
                "{name:<12} {o:>14.0} {:>14} {:>8} {:>12.0}",
                "-",
                "-",
                our_bytes as f64 / EVENTS as f64
            );
        } else {
            let t = median(&mut theirs);
            println!(
                "{name:<12} {o:>14.0} {t:>14.0} {:>7.2}x {:>12.0} {:>12.0} {:>14.0}",
                o / t,
                our_bytes as f64 / EVENTS as f64,
                their_bytes as f64 / EVENTS as f64,
                their_rss as f64 / 1024.0
            );
        }
    }
    println!(
        "ssdaq writer peak RSS growth: {:.1} MiB (the bench holds {} MiB of events besides)",
        (peak_rss_kib().saturating_sub(rss0)) as f64 / 1024.0,
        msgs.len() >> 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
