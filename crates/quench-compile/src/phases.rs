//! The graph-changing phases as functions of their own, shared by
//! [`compile`](crate::compile), mixed precision and the QDQ snapshot tests.

use anyhow::{Context, Result};
use quench_ir::Model;
use quench_passes::quantize;
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};

/// The passes phase: runs the chosen passes (`None`: the default
/// pipeline; empty or `["none"]`: none) and returns their names and the
/// context (counters, log, IR dumps of `dump_after`).
pub fn run_pipeline(
    model: &mut Model,
    passes: &Option<Vec<String>>,
    dump_after: &[String],
) -> Result<(Vec<String>, PassCx)> {
    run_pipeline_with(model, passes, &[], dump_after)
}

/// [`run_pipeline`] followed by the optional passes named in `extra` (e.g.
/// `equalize`) unless the list already has them.
pub fn run_pipeline_with(
    model: &mut Model,
    passes: &Option<Vec<String>>,
    extra: &[&str],
    dump_after: &[String],
) -> Result<(Vec<String>, PassCx)> {
    let mut list = match passes {
        Some(p) if p.is_empty() || (p.len() == 1 && p[0] == "none") => Vec::new(),
        Some(p) => pipeline::by_names(p)?,
        None => pipeline::default_pipeline(),
    };
    for e in extra {
        if !list.iter().any(|p| p.name() == *e) {
            list.extend(pipeline::by_names(&[e.to_string()])?);
        }
    }
    let names: Vec<String> = list.iter().map(|p| p.name().to_string()).collect();
    for d in dump_after {
        if !names.contains(d) {
            anyhow::bail!(
                "--dump-after `{d}`: no such pass in the pipeline that runs ({})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    let mut cx = PassCx::new(model.default_opset().unwrap_or(0));
    let opts = RunOptions {
        verify: cfg!(debug_assertions),
        dump_after: dump_after.to_vec(),
    };
    run_passes(&mut model.graph, &list, &mut cx, &opts)?;
    Ok((names, cx))
}

/// The quantize phase: applies `plan` with `ranges` (activation tensor
/// name → range), quantizes the weights inside subgraph bodies when the
/// plan says so ([`quantize::Plan::bodies`]), removes the float weights it
/// replaced, and verifies the graph.
pub fn quantize_phase(
    model: &mut Model,
    plan: &quantize::Plan,
    ranges: &quantize::Ranges,
    cfg: &quantize::QuantizeConfig,
    opset: i64,
    cx: &mut PassCx,
) -> Result<quantize::QuantSummary> {
    let mut summary = quantize::apply(&mut model.graph, plan, ranges, cfg, opset, cx)?;
    // Weights inside If/Loop/Scan bodies, and captured ones where they are
    // defined.
    if plan.bodies {
        let b = quench_passes::subgraphs::quantize_bodies(&mut model.graph, cfg, opset, cx)?;
        summary.weights_quantized += b.weights_quantized;
        summary.per_channel |= b.weights_quantized > 0 && cfg.per_channel && opset >= 13;
        summary.nodes.extend(b.decisions);
        summary.notes.extend(b.notes);
    }
    // Float clean-ups between DequantizeLinear and QuantizeLinear (a
    // written-out hard-swish becomes one op), at the opset in force.
    let mut post = PassCx::new(opset);
    for p in quench_passes::pipeline::post_quantize_passes() {
        p.run(&mut model.graph, &mut post)?;
    }
    cx.log.append(&mut post.log);
    for (k, v) in post.stats {
        *cx.stats.entry(k).or_default() += v;
    }
    // The float weights replaced by integer ones are now unused.
    quench_passes::Pass::run(&quench_passes::dead_code::DeadCode, &mut model.graph, cx)?;
    model
        .graph
        .verify()
        .context("quantized graph is invalid (a quench bug)")?;
    Ok(summary)
}
