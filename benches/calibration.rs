//! What calibration costs: `quench calibrate` next to plain tract inference
//! of the same model on the same samples, and its peak memory at a few vs
//! many samples.
//!
//! Figures per model, each measured side by side in one run:
//!
//! - time: wall clock of `quench calibrate MODEL -c DATA` end to end (load,
//!   graph passes, tract compile, the parallel batches with every observed
//!   tensor streamed into histograms, JSON) divided by the wall clock of a
//!   plain inference process: this bench binary re-run as
//!   `--plain-inference MODEL' DATA`, which loads the model and the data,
//!   compiles it with tract and runs the same batches (up to 16 samples,
//!   in parallel with rayon, one compiled model per batch shape) exactly
//!   as calibration does, but observes nothing. `MODEL'` is the model after
//!   quench's default graph passes (`quench compile --no-quantize`), so
//!   both run the same graph. Best of several alternating runs. Target:
//!   at most 1.5x.
//! - compile time: the same ratio for the main job,
//!   `quench compile MODEL -c DATA --no-verify` with its default
//!   `--method minmax`, which observes min/max only (no histograms), plus
//!   QDQ insertion and writing the quantized model.
//! - marginal time: the same ratio for the extra time of 512 over 32
//!   samples (the memory runs, best of two), so that fixed costs (model
//!   load, tract compile, the range search of every method for the table,
//!   JSON) cancel: the per-sample overhead of observing.
//! - memory: peak RSS (`/usr/bin/time -f %M`, else `VmHWM` polled from
//!   `/proc`) of `quench calibrate` at 32 and at 512 samples. Calibration
//!   keeps no per-sample activations and reads the data from disk batch by
//!   batch, so the peak should not grow with the sample count (the `data`
//!   columns show how much data there was) beyond the freed batches the
//!   allocator keeps for its purge delay: on the ResNet-ish CNN at 112x112,
//!   1.11-1.20x at mimalloc's 1 s (quench's setting, see `src/alloc.rs`),
//!   1.06-1.10x with `MIMALLOC_PURGE_DELAY=10` (which costs a quarter to a
//!   third of calibration's time).
//!
//! Models: the trained digits CNN (its 256 real calibration samples for the
//! timing), `testdata/resnet_tiny.onnx` (fixed batch 1, so one sample per
//! run), and every model in `QUENCH_BENCH_CALIB_MODELS`: colon-separated
//! `PATH[@SHAPE][#SAMPLES]` entries, `SHAPE` the per-sample input shape
//! (e.g. `3x320x320`) when the model's is not fixed, `SAMPLES` the timing
//! sample count (default 256). Data other than digits' is N(0, 1) noise.
//! `QUENCH_BENCH_RUNS` (default 3) sets the number of timing runs,
//! `QUENCH_BENCH_MEM_SAMPLES` (default `32,512`) the two memory sample
//! counts.
//!
//! `cargo bench --bench calibration` runs it (see
//! `scripts/bench_calibration.sh`, which also generates a larger CNN and
//! adds the PP-OCRv4 detector when `scratch/real_models` has it). Under
//! `cargo test --all-targets` (no `--bench` argument) it is a quick smoke
//! test on the digits CNN.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ndarray::ArrayD;
use ndarray_npy::WriteNpyExt;
use quench_verify::{Dataset, ModelInput};
use rayon::prelude::*;

// The plain-inference child runs with quench's allocator (the `quench`
// library target declares it), so that both sides of the time ratio
// allocate alike.
extern crate quench;

/// Calibration's batch limit.
const MAX_BATCH: usize = quench_verify::MAX_BATCH;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn quench() -> &'static str {
    env!("CARGO_BIN_EXE_quench")
}

// ------------------------------------------------------------------------
// The plain inference child.

/// Runs `model` over every sample of `data` the way calibration does, and
/// discards the outputs.
fn plain_inference(model: &Path, data: &Path) -> Result<()> {
    let proto = quench_onnx::load_model(model)?.model;
    let inputs = ModelInput::from_model(&proto);
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let mut ds = Dataset::load(data)?;
    let feed = ds.check_against(&inputs)?;
    // quench's own runner cache: one compiled model per batch shape.
    let runners = quench_verify::Runners::new(&proto, Vec::new());
    feed.ranges(ds.samples(), MAX_BATCH)
        .par_iter()
        .try_for_each(|r| -> Result<()> {
            let batch = ds.feed(feed, r.clone())?;
            let outs = runners
                .run(&names, &batch)
                .with_context(|| format!("samples {r:?}"))?;
            std::hint::black_box(outs);
            Ok(())
        })
}

// ------------------------------------------------------------------------
// Measuring child processes.

struct Measured {
    wall: Duration,
    /// Peak resident set size in bytes.
    peak_rss: u64,
}

/// Runs `cmd` to completion; wall clock and peak RSS.
fn measure(program: &str, args: &[&std::ffi::OsStr]) -> Result<Measured> {
    let gnu_time = Path::new("/usr/bin/time");
    let rss_file = tempfile::NamedTempFile::new()?;
    let mut cmd = if gnu_time.is_file() {
        let mut c = Command::new(gnu_time);
        c.arg("-f")
            .arg("%M")
            .arg("-o")
            .arg(rss_file.path())
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    // Fallback without GNU time: poll the high-water mark while it runs.
    let mut polled = 0u64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if !gnu_time.is_file() {
            polled = polled.max(vm_hwm(child.id()).unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = start.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).ok();
        }
        bail!("{program} {args:?} failed: {status}\n{err}");
    }
    let peak_rss = if gnu_time.is_file() {
        let kb: u64 = std::fs::read_to_string(rss_file.path())?
            .lines()
            .rev()
            .find_map(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow!("no %M in /usr/bin/time output"))?;
        kb * 1024
    } else {
        polled
    };
    Ok(Measured { wall, peak_rss })
}

/// `VmHWM` of process `pid`, bytes.
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn calibrate(model: &Path, data: &Path, out: &Path) -> Result<Measured> {
    measure(
        quench(),
        &[
            "calibrate".as_ref(),
            model.as_os_str(),
            "-c".as_ref(),
            data.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
    )
}

/// `quench compile MODEL -c DATA --no-verify`: the main job with its
/// default `--method minmax` (min/max observers, no histograms), QDQ
/// insertion and the written model included.
fn compile_minmax(model: &Path, data: &Path, out: &Path) -> Result<Measured> {
    measure(
        quench(),
        &[
            "compile".as_ref(),
            model.as_os_str(),
            "-c".as_ref(),
            data.as_os_str(),
            "--no-verify".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ],
    )
}

fn plain(model: &Path, data: &Path) -> Result<Measured> {
    let exe = std::env::current_exe()?;
    measure(
        &exe.to_string_lossy(),
        &[
            "--plain-inference".as_ref(),
            model.as_os_str(),
            data.as_os_str(),
        ],
    )
}

// ------------------------------------------------------------------------
// Cases.

struct Case {
    name: String,
    model: PathBuf,
    /// Per-sample shape of each float input (without the batch axis when
    /// the model has one).
    sample_shapes: Vec<(String, Vec<usize>)>,
    /// Real data for the timing runs (else noise).
    data: Option<PathBuf>,
    samples: usize,
}

impl Case {
    fn new(model: PathBuf, shape: Option<Vec<usize>>, samples: usize) -> Result<Case> {
        let proto = quench_onnx::load_model(&model)?.model;
        let mut sample_shapes = Vec::new();
        for i in ModelInput::from_model(&proto) {
            if i.elem_type != 1 {
                bail!(
                    "{}: input `{}` is not f32; give it data yourself",
                    model.display(),
                    i.name
                );
            }
            let dims = i.shape.clone().unwrap_or_default();
            // Data is stored [N, ...dims[1..]]: N is the model's batch axis.
            let rest: Vec<Option<usize>> =
                dims.iter().skip(1).map(|d| d.map(|v| v as usize)).collect();
            let s = match (&shape, rest.iter().all(Option::is_some)) {
                (Some(s), _) => s.clone(),
                (None, true) => rest.iter().flatten().copied().collect(),
                (None, false) => bail!(
                    "{}: input `{}` has dims {dims:?}; give @SHAPE",
                    model.display(),
                    i.name
                ),
            };
            sample_shapes.push((i.name, s));
        }
        let name = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Case {
            name,
            model,
            sample_shapes,
            data: None,
            samples,
        })
    }

    /// Writes `n` samples of N(0, 1) noise for every input into `dir`.
    fn noise(&self, dir: &Path, n: usize) -> Result<u64> {
        std::fs::create_dir_all(dir)?;
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut bytes = 0;
        for (name, s) in &self.sample_shapes {
            let mut shape = vec![n];
            shape.extend(s);
            let len: usize = shape.iter().product();
            let v: Vec<f32> = (0..len)
                .map(|_| {
                    (0..4)
                        .map(|_| {
                            state = state
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                        })
                        .sum::<f32>()
                        * 1.73
                })
                .collect();
            bytes += 4 * len as u64;
            ArrayD::from_shape_vec(shape, v)?
                .write_npy(std::fs::File::create(dir.join(format!("{name}.npy")))?)?;
        }
        Ok(bytes)
    }
}

/// `PATH[@SHAPE][#SAMPLES]`.
fn parse_entry(e: &str) -> Result<Case> {
    let (rest, samples) = match e.rsplit_once('#') {
        Some((r, s)) => (r, s.parse().with_context(|| format!("{e}: samples"))?),
        None => (e, 256),
    };
    let (path, shape) = match rest.rsplit_once('@') {
        Some((p, s)) => {
            let dims = s
                .split('x')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>();
            (p, Some(dims.with_context(|| format!("{e}: shape"))?))
        }
        None => (rest, None),
    };
    Case::new(PathBuf::from(path), shape, samples)
}

struct Row {
    name: String,
    samples: usize,
    calibrate: Duration,
    compile: Duration,
    plain: Duration,
    mem_samples: (usize, usize),
    mem: (u64, u64),
    data_bytes: (u64, u64),
    plain_mem: u64,
    /// Extra wall time from the few to the many samples: calibration, plain.
    marginal: (Duration, Duration),
}

fn run_case(case: &Case, tmp: &Path, runs: usize, mem_samples: (usize, usize)) -> Result<Row> {
    let dir = tmp.join(&case.name);
    std::fs::create_dir_all(&dir)?;
    // The graph after quench's default passes: what calibration runs.
    let passed = dir.join("passes.onnx");
    let o = Command::new(quench())
        .arg("compile")
        .arg(&case.model)
        .args(["--no-quantize", "--no-verify", "-o"])
        .arg(&passed)
        .output()?;
    if !o.status.success() {
        bail!(
            "quench compile --no-quantize: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let data = match &case.data {
        Some(d) => d.clone(),
        None => {
            let d = dir.join("timing");
            case.noise(&d, case.samples)?;
            d
        }
    };
    let table = dir.join("table.json");
    let compiled = dir.join("compiled.onnx");
    let (mut best_cal, mut best_plain, mut best_compile) =
        (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut plain_mem = 0;
    // Warm-up (page cache, first-touch), then alternate.
    plain(&passed, &data)?;
    for _ in 0..runs {
        let p = plain(&passed, &data)?;
        best_plain = best_plain.min(p.wall);
        plain_mem = plain_mem.max(p.peak_rss);
        best_cal = best_cal.min(calibrate(&case.model, &data, &table)?.wall);
        best_compile = best_compile.min(compile_minmax(&case.model, &data, &compiled)?.wall);
    }
    let samples = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&table)?)?
        ["samples"]
        .as_u64()
        .unwrap_or(0) as usize;

    let (few, many) = mem_samples;
    let (d_few, d_many) = (
        dir.join(format!("mem{few}")),
        dir.join(format!("mem{many}")),
    );
    let b_few = case.noise(&d_few, few)?;
    let b_many = case.noise(&d_many, many)?;
    let c_few = calibrate(&case.model, &d_few, &table)?;
    let c_many = calibrate(&case.model, &d_many, &table)?;
    let (m_few, m_many) = (c_few.peak_rss, c_many.peak_rss);
    // Per-sample cost, fixed costs (load, compile, range search, JSON)
    // cancelled: the extra time of the many-sample run over the few, for
    // calibration and for plain inference (best of two each).
    let mut p_few = plain(&passed, &d_few)?.wall;
    let mut p_many = plain(&passed, &d_many)?.wall;
    let mut cal = (c_few.wall, c_many.wall);
    for _ in 1..runs.min(2) {
        p_few = p_few.min(plain(&passed, &d_few)?.wall);
        p_many = p_many.min(plain(&passed, &d_many)?.wall);
        cal.0 = cal.0.min(calibrate(&case.model, &d_few, &table)?.wall);
        cal.1 = cal.1.min(calibrate(&case.model, &d_many, &table)?.wall);
    }
    let marginal = (cal.1.saturating_sub(cal.0), p_many.saturating_sub(p_few));
    for d in [&d_few, &d_many] {
        std::fs::remove_dir_all(d).ok();
    }
    Ok(Row {
        name: case.name.clone(),
        samples,
        calibrate: best_cal,
        compile: best_compile,
        plain: best_plain,
        mem_samples,
        mem: (m_few, m_many),
        data_bytes: (b_few, b_many),
        plain_mem,
        marginal,
    })
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<24} {:>7} {:>10} {:>10} {:>6} {:>9} | {:>12} {:>6} | {:>10} | {:>10} {:>10} {:>6} {:>10} {:>10}",
        "model",
        "samples",
        "plain (s)",
        "calib (s)",
        "ratio",
        "marginal",
        "compile (s)",
        "ratio",
        "plain rss",
        "rss@few",
        "rss@many",
        "ratio",
        "data@few",
        "data@many"
    );
    for r in rows {
        let ratio = r.calibrate.as_secs_f64() / r.plain.as_secs_f64();
        let mem_ratio = r.mem.1 as f64 / r.mem.0 as f64;
        let marginal = r.marginal.0.as_secs_f64() / r.marginal.1.as_secs_f64().max(1e-9);
        println!(
            "{:<24} {:>7} {:>10.3} {:>10.3} {:>5.2}x {:>8.2}x | {:>12.3} {:>5.2}x | {:>8.1}MB | {:>8.1}MB {:>8.1}MB {:>5.2}x {:>8.1}MB {:>8.1}MB",
            r.name,
            r.samples,
            r.plain.as_secs_f64(),
            r.calibrate.as_secs_f64(),
            ratio,
            marginal,
            r.compile.as_secs_f64(),
            r.compile.as_secs_f64() / r.plain.as_secs_f64(),
            mb(r.plain_mem),
            mb(r.mem.0),
            mb(r.mem.1),
            mem_ratio,
            mb(r.data_bytes.0),
            mb(r.data_bytes.1),
        );
    }
    println!();
    println!(
        "time: best of the runs, end to end, {} rayon threads; plain = the same batches in tract, nothing observed",
        rayon::current_num_threads()
    );
    println!(
        "calib = `quench calibrate` (histograms, every method's range in the table); compile = \
         `quench compile -c DATA --no-verify` (default --method minmax: min/max only; passes, QDQ and the written model included)."
    );
    println!("(`plain rss`: its peak RSS on the timing samples).");
    if let Some(r) = rows.first() {
        println!(
            "marginal: per-sample cost, fixed costs cancelled: (calibration at {m} - at {f} samples) / \
             (plain at {m} - at {f} samples), best of two.",
            f = r.mem_samples.0,
            m = r.mem_samples.1
        );
    }
    if let Some(r) = rows.first() {
        println!(
            "memory: peak RSS of `quench calibrate` at {} vs {} samples; `data`: size of the .npy \
             calibration data, which is read from disk batch by batch.",
            r.mem_samples.0, r.mem_samples.1
        );
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--plain-inference") {
        let (Some(model), Some(data)) = (args.get(i + 1), args.get(i + 2)) else {
            bail!("usage: --plain-inference MODEL DATA");
        };
        return plain_inference(Path::new(model), Path::new(data));
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let full = args.iter().any(|a| a == "--bench");
    let env_num = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let runs = if full {
        env_num("QUENCH_BENCH_RUNS", 3).max(1)
    } else {
        1
    };
    let mem_samples = if full {
        let v: Vec<usize> = std::env::var("QUENCH_BENCH_MEM_SAMPLES")
            .unwrap_or_else(|_| "32,512".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        match v[..] {
            [a, b] => (a, b),
            _ => bail!("QUENCH_BENCH_MEM_SAMPLES: two counts, e.g. 32,512"),
        }
    } else {
        (8, 32)
    };

    let mut cases = Vec::new();
    let mut digits = Case::new(root().join("testdata/digits_cnn.onnx"), None, 256)?;
    digits.data = Some(root().join("testdata/digits/calib"));
    cases.push(digits);
    if full {
        cases.push(Case::new(
            root().join("testdata/resnet_tiny.onnx"),
            None,
            1024,
        )?);
        for e in std::env::var("QUENCH_BENCH_CALIB_MODELS")
            .unwrap_or_default()
            .split(':')
        {
            if !e.is_empty() {
                cases.push(parse_entry(e)?);
            }
        }
    }

    let target = root().join("target");
    std::fs::create_dir_all(&target)?;
    let tmp = tempfile::Builder::new()
        .prefix("bench-calibration-")
        .tempdir_in(&target)?;
    let mut rows = Vec::new();
    for c in &cases {
        eprintln!(
            "measuring {} ({} timing samples, {runs} runs)",
            c.model.display(),
            c.samples
        );
        match run_case(c, tmp.path(), runs, mem_samples) {
            Ok(r) => rows.push(r),
            Err(e) => eprintln!("{}: {e:#}", c.name),
        }
    }
    print_table(&rows);
    if rows.len() != cases.len() {
        bail!(
            "{} of {} models could not be measured",
            cases.len() - rows.len(),
            cases.len()
        );
    }
    Ok(())
}
