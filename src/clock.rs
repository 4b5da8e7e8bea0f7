//! Wall-clock time in nanoseconds, the one clock every stage stamps with.
//!
//! Arrival times are CLOCK_REALTIME so that a raw dump records when a
//! datagram arrived in calendar time; latencies are differences of such
//! stamps (clamped at zero should the clock step backwards).

/// CLOCK_REALTIME now, in ns since the Unix epoch (vDSO: no syscall).
#[inline]
pub fn now_ns() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_secs() * 1_000_000_000 + d.subsec_nanos() as u64
}

/// `later - earlier` in ns, zero if the clock went backwards in between.
#[inline]
pub fn since(earlier_ns: u64, later_ns: u64) -> u64 {
    later_ns.saturating_sub(earlier_ns)
}
