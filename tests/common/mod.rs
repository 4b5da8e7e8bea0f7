//! Shared harness of the integration tests and the pipeline benchmark: the
//! real binaries on loopback.
//!
//! [`Ssdaqd::start`] runs the real `ssdaqd` on a free UDP port and a free
//! publisher port, reads its log, measures its CPU and memory from /proc,
//! and stops it with a real signal. [`Camera`] sends datagrams from the
//! modules' real loopback source addresses (127.0.0.100+m). Subscribers are
//! the library's `EventListener`.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use ssdaq::event::EventView;
use ssdaq::listen::EventListener;
use ssdaq::packet::module_addr;
use tm_ss_sim as sim;

/// Generous bound for anything the tests wait for.
pub const WAIT: Duration = Duration::from_secs(20);
/// Seed of the simulated pixel values.
pub const SEED: u64 = 7;
/// Readout spacing of the test camera (the real rate's 4 ms).
pub const SPACING: u64 = 4_000_000;
/// First readout timestamp (on the 4 ms grid).
pub const T0: u64 = 1_700_000_000_000_000_000;

/// A fresh scratch directory for this process.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssdaq-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The key=value figures of ssdaqd's closing `stats:` line.
pub type Stats = HashMap<String, u64>;

/// The figures of the closing `stats:` line of an ssdaqd log.
pub fn stats_of(log: &str) -> Stats {
    let line = log.lines().rev().find_map(|l| l.strip_prefix("stats: "));
    let line = line.unwrap_or_else(|| panic!("ssdaqd printed no stats line:\n{log}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

/// The Python that runs the tools' tests: `$SSDAQ_PYTHON`, else `python3`,
/// checked to import `modules` (comma-separated), with a message that says
/// how to get one.
pub fn python(modules: &str) -> String {
    let py = std::env::var("SSDAQ_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{py} cannot import {modules}: run ./tools/test, or `pip install ./tools/python tables`, or set SSDAQ_PYTHON"
    );
    py
}

pub fn bin(name: &str) -> PathBuf {
    let ssdaqd = PathBuf::from(env!("CARGO_BIN_EXE_ssdaqd"));
    let p = ssdaqd.with_file_name(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        p.display()
    );
    p
}

/// A running `ssdaqd`.
pub struct Ssdaqd {
    child: Child,
    lines: Receiver<String>,
    pub log: Vec<String>,
    pub port: u16,
    pub endpoint: String,
}

impl Ssdaqd {
    /// The ssdaqd command on free ports (`-l 0`, a wildcard `--pub` port),
    /// without the status line, plus `args`.
    pub fn command(args: &[&str]) -> Command {
        Ssdaqd::command_of(&bin("ssdaqd"), args)
    }

    /// [`Ssdaqd::command`] of the ssdaqd binary at `exe` (the benchmark
    /// pairs this build against another).
    pub fn command_of(exe: &std::path::Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(exe);
        cmd.args(["-l", "0", "--pub", "tcp://127.0.0.1:*", "--status", "0"])
            .args(args);
        cmd
    }

    /// Starts ssdaqd with `args` on free ports and waits until it listens.
    pub fn start(args: &[&str]) -> Ssdaqd {
        Ssdaqd::spawn(Ssdaqd::command(args))
    }

    /// Starts a prepared ssdaqd command (which must use `-l 0` and a
    /// wildcard `--pub` port) and waits until it listens.
    pub fn spawn(mut cmd: Command) -> Ssdaqd {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ssdaqd");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Ssdaqd {
            child,
            lines,
            log: Vec::new(),
            port: 0,
            endpoint: String::new(),
        };
        let line = d.wait_for("listening on UDP");
        let addr = line
            .split("listening on UDP ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        d.port = addr.parse::<SocketAddr>().unwrap().port();
        d.endpoint = line.rsplit(" on ").next().unwrap().trim().to_string();
        d
    }

    /// Where `--metrics` serves (`HOST:PORT`), from the daemon's log.
    pub fn metrics_addr(&mut self) -> String {
        let line = self.wait_for("metrics: http://");
        line.split("http://")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    }

    /// The `--control` endpoint, from the daemon's (text) log.
    pub fn control_endpoint(&mut self) -> String {
        let line = self.wait_for("control: tcp://");
        line.split("control: ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "ssdaqd ended before logging {needle:?}; log:\n{}",
                        self.log.join("\n")
                    )
                }
            }
        }
    }

    /// Waits until the log holds `n` lines containing `needle`.
    pub fn wait_for_nth(&mut self, needle: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.log.iter().filter(|l| l.contains(needle)).count() < n {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => self.log.push(l),
                Err(e) => panic!(
                    "{e:?} before {n} log lines with {needle:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// A subscriber connected before anything is sent (waits until the
    /// daemon has seen its subscription, so no event can be missed).
    pub fn subscribe(&mut self) -> EventListener {
        let l = EventListener::connect(&self.endpoint).unwrap();
        self.wait_for("subscriber joined");
        l
    }

    /// [`Ssdaqd::subscribe`] when `n - 1` subscribers have already joined.
    pub fn subscribe_nth(&mut self, n: usize) -> EventListener {
        let l = EventListener::connect(&self.endpoint).unwrap();
        self.wait_for_nth("subscriber joined", n);
        l
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Sends a signal and waits for exit; returns status and the whole log.
    pub fn stop_with(self, signal: i32) -> (ExitStatus, String) {
        self.signal(signal);
        self.finish()
    }

    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for the process to end by itself.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "ssdaqd did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(l);
        }
        (status, self.log.join("\n"))
    }
}

impl Ssdaqd {
    /// CPU time of all the daemon's threads so far, ns (/proc schedstat).
    pub fn cpu_ns(&self) -> u64 {
        let dir = format!("/proc/{}/task", self.child.id());
        let mut total = 0;
        for task in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    /// Waits until the daemon has used no CPU for 100 ms.
    pub fn wait_idle(&self) {
        let deadline = Instant::now() + WAIT;
        let mut last = self.cpu_ns();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.cpu_ns();
            if now - last < 2_000_000 || Instant::now() > deadline {
                return;
            }
            last = now;
        }
    }

    /// A /proc/PID/status figure in KiB, e.g. `VmRSS` or `VmHWM` (peak).
    pub fn rss_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// SIGINT, a clean exit, and the figures of the closing `stats:` line.
    pub fn stop_stats(self) -> Stats {
        self.signal(libc::SIGINT);
        self.stop_stats_after_signal()
    }

    /// A clean exit after a stop signal already sent, and the figures of
    /// the closing `stats:` line.
    pub fn stop_stats_after_signal(self) -> Stats {
        let (status, log) = self.finish();
        assert!(status.success(), "ssdaqd did not stop cleanly:\n{log}");
        stats_of(&log)
    }
}

impl Drop for Ssdaqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The camera's modules, each a UDP socket on its own source address.
pub struct Camera {
    socks: Vec<UdpSocket>,
    target: SocketAddr,
}

impl Camera {
    pub fn new(modules: u8, port: u16) -> Camera {
        let socks = (0..modules)
            .map(|m| {
                UdpSocket::bind((module_addr(Ipv4Addr::LOCALHOST, m), 0))
                    .expect("bind a module's source address")
            })
            .collect();
        Camera {
            socks,
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        }
    }

    /// Timestamps of readout `i` (0..10) of frame `f`.
    pub fn ts(f: u64, i: u64) -> u64 {
        T0 + (f * 10 + i) * SPACING
    }

    /// The datagram module `m` sends for frame `f`.
    pub fn datagram(m: u8, f: u64) -> Vec<u8> {
        let mut d = Vec::new();
        sim::datagram(SEED, m, Self::ts(f, 0), SPACING, 10, &mut d);
        d
    }

    /// Module `m` sends frame `f`.
    pub fn send(&self, m: u8, f: u64) {
        self.send_raw(m, &Self::datagram(m, f));
    }

    pub fn send_raw(&self, m: u8, bytes: &[u8]) {
        self.socks[m as usize].send_to(bytes, self.target).unwrap();
    }

    /// Sends `bytes` from an arbitrary loopback source address.
    pub fn send_from(&self, src: Ipv4Addr, bytes: &[u8]) {
        let s = UdpSocket::bind((src, 0)).unwrap();
        s.send_to(bytes, self.target).unwrap();
    }
}

/// Receives exactly `n` events (panics on timeout), then checks none follow.
pub fn receive(l: &mut EventListener, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "received {} of {n} events",
            out.len()
        );
        if let Some(ev) = l.recv(Duration::from_millis(100)).unwrap() {
            out.push(ev.bytes().to_vec());
        }
    }
    out
}

/// Asserts that module `m` of `v` holds exactly the simulated readout at `ts`.
pub fn assert_module(v: &EventView<'_>, m: u8, ts: u64) {
    for p in 0..64 {
        let want = ssdaq::event::adc_to_mv(sim::pixel_adc(SEED, m, p, ts));
        assert_eq!(
            v.mv(m as usize, p).to_bits(),
            want.to_bits(),
            "event {} module {m} pixel {p}",
            v.number()
        );
    }
    if let Some(t) = v.module_timestamps(m as usize) {
        assert_eq!(
            t,
            (ts, sim::aux_ts(m, ts)),
            "event {} module {m} timestamps",
            v.number()
        );
    }
}

/// Asserts that module `m` is missing from `v`: NaN row, zero timestamps.
pub fn assert_missing(v: &EventView<'_>, m: u8) {
    assert!(
        (0..64).all(|p| v.mv(m as usize, p).is_nan()),
        "event {} module {m} should be NaN",
        v.number()
    );
    if let Some(t) = v.module_timestamps(m as usize) {
        assert_eq!(t, (0, 0), "event {} module {m} timestamps", v.number());
    }
}

/// `GET path` from `addr` over HTTP/1.0: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let status = r.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}
