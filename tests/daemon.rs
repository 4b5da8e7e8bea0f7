//! The live daemon end to end: real `ssdaqd`, real UDP from 32 loopback
//! source addresses, real ZeroMQ subscribers.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use common::*;
use ssdaq::event::EventView;

/// Sends `frames` frames from 32 modules, skipping `(module, frame)` pairs.
fn send_frames(cam: &Camera, frames: u64, skip: &[(u8, u64)]) {
    for f in 0..frames {
        for m in 0..32u8 {
            if !skip.contains(&(m, f)) {
                cam.send(m, f);
            }
        }
    }
}

#[test]
fn sixty_datagrams_from_32_modules_become_600_exact_events() {
    let mut d = Ssdaqd::start(&["--run-number", "42"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    send_frames(&cam, 60, &[]);
    let events = receive(&mut sub, 600);
    for (i, bytes) in events.iter().enumerate() {
        let v = EventView::parse(bytes).unwrap();
        let ts = Camera::ts(i as u64 / 10, i as u64 % 10);
        assert_eq!(
            (v.number(), v.run(), v.timestamp()),
            (i as u64 + 1, Some(42), ts)
        );
        for m in 0..32 {
            assert_module(&v, m, ts);
        }
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(sub.missed(), 0);
    assert!(
        sub.recv(Duration::from_millis(300)).unwrap().is_none(),
        "no event beyond the 600"
    );
    assert!(
        log.contains(
            "datagrams accepted 1920  readouts 19200  events 600 (complete 600, partial 0)"
        ),
        "{log}"
    );
}

#[test]
fn a_module_left_out_of_one_datagram_gives_ten_partial_events_with_that_row_nan() {
    let mut d = Ssdaqd::start(&[]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    send_frames(&cam, 60, &[(7, 30)]);
    let events = receive(&mut sub, 600);
    for (i, bytes) in events.iter().enumerate() {
        let v = EventView::parse(bytes).unwrap();
        let (f, r) = (i as u64 / 10, i as u64 % 10);
        let ts = Camera::ts(f, r);
        assert_eq!(v.timestamp(), ts, "events stay in timestamp order");
        for m in 0..32 {
            if f == 30 && m == 7 {
                assert_missing(&v, m);
            } else {
                // Never mixed: every later event holds each module's own readout.
                assert_module(&v, m, ts);
            }
        }
    }
    let (status, log) = d.stop();
    assert!(status.success());
    assert!(
        log.contains("events 600 (complete 590, partial 10)"),
        "{log}"
    );
}

#[test]
fn malformed_and_foreign_datagrams_change_nothing_else() {
    let mut d = Ssdaqd::start(&[]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    for f in 0..60 {
        for m in 0..32u8 {
            let good = Camera::datagram(m, f);
            if m == 3 {
                cam.send_raw(m, &good[..143]); // one byte short of a readout
                cam.send_raw(m, &[]); // empty
                cam.send_raw(m, &good[..288 + 1]); // two readouts and a byte
                let mut zero = good[..288].to_vec();
                zero[..8].fill(0); // a zero timestamp
                cam.send_raw(m, &zero);
            }
            if m == 9 {
                cam.send_from(Ipv4Addr::new(127, 0, 0, 150), &good); // module 50: out of range
                cam.send_from(Ipv4Addr::new(127, 0, 0, 99), &good); // module 99: out of range
            }
            cam.send(m, f);
        }
    }
    let events = receive(&mut sub, 600);
    for (i, bytes) in events.iter().enumerate() {
        let v = EventView::parse(bytes).unwrap();
        let ts = Camera::ts(i as u64 / 10, i as u64 % 10);
        assert_eq!(v.number(), i as u64 + 1);
        for m in 0..32 {
            assert_module(&v, m, ts);
        }
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(sub.recv(Duration::from_millis(300)).unwrap().is_none());
    assert!(
        log.contains("events 600 (complete 600, partial 0)"),
        "{log}"
    );
    assert!(log.contains("dropped datagrams: empty 60 bad_length 120 truncated 0 unknown_source 120 bad_timestamp 60"), "{log}");
    assert!(
        log.contains("unknown source 127.0.0.150: 60 datagrams"),
        "{log}"
    );
    assert!(
        log.contains("unknown source 127.0.0.99: 60 datagrams"),
        "{log}"
    );
    // Logged, but rate-limited: one line per cause, not one per datagram.
    let lines = log
        .lines()
        .filter(|l| l.contains("dropped a datagram"))
        .count();
    assert!(
        (4..=8).contains(&lines),
        "{lines} log lines for 360 bad datagrams:\n{log}"
    );
}

#[test]
fn relaxed_ip_folds_out_of_range_modules() {
    let mut d = Ssdaqd::start(&["-r", "--modules", "18"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(1, d.port);
    // 127.0.0.150 is module 50, folded to 18.
    let bytes = Camera::datagram(18, 0);
    cam.send_from(Ipv4Addr::new(127, 0, 0, 150), &bytes);
    let events = receive(&mut sub, 10);
    let v = EventView::parse(&events[0]).unwrap();
    assert_module(&v, 18, Camera::ts(0, 0));
    assert!(d.stop().0.success());
}

#[test]
fn tm_ss_sim_with_32_modules_gives_only_complete_events() {
    // A generous timeout: on a saturated CI machine the simulator can be
    // descheduled mid-burst for longer than the default 100 ms.
    let mut d = Ssdaqd::start(&["--timeout-ms", "2000", "--module-timeout", "10"]);
    let mut sub = d.subscribe();
    let sim = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "localhost",
            "--modules",
            "32",
            "--duration",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let mut n = 0;
    let mut last_ts = 0;
    while let Some(ev) = sub.recv(Duration::from_millis(500)).unwrap() {
        let v = ev.view();
        assert_eq!(
            v.present_mask(),
            u32::MAX,
            "event {} is not complete",
            v.number()
        );
        assert!(v.timestamp() > last_ts, "timestamp order");
        last_ts = v.timestamp();
        n += 1;
    }
    // 3 s at 25 datagrams/s of 10 readouts: about 750 events, all complete.
    assert!((700..=800).contains(&n), "{n} events");
    assert_eq!(sub.missed(), 0);
    assert!(
        log.contains(&format!("events {n} (complete {n}, partial 0)")),
        "{log}"
    );
}

#[test]
fn a_camera_that_goes_quiet_is_flushed_on_the_wall_clock() {
    let mut d = Ssdaqd::start(&["--modules", "0-31", "--timeout-ms", "50"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    send_frames(&cam, 1, &[(31, 0)]);
    // Nothing else arrives: the 10 partial events come out on the wall clock.
    let events = receive(&mut sub, 10);
    for bytes in &events {
        let v = EventView::parse(bytes).unwrap();
        assert_missing(&v, 31);
        assert_module(&v, 0, v.timestamp());
    }
    let (status, log) = d.stop();
    assert!(status.success());
    assert!(log.contains("expired 10"), "{log}");
}

#[test]
fn sigterm_flushes_pending_events_and_exits_zero() {
    let mut d = Ssdaqd::start(&[
        "--modules",
        "0-31",
        "--timeout-ms",
        "60000",
        "--module-timeout",
        "120",
    ]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    send_frames(&cam, 2, &[(31, 1)]);
    let first = receive(&mut sub, 10); // frame 0 is complete
    assert_eq!(
        EventView::parse(&first[9]).unwrap().present_mask(),
        u32::MAX
    );
    assert!(
        sub.recv(Duration::from_millis(300)).unwrap().is_none(),
        "frame 1 waits for module 31"
    );
    let (status, log) = d.stop_with(libc::SIGTERM);
    assert!(status.success(), "{log}");
    let tail = receive(&mut sub, 10);
    for bytes in &tail {
        assert_missing(&EventView::parse(bytes).unwrap(), 31);
    }
    assert!(log.contains("flushed 10"), "{log}");
    assert!(
        log.contains("latency from datagram arrival"),
        "the summary is printed:\n{log}"
    );
}

#[test]
fn datagrams_already_queued_when_the_stop_signal_comes_are_built_not_dropped() {
    let d = Ssdaqd::start(&["--modules", "0-31"]);
    let cam = Camera::new(32, d.port);
    // The daemon is stopped while the camera sends, so the datagrams wait in
    // its socket; the stop signal is delivered the moment it resumes.
    d.signal(libc::SIGSTOP);
    send_frames(&cam, 20, &[]);
    std::thread::sleep(Duration::from_millis(50));
    d.signal(libc::SIGTERM);
    d.signal(libc::SIGCONT);
    let s = d.stop_stats_after_signal();
    assert_eq!(s["kernel_drops"], 0, "{s:?}");
    assert_eq!(s["received"], 20 * 32, "every queued datagram taken: {s:?}");
    assert_eq!(s["complete"], 200, "{s:?}");
}

#[test]
fn a_stage_that_panics_stops_the_daemon_with_an_error_instead_of_hanging() {
    // Before, a panicking build stage left the receive stage waiting forever
    // for buffers, and a panicking receive stage left the build stage
    // waiting forever for its end: SIGINT did nothing.
    for stage in ["build", "receive"] {
        let d = Ssdaqd::start(&[
            "--modules",
            "0-31",
            "--io",
            "recvmmsg",
            "--inject-panic",
            stage,
        ]);
        let cam = Camera::new(32, d.port);
        // Queued while the daemon is stopped, so that it resumes to full
        // batches (recvmmsg takes 64 at a time), which go to the build stage.
        d.signal(libc::SIGSTOP);
        send_frames(&cam, 40, &[]);
        std::thread::sleep(Duration::from_millis(50));
        d.signal(libc::SIGCONT);
        // It stops by itself, with no signal.
        let (status, log) = d.finish();
        assert_eq!(status.code(), Some(1), "{stage}: {log}");
        assert!(
            log.contains(&format!("the {stage} stage failed")),
            "{stage}: {log}"
        );
        assert!(log.contains("stage_failed=1"), "{stage}: {log}");
        assert!(log.contains("STOPPED BY A FAILED STAGE"), "{stage}: {log}");
    }
}

#[test]
fn format_v2_publishes_ssreadout_messages() {
    let mut d = Ssdaqd::start(&["--format", "v2", "--modules", "0-1"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(2, d.port);
    cam.send(0, 0);
    cam.send(1, 0);
    let events = receive(&mut sub, 10);
    for (i, bytes) in events.iter().enumerate() {
        assert_eq!(bytes.len(), 16_416);
        let v = EventView::parse(bytes).unwrap();
        assert_eq!(
            (v.number(), v.run(), v.timestamp()),
            (i as u64 + 1, None, Camera::ts(0, i as u64))
        );
        assert_module(&v, 1, v.timestamp());
    }
    // cpu_time is the arrival time: within the last minute.
    let cpu_s = u64::from_le_bytes(events[0][16..24].try_into().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - cpu_s < 60, "cpu_time_s {cpu_s} vs now {now}");
    assert!(d.stop().0.success());
}

#[test]
fn every_receive_mode_builds_the_same_events() {
    // io_uring, recvmmsg, and each busy-polling instead of sleeping.
    let modes: [(&[&str], &str); 4] = [
        (&["--io", "uring"], "(io_uring,"),
        (&["--io", "recvmmsg"], "(recvmmsg,"),
        (&["--io", "uring", "--busy-poll"], "(io_uring,"),
        (&["--io", "recvmmsg", "--busy-poll"], "(recvmmsg,"),
    ];
    let mut streams = Vec::new();
    for (args, backend) in modes {
        let mut d = Ssdaqd::start(&[args, &["--modules", "0-31"][..]].concat());
        let listening = d.wait_for("listening on UDP");
        assert!(listening.contains(backend), "{args:?}: {listening}");
        if args.contains(&"--busy-poll") {
            d.wait_for("busy-polling");
        }
        let mut sub = d.subscribe();
        let cam = Camera::new(32, d.port);
        send_frames(&cam, 5, &[(2, 3)]);
        streams.push(receive(&mut sub, 50));
        assert!(d.stop().0.success());
    }
    for (i, s) in streams.iter().enumerate().skip(1) {
        assert!(
            *s == streams[0],
            "{:?} differs from {:?}",
            modes[i].0,
            modes[0].0
        );
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        &["--bogus"][..],
        &["--cores", "0,999"],
        &["--cores", "x"],
        &["--window-ns", "0"],
        &["--window-ns", "18446744073709551615"],
        &["--reorder-ns", "-1"],
        &["--slots", "63"],
        &["--io", "dpdk"],
        &["--status", "1e-9"],
        &["--cores", "0,0"],
        &["--dump", "/dev/null"],
        &["--modules", "40"],
        &["--timeout-ms", "5000", "--module-timeout", "1"],
        &["--module-timeout", "1e19"],
        &["--module-timeout", "86401"],
        &["--allow", "10.0.1.5/24"],
        &["--format", "v3"],
        &["-p", "1", "--pub", "tcp://127.0.0.1:1"],
    ] {
        let out = Command::new(bin("ssdaqd")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_is_one_clear_line_and_exit_1() {
    let taken = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(bin("ssdaqd"))
        .args(["-l", &port, "--pub", "tcp://127.0.0.1:*"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("ssdaqd: cannot listen: bind UDP 0.0.0.0:{port}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("Address in use") || err.contains("in use"),
        "{err}"
    );

    let d = Ssdaqd::start(&[]);
    let out = Command::new(bin("ssdaqd"))
        .args(["-l", "0", "--pub", &d.endpoint])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "ssdaqd: cannot bind the publisher to {}",
            d.endpoint
        )),
        "{err}"
    );
    let out = Command::new(bin("ssdaqd"))
        .args(["-l", "0", "--pub", "nonsense://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_demo_shows_events_flowing() {
    let out = Command::new(bin("ssdaqd"))
        .args([
            "--demo",
            "-l",
            "0",
            "--pub",
            "tcp://127.0.0.1:*",
            "--duration",
            "2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout
        .lines()
        .filter(|l| l.starts_with("event ") && l.contains("modules 32/32"))
        .count();
    assert!(
        lines >= 10,
        "the demo printed {lines} complete events:\n{stdout}"
    );
}

#[test]
fn a_source_outside_the_camera_is_named_once_and_allow_refuses_it_by_address() {
    // Before: 127.0.0.1, .2 and .200 became modules 1, 2 and 0 without a word.
    let host = Ipv4Addr::new(127, 0, 0, 1);
    let mut d = Ssdaqd::start(&[]);
    let cam = Camera::new(2, d.port);
    for f in 0..3 {
        cam.send_from(host, &Camera::datagram(1, f));
    }
    d.wait_for("datagrams from 127.0.0.1 are taken as module 1");
    cam.send(0, 0);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("datagrams from 127.0.0.1").count(), 1, "{log}");

    // --allow: only the camera's addresses are modules.
    let d = Ssdaqd::start(&["--allow", "127.0.0.96/27", "--allow", "127.0.0.128/30"]);
    let cam = Camera::new(2, d.port);
    for f in 0..3 {
        cam.send_from(host, &Camera::datagram(1, f));
        cam.send(1, f);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("unknown source 127.0.0.1: 3 datagrams"),
        "refused, counted by address: {log}"
    );
    assert!(!log.contains("are taken as module"), "{log}");
}

#[test]
fn a_burst_beyond_the_socket_buffer_is_counted_as_kernel_drops_and_the_daemon_recovers() {
    // Overload: the daemon is stopped while the camera sends 300 frames
    // (14 MB) into a 256 KiB socket buffer; most are dropped by the kernel.
    // Each drop must be counted, and once the camera is back to its pace
    // every event must be complete again, with nothing else done.
    const BURST: u64 = 300;
    const AFTER: u64 = 50;
    let mut d = Ssdaqd::start(&["--modules", "0-31", "--rcvbuf", "256k"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    d.signal(libc::SIGSTOP);
    send_frames(&cam, BURST, &[]);
    std::thread::sleep(Duration::from_millis(50));
    d.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(500));
    for f in BURST..BURST + AFTER {
        for m in 0..32 {
            cam.send(m, f);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(300));
    let s = d.stop_stats();
    assert!(
        s["kernel_drops"] > 0,
        "the burst overflowed the socket: {s:?}"
    );
    assert_eq!(
        s["received"] + s["kernel_drops"],
        (BURST + AFTER) * 32,
        "every datagram sent was received or counted as dropped by the kernel: {s:?}"
    );
    assert_eq!(s["balanced"], 1, "{s:?}");
    let (mut after, mut incomplete) = (0, Vec::new());
    while let Some(ev) = sub.recv(Duration::from_millis(200)).unwrap() {
        let v = ev.view();
        if v.timestamp() >= Camera::ts(BURST, 0) {
            after += 1;
            if v.present_mask() != u32::MAX {
                incomplete.push((v.number(), v.present_mask()));
            }
        }
    }
    assert_eq!(after, AFTER * 10, "{s:?}");
    assert!(incomplete.is_empty(), "after the burst: {incomplete:?}");
}
