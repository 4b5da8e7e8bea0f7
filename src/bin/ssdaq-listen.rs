//! `ssdaq-listen`: subscribe to ssdaqd and print events as they arrive.
//!
//! Like the original example listener: per event its number, timestamp,
//! the modules present and one module's 64 values (`-t MODULE`). With
//! `--summary`, once a second: event rate, completeness and missed events.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use ssdaq::builder::format_module_set;
use ssdaq::event::EventView;
use ssdaq::listen::EventListener;
use ssdaq::packet::N_MODULES;

#[derive(Parser)]
#[command(
    name = "ssdaq-listen",
    version,
    about = "Print the events an ssdaqd publishes"
)]
struct Cli {
    /// ZeroMQ endpoint of the publisher.
    #[arg(default_value = ssdaq::publish::DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Print the values of this module.
    #[arg(short = 't', long = "module", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..32))]
    module: u8,
    /// Exit after this many events.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Exit with status 1 if no event arrives for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Print rates and completeness once a second instead of every event.
    #[arg(long)]
    summary: bool,
    /// Draw the latest event as a camera image in the terminal (48 × 24
    /// character cells, true colour), at most 5 times a second.
    #[arg(long, conflicts_with = "summary")]
    camera: bool,
    /// The colour scale's range in mV for --camera, e.g. 0:1200 (default:
    /// each event's own range).
    #[arg(long, value_name = "LO:HI", value_parser = mv_range, requires = "camera")]
    range: Option<(f64, f64)>,
}

fn mv_range(s: &str) -> Result<(f64, f64), String> {
    let bad = || format!("`{s}` is not a range LO:HI in mV, e.g. 0:1200");
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    (a.is_finite() && b.is_finite() && a < b)
        .then_some((a, b))
        .ok_or_else(bad)
}

/// Frames of `--camera` at most this often (it decimates, never queues).
const CAMERA_EVERY: Duration = Duration::from_millis(200);

fn main() {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).expect("installing a signal handler");
    }
    let mut listener = match EventListener::connect(&cli.endpoint) {
        Ok(l) => l,
        Err(e) => {
            ssdaq::errln!("ssdaq-listen: cannot subscribe to {e}");
            std::process::exit(1);
        }
    };
    let silence = cli.timeout.map(Duration::from_secs_f64);
    let mut last_event = Instant::now();
    let mut window = Window::default();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut status = 0;
    let mut next_frame = Instant::now();
    if cli.camera {
        let _ = write!(out, "\x1b[2J");
    }
    while !stop.load(Ordering::Relaxed) && cli.count.is_none_or(|n| listener.received() < n) {
        match listener.recv(Duration::from_millis(100)) {
            Ok(Some(ev)) => {
                last_event = Instant::now();
                let v = ev.view();
                if cli.camera {
                    if Instant::now() >= next_frame {
                        next_frame = Instant::now() + CAMERA_EVERY;
                        let frame = ssdaq::view::camera_ansi(&v, cli.range);
                        if write!(out, "\x1b[H{frame}")
                            .and_then(|()| out.flush())
                            .is_err()
                        {
                            break;
                        }
                    }
                } else if cli.summary {
                    window.add(&v);
                } else if print_event(&mut out, &v, cli.module as usize).is_err() {
                    break; // stdout closed (e.g. piped into head)
                }
            }
            Ok(None) => {}
            Err(e) => ssdaq::errln!("ssdaq-listen: {e}"),
        }
        if cli.summary && window.started.elapsed() >= Duration::from_secs(1) {
            let _ = writeln!(out, "{}", window.take(listener.missed()));
        }
        if silence.is_some_and(|s| last_event.elapsed() >= s) {
            ssdaq::errln!(
                "ssdaq-listen: no event from {} for {:.1} s",
                cli.endpoint,
                silence.unwrap().as_secs_f64()
            );
            status = 1;
            break;
        }
    }
    let _ = out.flush();
    ssdaq::errln!(
        "ssdaq-listen: received {} events, missed {}",
        listener.received(),
        listener.missed()
    );
    std::process::exit(status);
}

fn print_event(out: &mut impl Write, v: &EventView<'_>, module: usize) -> std::io::Result<()> {
    let present = v.present_mask();
    let run = v.run().map(|r| format!(" run {r}")).unwrap_or_default();
    writeln!(
        out,
        "event {}{run} ts {} modules {}/{} [{}]",
        v.number(),
        v.timestamp(),
        present.count_ones(),
        N_MODULES,
        format_module_set(present)
    )?;
    if v.has_module(module) {
        let row: Vec<String> = v.row(module).iter().map(|x| format!("{x:.2}")).collect();
        writeln!(out, "  module {module} (mV): {}", row.join(" "))
    } else {
        writeln!(out, "  module {module}: missing")
    }
}

/// Rates over one summary interval.
struct Window {
    started: Instant,
    events: u64,
    complete: u64,
    module_rows: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            started: Instant::now(),
            events: 0,
            complete: 0,
            module_rows: 0,
        }
    }
}

impl Window {
    fn add(&mut self, v: &EventView<'_>) {
        let n = v.present_mask().count_ones() as u64;
        self.events += 1;
        self.module_rows += n;
        self.complete += (n == N_MODULES as u64) as u64;
    }

    fn take(&mut self, missed: u64) -> String {
        let dt = self.started.elapsed().as_secs_f64();
        let mean = if self.events > 0 {
            self.module_rows as f64 / self.events as f64
        } else {
            0.0
        };
        let line = format!(
            "{:.1} events/s, {:.1}% with all 32 modules, {mean:.1} modules per event, missed {missed} in all",
            self.events as f64 / dt,
            if self.events > 0 {
                100.0 * self.complete as f64 / self.events as f64
            } else {
                0.0
            }
        );
        *self = Window::default();
        line
    }
}
