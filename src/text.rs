//! The terminal text of `quench compile`: the driver's [`Report`] as lines.

use std::collections::BTreeMap;

use quench_compile::attribution::TensorError;
use quench_compile::prune::PruneReport;
use quench_compile::{PruneMethod, Report};
use quench_passes::prune::percent;
use quench_passes::quantize::Mode;
use quench_verify::Metrics;

/// The quantized tensors that cost the most at the model output (all of
/// them with `--verbose`): ranked by the output SQNR gained by leaving each
/// one float, the local figures beside.
fn print_attribution(tensors: &[TensorError], sample: Option<usize>, verbose: bool) {
    if tensors.is_empty() {
        return;
    }
    let mut worst: Vec<&TensorError> = tensors.iter().collect();
    // Measured output gains first, largest first (NaN last); then by the
    // local error.
    worst.sort_by(|a, b| {
        let key = |t: &TensorError| t.float_gain_db.filter(|g| !g.is_nan());
        match (key(a), key(b)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.added_db.total_cmp(&b.added_db),
        }
    });
    let shown = if verbose {
        worst.len()
    } else {
        worst.len().min(3)
    };
    let full = tensors.iter().filter_map(|t| t.gain_samples).max();
    let screened = tensors
        .iter()
        .filter_map(|t| t.gain_samples)
        .filter(|n| Some(*n) != full)
        .min();
    match sample {
        Some(row) => println!(
            "    cost by tensor on sample #{row} alone (output SQNR gained by leaving it float; its own Q/DQ's error there):"
        ),
        None => println!(
            "    cost by tensor (output SQNR gained by leaving it float, on up to {} samples{}; its own Q/DQ's error on {}):",
            quench_compile::attribution::GAIN_SAMPLES,
            match screened {
                Some(n) => format!(
                    ", the {} largest after screening all on {n} (those marked ~)",
                    quench_compile::attribution::REFINED,
                ),
                None => String::new(),
            },
            quench_compile::attribution::SAMPLES
        ),
    }
    for t in &worst[..shown] {
        let node = if t.node.is_empty() {
            "graph input".to_string()
        } else {
            format!("{} `{}`", t.op, t.node)
        };
        let mark = if t.gain_samples.is_some() && t.gain_samples != full {
            "~"
        } else {
            " "
        };
        let gain = t
            .float_gain_db
            .map(|g| format!("{mark}{g:+7.2} dB"))
            .unwrap_or_else(|| "        n/a".into());
        println!(
            "      {gain}  `{}` from {node} (its Q/DQ adds error at {:.1} dB; SQNR there {:.1} dB, {:.1} dB before)",
            t.tensor, t.added_db, t.sqnr_out_db, t.sqnr_in_db
        );
    }
    if shown < worst.len() {
        println!(
            "      ... {} more in --report / --verbose; keep a tensor float with --exclude-nodes NODE",
            worst.len() - shown
        );
    }
}

/// Accuracy against labels of FP32 and of the `what` model, the change in
/// points and its 95% interval when there is one.
fn accuracy_line(
    labels: usize,
    fp32: f64,
    what: &str,
    other: f64,
    interval: Option<[f64; 2]>,
) -> String {
    let range = interval
        .map(|[lo, hi]| format!("; 95% interval {:+.2} to {:+.2}", 100.0 * lo, 100.0 * hi))
        .unwrap_or_default();
    format!(
        "    accuracy on {labels} labels: FP32 {:.2}%, {what} {:.2}% ({:+.2} points{range})",
        100.0 * fp32,
        100.0 * other,
        100.0 * (other - fp32)
    )
}

/// SQNR, cosine, max abs error and top-1 agreement on one line.
fn metrics_line(m: &Metrics) -> String {
    let iv = m.interval.as_ref();
    let top1 = m
        .top1
        .as_ref()
        .map(|t| {
            let range = iv
                .and_then(|i| i.top1)
                .map(|[lo, hi]| format!("; 95% interval {:.2}% to {:.2}%", 100.0 * lo, 100.0 * hi))
                .unwrap_or_default();
            format!(
                ", top-1 agreement {}/{} ({:.2}%{range})",
                t.agree,
                t.rows,
                100.0 * t.fraction
            )
        })
        .unwrap_or_default();
    // How far the pooled figure would move on another evaluation set of
    // the same size and kind.
    let sqnr_range = iv
        .and_then(|i| i.sqnr_db.map(|[lo, hi]| (lo, hi, i.samples)))
        .map(|(lo, hi, n)| format!(" (95% interval {lo:.2} to {hi:.2} over {n} samples)"))
        .unwrap_or_default();
    // The pooled SQNR can hide one sample that collapses: name the worst
    // (not when every sample is identical).
    let worst = m
        .worst_sample
        .as_ref()
        .filter(|w| w.of >= 2 && w.sqnr_db != f64::INFINITY)
        .map(|w| format!(", worst sample #{} at {:.2} dB", w.sample, w.sqnr_db))
        .unwrap_or_default();
    format!(
        "SQNR {:.2} dB{sqnr_range}, cosine {:.6}, max abs err {:.4e}{top1}{worst}",
        m.sqnr_db, m.cosine, m.max_abs_err
    )
}

fn human(b: u64) -> String {
    if b >= 1_000_000 {
        format!("{:.2} MB", b as f64 / 1e6)
    } else {
        format!("{:.1} kB", b as f64 / 1e3)
    }
}

pub fn print_report(r: &Report, verbose: bool) {
    let q = &r.quantization;
    let nq = q.nodes.iter().filter(|d| d.quantized).count();
    println!("quench compile: {} -> {}", r.input, r.output);
    if r.no_quantize {
        println!("  mode           none (--no-quantize: graph passes only, FP32 output)");
    } else {
        println!(
            "  mode           {:?}, activations {:?}, weights {:?}, {}",
            r.config.mode,
            r.config.activations,
            r.config.weights,
            if q.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        );
    }
    if !r.passes.is_empty() {
        let folded = r
            .pass_stats
            .get("fold_batchnorm.folded")
            .copied()
            .unwrap_or(0);
        println!(
            "  passes         {} ({} BatchNormalization folded)",
            r.passes.len(),
            folded
        );
    }
    println!(
        "  nodes          {} quantized, {} float",
        nq,
        q.nodes.len() - nq
    );
    let mut why: BTreeMap<&str, usize> = BTreeMap::new();
    for d in q.nodes.iter().filter(|d| !d.quantized) {
        *why.entry(d.reason.as_str()).or_default() += 1;
    }
    for (reason, n) in &why {
        println!("    float: {n:>4} × {reason}");
    }
    if verbose {
        for d in &q.nodes {
            println!(
                "    {:<40} {:<20} {} ({})",
                d.node,
                d.op,
                if d.quantized { "int8" } else { "float" },
                d.reason
            );
        }
    }
    println!(
        "  weights        {} tensors int8, {} biases int32",
        q.weights_quantized, q.biases_quantized
    );
    if r.config.mode == Mode::Static {
        let method = format!("{:?}", r.method).to_lowercase();
        println!("  activations    {} tensors quantized ({} calibration samples, method {method}), {} Relu/Clip absorbed", q.activations_quantized, r.calibration_samples, q.absorbed_activations);
        for (t, why) in &q.activations_float {
            println!("    float: `{t}`: {why}");
        }
    }
    println!(
        "  size           {} -> {} ({:.2}x smaller)",
        human(r.size_before),
        human(r.size_after),
        r.size_before as f64 / r.size_after.max(1) as f64
    );
    if let Some(m) = &r.mixed_precision {
        println!(
            "  mixed          {}: {} ({} tensor(s) raised to 16 bits, {} left float; {} -> {} on {})",
            m.targets.flags(),
            if m.reached { "reached" } else { "NOT reached" },
            m.int16().count(),
            m.float().count(),
            quench_compile::mixed::describe(&m.initial),
            quench_compile::mixed::describe(&m.result),
            m.data
        );
        for t in &m.raised {
            let to = match t.to {
                quench_compile::mixed::Precision::Int16 => "16-bit",
                quench_compile::mixed::Precision::Float => "float",
            };
            println!("    {to}: `{}` ({})", t.tensor, t.why);
        }
    }
    if let Some(p) = &r.pruning {
        print_pruning(p, verbose);
    }
    match &r.verification {
        Some(v) => {
            println!(
                "  verification   tract, {} samples from {}",
                v.samples, v.data
            );
            for o in &v.outputs {
                let line = metrics_line;
                if let Some(re) = &o.reference {
                    println!(
                        "    {} (reference semantics, float twin): {}",
                        o.output,
                        line(re)
                    );
                }
                if let Some(f) = &o.file {
                    println!(
                        "    {} (emitted file in tract):           {}",
                        o.output,
                        line(f)
                    );
                }
                print_parts(o);
                if o.integer && v.outputs.iter().any(|x| !x.integer) {
                    println!("    {}: integer output (class indices): its SQNR judges nothing, the other outputs' do", o.output);
                }
                if o.runtime_discrepancy {
                    println!("    {}: runtime discrepancy: tract's integer path differs from the ONNX reference semantics beyond quantization error; trust the reference figures", o.output);
                }
            }
            if let Some(e) = &v.file_error {
                println!("    tract cannot run the emitted file ({e}); the figures above are the reference semantics (float twin)");
            }
            if let Some(acc) = &v.accuracy {
                println!(
                    "{}",
                    accuracy_line(
                        acc.labels,
                        acc.fp32,
                        "quantized",
                        acc.quantized,
                        acc.change_interval
                    )
                );
            }
            print_attribution(&v.tensors, v.explained_sample, verbose);
            let low = v
                .outputs
                .iter()
                .filter(|o| !o.integer)
                .filter_map(|o| o.reference.as_ref().or(o.file.as_ref()))
                .any(|m| m.sqnr_db < 20.0);
            if v.tensors.is_empty() && low && r.mode == Mode::Static && !r.no_quantize {
                println!("    SQNR below 20 dB: `--explain` lists the quantized tensors that add the most error");
            }
            // One input far below the rest (and low in itself): point at
            // the per-sample table.
            let lone = v
                .outputs
                .iter()
                .filter(|o| !o.integer)
                .filter_map(|o| {
                    let m = o.reference.as_ref().or(o.file.as_ref())?;
                    Some((o.output.as_str(), m.sqnr_db, m.worst_sample.as_ref()?))
                })
                .filter(|(_, db, w)| w.of >= 2 && w.sqnr_db < 40.0 && *db - w.sqnr_db >= 10.0)
                .min_by(|a, b| a.2.sqnr_db.total_cmp(&b.2.sqnr_db));
            if let (Some((name, db, w)), None, Mode::Static, false) =
                (lone, v.explained_sample, r.mode, r.no_quantize)
            {
                println!(
                    "    {name}: sample #{} is {:.1} dB below the pooled figure: `--explain-sample {}` shows which tensors cost it the most",
                    w.sample,
                    db - w.sqnr_db,
                    w.sample
                );
            }
        }
        None => println!("  verification   skipped"),
    }
    for n in &q.notes {
        println!("  note: {n}");
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
}

/// The pruning lines of `quench compile`'s summary.
fn print_pruning(this: &PruneReport, verbose: bool) {
    let s = &this.summary;
    let (pz, pw) = s.pruned_totals();
    let (az, aw) = s.all_totals();
    let np = s.layers.iter().filter(|l| l.pruned).count();
    let method = match this.method {
        PruneMethod::Layer => "layer",
        PruneMethod::Global => "global",
        PruneMethod::Sensitivity => "sensitivity",
    };
    println!(
        "  pruning        {}, method {method}: {np} of {} layers pruned, {} of all compute weights zero ({} in the pruned layers)",
        this.target,
        s.layers.len(),
        percent(az as f64 / aw.max(1) as f64),
        percent(pz as f64 / pw.max(1) as f64),
    );
    // Long tables only with --verbose: the totals say it for big models.
    let table = s.table();
    let lines: Vec<&str> = table.lines().collect();
    if verbose || lines.len() <= 40 {
        for l in &lines {
            println!("    {l}");
        }
    } else {
        println!(
            "    (per-layer table of {} layers: --verbose or --report)",
            s.layers.len()
        );
    }
    if let Some(r) = &this.sensitivity {
        println!(
            "    sensitivity: output SQNR (dB) with one layer pruned alone, {} samples from {}",
            r.samples, r.data
        );
        let w = r
            .rows
            .iter()
            .map(|x| x.node.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut head = format!("      {:<w$}  {:>8}", "node", "weights");
        for l in &r.levels {
            head.push_str(&format!("  {:>7}", format!("{:.0}%", 100.0 * l)));
        }
        println!("{head}   chosen");
        for row in &r.rows {
            let mut line = format!("      {:<w$}  {:>8}", row.node, row.weights);
            for q in &row.sqnr_db {
                line.push_str(&format!("  {q:>7.2}"));
            }
            println!("{line}  {:>7}", percent(row.chosen));
        }
        let measured = r
            .measured_sqnr_db
            .map(|m| format!(", measured {m:.2} dB"))
            .unwrap_or_default();
        let floor = r
            .floor_db
            .map(|f| format!(" (floor {f:.2} dB)"))
            .unwrap_or_default();
        println!(
            "      plan: estimated SQNR {:.2} dB{measured}{floor}",
            r.estimated_sqnr_db
        );
    }
    if let Some(f) = &this.after_pruning {
        println!(
            "  after pruning  FP32 pruned vs FP32 in tract, {} samples from {}",
            f.samples, f.data
        );
        for o in &f.outputs {
            println!("    {}: {}", o.output, metrics_line(&o.metrics));
        }
        if let Some(acc) = &f.accuracy {
            println!(
                "{}",
                accuracy_line(
                    acc.labels,
                    acc.fp32,
                    "pruned",
                    acc.pruned,
                    acc.change_interval
                )
            );
        }
    }
    if let Some(z) = &this.sizes {
        println!(
            "  gzip size      {} -> {} (raw {} -> {}; dense initializers shrink only compressed)",
            human(z.input_gzip),
            human(z.output_gzip),
            human(z.input_bytes),
            human(z.output_bytes)
        );
    }
    for n in &this.notes {
        println!("  note: {n}");
    }
}

/// The SQNR of each tensor a Concat assembled an output from (the file's,
/// else the reference semantics'): one figure over a detector's output is
/// decided by its largest values (box coordinates), these show its scores.
fn print_parts(o: &quench_compile::report::OutputCheck) {
    const SHOWN: usize = 12;
    let from_file = o.parts.iter().all(|p| p.file.is_some());
    let figures: Vec<String> = o
        .parts
        .iter()
        .filter_map(|p| {
            let m = if from_file {
                p.file.as_ref()
            } else {
                p.reference.as_ref()
            }?;
            Some(format!("`{}` {:.2} dB", p.tensor, m.sqnr_db))
        })
        .collect();
    if figures.is_empty() {
        return;
    }
    let more = figures.len().saturating_sub(SHOWN);
    println!(
        "    {} by part (the tensors concatenated into it, {}): {}{}",
        o.output,
        if from_file {
            "emitted file"
        } else {
            "reference semantics"
        },
        figures[..figures.len().min(SHOWN)].join(", "),
        if more > 0 {
            format!(" and {more} more (in --report)")
        } else {
            String::new()
        }
    );
}
