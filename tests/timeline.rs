//! The camera's timeline under the faults a real camera makes (issue 9):
//! one stray datagram, one module's clock jumping, the whole camera's clock
//! stepping, reordered and duplicated datagrams, a stalled daemon, a
//! stalled subscriber. Real `ssdaqd`, real `tm-ss-sim` (seeded faults) or
//! real datagrams from the modules' loopback addresses, real subscribers.
//! Each test checks that a fault costs only the datagrams it touches and
//! that the counters say exactly which.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ssdaq::event::EventView;
use ssdaq::listen::EventListener;

/// The simulator's frame rate in these tests: 10× the real camera.
const RATE: &str = "250";

/// Runs a 32-module `tm-ss-sim` against `port` for `frames` frames (at 10×
/// the real rate, every pixel value exact) with `faults`; returns its summary.
fn simulate(port: u16, frames: u64, faults: &[String]) -> String {
    let out = Command::new(bin("tm-ss-sim"))
        .args([
            &port.to_string(),
            "localhost",
            "--modules",
            "32",
            "--rate",
            RATE,
        ])
        .args(["--count", &frames.to_string(), "--pixel-refresh-ms", "0"])
        .args(["--seed", &SEED.to_string()])
        .args(faults)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tm-ss-sim failed: {err}");
    err
}

/// Every event the subscriber gets until none comes for half a second.
fn drain(sub: &mut EventListener) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(ev) = sub.recv(Duration::from_millis(500)).unwrap() {
        out.push(ev.bytes().to_vec());
    }
    out
}

/// The figure `key` of the simulator's summary line `faults: …`, e.g.
/// `duplicated`.
fn sim_fault(summary: &str, key: &str) -> u64 {
    let line = summary.lines().find(|l| l.contains("faults:")).unwrap();
    let words: Vec<&str> = line.split([',', ';', ':']).collect();
    words
        .iter()
        .find_map(|w| {
            let w = w.trim();
            w.strip_suffix(key).and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// Checks that the events hold exactly the simulated readouts: one event
/// per camera readout (`frames` × 10), consecutive numbers, and in each the
/// modules of `expected(frame)`, each row the simulator's values at its own
/// timestamp, all timestamps of an event equal.
fn check_events(events: &[Vec<u8>], frames: u64, expected: impl Fn(u64) -> u32) {
    assert_eq!(events.len() as u64, frames * 10, "one event per readout");
    for (i, bytes) in events.iter().enumerate() {
        let v = EventView::parse(bytes).unwrap();
        assert_eq!(v.number(), i as u64 + 1, "consecutive numbers");
        let f = i as u64 / 10;
        assert_eq!(
            v.present_mask(),
            expected(f),
            "event {} (frame {f}): modules {:b}",
            v.number(),
            v.present_mask()
        );
        for m in 0..32u8 {
            match v.module_timestamps(m as usize) {
                Some((ts, _)) if ts != 0 => {
                    assert_eq!(ts, v.timestamp(), "event {} module {m}", v.number());
                    assert_module(&v, m, ts);
                }
                _ => assert_missing(&v, m),
            }
        }
    }
}

const ALL: u32 = u32::MAX;

/// Queues deep enough that a subscriber reading only after the run (as
/// `drain` does) misses nothing however slowly a loaded machine lets it run.
const DEEP: &[&str] = &["--hwm", "20000"];

#[test]
fn one_stray_datagram_costs_only_itself() {
    // Before: a datagram stamped 8 s ahead blacked out the camera for 8 s.
    let mut d = Ssdaqd::start(DEEP);
    let mut sub = d.subscribe();
    let sim = simulate(d.port, 400, &["--stray".into(), "1@0.8:8000000000".into()]);
    assert_eq!(sim_fault(&sim, "strays"), 1, "{sim}");
    let events = drain(&mut sub);
    let s = d.stop_stats();
    check_events(&events, 400, |_| ALL);
    assert_eq!(
        (s["out_of_sync"], s["out_of_sync_readouts"]),
        (1, 10),
        "{s:?}"
    );
    assert_eq!(
        (s["late"], s["duplicate"], s["partial"]),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s["all_modules"], 4000, "{s:?}");

    // The same from a stray host, 127.0.0.1 (the last-octet rule takes it
    // for module 1), between two frames of a camera sending by hand.
    let mut d = Ssdaqd::start(DEEP);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    for f in 0..40 {
        for m in 0..32 {
            cam.send(m, f);
        }
        if f == 20 {
            let ahead: Vec<u8> = Camera::datagram(1, f + 200); // 8 s ahead
            cam.send_from(Ipv4Addr::new(127, 0, 0, 1), &ahead);
        }
    }
    let events = receive(&mut sub, 400);
    let s = d.stop_stats();
    for (i, bytes) in events.iter().enumerate() {
        let v = EventView::parse(bytes).unwrap();
        let ts = Camera::ts(i as u64 / 10, i as u64 % 10);
        assert_eq!((v.number(), v.timestamp()), (i as u64 + 1, ts));
        for m in 0..32 {
            assert_module(&v, m, ts);
        }
    }
    assert_eq!((s["events"], s["all_modules"]), (400, 400), "{s:?}");
    assert_eq!(
        (s["out_of_sync"], s["out_of_sync_readouts"]),
        (1, 10),
        "{s:?}"
    );
    assert_eq!((s["late"], s["duplicate"]), (0, 0), "{s:?}");
}

#[test]
fn a_module_whose_clock_jumps_costs_only_its_own_datagrams_and_is_reported_once() {
    // Before: module 5 running 3 s ahead cost 61 070 of 96 000 readouts; one
    // running behind was waited for, in vain, by every event.
    const FRAMES: u64 = 300;
    let cases: Vec<(&str, Vec<String>, u64)> = vec![
        (
            "3 s ahead",
            vec!["--ts-jump".into(), "5:100:3000000000".into()],
            200,
        ),
        (
            "100 ms ahead",
            vec!["--ts-jump".into(), "5:100:100000000".into()],
            200,
        ),
        (
            "100 ms behind",
            vec!["--ts-jump".into(), "5:100:-100000000".into()],
            200,
        ),
        (
            "3 s behind",
            vec!["--ts-jump".into(), "5:100:-3000000000".into()],
            200,
        ),
        (
            "a glitch of 3",
            vec!["--glitch".into(), "5@100:3000000000:3".into()],
            3,
        ),
    ];
    // One case at a time: five daemons and five cameras at once on two
    // cores (a debug build in CI) delayed a frame's last modules past the
    // event timeout, a partial event that has nothing to do with clocks.
    for (name, faults, lost) in cases {
        let (events, status, log) = {
            let mut d = Ssdaqd::start(DEEP);
            let mut sub = d.subscribe();
            simulate(d.port, FRAMES, &faults);
            let events = drain(&mut sub);
            let (status, log) = d.stop();
            (events, status, log)
        };
        assert!(status.success(), "{name}: {log}");
        let bad = 100..100 + lost;
        check_events(&events, FRAMES, |f| {
            if bad.contains(&f) {
                ALL & !(1 << 5)
            } else {
                ALL
            }
        });
        let stats = stats_of(&log);
        assert_eq!(
            (stats["out_of_sync"], stats["out_of_sync_readouts"]),
            (lost, 10 * lost),
            "{name}: exactly module 5's bad datagrams: {log}"
        );
        // Not waited for while off the timeline: no event went out partial.
        assert_eq!(
            (stats["partial"], stats["late"], stats["duplicate"]),
            (0, 0, 0),
            "{name}: {log}"
        );
        let reports = log.matches("module 5: its timestamps are").count();
        assert_eq!(reports, 1, "{name}: logged once: {log}");
        assert!(log.contains("timeline: 5 (1×)"), "{name}: {log}");
        assert!(
            !log.contains("no usable datagram") && !log.contains("silent"),
            "off the timeline is not silent: {log}"
        );
    }
}

#[test]
fn a_camera_wide_clock_step_is_followed_and_loses_nothing() {
    // Before: a step back of 5 s lost 5 s of data as "late".
    const FRAMES: u64 = 300;
    // One at a time, as above: parallel runs on two cores lose to load.
    for delta in ["-5000000000", "7000000000", "-1000000000000"] {
        let (events, status, log) = {
            let mut d = Ssdaqd::start(DEEP);
            let mut sub = d.subscribe();
            let faults: Vec<String> = (0..32)
                .flat_map(|m| ["--ts-jump".to_string(), format!("{m}:100:{delta}")])
                .collect();
            simulate(d.port, FRAMES, &faults);
            let events = drain(&mut sub);
            let (status, log) = d.stop();
            (events, status, log)
        };
        assert!(status.success(), "{delta}: {log}");
        check_events(&events, FRAMES, |_| ALL);
        let s = stats_of(&log);
        assert_eq!(s["clock_steps"], 1, "{delta}: {log}");
        assert_eq!(
            (s["out_of_sync"], s["late"], s["duplicate"], s["partial"]),
            (0, 0, 0, 0),
            "{delta}: {log}"
        );
        assert!(log.contains("the camera's clock stepped"), "{delta}: {log}");
        // The events follow the new timeline from frame 100 on.
        let ts = |i: usize| EventView::parse(&events[i]).unwrap().timestamp();
        let step = ts(1000) as i128 - ts(999) as i128;
        let spacing = 4_000_000 / 10;
        assert_eq!(step - spacing, delta.parse::<i128>().unwrap(), "{delta}");
    }
}

#[test]
fn reordered_and_duplicated_datagrams_are_all_built_and_duplicates_counted_as_such() {
    // Before: ~3 % of swapped pairs lost the earlier datagram, and copies of
    // datagrams already built were counted late.
    const FRAMES: u64 = 300;
    // A grace of 20 ms, not the default 2: on a loaded CI machine the sender
    // can be descheduled between the two datagrams of a pair (measured up to
    // 8 ms); a later swap would rightly count as late. The default is
    // checked in the builder's own tests.
    const GRACE: &[&str] = &["--reorder-ns", "20000000", "--hwm", "20000"];
    let mut d = Ssdaqd::start(GRACE);
    let mut sub = d.subscribe();
    let sim = simulate(
        d.port,
        FRAMES,
        &[
            "--reorder-every".into(),
            "2".into(),
            "--duplicate-every".into(),
            "3".into(),
        ],
    );
    let dups = sim_fault(&sim, "duplicated");
    assert_eq!(dups, 32 * FRAMES / 3, "{sim}");
    let events = drain(&mut sub);
    let s = d.stop_stats();
    check_events(&events, FRAMES, |_| ALL);
    assert_eq!((s["late"], s["duplicate"]), (0, 10 * dups), "{s:?}");
    assert_eq!((s["out_of_sync"], s["partial"]), (0, 0), "{s:?}");

    // Every datagram sent twice, modules in a shuffled order, and each pair
    // of a module's datagrams swapped: before, 170 of 500 readouts were
    // never published.
    let mut d = Ssdaqd::start(GRACE);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    let mut order: Vec<u8> = (0..32).collect();
    let mut rng = 0x5eed_u64;
    for pair in 0..25 {
        for i in (1..order.len()).rev() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (rng >> 33) as usize % (i + 1));
        }
        for &m in &order {
            let (a, b) = (2 * pair, 2 * pair + 1);
            for f in [b, b, a, a] {
                cam.send(m, f);
            }
        }
    }
    let events = receive(&mut sub, 500);
    let s = d.stop_stats();
    for (i, bytes) in events.iter().enumerate() {
        let v = EventView::parse(bytes).unwrap();
        let ts = Camera::ts(i as u64 / 10, i as u64 % 10);
        assert_eq!((v.number(), v.timestamp()), (i as u64 + 1, ts));
        for m in 0..32 {
            assert_module(&v, m, ts);
        }
    }
    assert_eq!((s["events"], s["all_modules"]), (500, 500), "{s:?}");
    assert_eq!((s["late"], s["duplicate"]), (0, 32 * 500), "{s:?}");
}

#[test]
fn a_stalled_daemon_builds_its_backlog_whole_and_in_order() {
    // Before: after SIGSTOP the backlog looked like a silent camera, the
    // expected set was reset and one camera timestamp was published twice.
    const FRAMES: u64 = 1000; // 4 s at 10× the real rate
    let mut d = Ssdaqd::start(&["--hwm", "20000"]);
    let mut sub = d.subscribe();
    let collector = std::thread::spawn(move || {
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while out.len() < FRAMES as usize * 10 && Instant::now() < deadline {
            if let Some(ev) = sub.recv(Duration::from_millis(100)).unwrap() {
                out.push(ev.bytes().to_vec());
            }
        }
        (out, sub.missed())
    });
    let port = d.port;
    let sim = std::thread::spawn(move || simulate(port, FRAMES, &[]));
    std::thread::sleep(Duration::from_millis(1000));
    d.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(2000));
    d.signal(libc::SIGCONT);
    sim.join().unwrap();
    let (events, missed) = collector.join().unwrap();
    let s = d.stop_stats();
    // 2 s of the camera waited in the socket (128 MiB): nothing is lost.
    assert_eq!(s["kernel_drops"], 0, "{s:?}");
    assert_eq!(missed, 0);
    check_events(&events, FRAMES, |_| ALL);
    assert_eq!(
        (s["events"], s["all_modules"], s["partial"]),
        (10_000, 10_000, 0),
        "{s:?}"
    );
    let ts: Vec<u64> = events
        .iter()
        .map(|b| EventView::parse(b).unwrap().timestamp())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "strictly in timestamp order, none twice"
    );
}

#[test]
fn a_flood_whose_modules_send_a_batch_each_in_turn_is_built_whole() {
    // A flood sends each module's batch of 64 datagrams in turn: module 1's
    // first datagram arrives 63 frames behind module 0's newest. Taken for
    // a clock fault, this cost 930 of 32 000 datagrams; the events it
    // belongs to are still waiting for it, so it is in time.
    const FRAMES: u64 = 300;
    let mut d = Ssdaqd::start(&["--hwm", "20000"]);
    let mut sub = d.subscribe();
    let out = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "localhost",
            "--modules",
            "32",
            "--flood",
        ])
        .args(["--count", &FRAMES.to_string(), "--batch", "64"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = drain(&mut sub);
    let s = d.stop_stats();
    assert_eq!(s["kernel_drops"], 0, "{s:?}");
    assert_eq!(
        (s["out_of_sync"], s["late"], s["held"]),
        (0, 0, 0),
        "nothing judged off the timeline: {s:?}"
    );
    assert_eq!(
        (s["events"], s["all_modules"]),
        (FRAMES * 10, FRAMES * 10),
        "{s:?}"
    );
    assert_eq!(events.len() as u64, FRAMES * 10);
}

#[test]
fn a_paused_subscriber_s_misses_are_a_lower_bound_and_the_daemon_says_so() {
    // Before: `sent 50000 hwm_drops 1` against 11 530 missed, read as exact.
    const FRAMES: u64 = 1000;
    let mut d = Ssdaqd::start(&[]);
    let listen = Command::new(bin("ssdaq-listen"))
        .args([d.endpoint.as_str(), "--summary"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    d.wait_for("subscriber joined");
    let pid = listen.id() as i32;
    let port = d.port;
    let sim = std::thread::spawn(move || simulate(port, FRAMES, &[]));
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    sim.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = listen.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap();
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (received, missed) = (nums[0], nums[1]);
    let s = stats_of(&log);
    assert_eq!(s["published"], 10_000, "{log}");
    assert_eq!(received + missed, 10_000, "{line}");
    assert!(missed > 1000, "the pause overflowed the queue: {line}");
    let bound = s["hwm_overflows"];
    assert!(
        (1..=missed).contains(&bound),
        "the daemon's figure {bound} is a lower bound of the {missed} missed"
    );
    assert!(
        log.contains("subscriber queue overflows")
            && log.contains("missed at least that many events")
            && log.contains("own gap count is exact"),
        "worded as a lower bound: {log}"
    );
}

#[test]
fn queues_are_bounded_and_bad_sizes_are_one_line_errors() {
    // Before: --hwm 0 meant unbounded (836 MB behind a stalled subscriber),
    // --buffers 65536 panicked, --slots 1 made most events partial.
    for (args, needle) in [
        (&["--hwm", "0"][..], "--hwm"),
        (&["--hwm", "100001"][..], "--hwm"),
        (&["--buffers", "65536"][..], "power of two from 64 to 32768"),
        (&["--buffers", "100"][..], "power of two from 64 to 32768"),
        (&["--slots", "1"][..], "--slots must be 64..=65536"),
        (&["--reorder-ns", "200000000"][..], "--reorder-ns"),
    ] {
        let out = Command::new(bin("ssdaqd")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }
    // A subscriber that never reads, behind a camera at 100× the real rate:
    // the daemon's memory stays bounded by its queue (1000 events, 17 MB).
    let mut d = Ssdaqd::start(&[]);
    let ctx = zmq::Context::new();
    let stalled = ctx.socket(zmq::SUB).unwrap();
    stalled.set_rcvhwm(1).unwrap();
    stalled.set_subscribe(b"").unwrap();
    stalled.connect(&d.endpoint).unwrap();
    d.wait_for("subscriber joined");
    let start_kib = d.rss_kib("VmRSS");
    let out = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "localhost",
            "--modules",
            "32",
            "--rate",
            "2500",
        ])
        .args(["--duration", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let peak_kib = d.rss_kib("VmHWM");
    let s = d.stop_stats();
    assert!(s["hwm_overflows"] >= 1, "{s:?}");
    assert!(
        peak_kib < start_kib + 80 * 1024,
        "RSS grew from {start_kib} KiB to {peak_kib} KiB"
    );
    drop(stalled);
}
