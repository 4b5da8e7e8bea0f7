//! The real `tm-ss-sim` binary against a UDP receiver on loopback.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ssdaq_wire::packet::{self, module_of, parse};
use tm_ss_sim as sim;

const BIN: &str = env!("CARGO_BIN_EXE_tm-ss-sim");

/// A receiver on 127.0.0.1 with a large queue, drained on its own thread.
struct Receiver {
    port: u16,
    /// Datagrams received so far.
    count: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Ipv4Addr, Vec<u8>)>>,
}

impl Receiver {
    fn start() -> Self {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_recv_buffer_size(8 << 20).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .unwrap();
        let socket = UdpSocket::from(s);
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((n, SocketAddr::V4(src))) => {
                        got.push((*src.ip(), buf[..n].to_vec()));
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => unreachable!("an IPv4 socket"),
                    // The queue is empty: stop once the sender has exited.
                    Err(_) if stop.load(Ordering::Acquire) => return got,
                    Err(_) => {}
                }
            }
        });
        Receiver {
            port,
            count,
            done,
            thread,
        }
    }

    /// Everything received; call after the sender has exited.
    fn finish(self) -> Vec<(Ipv4Addr, Vec<u8>)> {
        self.done.store(true, Ordering::Release);
        self.thread.join().unwrap()
    }
}

/// Runs the simulator to completion with `args`.
fn sim(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running tm-ss-sim")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn three_modules_send_four_verified_datagrams_each() {
    let rx = Receiver::start();
    let target = format!("127.0.0.1:{}", rx.port);
    let out = sim(&[
        "--target",
        &target,
        "--modules",
        "3",
        "--count",
        "4",
        "--rate",
        "200",
        "--seed",
        "7",
    ]);
    let got = rx.finish();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sent 12 datagrams (17280 bytes) from 3 modules"),
        "{}",
        stderr(&out)
    );
    assert_eq!(got.len(), 12);

    let spacing = sim::Grid::new(200.0, 10).spacing_ns();
    assert_eq!(spacing, 500_000);
    let mut by_module: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for (src, d) in &got {
        assert!(
            (100..=102).contains(&src.octets()[3]) && src.is_loopback(),
            "{src}"
        );
        let p = parse(d, false, *src, false).expect("a valid datagram");
        assert_eq!(p.module, module_of(*src, false).unwrap());
        assert_eq!(p.readouts.len(), 10);
        // Every value is the model's at the refresh frame (40 ms of camera
        // time is 8 frames at 200 datagrams/s), at the same readout.
        let first = p.readouts[0].primary_ts();
        let source = sim::refresh_ts(first, 10 * spacing, 40_000_000);
        assert!(first - source < 40_000_000);
        for (j, r) in p.readouts.iter().enumerate() {
            let ts = r.primary_ts();
            assert_eq!(ts % spacing, 0, "on the grid");
            assert_eq!(ts, first + j as u64 * spacing);
            assert_eq!(r.aux_ts(), sim::aux_ts(p.module, ts));
            let model_ts = source + j as u64 * spacing;
            for px in 0..packet::N_PIXELS {
                assert_eq!(r.adc(px), sim::pixel_adc(7, p.module, px, model_ts));
            }
        }
        by_module
            .entry(p.module)
            .or_default()
            .push(p.readouts[0].primary_ts());
    }
    assert_eq!(by_module.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    // The same four consecutive frames from every module.
    let frames = &by_module[&0];
    assert!(frames.windows(2).all(|w| w[1] == w[0] + 10 * spacing));
    assert!(by_module.values().all(|f| f == frames));
}

/// Runs a paced simulation of 2 modules and whether every value of every
/// datagram is the model's at the readout's own timestamp.
fn all_values_exact(args: &[&str]) -> (bool, String) {
    let rx = Receiver::start();
    let target = format!("127.0.0.1:{}", rx.port);
    let mut all = vec!["--target", &target, "--modules", "2", "--seed", "3"];
    all.extend_from_slice(args);
    let out = sim(&all);
    let got = rx.finish();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!got.is_empty());
    let exact = got.iter().all(|(src, d)| {
        let p = parse(d, false, *src, false).expect("a valid datagram");
        p.readouts.iter().all(|r| {
            let ts = r.primary_ts();
            (0..packet::N_PIXELS).all(|px| r.adc(px) == sim::pixel_adc(3, p.module, px, ts))
        })
    });
    (exact, stderr(&out))
}

#[test]
fn every_value_is_exact_at_the_real_rate_or_with_pixel_refresh_0() {
    let (exact, e) = all_values_exact(&["--count", "3"]);
    assert!(exact, "25 datagrams/s: {e}");
    assert!(!e.contains("refreshed"), "{e}");
    let (exact, e) = all_values_exact(&[
        "--count",
        "300",
        "--rate",
        "5000",
        "--pixel-refresh-ms",
        "0",
    ]);
    assert!(exact, "--pixel-refresh-ms 0: {e}");
    // The default at 5000 datagrams/s: 200 frames share the values of the first.
    let (exact, e) = all_values_exact(&["--count", "300", "--rate", "5000"]);
    assert!(!exact, "{e}");
    assert!(
        e.contains("pixel values refreshed every 40 ms of camera time"),
        "{e}"
    );
}

#[test]
fn positional_port_and_host_work_as_in_the_original() {
    let rx = Receiver::start();
    let port = rx.port.to_string();
    let out = sim(&[&port, "127.0.0.1", "--count", "2", "--rate", "1000"]);
    let got = rx.finish();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(src, d)| {
        *src == Ipv4Addr::new(127, 0, 0, 100) && d.len() == 10 * packet::READOUT_SIZE
    }));
}

#[test]
fn a_flood_delivers_count_datagrams_per_module() {
    for extra in [&[][..], &["--gso"][..]] {
        let rx = Receiver::start();
        let target = format!("127.0.0.1:{}", rx.port);
        let mut args = vec![
            "--target",
            &target,
            "--flood",
            "--modules",
            "2",
            "--first-module",
            "30",
            "--count",
            "1500",
        ];
        args.extend_from_slice(extra);
        let out = sim(&args);
        let got = rx.finish();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mut per_source: BTreeMap<Ipv4Addr, Vec<u64>> = BTreeMap::new();
        for (src, d) in &got {
            let p = parse(d, false, *src, false).expect("a valid datagram");
            per_source
                .entry(*src)
                .or_default()
                .push(p.readouts[0].primary_ts());
        }
        let sources: Vec<_> = per_source.keys().map(|a| a.octets()[3]).collect();
        assert_eq!(sources, [130, 131], "{extra:?}");
        for ts in per_source.values() {
            assert_eq!(ts.len(), 1500, "{extra:?}");
            // Every datagram a distinct, later frame.
            assert!(ts.windows(2).all(|w| w[1] > w[0]), "{extra:?}");
        }
        assert_eq!(
            per_source[&Ipv4Addr::new(127, 0, 0, 130)],
            per_source[&Ipv4Addr::new(127, 0, 0, 131)]
        );
    }
}

#[test]
fn faults_are_applied_and_summarised() {
    let rx = Receiver::start();
    let target = format!("127.0.0.1:{}", rx.port);
    let out = sim(&[
        "--target",
        &target,
        "--modules",
        "2",
        "--count",
        "6",
        "--rate",
        "2000",
        "--dead-module",
        "1",
        "--skip",
        "0:2",
        "--malformed-every",
        "3",
        "--ts-jump",
        "0:4:-100000",
    ]);
    let got = rx.finish();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(got.iter().all(|(src, _)| src.octets()[3] == 100));
    let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
    // Frames 0, 1, (2 skipped) + malformed, 3, 4, 5 + malformed.
    assert_eq!(lens, [1440, 1440, 143, 1440, 1440, 1440, 143]);
    let firsts: Vec<u64> = got
        .iter()
        .filter(|(_, d)| d.len() == 1440)
        .map(|(src, d)| parse(d, false, *src, false).unwrap().readouts[0].primary_ts())
        .collect();
    let period = 500_000; // ns between datagrams at 2000 datagrams/s
    assert_eq!(firsts[1] - firsts[0], period);
    assert_eq!(firsts[2] - firsts[1], 2 * period);
    assert_eq!(firsts[3] - firsts[2], period - 100_000);
    let e = stderr(&out);
    assert!(
        e.contains("faults: 7 dropped, 0 duplicated, 2 malformed"),
        "{e}"
    );
    // With faults on, one summary line per module.
    assert!(
        e.lines().any(|l| l
            .split_whitespace()
            .eq(["1", "0", "0", "0", "6", "0", "0", "0", "0"])),
        "{e}"
    );
}

#[test]
fn a_bad_flag_exits_2_with_clap_s_message() {
    let out = sim(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("unexpected argument '--bogus'"), "{e}");
    assert!(e.contains("Usage: tm-ss-sim"), "{e}");
}

#[test]
fn out_of_range_settings_exit_2_naming_the_range() {
    for (args, needle) in [
        (&["--modules", "40"][..], "40 is not in 1..=32"),
        (&["--modules", "0"][..], "0 is not in 1..=32"),
        (
            &["--first-module", "30", "--modules", "3"][..],
            "exceeds the camera's 32 modules",
        ),
        (&["--rate", "0"][..], "must be a positive number"),
        (&["--rate=-5"][..], "must be a positive number"),
        (&["--readouts", "29"][..], "29 is not in 1..=28"),
        (&["--loss", "1.5"][..], "a probability is 0..=1"),
        (&["--skip", "3"][..], "expected MODULE:FRAME"),
        (&["--ts-jump", "0:1"][..], "expected MODULE:FRAME:DELTA_NS"),
        (&["--dead-module", "5"][..], "module 5 is not simulated"),
        (
            &["--stray", "1:3:5"][..],
            "expected MODULE@SECONDS:DELTA_NS",
        ),
        (&["--stray", "0@-1:5"][..], "is not a time in seconds"),
        (
            &["--stray", "0@1:5", "--stray", "0@1:7"][..],
            "one per module and frame",
        ),
        (
            &["--glitch", "0@5:100"][..],
            "expected MODULE@FRAME:DELTA_NS:K",
        ),
        (&["--glitch", "0@5:100:0"][..], "K must be at least 1"),
        (&["--skew", "0"][..], "expected MODULE:NS"),
        (&["--skew", "3:10"][..], "skew: module 3 is not simulated"),
        (&["--gso"][..], "--flood"),
        (
            &["--pixel-refresh-ms=-1"][..],
            "non-negative number of milliseconds",
        ),
        (
            &["--flood", "--pixel-refresh-ms", "5"][..],
            "cannot be used with",
        ),
        (
            &["--flood", "--send-jitter-us", "4000"][..],
            "cannot be used with",
        ),
        (&["--send-jitter-us=-1"][..], "invalid value"),
        (
            &["--target", "192.0.2.1:2009"][..],
            "use --no-bind for a remote target",
        ),
    ] {
        let out = sim(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_unresolvable_host_exits_1_with_one_line() {
    let out = sim(&["--target", "no-such-host.invalid:2009", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.starts_with("tm-ss-sim: cannot resolve target 'no-such-host.invalid:2009'"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn sigterm_ends_the_run_with_a_summary_and_exit_0() {
    let rx = Receiver::start();
    let target = format!("127.0.0.1:{}", rx.port);
    let child = Command::new(BIN)
        .args(["--target", &target, "--rate", "100"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first datagram: the handlers are installed by then.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.count.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no datagram within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let got = rx.finish();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("sent "), "{}", stderr(&out));
    assert!(!got.is_empty());
}
