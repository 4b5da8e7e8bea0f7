//! The drain rate of each receive backend with a small and a large buffer
//! pool (docs/design.md, "Receiving"): fill a socket while nobody reads,
//! then time emptying it. Run: `cargo bench --bench drain`.

use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use ssdaq::recv::{BATCH, Backend, IoMode, PacketPool, Receiver, bind_udp};

fn sender(host: u8) -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::new(127, 0, 0, host), 0)).unwrap()
}

/// Fills a socket
/// (64 MiB asked with SO_RCVBUFFORCE) with 50 000 datagrams of 1440 bytes
/// from 32 sources while nobody reads, then time emptying it, releasing
/// every buffer at once. A loopback sender cannot outrun a receiver, so
/// this is how to load one.
fn main() {
    const SENT: usize = 50_000;
    const RUNS: usize = 5;
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
        core_affinity::set_for_current(core);
    }
    let senders: Vec<_> = (100..132).map(sender).collect();
    let payload = [0x5au8; 1440];
    let mut results: Vec<(usize, Backend, f64, f64)> = Vec::new();
    for _ in 0..RUNS {
        for (pool_size, mode) in [256, 4096]
            .into_iter()
            .flat_map(|p| [(p, IoMode::Uring), (p, IoMode::Recvmmsg)])
        {
            let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
            let (socket, granted) = bind_udp(any, 64 << 20).unwrap();
            let mut rx = Receiver::new(socket, PacketPool::new(pool_size), mode).unwrap();
            let SocketAddr::V4(addr) = rx.local_addr().unwrap() else {
                unreachable!()
            };
            for i in 0..SENT {
                senders[i % senders.len()].send_to(&payload, addr).unwrap();
            }
            let mut out = Vec::with_capacity(BATCH);
            let (mut got, mut calls) = (0, 0);
            let cpu0 = thread_cpu();
            let t = Instant::now();
            while got < SENT {
                calls += 1;
                if rx.recv(&mut out, Duration::from_millis(100)).unwrap() == 0 {
                    break;
                }
                for m in out.drain(..) {
                    debug_assert_eq!(m.len, 1440);
                    got += 1;
                    rx.release(m.buf);
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let cpu = thread_cpu() - cpu0;
            let mpps = got as f64 / secs / 1e6;
            let drops = rx.kernel_drops().unwrap();
            println!(
                "{:>8}, {pool_size:>4} buffers: {got} datagrams in {:.1} ms = {mpps:.3} Mpps, \
                 {:.2} µs CPU each, {:.1} per call, kernel drops {drops}, rcvbuf {} MiB",
                rx.backend().name(),
                secs * 1e3,
                cpu.as_secs_f64() * 1e6 / got as f64,
                got as f64 / calls as f64,
                granted >> 20,
            );
            assert_eq!((got, drops), (SENT, 0), "the queue held every datagram");
            let cpu_each = cpu.as_secs_f64() * 1e6 / got as f64;
            results.push((pool_size, rx.backend(), mpps, cpu_each));
        }
    }
    for p in [256, 4096] {
        for b in [Backend::Uring, Backend::Recvmmsg] {
            let median = |f: fn(&(usize, Backend, f64, f64)) -> f64| {
                let mut v: Vec<f64> = results
                    .iter()
                    .filter(|r| (r.0, r.1) == (p, b))
                    .map(f)
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{:>8}, {p:>4} buffers: median of {RUNS}: {:.3} Mpps, {:.2} µs CPU each",
                b.name(),
                median(|r| r.2),
                median(|r| r.3)
            );
        }
    }
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the zero-initialised struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
