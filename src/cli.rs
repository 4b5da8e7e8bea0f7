//! The command line's edge: the flags the binaries share, in one place.
//!
//! This module owns the clap definitions that more than one binary uses —
//! the event builder's flags (`ssdaqd`, `ssdaq-replay`), the wire format
//! and the receive backend — and how a library error is told in terms of
//! flags. It is the only part of the library that knows clap; the library's
//! types parse from and print as plain names (`FromStr`, `name()`).

use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

use crate::builder::{BuilderConfig, Net, Setting, parse_module_set};
use crate::event::Format;
use crate::recv::IoMode;

/// The flag that sets a builder setting.
pub fn flag(s: Setting) -> &'static str {
    match s {
        Setting::Window => "--window-ns",
        Setting::Timeout => "--timeout-ms",
        Setting::ModuleTimeout => "--module-timeout",
        Setting::Reorder => "--reorder-ns",
        Setting::Slots => "--slots",
        Setting::Modules => "--modules",
    }
}

/// The event builder's flags. Each is optional: unset, `ssdaqd` takes the
/// default and `ssdaq-replay` the setting recorded in the dump.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(
    next_help_heading = "Event building (ssdaq-replay: as recorded in the dump unless given)"
)]
pub struct BuilderArgs {
    /// Readouts whose primary timestamps differ by at most this are one
    /// event [ssdaqd default: 10000].
    #[arg(long, value_name = "NS")]
    pub window_ns: Option<u64>,
    /// Emit an incomplete event this long after its first readout arrived
    /// [ssdaqd default: 100].
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Stop waiting for a module silent this long [ssdaqd default: 2].
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub module_timeout: Option<Duration>,
    /// Wait for exactly these modules (e.g. 0-31) instead of learning them.
    #[arg(long, value_name = "SET", value_parser = parse_module_set)]
    pub modules: Option<u32>,
    /// Event slots: the most events that can be pending at once, 64..=65536
    /// [ssdaqd default: 1024].
    #[arg(long)]
    pub slots: Option<usize>,
    /// A module's datagram arriving this long after its successor is still
    /// built; a lost datagram is known lost only this long after the next
    /// [ssdaqd default: 2000000].
    #[arg(long, value_name = "NS")]
    pub reorder_ns: Option<u64>,
    /// Fold out-of-range module numbers % 32 instead of refusing them.
    #[arg(short = 'r', long)]
    pub relaxed_ip: bool,
    /// Run number written into every event [ssdaqd default: 0].
    #[arg(long)]
    pub run_number: Option<u64>,
    /// Take datagrams only from this network as modules, e.g.
    /// 10.0.1.0/24 (repeatable); others are refused as unknown sources,
    /// counted by address [ssdaqd default: any source].
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Net>,
}

impl BuilderArgs {
    /// `cfg` with every flag given applied, checked; the error names flags.
    pub fn apply(&self, mut cfg: BuilderConfig) -> Result<BuilderConfig, String> {
        if let Some(v) = self.window_ns {
            cfg.window_ns = v;
        }
        if let Some(v) = self.timeout_ms {
            cfg.timeout_ns = v.saturating_mul(1_000_000);
        }
        if let Some(v) = self.module_timeout {
            cfg.module_timeout_ns = u64::try_from(v.as_nanos()).unwrap_or(u64::MAX);
        }
        if self.modules.is_some() {
            cfg.modules = self.modules;
        }
        if let Some(v) = self.slots {
            cfg.slots = v;
        }
        if let Some(v) = self.reorder_ns {
            cfg.reorder_ns = v;
        }
        if self.relaxed_ip {
            cfg.relaxed_ip = true;
        }
        if let Some(v) = self.run_number {
            cfg.run_number = v;
        }
        if !self.allow.is_empty() {
            cfg.allow = self.allow.clone();
        }
        cfg.validate().map_err(|e| e.describe(flag))?;
        Ok(cfg)
    }
}

/// A non-negative number of seconds, e.g. `2` or `0.5`.
pub fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("`{s}` is not a non-negative number of seconds"))
}

/// `--format v1|v2`, with each format explained in `--help`.
pub fn format_parser() -> impl TypedValueParser<Value = Format> {
    PossibleValuesParser::new([
        PossibleValue::new(Format::V1.name())
            .help("`SSEvent`, PROTOCOL.md §4: 16 920 bytes with per-module timestamps"),
        PossibleValue::new(Format::V2.name()).help("`SSReadout`, PROTOCOL.md §5: 16 416 bytes"),
    ])
    .map(|s| s.parse::<Format>().expect("one of the listed names"))
}

/// `--io auto|uring|recvmmsg`, with each backend explained in `--help`.
pub fn io_parser() -> impl TypedValueParser<Value = IoMode> {
    PossibleValuesParser::new([
        PossibleValue::new(IoMode::Auto.name())
            .help("io_uring if it can be set up, else recvmmsg (with one log line)"),
        PossibleValue::new(IoMode::Uring.name()).help("io_uring or an error"),
        PossibleValue::new(IoMode::Recvmmsg.name()).help("recvmmsg"),
    ])
    .map(|s| s.parse::<IoMode>().expect("one of the listed names"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_flags_keep_the_settings_and_set_ones_replace_them() {
        let base = BuilderConfig {
            run_number: 7,
            ..Default::default()
        };
        assert_eq!(BuilderArgs::default().apply(base.clone()), Ok(base.clone()));
        let args = BuilderArgs {
            timeout_ms: Some(200),
            module_timeout: Some(Duration::from_millis(2500)),
            ..Default::default()
        };
        let cfg = args.apply(base).unwrap();
        assert_eq!(
            (cfg.timeout_ns, cfg.module_timeout_ns),
            (200_000_000, 2_500_000_000)
        );
        assert_eq!(cfg.run_number, 7);
    }

    #[test]
    fn a_bad_combination_is_told_in_flags() {
        let args = BuilderArgs {
            slots: Some(1),
            ..Default::default()
        };
        let e = args.apply(BuilderConfig::default()).unwrap_err();
        assert!(e.starts_with("--slots must be 64..=65536"), "{e}");
    }

    #[test]
    fn seconds_are_non_negative_numbers() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }
}
