//! `--metrics ADDR`: the daemon's counters over HTTP.
//!
//! * `GET /metrics`: Prometheus text exposition (format 0.0.4; OpenMetrics
//!   when the scraper asks for it), encoded by the `prometheus-client` crate
//!   from the latest [`Snapshot`];
//! * `GET /status`: the same figures as JSON, for scripts and `ssdaq-ctl`;
//! * `GET /`: a line saying where those are.
//!
//! It owns one thread and the `tiny_http` server (which reads requests on
//! its own threads). A scrape reads a snapshot the stages published; it
//! never takes a lock the stages take, never waits for them, and costs them
//! nothing: any number of scrapers only queue here.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tracing::warn;

use super::{Board, Snapshot};
use crate::metrics::BUCKETS_NS;
use crate::packet::{N_MODULES, Reject};

/// The HTTP server of `--metrics`.
pub struct MetricsServer {
    server: tiny_http::Server,
    addr: SocketAddr,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            format!("--metrics {addr}: cannot serve HTTP there: {e} (another ssdaqd? choose another port)")
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("--metrics {addr}: not an IP address"))?;
        Ok(MetricsServer { server, addr })
    }

    /// The address bound (a `:0` port resolved).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers requests until `stop`, each on its own short-lived thread
    /// (at most [`MAX_HANDLERS`] at once), so a client that never reads
    /// its reply holds only its own.
    pub fn serve(self, board: Arc<Board>, stop: &AtomicBool) {
        let inflight = Arc::new(AtomicUsize::new(0));
        let mut refused_log = crate::metrics::RateLimit::new(10_000_000_000);
        while !stop.load(Ordering::Relaxed) {
            let req = match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(_) => continue,
            };
            let big = req.body_length().is_some_and(|n| n > MAX_BODY);
            if big || inflight.load(Ordering::Relaxed) >= MAX_HANDLERS {
                // tiny_http drains an unread body on drop into one buffer of
                // its declared size (a huge Content-Length aborted the
                // process), and a reply can wait on the client forever: such
                // a request is left unanswered, its connection unread.
                if let Some(held) = refused_log.allow(crate::clock::now_ns()) {
                    warn!(
                        "metrics: left a request from {:?} unanswered ({}; {held} more not logged)",
                        req.remote_addr(),
                        if big {
                            "a body over 64 KiB"
                        } else {
                            "too many requests at once"
                        }
                    );
                }
                std::mem::forget(req);
                continue;
            }
            inflight.fetch_add(1, Ordering::Relaxed);
            let (board, done) = (board.clone(), inflight.clone());
            let spawned = std::thread::Builder::new()
                .name("ssdaq-metrics-req".into())
                .spawn(move || {
                    let _ = respond(req, &board);
                    done.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                inflight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// The largest request body read (a scrape has none).
const MAX_BODY: usize = 64 << 10;
/// Requests answered at once; more are left unanswered.
const MAX_HANDLERS: usize = 32;

fn respond(req: tiny_http::Request, board: &Board) -> std::io::Result<()> {
    use tiny_http::{Header, Method, Response};
    let header = |v: &str| Header::from_bytes("Content-Type", v).expect("a valid header");
    if *req.method() != Method::Get && *req.method() != Method::Head {
        return req.respond(
            Response::from_string("only GET\n")
                .with_status_code(405)
                .with_header(header("text/plain")),
        );
    }
    let path = req.url().split('?').next().unwrap_or("").to_string();
    let snap = board.snapshot();
    match (path.as_str(), snap) {
        ("/metrics", Some(s)) => {
            let openmetrics = req.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let (body, ctype) = if openmetrics {
                (
                    encode(s, true),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    encode(s, false),
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                )
            };
            req.respond(Response::from_string(body).with_header(header(ctype)))
        }
        ("/status", Some(s)) => req.respond(
            Response::from_string(status_json(&s).to_string() + "\n")
                .with_header(header("application/json")),
        ),
        ("/metrics" | "/status", None) => req.respond(
            Response::from_string("ssdaqd is starting: no snapshot yet\n")
                .with_status_code(503)
                .with_header(header("text/plain")),
        ),
        ("/", _) => req.respond(
            Response::from_string("ssdaqd: /metrics (Prometheus), /status (JSON)\n")
                .with_header(header("text/plain")),
        ),
        _ => req.respond(
            Response::from_string("not found: try /metrics or /status\n")
                .with_status_code(404)
                .with_header(header("text/plain")),
        ),
    }
}

/// The snapshot as Prometheus text (or OpenMetrics text).
pub fn encode(s: Arc<Snapshot>, openmetrics: bool) -> String {
    let mut registry = Registry::with_prefix("ssdaq");
    registry.register_collector(Box::new(SnapshotCollector(s)));
    let mut out = String::new();
    let r = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    // Writing to a String cannot fail.
    debug_assert!(r.is_ok());
    out
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Snapshot>);

/// One metric of one family: a value and its labels.
type Row = (Vec<(&'static str, String)>, f64);

/// A metric family as the collector writes it.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<Row>,
}

fn one(name: &'static str, help: &'static str, kind: MetricType, v: f64) -> Family {
    Family {
        name,
        help,
        kind,
        rows: vec![(Vec::new(), v)],
    }
}

fn per_module(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    modules: u32,
    v: impl Fn(usize) -> f64,
) -> Family {
    Family {
        name,
        help,
        kind,
        rows: (0..N_MODULES)
            .filter(|m| modules & (1 << m) != 0)
            .map(|m| (vec![("module", m.to_string())], v(m)))
            .collect(),
    }
}

/// Every family of the snapshot. Counters are named without `_total`
/// (the encoder adds it).
fn families(s: &Snapshot) -> Vec<Family> {
    use MetricType::{Counter as C, Gauge as G};
    let sum = &s.summary;
    let b = &sum.builder;
    let n = |v: u64| v as f64;
    // Modules to give a row: heard from, expected, or counted.
    let shown = (0..N_MODULES)
        .filter(|&m| {
            s.health[m].watched || s.expected & (1 << m) != 0 || b.modules[m].datagrams > 0
        })
        .fold(0u32, |a, m| a | 1 << m);
    let md = |m: usize| &b.modules[m];
    let mut f = vec![
        one(
            "datagrams_received",
            "Datagrams read from the socket.",
            C,
            n(sum.received),
        ),
        one(
            "received_bytes",
            "Bytes of the datagrams read.",
            C,
            n(sum.received_bytes),
        ),
        one(
            "kernel_drops",
            "Datagrams the kernel dropped because the socket buffer was full (SO_RXQ_OVFL).",
            C,
            n(sum.kernel_drops),
        ),
        one(
            "receive_errors",
            "Receive calls that failed.",
            C,
            n(sum.recv_errors),
        ),
        one(
            "datagrams_accepted",
            "Datagrams accepted by the builder.",
            C,
            n(b.datagrams()),
        ),
        Family {
            name: "datagrams_refused",
            help: "Datagrams refused, by cause (PROTOCOL.md §7: never merged, never fatal).",
            kind: C,
            rows: Reject::ALL
                .iter()
                .map(|c| {
                    (
                        vec![("cause", c.name().to_string())],
                        n(b.rejected[c.index()]),
                    )
                })
                .collect(),
        },
        one(
            "datagrams_out_of_sync",
            "Datagrams off the camera's timeline, not built.",
            C,
            n(b.out_of_sync),
        ),
        one(
            "datagrams_held",
            "Datagrams held as suspect right now (neither built nor lost yet).",
            G,
            n(b.held),
        ),
        one(
            "datagrams_between_runs",
            "Datagrams received while no run was recording (stop-run): counted, not kept.",
            C,
            n(s.between_runs),
        ),
        Family {
            name: "readouts",
            help: "Readouts of accepted datagrams, by fate.",
            kind: C,
            rows: [
                ("complete", b.readouts_complete),
                ("partial", b.readouts_partial),
                ("late", b.late()),
                ("duplicate", b.duplicate()),
            ]
            .into_iter()
            .map(|(k, v)| (vec![("fate", k.to_string())], n(v)))
            .collect(),
        },
        Family {
            name: "events",
            help: "Events emitted, by why they were emitted.",
            kind: C,
            rows: crate::builder::Emit::ALL
                .iter()
                .map(|e| {
                    (
                        vec![("reason", e.name().to_string())],
                        n(b.emitted[*e as usize]),
                    )
                })
                .collect(),
        },
        one(
            "events_complete",
            "Events with every module waited for present.",
            C,
            n(b.complete),
        ),
        one(
            "events_all_modules",
            "Events with all 32 modules of the camera.",
            C,
            n(b.all_modules),
        ),
        one(
            "clock_steps",
            "Camera clock steps followed.",
            C,
            n(b.clock_steps),
        ),
        one(
            "events_published",
            "Events handed to ZeroMQ.",
            C,
            n(sum.publish.sent),
        ),
        one(
            "publish_errors",
            "Events ZeroMQ refused for a reason other than a full subscriber.",
            C,
            n(sum.publish.errors),
        ),
        one(
            "subscriber_overflows",
            "Times a subscriber's queue was full: a lower bound of the events slow subscribers missed.",
            C,
            n(sum.publish.overflows),
        ),
        one(
            "subscriptions",
            "Subscriptions of connected subscribers.",
            G,
            n(sum.publish.subscriptions as u64),
        ),
        one(
            "pending_events",
            "Events pending in the builder's ring.",
            G,
            s.pending as f64,
        ),
        one(
            "ring_slots",
            "Slots of the builder's ring.",
            G,
            s.slots as f64,
        ),
        one(
            "ring_occupancy",
            "Share of the ring's slots holding a pending event.",
            G,
            s.pending as f64 / s.slots.max(1) as f64,
        ),
        one(
            "expected_modules",
            "Modules expected (learned, or --modules).",
            G,
            n(s.expected.count_ones().into()),
        ),
        one(
            "waited_modules",
            "Modules waited for: expected and on the camera's timeline.",
            G,
            n(s.waited.count_ones().into()),
        ),
        one(
            "run_number",
            "The current run's number (or the last one's, between runs).",
            G,
            n(s.run.number()),
        ),
        one(
            "run_active",
            "1 while a run is recording, 0 after stop-run.",
            G,
            n(s.run.running() as u64),
        ),
        one(
            "run_events",
            "Events emitted in the current run.",
            G,
            n(s.run_events),
        ),
        one(
            "run_start_seconds",
            "When the current run (or the pause between runs) began, Unix time.",
            G,
            s.run.since_ns() as f64 / 1e9,
        ),
        one(
            "receive_buffer_bytes",
            "The socket receive buffer as the kernel counts it (twice the usable size).",
            G,
            sum.rcvbuf as f64,
        ),
        one(
            "start_seconds",
            "When ssdaqd started, Unix time.",
            G,
            s.started_ns as f64 / 1e9,
        ),
        one(
            "uptime_seconds",
            "Seconds since ssdaqd started.",
            G,
            s.taken_ns.saturating_sub(s.started_ns) as f64 / 1e9,
        ),
        one(
            "cpu_seconds",
            "CPU time of the process (all threads).",
            C,
            sum.cpu_ns as f64 / 1e9,
        ),
        one(
            "snapshot_seconds",
            "When the stages took this snapshot, Unix time (at most every 100 ms).",
            G,
            s.taken_ns as f64 / 1e9,
        ),
    ];
    let dump = sum.dump.unwrap_or_default();
    let dumping = sum.dump.is_some();
    f.extend([
        one(
            "dump_enabled",
            "1 if every datagram is recorded in a raw dump (--dump).",
            G,
            n(dumping as u64),
        ),
        one(
            "dump_failed",
            "1 if the dump stopped (disk full, I/O error): datagrams are no longer recorded.",
            G,
            n(dump.failed as u64),
        ),
        one(
            "dump_recording",
            "1 if the dump is recording now (a run is on and the dump works).",
            G,
            n((dumping && !dump.failed && s.dump_path.is_some()) as u64),
        ),
        one(
            "dump_records",
            "Datagrams recorded in the dump.",
            C,
            n(dump.records),
        ),
        one("dump_bytes", "Bytes written to the dump.", C, n(dump.bytes)),
        one("dump_files", "Dump files started.", C, n(dump.files)),
        one(
            "dump_lost",
            "Datagrams received but not recorded in the dump.",
            C,
            n(dump.lost + dump.not_recorded),
        ),
    ]);
    f.extend([
        per_module(
            "module_datagrams",
            "Datagrams accepted, by module.",
            C,
            shown,
            |m| n(md(m).datagrams),
        ),
        per_module(
            "module_readouts",
            "Readouts placed in an event, by module.",
            C,
            shown,
            |m| n(md(m).readouts),
        ),
        per_module(
            "module_refused",
            "Datagrams refused, by module.",
            C,
            shown,
            |m| n(md(m).rejected.iter().sum()),
        ),
        per_module(
            "module_out_of_sync",
            "Datagrams off the camera's timeline, by module.",
            C,
            shown,
            |m| n(md(m).out_of_sync),
        ),
        per_module(
            "module_late_readouts",
            "Late readouts, by module.",
            C,
            shown,
            |m| n(md(m).late),
        ),
        per_module(
            "module_duplicate_readouts",
            "Duplicate readouts, by module.",
            C,
            shown,
            |m| n(md(m).duplicate),
        ),
        per_module(
            "module_missing",
            "Events emitted without the module while it was expected.",
            C,
            shown,
            |m| n(md(m).missing),
        ),
        per_module(
            "module_healthy",
            "1 if the module is heard, on time and on the camera's clock.",
            G,
            shown,
            |m| n(s.health[m].healthy() as u64),
        ),
        per_module(
            "module_silent",
            "1 if nothing was heard from the module for longer than --module-timeout.",
            G,
            shown,
            |m| n(s.health[m].silent as u64),
        ),
        per_module(
            "module_off_timeline",
            "1 if the module is off the camera's timeline.",
            G,
            shown,
            |m| n(s.health[m].off_timeline as u64),
        ),
        per_module(
            "module_clock_offset_flag",
            "1 if the module's clock has been offset from the camera's for 3 s.",
            G,
            shown,
            |m| n(s.health[m].offset as u64),
        ),
        per_module(
            "module_last_heard_seconds",
            "Seconds since the module's last datagram taken.",
            G,
            shown,
            |m| {
                let t = s.health[m].last_heard_ns;
                if t == 0 {
                    f64::NAN
                } else {
                    s.taken_ns.saturating_sub(t) as f64 / 1e9
                }
            },
        ),
        per_module(
            "module_datagram_rate",
            "Datagrams accepted per second over the last 10 s.",
            G,
            shown,
            |m| s.health[m].rate,
        ),
        per_module(
            "module_missing_ratio",
            "Share of the last 10 s's events the module was missing from.",
            G,
            shown,
            |m| s.health[m].missing_share,
        ),
        per_module(
            "module_clock_offset_seconds",
            "The module's clock offset from the camera's median.",
            G,
            shown,
            |m| s.health[m].offset_ns.map_or(f64::NAN, |o| o as f64 / 1e9),
        ),
    ]);
    f
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &*self.0;
        for fam in families(s) {
            let mut m = enc.encode_descriptor(fam.name, fam.help, None, fam.kind)?;
            for (labels, v) in &fam.rows {
                let mut e = m.encode_family(labels)?;
                match fam.kind {
                    // Whole counts print as integers (`160`, not `160.0`).
                    MetricType::Counter if v.fract() == 0.0 && *v < 9.0e15 => {
                        e.encode_counter::<NoLabelSet, u64, u64>(&(*v as u64), None)?
                    }
                    MetricType::Counter => e.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
                    _ => e.encode_gauge(v)?,
                }
            }
        }
        let info = [
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("backend", s.summary.backend.name().to_string()),
        ];
        Info(&info).encode(enc.encode_descriptor(
            "build",
            "ssdaqd's version and receive backend.",
            None,
            MetricType::Info,
        )?)?;
        let mut m = enc.encode_descriptor(
            "latency_seconds",
            "Latency from a datagram's arrival (kernel stamp) to each stage, by stage.",
            None,
            MetricType::Histogram,
        )?;
        for (stage, b) in &s.latency {
            // Per-bucket counts: the encoder cumulates them.
            let buckets: Vec<(f64, u64)> = (0..BUCKETS_NS.len())
                .map(|i| {
                    let below = if i == 0 { 0 } else { b.le[i - 1] };
                    (BUCKETS_NS[i] as f64 / 1e9, b.le[i] - below)
                })
                .collect();
            let labels = [("stage", *stage)];
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                b.sum_ns / 1e9,
                b.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

/// An info metric (`ssdaq_build_info{version=…} 1`).
#[derive(Debug)]
struct Info<'a>(&'a [(&'static str, String)]);

impl EncodeMetric for Info<'_> {
    fn encode(&self, mut e: prometheus_client::encoding::MetricEncoder) -> Result<(), fmt::Error> {
        e.encode_info(&self.0)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Info
    }
}

/// The snapshot as JSON (`/status`, `ssdaq-ctl status`).
pub fn status_json(s: &Snapshot) -> Value {
    let sum = &s.summary;
    let b = &sum.builder;
    let stats: serde_json::Map<String, Value> = sum
        .figures()
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let modules: Vec<Value> = (0..N_MODULES)
        .filter(|&m| s.health[m].watched || b.modules[m].datagrams > 0)
        .map(|m| {
            let h = &s.health[m];
            let c = &b.modules[m];
            json!({
                "module": m,
                "healthy": h.healthy(),
                "silent": h.silent,
                "off_timeline": h.off_timeline,
                "clock_offset": h.offset,
                "clock_offset_ns": h.offset_ns,
                "last_heard_s": (h.last_heard_ns > 0)
                    .then(|| s.taken_ns.saturating_sub(h.last_heard_ns) as f64 / 1e9),
                "rate": h.rate,
                "missing_share": h.missing_share,
                "datagrams": c.datagrams,
                "readouts": c.readouts,
                "missing": c.missing,
                "late": c.late,
                "duplicate": c.duplicate,
                "refused": c.rejected.iter().sum::<u64>(),
                "out_of_sync": c.out_of_sync,
            })
        })
        .collect();
    let latency: serde_json::Map<String, Value> = sum
        .latency
        .iter()
        .map(|(name, q)| {
            (
                crate::pipeline::latency_key(name).to_string(),
                json!({"n": q.count, "p50_ns": q.p50, "p99_ns": q.p99, "p999_ns": q.p999, "max_ns": q.max}),
            )
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "command_line": std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        "taken_ns": s.taken_ns,
        "uptime_s": s.taken_ns.saturating_sub(s.started_ns) as f64 / 1e9,
        "backend": sum.backend.name(),
        "run": {
            "state": s.run.name(),
            "number": s.run.number(),
            "events": s.run_events,
            "since_ns": s.run.since_ns(),
        },
        "builder": s.builder.to_pairs().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "pending": s.pending,
        "slots": s.slots,
        "expected": crate::builder::format_module_set(s.expected),
        "waited": crate::builder::format_module_set(s.waited),
        "unhealthy": crate::builder::format_module_set(
            (0..N_MODULES)
                .filter(|&m| s.health[m].watched && !s.health[m].healthy())
                .fold(0, |a, m| a | 1 << m)
        ),
        "subscriptions": sum.publish.subscriptions,
        "dump": sum.dump.map(|d| json!({
            "path": s.dump_path.as_ref().map(|p| p.display().to_string()),
            "failed": d.failed,
            "records": d.records,
            "bytes": d.bytes,
            "files": d.files,
            "lost": d.lost + d.not_recorded,
        })),
        "modules": modules,
        "latency": latency,
        "stats": stats,
    })
}
