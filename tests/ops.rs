//! Operations with the real binaries: `--metrics` scraped and parsed with
//! a Prometheus parser, per-module health steered through the simulator's
//! control, run control with `ssdaq-ctl`, and the alert rules checked by
//! `promtool`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ssdaq::event::EventView;

/// A scrape, parsed by the `prometheus-parse` crate: value by name and labels.
fn scrape(addr: &str) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let s = prometheus_parse::Scrape::parse(lines).expect("the scrape parses");
    let mut out = HashMap::new();
    for sample in s.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let v = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                // The +Inf bucket holds the count.
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => continue,
        };
        out.insert(key, v);
    }
    out
}

/// `ssdaq-ctl --control ep ARGS…`: (exit code, stdout, stderr).
fn ctl(ep: &str, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin("ssdaq-ctl"))
        .args(["--control", ep])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ctl_json(ep: &str, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, out, err) = ctl(ep, &a);
    assert_eq!(code, 0, "ssdaq-ctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_scrape_under_load_parses_and_its_counters_equal_the_summary_at_stop() {
    let mut d = Ssdaqd::start(&["--metrics", "127.0.0.1:0"]);
    let addr = d.metrics_addr();
    let _sub = d.subscribe();
    // 8 modules at 20× the camera's rate, with refused and duplicate
    // datagrams in the mix, while 6 clients scrape as fast as they can.
    let sim = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "127.0.0.1",
            "--modules",
            "8",
            "--rate",
            "500",
        ])
        .args([
            "--duration",
            "2",
            "--malformed-every",
            "7",
            "--duplicate-every",
            "5",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapers: Vec<_> = (0..6)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut n, mut last) = (0u32, 0.0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let m = scrape(&addr);
                    let r = m["ssdaq_datagrams_received_total"];
                    assert!(r >= last, "a counter went back: {last} → {r}");
                    last = r;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let out = sim.wait_with_output().unwrap();
    let sim_log = String::from_utf8_lossy(&out.stderr).into_owned();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes: u32 = scrapers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(scrapes > 20, "only {scrapes} scrapes");
    // Settled: nothing pending and two scrapes alike (snapshots are ≤100 ms old).
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let a = scrape(&addr);
        std::thread::sleep(Duration::from_millis(400));
        let b = scrape(&addr);
        let same = a["ssdaq_datagrams_received_total"] == b["ssdaq_datagrams_received_total"]
            && a["ssdaq_events_published_total"] == b["ssdaq_events_published_total"];
        if same && b["ssdaq_pending_events"] == 0.0 {
            break b;
        }
        assert!(Instant::now() < deadline, "the counters never settled");
    };
    // The latency histogram is exported in its buckets.
    let (status, body) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    for le in ["1e-06", "0.001", "1", "+Inf"] {
        assert!(
            body.contains(&format!(
                "ssdaq_latency_seconds_bucket{{stage=\"arrival_to_zmq\",le=\"{le}\"}}"
            )),
            "no bucket {le}:\n{body}"
        );
    }
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let s = stats_of(&log);
    let sent: u64 = sim_log
        .split("sent ")
        .nth(1)
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{sim_log}"));
    // Scrapes never cost a datagram.
    assert_eq!(s["kernel_drops"], 0, "{log}");
    assert!(s["received"] > sent, "sent {sent} + malformed ones: {log}");
    for (metric, key) in [
        ("ssdaq_datagrams_received_total", "received"),
        ("ssdaq_received_bytes_total", "received_bytes"),
        ("ssdaq_kernel_drops_total", "kernel_drops"),
        ("ssdaq_datagrams_accepted_total", "accepted"),
        ("ssdaq_events_complete_total", "complete"),
        ("ssdaq_events_published_total", "published"),
        ("ssdaq_subscriber_overflows_total", "hwm_overflows"),
        ("ssdaq_datagrams_out_of_sync_total", "out_of_sync"),
        ("ssdaq_clock_steps_total", "clock_steps"),
        ("ssdaq_run_number", "run_number"),
        (
            "ssdaq_latency_seconds_count{stage=arrival_to_slot}",
            "arrival_to_slot_n",
        ),
    ] {
        let got = m
            .get(metric)
            .copied()
            .unwrap_or_else(|| panic!("no {metric}"));
        assert_eq!(got, s[key] as f64, "{metric} vs the summary's {key}");
    }
    let sum = |prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(sum("ssdaq_datagrams_refused_total{"), s["refused"] as f64);
    assert!(s["refused"] > 0, "the malformed datagrams are refused");
    assert_eq!(sum("ssdaq_events_total{"), s["events"] as f64);
    assert_eq!(
        m["ssdaq_readouts_total{fate=duplicate}"],
        s["duplicate"] as f64
    );
    assert!(s["duplicate"] > 0);
    assert_eq!(sum("ssdaq_module_datagrams_total{"), s["accepted"] as f64);
    for module in 0..8 {
        assert_eq!(m[&format!("ssdaq_module_healthy{{module={module}}}")], 1.0);
    }
    assert!(
        !m.contains_key("ssdaq_module_healthy{module=8}"),
        "never heard: no row"
    );
}

#[test]
fn status_json_and_bad_requests_over_http() {
    let mut d = Ssdaqd::start(&["--metrics", "127.0.0.1:0"]);
    let addr = d.metrics_addr();
    let cam = Camera::new(4, d.port);
    for f in 0..3 {
        for m in 0..4 {
            cam.send(m, f);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http_get(&addr, "/status");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["run"]["state"], "running");
    assert_eq!(v["stats"]["accepted"], 12);
    assert_eq!(v["modules"].as_array().unwrap().len(), 4);
    assert_eq!(http_get(&addr, "/nothing").0, 404);
    // Garbage on the socket: the server answers the next request all the same.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"\x00\xff garbage\r\n\r\n").unwrap();
    drop(s);
    assert_eq!(http_get(&addr, "/metrics").0, 200);
    // A body of 100 GB announced (tiny_http drained it into one buffer of
    // that size: the daemon aborted), and one announced and never sent.
    let mut huge = TcpStream::connect(&addr).unwrap();
    huge.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        .unwrap();
    let mut held = TcpStream::connect(&addr).unwrap();
    held.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_get(&addr, "/metrics").0,
        200,
        "other scrapes are answered"
    );
    // The stop does not wait for the client that holds its request.
    let t = Instant::now();
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop((huge, held));
}

/// The simulator's `--control` endpoint, from its log line.
fn start_sim(port: u16, modules: u8, extra: &[&str]) -> (std::process::Child, String) {
    let mut sim = Command::new(bin("tm-ss-sim"))
        .args([
            &port.to_string(),
            "127.0.0.1",
            "--modules",
            &modules.to_string(),
        ])
        .args(["--control", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stderr.take().unwrap()).lines();
    let ep = loop {
        let l = lines
            .next()
            .expect("the simulator logs its endpoint")
            .unwrap();
        if let Some(rest) = l.split("taking commands on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (sim, ep)
}

fn sim_ctl(ep: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new(bin("tm-ss-sim"))
        .args(["ctl", "--control", ep])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn module_health(addr: &str, m: u64) -> serde_json::Value {
    let (_, body) = http_get(addr, "/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["module"] == m)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_module_stopped_through_the_simulator_is_unhealthy_within_its_timeout_and_healthy_after() {
    let mut d = Ssdaqd::start(&["--metrics", "127.0.0.1:0", "--module-timeout", "0.5"]);
    let addr = d.metrics_addr();
    let (mut sim, ep) = start_sim(d.port, 4, &["--rate", "50"]);
    d.wait_for("modules heard from");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(module_health(&addr, 2)["healthy"], true);
    assert_eq!(sim_ctl(&ep, &["send", "off", "2"])["sending"], "0-1,3");
    let off = Instant::now();
    let unhealthy = loop {
        let h = module_health(&addr, 2);
        if h["healthy"] == false {
            break off.elapsed();
        }
        assert!(off.elapsed() < Duration::from_secs(5), "never unhealthy");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The timeout, the 20 ms between datagrams, one 100 ms snapshot, slack.
    assert!(
        unhealthy >= Duration::from_millis(400) && unhealthy < Duration::from_millis(2000),
        "unhealthy after {unhealthy:?} for a 0.5 s timeout"
    );
    let h = module_health(&addr, 2);
    assert_eq!(h["silent"], true);
    // Said once the grouping of silences (half a second) has passed.
    d.wait_for("module 2: silent for");
    assert_eq!(module_health(&addr, 1)["healthy"], true, "only module 2");
    let sent = sim_ctl(&ep, &["get", "sent"]);
    assert!(sent["sent"]["2"].as_u64().unwrap() < sent["sent"]["1"].as_u64().unwrap());
    sim_ctl(&ep, &["send", "on", "2"]);
    let on = Instant::now();
    while module_health(&addr, 2)["healthy"] != true {
        assert!(on.elapsed() < Duration::from_secs(3), "never healthy again");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Bad commands are refused and change nothing.
    let o = Command::new(bin("tm-ss-sim"))
        .args(["ctl", "--control", &ep, "send", "off", "9"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not simulated"));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(module_health(&addr, 2)["healthy"], true);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(sim.id() as i32, libc::SIGINT) };
    sim.wait().unwrap();
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("module 2: silent for").count(), 1, "{log}");
    assert_eq!(log.matches("module 2: heard again").count(), 1, "{log}");
    assert!(!log.contains("module 1: silent"), "{log}");
}

#[test]
fn start_run_42_numbers_its_events_opens_a_dump_that_replays_to_exactly_them() {
    let dir = tmpdir("runctl");
    let mut d = Ssdaqd::start(&[
        "--dump",
        dir.to_str().unwrap(),
        "--control",
        "tcp://127.0.0.1:*",
        "--run-number",
        "7",
    ]);
    let ep = d.control_endpoint();
    let mut sub = d.subscribe();
    let cam = Camera::new(32, d.port);
    let send = |frames: std::ops::Range<u64>| {
        for f in frames {
            for m in 0..32 {
                cam.send(m, f);
            }
        }
    };
    send(0..3);
    let before = receive(&mut sub, 30);
    let r = ctl_json(&ep, &["start-run", "42"]);
    assert_eq!(r["run"], 42);
    assert_eq!(r["ended"]["run"], 7);
    let dump42 = std::path::PathBuf::from(r["dump"].as_str().unwrap());
    assert!(
        dump42
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("ssdaq-run000042-"),
        "{dump42:?}"
    );
    // Module 9 loses a frame: a partial event in the run.
    send(3..5);
    for m in (0..32).filter(|&m| m != 9) {
        cam.send(m, 5);
    }
    send(6..10);
    std::thread::sleep(Duration::from_millis(300));
    let r = ctl_json(&ep, &["stop-run"]);
    assert_eq!(r["ended"]["run"], 42);
    assert_eq!(r["ended"]["dump"], dump42.to_str().unwrap());
    let n42 = r["ended"]["events"].as_u64().unwrap() as usize;
    // Between runs: received and counted, nothing published or dumped.
    send(10..13);
    std::thread::sleep(Duration::from_millis(300));
    let status = ctl_json(&ep, &["status"]);
    assert_eq!(status["run"]["state"], "stopped");
    assert_eq!(status["stats"]["between_runs"], 96);
    // A second stop-run and nonsense are refused and change nothing.
    let (code, _, err) = ctl(&ep, &["stop-run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no run is recording"), "{err}");
    let (code, _, err) = ctl(&ep, &["start-run", "x"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = ctl(&ep, &["set", "slots", "64"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = ctl("tcp://127.0.0.1:1", &["--timeout", "0.3", "status"]);
    assert_eq!(code, 3, "no daemon there: no reply");
    // Two operators at once: each start-run gets its own number, and a
    // stop-run right after a start-run is taken (never judged on a stale
    // snapshot).
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ctl_json(&ep, &["start-run"]));
        let b = s.spawn(|| ctl_json(&ep, &["start-run"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a["run"], b["run"], "{a} {b}");
    assert_eq!(ctl_json(&ep, &["stop-run"])["ok"], true);
    let mut live = before;
    live.extend(receive(&mut sub, n42));
    assert!(
        sub.recv(Duration::from_millis(300)).unwrap().is_none(),
        "nothing published between runs"
    );
    let (st, log) = d.stop();
    assert!(st.success(), "{log}");
    let views: Vec<EventView<'_>> = live.iter().map(|b| EventView::decode(b).unwrap()).collect();
    assert!(views[..30].iter().all(|v| v.run() == Some(7)));
    let run42 = &views[30..];
    assert!(run42.iter().all(|v| v.run() == Some(42)));
    let numbers: Vec<u64> = run42.iter().map(|v| v.number()).collect();
    assert_eq!(
        numbers,
        (1..=n42 as u64).collect::<Vec<_>>(),
        "numbers from 1"
    );
    assert!(run42.iter().any(|v| v.present_mask().count_ones() == 31));
    // The run's dump replays to exactly the run's events, byte for byte.
    let out = dir.join("events42.bin");
    let r = Command::new(bin("ssdaq-replay"))
        .args([dump42.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let replayed = std::fs::read(&out).unwrap();
    assert_eq!(replayed, live[30..].concat(), "replay of run 42's dump");
    // The first run's file, run 42's, and the two operators' runs 43 and
    // 44; nothing of the pauses.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".raw"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for run in ["run000042-", "run000043-", "run000044-"] {
        assert!(files.iter().any(|f| f.contains(run)), "{run}: {files:?}");
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = std::env::var("SSDAQ_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/prometheus");
    for args in [
        vec!["check", "rules", "ssdaq-alerts.yml"],
        vec!["test", "rules", "ssdaq-alerts.test.yml"],
    ] {
        let o = Command::new(&promtool)
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{promtool}: {e}; install it (Debian: apt-get install prometheus; \
                     tools/test does as root) or set SSDAQ_PROMTOOL"
                )
            });
        assert!(
            o.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // Every metric the rules use is one ssdaqd exports.
    let mut d = Ssdaqd::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--dump",
        tmpdir("rules").to_str().unwrap(),
    ]);
    let addr = d.metrics_addr();
    let cam = Camera::new(2, d.port);
    cam.send(0, 0);
    cam.send(1, 0);
    std::thread::sleep(Duration::from_millis(300));
    let (_, body) = http_get(&addr, "/metrics");
    // Every metric the rules and the Grafana dashboard use is one ssdaqd
    // exports (a histogram's `_bucket` series included).
    let rules = std::fs::read_to_string(dir.join("ssdaq-alerts.yml")).unwrap();
    let grafana = std::fs::read_to_string(dir.join("../grafana/ssdaq.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&grafana).expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() > 10);
    let used = rules + &exprs.join("\n");
    let mut checked = 0;
    for word in used.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ssdaq_") && word.len() > 6 {
            assert!(
                body.contains(&format!("\n{word}")),
                "{word} is not exported:\n{body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20);
    // promtool lints the exposition too (names, help, types).
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let o = lint.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    d.stop();
}

#[test]
fn json_logs_are_one_object_per_line_with_module_numbers_as_fields() {
    let mut d = Ssdaqd::start(&[
        "--log-format",
        "json",
        "--module-timeout",
        "0.3",
        "--control",
        "tcp://127.0.0.1:*",
    ]);
    let ep = d
        .wait_for("\"control: tcp://")
        .split("control: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // A client that sends and vanishes before the reply blocks nothing.
    {
        let ctx = zmq::Context::new();
        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.connect(&ep).unwrap();
        req.send(&b"status"[..], 0).unwrap();
    }
    let cam = Camera::new(3, d.port);
    for m in 0..3 {
        cam.send(m, 0);
    }
    // Modules 0 and 1 go on for 1.5 s; module 2 falls silent.
    for f in 1..=15 {
        std::thread::sleep(Duration::from_millis(100));
        for m in 0..2 {
            cam.send(m, f);
        }
    }
    d.wait_for("module 2: silent");
    assert_eq!(ctl_json(&ep, &["ping"])["pong"], true);
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let json_lines: Vec<serde_json::Value> = log
        .lines()
        .take_while(|l| !l.starts_with("ssdaqd summary"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(json_lines.len() > 3);
    let silent = json_lines
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("module 2: silent"))
        })
        .expect("the silent warning");
    assert_eq!(silent["level"], "WARN");
    assert_eq!(silent["fields"]["module"], 2);
    assert!(!log.contains("\u{1b}["), "no colours off a terminal");
}

#[test]
fn ssdaq_top_renders_the_camera_and_its_rate_in_80_by_24_under_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed (Debian: apt-get install tmux; tools/test does as root)");
    }
    let mut d = Ssdaqd::start(&["--metrics", "127.0.0.1:0"]);
    let addr = d.metrics_addr();
    // 32 modules, one dead, at twice the camera's rate.
    let mut sim = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "127.0.0.1",
            "--modules",
            "32",
            "--rate",
            "50",
        ])
        .args(["--dead-module", "5", "--duration", "20"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let session = format!("ssdaq-top-{}", std::process::id());
    let top = format!("{} http://{addr}", bin("ssdaq-top").display());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let o = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &top,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Two fetches a second apart give the rates; wait for them.
    let deadline = Instant::now() + Duration::from_secs(15);
    let screen = loop {
        std::thread::sleep(Duration::from_millis(500));
        let o = tmux(&["capture-pane", "-p", "-t", &session]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        if s.contains("datagrams ") && !s.contains("datagrams -") && s.contains("31 modules heard")
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "ssdaq-top never showed the camera:\n{s}"
        );
    };
    tmux(&["send-keys", "-t", &session, "q"]);
    std::thread::sleep(Duration::from_millis(500));
    let still = tmux(&["has-session", "-t", &session]).status.success();
    tmux(&["kill-session", "-t", &session]);
    let _ = sim.kill();
    let _ = sim.wait();
    d.stop();
    assert!(!still, "q quits");
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    assert!(
        screen.contains("camera: 31 modules heard, 31 healthy"),
        "{screen}"
    );
    assert!(
        screen.contains(" 5 ·"),
        "module 5 shown as never heard:\n{screen}"
    );
    let rate: f64 = screen
        .split("datagrams ")
        .nth(1)
        .and_then(|x| x.split("/s").next())
        .and_then(|x| x.trim().parse().ok())
        .unwrap_or_else(|| panic!("{screen}"));
    // 31 modules × 50 datagrams/s (the first second's rate may lag a little).
    assert!((800.0..2300.0).contains(&rate), "rate {rate}:\n{screen}");
    assert!(screen.contains("run 0 running"), "{screen}");
}

#[test]
fn ssdaq_listen_camera_draws_the_image_with_the_dead_module_marked() {
    let mut d = Ssdaqd::start(&[]);
    let ep = d.endpoint.clone();
    let listen = Command::new(bin("ssdaq-listen"))
        .args([&ep, "--camera", "-n", "3", "--timeout", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_for("subscriber joined");
    let cam = Camera::new(32, d.port);
    for f in 0..3 {
        for m in (0..32).filter(|&m| m != 5) {
            cam.send(m, f);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = listen.wait_with_output().unwrap();
    d.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    let frame = text.rsplit("\x1b[H").next().unwrap();
    assert_eq!(frame.lines().count(), 24, "{frame}");
    assert!(frame.contains("missing 5"), "{frame}");
    assert!(frame.contains("modules 31/32"), "{frame}");
    // Module 5 (grid row 1, column 1: cells 8..16 of lines 4..8) is grey
    // with its number; the others are drawn in true colour.
    let mut plain = String::new();
    let mut esc = false;
    for ch in frame.chars() {
        match (esc, ch) {
            (false, '\x1b') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    assert!(plain.lines().nth(5).unwrap().contains("▀ x5 ▀"), "{plain}");
    assert!(frame.matches("\x1b[38;2;").count() > 1000);
    assert!(frame.contains("placement: default"));
}

#[test]
fn a_drain_under_a_storm_of_scrapes_loses_nothing() {
    let mut d = Ssdaqd::start(&["--metrics", "127.0.0.1:0", "--modules", "0-31"]);
    let addr = d.metrics_addr();
    assert_eq!(
        http_get(&addr, "/metrics").0,
        200,
        "a snapshot from the start"
    );
    // A stalled daemon, 16 000 datagrams waiting in its socket.
    d.signal(libc::SIGSTOP);
    let sim = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "127.0.0.1",
            "--modules",
            "32",
            "--flood",
        ])
        .args(["--count", "500"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(sim.success());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapers: Vec<_> = (0..6)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    scrape(&addr);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    d.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(&addr)["ssdaq_datagrams_accepted_total"] < 16_000.0 {
        assert!(Instant::now() < deadline, "the drain never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n: u32 = scrapers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(n > 6, "{n} scrapes");
    let s = d.stop_stats();
    assert_eq!(
        (s["received"], s["accepted"], s["kernel_drops"]),
        (16_000, 16_000, 0)
    );
}
