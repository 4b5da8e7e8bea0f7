//! `ssdaq-write`: subscribe to a running ssdaqd and write every event to HDF5.
//!
//! Thin by design: an [`EventListener`] feeds a [`FileSet`]
//! (`ssdaq_hdf5`), flushed every second; SIGINT/SIGTERM close the file and
//! print the summary. Built with `--features hdf5`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use ssdaq::cli::Hdf5Args;
use ssdaq::clock::{mono_ns, now_ns};
use ssdaq::listen::{EventListener, ListenError};
use ssdaq::metrics::RateLimit;
use ssdaq::publish::DEFAULT_ENDPOINT;
use ssdaq_hdf5::FileSet;

#[derive(Parser)]
#[command(
    name = "ssdaq-write",
    version,
    about = "Write the events of a running ssdaqd to HDF5 files (PyTables / h5py / SSDataReader)",
    after_help = "A directory gets files named by start time (ssdaq-YYYYmmddTHHMMSSZ.h5); a file \
                  name is the first file, later ones NAME.0001.h5 … Existing files are never \
                  overwritten. Files are flushed every second: a file being written is readable \
                  with at most its last second missing."
)]
struct Cli {
    /// A directory for the files, or the first file's name.
    path: PathBuf,
    /// The daemon's event endpoint (wire format v1 or v2, told by the messages).
    #[arg(long = "sub", value_name = "ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// Run number stored for events that carry none (wire format v2).
    #[arg(long, default_value_t = 0)]
    run_number: u64,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Exit with status 1 if no event arrives for this many seconds (0: wait forever).
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = ssdaq::cli::seconds)]
    timeout: Duration,
    #[command(flatten)]
    hdf5: Hdf5Args,
}

/// The longest a file goes unflushed. With the rows of a partly filled chunk
/// written once they are half a second old (ssdaq_hdf5::file::TAIL_MAX_AGE_NS),
/// a file on disk lacks at most its last second.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How often "no events" is said while nothing arrives.
const QUIET_WARNING: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    if cli.path.is_file() || (!cli.path.is_dir() && cli.path.exists()) {
        eprintln!(
            "ssdaq-write: {} exists: give a directory or a new file name (files are never overwritten)",
            cli.path.display()
        );
        return ExitCode::from(2);
    }
    let parent = cli.path.parent().filter(|p| !p.as_os_str().is_empty());
    if !cli.path.is_dir() && parent.is_some_and(|p| !p.is_dir()) {
        eprintln!(
            "ssdaq-write: {}: no such directory",
            parent.unwrap_or(&cli.path).display()
        );
        return ExitCode::from(2);
    }
    let listener = match EventListener::connect(&cli.endpoint) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ssdaq-write: --sub {e}");
            return ExitCode::from(2);
        }
    };
    match run(&cli, listener) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("ssdaq-write: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli, mut listener: EventListener) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let attrs = vec![
        (
            "ssdaq_source".to_string(),
            format!("ssdaqd events from {}", cli.endpoint),
        ),
        (
            "ssdaq_command_line".to_string(),
            std::env::args().collect::<Vec<_>>().join(" "),
        ),
    ];
    let mut set = FileSet::new(
        &cli.path,
        cli.hdf5.options(cli.run_number, attrs),
        cli.hdf5.limits(),
    );
    set.on_close(|p, s| {
        eprintln!(
            "ssdaq-write: closed {}: {} event(s), numbers {}..{}, {} missed",
            p.display(),
            s.events,
            s.first_number.unwrap_or(0),
            s.last_number.unwrap_or(0),
            s.missed
        )
    });
    eprintln!(
        "ssdaq-write: subscribed to {}, writing {} files to {}",
        cli.endpoint,
        cli.hdf5.layout,
        cli.path.display()
    );
    let (mut bad, mut bad_log) = (0u64, RateLimit::new(1_000_000_000));
    let started = mono_ns();
    let (mut last_event, mut last_flush, mut last_warning) = (started, started, started);
    let mut outcome = Ok(());
    while !stop.load(Ordering::Relaxed) {
        match listener.recv(Duration::from_millis(100)) {
            Ok(Some(ev)) => {
                last_event = mono_ns();
                if let Err(e) = set.append(&ev.view(), now_ns()) {
                    outcome = Err(e.to_string());
                    break;
                }
                if cli.events.is_some_and(|n| set.summary().events >= n) {
                    break;
                }
            }
            Ok(None) => {}
            Err(ListenError::Decode(e)) => {
                bad += 1;
                if let Some(held) = bad_log.allow(mono_ns()) {
                    tracing::warn!("{e}: dropped ({held} more since the last such message)");
                }
            }
            Err(e) => {
                outcome = Err(e.to_string());
                break;
            }
        }
        let now = mono_ns();
        if now - last_flush >= FLUSH_EVERY.as_nanos() as u64 {
            last_flush = now;
            if let Err(e) = set.flush(now_ns()) {
                outcome = Err(e.to_string());
                break;
            }
        }
        let quiet = now - last_event;
        if !cli.timeout.is_zero() && quiet >= cli.timeout.as_nanos() as u64 {
            outcome = Err(format!(
                "no event from {} for {:?} (is ssdaqd running and publishing there?)",
                cli.endpoint, cli.timeout
            ));
            break;
        }
        if quiet >= QUIET_WARNING.as_nanos() as u64
            && now - last_warning >= QUIET_WARNING.as_nanos() as u64
        {
            last_warning = now;
            tracing::warn!(
                "no event from {} for {} s (is ssdaqd running and publishing there?)",
                cli.endpoint,
                quiet / 1_000_000_000
            );
        }
    }
    let closed = set.close(now_ns());
    let s = set.summary();
    eprintln!("ssdaq-write: {s}; {bad} message(s) that were not events");
    if let Some(p) = &s.last_path {
        eprintln!("ssdaq-write: last file {}", p.display());
    }
    outcome.and(closed.map_err(|e| e.to_string()))
}
