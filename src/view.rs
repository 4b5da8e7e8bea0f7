//! Pictures of an event: the camera image in a terminal (`ssdaq-listen
//! --camera`), and the status client `ssdaq-top` and `ssdaq-view` share.
//!
//! This module owns how values become colours (a perceptual blue → green →
//! yellow scale over the event's range, or a fixed one) and how the 48 × 48
//! image (`ssdaq_wire::geometry`) becomes character cells: one cell per two
//! pixels stacked (`▀`, the upper pixel in the foreground colour, the lower
//! in the background), so the camera is 48 columns × 24 lines. Missing
//! modules are grey with their number written in; the empty corners are
//! blank. It draws; it never receives.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::builder::format_module_set;
use crate::event::EventView;
use crate::packet::N_MODULES;
use ssdaq_wire::geometry::{IMAGE, MODULE_SIDE, module_at, pixel_at};

/// Stops of the colour scale (viridis, sampled).
const SCALE: [(u8, u8, u8); 6] = [
    (68, 1, 84),
    (65, 68, 135),
    (42, 120, 142),
    (34, 168, 132),
    (122, 209, 81),
    (253, 231, 37),
];
const MISSING: (u8, u8, u8) = (70, 70, 70);

/// The colour of `x` on the scale from `lo` to `hi`.
pub fn colour(x: f64, lo: f64, hi: f64) -> (u8, u8, u8) {
    let t = if x.is_nan() {
        0.0
    } else if hi > lo {
        ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    };
    let pos = t * (SCALE.len() - 1) as f64;
    let i = (pos.floor() as usize).min(SCALE.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (SCALE[i], SCALE[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The range of the present modules' values (or `fixed`).
pub fn range(v: &EventView<'_>, fixed: Option<(f64, f64)>) -> (f64, f64) {
    if let Some(r) = fixed {
        return r;
    }
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for m in (0..N_MODULES).filter(|&m| v.has_module(m)) {
        for x in v.row(m) {
            lo = lo.min(x);
            hi = hi.max(x);
        }
    }
    if lo > hi { (0.0, 1.0) } else { (lo, hi) }
}

/// The event as 24 lines of ANSI true-colour text, each ending in a clear
/// to the end of the line, with a legend to the right.
pub fn camera_ansi(v: &EventView<'_>, fixed: Option<(f64, f64)>) -> String {
    let (lo, hi) = range(v, fixed);
    let mut rows = [[f64::NAN; 64]; N_MODULES];
    for (m, row) in rows
        .iter_mut()
        .enumerate()
        .filter(|(m, _)| v.has_module(*m))
    {
        for (x, y) in row.iter_mut().zip(v.row(m)) {
            *x = y;
        }
    }
    let value = |r: usize, c: usize| -> Option<(u8, u8, u8)> {
        let (m, j) = pixel_at(r, c)?;
        Some(if v.has_module(m) {
            colour(rows[m][j], lo, hi)
        } else {
            MISSING
        })
    };
    // A missing module's number, written at its block's second cell line.
    let label = |line: usize, c: usize| -> Option<char> {
        let (r, col0) = (line * 2, c - c % MODULE_SIDE);
        let m = module_at(r, c)?;
        if v.has_module(m) || line % (MODULE_SIDE / 2) != 1 {
            return None;
        }
        let text = format!(" x{m:<2}");
        text.chars().nth(c - col0)
    };
    let present = v.present_mask();
    let legend = [
        format!("event {}", v.number()),
        format!("run {}", v.run().map_or("-".into(), |r| r.to_string())),
        format!("modules {}/{N_MODULES}", present.count_ones()),
        format!(
            "missing {}",
            format_module_set(!present & (u32::MAX >> (32 - N_MODULES)))
        ),
        format!("{lo:.1} .. {hi:.1} mV"),
        "placement: default".to_string(),
    ];
    let mut out = String::new();
    for line in 0..IMAGE / 2 {
        for c in 0..IMAGE {
            let (up, down) = (value(2 * line, c), value(2 * line + 1, c));
            match (up, down, label(line, c)) {
                (_, _, Some(ch)) => {
                    let _ = write!(
                        out,
                        "\x1b[38;2;255;255;255;48;2;{};{};{}m{ch}",
                        MISSING.0, MISSING.1, MISSING.2
                    );
                }
                (Some(a), Some(b), None) => {
                    let _ = write!(
                        out,
                        "\x1b[38;2;{};{};{};48;2;{};{};{}m▀",
                        a.0, a.1, a.2, b.0, b.1, b.2
                    );
                }
                _ => out.push_str("\x1b[0m "),
            }
        }
        out.push_str("\x1b[0m  ");
        match line {
            l if l < legend.len() => out.push_str(&legend[l]),
            l if (8..24).contains(&l) => {
                // The colour bar, top = high.
                let t = 1.0 - (l - 8) as f64 / 15.0;
                let (r, g, b) = colour(lo + t * (hi - lo), lo, hi);
                let _ = write!(
                    out,
                    "\x1b[48;2;{r};{g};{b}m   \x1b[0m {:.1}",
                    lo + t * (hi - lo)
                );
            }
            _ => {}
        }
        out.push_str("\x1b[K\n");
    }
    out
}

/// `host:port` of a URL like `http://127.0.0.1:9187/…`, `127.0.0.1:9187` or `9187`.
pub fn host_port(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if url.starts_with("https://") {
        return Err(format!("{url}: ssdaqd serves plain http"));
    }
    let hp = rest.split('/').next().unwrap_or("");
    if let Ok(port) = hp.parse::<u16>() {
        return Ok(format!("127.0.0.1:{port}"));
    }
    if hp
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        Ok(hp.to_string())
    } else {
        Err(format!(
            "`{url}` is not an address like http://127.0.0.1:9187"
        ))
    }
}

/// `GET /status` from `hp` (a daemon's `--metrics` address): the JSON, or
/// why not, in words a person can act on.
pub fn fetch_status(hp: &str) -> Result<Value, String> {
    let mut s = TcpStream::connect(hp)
        .map_err(|e| format!("{hp}: {e} (is ssdaqd running with --metrics {hp}?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET /status HTTP/1.0\r\nHost: {hp}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut r = Vec::new();
    s.take(16 << 20)
        .read_to_end(&mut r)
        .map_err(|e| format!("{hp}: {e}"))?;
    let text = String::from_utf8_lossy(&r);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("{hp}: not an HTTP reply"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{hp}: {}", head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| format!("{hp}: /status is not JSON ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_runs_from_its_first_stop_to_its_last() {
        assert_eq!(colour(0.0, 0.0, 10.0), SCALE[0]);
        assert_eq!(colour(10.0, 0.0, 10.0), SCALE[5]);
        assert_eq!(colour(99.0, 0.0, 10.0), SCALE[5], "clamped");
        assert_eq!(colour(f64::NAN, 0.0, 10.0), SCALE[0]);
    }

    #[test]
    fn urls_ports_and_bad_addresses() {
        assert_eq!(
            host_port("http://127.0.0.1:9187").unwrap(),
            "127.0.0.1:9187"
        );
        assert_eq!(host_port("http://daq:9187/metrics").unwrap(), "daq:9187");
        assert_eq!(host_port("9187").unwrap(), "127.0.0.1:9187");
        for bad in ["", "http://", "https://x:1", "x", "x:y", ":1"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
