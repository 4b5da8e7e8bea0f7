//! `sim::run` allocates nothing per datagram: ten times the datagrams, the
//! same number of allocations, paced and flooding alike.
//!
//! One test in its own binary, so that no other test's thread allocates
//! while this one counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tm_ss_sim::{self as sim, Faults, SimConfig};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; counting touches no memory it hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc` or `realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and the caller's contract for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one run of `cfg` with `count` frames per module.
fn allocations(cfg: &SimConfig, count: u64) -> (u64, u64) {
    let cfg = SimConfig {
        count: Some(count),
        ..cfg.clone()
    };
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let stats = sim::run(&cfg, &AtomicBool::new(false)).expect("a run");
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(stats.send_errors(), 0, "{stats:#}");
    (after - before, stats.sent())
}

#[test]
fn ten_times_the_datagrams_cost_no_extra_allocation() {
    // A receiver nobody reads: the kernel drops what overflows its queue,
    // and no receiving thread allocates while we count.
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let paced = SimConfig {
        target: rx.local_addr().unwrap(),
        modules: 4,
        rate: 20_000.0, // 50 µs frames; values refreshed every 40 ms, 800 frames
        faults: Faults {
            loss: 0.1,
            duplicate_every: 7,
            malformed_every: 5,
            reorder_every: 3,
            ts_jump: vec![(2, 10, 1_000)],
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let exact = SimConfig {
        pixel_refresh: Duration::ZERO,
        ..paced.clone()
    };
    let flood = SimConfig {
        flood: true,
        ..paced.clone()
    };
    let gso = SimConfig {
        gso: true,
        ..flood.clone()
    };
    for (name, cfg, n) in [
        ("paced", &paced, 200),
        ("paced, every value exact", &exact, 200),
        ("flood", &flood, 2_000),
        ("flood with GSO", &gso, 2_000),
    ] {
        allocations(cfg, n); // warm up whatever std sets up once
        let (small, sent_small) = allocations(cfg, n);
        let (large, sent_large) = allocations(cfg, 10 * n);
        assert!(
            sent_large > 9 * sent_small,
            "{name}: {sent_small} / {sent_large}"
        );
        assert_eq!(
            large, small,
            "{name}: {small} allocations for {sent_small} datagrams, {large} for {sent_large}"
        );
    }
    let mut buf = [0u8; 4096];
    let _ = rx.recv(&mut buf);
}
