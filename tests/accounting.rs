//! Exact fate accounting against a seeded faulty camera (issue 11): every
//! datagram the simulator sent has exactly one fate in the daemon, the sums
//! balance, and each module's counters equal what the simulator injected
//! into it.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;

/// One module's row of a summary table: column name → value.
type Row = HashMap<String, u64>;

/// A row whose missing columns read as zero.
#[derive(Debug)]
struct Counts(Row);

impl std::ops::Index<&str> for Counts {
    type Output = u64;
    fn index(&self, col: &str) -> &u64 {
        self.0.get(col).unwrap_or(&0)
    }
}

/// The per-module table that follows the line starting with `header`
/// (`module  …`), as module → row.
fn table(text: &str, header: &str) -> HashMap<u64, Row> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(header));
    let cols: Vec<String> = lines
        .next()
        .unwrap_or_else(|| panic!("no table {header:?} in:\n{text}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    lines
        .map_while(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (v.len() == cols.len()).then_some(v)
        })
        .map(|v| (v[0], cols.iter().cloned().zip(v).collect()))
        .collect()
}

#[test]
fn every_datagram_of_a_seeded_faulty_camera_has_exactly_the_fate_it_was_given() {
    const FRAMES: u64 = 300;
    // The camera's addresses .100-.131 are modules; the simulator's
    // foreign hosts (.200-.203) are not.
    let mut d = Ssdaqd::start(&[
        "--hwm",
        "20000",
        // A reordered datagram is held behind up to 3 of its module's
        // (12 ms); the grace is ample so that a loaded machine (a build
        // beside the test) does not make it late.
        "--reorder-ns",
        "150000000",
        "--timeout-ms",
        "400",
        "--allow",
        "127.0.0.96/27",
        "--allow",
        "127.0.0.128/30",
    ]);
    let mut sub = d.subscribe();
    let out = Command::new(bin("tm-ss-sim"))
        .args([&d.port.to_string(), "localhost", "--modules", "32"])
        .args([
            "--rate",
            "250",
            "--count",
            &FRAMES.to_string(),
            "--seed",
            "7",
            // Every value the model's at its own readout's timestamp (not
            // refreshed every 40 ms), so each published value can be checked.
            "--pixel-refresh-ms",
            "0",
        ])
        .args([
            "--loss",
            "0.01",
            "--duplicate-every",
            "7",
            "--reorder-every",
            "11",
        ])
        .args(["--malformed-every", "13", "--dead-module", "30"])
        .args([
            "--stray",
            "3@0.5:8000000000",
            "--glitch",
            "9@100:3000000000:2",
        ])
        .args(["--ts-jump", "20:200:-3000000000"])
        // The seeded faults: each datagram may be copied, held back behind
        // up to 3 later ones, or replaced by a corrupt one; hosts outside
        // the camera; a module silent for 0.2 s; one that restarts.
        .args([
            "--duplicate",
            "0.01",
            "--reorder",
            "0.02:3",
            "--corrupt",
            "0.01",
        ])
        .args([
            "--foreign",
            "40",
            "--silent",
            "12@0.3..0.5",
            "--restart",
            "25@0.6",
        ])
        .output()
        .unwrap();
    let sim = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{sim}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, log) = d.stop();
    assert!(status.success(), "{log}");
    let sent = table(&sim, "module       sent");
    let got = table(&log, "module  datagrams");
    assert_eq!(sent.len(), 32, "{sim}");
    assert!(got.len() >= 31, "every live module has a row: {log}");
    let stats = stats_of(&log);
    assert!(log.contains(": balanced"), "{log}");
    assert_eq!(stats["balanced"], 1);
    assert_eq!(stats["kernel_drops"], 0, "{log}");
    // The simulator counts good datagrams (copies included), malformed,
    // corrupt ones and strays apart.
    let all = |r: &Counts| r["sent"] + r["malformed"] + r["corrupt"] + r["strays"];
    let total_sent: u64 = sent.values().map(|r| all(&Counts(r.clone()))).sum();
    // Each foreign host: "foreign ADDR: N datagrams" from the simulator,
    // "unknown source ADDR: N datagrams" from the daemon.
    let foreign: Vec<&str> = sim
        .lines()
        .filter_map(|l| l.strip_prefix("foreign "))
        .collect();
    assert_eq!(foreign.len(), 4, "{sim}");
    let mut total_foreign = 0;
    for f in &foreign {
        assert!(log.contains(&format!("unknown source {f}")), "{f}: {log}");
        total_foreign += f.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    }
    assert!(total_foreign >= 40, "{sim}");
    assert_eq!(
        stats["received"],
        total_sent + total_foreign,
        "every datagram sent was received"
    );
    assert_eq!(
        stats["pushed"], stats["received"],
        "and given to the builder"
    );
    for m in 0..32u64 {
        // A module with nothing to count has no row.
        let (s, g) = (
            sent.get(&m).cloned().unwrap_or_default(),
            got.get(&m).cloned().unwrap_or_default(),
        );
        let (s, g) = (&Counts(s), &Counts(g));
        let ctx = format!("module {m}: sim {s:?} daemon {g:?}");
        // One fate per datagram sent: built, refused or out of sync.
        assert_eq!(
            g["datagrams"] + g["refused"] + g["out_of_sync"],
            all(s),
            "{ctx}"
        );
        assert_eq!(g["refused"], s["malformed"] + s["corrupt"], "{ctx}");
        assert_eq!(g["late"], 0, "{ctx}");
        match m {
            3 => assert_eq!(g["out_of_sync"], 1, "the stray alone: {ctx}"),
            9 => assert_eq!(g["out_of_sync"], 2, "the two glitched frames: {ctx}"),
            20 | 25 => assert!(g["out_of_sync"] > 0, "{ctx}"),
            _ => assert_eq!(g["out_of_sync"], 0, "{ctx}"),
        }
        if ![9, 20, 25].contains(&m) {
            // Each copy the simulator sent is a duplicate, readout by readout.
            assert_eq!(g["dup"], 10 * s["duplicated"], "{ctx}");
        }
    }
    assert!(got.get(&30).is_none_or(|r| r["datagrams"] == 0));

    // And what was published is the camera's: every readout of every event
    // is the pixel model's at its own timestamp, whatever the faults did to
    // the datagrams around it (a corrupt, stray or glitched datagram's
    // bytes never reach an event).
    let (mut events, mut readouts) = (0u64, 0u64);
    while let Some(ev) = sub.recv(std::time::Duration::from_millis(300)).unwrap() {
        let v = ev.view();
        events += 1;
        // One camera time per event: no readout of another time mixed in.
        let times: std::collections::BTreeSet<u64> = (0..32)
            .filter(|&m| v.has_module(m))
            .map(|m| v.module_timestamps(m).unwrap().0)
            .collect();
        assert_eq!(times.len(), 1, "event {}: {times:?}", v.number());
        for m in (0..32u8).filter(|&m| v.has_module(m as usize)) {
            let (primary, aux) = v.module_timestamps(m as usize).unwrap();
            assert_eq!(aux, tm_ss_sim::aux_ts(m, primary), "event {}", v.number());
            for p in 0..64 {
                let want = ssdaq::event::adc_to_mv(tm_ss_sim::pixel_adc(7, m, p, primary));
                assert_eq!(
                    v.mv(m as usize, p).to_bits(),
                    want.to_bits(),
                    "event {} module {m} pixel {p} at {primary}",
                    v.number()
                );
            }
            readouts += 1;
        }
    }
    assert_eq!(sub.missed(), 0);
    assert_eq!(
        events, stats["published"],
        "every event published was checked"
    );
    assert_eq!(
        readouts,
        stats["readouts_complete"] + stats["readouts_partial"],
        "every readout built was checked"
    );
}
