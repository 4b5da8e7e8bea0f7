//! `ssdaq-top [URL]`: a terminal view of a running ssdaqd, from its
//! `--metrics` address (`/status`, the JSON twin of `/metrics`).
//!
//! Thin: fetch `/status` once a second ([`fetch`]), compute rates from two
//! fetches, draw ([`draw`]) with ratatui. `q` or Esc quits. Fits 80 × 24.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(
    name = "ssdaq-top",
    version,
    about = "A terminal view of a running ssdaqd: rates, fates, latency, dump, run, and the camera's modules by health",
    after_help = "URL is ssdaqd's --metrics address, e.g. http://127.0.0.1:9187 (or just 9187). Keys: q or Esc quits."
)]
struct Cli {
    /// ssdaqd's --metrics address.
    #[arg(default_value = "http://127.0.0.1:9187")]
    url: String,
    /// Seconds between refreshes.
    #[arg(long, default_value = "1", value_parser = ssdaq::cli::seconds)]
    every: Duration,
}

/// Two fetches a refresh apart.
struct View {
    now: Option<(Instant, Value)>,
    before: Option<(Instant, Value)>,
    error: Option<String>,
}

impl View {
    /// Per-second rate of `stats[key]` between the two fetches.
    fn rate(&self, key: &str) -> Option<f64> {
        let ((t1, a), (t0, b)) = (self.now.as_ref()?, self.before.as_ref()?);
        let dt = t1.duration_since(*t0).as_secs_f64();
        let (x, y) = (a["stats"][key].as_f64()?, b["stats"][key].as_f64()?);
        (dt > 0.0).then(|| (x - y).max(0.0) / dt)
    }
}

fn us(ns: &Value) -> String {
    match ns.as_f64() {
        Some(v) if v >= 1e6 => format!("{:.1}ms", v / 1e6),
        Some(v) => format!("{:.0}µs", v / 1e3),
        None => "-".into(),
    }
}

fn draw(f: &mut ratatui::Frame, v: &View, url: &str) {
    let area = f.area();
    let [head, body, mods, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(8),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(area);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let Some((_, s)) = &v.now else {
        f.render_widget(
            Paragraph::new(format!(
                "ssdaq-top {url}: {}",
                v.error.as_deref().unwrap_or("connecting…")
            )),
            area,
        );
        return;
    };
    let st = &s["stats"];
    let run = &s["run"];
    let running = run["state"] == "running";
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("ssdaq-top ", bold),
            Span::raw(format!("{url} ")),
            Span::styled(
                format!(
                    "run {} {}",
                    run["number"],
                    run["state"].as_str().unwrap_or("?")
                ),
                if running {
                    bold.fg(Color::Green)
                } else {
                    bold.fg(Color::Yellow)
                },
            ),
            Span::raw(format!(
                " ({} events) up {:.0}s {}",
                run["events"],
                s["uptime_s"].as_f64().unwrap_or(0.0),
                s["backend"].as_str().unwrap_or("")
            )),
        ])),
        head,
    );
    let r = |k: &str| v.rate(k).map_or("-".into(), |x| format!("{x:.1}/s"));
    let lat = &s["latency"]["arrival_to_zmq"];
    let lat_line = if lat["n"].as_u64().unwrap_or(0) == 0 {
        "latency arrival→zmq: no complete event yet".to_string()
    } else {
        format!(
            "latency arrival→zmq p50 {} p99 {} max {} (complete events)",
            us(&lat["p50_ns"]),
            us(&lat["p99_ns"]),
            us(&lat["max_ns"])
        )
    };
    let dump = match s["dump"].as_object() {
        None => "dump off".to_string(),
        Some(d) => format!(
            "dump {} | {} MB in {} file(s) | lost {}{}",
            d["path"].as_str().unwrap_or("(between runs)"),
            d["bytes"].as_u64().unwrap_or(0) >> 20,
            d["files"],
            d["lost"],
            if d["failed"] == true {
                " | STOPPED"
            } else {
                ""
            }
        ),
    };
    let drops = st["kernel_drops"].as_u64().unwrap_or(0);
    let lines = vec![
        Line::from(format!(
            "datagrams {} ({} in all)   events {} (complete {})",
            r("received"),
            st["received"],
            r("events"),
            r("complete")
        )),
        Line::from(vec![
            Span::raw("losses: "),
            Span::styled(
                format!("kernel {drops}"),
                if drops > 0 {
                    Style::default().fg(Color::Red)
                } else {
                    Style::default()
                },
            ),
            Span::raw(format!(
                "  refused {}  off-timeline {}  late {}  dup {}  partial {}",
                st["refused"], st["out_of_sync"], st["late"], st["duplicate"], st["partial"]
            )),
        ]),
        Line::from(format!(
            "subscribers {} (overflows {})   published {}   pending {}/{}",
            s["subscriptions"],
            st["hwm_overflows"],
            r("published"),
            s["pending"],
            s["slots"]
        )),
        Line::from(lat_line),
        Line::from(dump),
        Line::from(format!(
            "modules expected {}  waited {}  unhealthy {}",
            s["expected"].as_str().unwrap_or("-"),
            s["waited"].as_str().unwrap_or("-"),
            s["unhealthy"].as_str().unwrap_or("-")
        )),
    ];
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("daemon")),
        body,
    );
    // The camera's 32 modules, 8 to a row, coloured by health.
    let by_module: Vec<Option<&Value>> = (0..32)
        .map(|m| {
            s["modules"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["module"] == m))
        })
        .collect();
    let seen = by_module.iter().filter(|m| m.is_some()).count();
    let healthy = by_module
        .iter()
        .flatten()
        .filter(|m| m["healthy"] == true)
        .count();
    let mut rows = Vec::new();
    for row in 0..4 {
        let mut spans = Vec::new();
        for (m, entry) in by_module.iter().enumerate().skip(row * 8).take(8) {
            let (label, style) = match entry {
                None => (format!("{m:>2} ·  "), Style::default().fg(Color::DarkGray)),
                Some(x) => {
                    let state = if x["silent"] == true {
                        ("SIL", Color::Red)
                    } else if x["off_timeline"] == true {
                        ("OFF", Color::Red)
                    } else if x["clock_offset"] == true {
                        ("CLK", Color::Yellow)
                    } else {
                        ("ok", Color::Green)
                    };
                    (
                        format!("{m:>2} {:<3}", state.0),
                        Style::default().fg(Color::Black).bg(state.1),
                    )
                }
            };
            spans.push(Span::styled(label, style));
            spans.push(Span::raw("  "));
        }
        rows.push(Line::from(spans));
    }
    rows.push(Line::from(""));
    rows.push(Line::from(
        "ok · SIL silent · OFF off the timeline · CLK clock offset · · never heard",
    ));
    f.render_widget(
        Paragraph::new(rows).block(
            Block::bordered().title(format!("camera: {seen} modules heard, {healthy} healthy")),
        ),
        mods,
    );
    let foot_text = match &v.error {
        Some(e) => format!("q quits | last fetch failed: {e}"),
        None => "q quits".to_string(),
    };
    f.render_widget(Paragraph::new(foot_text), foot);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let hp = match ssdaq::view::host_port(&cli.url) {
        Ok(hp) => hp,
        Err(e) => {
            ssdaq::errln!("ssdaq-top: {e}");
            return ExitCode::from(2);
        }
    };
    let mut terminal = ratatui::init();
    let mut view = View {
        now: None,
        before: None,
        error: None,
    };
    let mut next = Instant::now();
    let result = loop {
        if Instant::now() >= next {
            next = Instant::now() + cli.every;
            match ssdaq::view::fetch_status(&hp) {
                Ok(s) => {
                    view.before = view.now.take();
                    view.now = Some((Instant::now(), s));
                    view.error = None;
                }
                Err(e) => view.error = Some(e),
            }
            if let Err(e) = terminal.draw(|f| draw(f, &view, &cli.url)) {
                break Err(e.to_string());
            }
        }
        match event::poll(next.saturating_duration_since(Instant::now())) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k))
                    if k.kind == KeyEventKind::Press
                        && matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) =>
                {
                    break Ok(());
                }
                Ok(Event::Resize(..)) => {
                    let _ = terminal.draw(|f| draw(f, &view, &cli.url));
                }
                Ok(_) => {}
                Err(e) => break Err(e.to_string()),
            },
            Ok(false) => {}
            Err(e) => break Err(e.to_string()),
        }
    };
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            ssdaq::errln!("ssdaq-top: {e}");
            ExitCode::from(1)
        }
    }
}
