//! Micro-benchmarks of every stage of the data path, one criterion group each.
//!
//! What the pipeline must sustain, and so what these numbers are held against:
//!
//! * **Capacity.** The live daemon should take at least 0.9 × what a bare
//!   `recvmmsg` loop drains (~1.4 Mpps of 1440-byte datagrams on the project's
//!   2-core VMs, docs/design.md): about **1 µs per datagram** for all the
//!   work of the build core — `packet` + 10 × `fill_row` + the builder's slot
//!   work + a share of `publish` (a frame of 32 datagrams makes 10 events, so
//!   0.31 events per datagram). Dumping runs on the receive core and adds
//!   `dump_append` to each datagram there.
//! * **Replay.** `ssdaq-replay` should reprocess a raw dump at **≥ 1 GB/s**
//!   of dump input.
//!
//! The groups, in pipeline order:
//!
//! * `packet` — [`packet::parse`] of a 10-readout datagram (cast in place,
//!   length, source and timestamp checks), and of a 143-byte one (the reject
//!   path a malformed flood takes). Per datagram.
//! * `fill_row` — [`EventBuf::fill_row`]: one readout converted ADC → mV
//!   (64 pixels) and its two timestamps stored, into a slot that stays in
//!   cache. Per readout; the inner loop of the builder.
//! * `encode` — [`EventBuf::encode`] in wire formats v1 and v2 (writes a
//!   header in place and slices: no copy, so bytes/s is nominal) and
//!   [`EventView::parse`] of a v1 message (a subscriber's decode).
//! * `builder` — a whole camera frame (32 datagrams × 10 readouts, every
//!   module expected) through a [`Builder`] into a sink that encodes and
//!   discards: per frame, datagrams/s and bytes/s. Every iteration carries
//!   new timestamps (the builder refuses late and duplicate readouts, which
//!   would be a much cheaper path); the number of events that come out is
//!   checked before and after. A second variant loses one module's datagram
//!   every other frame, so half the events go out partial under the
//!   "passed" rule.
//! * `publish` — [`Publisher::send_event`] with no subscriber (the event
//!   buffer is lent to libzmq and comes back at once) against
//!   [`Publisher::send`] (libzmq copies the 16 920 bytes). Only the sends are
//!   timed: each sample takes one event from a builder and sends it over and
//!   over, so caches are hot (docs/design.md has the cold figures).
//! * `dump_append` — [`DumpWriter::append`] of a 1440-byte datagram (copy into
//!   the mapping and CRC32), with its helper thread running as in `ssdaqd`:
//!   `paced` stops the timer for 2 ms every 2 MiB so the helper can stay
//!   ahead (the writer's own cost, at any rate a camera really sends),
//!   `stream` appends back to back (the sustained rate of writer and helper
//!   together: the receive core under a flood). Page faults the helper did
//!   not take in advance are paid by the writer, in both. A record the
//!   writer counts lost (its helper had not prepared the space) is appended
//!   again until it is recorded, so the losing path is never what is timed;
//!   how often that happened is printed.
//! * `dump_read` — iterating [`Dump::entries`] of a pre-written 64 MiB dump
//!   (CRC checked per record), and [`replay::run`] of the same dump through a
//!   fresh builder with the settings recorded in its header, into a
//!   discarding sink: bytes/s of dump input.
//!
//! Data are simulated ([`sim::datagram`]) once and then given new timestamps
//! in place, so generating them costs nothing in the timed loops; datagrams
//! are warm in cache, as after the kernel has copied them into the receive
//! buffer. Dump files go to `SSDAQ_BENCH_DIR`, else `/dev/shm`, else the
//! temporary directory: the dump benchmarks measure CPU cost, not the disk of
//! a shared VM (tmpfs makes the writer's final `fsync` free); every file is
//! removed as soon as it is closed.
//!
//! `cargo bench --bench micro` takes under a minute and a half on 2 cores;
//! `SSDAQ_BENCH_QUICK=1` cuts every measurement short (under 30 s in all) for a
//! smoke test whose numbers are only indicative.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};

use ssdaq::builder::{Builder, BuilderConfig, Datagram, Emit, Event, EventSink};
use ssdaq::dump::{Dump, DumpConfig, DumpStats, DumpWriter, Entry, record_len};
use ssdaq::event::{EventBuf, EventHeader, EventView, Format, V1_LEN, V2_LEN};
use ssdaq::packet::{self, N_MODULES, READOUT_SIZE, READOUTS_PER_DATAGRAM, Readout, Reject};
use ssdaq::publish::{DEFAULT_HWM, Publisher};
use ssdaq::replay;
use tm_ss_sim::{self as sim, Grid};

/// Seed of the simulated camera's pixel model.
const SEED: u64 = 0x55DA_0001;
/// Bytes of a real module's datagram: 10 readouts.
const DATAGRAM_LEN: usize = READOUTS_PER_DATAGRAM * READOUT_SIZE;
/// Datagrams in one camera frame.
const FRAME_DATAGRAMS: u64 = N_MODULES as u64;
/// Events in one camera frame.
const FRAME_EVENTS: u64 = READOUTS_PER_DATAGRAM as u64;
/// The camera's modules send from `127.0.0.100..131`.
const CAMERA: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The UDP source port recorded in dumps.
const SRC_PORT: u16 = 40_000;
/// The module that loses every other datagram in `builder/frame_pair_one_lost`.
const LOSSY_MODULE: usize = 7;
/// A dump file for `dump_append` is replaced (outside the timed region) once
/// a sample would take it past this size, so the files stay small in memory.
const APPEND_FILE_BUDGET: u64 = 512 << 20;

/// How long to measure: full by default, very short with `SSDAQ_BENCH_QUICK=1`.
#[derive(Clone, Copy)]
struct BenchPlan {
    quick: bool,
    /// Size of the dump the `dump_read` group reads.
    dump_bytes: u64,
}

impl BenchPlan {
    fn from_env() -> BenchPlan {
        let quick = std::env::var("SSDAQ_BENCH_QUICK").is_ok_and(|v| v == "1");
        BenchPlan {
            quick,
            dump_bytes: if quick { 8 << 20 } else { 64 << 20 },
        }
    }

    fn criterion(&self) -> Criterion {
        let c = Criterion::default();
        let c = if self.quick {
            c.warm_up_time(Duration::from_millis(100))
                .measurement_time(Duration::from_millis(300))
                .sample_size(10)
        } else {
            c.warm_up_time(Duration::from_millis(1000))
                .measurement_time(Duration::from_secs(3))
                .sample_size(50)
        };
        c.configure_from_args()
    }

    /// Samples and time for the groups whose single iteration is long.
    fn long(&self) -> (usize, Duration) {
        if self.quick {
            (10, Duration::from_millis(500))
        } else {
            (10, Duration::from_secs(4))
        }
    }
}

// ─────────────────────────── simulated camera ───────────────────────────

/// A simulated camera whose frames cost nothing to produce: each module's
/// datagram is simulated once, and each new frame only rewrites the primary
/// timestamps in place (ADC values do not change what the code under test
/// does).
struct Camera {
    grid: Grid,
    /// Frame number of the first frame (a realistic wall-clock time).
    first_frame: u64,
    /// Frames produced so far.
    frames: u64,
    datagrams: Vec<Vec<u8>>,
    sources: Vec<Ipv4Addr>,
}

impl Camera {
    fn new() -> Camera {
        let grid = Grid::new(sim::DEFAULT_RATE, READOUTS_PER_DATAGRAM);
        let first_frame = 1_700_000_000_000_000_000 / grid.period_ns();
        let datagrams = (0..N_MODULES as u8)
            .map(|m| {
                let mut d = Vec::new();
                let ts = grid.first_ts(first_frame);
                sim::datagram(
                    SEED,
                    m,
                    ts,
                    grid.spacing_ns(),
                    READOUTS_PER_DATAGRAM,
                    &mut d,
                );
                d
            })
            .collect();
        let sources = (0..N_MODULES as u8)
            .map(|m| packet::module_addr(CAMERA, m))
            .collect();
        let mut cam = Camera {
            grid,
            first_frame,
            frames: 0,
            datagrams,
            sources,
        };
        cam.check_patching();
        cam
    }

    /// Rewrites every datagram with the timestamps of the next frame and
    /// returns that frame's arrival time (just after its last readout).
    fn next_frame(&mut self) -> u64 {
        let g = self.first_frame + self.frames;
        self.frames += 1;
        let (first, spacing) = (self.grid.first_ts(g), self.grid.spacing_ns());
        for d in &mut self.datagrams {
            for (j, r) in d.chunks_exact_mut(READOUT_SIZE).enumerate() {
                set_primary_ts(r, first + j as u64 * spacing);
            }
        }
        self.grid.last_ts(g) + 50_000
    }

    /// Module `m`'s datagram of the current frame, arriving `m` µs after `arrival_ns`.
    fn datagram(&self, m: usize, arrival_ns: u64) -> Datagram<'_> {
        Datagram {
            payload: &self.datagrams[m],
            src: self.sources[m],
            arrival_ns: arrival_ns + m as u64 * 1_000,
            truncated: false,
        }
    }

    /// The patched datagrams parse with exactly the timestamps intended.
    fn check_patching(&mut self) {
        self.next_frame();
        let g = self.first_frame + self.frames - 1;
        for (m, d) in self.datagrams.iter().enumerate() {
            let p = packet::parse(d, false, self.sources[m], false).expect("a valid datagram");
            assert_eq!(p.module as usize, m);
            for (j, r) in p.readouts.iter().enumerate() {
                let want = self.grid.first_ts(g) + j as u64 * self.grid.spacing_ns();
                assert_eq!(r.primary_ts(), want, "module {m} readout {j}");
            }
        }
    }
}

/// Overwrites the primary timestamp of one 144-byte readout: a big-endian
/// u64 at offset 0 (the layout table of [`Readout`]; `Camera::check_patching`
/// verifies it through [`packet::parse`]).
fn set_primary_ts(readout: &mut [u8], ts: u64) {
    readout[..8].copy_from_slice(&ts.to_be_bytes());
}

/// Pushes the current frame of `cam` into `b`, leaving out module `skip`.
fn push_frame(
    b: &mut Builder,
    cam: &Camera,
    arrival_ns: u64,
    skip: Option<usize>,
    sink: &mut impl EventSink,
) {
    for m in 0..N_MODULES {
        if Some(m) != skip {
            b.push(cam.datagram(m, arrival_ns), sink);
        }
    }
}

/// Every module expected, as in a camera with all modules working.
fn all_modules() -> BuilderConfig {
    BuilderConfig {
        modules: Some(u32::MAX),
        ..Default::default()
    }
}

/// Nothing was refused: the benchmark measured the accepting path.
fn assert_nothing_refused(b: &Builder) {
    let s = b.stats();
    assert_eq!(s.rejected_total(), 0, "datagrams refused:\n{s}");
    assert_eq!(s.late() + s.duplicate(), 0, "readouts dropped:\n{s}");
}

// ─────────────────────────────── packet ───────────────────────────────

fn packet(c: &mut Criterion) {
    let mut cam = Camera::new();
    cam.next_frame();
    let (good, src) = (cam.datagrams[3].clone(), cam.sources[3]);
    assert!(packet::parse(&good, false, src, false).is_ok());
    let bad = &good[..READOUT_SIZE - 1];
    assert_eq!(
        packet::parse(bad, false, src, false).err(),
        Some(Reject::BadLength)
    );

    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: DATAGRAM_LEN as u64,
    });
    g.bench_function("parse_1440_ok", |b| {
        b.iter(|| packet::parse(black_box(&good), false, black_box(src), false).is_ok())
    });
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: bad.len() as u64,
    });
    g.bench_function("parse_143_bad_length", |b| {
        b.iter(|| packet::parse(black_box(bad), false, black_box(src), false).is_err())
    });
    g.finish();
}

// ────────────────────────────── fill_row ──────────────────────────────

fn fill_row(c: &mut Criterion) {
    let readouts: Vec<Readout> = (0..N_MODULES as u8)
        .map(|m| sim::readout(SEED, m, 1_700_000_000_000_000_000))
        .collect();
    let mut buf = EventBuf::new_boxed();
    let mut g = c.benchmark_group("fill_row");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: READOUT_SIZE as u64,
    });
    let mut m = 0;
    g.bench_function("readout", |b| {
        b.iter(|| {
            // Every row of the slot in turn, as a frame fills it.
            m = (m + 1) % N_MODULES;
            black_box(&mut *buf).fill_row(m, black_box(&readouts[m]));
        })
    });
    g.finish();
}

// ─────────────────────────────── encode ───────────────────────────────

fn encode(c: &mut Criterion) {
    let mut buf = EventBuf::new_boxed();
    for m in 0..N_MODULES {
        buf.fill_row(m, &sim::readout(SEED, m as u8, 1_700_000_000_000_000_000));
    }
    let h = EventHeader {
        number: 12_345,
        run: 7,
        timestamp: 1_700_000_000_000_000_000,
        arrival_ns: 1_700_000_000_000_050_000,
    };
    let mut g = c.benchmark_group("encode");
    for (name, format, len) in [("v1", Format::V1, V1_LEN), ("v2", Format::V2, V2_LEN)] {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter(|| black_box(black_box(&mut *buf).encode(format, black_box(&h))).len())
        });
    }
    let msg = buf.encode(Format::V1, &h).to_vec();
    assert_eq!(
        EventView::parse(&msg).map(|v| v.number()).ok(),
        Some(12_345)
    );
    g.throughput(Throughput::Bytes(V1_LEN as u64));
    g.bench_function("view_parse_v1", |b| {
        b.iter(|| EventView::parse(black_box(&msg)).is_ok())
    });
    g.finish();
}

// ────────────────────────────── builder ───────────────────────────────

fn builder(c: &mut Criterion) {
    // Quick pre-run: three frames make thirty complete events.
    {
        let (mut cam, mut b, mut n) = (Camera::new(), Builder::new(all_modules()), 0);
        for _ in 0..3 {
            let arrival = cam.next_frame();
            push_frame(&mut b, &cam, arrival, None, &mut |_: Event<'_>| n += 1);
        }
        assert_eq!((n, b.stats().complete), (30, 30), "{}", b.stats());
    }

    let mut g = c.benchmark_group("builder");

    let (mut cam, mut b, mut events) = (Camera::new(), Builder::new(all_modules()), 0u64);
    let frames_before = cam.frames;
    g.throughput(Throughput::ElementsAndBytes {
        elements: FRAME_DATAGRAMS,
        bytes: FRAME_DATAGRAMS * DATAGRAM_LEN as u64,
    });
    g.bench_function("frame_32x10", |bch| {
        bch.iter_custom(|iters| {
            let mut sink = |mut ev: Event<'_>| {
                black_box(ev.encode(Format::V1));
                events += 1;
            };
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let arrival = cam.next_frame();
                let start = Instant::now();
                push_frame(&mut b, &cam, arrival, None, &mut sink);
                took += start.elapsed();
            }
            took
        })
    });
    let frames = cam.frames - frames_before;
    assert_nothing_refused(&b);
    assert_eq!(events, frames * FRAME_EVENTS, "{}", b.stats());
    assert_eq!(b.stats().complete, events, "{}", b.stats());

    // Module LOSSY_MODULE loses its datagram of every second frame.
    let (mut cam, mut b, mut events) = (Camera::new(), Builder::new(all_modules()), 0u64);
    let frames_before = cam.frames;
    g.throughput(Throughput::ElementsAndBytes {
        elements: 2 * FRAME_DATAGRAMS - 1,
        bytes: (2 * FRAME_DATAGRAMS - 1) * DATAGRAM_LEN as u64,
    });
    g.bench_function("frame_pair_one_lost", |bch| {
        bch.iter_custom(|iters| {
            let mut sink = |mut ev: Event<'_>| {
                black_box(ev.encode(Format::V1));
                events += 1;
            };
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                for skip in [None, Some(LOSSY_MODULE)] {
                    let arrival = cam.next_frame();
                    let start = Instant::now();
                    push_frame(&mut b, &cam, arrival, skip, &mut sink);
                    took += start.elapsed();
                }
            }
            took
        })
    });
    g.finish();
    let pairs = (cam.frames - frames_before) / 2;
    let s = b.stats();
    assert_nothing_refused(&b);
    if pairs > 0 {
        // The last frame's partial events wait for the lossy module's next datagram.
        assert_eq!(b.pending() as u64, FRAME_EVENTS, "{s}");
        assert_eq!(events, 2 * pairs * FRAME_EVENTS - FRAME_EVENTS, "{s}");
        assert_eq!(s.complete, pairs * FRAME_EVENTS, "{s}");
        assert_eq!(s.emitted[Emit::Passed as usize], events - s.complete, "{s}");
    }
}

// ────────────────────────────── publish ───────────────────────────────

/// Makes one camera event at a time: a builder that expects module 0 only,
/// fed one-readout datagrams.
struct EventSource {
    cam: Camera,
    builder: Builder,
}

impl EventSource {
    fn new() -> EventSource {
        EventSource {
            cam: Camera::new(),
            builder: Builder::new(BuilderConfig {
                modules: Some(1),
                ..Default::default()
            }),
        }
    }

    /// Builds the next event and hands it to `f`.
    fn next(&mut self, mut f: impl FnMut(&mut Event<'_>)) {
        let arrival = self.cam.next_frame();
        let mut d = self.cam.datagram(0, arrival);
        d.payload = &d.payload[..READOUT_SIZE];
        let mut n = 0;
        self.builder.push(d, &mut |mut ev: Event<'_>| {
            n += 1;
            f(&mut ev)
        });
        assert_eq!(n, 1, "one event per one-readout datagram");
    }
}

fn publish(c: &mut Criterion) {
    let mut p = Publisher::bind("tcp://127.0.0.1:*", Format::V1, DEFAULT_HWM)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut source = EventSource::new();
    let mut sends = 0;
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: V1_LEN as u64,
    });

    g.bench_function("send_event_lent", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            source.next(|ev| {
                // The lent path swaps a spare buffer into the slot; a copying
                // fallback (no spare left) would not.
                let before: *const EventBuf = ev.buf();
                p.send_event(ev);
                assert!(!std::ptr::eq(before, ev.buf()), "the event was not lent");
                let start = Instant::now();
                for _ in 0..iters {
                    p.send_event(black_box(&mut *ev));
                }
                took = start.elapsed();
                sends += iters + 1;
            });
            took
        })
    });

    g.bench_function("send_copy", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            source.next(|ev| {
                let msg = ev.encode(Format::V1);
                let start = Instant::now();
                for _ in 0..iters {
                    p.send(black_box(msg));
                }
                took = start.elapsed();
                sends += iters;
            });
            took
        })
    });
    g.finish();
    let s = p.stats();
    assert_eq!((s.sent, s.errors, s.overflows), (sends, 0, 0), "{s}");
}

// ──────────────────────────────── dump ────────────────────────────────

/// A directory for dump files, removed with everything in it on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        let base = std::env::var_os("SSDAQ_BENCH_DIR")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("ssdaq-micro-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        ScratchDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dump_config(path: PathBuf, info: Vec<(String, String)>) -> DumpConfig {
    DumpConfig {
        path,
        max_file_size: 8 << 30,
        chunk_size: DumpConfig::DEFAULT_CHUNK_SIZE,
        info,
        helper_core: None,
        run: None,
    }
}

/// A dump writer on a file of its own, and what it counted.
struct OpenDump {
    writer: DumpWriter,
    stats: Arc<DumpStats>,
    path: PathBuf,
}

impl OpenDump {
    fn create(path: PathBuf, info: Vec<(String, String)>) -> OpenDump {
        let stats = Arc::new(DumpStats::default());
        let writer = DumpWriter::create(&dump_config(path.clone(), info), stats.clone())
            .unwrap_or_else(|e| panic!("cannot create a dump at {}: {e}", path.display()));
        OpenDump {
            writer,
            stats,
            path,
        }
    }

    /// Closes the file and returns what was counted.
    fn finish(self) -> (PathBuf, ssdaq::dump::DumpSummary) {
        self.writer.finish();
        (self.path, self.stats.snapshot())
    }
}

/// Appends records to dump files of bounded size, replacing a file (outside
/// the timed region) once a sample would take it past [`APPEND_FILE_BUDGET`].
struct Appender {
    dir: PathBuf,
    open: Option<OpenDump>,
    files: u32,
    /// Records in the files closed so far.
    recorded: u64,
    payload: Vec<u8>,
    src: SocketAddrV4,
    arrival_ns: u64,
    /// Records appended (each one recorded, never lost).
    appended: u64,
    /// Appends the helper was not ready for (counted lost by the writer, then
    /// retried until recorded).
    stalls: u64,
}

impl Appender {
    fn new(dir: &Path) -> Appender {
        let mut cam = Camera::new();
        let arrival_ns = cam.next_frame();
        Appender {
            dir: dir.to_path_buf(),
            open: None,
            files: 0,
            recorded: 0,
            payload: cam.datagrams[0].clone(),
            src: SocketAddrV4::new(cam.sources[0], SRC_PORT),
            arrival_ns,
            appended: 0,
            stalls: 0,
        }
    }

    /// Makes sure the open file has room for `n` more records.
    fn room_for(&mut self, n: u64) {
        let need = n * record_len(self.payload.len()) as u64;
        let full = self.open.as_ref().is_none_or(|d| {
            let used = d.stats.bytes.load(Ordering::Relaxed);
            used > 0 && used + need > APPEND_FILE_BUDGET
        });
        if full {
            self.close();
            self.files += 1;
            let path = self.dir.join(format!("append-{}.raw", self.files));
            self.open = Some(OpenDump::create(path, vec![]));
        }
    }

    /// Appends `n` records and returns how long that took. A record the
    /// writer counts lost (its helper had not prepared the space) is appended
    /// again until it is recorded: the time is that of recording `n` records,
    /// never of the cheap losing path.
    fn append(&mut self, n: u64) -> Duration {
        let d = self.open.as_mut().expect("room_for opens a file");
        let mut lost = d.stats.lost.load(Ordering::Relaxed);
        let start = Instant::now();
        for i in 0..n {
            loop {
                let t = self.arrival_ns + i;
                d.writer
                    .append(t, self.src, false, black_box(&self.payload));
                let now = d.stats.lost.load(Ordering::Relaxed);
                if now == lost {
                    break;
                }
                lost = now;
                self.stalls += 1;
                std::thread::yield_now();
            }
        }
        let took = start.elapsed();
        self.appended += n;
        took
    }

    /// Closes and removes the open file (tmpfs keeps it in memory), checking
    /// that it holds every record appended to it.
    fn close(&mut self) {
        if let Some(d) = self.open.take() {
            let (path, s) = d.finish();
            let _ = std::fs::remove_file(path);
            assert!(!s.failed && s.not_recorded == 0, "{s}");
            self.recorded += s.records;
        }
    }

    fn finish(mut self, name: &str) {
        self.close();
        assert_eq!(self.recorded, self.appended);
        if self.stalls > 0 {
            eprintln!(
                "dump_append/{name}: the writer got ahead of its helper {} times in {} \
                 appends (each retried until recorded, and timed)",
                self.stalls, self.appended
            );
        }
    }
}

/// Records per untimed pause of `append_1440_paced`: 2 MiB of dump.
const PACE_RECORDS: u64 = (2 << 20) / record_len(DATAGRAM_LEN) as u64;

fn dump_append(c: &mut Criterion, plan: &BenchPlan, dir: &Path) {
    let mut g = c.benchmark_group("dump_append");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(if plan.quick { 10 } else { 20 })
        .throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: DATAGRAM_LEN as u64,
        });

    // The writer's own cost: every 2 MiB the timer stops for 2 ms so the
    // helper thread stays ahead, as it does at any rate a camera sends.
    let mut a = Appender::new(dir);
    g.bench_function("append_1440_paced", |b| {
        b.iter_custom(|iters| {
            a.room_for(iters);
            let mut took = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(PACE_RECORDS);
                took += a.append(n);
                left -= n;
                if left > 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            took
        })
    });
    a.finish("append_1440_paced");

    // Back to back: the sustained rate of writer and helper together.
    let mut a = Appender::new(dir);
    g.bench_function("append_1440_stream", |b| {
        b.iter_custom(|iters| {
            a.room_for(iters);
            a.append(iters)
        })
    });
    a.finish("append_1440_stream");
    g.finish();
}

/// Writes a dump of about `bytes` bytes of whole camera frames, as ssdaqd
/// would record it; returns its path and the number of frames.
fn write_dump(dir: &Path, bytes: u64) -> (PathBuf, u64) {
    let cfg = BuilderConfig::default();
    let mut info = vec![("format".to_string(), "v1".to_string())];
    info.extend(cfg.to_pairs());
    let mut d = OpenDump::create(dir.join("read.raw"), info);
    let mut cam = Camera::new();
    let frame_bytes = FRAME_DATAGRAMS * record_len(DATAGRAM_LEN) as u64;
    let frames = bytes / frame_bytes;
    for _ in 0..frames {
        let arrival = cam.next_frame();
        for m in 0..N_MODULES {
            let dg = cam.datagram(m, arrival);
            let src = SocketAddrV4::new(dg.src, SRC_PORT);
            // Setup is not timed: should the helper fall behind, wait and
            // record the datagram again, so the dump holds every frame.
            loop {
                let lost = d.stats.lost.load(Ordering::Relaxed);
                d.writer.append(dg.arrival_ns, src, false, dg.payload);
                if d.stats.lost.load(Ordering::Relaxed) == lost {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let (path, s) = d.finish();
    assert_eq!(s.records, frames * FRAME_DATAGRAMS, "{s}");
    (path, frames)
}

fn dump_read(c: &mut Criterion, plan: &BenchPlan, dir: &Path) {
    let (path, frames) = write_dump(dir, plan.dump_bytes);
    let dumps = vec![Dump::open(&path).unwrap_or_else(|e| panic!("{e}"))];
    let dump = &dumps[0];
    let records = frames * FRAME_DATAGRAMS;
    let (cfg, format) = replay::recorded_settings(dump).expect("settings in the header");

    // Pre-run: the replay rebuilds every event, complete.
    let mut b = Builder::new(cfg.clone());
    let mut events = 0u64;
    let rs = replay::run(&dumps, &mut b, &mut |_: Event<'_>| events += 1, |_| true);
    assert_eq!(rs.records, records, "{rs}");
    assert_eq!(
        (events, b.stats().complete),
        (frames * FRAME_EVENTS, events)
    );
    assert_nothing_refused(&b);
    drop(b);

    let (samples, time) = plan.long();
    let mut g = c.benchmark_group("dump_read");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(samples)
        .measurement_time(time)
        .throughput(Throughput::ElementsAndBytes {
            elements: records,
            bytes: dump.len(),
        });
    g.bench_function("entries", |bch| {
        bch.iter(|| {
            let (mut n, mut bytes) = (0u64, 0usize);
            for e in dump.entries() {
                if let Entry::Record(r) = e {
                    n += 1;
                    bytes += black_box(r.payload).len();
                }
            }
            assert_eq!(n, records);
            bytes
        })
    });
    g.bench_function("replay", |bch| {
        bch.iter_batched_ref(
            || Builder::new(cfg.clone()),
            |b| {
                let mut events = 0u64;
                let mut sink = |mut ev: Event<'_>| {
                    black_box(ev.encode(format));
                    events += 1;
                };
                let rs = replay::run(&dumps, b, &mut sink, |_| true);
                assert_eq!((rs.records, events), (records, frames * FRAME_EVENTS));
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    drop(dumps);
    let _ = std::fs::remove_file(path);
}

fn main() {
    let plan = BenchPlan::from_env();
    let mut c = plan.criterion();
    packet(&mut c);
    fill_row(&mut c);
    encode(&mut c);
    builder(&mut c);
    publish(&mut c);
    let dir = ScratchDir::new();
    dump_append(&mut c, &plan, dir.path());
    dump_read(&mut c, &plan, dir.path());
    drop(dir);
    c.final_summary();
}
