//! Error-compensated rounding of weights (`--error-compensated-rounding`,
//! the method of GPTQ, Frantar et al. 2022, on calibration inputs): instead
//! of rounding each weight to its nearest grid point, weights are rounded
//! one input column at a time and each column's rounding error is pushed
//! onto the columns not yet rounded, weighted by the inverse Hessian
//! `H = Σ x xᵀ` of the layer's inputs, which minimizes the layer's output
//! error `‖(W - Q) X‖²` on the calibration inputs rather than `‖W - Q‖²`.
//!
//! Scope: Conv (2-D, `group = 1`), Gemm and MatMul with a constant 2-D
//! weight used once, whose weight format is a symmetric integer grid (per
//! tensor, per output channel or blocks). Grid scales stay those of the
//! original weights: each group's extreme weights keep their nearest
//! codes, so quantization of the rewritten weights finds the same scales
//! and exactly the codes chosen here.
//!
//! Invariant: only weight values change, each onto the grid the quantizer
//! will use; a layer is rewritten only when its output error on the
//! calibration inputs (`tr(ΔW H ΔWᵀ)`) is lower than with nearest
//! rounding; the whole rewrite is kept only when the float twin's output
//! SQNR on held-out calibration samples is higher.

use std::collections::BTreeMap;

use anyhow::Result;
use ndarray::{Array2, ArrayD, Axis};
use quench_calib::{QuantFormat, Scheme};
use quench_ir::{tensor, Model, OpKind};
use quench_passes::codes::Layout;
use quench_passes::quantize::{Plan, QuantizeConfig, Ranges};
use quench_passes::PassCx;
use quench_verify::{Evaluator, Runners, MAX_BATCH};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::Bound;

/// Calibration samples the Hessians are accumulated on.
pub const SAMPLES: usize = 32;
/// Input rows (patches) per layer per batch; more are subsampled evenly.
pub const ROWS_PER_BATCH: usize = 4096;
/// Widest layer input handled (`C·kh·kw` or `K`): the pass is cubic in it.
pub const MAX_COLUMNS: usize = 2304;
/// Dampening added to the Hessian's diagonal, relative to its mean.
pub const DAMP: f64 = 0.01;

/// What error-compensated rounding did.
#[derive(Debug, Clone, Serialize)]
pub struct RoundingReport {
    /// Layers rewritten, and those left to nearest rounding with why.
    pub layers: usize,
    pub skipped: Vec<(String, String)>,
    /// Output error of the rewritten layers on the calibration inputs,
    /// relative to their output energy, averaged over the layers: with
    /// nearest rounding and with compensated rounding.
    pub layer_error_nearest: f64,
    pub layer_error_compensated: f64,
    /// Output SQNR (lowest over outputs) of the float twin on held-out
    /// calibration samples, with nearest and compensated rounding.
    pub sqnr_nearest_db: f64,
    pub sqnr_compensated_db: f64,
    pub kept: bool,
    pub samples: usize,
}

/// A layer: its node, weight, input tensor and how input rows are formed.
pub(crate) struct Layer {
    pub(crate) node: quench_ir::NodeId,
    pub(crate) name: String,
    pub(crate) weight: String,
    pub(crate) input: String,
    /// Weight as a matrix `[out, in]` (rows = output channels).
    pub(crate) w: Array2<f64>,
    /// Flat index into the weight tensor of matrix element `(r, c)`.
    pub(crate) flat: Box<dyn Fn(usize, usize) -> usize + Send + Sync>,
    pub(crate) rows: RowKind,
    pub(crate) format: QuantFormat,
    pub(crate) dims: Vec<i64>,
}

pub(crate) enum RowKind {
    /// Gemm/MatMul: the input's last axis is `K`.
    Dense,
    /// Conv 2-D: patches of `[C, kh, kw]` at the given strides, pads
    /// (top, left), dilations.
    Conv {
        kernel: (usize, usize),
        strides: (usize, usize),
        pads: (usize, usize, usize, usize),
        dilations: (usize, usize),
    },
}

/// The layers of `plan` this module and [`crate::saturation`] handle: Conv
/// (2-D, group 1, explicit pads), Gemm (no transA) and MatMul with a
/// constant 2-D weight used once and a symmetric integer weight format, at
/// most `max_columns` input columns; the others with why they were skipped.
pub(crate) fn layers(
    float: &Model,
    plan: &Plan,
    cfg: &QuantizeConfig,
    max_columns: usize,
) -> (Vec<Layer>, Vec<(String, String)>) {
    let g = &float.graph;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for &n in &plan.compute {
        let node = g.node(n);
        let name = node.name().to_string();
        let kind = node.kind();
        if !matches!(kind, OpKind::Conv | OpKind::Gemm | OpKind::MatMul) {
            continue;
        }
        let (Some(x), Some(wv)) = (node.input(0), node.input(1)) else {
            continue;
        };
        let Some(t) = g.const_tensor(wv) else {
            continue;
        };
        let mut skip = |why: &str| skipped.push((name.clone(), why.to_string()));
        if g.use_count(wv) != 1 {
            skip("weight shared with another node");
            continue;
        }
        if plan.weight_narrow.contains_key(&n) || plan.weight_pairs.contains_key(&n) {
            // Its groups are on two grids, or its code pairs are limited;
            // the rounding below knows one plain grid.
            skip("channels given 7-bit or paired codes by the saturation guard");
            continue;
        }
        let format = plan
            .weight_formats
            .get(&n)
            .copied()
            .unwrap_or_else(|| cfg.default_weight_format(g, n, wv));
        match format.scheme {
            Scheme::Int(i) if i.symmetric() => {}
            _ => {
                skip("weight format is not a symmetric integer grid");
                continue;
            }
        }
        let Ok(data) = tensor::to_f32(t) else {
            continue;
        };
        let dims = t.dims.clone();
        let ud: Vec<usize> = dims.iter().map(|d| *d as usize).collect();
        let (w, flat, rows): (
            Array2<f64>,
            Box<dyn Fn(usize, usize) -> usize + Send + Sync>,
            RowKind,
        ) = match kind {
            OpKind::Conv => {
                let ints = |k: &str| node.attr_ints(k).map(|v| v.to_vec());
                if ud.len() != 4
                    || node.attr_int("group").unwrap_or(1) != 1
                    || node
                        .attr_string("auto_pad")
                        .is_some_and(|p| p != "NOTSET" && p != "VALID")
                {
                    skip("not a 2-D Conv with group 1 and explicit pads");
                    continue;
                }
                let s = ints("strides").unwrap_or(vec![1, 1]);
                let p = ints("pads").unwrap_or(vec![0, 0, 0, 0]);
                let d = ints("dilations").unwrap_or(vec![1, 1]);
                if s.len() != 2
                    || p.len() != 4
                    || d.len() != 2
                    || p.iter().chain(&s).chain(&d).any(|v| *v < 0)
                {
                    skip("unusual Conv attributes");
                    continue;
                }
                let cols = ud[1] * ud[2] * ud[3];
                let w =
                    Array2::from_shape_fn((ud[0], cols), |(r, c)| f64::from(data[r * cols + c]));
                (
                    w,
                    Box::new(move |r, c| r * cols + c),
                    RowKind::Conv {
                        kernel: (ud[2], ud[3]),
                        strides: (s[0] as usize, s[1] as usize),
                        pads: (p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize),
                        dilations: (d[0] as usize, d[1] as usize),
                    },
                )
            }
            OpKind::Gemm | OpKind::MatMul => {
                if ud.len() != 2
                    || (kind == OpKind::Gemm && node.attr_int("transA").unwrap_or(0) != 0)
                {
                    skip("not a 2-D weight (or transA)");
                    continue;
                }
                let trans = kind == OpKind::Gemm && node.attr_int("transB").unwrap_or(0) != 0;
                // Matrix [N, K]: rows are outputs.
                let (k, nn) = if trans {
                    (ud[1], ud[0])
                } else {
                    (ud[0], ud[1])
                };
                let w = Array2::from_shape_fn((nn, k), |(r, c)| {
                    f64::from(data[if trans { r * k + c } else { c * nn + r }])
                });
                let f: Box<dyn Fn(usize, usize) -> usize + Send + Sync> = if trans {
                    Box::new(move |r, c| r * k + c)
                } else {
                    Box::new(move |r, c| c * nn + r)
                };
                (w, f, RowKind::Dense)
            }
            _ => continue,
        };
        if w.ncols() > max_columns {
            skip(&format!(
                "{} input columns (more than {max_columns})",
                w.ncols()
            ));
            continue;
        }
        out.push(Layer {
            node: n,
            name: name.clone(),
            weight: g.value(wv).name.clone(),
            input: g.value(x).name.clone(),
            w,
            flat,
            rows,
            format,
            dims,
        });
    }
    (out, skipped)
}

/// The input rows of one batch of a layer's input (at most `max_rows`,
/// evenly subsampled), as a `[rows, columns]` matrix; columns in the
/// weight's own order (`[C, kh, kw]` for Conv).
pub(crate) fn input_rows(
    x: &ArrayD<f32>,
    rows: &RowKind,
    cols: usize,
    max_rows: usize,
) -> Option<Array2<f32>> {
    match rows {
        RowKind::Dense => {
            let k = *x.shape().last()?;
            if k != cols {
                return None;
            }
            let m = x.len() / k.max(1);
            let flat = x
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order((m, k))
                .ok()?;
            let step = m.div_ceil(max_rows).max(1);
            Some(flat.select(Axis(0), &(0..m).step_by(step).collect::<Vec<_>>()))
        }
        RowKind::Conv {
            kernel: (kh, kw),
            strides: (sh, sw),
            pads: (pt, pl, pb, pr),
            dilations: (dh, dw),
        } => {
            let s = x.shape();
            if s.len() != 4 || s[1] * kh * kw != cols {
                return None;
            }
            let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
            let eh = dh * (kh - 1) + 1;
            let ew = dw * (kw - 1) + 1;
            let oh = (h + pt + pb).checked_sub(eh)? / sh + 1;
            let ow = (w + pl + pr).checked_sub(ew)? / sw + 1;
            let total = b * oh * ow;
            let step = total.div_ceil(max_rows).max(1);
            let picks: Vec<usize> = (0..total).step_by(step).collect();
            let mut out = Array2::<f32>::zeros((picks.len(), cols));
            for (row, &p) in picks.iter().enumerate() {
                let (bi, rest) = (p / (oh * ow), p % (oh * ow));
                let (oy, ox) = (rest / ow, rest % ow);
                for ci in 0..c {
                    for i in 0..*kh {
                        let y = (oy * sh + i * dh) as isize - *pt as isize;
                        for j in 0..*kw {
                            let xx = (ox * sw + j * dw) as isize - *pl as isize;
                            if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                out[[row, ci * kh * kw + i * kw + j]] =
                                    x[[bi, ci, y as usize, xx as usize]];
                            }
                        }
                    }
                }
            }
            Some(out)
        }
    }
}

/// For each of the (up to four) rows `xs[r]`: `init[r] - Σ xs[r][k] y[k]`
/// (`sub`) or `init[r] + Σ xs[r][k] y[k]`, each sum in ascending `k` as a
/// loop over that row alone adds it (the same bits), the rows' sums
/// interleaved so that four dependency chains are in flight.
fn dots(init: [f64; 4], xs: &[&[f64]], y: &[f64], sub: bool) -> [f64; 4] {
    let mut s = init;
    let len = y.len();
    if xs.len() == 4 && xs.iter().all(|x| x.len() == len) {
        let (x0, x1, x2, x3) = (xs[0], xs[1], xs[2], xs[3]);
        if sub {
            for k in 0..len {
                s[0] -= x0[k] * y[k];
                s[1] -= x1[k] * y[k];
                s[2] -= x2[k] * y[k];
                s[3] -= x3[k] * y[k];
            }
        } else {
            for k in 0..len {
                s[0] += x0[k] * y[k];
                s[1] += x1[k] * y[k];
                s[2] += x2[k] * y[k];
                s[3] += x3[k] * y[k];
            }
        }
        return s;
    }
    for (r, x) in xs.iter().enumerate() {
        for (a, b) in x.iter().zip(y) {
            if sub {
                s[r] -= a * b;
            } else {
                s[r] += a * b;
            }
        }
    }
    s
}

/// Lower Cholesky factor of the symmetric positive definite `a` (n×n, row
/// major), in place; `false` if `a` is not positive definite.
fn cholesky(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if !(d > 0.0) {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        // Rows four at a time: independent sums in flight, each in the
        // order one row alone takes (the same bits).
        let mut i = j + 1;
        while i < n {
            let m = (n - i).min(4);
            let s = {
                let y = &a[j * n..j * n + j];
                let mut init = [0.0; 4];
                let mut xs: [&[f64]; 4] = [&[]; 4];
                for r in 0..m {
                    init[r] = a[(i + r) * n + j];
                    xs[r] = &a[(i + r) * n..(i + r) * n + j];
                }
                dots(init, &xs[..m], y, true)
            };
            for r in 0..m {
                a[(i + r) * n + j] = s[r] / d;
            }
            i += m;
        }
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    true
}

/// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = Uᵀ U`), which GPTQ's
/// column updates use; `None` if `H` is not positive definite.
fn inverse_cholesky_upper(h: &Array2<f64>) -> Option<Array2<f64>> {
    let n = h.nrows();
    let mut l: Vec<f64> = h.iter().copied().collect();
    if !cholesky(&mut l, n) {
        return None;
    }
    // L⁻¹ by forward substitution (lower triangular), stored transposed
    // (`lt[c * n + i]` = `L⁻¹[i][c]`) so that every inner loop below reads
    // memory in order; the sums are the same, term by term and in order.
    let mut lt = vec![0.0; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            let (row, col) = (&l[i * n..i * n + i], &lt[c * n..c * n + i]);
            for k in c..i {
                s -= row[k] * col[k];
            }
            lt[c * n + i] = s / l[i * n + i];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹ (for j <= i every sum runs over k in i..n; four
    // columns at a time, as in `cholesky`).
    let mut hinv = vec![0.0; n * n];
    for i in 0..n {
        let a = &lt[i * n + i..(i + 1) * n];
        let mut j = 0;
        while j <= i {
            let m = (i + 1 - j).min(4);
            let mut xs: [&[f64]; 4] = [&[]; 4];
            for r in 0..m {
                xs[r] = &lt[(j + r) * n + i..(j + r + 1) * n];
            }
            let s = dots([0.0; 4], &xs[..m], a, false);
            for r in 0..m {
                hinv[i * n + j + r] = s[r];
                hinv[(j + r) * n + i] = s[r];
            }
            j += m;
        }
    }
    if !cholesky(&mut hinv, n) {
        return None;
    }
    // Upper factor = transpose of the lower one.
    Some(Array2::from_shape_fn((n, n), |(i, j)| hinv[j * n + i]))
}

/// `tr(ΔW H ΔWᵀ)`: the layer's squared output error on the inputs `H`
/// was accumulated from.
fn output_error(dw: &Array2<f64>, h: &Array2<f64>) -> f64 {
    dw.dot(h).iter().zip(dw.iter()).map(|(a, b)| a * b).sum()
}

/// Error-compensated rounding of one layer; returns the rewritten weight
/// matrix (every value on the grid) and its output error, with the
/// nearest-rounding error for comparison.
fn round_layer(l: &Layer, h: &Array2<f64>) -> Option<(Array2<f64>, f64, f64)> {
    let (rows, cols) = l.w.dim();
    let layout = Layout::new(&l.dims, l.format.granularity)?;
    // Per group: the original range, its parameters, and where its
    // extremes sit (they keep their nearest codes).
    let mut lo = vec![f64::INFINITY; layout.groups];
    let mut hi = vec![f64::NEG_INFINITY; layout.groups];
    let mut arg_lo = vec![(0, 0); layout.groups];
    let mut arg_hi = vec![(0, 0); layout.groups];
    for r in 0..rows {
        for c in 0..cols {
            let gi = layout.group((l.flat)(r, c));
            let v = l.w[[r, c]];
            if v < lo[gi] {
                lo[gi] = v;
                arg_lo[gi] = (r, c);
            }
            if v > hi[gi] {
                hi[gi] = v;
                arg_hi[gi] = (r, c);
            }
        }
    }
    let params: Vec<_> = (0..layout.groups)
        .map(|gi| l.format.params(lo[gi] as f32, hi[gi] as f32).ok())
        .collect::<Option<_>>()?;
    let fq = |r: usize, c: usize, v: f64| -> f64 {
        let p = &params[layout.group((l.flat)(r, c))];
        f64::from(l.format.fake_quantize(v as f32, p))
    };
    let nearest = Array2::from_shape_fn((rows, cols), |(r, c)| fq(r, c, l.w[[r, c]]));
    // Dampened Hessian; inputs that were always zero get a unit diagonal.
    let mut hd = h.clone();
    let mean = (0..cols).map(|i| h[[i, i]]).sum::<f64>() / cols.max(1) as f64;
    if !(mean > 0.0) {
        return None;
    }
    for i in 0..cols {
        if h[[i, i]] <= 0.0 {
            hd[[i, i]] = 1.0;
        }
        hd[[i, i]] += DAMP * mean;
    }
    let u = inverse_cholesky_upper(&hd)?;
    // Rows are independent: each is rounded left to right, its error
    // pushed onto its own later columns.
    let qrows: Vec<Vec<f64>> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let mut wr: Vec<f64> = l.w.row(r).to_vec();
            let mut qr = vec![0.0; cols];
            for c in 0..cols {
                let v = wr[c];
                // A weight that is exactly zero (pruned) stays zero: the
                // error of later columns would otherwise move it off zero
                // and break the sparsity (a 2:4 pattern came out 46%
                // zeros); its own value is still compensated for.
                let qv = if l.w[[r, c]] == 0.0 { 0.0 } else { fq(r, c, v) };
                qr[c] = qv;
                let e = (v - qv) / u[[c, c]];
                for k in c + 1..cols {
                    wr[k] -= e * u[[c, k]];
                }
            }
            qr
        })
        .collect();
    let mut q = Array2::from_shape_fn((rows, cols), |(r, c)| qrows[r][c]);
    for gi in 0..layout.groups {
        for (r, c) in [arg_lo[gi], arg_hi[gi]] {
            q[[r, c]] = nearest[[r, c]];
        }
    }
    let e_near = output_error(&(&l.w - &nearest), h);
    let e_comp = output_error(&(&l.w - &q), h);
    Some((q, e_comp, e_near))
}

/// Rewrites the weights of `float` (see the module docs); `ranges` are the
/// activation ranges the model will be quantized with (for judging).
pub fn round_weights(
    float: &mut Model,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
) -> Result<Option<RoundingReport>> {
    let (ls, skipped) = layers(float, plan, cfg, MAX_COLUMNS);
    if ls.is_empty() {
        return Ok(None);
    }
    let (fit_rows, val_rows) = crate::data::fit_and_judge(data.data.samples(), SAMPLES);
    let sub = data.data.pick(&fit_rows);
    let proto = float.to_onnx();
    let names = quench_verify::input_names(&proto);
    let n_out = quench_verify::output_names(&proto).len();
    let mut inputs: Vec<String> = ls.iter().map(|l| l.input.clone()).collect();
    inputs.sort();
    inputs.dedup();
    let runners = Runners::new(&proto, inputs.clone());
    let mut hs: Vec<Array2<f64>> = ls
        .iter()
        .map(|l| Array2::zeros((l.w.ncols(), l.w.ncols())))
        .collect();
    for r in data.feed.ranges(sub.samples(), MAX_BATCH) {
        let batch = sub.feed(data.feed, r)?;
        let outs = runners.run(&names, &batch)?;
        hs.par_iter_mut().zip(&ls).for_each(|(h, l)| {
            let Some(ix) = inputs.iter().position(|i| *i == l.input) else {
                return;
            };
            let x = outs[n_out + ix].to_f32();
            if let Some(p) = input_rows(&x, &l.rows, l.w.ncols(), ROWS_PER_BATCH) {
                let pp = p.t().dot(&p);
                h.zip_mut_with(&pp, |a, b| *a += f64::from(*b));
            }
        });
    }
    let results: Vec<Option<(Array2<f64>, f64, f64)>> =
        ls.iter().zip(&hs).map(|(l, h)| round_layer(l, h)).collect();
    let val = data.data.pick(&val_rows);
    let eval = Evaluator::new(&val, data.feed, names.clone());
    let reference = eval.outputs(&Runners::new(&proto, vec![]), "the float model")?;
    let judge = |m: &Model| -> Result<f64> {
        let mut q = m.clone();
        let mut cx = PassCx::new(opset);
        crate::phases::quantize_phase(&mut q, plan, ranges, cfg, opset, &mut cx)?;
        quench_passes::simulate::float_twin_pairs(&mut q.graph, opset);
        let r = Runners::new(&q.to_onnx(), vec![]);
        let f = eval
            .compare(
                &[
                    quench_verify::Subject::Cached(&reference),
                    quench_verify::Subject::Required(&r, "the float twin"),
                ],
                &[(0, 1)],
                n_out,
            )?
            .remove(0);
        let m = f.outputs.map_err(anyhow::Error::msg)?;
        Ok(m.iter().map(|m| m.sqnr_db).fold(f64::INFINITY, f64::min))
    };
    let before = judge(float)?;
    let mut rewritten = float.clone();
    let mut done = 0;
    let mut skipped = skipped;
    let (mut e_near, mut e_comp) = (0.0, 0.0);
    let mut originals: BTreeMap<String, quench_onnx::proto::TensorProto> = BTreeMap::new();
    for ((l, h), r) in ls.iter().zip(&hs).zip(results) {
        let Some((q, ec, en)) = r else {
            skipped.push((l.name.clone(), "no positive definite input Hessian".into()));
            continue;
        };
        if !(ec < en) {
            skipped.push((l.name.clone(), "nearest rounding was as good".into()));
            continue;
        }
        let energy = output_error(&l.w, h).max(f64::MIN_POSITIVE);
        let g = &mut rewritten.graph;
        let Some(v) = g.value_by_name(&l.weight) else {
            continue;
        };
        let Some(t) = g.const_tensor(v) else { continue };
        originals.insert(l.weight.clone(), t.clone());
        let count: usize = l.dims.iter().map(|d| *d as usize).product();
        let mut flat = vec![0f32; count];
        for ((r, c), x) in q.indexed_iter() {
            flat[(l.flat)(r, c)] = *x as f32;
        }
        g.replace_const(v, tensor::from_f32(&l.weight, &l.dims, &flat));
        e_near += en / energy;
        e_comp += ec / energy;
        done += 1;
    }
    if done == 0 {
        return Ok(None);
    }
    let after = judge(&rewritten)?;
    let kept = after > before;
    if kept {
        *float = rewritten;
    }
    Ok(Some(RoundingReport {
        layers: done,
        skipped,
        layer_error_nearest: e_near / done as f64,
        layer_error_compensated: e_comp / done as f64,
        sqnr_nearest_db: before,
        sqnr_compensated_db: after,
        kept,
        samples: fit_rows.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inverse_cholesky_factor_reproduces_the_inverse() {
        // H = A Aᵀ + I for a fixed A: U must satisfy Uᵀ U H = I. Sizes
        // around multiples of 4 (rows are summed four at a time).
        for n in [1, 2, 3, 4, 5, 7, 8, 9, 11] {
            let a = Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 5) as f64 - 2.0);
            let h = a.dot(&a.t()) + Array2::<f64>::eye(n);
            let u = inverse_cholesky_upper(&h).unwrap();
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(u[[i, j]], 0.0, "upper triangular");
                }
            }
            let id = u.t().dot(&u).dot(&h);
            for i in 0..n {
                for j in 0..n {
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((id[[i, j]] - want).abs() < 1e-9, "{n}: {id:?}");
                }
            }
        }
        // Four sums at once give the bits of one loop per row.
        let y: Vec<f64> = (0..13).map(|k| 1.0 / (k as f64 + 0.37)).collect();
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|r| {
                (0..13)
                    .map(|k| ((k * 5 + r * 3) as f64).sin() * 1e3)
                    .collect()
            })
            .collect();
        for sub in [true, false] {
            for m in 1..=4 {
                let xs: Vec<&[f64]> = rows[..m].iter().map(Vec::as_slice).collect();
                let got = dots([0.5, -0.25, 3.0, 0.0], &xs, &y, sub);
                for r in 0..m {
                    let mut want = [0.5, -0.25, 3.0, 0.0][r];
                    for k in 0..13 {
                        if sub {
                            want -= rows[r][k] * y[k];
                        } else {
                            want += rows[r][k] * y[k];
                        }
                    }
                    assert_eq!(got[r].to_bits(), want.to_bits(), "{sub} {m} {r}");
                }
            }
        }
        // Not positive definite: refused.
        let mut bad = Array2::<f64>::eye(2);
        bad[[1, 1]] = -1.0;
        assert!(inverse_cholesky_upper(&bad).is_none());
    }

    #[test]
    fn conv_rows_are_the_patches_the_weights_multiply() {
        // 1 sample, 2 channels, 3x3, kernel 2x2, stride 1, pad 1 on the
        // top/left: output 3x3 = 9 patches of 8 values.
        let x = ArrayD::from_shape_fn(vec![1, 2, 3, 3], |i| {
            (i[1] * 9 + i[2] * 3 + i[3]) as f32 + 1.0
        });
        let rows = RowKind::Conv {
            kernel: (2, 2),
            strides: (1, 1),
            pads: (1, 1, 0, 0),
            dilations: (1, 1),
        };
        let p = input_rows(&x, &rows, 8, ROWS_PER_BATCH).unwrap();
        assert_eq!(p.dim(), (9, 8));
        // Output (0,0) sees only x[.., 0, 0] at kernel (1,1).
        assert_eq!(p.row(0).to_vec(), vec![0., 0., 0., 1., 0., 0., 0., 10.]);
        // Output (2,2) sees x[.., 1..3, 1..3].
        assert_eq!(p.row(8).to_vec(), vec![5., 6., 8., 9., 14., 15., 17., 18.]);
    }
}
