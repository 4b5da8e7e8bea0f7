//! Raw dumps and ssdaq-replay with the real binaries.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use ssdaq::event::EventView;

fn replay(args: &[&str]) -> Output {
    Command::new(bin("ssdaq-replay"))
        .args(args)
        .output()
        .unwrap()
}

fn replay_to_file(dump: &Path, dir: &Path) -> (Vec<u8>, String) {
    let out = dir.join("events.bin");
    let r = replay(&[dump.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{err}");
    (std::fs::read(out).unwrap(), err)
}

/// Collects whatever events arrive within a short quiet period.
fn drain(sub: &mut ssdaq::listen::EventListener) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(ev) = sub.recv(Duration::from_millis(500)).unwrap() {
        v.push(ev.bytes().to_vec());
    }
    v
}

#[test]
fn a_replayed_dump_reproduces_the_live_stream_byte_for_byte() {
    let dir = tmpdir("exact");
    let dump = dir.join("run.raw");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap(), "--run-number", "3"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    for f in 0..3 {
        for m in 0..32 {
            cam.send(m, f);
        }
    }
    // Past the start-up listening period, so completeness is decided at once.
    std::thread::sleep(Duration::from_millis(200));
    // Module 5 loses frame 3 (a partial event), and its frame 3 comes late,
    // after its frame 4 and the reorder grace resolved it; a malformed and a
    // foreign datagram too.
    for m in (0..32).filter(|&m| m != 5) {
        cam.send(m, 3);
    }
    cam.send_raw(9, &Camera::datagram(9, 3)[..100]);
    cam.send_from(
        std::net::Ipv4Addr::new(127, 0, 0, 160),
        &Camera::datagram(1, 3),
    );
    for m in 0..32 {
        cam.send(m, 4);
    }
    // Well past the reorder grace: frame 3 is resolved without module 5.
    std::thread::sleep(Duration::from_millis(30));
    cam.send(5, 3);
    // Then the camera goes quiet with module 31 missing: a wall-clock flush.
    for m in 0..31 {
        cam.send(m, 5);
    }
    std::thread::sleep(Duration::from_millis(400));
    for m in 0..32 {
        cam.send(m, 6);
    }
    let live = receive(&mut sub, 70);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("late 10"), "{log}");
    assert!(
        log.contains("expired 10"),
        "the quiet camera was flushed on the wall clock:\n{log}"
    );
    let (replayed, err) = replay_to_file(&dump, &dir);
    let live_bytes: Vec<u8> = live.concat();
    assert_eq!(replayed.len(), live_bytes.len(), "{err}");
    assert!(
        replayed == live_bytes,
        "replay differs from the live stream"
    );
    assert!(
        err.contains("read 1 file(s)") && err.contains("225 datagrams"),
        "{err}"
    );
    assert!(err.contains("late 10"), "{err}");
}

#[test]
fn after_kill_9_the_dump_replays_up_to_the_kill() {
    let dir = tmpdir("kill9");
    let dump = dir.join("run.raw");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap()]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    for f in 0..20 {
        for m in 0..32 {
            cam.send(m, f);
        }
    }
    let live = receive(&mut sub, 200);
    let (status, _) = d.stop_with(libc::SIGKILL);
    assert!(!status.success());
    let (replayed, err) = replay_to_file(&dump, &dir);
    // Every datagram received before the kill is in the dump.
    assert!(err.contains("640 datagrams"), "{err}");
    assert!(
        err.contains("data ends at offset"),
        "the unfinished file is reported:\n{err}"
    );
    assert!(
        replayed.starts_with(&live.concat()),
        "the replay reproduces what was published live"
    );
}

#[test]
fn a_full_disk_stops_the_dump_with_one_line_and_the_run_goes_on() {
    let dir = tmpdir("full");
    let dump = dir.join("run.raw");
    // A 12 MiB file size limit stands in for a full disk: the second 8 MiB
    // preallocation fails with EFBIG.
    let mut cmd = Ssdaqd::command(&["--modules", "0-31"]);
    cmd.args(["--dump", dump.to_str().unwrap(), "--dump-chunk", "8M"]);
    // SAFETY: setrlimit is async-signal-safe; the child only execs afterwards.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 12 << 20,
                rlim_max: 12 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut d = Ssdaqd::spawn(cmd);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    let frames = 300; // ~14 MB of datagrams
    for f in 0..frames {
        for m in 0..32 {
            cam.send(m, f);
        }
        if f % 20 == 19 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let events = receive(&mut sub, 10 * frames as usize);
    assert_eq!(
        EventView::parse(events.last().unwrap()).unwrap().number(),
        10 * frames
    );
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let stopped: Vec<_> = log.lines().filter(|l| l.contains("dump stopped")).collect();
    assert_eq!(stopped.len(), 1, "{log}");
    assert!(stopped[0].contains("File too large"), "{}", stopped[0]);
    assert!(log.contains("STOPPED on an error"), "{log}");
    assert!(
        log.contains(&format!("events {} (complete {0}, partial 0)", 10 * frames)),
        "{log}"
    );
    // What was written before is intact.
    let (replayed, err) = replay_to_file(&dump, &dir);
    assert!(!replayed.is_empty(), "{err}");
    assert!(
        events
            .concat()
            .starts_with(&replayed[..replayed.len() - 16_920 * 10])
    );
}

#[test]
fn a_dump_path_that_cannot_be_created_refuses_to_start() {
    let out = Command::new(bin("ssdaqd"))
        .args([
            "-l",
            "0",
            "--pub",
            "tcp://127.0.0.1:*",
            "--dump",
            "/nonexistent/dir/run.raw",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ssdaqd: cannot dump: cannot create /nonexistent/dir/run.raw"),
        "{err}"
    );
    // An existing file is never overwritten.
    let dir = tmpdir("exists");
    let f = dir.join("run.raw");
    std::fs::write(&f, b"precious").unwrap();
    let out = Command::new(bin("ssdaqd"))
        .args([
            "-l",
            "0",
            "--pub",
            "tcp://127.0.0.1:*",
            "--dump",
            f.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&f).unwrap(), b"precious");
}

#[test]
fn bad_dumps_get_clear_messages_and_never_a_panic() {
    let dir = tmpdir("bad");
    let text = dir.join("notes.raw");
    std::fs::write(&text, b"this is a text file, not a dump").unwrap();
    let empty = dir.join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    for (path, needle) in [(&text, "not an ssdaq dump"), (&empty, "empty file")] {
        let r = replay(&[path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains(needle),
            "{err}"
        );
    }
    // A good dump, then damaged in the middle and cut short.
    let good = dir.join("run.raw");
    let mut d = Ssdaqd::start(&["--dump", good.to_str().unwrap(), "--modules", "0-31"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    for f in 0..10 {
        for m in 0..32 {
            cam.send(m, f);
        }
    }
    receive(&mut sub, 100);
    assert!(d.stop().0.success());
    let mut bytes = std::fs::read(&good).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].fill(0xAB);
    bytes.truncate(bytes.len() - 700);
    let bad = dir.join("damaged.raw");
    std::fs::write(&bad, &bytes).unwrap();
    // Several files: the unreadable ones are named, the readable one replayed.
    let r = replay(&[text.to_str().unwrap(), bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(0), "something could be read:\n{err}");
    assert!(err.contains("notes.raw: not an ssdaq dump"), "{err}");
    assert!(
        err.contains("damaged.raw:") && err.contains("corrupt bytes at offset"),
        "{err}"
    );
    assert!(
        err.contains("corrupt regions 2"),
        "one in the middle, one torn at the end:\n{err}"
    );
    drain(&mut sub);
}

#[test]
fn replay_publishes_like_the_daemon_and_info_surveys_without_building() {
    let dir = tmpdir("pub");
    let dump = dir.join("run.raw");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap(), "--format", "v2"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(4, d.port);
    for f in 0..5 {
        for m in 0..4 {
            cam.send(m, f);
        }
    }
    let live = receive(&mut sub, 50);
    assert!(d.stop().0.success());

    let info = replay(&["--info", dump.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success());
    assert!(
        text.contains("dump format v1") && text.contains("format = v2"),
        "{text}"
    );
    assert!(
        text.contains("datagrams per module: 0:5 1:5 2:5 3:5"),
        "{text}"
    );

    // Publish at 20x the recorded pace to a subscriber that was waited for.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin("ssdaq-replay"))
        .args([
            dump.to_str().unwrap(),
            "--pub",
            &endpoint,
            "--wait-subscribers",
            "1",
            "--speed",
            "20",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut l = ssdaq::listen::EventListener::connect(&endpoint).unwrap();
    let replayed = receive(&mut l, 50);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        replayed == live,
        "published replay equals the live v2 stream"
    );
}

#[test]
fn a_fifo_is_refused_at_once_instead_of_blocking() {
    // Before: opening a FIFO named run.raw blocked the reader forever.
    let dir = tmpdir("fifo");
    let fifo = dir.join("run.raw");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for arg in [&fifo, &dir] {
        let r = replay(&[arg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
}

#[test]
fn a_paced_replay_stops_promptly_on_a_signal() {
    // Before: a replay paced over a gap (or at --speed 1e-300) slept
    // through Ctrl-C until the next record was due.
    let dir = tmpdir("paced");
    let dump = dir.join("run.raw");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap()]);
    let mut sub = d.subscribe();
    let cam = Camera::new(2, d.port);
    for f in 0..3 {
        cam.send(0, f);
        cam.send(1, f);
        std::thread::sleep(Duration::from_millis(20));
    }
    receive(&mut sub, 30);
    assert!(d.stop().0.success());
    let child = Command::new(bin("ssdaq-replay"))
        .args([dump.to_str().unwrap(), "--speed", "1e-300"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let asked = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        took < Duration::from_secs(2),
        "stopped after {took:?}: {err}"
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("replayed in"), "with its summary: {err}");
}

#[test]
fn a_directory_of_two_recordings_is_refused_with_each_named() {
    let dir = tmpdir("two-runs");
    let mut firsts = Vec::new();
    for run in 0..2u64 {
        if run > 0 {
            // Dump names have a resolution of a second: the second run's
            // must differ (a clash is refused, never overwritten).
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let mut d = Ssdaqd::start(&["--dump", dir.to_str().unwrap()]);
        let mut sub = d.subscribe();
        let cam = Camera::new(32, d.port);
        for f in 0..5 {
            for m in 0..32 {
                cam.send(m, f + run * 100);
            }
        }
        receive(&mut sub, 50);
        assert!(d.stop().0.success());
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !firsts.contains(p))
            .collect();
        assert_eq!(names.len(), 1, "one file per run: {names:?}");
        firsts.push(names.pop().unwrap());
    }
    let r = replay(&[dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("2 separate recordings"), "{err}");
    for f in &firsts {
        assert!(err.contains(f.to_str().unwrap()), "{f:?} named: {err}");
    }
    // Each alone replays its own 50 events; --info surveys both.
    for f in &firsts {
        let r = replay(&[f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{err}");
        assert!(err.contains("events 50 "), "{err}");
    }
    let r = replay(&[dir.to_str().unwrap(), "--info"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}
