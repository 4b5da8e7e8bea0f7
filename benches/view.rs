//! What `ssdaq-view` costs with the camera at 100× its real rate
//! (docs/performance.md, "Views"): the daemon fed by the paced simulator
//! (32 modules × 2500 datagrams/s, 2500 events/s), a headless Chromium on
//! the page, and beside the viewer, in the same run, the bare subscriber
//! `ssdaq-listen --summary` on the same stream: the CPU of each (% of one
//! core, from /proc) and the frames the page received per second.
//! Median of 3 trials. Run: `cargo bench --bench view` (needs `chromium`,
//! or `SSDAQ_CHROMIUM`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// CPU of a process so far, ns (all its threads).
fn cpu_ns(c: &Child) -> u64 {
    let dir = format!("/proc/{}/task", c.id());
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("view bench: run with `cargo bench --bench view`");
        return;
    }
    let chromium = std::env::var("SSDAQ_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    const SECS: u64 = 10;
    let (mut view_cpu, mut listen_cpu, mut fps) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let mut d = Ssdaqd::start(&[]);
        let mut view = Command::new(bin("ssdaq-view"))
            .args(["--sub", &d.endpoint, "--http", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(view.stderr.take().unwrap()).lines();
        let addr = loop {
            let l = lines.next().unwrap().unwrap();
            if let Some(rest) = l.split("open http://").nth(1) {
                break rest.trim_end_matches('/').to_string();
            }
        };
        let mut listen = Command::new(bin("ssdaq-listen"))
            .args([&d.endpoint, "--summary"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        d.wait_for_nth("subscriber joined", 2);
        let mut sim = Command::new(bin("tm-ss-sim"))
            .args([
                &d.port.to_string(),
                "127.0.0.1",
                "--modules",
                "32",
                "--rate",
                "2500",
            ])
            .args(["--duration", &(SECS + 8).to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut browser = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1200,800",
            ])
            .arg(format!("--timeout={}", (SECS + 4) * 1000))
            .arg("--screenshot=/dev/null")
            .arg(format!("http://{addr}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium");
        std::thread::sleep(Duration::from_secs(2));
        let f0: serde_json::Value = serde_json::from_str(&http_get(&addr, "/report").1).unwrap();
        let (v0, l0, t0) = (cpu_ns(&view), cpu_ns(&listen), Instant::now());
        std::thread::sleep(Duration::from_secs(SECS));
        let f1: serde_json::Value = serde_json::from_str(&http_get(&addr, "/report").1).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        let (v1, l1) = (cpu_ns(&view), cpu_ns(&listen));
        let frames = f1["page"]["frames"].as_f64().unwrap_or(0.0)
            - f0["page"]["frames"].as_f64().unwrap_or(0.0);
        view_cpu.push((v1 - v0) as f64 / 1e9 / dt * 100.0);
        listen_cpu.push((l1 - l0) as f64 / 1e9 / dt * 100.0);
        fps.push(frames / dt);
        println!(
            "trial: ssdaq-view {:.1} % of a core, ssdaq-listen --summary {:.1} %, page {:.1} frames/s",
            view_cpu.last().unwrap(),
            listen_cpu.last().unwrap(),
            fps.last().unwrap()
        );
        for c in [&mut browser, &mut sim, &mut listen, &mut view] {
            let _ = c.kill();
            let _ = c.wait();
        }
        d.stop();
    }
    let (v, l, f) = (
        median(&mut view_cpu),
        median(&mut listen_cpu),
        median(&mut fps),
    );
    println!(
        "ssdaq-view at 100× (2500 events/s): {v:.1} % of a core (bare subscriber {l:.1} %, ratio {:.2}), page {f:.1} frames/s",
        v / l.max(0.01)
    );
    println!("RESULT view_cpu_pct={v:.2} listen_cpu_pct={l:.2} page_fps={f:.2}");
}
