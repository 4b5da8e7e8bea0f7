//! The command line's edge: the flags the binaries share, in one place.
//!
//! This module owns the clap definitions that more than one binary uses —
//! the event builder's flags (`ssdaqd`, `ssdaq-replay`), the wire format
//! and the receive backend — and how a library error is told in terms of
//! flags. It is the only part of the library that knows clap; the library's
//! types parse from and print as plain names (`FromStr`, `name()`).

use std::time::Duration;

/// `eprintln!` that never panics: a closed stderr (a pipe whose reader
/// left, a terminal gone) must not turn a run into exit 101, as
/// `eprintln!`'s panic on EPIPE did in every binary.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics (see [`errln!`](crate::errln)).
#[macro_export]
macro_rules! errwrite {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

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
    /// Stop waiting for a module silent this long, at most 86400 (a day)
    /// [ssdaqd default: 2].
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

/// How HDF5 files are written (`ssdaq-write`, `ssdaq-replay --hdf5`).
#[cfg(feature = "hdf5")]
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "HDF5 files")]
pub struct Hdf5Args {
    /// Table layout: the original's or its successor's.
    #[arg(long, default_value = "seed", value_parser = layout_parser())]
    pub layout: ssdaq_hdf5::Layout,
    /// deflate level, 0 (none) to 9.
    #[arg(long, default_value_t = 1, value_name = "LEVEL",
          value_parser = clap::value_parser!(u8).range(0..=9))]
    pub compress: u8,
    /// Start a new file after this many events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events: Option<u64>,
    /// Start a new file once one reaches this size, e.g. 500M or 2G
    /// (checked at each flush, so a file may pass it by about a second of data).
    #[arg(long, value_name = "BYTES", value_parser = byte_size)]
    pub max_size: Option<u64>,
}

#[cfg(feature = "hdf5")]
impl Hdf5Args {
    pub fn limits(&self) -> ssdaq_hdf5::Limits {
        ssdaq_hdf5::Limits {
            max_events: self.max_events,
            max_bytes: self.max_size,
        }
    }

    /// Options for files of events whose run number (v2 carries none) is
    /// `run_number`, with `attrs` recorded on the table.
    pub fn options(&self, run_number: u64, attrs: Vec<(String, String)>) -> ssdaq_hdf5::Options {
        ssdaq_hdf5::Options {
            layout: self.layout,
            compress: self.compress,
            run_number,
            attrs,
            ..ssdaq_hdf5::Options::default()
        }
    }
}

/// `--layout seed|successor`, each explained in `--help`.
#[cfg(feature = "hdf5")]
fn layout_parser() -> impl TypedValueParser<Value = ssdaq_hdf5::Layout> {
    use ssdaq_hdf5::Layout;
    PossibleValuesParser::new([
        PossibleValue::new(Layout::Seed.name())
            .help("the original's EventFileWriter: event_number, runt_number, ev_time, data, time_stamps"),
        PossibleValue::new(Layout::Successor.name())
            .help("the successor's SSDataWriter (SSDataReader opens it): iro, time, cpu_t, cpu_t_s, cpu_t_ns, data"),
    ])
    .map(|s| s.parse::<Layout>().expect("one of the listed names"))
}

/// A size in bytes, with an optional k, M, G or T suffix (powers of 1024);
/// at least 1M, so that a file holds more than a chunk.
pub fn byte_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("`{s}`: the suffix must be k, M, G or T")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n = num
        .parse::<u64>()
        .map_err(|_| format!("`{s}` is not a size like 500M or 2G"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("`{s}` is below the smallest file size, 1M"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(byte_size("2G"), Ok(2 << 30));
        assert_eq!(byte_size("500m"), Ok(500 << 20));
        assert_eq!(byte_size("1048576"), Ok(1 << 20));
        for bad in ["", "M", "1.5G", "-1G", "10k", "3X", "99999999999T"] {
            assert!(byte_size(bad).is_err(), "{bad}");
        }
    }

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
