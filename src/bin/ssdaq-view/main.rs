//! `ssdaq-view`: the live camera in a browser.
//!
//! A subscriber (any number can run, wherever the event stream reaches)
//! that serves one page on `--http ADDR` (loopback by default), everything
//! from the binary itself (no CDN: the telescope has no internet):
//!
//! * `GET /`: the page (`index.html`, compiled in): the camera image on the
//!   48 × 48 grid, time series of module means and chosen pixels, and the
//!   daemon's health when `--daemon-status` is given;
//! * `GET /stream`: server-sent events, one frame per tick (10 a second at
//!   most): the latest event only; a slow browser misses frames, never
//!   queues them;
//! * `GET /frame`: the latest frame as JSON; `GET /daemon`: the daemon's
//!   `/status`, fetched for the page; `GET /report`: what the page last
//!   said it drew (it posts its state once a second), and frames sent.
//!
//! Threads: the subscriber keeps the latest event; the ticker turns it into
//! a frame (values, and values less each pixel's running median) 10 times a
//! second and offers it to each stream's own thread through a queue of one.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use ssdaq::listen::EventListener;
use ssdaq::packet::{N_MODULES, N_PIXELS};

const PAGE: &str = include_str!("index.html");

#[derive(Parser, Debug)]
#[command(
    name = "ssdaq-view",
    version,
    about = "The live CHEC-S camera in a browser: subscribe to ssdaqd and serve a page",
    after_help = "Open http://ADDR/ in a browser (default http://127.0.0.1:8080/)."
)]
struct Cli {
    /// The daemon's event endpoint.
    #[arg(long = "sub", value_name = "ENDPOINT", default_value = ssdaq::publish::DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Serve the page here: a port (on 127.0.0.1) or HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = http_addr)]
    http: SocketAddr,
    /// The daemon's --metrics address, to show its health beside the image
    /// (e.g. http://127.0.0.1:9187).
    #[arg(long, value_name = "URL")]
    daemon_status: Option<String>,
    /// Frames per second sent to each browser (1..=10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=10))]
    fps: u8,
}

fn http_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a port or HOST:PORT, e.g. 8080 or 127.0.0.1:8080"))
}

/// The latest event, as the subscriber left it.
#[derive(Clone)]
struct Latest {
    number: u64,
    timestamp: u64,
    run: Option<u64>,
    present: u32,
    values: Box<[[f32; N_PIXELS]; N_MODULES]>,
}

/// Frames of a pixel's running median: this many ticks.
const MEDIAN_OF: usize = 50;

/// Each pixel's last values, for the pedestal-subtracted image.
struct Pedestal {
    history: VecDeque<Box<[[f32; N_PIXELS]; N_MODULES]>>,
}

impl Pedestal {
    fn median(&self, m: usize, p: usize, scratch: &mut Vec<f32>) -> f32 {
        scratch.clear();
        scratch.extend(
            self.history
                .iter()
                .map(|h| h[m][p])
                .filter(|x| x.is_finite()),
        );
        if scratch.is_empty() {
            return f32::NAN;
        }
        let mid = scratch.len() / 2;
        *scratch.select_nth_unstable_by(mid, f32::total_cmp).1
    }
}

struct Shared {
    latest: Mutex<Option<Latest>>,
    received: AtomicU64,
    missed: AtomicU64,
    streams: Mutex<Vec<SyncSender<Arc<String>>>>,
    frame: Mutex<Arc<String>>,
    frames_sent: AtomicU64,
    /// What a page last said it drew (`POST /report`).
    report: Mutex<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = match tiny_http::Server::http(cli.http) {
        Ok(s) => s,
        Err(e) => {
            ssdaq::errln!("ssdaq-view: --http {}: {e}", cli.http);
            return ExitCode::from(2);
        }
    };
    let mut listener = match EventListener::connect(&cli.endpoint) {
        Ok(l) => l,
        Err(e) => {
            ssdaq::errln!("ssdaq-view: {e}");
            return ExitCode::from(2);
        }
    };
    let daemon = match cli
        .daemon_status
        .as_deref()
        .map(ssdaq::view::host_port)
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            ssdaq::errln!("ssdaq-view: --daemon-status: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = server.server_addr().to_ip().unwrap_or(cli.http);
    ssdaq::errln!(
        "ssdaq-view: events from {}; open http://{addr}/",
        cli.endpoint
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let shared = Arc::new(Shared {
        latest: Mutex::new(None),
        received: AtomicU64::new(0),
        missed: AtomicU64::new(0),
        streams: Mutex::new(Vec::new()),
        frame: Mutex::new(Arc::new("{}".into())),
        frames_sent: AtomicU64::new(0),
        report: Mutex::new("{}".into()),
    });
    let sub = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(ev)) = listener.recv(Duration::from_millis(100)) else {
                    continue;
                };
                let v = ev.view();
                let mut values = Box::new([[f32::NAN; N_PIXELS]; N_MODULES]);
                for (m, row) in values.iter_mut().enumerate() {
                    if v.has_module(m) {
                        for (x, y) in row.iter_mut().zip(v.row(m)) {
                            *x = y as f32;
                        }
                    }
                }
                let l = Latest {
                    number: v.number(),
                    timestamp: v.timestamp(),
                    run: v.run(),
                    present: v.present_mask(),
                    values,
                };
                *shared.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(l);
                shared
                    .received
                    .store(listener.received(), Ordering::Relaxed);
                shared.missed.store(listener.missed(), Ordering::Relaxed);
            }
        })
    };
    let ticker = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let every = Duration::from_secs_f64(1.0 / f64::from(cli.fps));
        std::thread::spawn(move || tick(&shared, &stop, every))
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        serve(req, &shared, daemon.as_deref(), &stop);
    }
    let _ = sub.join();
    let _ = ticker.join();
    ExitCode::SUCCESS
}

/// Turns the latest event into a frame every `every`, and offers it.
fn tick(shared: &Shared, stop: &AtomicBool, every: Duration) {
    let mut ped = Pedestal {
        history: VecDeque::with_capacity(MEDIAN_OF + 1),
    };
    let mut scratch = Vec::with_capacity(MEDIAN_OF);
    let mut last_number = None;
    let mut next = Instant::now();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        next += every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let latest = shared
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(l) = latest else { continue };
        if last_number == Some((l.number, l.timestamp)) {
            continue; // no new event: nothing to send
        }
        last_number = Some((l.number, l.timestamp));
        if ped.history.len() == MEDIAN_OF {
            ped.history.pop_front();
        }
        ped.history.push_back(l.values.clone());
        let round = |x: f32| {
            if x.is_finite() {
                json!((f64::from(x) * 10.0).round() / 10.0)
            } else {
                Value::Null
            }
        };
        let mut values = Vec::with_capacity(N_MODULES * N_PIXELS);
        let mut minus_median = Vec::with_capacity(N_MODULES * N_PIXELS);
        for m in 0..N_MODULES {
            for p in 0..N_PIXELS {
                let x = l.values[m][p];
                values.push(round(x));
                minus_median.push(round(x - ped.median(m, p, &mut scratch)));
            }
        }
        let frame = Arc::new(
            json!({
                "number": l.number,
                "timestamp": l.timestamp,
                "run": l.run,
                "present": l.present,
                "values": values,
                "minus_median": minus_median,
                "median_of": ped.history.len(),
                "received": shared.received.load(Ordering::Relaxed),
                "missed": shared.missed.load(Ordering::Relaxed),
                "uptime_s": started.elapsed().as_secs_f64(),
            })
            .to_string(),
        );
        *shared.frame.lock().unwrap_or_else(PoisonError::into_inner) = frame.clone();
        // Each stream takes it if its last one is gone; a slow one misses it.
        shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| {
                !matches!(
                    s.try_send(frame.clone()),
                    Err(TrySendError::Disconnected(_))
                )
            });
    }
}

fn serve(
    mut req: tiny_http::Request,
    shared: &Arc<Shared>,
    daemon: Option<&str>,
    stop: &Arc<AtomicBool>,
) {
    use tiny_http::{Header, Response};
    let h = |v: &str| Header::from_bytes("Content-Type", v).expect("a valid header");
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let _ = match path.as_str() {
        "/" | "/index.html" => {
            req.respond(Response::from_string(PAGE).with_header(h("text/html; charset=utf-8")))
        }
        // `/?wait=N` loads an image from here that comes once the page has
        // drawn N frames (at most 15 s): a headless browser's screenshot,
        // taken at the load event, then shows a drawn camera.
        "/drawn" => {
            let n: u64 = req
                .url()
                .split("n=")
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(1);
            let shared = shared.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(15);
                while Instant::now() < until {
                    let r = shared
                        .report
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    let frames = serde_json::from_str::<Value>(&r)
                        .ok()
                        .and_then(|v| v["frames"].as_u64())
                        .unwrap_or(0);
                    if frames >= n {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = req.respond(Response::from_string("").with_status_code(204));
            });
            Ok(())
        }
        "/report" if *req.method() == tiny_http::Method::Post => {
            let mut body = String::new();
            let ok = std::io::Read::take(req.as_reader(), 64 << 10)
                .read_to_string(&mut body)
                .is_ok()
                && serde_json::from_str::<Value>(&body).is_ok();
            if ok {
                *shared.report.lock().unwrap_or_else(PoisonError::into_inner) = body;
            }
            req.respond(Response::from_string("").with_status_code(if ok { 204 } else { 400 }))
        }
        "/report" => {
            let r = shared
                .report
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let sent = shared.frames_sent.load(Ordering::Relaxed);
            let body = format!("{{\"page\":{r},\"frames_sent\":{sent}}}");
            req.respond(Response::from_string(body).with_header(h("application/json")))
        }
        "/frame" => {
            let f = shared
                .frame
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            req.respond(Response::from_string(f.as_str()).with_header(h("application/json")))
        }
        "/daemon" => {
            let body = match daemon {
                None => json!({"configured": false}),
                Some(hp) => match ssdaq::view::fetch_status(hp) {
                    Ok(v) => v,
                    Err(e) => json!({"configured": true, "error": e}),
                },
            };
            req.respond(Response::from_string(body.to_string()).with_header(h("application/json")))
        }
        "/stream" => {
            let (tx, rx) = sync_channel::<Arc<String>>(1);
            shared
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(tx);
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut w = req.into_writer();
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
                if w.write_all(head.as_bytes())
                    .and_then(|()| w.flush())
                    .is_err()
                {
                    return;
                }
                while !stop.load(Ordering::Relaxed) {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(f) => {
                            let sent = write!(w, "data: {f}\n\n").and_then(|()| w.flush());
                            if sent.is_err() {
                                return; // the browser left
                            }
                            shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                        }
                        // A comment keeps the connection, and finds a closed one.
                        Err(_) => {
                            if w.write_all(b": idle\n\n").and_then(|()| w.flush()).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Ok(())
        }
        _ => req.respond(Response::from_string("not found\n").with_status_code(404)),
    };
}
