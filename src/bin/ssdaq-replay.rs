//! `ssdaq-replay`: reprocess raw dumps offline through the live builder.
//!
//! Thin by design: open the dumps, take the recorded builder settings
//! (overridable by flags), run [`ssdaq::replay::run`] into the chosen sinks
//! (`--pub`, `--out`), print the summary.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ssdaq::builder::{Builder, Event, EventSink};
use ssdaq::cli::{self, BuilderArgs};
use ssdaq::dump::{self, Dump};
use ssdaq::event::Format;
use ssdaq::publish::{self, Publisher};
use ssdaq::replay;

#[derive(Parser)]
#[command(
    name = "ssdaq-replay",
    version,
    about = "Replay raw dumps of ssdaqd through the same event builder",
    after_help = "The builder settings recorded in the dump are used unless overridden by a flag."
)]
struct Cli {
    /// Dump files (a rotated set: its first file), or directories of them;
    /// all of one recording (two runs' dumps are refused: replay each).
    #[arg(required = true)]
    dumps: Vec<PathBuf>,
    /// Print each file's header and the datagrams per module, without building.
    #[arg(long)]
    info: bool,
    /// Publish the events on this ZeroMQ endpoint, like ssdaqd.
    #[arg(long = "pub", value_name = "ENDPOINT")]
    pub_endpoint: Option<String>,
    /// With --pub: wait for this many subscribers before starting.
    #[arg(long, default_value_t = 0, value_name = "N")]
    wait_subscribers: i64,
    /// Write the published messages, concatenated, to this file.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Pace: max (as fast as possible), realtime, or a speed-up factor.
    #[arg(long, default_value = "max", value_parser = parse_speed)]
    speed: Speed,
    /// Wire format (default: as recorded).
    #[arg(long, value_parser = cli::format_parser())]
    format: Option<Format>,
    /// Write the events to HDF5: a file name, or a directory for files named
    /// by the data's start time. Needs a build with `--features hdf5`.
    #[arg(long, value_name = "FILE_OR_DIR")]
    hdf5: Option<PathBuf>,
    #[cfg(feature = "hdf5")]
    #[command(flatten)]
    hdf5_args: ssdaq::cli::Hdf5Args,
    /// The builder's settings (default: as recorded in the dump).
    #[command(flatten)]
    build: BuilderArgs,
}

/// The longest a paced replay sleeps before it looks at the stop flag again.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// How fast to replay: as fast as possible, or the recorded pace sped up.
#[derive(Clone, Copy)]
enum Speed {
    Max,
    Factor(f64),
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    match s {
        "max" => Ok(Speed::Max),
        "realtime" => Ok(Speed::Factor(1.0)),
        x => match x.parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
            _ => Err(format!("`{s}` is not max, realtime or a positive factor")),
        },
    }
}

/// Where events go: any of a publisher, a file of messages and HDF5 files.
struct Sinks {
    publisher: Option<Publisher>,
    out: Option<(BufWriter<File>, PathBuf)>,
    format: Format,
    out_error: Option<std::io::Error>,
    #[cfg(feature = "hdf5")]
    hdf5: Option<ssdaq_hdf5::FileSet>,
    /// The first HDF5 failure; no more is written after it.
    hdf5_error: Option<String>,
    /// Events built after that failure (not in any file).
    #[cfg(feature = "hdf5")]
    hdf5_after_error: u64,
    /// The newest event's arrival time: HDF5 files end at it.
    #[cfg(feature = "hdf5")]
    last_arrival_ns: u64,
}

impl EventSink for Sinks {
    fn event(&mut self, mut ev: Event<'_>) {
        if let Some((w, _)) = &mut self.out {
            if self.out_error.is_none() {
                if let Err(e) = w.write_all(ev.encode(self.format)) {
                    self.out_error = Some(e);
                }
            }
        }
        #[cfg(feature = "hdf5")]
        if let Some(set) = &mut self.hdf5 {
            if self.hdf5_error.is_some() {
                self.hdf5_after_error += 1;
            } else {
                let at = ev.header.arrival_ns;
                self.last_arrival_ns = at;
                let view = ssdaq::event::EventView::parse(ev.encode(self.format))
                    .expect("the builder encodes whole messages");
                if let Err(e) = set.append(&view, at) {
                    self.hdf5_error = Some(e.to_string());
                }
            }
        }
        if let Some(p) = &mut self.publisher {
            p.send_event(&mut ev);
        }
    }
}

/// Why a replay did not run to its end: a bad flag (exit 2) or a file (exit 1).
enum Failure {
    Usage(String),
    Run(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            ssdaq::errln!("ssdaq-replay: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            ssdaq::errln!("ssdaq-replay: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let (dumps, errors) = dump::open_set(&cli.dumps);
    for e in &errors {
        ssdaq::errln!("ssdaq-replay: {e}");
    }
    if dumps.is_empty() {
        return Err(Failure::Run("nothing could be read".into()));
    }
    if cli.info {
        for d in &dumps {
            print_info(d);
        }
        print!("{}", replay::survey(&dumps, cli.build.relaxed_ip));
        return Ok(());
    }
    replay::one_recording(&dumps).map_err(Failure::Usage)?;
    let (recorded, recorded_format) = replay::recorded_settings(&dumps[0]).map_err(Failure::Run)?;
    let cfg = cli.build.apply(recorded).map_err(Failure::Usage)?;
    let format = cli.format.unwrap_or(recorded_format);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let mut sinks = Sinks {
        publisher: None,
        out: None,
        format,
        out_error: None,
        #[cfg(feature = "hdf5")]
        hdf5: None,
        hdf5_error: None,
        #[cfg(feature = "hdf5")]
        hdf5_after_error: 0,
        #[cfg(feature = "hdf5")]
        last_arrival_ns: 0,
    };
    if let Some(path) = &cli.hdf5 {
        open_hdf5(cli, path, &dumps, &cfg, &mut sinks)?;
    }
    if let Some(ep) = &cli.pub_endpoint {
        let p = Publisher::bind(ep, format, publish::DEFAULT_HWM)
            .map_err(|e| Failure::Run(e.to_string()))?;
        wait_for_subscribers(sinks.publisher.insert(p), cli.wait_subscribers, &stop);
    }
    if let Some(path) = &cli.out {
        let f = File::create(path)
            .map_err(|e| Failure::Run(format!("cannot create {}: {e}", path.display())))?;
        sinks.out = Some((BufWriter::with_capacity(1 << 20, f), path.clone()));
    }

    let total: u64 = dumps.iter().map(Dump::len).sum();
    let bar = progress_bar(total);
    let mut builder = Builder::new(cfg);
    let started = Instant::now();
    let (mut first_arrival, mut done, mut shown) = (None, 0u64, 0u64);
    let stats = replay::run(&dumps, &mut builder, &mut sinks, |r| {
        done += dump::record_len(r.payload.len()) as u64;
        if done - shown >= 4 << 20 {
            bar.set_position(done);
            shown = done;
        }
        if let Speed::Factor(factor) = cli.speed {
            let first = *first_arrival.get_or_insert(r.arrival_ns);
            let due = Duration::try_from_secs_f64(
                (r.arrival_ns.saturating_sub(first)) as f64 / 1e9 / factor,
            )
            .unwrap_or(Duration::MAX);
            // In short sleeps, so a signal stops a replay paced over a gap
            // in the dump (or at a tiny --speed) within STOP_CHECK.
            while !stop.load(Ordering::Relaxed) {
                let Some(wait) = due.checked_sub(started.elapsed()) else {
                    break;
                };
                std::thread::sleep(wait.min(STOP_CHECK));
            }
        }
        !stop.load(Ordering::Relaxed)
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut write_error = None;
    if let Some((mut w, path)) = sinks.out.take() {
        if let Some(e) = sinks.out_error.take().or_else(|| w.flush().err()) {
            write_error = Some(format!("writing {}: {e}", path.display()));
        }
    }
    #[cfg(feature = "hdf5")]
    if let Some(mut set) = sinks.hdf5.take() {
        if let Err(e) = set.close(sinks.last_arrival_ns) {
            sinks.hdf5_error.get_or_insert(e.to_string());
        }
        ssdaq::errln!("hdf5: {}", set.summary());
        if sinks.hdf5_after_error > 0 {
            ssdaq::errln!(
                "hdf5: {} later event(s) NOT written (no file after the failure)",
                sinks.hdf5_after_error
            );
        }
    }
    if let Some(e) = sinks.hdf5_error.take() {
        write_error.get_or_insert(e);
    }
    ssdaq::errwrite!("{stats}");
    ssdaq::errwrite!("{}", builder.stats());
    if let Some(p) = &sinks.publisher {
        ssdaq::errln!("published: {}", p.stats());
    }
    ssdaq::errln!(
        "replayed in {elapsed:.2} s: {:.0} MB/s of dump, {:.0} datagrams/s",
        stats.bytes as f64 / elapsed / 1e6,
        stats.records as f64 / elapsed
    );
    write_error.map_or(Ok(()), |e| Err(Failure::Run(e)))
}

/// Starts the HDF5 files of `--hdf5`, recording where the events come from.
#[cfg(feature = "hdf5")]
fn open_hdf5(
    cli: &Cli,
    path: &std::path::Path,
    dumps: &[Dump],
    cfg: &ssdaq::builder::BuilderConfig,
    sinks: &mut Sinks,
) -> Result<(), Failure> {
    let files: Vec<String> = dumps
        .iter()
        .map(|d| d.path().display().to_string())
        .collect();
    let mut attrs = vec![
        (
            "ssdaq_source".to_string(),
            format!("ssdaq-replay of {}", files.join(" ")),
        ),
        (
            "ssdaq_command_line".to_string(),
            std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "ssdaq_builder_settings".to_string(),
            cfg.to_pairs()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    // What the live daemon recorded: its version, command line, settings.
    for (k, v) in &dumps[0].info().settings {
        attrs.push((format!("daemon_{k}"), v.clone()));
    }
    // Checked before the replay starts: a path that cannot be written is
    // a bad flag, not an error found after replaying everything.
    let mut set = ssdaq_hdf5::FileSet::new(
        path,
        cli.hdf5_args.options(cfg.run_number, attrs),
        cli.hdf5_args.limits(),
    )
    .map_err(|e| Failure::Usage(format!("--hdf5 {e}")))?;
    set.on_close(|p, s| {
        ssdaq::errln!(
            "hdf5: closed {}: {} event(s), {} missed",
            p.display(),
            s.events,
            s.missed
        )
    });
    sinks.hdf5 = Some(set);
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
fn open_hdf5(
    _: &Cli,
    _: &std::path::Path,
    _: &[Dump],
    _: &ssdaq::builder::BuilderConfig,
    _: &mut Sinks,
) -> Result<(), Failure> {
    Err(Failure::Usage(
        "--hdf5: this ssdaq-replay was built without HDF5; build it with \
         `cargo build --release --features hdf5` (needs the system HDF5 library: \
         `apt install libhdf5-dev`)"
            .into(),
    ))
}

fn wait_for_subscribers(p: &mut Publisher, n: i64, stop: &AtomicBool) {
    if n <= 0 {
        return;
    }
    ssdaq::errln!(
        "ssdaq-replay: waiting for {n} subscriber(s) on {}",
        p.endpoint()
    );
    while p.stats().subscriptions < n && !stop.load(Ordering::Relaxed) {
        p.poll_subscriptions();
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("a valid progress template");
    bar.set_style(style);
    bar
}

fn print_info(d: &Dump) {
    let i = d.info();
    println!(
        "{}: dump format v{}, file {} of set {:016x}",
        d.path().display(),
        i.version,
        i.file_index,
        i.set_id
    );
    println!(
        "  created {} ns since the epoch, {} bytes",
        i.created_ns,
        d.len()
    );
    for (k, v) in &i.settings {
        println!("  {k} = {v}");
    }
}
