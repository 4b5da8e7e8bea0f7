//! The fuzz targets, shared by the libFuzzer binaries (`fuzz/fuzz_targets/`,
//! `cargo fuzz run NAME`) and the bounded stable run in CI (`tests/fuzz.rs`).
//! Each takes arbitrary bytes and must neither panic nor break an invariant.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use ssdaq::builder::{Builder, BuilderConfig, Datagram, Event};
use ssdaq::dump::{Dump, DumpConfig, DumpStats, DumpWriter};
use ssdaq::event::EventView;

/// Datagrams into the builder. The input is a sequence of records: a source
/// octet (`127.0.0.x`), an arrival step in ms, a length (2 bytes, little
/// endian, up to 1600) and that many payload bytes. After every input, with
/// everything flushed, each datagram and readout must have had one fate.
pub fn builder(data: &[u8]) {
    thread_local! {
        // One builder per configuration, reset for each input (as new, but
        // without allocating and zeroing its 64 slots of 17 KB again).
        static BUILDERS: std::cell::RefCell<[Builder; 2]> = std::cell::RefCell::new(
            [None, Some(0xF)].map(|modules| {
                Builder::new(BuilderConfig {
                    modules,
                    slots: ssdaq::builder::MIN_SLOTS,
                    ..Default::default()
                })
            }),
        );
    }
    let which = usize::from(data.first().is_some_and(|b| b & 1 == 1));
    BUILDERS.with(|b| {
        let b = &mut b.borrow_mut()[which];
        b.reset();
        feed(b, data);
    });
}

fn feed(b: &mut Builder, data: &[u8]) {
    let mut sink = |ev: Event<'_>| {
        let _ = ev;
    };
    let mut at: u64 = 1_700_000_000_000_000_000;
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 4 {
        let (src, step) = (rest[0], u64::from(rest[1]));
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]) % 1601);
        let payload = &rest[4..(4 + len).min(rest.len())];
        rest = &rest[4 + payload.len()..];
        at += step * 1_000_000;
        b.push(
            Datagram {
                payload,
                src: Ipv4Addr::new(127, 0, 0, src),
                arrival_ns: at,
                truncated: false,
            },
            &mut sink,
        );
    }
    b.advance(at + 10_000_000_000, &mut sink);
    b.flush(&mut sink);
    if let Err(e) = b.stats().balance() {
        panic!("fates do not balance: {e}");
    }
}

/// Arbitrary bytes as a dump file, read through to the end.
pub fn dump(data: &[u8], dir: &Path) {
    let path = dir.join("fuzz.raw");
    std::fs::write(&path, data).unwrap();
    if let Ok(d) = Dump::open(&path) {
        let _ = d.info().get("window_ns");
        for e in d.entries() {
            let _ = e;
        }
    }
}

/// Arbitrary bytes as a published message.
pub fn event(data: &[u8]) {
    let _ = EventView::decode(data);
    if let Ok(v) = EventView::parse(data) {
        let _ = (v.number(), v.timestamp(), v.run(), v.present_mask());
        for m in 0..32 {
            let _ = (v.row(m), v.module_timestamps(m), v.has_module(m));
        }
    }
}

/// A real dump of `n` datagrams of a 4-module camera, as bytes: a corpus seed.
pub fn real_dump(dir: &Path, n: usize) -> Vec<u8> {
    let path = dir.join("seed.raw");
    let _ = std::fs::remove_file(&path);
    let cfg = DumpConfig {
        path: path.clone(),
        max_file_size: 1 << 30,
        chunk_size: 8 << 20,
        info: BuilderConfig::default().to_pairs(),
        helper_core: None,
        run: None,
    };
    let mut w = DumpWriter::create(&cfg, Arc::new(DumpStats::default())).unwrap();
    let mut buf = Vec::new();
    for i in 0..n {
        let m = (i % 4) as u8;
        let f = (i / 4) as u64;
        tm_ss_sim::datagram(
            1,
            m,
            1_700_000_000_000_000_000 + f * 40_000_000,
            4_000_000,
            10,
            &mut buf,
        );
        let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 100 + m), 4000);
        w.append(1_700_000_000_000_000_000 + f * 40_000_000, src, false, &buf);
    }
    w.finish();
    std::fs::read(&path).unwrap()
}

/// Builder input of `frames` frames of a 4-module camera: a corpus seed.
pub fn real_datagrams(frames: u64) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut buf = Vec::new();
    for f in 0..frames {
        for m in 0..4u8 {
            buf.clear();
            tm_ss_sim::datagram(
                1,
                m,
                1_700_000_000_000_000_000 + f * 40_000_000,
                4_000_000,
                10,
                &mut buf,
            );
            out.extend([100 + m, if m == 0 { 40 } else { 0 }]);
            out.extend((buf.len() as u16).to_le_bytes());
            out.extend(&buf);
        }
    }
    out
}
