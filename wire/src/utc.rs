//! UTC dates for file names and file attributes, without a date library.
//!
//! Raw dumps and HDF5 files are both named by the time they were started
//! (`ssdaq-20261126T105534Z.raw`, `….h5`) and HDF5 files record their start
//! and end as ISO 8601 text; this is the one place that turns Unix time into
//! those strings.

/// (year, month, day, hour, minute, second) of Unix seconds, UTC.
fn civil(secs: u64) -> (i64, i64, i64, u64, u64, u64) {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `YYYYmmddTHHMMSSZ` for Unix seconds: the stamp in file names.
pub fn stamp(secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// `YYYY-mm-ddTHH:MM:SS.nnnnnnnnnZ` for Unix nanoseconds (ISO 8601).
pub fn iso(ns: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(ns / 1_000_000_000);
    let frac = ns % 1_000_000_000;
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{frac:09}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(1_795_690_534), "20261126T105534Z");
        assert_eq!(stamp(951_782_400), "20000229T000000Z");
        assert_eq!(
            iso(1_795_690_534_000_000_042),
            "2026-11-26T10:55:34.000000042Z"
        );
    }
}
