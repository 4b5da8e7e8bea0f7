//! The pipeline benchmark: the real `ssdaqd` against the simulator.
//!
//! Every figure is a ratio against this machine's own limit, measured in the
//! same run (these machines are shared and noisy): each daemon trial runs
//! between two baseline trials and is divided by their mean, and the ratio
//! reported is the median of the per-trial ratios. `cargo bench --bench
//! pipeline`; `SSDAQ_BENCH_QUICK=1` runs a reduced version of all of it in
//! under a minute.
//!
//! * **capacity**: the daemon is stopped (SIGSTOP), its socket filled with N
//!   datagrams from 32 simulated modules (the simulator's flood mode), then
//!   resumed; datagrams/s = N / (last datagram built − first arrival), from
//!   the daemon's own stats, with zero loss required. Beside it, a bare
//!   `recvmmsg` discard loop drains the same N datagrams from a socket of the
//!   same size. Both with the receiving thread on core 0. For `--io uring`,
//!   `--io recvmmsg`, and with `--dump`. Beside them, the same bare loop
//!   doing the receive work ssdaqd cannot leave out (senders' addresses,
//!   its buffer pool): the ceiling of those ratios.
//! * **end to end**: the same drain with one subscriber; events/s it
//!   receives (zero loss), beside a bare ZeroMQ PUB→SUB of 16 920-byte
//!   messages.
//! * **latency** (arrival → handed to ZeroMQ, complete events) and **CPU**:
//!   the paced simulator at the camera's real rate (25 datagrams/s/module)
//!   and at 100× it, each frame sent up to a timer-tick period late (a
//!   camera's clock is not locked to this host's tick); CPU from /proc,
//!   with and without `--cores`, sleeping and busy-polling; beside them the
//!   machine's own noise floor.
//! * **replay**: a dump of ≥ 1 GiB through `ssdaq-replay`, beside `cat`.
//! * **memory**: the daemon's RSS at start and its peak.
//!
//! The last line is machine-readable: `RESULT key=value …`.
//!
//! `SSDAQ_BENCH_BASELINE=path/to/ssdaqd` adds this build against that one
//! (capacity, latency), each trial between two of the other's;
//! `SSDAQ_BENCH_ONLY=baseline` runs only that.
//!
//! `SSDAQ_BENCH_ONLY=metrics`: the drain with `--metrics` and 8 clients
//! scraping `/metrics` as fast as they can, each trial between two drains
//! without (docs/operations.md).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

/// The integration tests' harness: running ssdaqd, its log, /proc figures.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{Ssdaqd, Stats, bin, tmpdir};

use ssdaq::dump::{DumpConfig, DumpStats, DumpWriter};
use ssdaq::listen::EventListener;
use tm_ss_sim::{self as sim, SimConfig};

/// Socket buffer for the drain trials (needs root: SO_RCVBUFFORCE).
const RCVBUF: &str = "512M";
const RCVBUF_BYTES: usize = 512 << 20;
/// A drain stamps arrivals as it harvests: a slow trial must measure
/// throughput, not time events out.
const DRAIN_TIMEOUTS: &[&str] = &["--timeout-ms", "5000", "--module-timeout", "20"];

struct BenchPlan {
    quick: bool,
    /// Datagrams per drain trial.
    drain_n: u64,
    trials: usize,
    real_secs: f64,
    fast_secs: f64,
    dump_bytes: u64,
    noise_secs: f64,
}

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` run passes
    // nothing and should not take minutes.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: run with `cargo bench --bench pipeline`");
        return;
    }
    let quick = std::env::var_os("SSDAQ_BENCH_QUICK").is_some();
    let plan = if quick {
        BenchPlan {
            quick,
            drain_n: 32_000,
            trials: 5,
            real_secs: 4.0,
            fast_secs: 3.0,
            dump_bytes: 256 << 20,
            noise_secs: 2.0,
        }
    } else {
        BenchPlan {
            quick,
            drain_n: 96_000,
            trials: 11,
            real_secs: 20.0,
            fast_secs: 10.0,
            dump_bytes: 1 << 30,
            noise_secs: 10.0,
        }
    };
    println!(
        "pipeline bench ({}): {} datagrams per drain, {} trials, medians reported",
        if quick { "quick" } else { "full" },
        plan.drain_n,
        plan.trials
    );
    let started = Instant::now();
    let mut t = Table::default();
    if std::env::var("SSDAQ_BENCH_ONLY").as_deref() == Ok("metrics") {
        let mut scrapes = Vec::new();
        let pair = Pair::measure(
            plan.trials,
            || daemon_drain(plan.drain_n, &["--io", "uring"], None, false).rate,
            |_| {
                let (d, n) = scraped_drain(plan.drain_n, 8);
                scrapes.push(n as f64);
                d.rate
            },
        );
        println!(
            "capacity under scrapes: without {:.3} Mpps, with --metrics and 8 scrapers {:.3} Mpps \
             ({:.0} scrapes per drain), ratio {:.2} (per trial {})",
            pair.bare() / 1e6,
            pair.daemon() / 1e6,
            median(&scrapes),
            pair.ratio(),
            pair.trials()
        );
        println!("RESULT scraped_drain_ratio={:.3}", pair.ratio());
        println!("bench took {:.0} s", started.elapsed().as_secs_f64());
        return;
    }
    if std::env::var("SSDAQ_BENCH_ONLY").as_deref() == Ok("baseline") {
        // Just the comparison against another build, with the full trials.
        let base = std::env::var_os("SSDAQ_BENCH_BASELINE")
            .map(PathBuf::from)
            .expect("SSDAQ_BENCH_ONLY=baseline needs SSDAQ_BENCH_BASELINE=path/to/ssdaqd");
        against_baseline(&base, &plan);
        println!("bench took {:.0} s", started.elapsed().as_secs_f64());
        return;
    }

    // ── capacity ── (each daemon trial between two bare trials)
    for (label, args) in [
        ("uring", &["--io", "uring"][..]),
        ("recvmmsg", &["--io", "recvmmsg"][..]),
    ] {
        let mut cpu = Vec::new();
        let pair = Pair::measure(
            plan.trials,
            || bare_drain(plan.drain_n, Bare::PLAIN),
            |_| {
                let d = daemon_drain(plan.drain_n, args, None, false);
                cpu.push(d.cpu_ns_per_datagram);
                d.rate
            },
        );
        println!(
            "capacity {label:>8}: bare recvmmsg {:.3} Mpps, ssdaqd {:.3} Mpps, ratio {:.2} (per trial {}), CPU {:.2} µs/datagram",
            pair.bare() / 1e6,
            pair.daemon() / 1e6,
            pair.ratio(),
            pair.trials(),
            median(&cpu) / 1e3,
        );
        t.capacity.push((label, pair));
    }
    // What the receive work itself leaves of the bare rate, before any
    // hand-over to the build core: the ceiling of the ratios above.
    t.receive_work = Pair::measure(
        plan.trials,
        || bare_drain(plan.drain_n, Bare::PLAIN),
        |_| bare_drain(plan.drain_n, Bare::LIKE_DAEMON),
    );
    println!(
        "bare recvmmsg with source addresses and receive stamps into 512 × 4 KiB buffers (ssdaqd's receive work alone): {:.3} Mpps, ratio {:.2} to the plain loop (per trial {})",
        t.receive_work.daemon() / 1e6,
        t.receive_work.ratio(),
        t.receive_work.trials(),
    );
    // What the kernel's receive stamp costs, paired on the same loop.
    t.stamps = Pair::measure(
        plan.trials,
        || bare_drain(plan.drain_n, Bare::UNSTAMPED),
        |_| bare_drain(plan.drain_n, Bare::LIKE_DAEMON),
    );
    let ns = |r: f64| 1e9 / r;
    println!(
        "receive stamps (SO_TIMESTAMPNS): {:.3} Mpps with, {:.3} without, ratio {:.3} (per trial {}); {:+.1} ns per datagram",
        t.stamps.daemon() / 1e6,
        t.stamps.bare() / 1e6,
        t.stamps.ratio(),
        t.stamps.trials(),
        ns(t.stamps.daemon()) - ns(t.stamps.bare()),
    );
    {
        let dir = dump_dir();
        t.dump_fs = fs_name(&dir);
        let drain = |name: String, warm: bool| {
            let path = dir.join(name);
            let d = daemon_drain(plan.drain_n, &["--io", "uring"], Some(&path), warm);
            let _ = std::fs::remove_file(&path);
            d
        };
        // One trial on memory the host has taken back, for the record.
        let cold = drain("cold.raw".into(), false);
        let mut waits = Vec::new();
        t.dump = Pair::measure(
            plan.trials,
            || bare_drain(plan.drain_n, Bare::PLAIN),
            |i| {
                let d = drain(format!("drain{i}.raw"), true);
                waits.push(d.build_bound as f64);
                d.rate
            },
        );
        let p = &t.dump;
        println!(
            "capacity with --dump (on {}): bare {:.3} Mpps, ssdaqd {:.3} Mpps, ratio {:.2} (per trial {}); \
             receiving waited for building {:.0} times per trial; on memory the host had taken back: {:.3} Mpps",
            t.dump_fs,
            p.bare() / 1e6,
            p.daemon() / 1e6,
            p.ratio(),
            p.trials(),
            median(&waits),
            cold.rate / 1e6,
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ── against another build (SSDAQ_BENCH_BASELINE=path/to/ssdaqd) ──
    if let Some(base) = std::env::var_os("SSDAQ_BENCH_BASELINE").map(PathBuf::from) {
        against_baseline(&base, &plan);
    }

    // ── end to end ──
    t.e2e = Pair::measure(
        plan.trials.min(3),
        || bare_pubsub(plan.drain_n * 10 / 32),
        |_| e2e_drain(plan.drain_n),
    );
    println!(
        "end to end: bare ZMQ PUB→SUB {:.0} msg/s, ssdaqd → subscriber {:.0} events/s, ratio {:.2} (per trial {})",
        t.e2e.bare(),
        t.e2e.daemon(),
        t.e2e.ratio(),
        t.e2e.trials()
    );

    // ── latency, CPU, memory at the real rate and at 100× ──
    let real = paced(25.0, plan.real_secs, &[]);
    let real_pinned = paced(25.0, plan.real_secs, &["--cores", "0,1"]);
    let real_polled = paced(25.0, plan.real_secs, &["--cores", "0,1", "--busy-poll"]);
    let fast = paced(2500.0, plan.fast_secs, &[]);
    for (label, r) in [
        ("real, unpinned", &real),
        ("real, --cores 0,1", &real_pinned),
        ("real, + busy-poll", &real_polled),
        ("100x rate", &fast),
    ] {
        println!(
            "{label:>17}: read→zmq p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} µs (n={}); from the kernel's stamp p50 {:.1} p99 {:.1} µs (in the kernel and socket: p99 {:.1} µs), CPU {:.2} % of a core, {:.2} µs/datagram, RSS {:.1} → peak {:.1} MiB, all complete: {}",
            r.p50 / 1e3,
            r.p99 / 1e3,
            r.p999 / 1e3,
            r.max / 1e3,
            r.n,
            r.e2e_p50 / 1e3,
            r.e2e_p99 / 1e3,
            r.socket_p99 / 1e3,
            r.cpu_pct,
            r.cpu_ns_per_datagram / 1e3,
            r.rss_start_mib,
            r.rss_peak_mib,
            r.all_complete
        );
    }
    t.real = Some(real);
    t.real_pinned = Some(real_pinned);
    t.real_polled = Some(real_polled);
    t.fast = Some(fast);

    // ── what the machine itself adds to any latency ──
    let k = kernel_floor(25.0, plan.real_secs.min(5.0));
    println!(
        "kernel delivery (a bare receiver spinning on core 0, the camera at the real rate on core 1): \
         stamp → read p50 {:.1} p99 {:.1} max {:.1} µs",
        k.0 / 1e3,
        k.1 / 1e3,
        k.2 / 1e3
    );
    t.kernel = k;
    let n = noise_floor(0, plan.noise_secs);
    println!(
        "machine noise: a thread spinning alone on core 0 for {:.0} s lost the core for >= 20 µs {:.0} times/s \
         (>= 100 µs {:.1}/s, longest {:.0} µs), {:.2} % of the time",
        plan.noise_secs, n.gaps_per_s, n.long_per_s, n.max_us, n.lost_pct
    );
    t.noise = Some(n);

    // ── replay ──
    t.replay = replay_vs_cat(plan.dump_bytes, plan.trials.min(3));
    println!(
        "replay: {:.2} GB of dump; cat {:.2} GB/s, ssdaq-replay {:.2} GB/s (ratio {:.2})",
        t.replay.0 as f64 / 1e9,
        t.replay.1,
        t.replay.2,
        t.replay.2 / t.replay.1
    );
    println!("bench took {:.0} s", started.elapsed().as_secs_f64());
    t.print(plan.quick);
}

// ───────────────────────── measurements ─────────────────────────

/// What a bare `recvmmsg` (batch 64) discard loop does with the datagrams.
#[derive(Clone, Copy)]
struct Bare {
    /// Buffers it rotates through (in order), each `buf_size` bytes.
    buffers: usize,
    buf_size: usize,
    /// Where in a buffer the payload goes.
    offset: usize,
    /// Asks for each sender's address (`msg_name`).
    names: bool,
    /// Asks for each datagram's kernel receive stamp (`SO_TIMESTAMPNS`).
    stamps: bool,
}

impl Bare {
    /// The baseline: 64 buffers of 2 KiB, no addresses.
    const PLAIN: Bare = Bare {
        buffers: 64,
        buf_size: 2048,
        offset: 0,
        names: false,
        stamps: false,
    };
    /// The receive work ssdaqd cannot leave out, with none of the rest: the
    /// sender's address (it names the module), the kernel's receive stamp
    /// (the builder's clock), and the buffer pool of its default
    /// `--buffers 512` (4 KiB each, the payload at `PAYLOAD_OFFSET`). It
    /// still has every buffer in its own cache, where ssdaqd's were last
    /// read by the build core.
    const LIKE_DAEMON: Bare = Bare {
        buffers: 512,
        buf_size: ssdaq::recv::BUF_SIZE,
        offset: ssdaq::recv::PAYLOAD_OFFSET,
        names: true,
        stamps: true,
    };
    /// The same without the receive stamp: paired against `LIKE_DAEMON`, what
    /// the stamp costs.
    const UNSTAMPED: Bare = Bare {
        stamps: false,
        ..Bare::LIKE_DAEMON
    };
}

/// The bare baseline: fill a socket with `n` datagrams from 32 simulated
/// modules while nobody reads, then time a `recvmmsg` (batch 64) discard
/// loop draining it on core 0. Datagrams/s.
fn bare_drain(n: u64, shape: Bare) -> f64 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    force_rcvbuf(&sock, RCVBUF_BYTES);
    if shape.stamps {
        // Before the flood: the kernel stamps datagrams as they arrive.
        set_int_option(&sock, libc::SO_TIMESTAMPNS, 1);
    }
    flood(sock.local_addr().unwrap().port(), n);
    std::thread::sleep(Duration::from_millis(50));
    let fd = sock.as_raw_fd();
    let got = on_core(0, || {
        const B: usize = 64;
        let Bare {
            buffers,
            buf_size,
            offset,
            names,
            stamps,
        } = shape;
        let mut pool = vec![1u8; buffers * buf_size];
        let mut controls = vec![[0u64; 4]; B];
        // SAFETY: sockaddr_in and mmsghdr are plain data; all-zero is a valid value.
        let mut addrs: Vec<libc::sockaddr_in> =
            (0..B).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iov: Vec<libc::iovec> = (0..B)
            .map(|_| libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: buf_size - offset,
            })
            .collect();
        // SAFETY: as above.
        let mut msgs: Vec<libc::mmsghdr> = (0..B).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (((m, v), a), c) in msgs
            .iter_mut()
            .zip(iov.iter_mut())
            .zip(addrs.iter_mut())
            .zip(controls.iter_mut())
        {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            if names {
                m.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
            }
            if stamps {
                m.msg_hdr.msg_control = c.as_mut_ptr().cast();
            }
        }
        let mut next = 0;
        let mut got = 0u64;
        let t0 = Instant::now();
        let mut last = t0;
        while got < n {
            for (j, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
                let at = ((next + j) % buffers) * buf_size + offset;
                v.iov_base = pool[at..].as_mut_ptr().cast();
                if names {
                    m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                }
                if stamps {
                    m.msg_hdr.msg_controllen = std::mem::size_of::<[u64; 4]>();
                }
            }
            // SAFETY: `msgs` points at B iovecs over B disjoint ranges of
            // `pool` (with names, at B sockaddr_in; with stamps, at B
            // 32-byte control areas), all alive here.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    B as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r > 0 {
                got += r as u64;
                next = (next + r as usize) % buffers;
                last = Instant::now();
            } else if last.elapsed() > Duration::from_millis(200) {
                break;
            }
        }
        (got, (last - t0).as_secs_f64())
    });
    assert_eq!(
        got.0, n,
        "the bare loop lost datagrams: raise the socket buffer (needs root)"
    );
    n as f64 / got.1
}

struct Drain {
    rate: f64,
    cpu_ns_per_datagram: f64,
    /// Times receiving waited for the build stage to hand buffers back.
    build_bound: u64,
}

/// The daemon drains a socket filled with `n` datagrams while it was
/// stopped, recording them in a dump at `dump` if given; with guest memory
/// made ready first if `warm` (see [`warm_memory`]).
fn daemon_drain(n: u64, args: &[&str], dump: Option<&Path>, warm: bool) -> Drain {
    daemon_drain_of(&bin("ssdaqd"), n, args, dump, warm)
}

/// [`daemon_drain`] of the ssdaqd binary at `exe`.
fn daemon_drain_of(exe: &Path, n: u64, args: &[&str], dump: Option<&Path>, warm: bool) -> Drain {
    let mut cmd = Ssdaqd::command_of(exe, &["--modules", "0-31"]);
    cmd.args(args);
    cmd.args(["--cores", "0,1", "--rcvbuf", RCVBUF])
        .args(DRAIN_TIMEOUTS);
    if let Some(p) = dump {
        cmd.args(["--dump", p.to_str().unwrap()]);
    }
    let d = Ssdaqd::spawn(cmd);
    d.signal(libc::SIGSTOP);
    flood(d.port, n);
    if warm {
        warm_memory(WARM_BYTES, 1);
    }
    std::thread::sleep(Duration::from_millis(50));
    let cpu0 = d.cpu_ns();
    d.signal(libc::SIGCONT);
    d.wait_idle();
    let cpu = d.cpu_ns() - cpu0;
    let s = d.stop_stats();
    check_no_loss(&s, n, dump.is_some());
    // Arrival stamps are the kernel's (when the flood was sent, before the
    // daemon resumed): the drain runs from the first datagram built. (A
    // build before 0.2 stamped on harvest and did not report that.)
    let first = figure(&s, &["first_built_ns", "first_arrival_ns"]);
    let span = (s["last_built_ns"] - first) as f64 / 1e9;
    Drain {
        rate: n as f64 / span,
        cpu_ns_per_datagram: cpu as f64 / n as f64,
        build_bound: s["build_bound"],
    }
}

/// [`daemon_drain`] with `--metrics` while `scrapers` clients scrape
/// `/metrics` in a loop from before the daemon resumes until it is idle.
/// (The drain, and how many scrapes were answered.)
fn scraped_drain(n: u64, scrapers: usize) -> (Drain, u64) {
    use std::io::{Read, Write};
    let mut cmd = Ssdaqd::command_of(&bin("ssdaqd"), &["--modules", "0-31", "--io", "uring"]);
    cmd.args([
        "--cores",
        "0,1",
        "--rcvbuf",
        RCVBUF,
        "--metrics",
        "127.0.0.1:0",
    ])
    .args(DRAIN_TIMEOUTS);
    let mut d = Ssdaqd::spawn(cmd);
    let addr = d.metrics_addr();
    d.signal(libc::SIGSTOP);
    flood(d.port, n);
    std::thread::sleep(Duration::from_millis(50));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..scrapers)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
                    let mut body = Vec::new();
                    if s.read_to_end(&mut body).is_ok() && body.starts_with(b"HTTP/1.") {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let cpu0 = d.cpu_ns();
    d.signal(libc::SIGCONT);
    // Scraped until every datagram is built (the scrapes keep it from idling).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let Ok(mut c) = std::net::TcpStream::connect(&addr) else {
            continue;
        };
        let _ = c.write_all(b"GET /status HTTP/1.0\r\n\r\n");
        let mut r = String::new();
        let _ = c.read_to_string(&mut r);
        let v: serde_json::Value = r
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or_default();
        if v["stats"]["accepted"].as_u64().unwrap_or(0) >= n && v["pending"] == 0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let scrapes = threads.into_iter().map(|t| t.join().unwrap()).sum();
    d.wait_idle();
    let cpu = d.cpu_ns() - cpu0;
    let s = d.stop_stats();
    check_no_loss(&s, n, false);
    let first = figure(&s, &["first_built_ns", "first_arrival_ns"]);
    let span = (s["last_built_ns"] - first) as f64 / 1e9;
    (
        Drain {
            rate: n as f64 / span,
            cpu_ns_per_datagram: cpu as f64 / n as f64,
            build_bound: s["build_bound"],
        },
        scrapes,
    )
}

/// Where the dump trials write: `SSDAQ_BENCH_DUMP_DIR` (to measure the disk
/// a DAQ would dump to: the figure depends on its filesystem), else a
/// temporary directory.
fn dump_dir() -> PathBuf {
    match std::env::var_os("SSDAQ_BENCH_DUMP_DIR") {
        Some(d) => {
            let d = PathBuf::from(d).join(format!("ssdaq-bench-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap_or_else(|e| {
                panic!("SSDAQ_BENCH_DUMP_DIR: cannot create {}: {e}", d.display())
            });
            d
        }
        None => tmpdir("dump"),
    }
}

/// The filesystem `dir` is on, by its statfs magic.
fn fs_name(dir: &Path) -> &'static str {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "unknown";
    };
    // SAFETY: `libc::statfs` is plain data, for which all-zero bytes are a
    // valid value; statfs(2) fills it in from a NUL-terminated path.
    let (rc, st) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st), st)
    };
    if rc != 0 {
        return "unknown";
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    match st.f_type as u64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        _ => "other",
    }
}

/// Memory touched and freed before a dump trial: more than the few windows
/// of page cache a dump holds at once.
const WARM_BYTES: usize = 64 << 20;

/// Touches `bytes` of memory from `core` and frees it again.
///
/// On these VMs the host takes freed guest memory back after ~2 s
/// (virtio-balloon free page reporting), and touching such memory again
/// costs the host a fault: populating a dump's page cache measured ~10 µs
/// per 4 KiB page on such memory against ~0.6 µs once backed. A long run
/// recycles the page cache its dump drops behind it; a trial of a fresh
/// daemon would instead spend its first ~24 MiB on taken-back memory. Made
/// ready just before the trial (on the core of the dump's helper), the
/// memory those first windows get is backed, as in a long run.
fn warm_memory(bytes: usize, core: usize) {
    on_core(core, || {
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked before use and unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap for warming memory");
        // SAFETY: `p` is our mapping of `bytes` bytes; MADV_HUGEPAGE
        // only changes how it is backed, writing one byte per page
        // stays inside it, and it is unmapped exactly once.
        unsafe {
            libc::madvise(p, bytes, libc::MADV_HUGEPAGE);
            for off in (0..bytes).step_by(4096) {
                p.cast::<u8>().add(off).write_volatile(1);
            }
            libc::munmap(p, bytes);
        }
    });
}

/// The drain with one subscriber: events/s it receives, all of them.
fn e2e_drain(n: u64) -> f64 {
    let mut cmd = daemon_cmd(&[]);
    // A queue deep enough for the whole burst: this measures throughput.
    cmd.args(["--cores", "0,1", "--rcvbuf", RCVBUF, "--hwm", "100000"])
        .args(DRAIN_TIMEOUTS);
    let mut d = Ssdaqd::spawn(cmd);
    let expected = n * 10 / 32;
    let endpoint = d.endpoint.clone();
    let (ready_tx, ready_rx) = channel();
    let sub = std::thread::spawn(move || {
        let mut l = EventListener::connect(&endpoint).unwrap();
        ready_tx.send(()).unwrap();
        let (mut first, mut last) = (None, Instant::now());
        while l.received() < expected {
            match l.recv(Duration::from_secs(10)).unwrap() {
                Some(_) => {
                    last = Instant::now();
                    first.get_or_insert(last);
                }
                None => break,
            }
        }
        (
            l.received(),
            l.missed(),
            (last - first.unwrap_or(last)).as_secs_f64(),
        )
    });
    ready_rx.recv().unwrap();
    d.wait_for("subscriber joined");
    d.signal(libc::SIGSTOP);
    flood(d.port, n);
    std::thread::sleep(Duration::from_millis(50));
    d.signal(libc::SIGCONT);
    let (got, missed, secs) = sub.join().unwrap();
    let s = d.stop_stats();
    check_no_loss(&s, n, false);
    assert_eq!(
        (got, missed),
        (expected, 0),
        "the subscriber must get every event"
    );
    got as f64 / secs
}

/// A bare ZeroMQ PUB→SUB of `m` 16 920-byte messages: messages/s received.
fn bare_pubsub(m: u64) -> f64 {
    let ctx = zmq::Context::new();
    let publ = ctx.socket(zmq::PUB).unwrap();
    publ.set_sndhwm(0).unwrap();
    publ.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = publ.get_last_endpoint().unwrap().unwrap();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_rcvhwm(0).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.connect(&endpoint).unwrap();
    // Wait until the subscription is in place: probe until one arrives.
    let probe = [0u8; 8];
    loop {
        publ.send(&probe[..], 0).unwrap();
        if sub.poll(zmq::POLLIN, 10).unwrap() > 0 {
            while sub.recv_bytes(zmq::DONTWAIT).is_ok() {}
            break;
        }
    }
    let reader = std::thread::spawn(move || {
        let (mut n, mut first, mut last) = (0u64, None, Instant::now());
        while n < m {
            let msg = sub.recv_bytes(0).unwrap();
            if msg.len() == 16_920 {
                n += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
        }
        n as f64 / (last - first.unwrap()).as_secs_f64()
    });
    let msg = vec![7u8; 16_920];
    for _ in 0..m {
        publ.send(&msg[..], 0).unwrap();
    }
    reader.join().unwrap()
}

#[derive(Clone, Debug, Default)]
struct Paced {
    /// ssdaqd's own latency: it read the datagram that completed an event →
    /// handed to ZeroMQ (a build before 0.2 stamped arrival on reading, so
    /// its arrival→zmq is the same figure).
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    n: u64,
    /// End to end from the kernel's receive stamp, p50 / p99.
    e2e_p50: f64,
    e2e_p99: f64,
    /// Kernel stamp → ssdaqd read it (every datagram), p99.
    socket_p99: f64,
    cpu_pct: f64,
    cpu_ns_per_datagram: f64,
    rss_start_mib: f64,
    rss_peak_mib: f64,
    all_complete: bool,
}

/// The daemon fed by the paced simulator (32 modules) for `secs`.
fn paced(rate: f64, secs: f64, args: &[&str]) -> Paced {
    paced_of(&bin("ssdaqd"), rate, secs, args)
}

/// [`paced`] with the ssdaqd binary at `exe`.
fn paced_of(exe: &Path, rate: f64, secs: f64, args: &[&str]) -> Paced {
    let mut cmd = Ssdaqd::command_of(exe, &["--modules", "0-31"]);
    cmd.args(args);
    let d = Ssdaqd::spawn(cmd);
    std::thread::sleep(Duration::from_millis(300));
    let rss_start = d.rss_kib("VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = SimConfig {
        target: SocketAddr::from((Ipv4Addr::LOCALHOST, d.port)),
        modules: 32,
        rate,
        duration: Some(Duration::from_secs_f64(secs)),
        // A camera's clock is not locked to this host's timer tick: each
        // frame goes out up to a tick period (4 ms at 250 Hz) late, at most
        // half a frame period. Without it every burst ended at the same
        // phase of the tick, and one phase took 2.4 % of the bursts
        // (sim::SimConfig::send_jitter).
        send_jitter: Duration::from_secs_f64(0.004f64.min(0.5 / rate)),
        ..Default::default()
    };
    let s2 = stop.clone();
    // With the daemon pinned, the camera stays off its receive core.
    let pinned = args.contains(&"--cores");
    let sender = std::thread::spawn(move || {
        if pinned {
            core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
        }
        sim::run(&cfg, &s2).unwrap()
    });
    // CPU over the steady part: after 1 s, until the end.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, t0) = (d.cpu_ns(), Instant::now());
    let stats = sender.join().unwrap();
    let (cpu1, wall) = (d.cpu_ns(), t0.elapsed().as_secs_f64());
    let rss_peak = d.rss_kib("VmHWM");
    let s = d.stop_stats();
    let sent = stats.sent();
    check_no_loss(&s, sent, false);
    let q = |k: &str| {
        let own = format!("read_to_zmq_{k}");
        let old = format!("arrival_to_zmq_{k}");
        figure(&s, &[own.as_str(), old.as_str()]) as f64
    };
    let kernel = |k: &str| s.get(k).map_or(f64::NAN, |&v| v as f64);
    Paced {
        p50: q("p50"),
        p99: q("p99"),
        p999: q("p999"),
        max: q("max"),
        n: q("n") as u64,
        e2e_p50: kernel("arrival_to_zmq_p50"),
        e2e_p99: kernel("arrival_to_zmq_p99"),
        socket_p99: kernel("arrival_to_read_p99"),
        cpu_pct: 100.0 * (cpu1 - cpu0) as f64 / 1e9 / wall,
        cpu_ns_per_datagram: (cpu1 - cpu0) as f64 / (rate * 32.0 * wall),
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_peak_mib: rss_peak as f64 / 1024.0,
        all_complete: s["partial"] == 0 && s["events"] == sent * 10 / 32,
    }
}

/// Writes a dump of `bytes` (the simulator's camera), then times `cat` and
/// `ssdaq-replay` on it from page cache. (bytes, cat GB/s, replay GB/s).
fn replay_vs_cat(bytes: u64, trials: usize) -> (u64, f64, f64) {
    let dir = tmpdir("replay");
    let path = dir.join("bench.raw");
    let stats = Arc::new(DumpStats::default());
    let info = vec![("modules".to_string(), "0-31".to_string())];
    let cfg = DumpConfig {
        path: path.clone(),
        max_file_size: 2 * bytes + (64 << 20),
        chunk_size: 64 << 20,
        info,
        helper_core: None,
        run: None,
    };
    let mut w = DumpWriter::create(&cfg, stats.clone()).unwrap();
    let (spacing, t0) = (4_000_000u64, 1_700_000_000_000_000_000u64);
    let mut buf = Vec::new();
    let mut frame = 0u64;
    while stats.bytes.load(Ordering::Relaxed) < bytes {
        for m in 0..32u8 {
            sim::datagram(1, m, t0 + frame * 10 * spacing, spacing, 10, &mut buf);
            let src = std::net::SocketAddrV4::new(
                ssdaq::packet::module_addr(Ipv4Addr::LOCALHOST, m),
                40_000,
            );
            w.append(
                1_000_000_000 + frame * 40_000_000 + m as u64 * 1_000,
                src,
                false,
                &buf,
            );
        }
        frame += 1;
    }
    w.finish();
    let len = std::fs::metadata(&path).unwrap().len();
    let time = |cmd: &mut Command| {
        let t = Instant::now();
        let out = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed().as_secs_f64()
    };
    time(Command::new("cat").arg(&path)); // page cache warm
    let (mut cat, mut rep) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        cat.push(len as f64 / time(Command::new("cat").arg(&path)) / 1e9);
        rep.push(len as f64 / time(Command::new(bin("ssdaq-replay")).arg(&path)) / 1e9);
    }
    let _ = std::fs::remove_dir_all(&dir);
    (len, median(&cat), median(&rep))
}

/// How this machine interrupts a thread that never sleeps.
#[derive(Clone, Copy, Debug, Default)]
struct Noise {
    /// Times per second the thread lost its core for at least 20 µs.
    gaps_per_s: f64,
    /// … for at least 100 µs.
    long_per_s: f64,
    /// The longest gap, µs.
    max_us: f64,
    /// Share of the time it did not run, %.
    lost_pct: f64,
}

/// The kernel's own delivery time: a receiver with nothing else to do
/// (recvmmsg, spinning on core 0) while the paced camera sends at `rate`
/// from core 1; (p50, p99, max) ns from the kernel's receive stamp to the
/// read. What ssdaqd's arrival→read cannot go below on this machine.
fn kernel_floor(rate: f64, secs: f64) -> (f64, f64, f64) {
    use ssdaq::recv::{BATCH, IoMode, PacketPool, Receiver, bind_udp};
    let (sock, _) = bind_udp("127.0.0.1:0".parse().unwrap(), 16 << 20).unwrap();
    let mut rx = Receiver::new(sock, PacketPool::new(512), IoMode::Recvmmsg).unwrap();
    let port = rx.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let cfg = SimConfig {
        target: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        modules: 32,
        rate,
        duration: Some(Duration::from_secs_f64(secs)),
        send_jitter: Duration::from_secs_f64(0.004f64.min(0.5 / rate)),
        ..Default::default()
    };
    let sender = std::thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
        let r = sim::run(&cfg, &AtomicBool::new(false));
        s2.store(true, Ordering::Relaxed);
        r.unwrap()
    });
    let mut waits = on_core(0, || {
        let mut out = Vec::with_capacity(BATCH);
        let mut waits = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            out.clear();
            let _ = rx.recv(&mut out, Duration::ZERO);
            for m in out.drain(..) {
                waits.push(m.read_ns.saturating_sub(m.arrival_ns) as f64);
                rx.release(m.buf);
            }
        }
        waits
    });
    sender.join().unwrap();
    waits.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (q(0.5), q(0.99), waits.last().copied().unwrap_or(f64::NAN))
}

/// Spins on `core` for `secs` reading the clock, and records every gap
/// between two readings: the time the core was taken away (by interrupts,
/// the kernel, or on a VM the host). The floor under any latency measured
/// on this machine: with `--busy-poll` ssdaqd does exactly this between
/// bursts, and a gap that falls between the last datagram of a readout and
/// its events adds to their latency.
fn noise_floor(core: usize, secs: f64) -> Noise {
    on_core(core, || {
        let start = Instant::now();
        let end = Duration::from_secs_f64(secs);
        let (mut prev, mut lost) = (Duration::ZERO, Duration::ZERO);
        let (mut gaps, mut long, mut max) = (0u64, 0u64, Duration::ZERO);
        loop {
            let t = start.elapsed();
            let gap = t - prev;
            prev = t;
            if gap >= Duration::from_micros(1) {
                lost += gap;
                gaps += (gap >= Duration::from_micros(20)) as u64;
                long += (gap >= Duration::from_micros(100)) as u64;
                max = max.max(gap);
            }
            if t >= end {
                break;
            }
        }
        let secs = prev.as_secs_f64();
        Noise {
            gaps_per_s: gaps as f64 / secs,
            long_per_s: long as f64 / secs,
            max_us: max.as_secs_f64() * 1e6,
            lost_pct: 100.0 * lost.as_secs_f64() / secs,
        }
    })
}

// ───────────────────────── helpers ─────────────────────────

/// The simulator's flood mode: `n` datagrams (10 readouts) from 32 modules,
/// in camera order (every module's datagram of a frame, then the next
/// frame: `batch: 1`). With sendmmsg batches of 32 per module, 320 events
/// would be in flight at once (5.4 MB of slots, far beyond L2) and building
/// cost ~2.5 µs instead of ~1 µs per datagram: measured. A camera's modules
/// send each frame together; the drain method does not depend on the
/// sender's speed.
fn flood(port: u16, n: u64) {
    let cfg = SimConfig {
        target: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        modules: 32,
        flood: true,
        batch: 1,
        count: Some(n / 32),
        ..Default::default()
    };
    // Sent from the receiving core: the kernel frees a datagram's buffers on
    // the core that allocated them, and that work must not land on the build
    // stage's core (nor be done for free by an idle core for the bare loop).
    let stats = on_core(0, || sim::run(&cfg, &AtomicBool::new(false)).unwrap());
    assert_eq!(stats.sent(), n / 32 * 32);
}

/// Runs `f` on a thread pinned to `core` and returns what it returns.
fn on_core<T: Send>(core: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
            f()
        })
        .join()
        .unwrap()
    })
}

fn force_rcvbuf(sock: &UdpSocket, bytes: usize) {
    set_int_option(sock, libc::SO_RCVBUFFORCE, bytes as libc::c_int);
}

/// Sets an integer `SOL_SOCKET` option on `sock`.
fn set_int_option(sock: &UdpSocket, option: libc::c_int, v: libc::c_int) {
    // SAFETY: setsockopt with a valid int option value on our own socket.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// This build's ssdaqd against the one at `base`, each trial between two of
/// the other's: capacity (`--io uring` drain), and latency p99 at the real
/// rate (pinned) and at 100×. Printed; a change that claims "no regression"
/// quotes these ratios.
fn against_baseline(base: &Path, plan: &BenchPlan) {
    let n = plan.drain_n;
    let (mut cpu_base, mut cpu_this) = (Vec::new(), Vec::new());
    // A build before 0.2 also needs --max-jump >= --module-timeout.
    let help = std::process::Command::new(base).arg("--help").output();
    let old = help.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--max-jump"));
    let base_args: &[&str] = if old {
        &["--io", "uring", "--max-jump", "60"]
    } else {
        &["--io", "uring"]
    };
    let cap = Pair::measure(
        plan.trials,
        || {
            let d = daemon_drain_of(base, n, base_args, None, false);
            cpu_base.push(d.cpu_ns_per_datagram);
            d.rate
        },
        |_| {
            let d = daemon_drain(n, &["--io", "uring"], None, false);
            cpu_this.push(d.cpu_ns_per_datagram);
            d.rate
        },
    );
    println!(
        "against {}: capacity --io uring {:.3} / {:.3} Mpps, ratio {:.2} (per trial {}); \
         CPU per datagram {:.0} / {:.0} ns, ratio {:.3}",
        base.display(),
        cap.daemon() / 1e6,
        cap.bare() / 1e6,
        cap.ratio(),
        cap.trials(),
        median(&cpu_this),
        median(&cpu_base),
        median(&cpu_this) / median(&cpu_base),
    );
    let trials = plan.trials.min(5);
    for (label, rate, secs, args) in [
        (
            "real rate, --cores",
            25.0,
            plan.real_secs / 2.0,
            &["--cores", "0,1"][..],
        ),
        ("100×", 2500.0, plan.fast_secs / 2.0, &[][..]),
    ] {
        let p99 = Pair::measure(
            trials,
            || paced_of(base, rate, secs, args).p99,
            |_| paced(rate, secs, args).p99,
        );
        println!(
            "against {}: latency p99 at the {label} {:.1} / {:.1} µs, ratio {:.2} (per trial {})",
            base.display(),
            p99.daemon() / 1e3,
            p99.bare() / 1e3,
            p99.ratio(),
            p99.trials()
        );
    }
}

/// The first of the figures `keys` the stats line has (names changed
/// between builds).
fn figure(s: &Stats, keys: &[&str]) -> u64 {
    keys.iter()
        .find_map(|k| s.get(*k).copied())
        .unwrap_or_else(|| panic!("none of {keys:?} in {s:?}"))
}

fn check_no_loss(s: &Stats, n: u64, dump: bool) {
    assert_eq!(s["kernel_drops"], 0, "kernel drops: {s:?}");
    assert_eq!(s["received"], n, "datagrams received: {s:?}");
    assert_eq!(s["accepted"], n, "datagrams built: {s:?}");
    assert_eq!(
        figure(s, &["hwm_overflows", "hwm_drops"]) + s["publish_errors"],
        0,
        "publish drops: {s:?}"
    );
    if dump {
        assert_eq!((s["dump_records"], s["dump_lost"]), (n, 0), "dump: {s:?}");
    }
}

fn daemon_cmd(args: &[&str]) -> Command {
    let mut c = Ssdaqd::command(&["--modules", "0-31"]);
    c.args(args);
    c
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Trials of the daemon, each measured between two baseline trials: a
/// trial's ratio is its figure over the mean of the baselines just before
/// and just after it, and the ratio reported is the median over trials, so
/// a machine whose speed drifts during the run (these VMs move by ±30 %
/// from one minute to the next) skews neither.
#[derive(Default)]
struct Pair {
    /// One more than `daemon`: baseline 0, trial 0, baseline 1, … baseline n.
    bare: Vec<f64>,
    daemon: Vec<f64>,
}

impl Pair {
    fn measure(
        n: usize,
        mut bare: impl FnMut() -> f64,
        mut daemon: impl FnMut(usize) -> f64,
    ) -> Pair {
        let mut p = Pair {
            bare: vec![bare()],
            daemon: Vec::with_capacity(n),
        };
        for i in 0..n {
            p.daemon.push(daemon(i));
            p.bare.push(bare());
        }
        p
    }
    fn bare(&self) -> f64 {
        median(&self.bare)
    }
    fn daemon(&self) -> f64 {
        median(&self.daemon)
    }
    fn ratios(&self) -> Vec<f64> {
        self.daemon
            .iter()
            .zip(self.bare.windows(2))
            .map(|(d, b)| d / ((b[0] + b[1]) / 2.0))
            .collect()
    }
    fn ratio(&self) -> f64 {
        median(&self.ratios())
    }
    fn trials(&self) -> String {
        self.ratios()
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Default)]
struct Table {
    capacity: Vec<(&'static str, Pair)>,
    /// [`Bare::LIKE_DAEMON`] against [`Bare::PLAIN`].
    receive_work: Pair,
    /// [`Bare::LIKE_DAEMON`] against [`Bare::UNSTAMPED`].
    stamps: Pair,
    dump: Pair,
    /// The filesystem the dump trials wrote to.
    dump_fs: &'static str,
    e2e: Pair,
    real: Option<Paced>,
    real_pinned: Option<Paced>,
    real_polled: Option<Paced>,
    /// [`kernel_floor`]: (p50, p99, max) ns.
    kernel: (f64, f64, f64),
    fast: Option<Paced>,
    noise: Option<Noise>,
    replay: (u64, f64, f64),
}

impl Table {
    fn print(&self, quick: bool) {
        let real = self.real.clone().unwrap_or_default();
        let pinned = self.real_pinned.clone().unwrap_or_default();
        let polled = self.real_polled.clone().unwrap_or_default();
        let fast = self.fast.clone().unwrap_or_default();
        let cap = |l: &str| {
            self.capacity
                .iter()
                .find(|c| c.0 == l)
                .map_or(0.0, |c| c.1.ratio())
        };
        let ok = |b: bool| if b { "ok" } else { "MISSED" };
        println!();
        println!("| figure | measured | target | |");
        println!("|---|---|---|---|");
        for (label, p) in &self.capacity {
            println!(
                "| capacity, --io {label} | {:.2} × bare recvmmsg ({:.2} / {:.2} Mpps) | ≥ 0.9 | {} |",
                p.ratio(),
                p.daemon() / 1e6,
                p.bare() / 1e6,
                ok(p.ratio() >= 0.9)
            );
        }
        println!(
            "| (ceiling: the bare loop doing ssdaqd's receive work, source addresses, receive stamps and its buffer pool) | {:.2} × bare recvmmsg | — | |",
            self.receive_work.ratio()
        );
        println!(
            "| (of which the receive stamps) | {:.3} × the same loop without | — | |",
            self.stamps.ratio()
        );
        let dump_ratio = self.dump.ratio();
        println!(
            "| capacity with --dump, on {} | {dump_ratio:.2} × bare ({:.2} Mpps) | ≥ 0.8 | {} |",
            self.dump_fs,
            self.dump.daemon() / 1e6,
            ok(dump_ratio >= 0.8)
        );
        let e2e = self.e2e.ratio();
        println!(
            "| end to end, one subscriber | {e2e:.2} × bare PUB→SUB ({:.0} / {:.0} events/s) | ≥ 0.8 | {} |",
            self.e2e.daemon(),
            self.e2e.bare(),
            ok(e2e >= 0.8)
        );
        println!(
            "| p99 latency, real rate, --cores 0,1 --busy-poll (receive core at 100 %) | {:.1} µs (p50 {:.1}) | ≤ 20 µs | {} |",
            polled.p99 / 1e3,
            polled.p50 / 1e3,
            ok(polled.p99 <= 20e3)
        );
        println!(
            "| p99 latency, real rate, --cores 0,1 sleeping ({:.2} % CPU) | {:.1} µs (p50 {:.1}) | ≤ 20 µs | {} |",
            pinned.cpu_pct,
            pinned.p99 / 1e3,
            pinned.p50 / 1e3,
            ok(pinned.p99 <= 20e3)
        );
        println!(
            "| p99 latency, real rate, unpinned (the simulator shares both cores) | {:.1} µs (p50 {:.1}) | — | |",
            real.p99 / 1e3,
            real.p50 / 1e3,
        );
        println!(
            "| p99 latency, 100× | {:.1} µs (p50 {:.1}) | ≤ 200 µs | {} |",
            fast.p99 / 1e3,
            fast.p50 / 1e3,
            ok(fast.p99 <= 200e3)
        );
        println!(
            "| (the rows above: read → ZeroMQ; from the kernel's receive stamp, real rate --cores / busy-poll / 100×) | p99 {:.1} / {:.1} / {:.1} µs | — | |",
            pinned.e2e_p99 / 1e3,
            polled.e2e_p99 / 1e3,
            fast.e2e_p99 / 1e3,
        );
        println!(
            "| (the kernel's delivery, stamp → read, by a bare spinning receiver) | p50 {:.1} p99 {:.1} µs | — | |",
            self.kernel.0 / 1e3,
            self.kernel.1 / 1e3,
        );
        println!(
            "| CPU at the real rate | {:.2} % ({:.2} % with --cores) | ≤ 1 % | {} |",
            real.cpu_pct,
            pinned.cpu_pct,
            ok(real.cpu_pct <= 1.0)
        );
        let noise = self.noise.unwrap_or_default();
        println!(
            "| machine noise floor (a spinning thread loses its core) | >= 20 µs {:.0}/s, >= 100 µs {:.1}/s, {:.2} % of the time | (the machine's) | |",
            noise.gaps_per_s, noise.long_per_s, noise.lost_pct
        );
        let replay = self.replay.2;
        println!(
            "| replay from page cache | {replay:.2} GB/s (cat {:.2} GB/s) | ≥ 1 GB/s | {} |",
            self.replay.1,
            ok(replay >= 1.0)
        );
        let rss = real.rss_peak_mib.max(fast.rss_peak_mib);
        println!(
            "| RSS | start {:.1} MiB, peak {rss:.1} MiB | ≤ 64 MiB | {} |",
            real.rss_start_mib,
            ok(rss <= 64.0)
        );
        println!(
            "RESULT quick={} capacity_ratio={:.3} capacity_recvmmsg_ratio={:.3} receive_work_ratio={:.3} stamps_ratio={:.3} dump_ratio={dump_ratio:.3} dump_fs={} e2e_ratio={e2e:.3} p99_real_us={:.1} p99_real_sleeping_us={:.1} p99_real_unpinned_us={:.1} p99_100x_us={:.1} cpu_real_pct={:.3} replay_gbps={replay:.3} rss_mib={rss:.1} noise_gaps_per_s={:.0}",
            quick as u8,
            cap("uring"),
            cap("recvmmsg"),
            self.receive_work.ratio(),
            self.stamps.ratio(),
            self.dump_fs,
            polled.p99 / 1e3,
            pinned.p99 / 1e3,
            real.p99 / 1e3,
            fast.p99 / 1e3,
            real.cpu_pct,
            noise.gaps_per_s
        );
    }
}
