//! The Python client (`ssdaq_tools.listener`, tools/python) against the real daemon.
//!
//! Needs a Python with the package tools/python installed: `$SSDAQ_PYTHON`,
//! else `python3`. `./tools/test` (what CI runs) provides one.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

/// Runs a Python script that uses ssdaq_tools.listener against `endpoint`,
/// prints "ready" once connected, then one JSON line per event.
fn run_listener(d: &mut Ssdaqd, n: usize, send: impl FnOnce()) -> Vec<serde_like::Event> {
    let script = format!(
        r#"
import json, sys
from ssdaq_tools.listener import Listener
with Listener({endpoint:?}) as l:
    print("ready", flush=True)
    for _ in range({n}):
        ev = l.recv(timeout=20)
        assert ev is not None, "timed out"
        print(json.dumps(dict(
            format=ev.format, number=ev.number, run=ev.run, timestamp=ev.timestamp,
            present=[bool(x) for x in ev.present],
            data=ev.data.astype("<f8").tobytes().hex(),
            timestamps=None if ev.timestamps is None else ev.timestamps.tolist(),
            cpu_time=ev.cpu_time, shape=list(ev.data.shape))), flush=True)
    print("missed", l.missed, flush=True)
"#,
        endpoint = d.endpoint
    );
    let mut child = Command::new(python("ssdaq_tools.listener"))
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    d.wait_for("subscriber joined");
    send();
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(serde_like::parse(
            &lines.next().expect("an event line").unwrap(),
        ));
    }
    assert_eq!(lines.next().unwrap().unwrap(), "missed 0");
    assert!(child.wait().unwrap().success());
    let _ = std::io::stdout().flush();
    events
}

#[test]
fn python_client_decodes_v1_events_exactly() {
    let mut d = Ssdaqd::start(&["--run-number", "7"]);
    let cam = Camera::new(32, d.port);
    let events = run_listener(&mut d, 30, || {
        for f in 0..3 {
            for m in 0..32u8 {
                if (m, f) != (5, 1) {
                    cam.send(m, f);
                }
            }
        }
    });
    for (i, e) in events.iter().enumerate() {
        let (f, r) = (i as u64 / 10, i as u64 % 10);
        let ts = Camera::ts(f, r);
        assert_eq!(
            (e.format.as_str(), e.number, e.run, e.timestamp),
            ("v1", i as u64 + 1, Some(7), ts)
        );
        assert_eq!(e.shape, vec![32, 64]);
        let ts_rows = e.timestamps.as_ref().unwrap();
        for m in 0..32u8 {
            let missing = (m, f) == (5, 1);
            assert_eq!(
                e.present[m as usize], !missing,
                "event {} module {m}",
                e.number
            );
            for p in 0..64 {
                let got = e.mv(m as usize, p);
                if missing {
                    assert!(got.is_nan());
                } else {
                    let want = ssdaq::event::adc_to_mv(tm_ss_sim::pixel_adc(SEED, m, p, ts));
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "event {} module {m} pixel {p}",
                        e.number
                    );
                }
            }
            let want_ts = if missing {
                [0, 0]
            } else {
                [ts, tm_ss_sim::aux_ts(m, ts)]
            };
            assert_eq!(ts_rows[m as usize], want_ts);
        }
    }
    assert!(d.stop().0.success());
}

#[test]
fn python_client_decodes_v2_events() {
    let mut d = Ssdaqd::start(&["--format", "v2", "--modules", "0-1"]);
    let cam = Camera::new(2, d.port);
    let events = run_listener(&mut d, 10, || {
        cam.send(0, 0);
        cam.send(1, 0);
    });
    for (i, e) in events.iter().enumerate() {
        let ts = Camera::ts(0, i as u64);
        assert_eq!(
            (e.format.as_str(), e.number, e.run, e.timestamp),
            ("v2", i as u64 + 1, None, ts)
        );
        assert!(e.timestamps.is_none());
        let (s, ns) = e.cpu_time.unwrap();
        assert!(s > 1_700_000_000 && ns < 1_000_000_000);
        let want = ssdaq::event::adc_to_mv(tm_ss_sim::pixel_adc(SEED, 1, 63, ts));
        assert_eq!(e.mv(1, 63).to_bits(), want.to_bits());
        assert!(e.mv(2, 0).is_nan());
    }
    assert!(d.stop().0.success());
}

/// Just enough JSON for the lines the script prints (no extra dependency).
mod serde_like {
    pub struct Event {
        pub format: String,
        pub number: u64,
        pub run: Option<u64>,
        pub timestamp: u64,
        pub present: Vec<bool>,
        pub data: Vec<u8>,
        pub timestamps: Option<Vec<[u64; 2]>>,
        pub cpu_time: Option<(u64, u64)>,
        pub shape: Vec<u64>,
    }

    impl Event {
        pub fn mv(&self, m: usize, p: usize) -> f64 {
            let o = (m * 64 + p) * 8;
            f64::from_le_bytes(self.data[o..o + 8].try_into().unwrap())
        }
    }

    fn field<'a>(line: &'a str, key: &str) -> &'a str {
        let start = line
            .find(&format!("\"{key}\": "))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + key.len()
            + 4;
        let rest = &line[start..];
        let mut depth = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' | '}' if depth == 0 => return rest[..i].trim(),
                _ => {}
            }
        }
        rest.trim()
    }

    fn numbers(s: &str) -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().unwrap())
            .collect()
    }

    fn opt(s: &str) -> Option<&str> {
        if s == "null" { None } else { Some(s) }
    }

    pub fn parse(line: &str) -> Event {
        let hex = field(line, "data").trim_matches('"');
        Event {
            format: field(line, "format").trim_matches('"').to_string(),
            number: field(line, "number").parse().unwrap(),
            run: opt(field(line, "run")).map(|s| s.parse().unwrap()),
            timestamp: field(line, "timestamp").parse().unwrap(),
            present: field(line, "present")
                .split(',')
                .map(|s| s.contains("true"))
                .collect(),
            data: (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
            timestamps: opt(field(line, "timestamps"))
                .map(|s| numbers(s).chunks(2).map(|c| [c[0], c[1]]).collect()),
            cpu_time: opt(field(line, "cpu_time")).map(|s| {
                let n = numbers(s);
                (n[0], n[1])
            }),
            shape: numbers(field(line, "shape")),
        }
    }
}

#[test]
fn the_rust_and_python_camera_geometries_are_the_same_facts() {
    use ssdaq_wire::geometry::{MODULE_POSITIONS, SSL2COLROW};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/python/ssdaq_tools/camera_geometry.json");
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let positions: Vec<[u8; 2]> = serde_json::from_value(g["module_positions"].clone()).unwrap();
    let colrow: Vec<u8> = serde_json::from_value(g["ssl2colrow"].clone()).unwrap();
    assert_eq!(positions, MODULE_POSITIONS.to_vec());
    assert_eq!(colrow, SSL2COLROW.to_vec());
}
