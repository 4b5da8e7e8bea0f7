//! The fuzz targets (`fuzz/targets.rs`), run on the stable toolchain for a
//! bounded time: real inputs and seeded mutations of them. The long runs
//! are libFuzzer's (`cd fuzz && cargo fuzz run builder`; docs/fuzzing.md).

mod common;

#[path = "../fuzz/targets.rs"]
mod targets;

use std::time::{Duration, Instant};

/// Time per target in CI.
const BUDGET: Duration = Duration::from_secs(4);

/// xorshift64*: seeded, so a failing input can be found again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `seed`: bytes flipped, cut, repeated or spliced in.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 if !v.is_empty() => {
                let (a, n) = (rng.below(v.len()), 1 + rng.below(64));
                let chunk: Vec<u8> = v[a..(a + n).min(v.len())].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            _ => {
                let at = rng.below(v.len() + 1);
                let junk: Vec<u8> = (0..rng.below(32)).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
        }
    }
    v
}

/// The committed corpus of `target` (`fuzz/corpus/TARGET/`: real inputs
/// libFuzzer starts from), which must be there.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!v.is_empty(), "{}: no seeds", dir.display());
    v
}

/// Runs `target` on `seeds`, then on mutations of them until the budget is
/// spent; returns how many inputs it ran.
fn run(seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) -> u64 {
    let mut rng = Rng(0x5EED_5DA0);
    let started = Instant::now();
    let mut n = 0;
    for s in seeds {
        target(s);
        n += 1;
    }
    while started.elapsed() < BUDGET {
        let s = &seeds[rng.below(seeds.len())];
        target(&mutate(&mut rng, s));
        n += 1;
    }
    n
}

#[test]
fn the_builder_survives_arbitrary_datagrams_and_every_fate_balances() {
    let mut seeds = vec![
        Vec::new(),
        targets::real_datagrams(3),
        targets::real_datagrams(12),
    ];
    seeds.extend(corpus("builder"));
    let n = run(&seeds, targets::builder);
    eprintln!("{n} inputs");
    assert!(n > 100, "{n} inputs");
}

#[test]
fn the_dump_reader_survives_arbitrary_files() {
    let dir = common::tmpdir("fuzz-dump");
    let mut seeds = vec![
        Vec::new(),
        targets::real_dump(&dir, 40),
        b"SSDAQDMP".to_vec(),
    ];
    seeds.extend(corpus("dump"));
    let n = run(&seeds, |d| targets::dump(d, &dir));
    eprintln!("{n} inputs");
    assert!(n > 100, "{n} inputs");
}

#[test]
fn the_event_decoder_survives_arbitrary_messages() {
    let mut seeds = vec![vec![0u8; 16_920], vec![0xFFu8; 16_416], vec![1, 2, 3]];
    seeds.extend(corpus("event"));
    let n = run(&seeds, targets::event);
    eprintln!("{n} inputs");
    assert!(n > 100, "{n} inputs");
}
