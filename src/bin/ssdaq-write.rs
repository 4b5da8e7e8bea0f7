//! `ssdaq-write`: subscribe to a running ssdaqd and write every event to HDF5.
//!
//! Thin by design: an [`EventListener`] feeds a [`FileSet`]
//! (`ssdaq_hdf5`), flushed twice a second. SIGINT/SIGTERM take what is
//! already queued in the socket, close the file and print the summary;
//! SIGHUP is ignored (a dropped terminal must not end a recording), and so
//! is a closed stderr. Built with `--features hdf5`.

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
use ssdaq_hdf5::file::Error as FileError;
use ssdaq_hdf5::{FileSet, Numbering};

#[derive(Parser)]
#[command(
    name = "ssdaq-write",
    version,
    about = "Write the events of a running ssdaqd to HDF5 files (PyTables / h5py / SSDataReader)",
    after_help = "A directory gets files named by start time (ssdaq-YYYYmmddTHHMMSSZ.h5, then \
                  .0001.h5 … for more in the same second); a file name is the first file, later \
                  ones NAME.0001.h5 … Existing files are never overwritten. Files are flushed \
                  twice a second: a file being written is readable with at most its last second \
                  missing.\n\nExit status: 0 stopped (a signal, --events); 1 a file could not be \
                  written (disk full …) or --timeout passed; 2 a bad flag or path."
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
    /// The daemon's run-control endpoint (its --control): its version,
    /// command line and builder settings are asked for at the start and
    /// stored as attributes of every file.
    #[arg(long, value_name = "ENDPOINT", value_parser = ssdaq::listen::control::endpoint_from)]
    control: Option<String>,
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
/// At a stop the writer unsubscribes, so the publisher sends nothing more,
/// and still writes what was published before: queued in its socket, in
/// the kernel, or in the publisher's queue. It reads until none has come
/// for `DRAIN_QUIET` (the publisher has seen the unsubscription within a
/// millisecond or two on a local link), for at most `DRAIN_AT_STOP`, which
/// is said if reached.
const DRAIN_QUIET: Duration = Duration::from_millis(50);
const DRAIN_AT_STOP: Duration = Duration::from_secs(30);

/// Says `args` on stderr as ssdaq-write, never failing ([`ssdaq::errln!`]):
/// a closed terminal or pipe must not stop a recording.
macro_rules! say {
    ($($arg:tt)*) => {
        ssdaq::errln!("ssdaq-write: {}", format_args!($($arg)*))
    };
}

/// What the daemon at `ep` says of itself, as `ssdaqd_*` attributes; one
/// attribute saying why when it does not answer (the recording goes on).
fn daemon_settings(ep: &str) -> Vec<(String, String)> {
    use ssdaq::listen::control::{Request, request};
    let req = Request {
        command: "status".into(),
        args: Vec::new(),
    };
    let v = match request(ep, &req, Duration::from_secs(3)) {
        Ok(v) if v["ok"] == true => v,
        Ok(v) => {
            let why = format!("{ep} refused status: {}", v["error"]);
            say!("{why}; the files will not carry ssdaqd's settings");
            return vec![("ssdaqd_settings".into(), format!("unknown: {why}"))];
        }
        Err(e) => {
            say!("{e}; the files will not carry ssdaqd's settings");
            return vec![("ssdaqd_settings".into(), format!("unknown: {e}"))];
        }
    };
    let text = |x: &ssdaq::listen::control::Value| match x.as_str() {
        Some(s) => s.to_string(),
        None => x.to_string(),
    };
    let mut out = vec![
        ("ssdaqd_version".to_string(), text(&v["version"])),
        ("ssdaqd_command_line".to_string(), text(&v["command_line"])),
        ("ssdaqd_backend".to_string(), text(&v["backend"])),
        ("ssdaqd_run_at_start".to_string(), text(&v["run"]["number"])),
    ];
    if let Some(b) = v["builder"].as_object() {
        out.extend(b.iter().map(|(k, x)| (format!("ssdaqd_{k}"), text(x))));
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let mut attrs = vec![
        (
            "ssdaq_source".to_string(),
            format!("ssdaqd events from {}", cli.endpoint),
        ),
        (
            "ssdaq_command_line".to_string(),
            // args_os: a path need not be UTF-8.
            std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    if let Some(ep) = &cli.control {
        attrs.extend(daemon_settings(ep));
    }
    let set = match FileSet::new(
        &cli.path,
        cli.hdf5.options(cli.run_number, attrs),
        cli.hdf5.limits(),
    ) {
        Ok(set) => set,
        Err(e) => {
            say!("{e}");
            return ExitCode::from(2);
        }
    };
    // Before connecting: a signal from the moment we subscribe is handled.
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, flag.clone()) {
            say!("cannot handle signals: {e}");
            return ExitCode::from(1);
        }
    }
    let listener = match EventListener::connect(&cli.endpoint) {
        Ok(l) => l,
        Err(e) => {
            say!("--sub {e}");
            return ExitCode::from(2);
        }
    };
    match run(&cli, set, listener, &stop, &hup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            say!("{msg}");
            ExitCode::from(1)
        }
    }
}

fn run(
    cli: &Cli,
    mut set: FileSet,
    mut listener: EventListener,
    stop: &AtomicBool,
    hup: &AtomicBool,
) -> Result<(), String> {
    set.on_close(|p, s| match (s.first_number, s.last_number) {
        (Some(a), Some(b)) => say!(
            "closed {}: {} event(s), numbers {a}..{b}, {} missed",
            p.display(),
            s.events,
            s.missed
        ),
        _ => say!("closed {}: no events in it", p.display()),
    });
    say!(
        "subscribed to {}, writing {} files to {}",
        cli.endpoint,
        cli.hdf5.layout,
        cli.path.display()
    );
    let mut w = Writing {
        set,
        bad: 0,
        bad_log: RateLimit::new(1_000_000_000),
        gap_log: RateLimit::new(1_000_000_000),
    };
    let started = mono_ns();
    let (mut last_event, mut last_flush, mut last_warning) = (started, started, started);
    let mut outcome = Ok(());
    let mut stopped_by_signal = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            stopped_by_signal = true;
            break;
        }
        if hup.swap(false, Ordering::Relaxed) {
            tracing::warn!("SIGHUP ignored: still writing; stop with SIGINT or SIGTERM");
        }
        match w.take(&mut listener, Duration::from_millis(100)) {
            Ok(Took::Event) => {
                last_event = mono_ns();
                // Each event received was written (a failure ends the loop).
                if cli.events.is_some_and(|n| listener.received() >= n) {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        let now = mono_ns();
        if now - last_flush >= FLUSH_EVERY.as_nanos() as u64 {
            last_flush = now;
            if let Err(e) = w.set.flush(now_ns()) {
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
    if stopped_by_signal && outcome.is_ok() {
        // What the daemon published before the stop and is already in our
        // socket, or on its way, belongs to the run: written, not dropped.
        if let Err(e) = listener.unsubscribe() {
            tracing::warn!("{e}: reading on until the socket is quiet");
        }
        let (drain_start, mut drained, mut quiet) = (mono_ns(), 0u64, false);
        while mono_ns() - drain_start < DRAIN_AT_STOP.as_nanos() as u64 {
            match w.take(&mut listener, DRAIN_QUIET) {
                Ok(Took::Event) => drained += 1,
                Ok(Took::NotAnEvent) => {}
                Ok(Took::Nothing) => {
                    quiet = true;
                    break;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if quiet || outcome.is_err() {
            say!("stopping: wrote the {drained} event(s) published before the stop");
        } else {
            say!(
                "stopping: wrote {drained} event(s) in {DRAIN_AT_STOP:?} after the stop and \
                 events were still coming; the recording ends at event {}",
                listener.last_number().unwrap_or(0)
            );
        }
    }
    let closed = w.set.close(now_ns());
    let s = w.set.summary();
    say!("{s}; {} message(s) that were not events", w.bad);
    if let Some(p) = &s.last_path {
        say!("last file {}", p.display());
    }
    outcome.and(closed.map_err(|e| e.to_string()))
}

/// What one [`Writing::take`] got.
enum Took {
    Event,
    /// A message that was not an event (counted, dropped).
    NotAnEvent,
    Nothing,
}

/// The set being written and what the loop counts.
struct Writing {
    set: FileSet,
    /// Messages that were not events.
    bad: u64,
    bad_log: RateLimit,
    gap_log: RateLimit,
}

impl Writing {
    /// Takes the next message within `timeout`, an event into the set.
    fn take(&mut self, listener: &mut EventListener, timeout: Duration) -> Result<Took, String> {
        let ev = match listener.recv(timeout) {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(Took::Nothing),
            Err(ListenError::Decode(e)) => {
                self.bad += 1;
                if let Some(held) = self.bad_log.allow(mono_ns()) {
                    tracing::warn!("{e}: dropped ({held} more since the last such message)");
                }
                return Ok(Took::NotAnEvent);
            }
            Err(e) => return Err(e.to_string()),
        };
        let view = ev.view();
        let told = self
            .set
            .append(&view, now_ns())
            .map_err(|e: FileError| e.to_string())?;
        match told {
            Numbering::InOrder => {}
            Numbering::Gap { missed } => {
                if let Some(held) = self.gap_log.allow(mono_ns()) {
                    let s = self.set.summary();
                    tracing::warn!(
                        "{missed} event(s) missed before event {} (the subscriber fell behind \
                         or the daemon dropped them); {} missed in {} gap(s) so far, {held} \
                         gap(s) not logged since the last such message",
                        view.number(),
                        s.missed,
                        s.gaps
                    );
                }
            }
            Numbering::Restart { missed } => {
                if let Some(held) = self.gap_log.allow(mono_ns()) {
                    tracing::warn!(
                        "event numbers started again at {} (ssdaqd restarted?): a new file; \
                         {missed} event(s) of the new numbering missed before it \
                         ({held} gap(s) or restarts not logged since the last message)",
                        view.number()
                    );
                }
            }
        }
        Ok(Took::Event)
    }
}
