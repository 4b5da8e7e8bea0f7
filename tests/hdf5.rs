//! HDF5 files with the real binaries: `ssdaq-write` subscribed to a live
//! `ssdaqd`, `ssdaq-replay --hdf5` from its dump, and `ssdaq-plot`, each
//! file checked in Python the way astronomers read it (h5py, PyTables as
//! the original described the table, the successor's reading code, the
//! reader helper: tests/hdf5_check.py) against the events that were
//! published.
//!
//! Built with `--features hdf5` (what `./tools/test` runs); needs
//! `$SSDAQ_PYTHON` with tools/python and PyTables installed.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ssdaq::event::EventView;

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hdf5_check.py");

fn py() -> String {
    python("ssdaq_tools.reader, ssdaq_tools.plot, h5py, tables")
}

/// Runs the Python `script` with `args`; returns its stdout (asserting success).
fn run_py(args: &[&str]) -> String {
    let out = Command::new(py()).args(args).output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}:\n{o}\n{e}");
    o
}

/// Checks `files` (one set, in order) against the messages in `messages`.
fn check(messages: &Path, format: &str, layout: &str, files: &[PathBuf]) -> usize {
    let mut args = vec![CHECK, messages.to_str().unwrap(), format, layout];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = run_py(&args);
    out.trim()
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap()
}

/// `ssdaq-write` with `args`, its stderr in `log`.
fn writer(args: &[&str], log: &Path) -> Child {
    Command::new(bin("ssdaq-write"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_exit(c: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the writer did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(c: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(c.id() as i32, sig) };
}

fn replay(args: &[&str]) -> Output {
    Command::new(bin("ssdaq-replay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A v1 event numbered `n` as ssdaqd would publish it: every module
/// present at 0 mV, stamped at readout `n` of a 4 ms grid.
fn v1_event(n: u64) -> Vec<u8> {
    use ssdaq::event::WireV1;
    use zerocopy::FromBytes;
    use zerocopy::byteorder::little_endian::U64;
    let mut msg = vec![0u8; ssdaq::event::V1_LEN];
    let w = WireV1::mut_from_bytes(&mut msg).unwrap();
    let ts = 1_700_000_000_000_000_000 + n * 4_000_000;
    w.event_number = U64::new(n);
    w.timestamp = U64::new(ts);
    w.timestamps = [[U64::new(ts); 2]; 32];
    msg
}

/// The files a run wrote, in the order it closed them ("closed PATH:" lines).
fn closed_files(log: &str) -> Vec<PathBuf> {
    log.lines()
        .filter_map(|l| l.split("closed ").nth(1))
        .map(|r| PathBuf::from(r.split(": ").next().unwrap()))
        .collect()
}

/// 30 frames of a camera whose module 9 is dead and whose module 5 loses
/// frame 12: 300 events, ten of them without module 5.
fn run_camera(cam: &Camera) {
    for f in 0..30 {
        for m in (0..32).filter(|&m| m != 9 && !(m == 5 && f == 12)) {
            cam.send(m, f);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn live_and_replayed_files_hold_every_published_event_exactly() {
    let dir = tmpdir("h5-exact");
    let dump = dir.join("run.raw");
    let live_h5 = dir.join("live.h5");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap(), "--run-number", "4"]);
    let mut w = writer(
        &[live_h5.to_str().unwrap(), "--sub", &d.endpoint],
        &dir.join("w.log"),
    );
    d.wait_for("subscriber joined");
    let mut sub = d.subscribe_nth(2);
    let cam = Camera::new(32, d.port);
    run_camera(&cam);
    let live = receive(&mut sub, 300);
    // The writer has had them too once a second flush passed; stop it.
    std::thread::sleep(Duration::from_millis(300));
    signal(&w, libc::SIGINT);
    assert!(wait_exit(&mut w).success());
    let wlog = std::fs::read_to_string(dir.join("w.log")).unwrap();
    assert!(
        wlog.contains("wrote 300 event(s) in 1 file(s); 0 missed"),
        "{wlog}"
    );
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let live_msgs = dir.join("live.bin");
    std::fs::write(&live_msgs, live.concat()).unwrap();
    assert_eq!(
        live.iter()
            .filter(|m| !EventView::parse(m).unwrap().has_module(5))
            .count(),
        10
    );

    // Live, and replayed from the dump: the same 300 events, value for value.
    assert_eq!(check(&live_msgs, "v1", "seed", &[live_h5]), 300);
    let replay_h5 = dir.join("replay.h5");
    let r = replay(&[
        dump.to_str().unwrap(),
        "--hdf5",
        replay_h5.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(
        check(&live_msgs, "v1", "seed", std::slice::from_ref(&replay_h5)),
        300
    );

    // The successor layout, from v2 events (which carry the CPU times).
    let (v2_msgs, succ) = (dir.join("v2.bin"), dir.join("succ.h5"));
    let r = replay(&[
        dump.to_str().unwrap(),
        "--format",
        "v2",
        "--out",
        v2_msgs.to_str().unwrap(),
        "--hdf5",
        succ.to_str().unwrap(),
        "--layout",
        "successor",
        "--compress",
        "0",
    ]);
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(check(&v2_msgs, "v2", "successor", &[succ]), 300);

    // Rotation: files of at most 120 events, in a directory, in order.
    let rot = dir.join("rot");
    std::fs::create_dir(&rot).unwrap();
    let r = replay(&[
        dump.to_str().unwrap(),
        "--hdf5",
        rot.to_str().unwrap(),
        "--max-events",
        "120",
    ]);
    let err = text(&r);
    assert!(r.status.success(), "{err}");
    let files = closed_files(&err);
    assert_eq!(files.len(), 3, "{err}");
    assert!(files.iter().all(|f| f.starts_with(&rot)), "{err}");
    assert_eq!(check(&live_msgs, "v1", "seed", &files), 300);

    // The camera image: module 9 (dead) grey, module 0 coloured, corners blank.
    let png = dir.join("camera.png");
    let plot = PathBuf::from(py()).with_file_name("ssdaq-plot");
    let o = Command::new(&plot)
        .args([
            replay_h5.to_str().unwrap(),
            "--mean",
            "0:300",
            "-o",
            png.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let colours = run_py(&[
        "-c",
        r#"
import sys, matplotlib.image as mi, matplotlib.colors as mc
from ssdaq_tools.geometry import Geometry
from ssdaq_tools import plot
g = Geometry.load()
img = mi.imread(sys.argv[1])
def at(m):
    r, c = g.module_origin(m)
    x, y = plot.png_pixel(g, r + 3.5, c + 3.5)
    return mc.to_hex(img[y, x][:3])
x, y = plot.png_pixel(g, 2, 2)
print(at(9), at(0), mc.to_hex(img[y, x][:3]), plot.MISSING_COLOUR)
"#,
        png.to_str().unwrap(),
    ]);
    let c: Vec<&str> = colours.split_whitespace().collect();
    assert_eq!(
        c[0], c[3],
        "module 9 is drawn in the missing colour: {colours}"
    );
    assert_ne!(c[1], c[3], "module 0 is not: {colours}");
    assert_eq!(c[2], "#ffffff", "the corner is blank: {colours}");
}

#[test]
fn a_writer_killed_with_kill_9_leaves_a_file_with_all_but_its_last_second() {
    let dir = tmpdir("h5-kill9");
    let file = dir.join("live.h5");
    let mut d = Ssdaqd::start(&[]);
    let mut w = writer(
        &[file.to_str().unwrap(), "--sub", &d.endpoint],
        &dir.join("w.log"),
    );
    d.wait_for("subscriber joined");
    let mut sub = d.subscribe_nth(2);
    let cam = Camera::new(32, d.port);
    // 2.5 s of a 32-module camera at about 1000 events/s, then kill -9.
    let start = Instant::now();
    let mut published = Vec::new();
    let mut f = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        for m in 0..32 {
            cam.send(m, f);
        }
        f += 1;
        std::thread::sleep(Duration::from_millis(10));
        while let Some(ev) = sub.recv(Duration::ZERO).unwrap() {
            published.push((start.elapsed(), ev.bytes().to_vec()));
        }
    }
    let killed_at = start.elapsed();
    signal(&w, libc::SIGKILL);
    wait_exit(&mut w);
    let out = run_py(&[
        "-c",
        "import sys, h5py; f = h5py.File(sys.argv[1], 'r'); t = f['SlowSignal/readout']; \
         log = f['SlowSignal/flush_log']; \
         print(t.shape[0], int(t['event_number'][-1]) if t.shape[0] else 0, \
               int(log[-1, 0]) if log.shape[0] else 0)",
        file.to_str().unwrap(),
    ]);
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let older = published
        .iter()
        .filter(|(t, _)| *t + Duration::from_millis(1200) < killed_at)
        .count() as u64;
    assert!(
        v[0] >= older && v[0] > 0,
        "{} rows readable; {older} events were published over a second before the kill",
        v[0]
    );
    assert_eq!(v[1], v[0], "rows 1..n are events 1..n");
    // The flush log's last row is the last flush's: the rows on disk.
    assert_eq!(v[2], v[0], "flush_log says what the killed file holds");
    drop(d);
}

#[test]
fn a_full_disk_closes_the_file_cleanly_with_every_event_before() {
    let dir = tmpdir("h5-full");
    let dump = dir.join("run.raw");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap(), "--modules", "0-31"]);
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    for f in 0..200 {
        for m in 0..32 {
            cam.send(m, f);
        }
        if f % 20 == 19 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let live = receive(&mut sub, 2000);
    d.stop();
    let msgs = dir.join("live.bin");
    std::fs::write(&msgs, live.concat()).unwrap();

    // A replay rotates at --max-size (it never flushes: the size is looked
    // at as chunks are written), with nobody reading its stderr.
    let rot = dir.join("rot");
    std::fs::create_dir(&rot).unwrap();
    let mut r = Command::new(bin("ssdaq-replay"))
        .args([dump.to_str().unwrap(), "--hdf5"])
        .arg(rot.join("r.h5"))
        .args(["--max-size", "1M", "--compress", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(r.stderr.take());
    let status = wait_exit(&mut r);
    assert!(
        status.success(),
        "a closed stderr is no failure: {status:?}"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rot)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // r.h5, then r.0001.h5 …
    files.sort_by_key(|p| (p.file_name().unwrap().len(), p.clone()));
    assert!(
        files.len() >= 8,
        "2000 rows of 8.7 kB in 1 MiB files: {files:?}"
    );
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size < 2 << 20, "{f:?}: {size} bytes");
    }
    assert_eq!(check(&msgs, "v1", "seed", &files), 2000);

    // A 12 MiB tmpfs: room for about 4 MiB of rows before the 8 MiB reserve.
    let mnt = dir.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=12m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); CI runs this as root");
        return;
    }
    let file = mnt.join("run.h5");
    let r = replay(&[
        dump.to_str().unwrap(),
        "--hdf5",
        file.to_str().unwrap(),
        "--compress",
        "0",
    ]);
    let err = text(&r);
    let kept = std::fs::copy(&file, dir.join("run.h5"));
    let _ = Command::new("umount").arg(&mnt).status();
    kept.unwrap();
    assert_eq!(r.status.code(), Some(1), "{err}");
    let lines: Vec<_> = err.lines().filter(|l| l.contains("disk is full")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("the file was closed"), "{err}");
    // What is in the file is exactly the first events, all readable.
    let n: usize = run_py(&[
        "-c",
        "import sys, h5py; print(h5py.File(sys.argv[1], 'r')['SlowSignal/readout'].shape[0])",
        dir.join("run.h5").to_str().unwrap(),
    ])
    .trim()
    .parse()
    .unwrap();
    assert!(n > 100 && n < 2000, "{n} rows");
    // Its attributes describe those rows, not the events that did not fit,
    // and its times run forward.
    let attrs = run_py(&[
        "-c",
        "import sys, h5py, numpy as np; f = h5py.File(sys.argv[1], 'r'); \
         t = f['SlowSignal/readout']; a = t.attrs; log = f['SlowSignal/flush_log'][:]; \
         print(a['events_written'], a['NROWS'], a['first_event_number'], \
               a['last_event_number'], int(a['end_time_ns'] >= a['start_time_ns']), \
               int(bool((np.diff(log[:, 1].astype(np.int64)) >= 0).all())), \
               int(log[-1, 0]))",
        dir.join("run.h5").to_str().unwrap(),
    ]);
    let a: Vec<u64> = attrs
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let n64 = n as u64;
    assert_eq!(a, [n64, n64, 1, n64, 1, 1, n64], "{attrs}");
    // The events of the chunk that did not fit are counted (the replay
    // offers no more after the error).
    assert!(err.contains("event(s) NOT written (disk full)"), "{err}");
    let first = dir.join("first.bin");
    std::fs::write(&first, live[..n].concat()).unwrap();
    assert_eq!(check(&first, "v1", "seed", &[dir.join("run.h5")]), n);
}

#[test]
fn bad_paths_endpoints_and_messages_get_one_clear_line() {
    let dir = tmpdir("h5-bad");
    let taken = dir.join("taken.h5");
    std::fs::write(&taken, b"not ours").unwrap();
    let write = |args: &[&str]| {
        let o = Command::new(bin("ssdaq-write"))
            .args(args)
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    let (code, err) = write(&[taken.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("exists") && err.contains("never overwritten"),
        "{err}"
    );
    assert_eq!(std::fs::read(&taken).unwrap(), b"not ours");
    let (code, err) = write(&[dir.join("no/such/dir/x.h5").to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no such directory"), "{err}");
    // A dangling symbolic link is taken, not followed; a directory that
    // is not there is not a file name.
    let dangling = dir.join("dangling.h5");
    std::os::unix::fs::symlink(dir.join("nowhere"), &dangling).unwrap();
    let (code, err) = write(&[dangling.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("never overwritten"), "{err}");
    // A name without an extension is NAME.h5, which is taken.
    let (code, err) = write(&[dir.join("taken").to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("taken.h5: exists"), "{err}");
    // A name that is not UTF-8 is a name like any other.
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.join(std::ffi::OsStr::from_bytes(b"run\xff.h5"));
        let o = Command::new(bin("ssdaq-write"))
            .arg(&odd)
            .args(["--sub", "tcp://127.0.0.1:1", "--timeout", "0.2"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no event from"), "{}", text(&o));
    }
    let newdir = format!("{}/newdir/", dir.display());
    let (code, err) = write(&[&newdir]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no such directory"), "{err}");
    assert!(!dir.join("nowhere").exists() && !dir.join("newdir.h5").exists());
    let (code, err) = write(&[dir.to_str().unwrap(), "--sub", "nonsense"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"nonsense\" is not an endpoint") && err.contains("tcp://HOST:PORT"),
        "{err}"
    );
    for bad in [
        ["--compress", "10"],
        ["--layout", "pytables"],
        ["--max-size", "10k"],
    ] {
        let (code, err) = write(&[dir.to_str().unwrap(), bad[0], bad[1]]);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
    // Nobody publishes there: a timeout, said as such, and no file.
    let (code, err) = write(&[
        dir.to_str().unwrap(),
        "--sub",
        "tcp://127.0.0.1:1",
        "--timeout",
        "0.5",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no event from tcp://127.0.0.1:1"), "{err}");
    assert!(err.contains("wrote 0 event(s) in 0 file(s)"), "{err}");

    // A publisher of garbage and of good events: the garbage is counted
    // and dropped, every event written.
    let ctx = zmq::Context::new();
    let publ = ctx.socket(zmq::XPUB).unwrap();
    publ.bind("tcp://127.0.0.1:*").unwrap();
    let ep = publ.get_last_endpoint().unwrap().unwrap();
    let out = dir.join("mixed.h5");
    let mut w = writer(
        &[out.to_str().unwrap(), "--sub", &ep, "--events", "5"],
        &dir.join("w.log"),
    );
    // Its subscription: from here on it gets every message.
    publ.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    assert_eq!(publ.recv_bytes(0).unwrap(), b"\x01");
    let mut n = 1u64;
    let deadline = Instant::now() + WAIT;
    while w.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the writer did not finish");
        publ.send(&b"garbage"[..], 0).unwrap();
        // An event's length, but zeros: event 0, no timestamps.
        publ.send(&vec![0u8; ssdaq::event::V1_LEN][..], 0).unwrap();
        if n > 1 {
            // A valid event but a number no daemon reaches next.
            let mut far = v1_event(n);
            far[..8].copy_from_slice(&(n + (1 << 40)).to_le_bytes());
            publ.send(&far[..], 0).unwrap();
        }
        publ.send(&v1_event(n)[..], 0).unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join("w.log")).unwrap();
    assert!(w.wait().unwrap().success(), "{log}");
    assert!(
        log.contains("wrote 5 event(s) in 1 file(s); 0 missed"),
        "{log}"
    );
    assert!(
        log.contains("not events") && !log.contains(" 0 message(s) that were not"),
        "{log}"
    );

    // ssdaq-replay refuses a taken --hdf5 before reading anything.
    let dump = dir.join("empty.raw");
    let mut d = Ssdaqd::start(&["--dump", dump.to_str().unwrap()]);
    d.wait_for("dumping every datagram");
    d.stop();
    let r = replay(&[dump.to_str().unwrap(), "--hdf5", taken.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("never overwritten"), "{}", text(&r));
    // … and a directory that is not there, before replaying anything.
    let nowhere = dir.join("no/such/dir/x.h5");
    let r = replay(&[dump.to_str().unwrap(), "--hdf5", nowhere.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(text(&r).contains("no such directory"), "{}", text(&r));
    assert!(!text(&r).contains("replayed in"), "{}", text(&r));
}

/// The writer at a stop, and with nobody reading its stderr: SIGHUP (a
/// dropped terminal) does not stop it, a closed stderr does not kill it,
/// and SIGINT right after a burst still writes the burst that was queued
/// or on its way, so the file holds every event, "0 missed".
#[test]
fn a_stop_writes_what_is_queued_and_neither_sighup_nor_a_closed_stderr_ends_a_recording() {
    const BURST: u64 = 9000;
    let dir = tmpdir("h5-stop");
    let file = dir.join("stop.h5");
    let ctx = zmq::Context::new();
    let publ = ctx.socket(zmq::XPUB).unwrap();
    publ.set_sndhwm(0).unwrap();
    publ.bind("tcp://127.0.0.1:*").unwrap();
    let ep = publ.get_last_endpoint().unwrap().unwrap();
    let mut w = Command::new(bin("ssdaq-write"))
        .args([file.to_str().unwrap(), "--sub", &ep])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads the writer's stderr any more: each line it writes fails
    // with EPIPE (eprintln! would panic: exit 101, the recording ended).
    drop(w.stderr.take());
    // Its subscription arrives: it is connected.
    publ.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    assert_eq!(
        publ.recv_bytes(0).unwrap(),
        b"\x01",
        "a subscription to everything"
    );
    signal(&w, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    let hup = w.try_wait().unwrap();
    assert!(hup.is_none(), "SIGHUP ended the writer: {hup:?}");
    // A burst while the writer is stopped (a backlog of seconds of writing),
    // the stop signal waiting for it when it resumes.
    signal(&w, libc::SIGSTOP);
    for n in 1..=BURST {
        publ.send(&v1_event(n)[..], 0).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&w, libc::SIGINT);
    signal(&w, libc::SIGCONT);
    let status = wait_exit(&mut w);
    assert!(status.success(), "{status:?}");
    let out = run_py(&[
        "-c",
        "import sys, h5py; t = h5py.File(sys.argv[1], 'r')['SlowSignal/readout']; \
         print(t.shape[0], t.attrs['missed_events'], t.attrs['last_event_number'])",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        out.trim(),
        format!("{BURST} 0 {BURST}"),
        "rows, missed, last"
    );
}

/// A file written a few rows at a time: every flush finds rows waiting, so
/// the last chunk is written partly filled and rewritten again and again
/// (the chunks are encoded by the writer itself, not by HDF5's filters).
/// Uncompressed, at deflate 1 and at deflate 9, h5py and PyTables read
/// every value back.
#[test]
fn a_trickle_of_events_rewrites_the_last_chunk_and_every_value_reads_back() {
    use ssdaq::event::{V1_LEN, WireV1};
    use ssdaq::packet::{N_MODULES, N_PIXELS};
    use ssdaq_hdf5::{EventFile, Layout, Options};
    use zerocopy::FromBytes;
    use zerocopy::byteorder::little_endian::{F64, U64};

    let dir = tmpdir("h5-trickle");
    const EVENTS: usize = 150; // two full chunks of 64 and a partial one
    let t0 = 1_700_000_000_000_000_000u64;
    let mut msgs = vec![0u8; EVENTS * V1_LEN];
    for (e, msg) in msgs.chunks_exact_mut(V1_LEN).enumerate() {
        let ts = t0 + e as u64 * 4_000_000;
        let w = WireV1::mut_from_bytes(msg).unwrap();
        w.event_number = U64::new(e as u64 + 1);
        w.timestamp = U64::new(ts);
        // Module (e % 32) missing: NaN rows, exactly as published.
        for m in (0..N_MODULES).filter(|&m| m != e % N_MODULES) {
            let r = tm_ss_sim::readout(3, m as u8, ts);
            for p in 0..N_PIXELS {
                w.mv[m][p] = F64::new(ssdaq_wire::adc::adc_to_mv(r.adc(p)));
            }
            w.timestamps[m] = [U64::new(r.primary_ts()), U64::new(r.aux_ts())];
        }
        for p in 0..N_PIXELS {
            w.mv[e % N_MODULES][p] = F64::new(f64::NAN);
        }
    }
    let msgs_path = dir.join("events.bin");
    std::fs::write(&msgs_path, &msgs).unwrap();
    for level in [0u8, 1, 9] {
        let burst = dir.join(format!("burst-{level}.h5"));
        let path = dir.join(format!("trickle-{level}.h5"));
        let opts = Options {
            layout: Layout::Seed,
            compress: level,
            attrs: vec![
                ("ssdaq_source".into(), "this test".into()),
                ("ssdaq_command_line".into(), "cargo test".into()),
            ],
            ..Options::default()
        };
        // The same events at once: each chunk written once, when full.
        let mut f = EventFile::create(&burst, ssdaq::event::Format::V1, t0, &opts).unwrap();
        for msg in msgs.chunks_exact(V1_LEN) {
            f.append(&EventView::parse(msg).unwrap(), t0).unwrap();
        }
        f.finish(t0).unwrap();
        let mut f = EventFile::create(&path, ssdaq::event::Format::V1, t0, &opts).unwrap();
        let mut now = t0;
        for (i, msg) in msgs.chunks_exact(V1_LEN).enumerate() {
            f.append(&EventView::parse(msg).unwrap(), now).unwrap();
            if i % 7 == 6 {
                now += 1_000_000_000; // a second later: the tail has waited
                f.flush(now).unwrap();
            }
        }
        assert_eq!(f.finish(now).unwrap().events, EVENTS as u64);
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let (trickled, at_once) = (size(&path), size(&burst));
        assert_eq!(
            check(&msgs_path, "v1", "seed", &[path]),
            EVENTS,
            "level {level}"
        );
        // Rewritten chunks grow in the room they were given (an eighth more
        // than a full chunk; the first chunk's room doubles as it grows, so
        // it may take three chunks' space once, the last's a guess): the
        // file is not a pile of abandoned copies (it was 6 times the size).
        let chunk = at_once * 64 / EVENTS as u64;
        assert!(
            trickled <= at_once * 9 / 8 + 3 * chunk,
            "level {level}: {trickled} bytes written a few rows at a time, {at_once} at once"
        );
    }
}

#[test]
fn a_live_file_carries_the_daemons_settings_asked_for_over_its_control_endpoint() {
    let dir = tmpdir("h5-settings");
    let file = dir.join("live.h5");
    let mut d = Ssdaqd::start(&[
        "--control",
        "tcp://127.0.0.1:*",
        "--timeout-ms",
        "250",
        "--run-number",
        "12",
    ]);
    let ep = d.control_endpoint();
    let mut w = writer(
        &[
            file.to_str().unwrap(),
            "--sub",
            &d.endpoint,
            "--control",
            &ep,
        ],
        &dir.join("w.log"),
    );
    d.wait_for("subscriber joined");
    let cam = Camera::new(4, d.port);
    for f in 0..5 {
        for m in 0..4 {
            cam.send(m, f);
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    signal(&w, libc::SIGINT);
    assert!(wait_exit(&mut w).success());
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let out = run_py(&[
        "-c",
        "import sys, h5py; a = h5py.File(sys.argv[1], 'r')['SlowSignal/readout'].attrs; \
         s = lambda k: a[k].decode() if isinstance(a[k], bytes) else str(a[k]); \
         print(s('ssdaqd_timeout_ns'), s('ssdaqd_run_at_start'), s('ssdaqd_version')); \
         print(s('ssdaqd_command_line'))",
        file.to_str().unwrap(),
    ]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("250000000 12 {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(lines.next().unwrap().contains("--timeout-ms 250"), "{out}");
    // No daemon there: the recording goes on, and the file says why.
    let file2 = dir.join("nodaemon.h5");
    let mut w = writer(
        &[
            file2.to_str().unwrap(),
            "--sub",
            "tcp://127.0.0.1:1",
            "--control",
            "tcp://127.0.0.1:1",
        ],
        &dir.join("w2.log"),
    );
    std::thread::sleep(Duration::from_millis(3500));
    signal(&w, libc::SIGINT);
    assert!(wait_exit(&mut w).success());
    let wlog = std::fs::read_to_string(dir.join("w2.log")).unwrap();
    assert!(wlog.contains("will not carry ssdaqd's settings"), "{wlog}");
}
