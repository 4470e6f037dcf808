//! The whole-pipeline fuzz harness (`fuzz/common/pipeline.rs`) driven by a
//! deterministic PRNG, so it runs in `cargo test` without libFuzzer: load →
//! import → default passes → weight-only quantize → export → re-import on
//! (a) byte mutations of the fixtures and (b) small random graphs from the
//! structured generator. A panic, a graph a pass or quantization leaves
//! invalid, or an export that does not re-import and verify is a finding;
//! the offending input is written to `target/fuzz_pipeline/` (a generator
//! input starts with `QGEN`; feed either to the cargo-fuzz target
//! `pipeline`, or copy it to `fuzz/regressions/`, which this test replays).
//!
//! `QUENCH_FUZZ_ITERS` sets the number of inputs of each kind (default 400,
//! about 10 s in a debug build); `QUENCH_FUZZ_SEED` the PRNG seed. A long
//! run: `QUENCH_FUZZ_ITERS=2000000 nice cargo test --test fuzz_pipeline`.
//! The libFuzzer version: `FUZZ_TARGET=pipeline scripts/fuzz.sh 1800`.

#![allow(clippy::unwrap_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

#[path = "../fuzz/common/pipeline.rs"]
mod pipeline;

use pipeline::{Reached, GEN_MAGIC};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixtures() -> Vec<Vec<u8>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("testdata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn mutate(r: &mut Lcg, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + r.below(3) {
        if d.is_empty() {
            break;
        }
        let n = d.len();
        let i = r.below(n);
        match r.below(6) {
            0 => d[i] ^= 1 << r.below(8),
            1 => d[i] = [0x00, 0x01, 0x7f, 0x80, 0xff][r.below(5)],
            2 => d[i] = r.next() as u8,
            3 => {
                let len = 1 + r.below((n - i).min(16));
                d.drain(i..i + len);
            }
            4 => {
                let len = 1 + r.below((n - i).min(16));
                let chunk = d[i..i + len].to_vec();
                let at = r.below(n);
                d.splice(at..at, chunk);
            }
            _ => d.truncate(i),
        }
    }
    d
}

/// Runs one input; a panic is recorded with the input saved.
fn check(data: &[u8], tag: &str, findings: &mut Vec<String>, counts: &mut [usize; 4]) {
    match catch_unwind(AssertUnwindSafe(|| pipeline::run(data))) {
        Ok(r) => counts[r as usize] += 1,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            // Keep the first 100 inputs; count the rest.
            if findings.len() < 100 {
                let dir = root().join("target").join("fuzz_pipeline");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("finding-{tag}-{}.bin", findings.len()));
                std::fs::write(&path, data).unwrap();
                findings.push(format!("{}: {msg}", path.display()));
            } else {
                findings.push(format!("(not saved) {tag}: {msg}"));
            }
        }
    }
}

#[test]
fn pipeline_survives_mutated_fixtures_and_generated_graphs() {
    let iters = env_u64("QUENCH_FUZZ_ITERS", 400);
    let seconds = env_u64("QUENCH_FUZZ_SECONDS", u64::MAX);
    let mut r = Lcg(env_u64("QUENCH_FUZZ_SEED", 0x5eed));
    let seeds = fixtures();
    assert!(seeds.len() >= 20, "fixtures missing");
    let mut findings = Vec::new();
    // The loader's seed corpus and any pipeline finding: none panics, and
    // the three valid seeds go all the way.
    let regs = regressions();
    assert!(regs.len() >= 14, "{} regression inputs", regs.len());
    let mut reg_counts = [0usize; 4];
    for f in &regs {
        check(f, "regression", &mut findings, &mut reg_counts);
    }
    assert!(
        reg_counts[Reached::RoundTrip as usize] >= 3,
        "{reg_counts:?}"
    );
    // counts[Reached as usize]: rejected, passes, quantize, round trip.
    let mut mutated = [0usize; 4];
    let mut generated = [0usize; 4];
    let start = std::time::Instant::now();
    for f in &seeds {
        check(f, "fixture", &mut findings, &mut mutated);
    }
    // Unmutated fixtures: all valid, so most reach the round trip.
    assert!(mutated[Reached::RoundTrip as usize] >= 15, "{mutated:?}");
    for i in 0..iters {
        let s = &seeds[r.below(seeds.len())];
        let m = mutate(&mut r, s);
        check(&m, "mutated", &mut findings, &mut mutated);
        let len = 16 + r.below(600);
        let mut g = GEN_MAGIC.to_vec();
        g.extend((0..len).map(|_| r.next() as u8));
        check(&g, "generated", &mut findings, &mut generated);
        if start.elapsed().as_secs() >= seconds {
            eprintln!("time limit after {i} iterations");
            break;
        }
        if i > 0 && i % 20000 == 0 {
            eprintln!(
                "{i} iterations, {:.0} s, mutated {mutated:?}, generated {generated:?}, {} findings",
                start.elapsed().as_secs_f64(),
                findings.len()
            );
        }
    }
    eprintln!(
        "{} inputs in {:.1} s; mutated (rejected, passes, quantize, round trip) {mutated:?}; generated {generated:?}",
        mutated.iter().sum::<usize>() + generated.iter().sum::<usize>(),
        start.elapsed().as_secs_f64()
    );
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
    // Most generated graphs are valid: at least half must go all the way.
    assert!(
        generated[Reached::RoundTrip as usize] * 2 >= generated.iter().sum::<usize>(),
        "{generated:?}"
    );
}

/// Every file in `fuzz/regressions/` (loader seeds and pipeline findings).
fn regressions() -> Vec<Vec<u8>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fuzz").join("regressions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx" || e == "bin"))
        .collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The generator is worth its name: over 300 seeds its graphs use most of
/// its op table, and weight-only quantization really rewrites them
/// (DequantizeLinear on weights of MatMul/Gemm/Conv).
#[test]
fn generated_graphs_cover_the_op_table_and_get_quantized() {
    let mut r = Lcg(7);
    let mut ops = std::collections::BTreeSet::new();
    let mut quantized = 0;
    for _ in 0..300 {
        let mut g = GEN_MAGIC.to_vec();
        g.extend((0..400).map(|_| r.next() as u8));
        let (reached, before, after) = pipeline::run_detail(&g);
        assert_eq!(reached, Reached::RoundTrip);
        for line in before.lines() {
            if let Some((_, rhs)) = line
                .split_once(" = ")
                .filter(|(_, rhs)| !rhs.starts_with("const"))
            {
                if let Some(op) = rhs.split('(').next() {
                    ops.insert(op.trim().to_string());
                }
            }
        }
        if after.contains("DequantizeLinear(") {
            quantized += 1;
        } else if std::env::var("QUENCH_FUZZ_DEBUG").is_ok()
            && (before.contains("MatMul(") || before.contains("Conv("))
        {
            eprintln!("NOT QUANTIZED:\n{before}\n---\n{after}");
        }
    }
    eprintln!("ops seen: {ops:?}; quantized {quantized}/300");
    assert!(ops.len() >= 20, "{} ops: {ops:?}", ops.len());
    assert!(quantized >= 100, "{quantized}/300 quantized");
}
