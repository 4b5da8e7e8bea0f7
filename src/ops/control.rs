//! `--control ENDPOINT`: run control over ZeroMQ REQ/REP (`ssdaq-ctl`).
//!
//! Commands (one request each; the framing is `ssdaq_listener::control`):
//!
//! | command | does |
//! |---|---|
//! | `status` | every figure, as `/status` gives it |
//! | `start-run [N]` | ends the current run (its pending events out, its dump file closed), starts run N (default: the last + 1): every event from the next carries N, numbers restart at 1, and with `--dump` a new file named by the run is started |
//! | `stop-run` | ends the current run; ssdaqd goes on receiving and counting, and records nothing until the next `start-run` |
//! | `set KEY VALUE` | a builder setting for the next run (`timeout-ms`, `builder-timeout`, `window-ns`, `module-timeout`, `reorder-ns`, `modules`) |
//! | `get settings` | the settings in effect, and those for the next run |
//! | `help` | this list |
//!
//! Settings change only at a run's start, so that every dump file is
//! replayed with exactly the settings it was recorded with.
//!
//! This module owns the control thread: it parses commands, prepares what
//! can be slow (a new dump file) here, and hands the stages one
//! [`Command`] to carry out at their next housekeeping (within 100 ms); it
//! waits for their answer at most [`ANSWER_WITHIN`]. An unknown or
//! malformed command gets an error reply and changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use ssdaq_listener::control::{self as wire, Request, Server};
use tracing::{info, warn};

use super::{Board, Command, Done};
use crate::builder::{BuilderConfig, format_module_set, parse_module_set};
use crate::dump::{DumpConfig, DumpStats, DumpWriter};
use crate::pipeline::DaemonConfig;

/// The longest a command waits for the stages to carry it out.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The control thread's state.
pub struct Control {
    board: Arc<Board>,
    /// `--dump`, without the builder settings in its info (added per run).
    dump: Option<DumpConfig>,
    dump_stats: Arc<DumpStats>,
    /// The settings the next run starts with.
    next: BuilderConfig,
    /// The run as the stages last said (every change goes through this
    /// thread, so it is exact; a snapshot can be 100 ms old).
    run: super::RunState,
    /// `--dump` named a directory at the start: each run's file goes in it.
    dump_dir: bool,
}

/// The keys of the builder's settings in a dump's info.
fn is_builder_key(k: &str) -> bool {
    BuilderConfig::default()
        .to_pairs()
        .iter()
        .any(|(b, _)| b == k)
}

impl Control {
    pub fn new(cfg: &DaemonConfig, board: Arc<Board>, dump_stats: Arc<DumpStats>) -> Control {
        let dump = cfg.dump.as_ref().map(|d| DumpConfig {
            info: d
                .info
                .iter()
                .filter(|(k, _)| !is_builder_key(k))
                .cloned()
                .collect(),
            helper_core: d.helper_core.or(cfg.cores.map(|c| c.1)),
            ..d.clone()
        });
        let since_ns = crate::clock::now_ns();
        let run = if cfg.start_stopped {
            super::RunState::Stopped {
                last_run: cfg.builder.run_number,
                since_ns,
            }
        } else {
            super::RunState::Running {
                run: cfg.builder.run_number,
                since_ns,
            }
        };
        Control {
            dump_dir: dump.as_ref().is_some_and(|d| d.path.is_dir()),
            board,
            dump,
            dump_stats,
            next: cfg.builder.clone(),
            run,
        }
    }

    /// Serves requests until `stop`.
    pub fn serve(mut self, server: &Server, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = server.serve_one(Duration::from_millis(100), |r| self.handle(r)) {
                warn!("control: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// One command's reply.
    pub fn handle(&mut self, r: Request) -> Value {
        let args: Vec<&str> = r.args.iter().map(String::as_str).collect();
        let reply = match (r.command.as_str(), args.as_slice()) {
            ("status", []) => self.status(),
            ("start-run", []) => self.start_run(None),
            ("start-run", [n]) => match n.parse::<u64>() {
                Ok(n) => self.start_run(Some(n)),
                Err(_) => Err(format!("start-run: `{n}` is not a run number")),
            },
            ("stop-run", []) => self.stop_run(),
            ("set", [key, value]) => self.set(key, value),
            ("get", ["settings"]) => Ok(self.settings()),
            ("ping", []) => Ok(Map::from_iter([("pong".to_string(), json!(true))])),
            ("help", []) => Ok(Map::from_iter([(
                "commands".to_string(),
                json!([
                    "status",
                    "start-run [N]",
                    "stop-run",
                    "set KEY VALUE",
                    "get settings",
                    "ping",
                    "help"
                ]),
            )])),
            (c @ ("status" | "start-run" | "stop-run" | "set" | "get" | "ping" | "help"), _) => {
                Err(format!("{c}: wrong arguments {:?} (try `help`)", r.args))
            }
            (c, _) => Err(format!("unknown command {c:?} (try `help`)")),
        };
        match reply {
            Ok(fields) => wire::ok(fields),
            Err(e) => {
                info!("control: refused {:?}: {e}", r.command);
                wire::error(e)
            }
        }
    }

    fn status(&self) -> Result<Map<String, Value>, String> {
        let s = self
            .board
            .snapshot()
            .ok_or("ssdaqd is starting: no snapshot yet")?;
        match super::http::status_json(&s) {
            Value::Object(m) => Ok(m),
            _ => unreachable!("status_json gives an object"),
        }
    }

    fn settings(&self) -> Map<String, Value> {
        let pairs = |c: &BuilderConfig| {
            Value::Object(
                c.to_pairs()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        };
        let mut m = Map::new();
        if let Some(s) = self.board.snapshot() {
            m.insert("now".into(), pairs(&s.builder));
        }
        m.insert("next_run".into(), pairs(&self.next));
        m
    }

    /// Hands `c` to the stages and waits for their answer.
    fn ask(&self, c: Command, rx: std::sync::mpsc::Receiver<Done>) -> Result<Done, String> {
        if !self.board.post(c) {
            return Err("another command is still being carried out".into());
        }
        match rx.recv_timeout(ANSWER_WITHIN) {
            Ok(d) => Ok(d),
            Err(_) => {
                let withdrawn = self.board.withdraw();
                Err(format!(
                    "the pipeline did not answer within {:?}{}",
                    ANSWER_WITHIN,
                    if withdrawn {
                        " (the command was withdrawn: nothing changed)"
                    } else {
                        ""
                    }
                ))
            }
        }
    }

    fn start_run(&mut self, n: Option<u64>) -> Result<Map<String, Value>, String> {
        let run = match n {
            Some(n) => n,
            None => self
                .run
                .number()
                .checked_add(1)
                .ok_or("start-run: the last run number is the largest; give one")?,
        };
        let mut cfg = self.next.clone();
        cfg.run_number = run;
        cfg.validate().map_err(|e| e.to_string())?;
        // The new file is made here, off the stages: a refusal (disk full,
        // name taken) changes nothing.
        let dump = match &self.dump {
            Some(d) if self.dump_dir && !d.path.is_dir() => {
                return Err(format!(
                    "start-run {run}: the dump directory {} is gone; recreate it (nothing changed)",
                    d.path.display()
                ));
            }
            Some(d) => {
                let mut info = d.info.clone();
                info.extend(cfg.to_pairs());
                let d = DumpConfig {
                    info,
                    run: Some(run),
                    ..d.clone()
                };
                Some(Box::new(
                    DumpWriter::create(&d, self.dump_stats.clone())
                        .map_err(|e| format!("start-run {run}: cannot start its dump: {e}"))?,
                ))
            }
            None => None,
        };
        let path = dump
            .as_ref()
            .and_then(|d| d.path())
            .map(|p| p.display().to_string());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done = self.ask(
            Command::StartRun {
                cfg: Box::new(cfg),
                dump,
                done: tx,
            },
            rx,
        )?;
        self.run = super::RunState::Running {
            run,
            since_ns: crate::clock::now_ns(),
        };
        let mut m = self.ended(done);
        m.insert("run".into(), json!(run));
        m.insert("dump".into(), json!(path));
        Ok(m)
    }

    fn stop_run(&mut self) -> Result<Map<String, Value>, String> {
        if !self.run.running() {
            return Err(format!(
                "no run is recording (run {} ended); start one with start-run",
                self.run.number()
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done = self.ask(Command::StopRun { done: tx }, rx)?;
        self.run = super::RunState::Stopped {
            last_run: self.run.number(),
            since_ns: crate::clock::now_ns(),
        };
        Ok(self.ended(done))
    }

    /// Finishes the run the stages ended: its dump file closed here.
    fn ended(&self, done: Done) -> Map<String, Value> {
        let mut m = Map::new();
        let closed = done
            .closed
            .as_ref()
            .and_then(|d| d.path())
            .map(|p| p.display().to_string());
        if let Some(w) = done.closed {
            w.finish();
        }
        if done.previous.running() {
            m.insert(
                "ended".into(),
                json!({"run": done.previous.number(), "events": done.previous_events, "dump": closed}),
            );
        }
        m
    }

    fn set(&mut self, key: &str, value: &str) -> Result<Map<String, Value>, String> {
        let mut next = self.next.clone();
        let dur =
            |unit_ns: u64| parse_duration(value, unit_ns).map_err(|e| format!("set {key}: {e}"));
        match key {
            "timeout-ms" | "builder-timeout" => next.timeout_ns = dur(1_000_000)?,
            "window-ns" => next.window_ns = dur(1)?,
            "module-timeout" => next.module_timeout_ns = dur(1_000_000_000)?,
            "reorder-ns" => next.reorder_ns = dur(1)?,
            "modules" if value == "learned" => next.modules = None,
            "modules" => {
                next.modules =
                    Some(parse_module_set(value).map_err(|e| format!("set modules: {e}"))?)
            }
            _ => {
                return Err(format!(
                    "set: no setting {key:?} (timeout-ms, builder-timeout, window-ns, \
                     module-timeout, reorder-ns, modules)"
                ));
            }
        }
        next.validate()
            .map_err(|e| format!("set {key} {value}: {}", e.describe(crate::cli::flag)))?;
        self.next = next;
        info!("control: {key} = {value} from the next run");
        let mut m = self.settings();
        m.insert(
            "applies".into(),
            json!("from the next start-run (a run keeps the settings it was recorded with)"),
        );
        if let Some(mods) = self.next.modules {
            m.insert("modules".into(), json!(format_module_set(mods)));
        }
        Ok(m)
    }
}

/// A duration: a number in `unit_ns`, or with a unit (`ns`, `us`, `ms`, `s`).
pub fn parse_duration(s: &str, unit_ns: u64) -> Result<u64, String> {
    let t = s.trim();
    let (num, unit) = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
    ]
    .iter()
    .find_map(|&(u, k)| t.strip_suffix(u).map(|n| (n, k)))
    .unwrap_or((t, unit_ns));
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 300ms, 2s or 150us"))?;
    let ns = v * unit as f64;
    if !(0.0..=u64::MAX as f64).contains(&ns) || ns.is_nan() {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_the_settings_own() {
        assert_eq!(parse_duration("300ms", 1), Ok(300_000_000));
        assert_eq!(parse_duration("300", 1_000_000), Ok(300_000_000));
        assert_eq!(parse_duration("2s", 1), Ok(2_000_000_000));
        assert_eq!(parse_duration("150us", 1), Ok(150_000));
        for bad in ["", "x", "-1s", "1e30s", "NaNs"] {
            assert!(parse_duration(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_commands_change_nothing() {
        let board = Arc::new(Board::new(true));
        let mut c = Control::new(&DaemonConfig::default(), board, Arc::default());
        let before = c.next.clone();
        for (cmd, args) in [
            ("nope", vec![]),
            ("start-run", vec!["x"]),
            ("start-run", vec!["1", "2"]),
            ("set", vec!["timeout-ms"]),
            ("set", vec!["slots", "64"]),
            ("set", vec!["timeout-ms", "0"]),
            ("set", vec!["module-timeout", "1e9"]),
            ("set", vec!["modules", "40"]),
            ("stop-run", vec![]),
        ] {
            let r = c.handle(Request {
                command: cmd.into(),
                args: args.iter().map(|s| s.to_string()).collect(),
            });
            assert_eq!(r["ok"], false, "{cmd} {args:?}: {r}");
            assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        assert_eq!(c.next.to_pairs(), before.to_pairs(), "nothing changed");
        let r = c.handle(Request {
            command: "set".into(),
            args: vec!["builder-timeout".into(), "300ms".into()],
        });
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(c.next.timeout_ns, 300_000_000);
    }
}
