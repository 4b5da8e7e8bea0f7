//! The camera views with the real binaries: `ssdaq-view` driven by real
//! headless Chromium against a simulated camera with a dead module.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A child process killed when the test ends, passed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_browser_page_draws_the_live_camera_with_the_dead_module_marked() {
    let chromium = std::env::var("SSDAQ_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let dir = tmpdir("view");
    let mut d = Ssdaqd::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = d.metrics_addr();
    let view = Command::new(bin("ssdaq-view"))
        .args(["--sub", &d.endpoint, "--http", "127.0.0.1:0"])
        .args(["--daemon-status", &format!("http://{metrics}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut view = Reaped(view);
    let mut lines = BufReader::new(view.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let l = lines
            .next()
            .expect("ssdaq-view says where it serves")
            .unwrap();
        if let Some(rest) = l.split("open http://").nth(1) {
            break rest.trim_end_matches('/').to_string();
        }
    };
    d.wait_for("subscriber joined");
    let sim = Command::new(bin("tm-ss-sim"))
        .args([
            &d.port.to_string(),
            "127.0.0.1",
            "--modules",
            "32",
            "--rate",
            "25",
        ])
        .args(["--dead-module", "5", "--duration", "60"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sim = Reaped(sim);
    let shot = dir.join("view.png");
    let run = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        // Long enough for a debug build on 2 busy cores to draw frames
        // before the screenshot (taken when the timeout ends).
        .args(["--window-size=1200,800", "--timeout=10000"])
        .arg(format!("--screenshot={}", shot.display()))
        // The load event (and so the screenshot) waits for 5 frames drawn.
        .arg(format!("http://{addr}/?wait=5"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("{chromium}: {e}; install it (Debian: apt-get install chromium; tools/test does as root) or set SSDAQ_CHROMIUM")
        });
    assert!(run.success(), "chromium: {run:?}");
    // What the page said it drew (it reports once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let r: serde_json::Value = serde_json::from_str(&http_get(&addr, "/report").1).unwrap();
        if r["page"]["frames"].as_u64().unwrap_or(0) >= 3 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the page never reported frames: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(sim);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(view.0.id() as i32, libc::SIGINT) };
    let ended = view.0.wait().unwrap();
    d.stop();
    assert!(ended.success(), "ssdaq-view on SIGINT: {ended:?}");
    let page = &report["page"];
    assert_eq!(page["missing"], serde_json::json!([5]), "{report}");
    assert!(
        page["last"].as_u64() > page["first"].as_u64(),
        "the image updates: {report}"
    );
    assert!(page["lit"].as_u64().unwrap() > 500, "{report}");
    // The screenshot: a camera of many colours, and the dead module's grey block.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        c => panic!("screenshot colour type {c:?}"),
    };
    let mut colours = std::collections::HashSet::new();
    let mut grey = 0;
    for p in buf[..info.buffer_size()].chunks(px) {
        colours.insert((p[0], p[1], p[2]));
        if (p[0], p[1], p[2]) == (70, 70, 70) {
            grey += 1;
        }
    }
    assert!(colours.len() > 200, "{} colours", colours.len());
    // An 80 × 80 block less its cross and label.
    assert!((3000..6400).contains(&grey), "{grey} grey pixels");
    std::fs::copy(&shot, std::env::temp_dir().join("ssdaq-view-latest.png")).unwrap();
}
