//! `ssdaqd`: the CHEC-S slow-signal DAQ daemon.
//!
//! Thin by design: parse flags, start [`ssdaq::pipeline::Daemon`], wait for
//! SIGINT/SIGTERM (or `--duration`), print the summary. `--demo` feeds it
//! from an in-process simulated 32-module camera and prints events.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use ssdaq::builder::{BuilderConfig, format_module_set};
use ssdaq::cli::{self, BuilderArgs};
use ssdaq::dump::DumpConfig;
use ssdaq::event::Format;
use ssdaq::listen::EventListener;
use ssdaq::pipeline::{Daemon, DaemonConfig, Stage};
use ssdaq::publish;
use ssdaq::recv::IoMode;
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "ssdaqd",
    version,
    disable_version_flag = true,
    about = "CHEC-S slow-signal DAQ: receive module datagrams, build camera events, publish them on ZeroMQ",
    after_help = "Try `ssdaqd --demo` to see it run on a simulated 32-module camera."
)]
struct Cli {
    /// UDP port the modules send to.
    #[arg(short = 'l', long, default_value_t = 2009)]
    listen_port: u16,
    /// Local address to receive on.
    #[arg(long, default_value = "0.0.0.0")]
    listen_addr: Ipv4Addr,
    /// Publish on tcp://127.0.0.101:PORT (default port 5555).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub_port: Option<u16>,
    /// Publish on this ZeroMQ endpoint instead, e.g. tcp://0.0.0.0:5555.
    #[arg(long = "pub", value_name = "ENDPOINT", conflicts_with = "pub_port")]
    pub_endpoint: Option<String>,
    /// Wire format of published events (PROTOCOL.md §4 / §5).
    #[arg(long, value_parser = cli::format_parser(), default_value = "v1")]
    format: Format,
    /// Events queued per subscriber before it misses events (1..=100000;
    /// each queued v1 event holds 16.9 KB).
    #[arg(long, default_value_t = publish::DEFAULT_HWM,
          value_parser = clap::value_parser!(i32).range(1..=publish::MAX_HWM as i64))]
    hwm: i32,
    /// Pin the receive stage to core A and the build stage to core B.
    #[arg(long, value_name = "A,B", value_parser = parse_cores)]
    cores: Option<(usize, usize)>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(
        short = 'V',
        long = "verbose",
        value_name = "LEVEL",
        default_value = "info"
    )]
    verbose: tracing::Level,
    /// Receive backend.
    #[arg(long, value_parser = cli::io_parser(), default_value = "auto")]
    io: IoMode,
    /// Socket receive buffer to ask the kernel for (e.g. 64M).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    rcvbuf: u64,
    /// Packet buffers shared by the stages: a power of two, 64..=32768.
    #[arg(long, default_value_t = 512, value_parser = parse_buffers)]
    buffers: usize,
    /// Seconds between status lines (0: none).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = cli::seconds)]
    status: Duration,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = cli::seconds)]
    duration: Option<Duration>,
    /// Poll the socket instead of sleeping: the lowest latency at the cost of
    /// a whole core (use with --cores). Off: the daemon idles near 0 % CPU.
    #[arg(long)]
    busy_poll: bool,
    /// Fault injection for tests: make this stage panic on its first batch.
    #[arg(long, value_name = "STAGE", hide = true, value_parser = parse_stage)]
    inject_panic: Option<Stage>,
    /// Record every datagram in a raw dump: a file to create, or a directory.
    #[arg(long, value_name = "PATH_OR_DIR")]
    dump: Option<std::path::PathBuf>,
    /// Start a new numbered dump file at this size (e.g. 1G, 512M).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    dump_max_size: u64,
    /// Preallocate dump files in steps of this size.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    dump_chunk: u64,
    /// Feed the daemon from a simulated 32-module camera and print events.
    #[arg(long)]
    demo: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics and JSON on /status:
    /// a port (on 127.0.0.1) or HOST:PORT (e.g. 0.0.0.0:9187 for any host).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics: Option<SocketAddr>,
    /// Take run-control commands (ssdaq-ctl) on this ZeroMQ endpoint: a
    /// port (on 127.0.0.1) or an endpoint, e.g. tcp://127.0.0.1:5600.
    #[arg(long, value_name = "ENDPOINT", value_parser = ssdaq::listen::control::endpoint_from)]
    control: Option<String>,
    /// Start without a run: receive and count, record nothing until
    /// `ssdaq-ctl start-run` (needs --control).
    #[arg(long, requires = "control")]
    stopped: bool,
    /// Log lines as text (colours on a terminal only) or as JSON objects
    /// (one per line, module numbers as fields).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print version.
    #[arg(long, action = ArgAction::Version)]
    version: Option<bool>,
    #[command(flatten)]
    build: BuilderArgs,
}

/// `--metrics`: a port on loopback, or HOST:PORT.
fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{s}` is not a port or HOST:PORT, e.g. 9187 or 127.0.0.1:9187"))
}

fn parse_stage(s: &str) -> Result<Stage, String> {
    s.parse()
}

fn parse_buffers(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of buffers"))?;
    let (lo, hi) = (ssdaq::recv::BATCH, ssdaq::recv::MAX_BUFFERS);
    if !(n.is_power_of_two() && (lo..=hi).contains(&n)) {
        return Err(format!("must be a power of two from {lo} to {hi}, not {n}"));
    }
    Ok(n)
}

fn parse_cores(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or("expected two core numbers, e.g. 2,3")?;
    let n = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{x}` is not a core number"))
    };
    Ok((n(a)?, n(b)?))
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches(['i', 'I']);
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let bad = || format!("`{s}` is not a size like 1073741824, 512M or 1G");
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).filter(|&n| n > 0).ok_or_else(bad)
}

/// The shortest interval between status lines.
const MIN_STATUS: Duration = Duration::from_millis(100);

/// Why ssdaqd did not end cleanly: a flag to fix (exit 2), the environment
/// (exit 1), or an operator's second stop signal (exit 3).
enum Failure {
    Usage(String),
    Run(String),
    Hurried,
}

fn config(cli: &Cli) -> Result<DaemonConfig, Failure> {
    let builder = cli
        .build
        .apply(BuilderConfig::default())
        .map_err(Failure::Usage)?;
    if !(cli.status.is_zero() || cli.status >= MIN_STATUS) {
        return Err(Failure::Usage(format!(
            "--status {:?}: must be 0 (no status line) or at least {MIN_STATUS:?}",
            cli.status
        )));
    }
    if let Some(path) = &cli.dump
        && let Ok(meta) = std::fs::metadata(path)
        && !meta.is_dir()
        && !meta.is_file()
    {
        return Err(Failure::Usage(format!(
            "--dump {}: is a device, FIFO or socket; give a directory, or the name of a new file",
            path.display()
        )));
    }
    if let Some((a, b)) = cli.cores {
        if a == b {
            return Err(Failure::Usage(format!(
                "--cores {a},{b}: the two stages need two different cores (unpinned, omit --cores)"
            )));
        }
        let ids: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .iter()
            .map(|c| c.id)
            .collect();
        for c in [a, b] {
            if !ids.contains(&c) {
                return Err(Failure::Usage(format!(
                    "--cores {a},{b}: there is no core {c} (this machine has cores {ids:?})"
                )));
            }
        }
    }
    let dump = cli.dump.as_ref().map(|path| {
        let mut info = vec![
            (
                "ssdaqd_version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (
                "command_line".to_string(),
                std::env::args_os()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("format".to_string(), cli.format.name().to_string()),
        ];
        info.extend(builder.to_pairs());
        DumpConfig {
            path: path.clone(),
            max_file_size: cli.dump_max_size,
            chunk_size: cli.dump_chunk,
            info,
            // Set by the daemon from --cores.
            helper_core: None,
            run: None,
        }
    });
    Ok(DaemonConfig {
        listen: SocketAddrV4::new(cli.listen_addr, cli.listen_port),
        endpoint: publish::endpoint_from(cli.pub_endpoint.as_deref(), cli.pub_port),
        format: cli.format,
        hwm: cli.hwm,
        io: cli.io,
        cores: cli.cores,
        builder,
        rcvbuf: cli.rcvbuf as usize,
        buffers: cli.buffers,
        status_interval: cli.status,
        busy_poll: cli.busy_poll,
        inject_panic: cli.inject_panic,
        dump,
        metrics: cli.metrics,
        control: cli.control.clone(),
        start_stopped: cli.stopped,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = tracing_subscriber::fmt()
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_max_level(cli.verbose)
        .with_target(false);
    if cli.log_format == "json" {
        log.json().with_current_span(false).init();
    } else {
        log.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            // As clap reports a bad flag: its format, status 2.
            let _ = Cli::command()
                .error(ErrorKind::ValueValidation, msg)
                .print();
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            ssdaq::errln!("ssdaqd: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Hurried) => ExitCode::from(EXIT_HURRIED),
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let cfg = config(cli)?;
    // A file size limit (ulimit -f) must make writing fail with EFBIG, which
    // the dump reports, rather than kill the daemon with SIGXFSZ.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };

    let stop = Arc::new(AtomicBool::new(false));
    let signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Failure::Run(format!("cannot handle signals: {e}")))?;
    let signals_handle = signals.handle();
    let daemon = Daemon::start(cfg, stop.clone()).map_err(|e| Failure::Run(e.to_string()))?;
    let hurried = Arc::new(AtomicBool::new(false));
    let signal_thread = {
        let (stop, hurry, hurried) = (stop.clone(), daemon.hurry(), hurried.clone());
        std::thread::spawn(move || on_signals(signals, &stop, &hurry, &hurried))
    };
    let demo = cli.demo.then(|| Demo::start(&daemon, stop.clone()));
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if cli.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    info!("stopping: flushing pending events");
    stop.store(true, Ordering::Relaxed);
    let summary = daemon.wait();
    if let Some(d) = demo {
        d.finish();
    }
    signals_handle.close();
    let _ = signal_thread.join();
    // Never a panic on a closed stderr (a terminal gone, a pipe closed).
    ssdaq::errwrite!("{summary}");
    if summary.stage_failed {
        return Err(Failure::Run(
            "stopped because a pipeline stage failed (its panic is logged above)".into(),
        ));
    }
    if hurried.load(Ordering::Relaxed) {
        return Err(Failure::Hurried);
    }
    Ok(())
}

/// A second stop signal within this long is the same stop (`timeout`, a
/// process group or systemd may deliver one signal twice).
const SAME_STOP: Duration = Duration::from_secs(1);

/// Exit status of a run stopped at once by a second signal.
const EXIT_HURRIED: u8 = 3;

/// Turns signals into stops. SIGINT or SIGTERM stops (datagrams waiting in
/// the socket still built); the same again within [`SAME_STOP`] is one stop;
/// a later one stops at once (pending events flushed, the dump closed, exit
/// 3); a third exits at once. SIGHUP is logged and ignored: a dropped
/// terminal must not end a night's run.
fn on_signals(mut signals: Signals, stop: &AtomicBool, hurry: &AtomicBool, hurried: &AtomicBool) {
    let mut first: Option<Instant> = None;
    for sig in signals.forever() {
        let name = match sig {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "SIGHUP",
        };
        if sig == SIGHUP {
            warn!("SIGHUP ignored: ssdaqd keeps running; stop it with SIGINT or SIGTERM");
            continue;
        }
        match first {
            None => {
                info!("{name}: stopping");
                first = Some(Instant::now());
                stop.store(true, Ordering::Relaxed);
            }
            Some(t) if t.elapsed() < SAME_STOP => {
                info!("{name} again within {SAME_STOP:?}: the same stop");
            }
            Some(_) if !hurried.load(Ordering::Relaxed) => {
                warn!(
                    "{name} again: stopping at once (not taking what waits in the socket); \
                     pending events are flushed and the dump closed; exit {EXIT_HURRIED}"
                );
                hurried.store(true, Ordering::Relaxed);
                hurry.store(true, Ordering::Relaxed);
            }
            Some(_) => {
                ssdaq::errln!("ssdaqd: {name} a third time: exiting now, without a summary");
                std::process::exit(i32::from(EXIT_HURRIED));
            }
        }
    }
}

/// `--demo`: a simulated camera feeding the daemon, and a subscriber printing events.
struct Demo {
    sim: std::thread::JoinHandle<()>,
    listener: std::thread::JoinHandle<()>,
}

impl Demo {
    fn start(daemon: &Daemon, stop: Arc<AtomicBool>) -> Demo {
        let port = daemon.listen_addr().port();
        let endpoint = daemon.endpoint().to_string();
        let sim_cfg = tm_ss_sim::SimConfig {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            modules: 32,
            ..Default::default()
        };
        info!(
            "demo: simulating 32 modules from 127.0.0.100..131 → UDP 127.0.0.1:{port}; printing every 25th event"
        );
        let s = stop.clone();
        let sim = std::thread::spawn(move || match tm_ss_sim::run(&sim_cfg, &s) {
            Ok(stats) => info!("demo camera: {stats}"),
            Err(e) => {
                error!("demo camera: {e}");
                s.store(true, Ordering::Relaxed);
            }
        });
        let listener = std::thread::spawn(move || print_events(&endpoint, &stop));
        Demo { sim, listener }
    }

    fn finish(self) {
        let _ = self.sim.join();
        let _ = self.listener.join();
    }
}

fn print_events(endpoint: &str, stop: &AtomicBool) {
    let mut l = match EventListener::connect(endpoint) {
        Ok(l) => l,
        Err(e) => return error!("demo listener: {e}"),
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(Some(ev)) = l.recv(Duration::from_millis(100)) else {
            continue;
        };
        let v = ev.view();
        if v.number() % 25 != 1 {
            continue;
        }
        let present = v.present_mask();
        let row = v.row(0);
        let (lo, hi) = row
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        println!(
            "event {:>7}  ts {}  modules {:>2}/32 [{}]  module 0: mean {:7.2} mV, range {:.2}..{:.2}",
            v.number(),
            v.timestamp(),
            present.count_ones(),
            format_module_set(present),
            row.iter().sum::<f64>() / 64.0,
            lo,
            hi
        );
    }
    // Drain what the daemon flushed on the way out.
    while let Ok(Some(_)) = l.recv(Duration::from_millis(200)) {}
    println!(
        "demo listener: received {} events, missed {}",
        l.received(),
        l.missed()
    );
}
