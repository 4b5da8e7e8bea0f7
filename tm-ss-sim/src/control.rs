//! Steering a running simulation (`tm-ss-sim --control ADDR`), as the
//! original's `sim_control.py` could.
//!
//! [`Live`] is what the sending loop reads at every frame (relaxed atomics:
//! no lock, no allocation): which modules send, the rate, and the faults
//! switched on at run time. [`Live::handle`] turns one command into a change
//! and a JSON reply; the binary serves it on a ZeroMQ REP socket
//! (`ssdaq_listener::control`), and `tm-ss-sim ctl …` is its client.
//!
//! | command | does |
//! |---|---|
//! | `ping` | `{"pong": true}` |
//! | `send on\|off [MODULES]` | all modules, or a set like `3` or `0-4,7` |
//! | `rate HZ` | datagrams per second per module, from the next frame |
//! | `get rate` / `get sent` / `get faults` | the rate; datagrams sent by module; the run-time faults |
//! | `fault skew MODULES NS` | shift those modules' timestamps by NS (negative: behind) |
//! | `fault loss P` | drop each datagram with probability P (0..1), besides `--loss` |
//! | `fault clear` | the run-time faults off |
//!
//! Paced mode only (a flood has no frame clock to change).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use serde_json::{Map, Value, json};
use ssdaq_listener::control::{self as wire, Request};
use ssdaq_wire::packet::{N_MODULES, format_module_set, parse_module_set};

/// The most datagrams per second per module `rate` takes.
pub const MAX_RATE: f64 = 100_000.0;
/// The fewest: a frame every 100 s.
pub const MIN_RATE: f64 = 0.01;

/// What a running simulation can be told; shared with the sending loop.
#[derive(Debug)]
pub struct Live {
    /// The modules sending (bit m: module m).
    sending: AtomicU32,
    rate_bits: AtomicU64,
    rate_changed: AtomicBool,
    /// Datagrams sent by module, as of the last frame.
    sent: [AtomicU64; N_MODULES],
    skew: [AtomicI64; N_MODULES],
    loss_bits: AtomicU64,
    /// The modules simulated.
    modules: u32,
}

impl Live {
    pub fn new(cfg: &crate::SimConfig) -> Live {
        let modules = cfg.module_numbers().fold(0u32, |a, m| a | 1 << m);
        Live {
            sending: AtomicU32::new(modules),
            rate_bits: AtomicU64::new(cfg.rate.to_bits()),
            rate_changed: AtomicBool::new(false),
            sent: std::array::from_fn(|_| AtomicU64::new(0)),
            skew: std::array::from_fn(|_| AtomicI64::new(0)),
            loss_bits: AtomicU64::new(0f64.to_bits()),
            modules,
        }
    }

    pub fn sending(&self, m: u8) -> bool {
        self.sending.load(Ordering::Relaxed) & (1 << m) != 0
    }
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }
    /// A rate change waits to be taken.
    pub fn rate_pending(&self) -> bool {
        self.rate_changed.load(Ordering::Relaxed)
    }

    /// The new rate, once, if it changed since the last call.
    pub fn take_rate_change(&self) -> Option<f64> {
        self.rate_changed
            .swap(false, Ordering::Relaxed)
            .then(|| self.rate())
    }
    pub fn skew(&self, m: u8) -> i64 {
        self.skew[m as usize].load(Ordering::Relaxed)
    }
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss_bits.load(Ordering::Relaxed))
    }
    pub fn set_sent(&self, m: u8, n: u64) {
        self.sent[m as usize].store(n, Ordering::Relaxed);
    }

    /// Modules named by `s` (`all`, or a set), which must be simulated.
    fn modules_of(&self, s: &str) -> Result<u32, String> {
        let mask = if s == "all" {
            self.modules
        } else {
            parse_module_set(s)?
        };
        if mask & !self.modules != 0 {
            return Err(format!(
                "modules {} are not simulated (this simulator sends as {})",
                format_module_set(mask & !self.modules),
                format_module_set(self.modules)
            ));
        }
        Ok(mask)
    }

    /// One command's reply (an error changes nothing).
    pub fn handle(&self, r: Request) -> Value {
        match self.command(&r) {
            Ok(m) => wire::ok(m),
            Err(e) => wire::error(e),
        }
    }

    fn command(&self, r: &Request) -> Result<Map<String, Value>, String> {
        let args: Vec<&str> = r.args.iter().map(String::as_str).collect();
        let field = |k: &str, v: Value| Map::from_iter([(k.to_string(), v)]);
        match (r.command.as_str(), args.as_slice()) {
            ("ping", []) => Ok(field("pong", json!(true))),
            ("send", [on_off, rest @ ..]) if rest.len() <= 1 => {
                let mask = self.modules_of(rest.first().copied().unwrap_or("all"))?;
                match *on_off {
                    "on" => self.sending.fetch_or(mask, Ordering::Relaxed),
                    "off" => self.sending.fetch_and(!mask, Ordering::Relaxed),
                    x => return Err(format!("send: `{x}` is not on or off")),
                };
                Ok(field(
                    "sending",
                    json!(format_module_set(self.sending.load(Ordering::Relaxed))),
                ))
            }
            ("rate", [hz]) => {
                let v: f64 = hz
                    .parse()
                    .ok()
                    .filter(|v: &f64| (MIN_RATE..=MAX_RATE).contains(v))
                    .ok_or_else(|| {
                        format!("rate: `{hz}` is not a rate in {MIN_RATE}..={MAX_RATE} Hz")
                    })?;
                self.rate_bits.store(v.to_bits(), Ordering::Relaxed);
                self.rate_changed.store(true, Ordering::Relaxed);
                Ok(field("rate", json!(v)))
            }
            ("get", ["rate"]) => Ok(field("rate", json!(self.rate()))),
            ("get", ["sent"]) => {
                let per: Map<String, Value> = (0..N_MODULES)
                    .filter(|m| self.modules & (1 << m) != 0)
                    .map(|m| (m.to_string(), json!(self.sent[m].load(Ordering::Relaxed))))
                    .collect();
                let total: u64 = self.sent.iter().map(|a| a.load(Ordering::Relaxed)).sum();
                let mut m = field("sent", Value::Object(per));
                m.insert("total".into(), json!(total));
                Ok(m)
            }
            ("get", ["faults"]) => Ok(self.faults()),
            ("fault", ["skew", mods, ns]) => {
                let mask = self.modules_of(mods)?;
                let v: i64 = ns
                    .parse()
                    .map_err(|_| format!("fault skew: `{ns}` is not a number of ns"))?;
                for m in (0..N_MODULES).filter(|m| mask & (1 << m) != 0) {
                    self.skew[m].store(v, Ordering::Relaxed);
                }
                Ok(self.faults())
            }
            ("fault", ["loss", p]) => {
                let v: f64 = p
                    .parse()
                    .ok()
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| format!("fault loss: `{p}` is not a probability 0..1"))?;
                self.loss_bits.store(v.to_bits(), Ordering::Relaxed);
                Ok(self.faults())
            }
            ("fault", ["clear"]) => {
                for s in &self.skew {
                    s.store(0, Ordering::Relaxed);
                }
                self.loss_bits.store(0f64.to_bits(), Ordering::Relaxed);
                Ok(self.faults())
            }
            ("help", []) => Ok(field(
                "commands",
                json!([
                    "ping",
                    "send on|off [MODULES]",
                    "rate HZ",
                    "get rate|sent|faults",
                    "fault skew MODULES NS",
                    "fault loss P",
                    "fault clear"
                ]),
            )),
            (c, _) => Err(format!(
                "{c:?} with {:?}: not a command (try `help`)",
                r.args
            )),
        }
    }

    fn faults(&self) -> Map<String, Value> {
        let skew: Map<String, Value> = (0..N_MODULES)
            .filter(|&m| self.skew[m].load(Ordering::Relaxed) != 0)
            .map(|m| (m.to_string(), json!(self.skew[m].load(Ordering::Relaxed))))
            .collect();
        Map::from_iter([
            ("skew_ns".to_string(), Value::Object(skew)),
            ("loss".to_string(), json!(self.loss())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Request {
        Request::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn commands_change_what_they_say_and_bad_ones_nothing() {
        let cfg = crate::SimConfig {
            modules: 4,
            ..Default::default()
        };
        let l = Live::new(&cfg);
        assert_eq!(l.handle(req("send off 2"))["sending"], "0-1,3");
        assert!(!l.sending(2) && l.sending(3));
        assert_eq!(l.handle(req("rate 50"))["rate"], 50.0);
        assert_eq!(l.take_rate_change(), Some(50.0));
        assert_eq!(l.take_rate_change(), None);
        assert_eq!(l.handle(req("fault skew 1 -3000"))["ok"], true);
        assert_eq!(l.skew(1), -3000);
        for bad in [
            "send maybe",
            "send off 9",
            "send off 40",
            "rate 0",
            "rate -1",
            "rate x",
            "rate 1e9",
            "fault loss 2",
            "fault skew 1 x",
            "get nothing",
            "nonsense",
        ] {
            let r = l.handle(req(bad));
            assert_eq!(r["ok"], false, "{bad}: {r}");
        }
        assert!(!l.sending(2) && l.sending(0));
        assert_eq!((l.rate(), l.skew(1), l.loss()), (50.0, -3000, 0.0));
        l.handle(req("send on"));
        l.handle(req("fault clear"));
        assert!(l.sending(2) && l.skew(1) == 0);
    }
}
