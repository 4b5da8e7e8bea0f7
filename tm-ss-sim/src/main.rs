//! `tm-ss-sim`: simulated TARGET-C modules sending CHEC-S slow-signal datagrams.
//!
//! Thin: parse flags into a [`SimConfig`], call [`sim::run`], print the
//! summary to stderr. The model, pacing and faults live in the library
//! (`src/lib.rs`).
//!
//! `tm-ss-sim 2009 localhost` sends as one module at 25 datagrams/s, as the
//! original Python simulator did.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{CommandFactory, Parser, error::ErrorKind};
use signal_hook::consts::{SIGINT, SIGTERM};
use tm_ss_sim::{self as sim, Faults, SimConfig};

/// Simulated TARGET-C modules of the CHEC-S camera: each sends UDP datagrams
/// of 144-byte slow-signal readouts from its own source address
/// 127.0.0.(100+module), on a timestamp grid shared by all modules.
#[derive(Parser, Debug)]
#[command(name = "tm-ss-sim", version)]
struct Cli {
    /// UDP port of the DAQ host.
    #[arg(default_value_t = sim::DEFAULT_PORT)]
    port: u16,
    /// DAQ host name or address.
    #[arg(default_value = "localhost")]
    host: String,
    /// Target HOST:PORT (overrides PORT and HOST).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Number of modules to simulate, from 127.0.0.(100+first+i).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    modules: u8,
    /// Module number of the first simulated module.
    #[arg(long, value_name = "M", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=31))]
    first_module: u8,
    /// Datagrams per second per module (in flood mode: the spacing of the virtual clock).
    #[arg(long, value_name = "R", default_value_t = sim::DEFAULT_RATE, value_parser = rate)]
    rate: f64,
    /// Readouts per datagram.
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=sim::MAX_READOUTS as i64))]
    readouts: u16,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    duration: Option<Duration>,
    /// Stop after this many datagrams (frames) per module.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Send as fast as possible (sendmmsg) on a virtual clock.
    #[arg(long)]
    flood: bool,
    /// Re-evaluate pixel values at most once per MS of camera time (0: every datagram).
    ///
    /// Paced mode. Camera time is cut into intervals of MS milliseconds; the
    /// first frame of each interval is evaluated from the pixel model, and
    /// later frames of the interval carry its values with their own
    /// timestamps (timestamps are always exact). The default, 40 ms, is the
    /// real camera's frame period: up to 25 datagrams/s/module every datagram
    /// is exact, and above that the model costs no more than at the real rate
    /// (within 40 ms a value changes by little more than its ±1.5 mV noise).
    /// A flood refreshes every 256 frames instead.
    #[arg(long, value_name = "MS", default_value_t = sim::DEFAULT_PIXEL_REFRESH.as_secs_f64() * 1e3,
          value_parser = milliseconds, conflicts_with = "flood")]
    pixel_refresh_ms: f64,
    /// In flood mode, send with UDP GSO instead of sendmmsg.
    #[arg(long, requires = "flood")]
    gso: bool,
    /// Datagrams per sendmmsg / GSO send in flood mode.
    #[arg(long, default_value_t = sim::DEFAULT_BATCH as u16,
          value_parser = clap::value_parser!(u16).range(1..=sim::MAX_BATCH as i64))]
    batch: u16,
    /// Send each frame up to US microseconds after its last readout, a
    /// seeded random delay per frame (readout timestamps stay on the grid).
    ///
    /// Paced mode. A real camera's clock is independent of the DAQ host's;
    /// on the same host a simulator without jitter wakes at the same phase
    /// of the host's timer tick every frame, which biases latency
    /// measurements. A jitter of a tick period (4000 µs at 250 Hz) spreads
    /// the frames over it.
    #[arg(long, value_name = "US", default_value_t = 0, conflicts_with = "flood")]
    send_jitter_us: u64,
    /// Seed of the pixel model and of --loss.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not bind module source addresses (needed for a remote target; the
    /// receiver then sees one source for all modules).
    #[arg(long)]
    no_bind: bool,
    /// Take commands while running on this ZeroMQ endpoint (a port on
    /// 127.0.0.1, or tcp://HOST:PORT): `tm-ss-sim ctl --control ADDR help`.
    #[arg(long, value_name = "ADDR", conflicts_with = "flood", value_parser = ssdaq_listener::control::endpoint_from)]
    control: Option<String>,

    /// drop each datagram with probability P (seeded).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability, help_heading = "Faults")]
    loss: f64,
    /// module M never sends (repeatable).
    #[arg(long, value_name = "M", help_heading = "Faults")]
    dead_module: Vec<u8>,
    /// module M omits frame F, counted from 0 (repeatable).
    #[arg(long, value_name = "M:F", value_parser = module_frame, help_heading = "Faults")]
    skip: Vec<(u8, u64)>,
    /// every Nth datagram of each module, also send a 143-byte malformed one.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Faults")]
    malformed_every: u64,
    /// send every Nth datagram of each module twice.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Faults")]
    duplicate_every: u64,
    /// swap datagrams N and N+1 (2N and 2N+1, …) of each module.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Faults")]
    reorder_every: u64,
    /// from frame F on, shift module M's primary timestamps by DELTA_NS (repeatable).
    #[arg(long, value_name = "M:F:DELTA_NS", value_parser = ts_jump, allow_hyphen_values = true,
          help_heading = "Faults")]
    ts_jump: Vec<(u8, u64, i64)>,
    /// one extra datagram of module M, T seconds into the run, stamped DELTA_NS off (repeatable).
    #[arg(long, value_name = "M@T:DELTA_NS", value_parser = stray, allow_hyphen_values = true,
          help_heading = "Faults")]
    stray: Vec<(u8, f64, i64)>,
    /// frames F..F+K of module M stamped DELTA_NS off, then back on time (repeatable).
    #[arg(long, value_name = "M@F:DELTA_NS:K", value_parser = glitch, allow_hyphen_values = true,
          help_heading = "Faults")]
    glitch: Vec<(u8, u64, i64, u64)>,
    /// every timestamp of module M NS off (repeatable).
    #[arg(long, value_name = "M:NS", value_parser = skew, allow_hyphen_values = true,
          help_heading = "Faults")]
    skew: Vec<(u8, i64)>,
    /// send each datagram twice with probability P (seeded).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability, help_heading = "Faults")]
    duplicate: f64,
    /// hold a datagram back with probability P and send it after the next
    /// 1..=K of its module (K 1..=4, default 1; seeded).
    #[arg(long, value_name = "P[:K]", value_parser = reorder, help_heading = "Faults")]
    reorder: Option<(f64, u64)>,
    /// replace a datagram with probability P by a corrupt one: a wrong
    /// length, cut inside a readout, or scrambled with a zero timestamp (seeded).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability, help_heading = "Faults")]
    corrupt: f64,
    /// N datagrams/s from hosts outside the camera (.200-.203 of the source
    /// network), camera-like content.
    #[arg(long, value_name = "N", default_value_t = 0.0, help_heading = "Faults")]
    foreign: f64,
    /// module M sends nothing from T0 to T1 seconds into the run (repeatable).
    #[arg(long, value_name = "M@T0..T1", value_parser = silent, help_heading = "Faults")]
    silent: Vec<(u8, f64, f64)>,
    /// module M restarts T seconds into the run: its timestamps start again
    /// from the run's first (repeatable).
    #[arg(long, value_name = "M@T", value_parser = restart, help_heading = "Faults")]
    restart: Vec<(u8, f64)>,
}

/// `tm-ss-sim ctl`: one command to a running `tm-ss-sim --control`.
#[derive(Parser, Debug)]
#[command(
    name = "tm-ss-sim ctl",
    about = "Steer a running tm-ss-sim --control ADDR: ping, send on|off [MODULES], rate HZ, get rate|sent|faults, fault skew MODULES NS, fault loss P, fault clear"
)]
struct CtlCli {
    /// The simulator's --control endpoint.
    #[arg(long, short = 'c', value_name = "ADDR", default_value = "tcp://127.0.0.1:5601", value_parser = ssdaq_listener::control::endpoint_from)]
    control: String,
    /// The command and its arguments.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn ctl(args: impl Iterator<Item = String>) -> ExitCode {
    use ssdaq_listener::control::{Request, request};
    let cli = CtlCli::parse_from(args);
    let req = Request {
        command: cli.command[0].clone(),
        args: cli.command[1..].to_vec(),
    };
    match request(&cli.control, &req, Duration::from_secs(3)) {
        Ok(r) if r["ok"] == true => {
            println!("{r}");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!(
                "tm-ss-sim ctl: {}",
                r["error"].as_str().unwrap_or("refused")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tm-ss-sim ctl: {e}");
            ExitCode::from(3)
        }
    }
}

fn reorder(s: &str) -> Result<(f64, u64), String> {
    let (p, k) = s.split_once(':').unwrap_or((s, "1"));
    let p = probability(p)?;
    let k = k.parse().map_err(|e| format!("depth '{k}': {e}"))?;
    Ok((p, k))
}

fn silent(s: &str) -> Result<(u8, f64, f64), String> {
    let err = || "expected MODULE@T0..T1 (seconds), e.g. 12@3..5.5".to_string();
    let (m, rest) = s.split_once('@').ok_or_else(err)?;
    let (a, b) = rest.split_once("..").ok_or_else(err)?;
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let a = a.parse().map_err(|e| format!("time '{a}': {e}"))?;
    let b = b.parse().map_err(|e| format!("time '{b}': {e}"))?;
    Ok((m, a, b))
}

fn restart(s: &str) -> Result<(u8, f64), String> {
    let (m, t) = s
        .split_once('@')
        .ok_or("expected MODULE@SECONDS, e.g. 7@4")?;
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let t = t.parse().map_err(|e| format!("time '{t}': {e}"))?;
    Ok((m, t))
}

/// `--rate`: at least [`sim::control::MIN_RATE`] (a frame every 100 s).
fn rate(s: &str) -> Result<f64, String> {
    let v = positive_f64(s)?;
    if v < sim::control::MIN_RATE {
        return Err(format!(
            "must be at least {} (a frame every 100 s), got {v}",
            sim::control::MIN_RATE
        ));
    }
    Ok(v)
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a positive number, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("must be a non-negative number of seconds, got {v}"))
}

fn milliseconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if Duration::try_from_secs_f64(v / 1e3).is_ok() => Ok(v),
        Ok(v) => Err(format!(
            "must be a non-negative number of milliseconds, got {v}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Ok(p) => Err(format!("a probability is 0..=1, got {p}")),
        Err(e) => Err(e.to_string()),
    }
}

fn module_frame(s: &str) -> Result<(u8, u64), String> {
    let (m, f) = s
        .split_once(':')
        .ok_or("expected MODULE:FRAME, e.g. 3:100")?;
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let f = f.parse().map_err(|e| format!("frame '{f}': {e}"))?;
    Ok((m, f))
}

fn ts_jump(s: &str) -> Result<(u8, u64, i64), String> {
    let mut parts = s.splitn(3, ':');
    let (Some(m), Some(f), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected MODULE:FRAME:DELTA_NS, e.g. 3:100:-5000000".into());
    };
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let f = f.parse().map_err(|e| format!("frame '{f}': {e}"))?;
    let d = d.parse().map_err(|e| format!("delta '{d}': {e}"))?;
    Ok((m, f, d))
}

fn stray(s: &str) -> Result<(u8, f64, i64), String> {
    let err = || "expected MODULE@SECONDS:DELTA_NS, e.g. 1@3:8000000000".to_string();
    let (m, rest) = s.split_once('@').ok_or_else(err)?;
    let (t, d) = rest.split_once(':').ok_or_else(err)?;
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let t = t.parse().map_err(|e| format!("time '{t}': {e}"))?;
    let d = d.parse().map_err(|e| format!("delta '{d}': {e}"))?;
    Ok((m, t, d))
}

fn glitch(s: &str) -> Result<(u8, u64, i64, u64), String> {
    let err = || "expected MODULE@FRAME:DELTA_NS:K, e.g. 5@100:3000000000:3".to_string();
    let (m, rest) = s.split_once('@').ok_or_else(err)?;
    let mut parts = rest.splitn(3, ':');
    let (Some(f), Some(d), Some(k)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err());
    };
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let f = f.parse().map_err(|e| format!("frame '{f}': {e}"))?;
    let d = d.parse().map_err(|e| format!("delta '{d}': {e}"))?;
    let k = k.parse().map_err(|e| format!("count '{k}': {e}"))?;
    Ok((m, f, d, k))
}

fn skew(s: &str) -> Result<(u8, i64), String> {
    let (m, d) = s.split_once(':').ok_or("expected MODULE:NS, e.g. 3:5000")?;
    let m = m.parse().map_err(|e| format!("module '{m}': {e}"))?;
    let d = d.parse().map_err(|e| format!("offset '{d}': {e}"))?;
    Ok((m, d))
}

/// The target address: the first IPv4 address of the host (module sources are
/// IPv4), else its first address.
fn resolve(host_port: &str) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve target '{host_port}': {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve target '{host_port}': no address"))
}

fn config(cli: &Cli, target: SocketAddr) -> SimConfig {
    SimConfig {
        target,
        modules: cli.modules,
        first_module: cli.first_module,
        bind_sources: !cli.no_bind,
        rate: cli.rate,
        readouts: cli.readouts as usize,
        duration: cli.duration,
        count: cli.count,
        flood: cli.flood,
        pixel_refresh: Duration::from_secs_f64(cli.pixel_refresh_ms / 1e3),
        gso: cli.gso,
        batch: cli.batch as usize,
        seed: cli.seed,
        send_jitter: Duration::from_micros(cli.send_jitter_us),
        faults: Faults {
            loss: cli.loss,
            dead_modules: cli.dead_module.clone(),
            skip: cli.skip.clone(),
            malformed_every: cli.malformed_every,
            duplicate_every: cli.duplicate_every,
            reorder_every: cli.reorder_every,
            ts_jump: cli.ts_jump.clone(),
            stray: cli.stray.clone(),
            glitch: cli.glitch.clone(),
            skew: cli.skew.clone(),
            duplicate: cli.duplicate,
            reorder: cli.reorder.unwrap_or_default(),
            corrupt: cli.corrupt,
            foreign: cli.foreign,
            silent: cli.silent.clone(),
            restart: cli.restart.clone(),
        },
        ..SimConfig::default()
    }
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("ctl") {
        let mut args = std::env::args();
        let exe = args.next().unwrap_or_default();
        args.next();
        return ctl(std::iter::once(format!("{exe} ctl")).chain(args));
    }
    let cli = Cli::parse();
    let host_port = match &cli.target {
        Some(t) => t.clone(),
        None if cli.host.contains(':') => format!("[{}]:{}", cli.host, cli.port),
        None => format!("{}:{}", cli.host, cli.port),
    };
    let target = match resolve(&host_port) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tm-ss-sim: {e}");
            return ExitCode::from(1);
        }
    };
    let cfg = config(&cli, target);
    if let Err(e) = cfg.validate() {
        Cli::command().error(ErrorKind::ValueValidation, e).exit();
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // A second signal while stopping ends the process at once.
        let registered = signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()));
        if let Err(e) = registered {
            eprintln!("tm-ss-sim: cannot install a signal handler: {e}");
            return ExitCode::from(1);
        }
    }

    let mode = match (cfg.flood, cfg.gso) {
        (false, _) if cfg.pixel_refresh_ns() > cfg.grid().period_ns() => format!(
            "{} datagrams/s/module, pixel values refreshed every {} ms of camera time",
            cfg.rate, cli.pixel_refresh_ms
        ),
        (false, _) => format!("{} datagrams/s/module", cfg.rate),
        (true, false) => format!("flood, sendmmsg batches of {}", cfg.batch),
        (true, true) => format!("flood, UDP GSO batches of {}", cfg.batch),
    };
    let sources = if cfg.bind_sources {
        let m = cfg.module_numbers();
        match m.len() {
            1 => format!("from {}", cfg.source_addr(m.start)),
            _ => format!(
                "from {}..{}",
                cfg.source_addr(m.start),
                cfg.source_addr(m.end - 1)
            ),
        }
    } else {
        "from unbound sources".to_string()
    };
    let modules = match cfg.modules {
        1 => "1 module".to_string(),
        n => format!("{n} modules"),
    };
    eprintln!(
        "tm-ss-sim: {modules} {sources} → {target}, {} readouts/datagram, {mode}",
        cfg.readouts
    );
    let live = cli
        .control
        .as_ref()
        .map(|_| Arc::new(sim::control::Live::new(&cfg)));
    let server = match (&cli.control, &live) {
        (Some(ep), Some(live)) => match ssdaq_listener::control::Server::bind(ep) {
            Ok(server) => {
                eprintln!(
                    "tm-ss-sim: taking commands on {} (tm-ss-sim ctl --control {} help)",
                    server.endpoint(),
                    server.endpoint()
                );
                let (live, stop) = (live.clone(), stop.clone());
                Some(std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if server
                            .serve_one(Duration::from_millis(100), |r| live.handle(r))
                            .is_err()
                        {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }))
            }
            Err(e) => {
                eprintln!("tm-ss-sim: --control: {e}");
                return ExitCode::from(1);
            }
        },
        _ => None,
    };
    let result = sim::run_live(&cfg, &stop, live.as_deref());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = server {
        let _ = t.join();
    }
    match result {
        Ok(stats) => {
            if cfg.faults.any() || stats.send_errors() > 0 {
                eprintln!("tm-ss-sim: {stats:#}");
            } else {
                eprintln!("tm-ss-sim: {stats}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tm-ss-sim: {e}");
            ExitCode::from(1)
        }
    }
}
