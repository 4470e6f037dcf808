//! The saturation guard (on by default): per layer, int8 or 7-bit weight
//! codes, whichever costs the layer's output less where ONNX Runtime
//! computes u8 x s8 layers with saturating pair sums.
//!
//! On x86-64 CPUs with AVX2 but no VNNI (many AMD EPYC and older Intel
//! servers), ONNX Runtime's fused u8 x s8 kernels multiply with
//! `VPMADDUBSW`: two adjacent products along the reduction axis are added
//! into a saturating int16, and `255 x 127 x 2 = 64770` does not fit. The
//! verification (tract) computes exactly and cannot show it; measured on
//! real models it costs 2-16 dB (`benches/results/ort_avx2_saturation_2026-11-28.md`).
//! 7-bit codes (`[-63, 63]`, ONNX Runtime's `reduce_range`) cannot
//! overflow but cost one bit of weight precision, which is worth more
//! than the saturation on most layers.
//!
//! So each dense layer (Conv with group 1, Gemm, MatMul with int8
//! weights; depthwise convolutions use a kernel that does not saturate)
//! is emulated on calibration inputs, in the order ONNX Runtime packs the
//! reduction axis (NHWC im2col for Conv: `kh, kw, c_in`; pairs `(2j,
//! 2j+1)`, each pair sum clamped to int16, padding with the input's zero
//! point; the emulation reproduces ONNX Runtime's fused output on the
//! first layers of two real models to 0.003 codes):
//! - `e8`: the output error of int8 codes computed exactly (what a CPU
//!   with VNNI, or tract, computes);
//! - `e8_sat`: the same codes with saturating pair sums;
//! - `e7`: 7-bit codes, exactly (they never saturate);
//! - `ep`: paired codes, exactly (they never saturate either): int8 codes
//!   with every same-sign pair the kernel adds within
//!   [`codes::PAIR_LIMIT`] (`255 x 128` fits int16), on the grid among
//!   [`PAIRED_QMAX`] whose codes are nearest the weights.
//!
//! Errors are against the float weights on the same quantized input, after
//! the bias and clamped to the output's quantization grid (what the fused
//! kernel writes; a Relu absorbed into that range is included), with the
//! scales the quantizer writes (`quantize::weight_group_scale`). Per
//! channel (per layer for per-tensor weights) the guard keeps int8 where no
//! same-sign pair passes the limit or where saturation costs nothing on the
//! samples (`e8_sat <= e8`), and otherwise takes int8, paired or 7-bit
//! codes by the lowest error summed over CPUs that saturate and CPUs that
//! do not (`e8 + e8_sat`, `2 ep`, `2 e7`; [`choose`]). Static mode takes the input's
//! calibrated parameters (s8 inputs as the u8 codes the kernels make of
//! them: code and zero point plus 128), dynamic mode ONNX Runtime's
//! `DynamicQuantizeLinear` of each sample, as a run of one input computes
//! it (MatMul and Gemm only).
//!
//! Invariant: only [`Plan::weight_narrow`] entries (per-channel weights),
//! [`Plan::weight_formats`] entries (per tensor: int8 to 7-bit codes) and
//! [`Plan::weight_pairs`] entries (paired codes, which the quantizer
//! enforces) change; nothing else in the plan or model.

use std::time::Instant;

use anyhow::Result;
use ndarray::Array2;
use quench_calib::{Granularity, QuantFormat, QuantParams, Scheme};
use quench_ir::{Model, NodeId, OpKind};
use quench_passes::codes::{self, Layout, PairLimit};
use quench_passes::quantize::{Mode, Plan, QuantizeConfig, Ranges};
use quench_verify::{Runners, MAX_BATCH};
use rayon::prelude::*;
use serde::Serialize;

use crate::data::Bound;
use crate::rounding::{input_rows, layers, RowKind};

/// The grids (extreme code) paired codes are tried on: the full int8 one
/// and narrower ones with fewer pairs past the limit; 7-bit codes (63) are
/// the guard's other choice.
const PAIRED_QMAX: [i32; 6] = [127, 111, 99, 87, 79, 71];

/// Calibration samples the layers are emulated on.
pub const SAMPLES: usize = 8;
/// Input rows (patches) per layer over all samples, evenly subsampled
/// within each batch.
pub const ROWS: usize = 4096;

/// One layer's emulated errors (squared, summed over rows and output
/// channels, in output units).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerErrors {
    pub layer: String,
    /// Fraction of pair sums outside int16 with int8 codes.
    pub saturated_pairs: f64,
    /// Output energy (the float weights' output, clamped).
    pub energy: f64,
    pub e8: f64,
    pub e8_saturated: f64,
    pub e7: f64,
    /// int8 codes with every same-sign pair within
    /// [`codes::PAIR_LIMIT`] (they never saturate), exactly.
    pub e_paired: f64,
    /// With the guard's choice: 7-bit codes in the `narrowed` channels,
    /// paired int8 codes in the `paired` ones, int8 (saturating) in the
    /// others.
    pub e_guarded: f64,
    /// The same choice where sums do not saturate (VNNI, ARM, tract):
    /// int8 channels exact.
    pub e_guarded_exact: f64,
    pub channels: usize,
    /// Output channels given 7-bit codes (all of them, or none, for
    /// per-tensor weights).
    pub narrowed: Vec<usize>,
    /// Output channels given paired int8 codes (all or none likewise),
    /// and the extreme code of each one's grid (scale `amax / qmax`; its
    /// extreme weight's code can be lower where its pair was brought onto
    /// the limit).
    pub paired: Vec<usize>,
    pub paired_qmax: Vec<i32>,
    /// Whether any channel was given 7-bit or paired codes.
    pub moved: bool,
}

impl LayerErrors {
    fn db(&self, e: f64) -> f64 {
        10.0 * (self.energy.max(f64::MIN_POSITIVE) / e.max(f64::MIN_POSITIVE)).log10()
    }
    /// Layer output SQNR (dB) with int8 codes, exact.
    pub fn sqnr8_db(&self) -> f64 {
        self.db(self.e8)
    }
    /// ... with int8 codes and saturating pair sums.
    pub fn sqnr8_saturated_db(&self) -> f64 {
        self.db(self.e8_saturated)
    }
    /// ... with 7-bit codes.
    pub fn sqnr7_db(&self) -> f64 {
        self.db(self.e7)
    }
    /// ... with paired int8 codes.
    pub fn sqnr_paired_db(&self) -> f64 {
        self.db(self.e_paired)
    }
    /// ... with the guard's choice (saturating where int8 is kept).
    pub fn sqnr_guarded_db(&self) -> f64 {
        self.db(self.e_guarded)
    }
    /// ... with the guard's choice where sums do not saturate.
    pub fn sqnr_guarded_exact_db(&self) -> f64 {
        self.db(self.e_guarded_exact)
    }
}

/// What the guard measured and changed.
#[derive(Debug, Clone, Serialize)]
pub struct GuardReport {
    /// Every emulated layer, in plan order.
    pub layers: Vec<LayerErrors>,
    /// Layers not emulated, with why.
    pub skipped: Vec<(String, String)>,
    pub samples: usize,
    pub seconds: f64,
    /// Why the moves were undone (a mixed-precision target the guarded
    /// model would miss), if they were.
    pub reverted: Option<String>,
    /// The moved layers' nodes and their formats before.
    #[serde(skip)]
    before: Vec<(NodeId, QuantFormat)>,
}

/// Undoes the guard's moves in `plan` (their int8 formats back), saying
/// why in `report`.
pub fn revert(plan: &mut Plan, report: &mut GuardReport, why: String) {
    for (n, f) in report.before.drain(..) {
        plan.weight_formats.insert(n, f);
        plan.weight_narrow.remove(&n);
        plan.weight_pairs.remove(&n);
    }
    for l in &mut report.layers {
        l.moved = false;
        l.narrowed.clear();
        l.paired.clear();
        l.paired_qmax.clear();
        l.e_guarded = l.e8_saturated;
        l.e_guarded_exact = l.e8;
    }
    report.reverted = Some(why);
}

impl GuardReport {
    /// The layers given 7-bit or paired codes.
    pub fn moved(&self) -> impl Iterator<Item = &LayerErrors> {
        self.layers.iter().filter(|l| l.moved)
    }
}

/// Whether `f` is the full-range int8 weight grid the guard is about.
fn is_i8_weight(f: QuantFormat) -> bool {
    f.scheme == QuantFormat::I8_WEIGHT.scheme
}

/// For an 8-bit activation grid (ONNX Runtime's u8 x s8 kernels), what
/// its zero point is moved by so that the codes are the kernel's u8 ones:
/// 0 for u8; 128 for s8, which those kernels (on x86 without VNNI, also
/// for s8 x s8) flip to u8 by adding 128, with the zero point. `None` for
/// other grids (a narrow s8 grid's codes are not all the u8 grid's).
fn u8_shift(f: QuantFormat) -> Option<i32> {
    match f.scheme {
        Scheme::Int(i) if i.bits() == 8 && !i.narrow() => Some(if i.signed() { 128 } else { 0 }),
        _ => None,
    }
}

/// How a layer's input codes are formed.
#[derive(Clone, Copy)]
enum Input {
    /// Static: the calibrated parameters.
    Fixed(QuantParams),
    /// Dynamic: `DynamicQuantizeLinear` of each run (one sample).
    Dynamic,
}

/// Everything about one layer the emulation needs.
struct Site {
    node: NodeId,
    name: String,
    input: String,
    rows: RowKind,
    input_q: Input,
    format: QuantFormat,
    /// One weight scale per output channel (the choice is made per
    /// channel) rather than one for the layer.
    per_channel: bool,
    /// Flat index strides of a row and a column in the weight tensor.
    strides: (usize, usize),
    kernel: Kernel,
}

/// A layer's weights and output grid, in ONNX Runtime's reduction order.
struct Kernel {
    cols: usize,
    /// Column (weight order) of each position along ONNX Runtime's
    /// reduction axis.
    perm: Vec<usize>,
    /// Float weights `[out, padded(K)]` in reduction order (zeros past
    /// `K`).
    w: Vec<f32>,
    out_n: usize,
    /// int8 and 7-bit codes `[out, padded(K)]` and their scales.
    q8: Vec<i32>,
    s8: Vec<f64>,
    q7: Vec<i32>,
    s7: Vec<f64>,
    /// Paired int8 codes (same-sign pairs within the pair limit, on the
    /// grid `pair_qmax`), their scales, and whether a row's int8 codes
    /// have pairs past the limit at all.
    qp: Vec<i32>,
    sp: Vec<f64>,
    pair_qmax: Vec<i32>,
    limited: Vec<bool>,
    bias: Vec<f64>,
    clamp: Option<(f64, f64)>,
}

/// One layer's errors summed over rows, per output channel.
#[derive(Default, Clone)]
struct Sums {
    energy: Vec<f64>,
    e8: Vec<f64>,
    e8s: Vec<f64>,
    e7: Vec<f64>,
    ep: Vec<f64>,
    sat: u64,
    pairs: u64,
}

impl Sums {
    fn new(channels: usize) -> Sums {
        Sums {
            energy: vec![0.0; channels],
            e8: vec![0.0; channels],
            e8s: vec![0.0; channels],
            e7: vec![0.0; channels],
            ep: vec![0.0; channels],
            sat: 0,
            pairs: 0,
        }
    }
    fn add(mut self, o: Sums) -> Sums {
        if self.energy.is_empty() {
            return o;
        }
        for (a, b) in [
            (&mut self.energy, &o.energy),
            (&mut self.e8, &o.e8),
            (&mut self.e8s, &o.e8s),
            (&mut self.e7, &o.e7),
            (&mut self.ep, &o.ep),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.sat += o.sat;
        self.pairs += o.pairs;
        self
    }
}

/// The calibrated range `apply` quantizes activation `v` with (its root's,
/// for tensors sharing parameters); `None` if `v` is not quantized.
fn planned_range(
    model: &Model,
    plan: &Plan,
    ranges: &Ranges,
    v: quench_ir::ValueId,
) -> Option<(f32, f32)> {
    let root = plan.shared.get(&v).copied().unwrap_or(v);
    if !plan.activations.contains(&v) && !plan.activations.contains(&root) {
        return None;
    }
    ranges.get(&model.graph.value(root).name).copied()
}

/// The parameters `apply` gives activation `v`, if it is quantized in
/// `format`.
fn act_params(
    model: &Model,
    plan: &Plan,
    ranges: &Ranges,
    v: quench_ir::ValueId,
    format: QuantFormat,
) -> Option<QuantParams> {
    let (lo, hi) = planned_range(model, plan, ranges, v)?;
    format.params(lo, hi.max(lo)).ok()
}

/// The float interval the output grid of node `n` covers (static mode),
/// after an absorbed Relu/Clip; `None` if the output is not quantized.
fn output_clamp(
    model: &Model,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    n: NodeId,
) -> Option<(f64, f64)> {
    let g = &model.graph;
    let (v, clip) = match plan.absorbed.get(&n) {
        Some(&r) => (
            g.node(r).output(0)?,
            quench_passes::facts::clip_bounds(g, r),
        ),
        None => (g.node(n).output(0)?, None),
    };
    let format = plan.format_of(v, cfg.default_activation_format());
    let Scheme::Int(i) = format.scheme else {
        return None;
    };
    let (mut lo, mut hi) = planned_range(model, plan, ranges, v)?;
    if let Some((clo, chi)) = clip {
        lo = lo.max(clo);
        hi = hi.min(chi);
    }
    let p = format.params(lo, hi.max(lo)).ok()?;
    let s = f64::from(p.scale);
    Some((
        f64::from(i.qmin() - p.zero_point) * s,
        f64::from(i.qmax() - p.zero_point) * s,
    ))
}

/// The sites of `plan`'s layers the guard is about, and the others with
/// why they were left alone.
fn sites(
    model: &Model,
    plan: &Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
) -> (Vec<Site>, Vec<(String, String)>) {
    let g = &model.graph;
    let (ls, mut skipped) = layers(model, plan, cfg, usize::MAX);
    let mut out = Vec::new();
    for mut l in ls {
        // Below opset 13 the quantizer writes per-axis weights per tensor
        // (DequantizeLinear has no axis there): emulate what it writes.
        if opset < 13 && matches!(l.format.granularity, Granularity::PerAxis { .. }) {
            l.format = l.format.per_tensor();
        }
        let node = g.node(l.node);
        let kind = node.kind();
        let mut skip = |why: &str| skipped.push((l.name.clone(), why.to_string()));
        if !is_i8_weight(l.format) {
            continue;
        }
        if cfg.mode == Mode::Dynamic && kind == OpKind::Conv {
            skip("Conv in dynamic mode (no u8 x s8 kernel)");
            continue;
        }
        if kind == OpKind::Gemm
            && (node.attr_float("alpha").unwrap_or(1.0) != 1.0
                || node.attr_float("beta").unwrap_or(1.0) != 1.0)
        {
            skip("Gemm with alpha or beta");
            continue;
        }
        let Some(x) = node.input(0) else { continue };
        let input_q = match cfg.mode {
            Mode::Static => {
                let f = plan.format_of(x, cfg.default_activation_format());
                let Some(shift) = u8_shift(f) else {
                    skip("input not 8-bit");
                    continue;
                };
                match act_params(model, plan, ranges, x, f) {
                    Some(p) => Input::Fixed(QuantParams {
                        zero_point: p.zero_point + shift,
                        ..p
                    }),
                    None => {
                        skip("input not quantized");
                        continue;
                    }
                }
            }
            Mode::Dynamic => Input::Dynamic,
            _ => continue,
        };
        let clamp = match cfg.mode {
            Mode::Static => {
                let c = output_clamp(model, plan, ranges, cfg, l.node);
                if c.is_none() && kind == OpKind::Conv {
                    // No QuantizeLinear after it: ONNX Runtime runs it in
                    // float.
                    skip("output not quantized");
                    continue;
                }
                c
            }
            _ => None,
        };
        let (rows_n, cols) = l.w.dim();
        let perm: Vec<usize> = match l.rows {
            RowKind::Dense => (0..cols).collect(),
            RowKind::Conv {
                kernel: (kh, kw), ..
            } => {
                let c = cols / (kh * kw).max(1);
                let mut p = Vec::with_capacity(cols);
                for i in 0..kh {
                    for j in 0..kw {
                        for ci in 0..c {
                            p.push(ci * kh * kw + i * kw + j);
                        }
                    }
                }
                p
            }
        };
        let Some(layout) = Layout::new(&l.dims, l.format.granularity) else {
            continue;
        };
        // One scale per output row (per channel) or one for all (per
        // tensor): the grids the fused kernels take.
        let per_row = layout.groups == rows_n
            && (0..rows_n).all(|r| (0..cols).all(|c| layout.group((l.flat)(r, c)) == r));
        if !per_row && layout.groups != 1 {
            skip("weight scales vary along the reduction axis (blocks)");
            continue;
        }
        let bias = node
            .input(2)
            .and_then(|b| g.const_tensor(b))
            .and_then(|t| quench_ir::tensor::to_f32(t).ok())
            .map(|b| b.iter().map(|x| f64::from(*x)).collect::<Vec<_>>());
        let bias = match bias {
            Some(b) if b.len() == rows_n => b,
            Some(b) if b.len() == 1 => vec![b[0]; rows_n],
            Some(_) => {
                skip("bias of another shape");
                continue;
            }
            None => vec![0.0; rows_n],
        };
        // The scales as the quantizer writes them
        // (`quantize::weight_group_scale`): widened where an int32 bias
        // needs it (static mode), rounded to the weight's element type.
        let w_elem = node.input(1).and_then(|v| g.const_tensor(v)).map_or(
            quench_onnx::proto::tensor_proto::DataType::Float as i32,
            |t| t.data_type(),
        );
        let min_scales: Vec<Option<f32>> = match input_q {
            Input::Fixed(p) if node.input(2).is_some() => {
                let per: Vec<f32> = bias
                    .iter()
                    .map(|b| quench_passes::quantize::bias_min_scale(*b as f32, p.scale))
                    .collect();
                if per_row {
                    per.into_iter().map(Some).collect()
                } else {
                    let m = per.iter().fold(0f32, |a, b| a.max(*b));
                    vec![Some(m); rows_n]
                }
            }
            _ => vec![None; rows_n],
        };
        let whole = (
            l.w.iter().fold(0f64, |a, b| a.min(*b)) as f32,
            l.w.iter().fold(0f64, |a, b| a.max(*b)) as f32,
        );
        let kp = padded(cols);
        // The quantizer's own narrower grid (int8 -> [-63, 63]).
        let Some(f7) = quench_passes::quantize::one_bit_narrower(l.format) else {
            continue;
        };
        let mut q8 = vec![0i32; rows_n * kp];
        let mut q7 = vec![0i32; rows_n * kp];
        let mut s8 = vec![0f64; rows_n];
        let mut s7 = vec![0f64; rows_n];
        // The full int8 grid's scale before widening and rounding (the
        // paired grids are taken from it).
        let mut raw8 = vec![0f32; rows_n];
        let mut w = vec![0f32; rows_n * kp];
        let mut ok = true;
        for r in 0..rows_n {
            let row = l.w.row(r);
            let (lo, hi) = if per_row {
                (
                    row.iter().fold(0f64, |a, b| a.min(*b)) as f32,
                    row.iter().fold(0f64, |a, b| a.max(*b)) as f32,
                )
            } else {
                whole
            };
            let (Ok(mut p8), Ok(mut p7)) = (l.format.params(lo, hi), f7.params(lo, hi)) else {
                ok = false;
                break;
            };
            raw8[r] = p8.scale;
            let written = |s: f32| {
                quench_passes::quantize::weight_group_scale(s, None, min_scales[r], w_elem)
            };
            let (Some(a), Some(b)) = (written(p8.scale), written(p7.scale)) else {
                ok = false;
                break;
            };
            p8.scale = a;
            p7.scale = b;
            s8[r] = f64::from(p8.scale);
            s7[r] = f64::from(p7.scale);
            for (k, &c) in perm.iter().enumerate() {
                let v = row[c];
                w[r * kp + k] = v as f32;
                q8[r * kp + k] = l.format.quantize(v as f32, &p8);
                q7[r * kp + k] = f7.quantize(v as f32, &p7);
            }
        }
        if !ok {
            skip("no weight grid");
            continue;
        }
        // Paired codes: every same-sign pair (2j, 2j + 1) within the pair
        // limit, as the quantizer enforces it, on the grid (extreme code
        // `qmax`) whose codes are nearest the weights; one grid for a
        // per-tensor layer.
        let candidates = |r: usize, q: i32| -> (Vec<i32>, f32) {
            let sq = quench_passes::quantize::weight_group_scale(
                raw8[r],
                Some(q),
                min_scales[r],
                w_elem,
            )
            .unwrap_or(s8[r] as f32);
            let p = QuantParams {
                scale: sq,
                zero_point: 0,
            };
            let row = &w[r * kp..(r + 1) * kp];
            let mut c: Vec<i32> = row.iter().map(|v| l.format.quantize(*v, &p)).collect();
            // The quantizer's own limiting, on this row in kernel order.
            let one_row = PairLimit {
                order: (0..kp).collect(),
                row_stride: 0,
                col_stride: 1,
                rows: vec![true],
                qmax: vec![q],
            };
            one_row.apply(&mut c, |i| row[i] / sq);
            (c, sq)
        };
        let err = |r: usize, c: &[i32], sq: f32| -> f64 {
            let row = &w[r * kp..(r + 1) * kp];
            row.iter()
                .zip(c)
                .map(|(v, q)| (f64::from(*v) - f64::from(*q) * f64::from(sq)).powi(2))
                .sum()
        };
        let limited: Vec<bool> = (0..rows_n)
            .map(|r| {
                q8[r * kp..(r + 1) * kp]
                    .chunks_exact(2)
                    .any(|p| codes::past_limit(p[0], p[1]))
            })
            .collect();
        let pick = |rs: &[usize]| -> i32 {
            let mut best = (f64::INFINITY, 127);
            for q in PAIRED_QMAX {
                let e: f64 = rs
                    .iter()
                    .map(|r| {
                        let (c, sq) = candidates(*r, q);
                        err(*r, &c, sq)
                    })
                    .sum();
                if e < best.0 {
                    best = (e, q);
                }
            }
            best.1
        };
        let pair_qmax: Vec<i32> = if per_row {
            (0..rows_n)
                .into_par_iter()
                .map(|r| if limited[r] { pick(&[r]) } else { 127 })
                .collect()
        } else if limited.iter().any(|b| *b) {
            let all: Vec<usize> = (0..rows_n).collect();
            vec![pick(&all); rows_n]
        } else {
            vec![127; rows_n]
        };
        let mut qp = vec![0i32; rows_n * kp];
        let mut sp = vec![0f64; rows_n];
        for r in 0..rows_n {
            let (c, sq) = candidates(r, pair_qmax[r]);
            qp[r * kp..(r + 1) * kp].copy_from_slice(&c);
            sp[r] = f64::from(sq);
        }
        let at = |r: usize, c: usize| (l.flat)(r, c);
        let strides = (
            if rows_n > 1 { at(1, 0) - at(0, 0) } else { 0 },
            if cols > 1 { at(0, 1) - at(0, 0) } else { 0 },
        );
        let linear = at(0, 0) == 0
            && (0..rows_n).all(|r| at(r, 0) == r * strides.0)
            && (0..cols).all(|c| at(0, c) == c * strides.1);
        if !linear {
            skip("weight layout not row/column strided");
            continue;
        }
        out.push(Site {
            node: l.node,
            name: l.name.clone(),
            input: l.input.clone(),
            rows: l.rows,
            input_q,
            format: l.format,
            per_channel: per_row,
            strides,
            kernel: Kernel {
                cols,
                perm,
                w,
                out_n: rows_n,
                q8,
                s8,
                q7,
                s7,
                qp,
                sp,
                pair_qmax,
                limited,
                bias,
                clamp,
            },
        });
    }
    (out, skipped)
}

/// A channel's (or a per-tensor layer's) weight codes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Codes {
    /// int8, as quantized.
    Int8,
    /// int8 with same-sign pairs within the pair limit.
    Paired,
    /// 7-bit.
    Narrow,
}

/// The guard's choice for a channel (or a per-tensor layer) from its
/// emulated errors: int8 exact (`e8`, what a CPU with VNNI, ARM or tract
/// computes) and saturating (`e8s`, ONNX Runtime on x86 without VNNI),
/// paired (`ep`) and 7-bit (`e7`; both the same everywhere: they never
/// saturate). Codes with no same-sign pair past the limit (`limited`
/// false) cannot saturate and stay int8, as do codes whose saturation
/// costs nothing on the samples (even where another grid happened to
/// score higher on them). Otherwise the choice with the lowest error
/// summed over the two kinds of CPU, int8 on ties: a change must gain
/// more where sums saturate than it loses where they do not.
fn choose(limited: bool, e8: f64, e8s: f64, ep: f64, e7: f64) -> Codes {
    let (int8, paired, narrow) = (e8 + e8s, 2.0 * ep, 2.0 * e7);
    if !limited || e8s <= e8 || int8 <= paired.min(narrow) {
        Codes::Int8
    } else if paired <= narrow {
        Codes::Paired
    } else {
        Codes::Narrow
    }
}

/// `DynamicQuantizeLinear`'s parameters for values in `[min, max]`.
fn dynamic_params(min: f32, max: f32) -> Option<QuantParams> {
    QuantFormat::U8.params(min.min(0.0), max.max(0.0)).ok()
}

/// The reduction length `k` padded with zeros to a multiple of 8 (pairs
/// stay `(2j, 2j + 1)`; the padding adds nothing).
fn padded(k: usize) -> usize {
    k.div_ceil(8) * 8
}

/// Reduction elements summed in i32 before moving to i64
/// (`255 x 127 x 8192 < 2^31`).
const CHUNK: usize = 8192;

/// `(Σ a w, Σ clamp_i16(a[2j] w[2j] + a[2j+1] w[2j+1]), pairs clamped)`
/// over equal-length slices of even length.
fn pair_sums(a: &[i32], w: &[i32]) -> (i64, i64, u64) {
    let (mut exact, mut sat, mut n) = (0i64, 0i64, 0u64);
    for (ac, wc) in a.chunks(CHUNK).zip(w.chunks(CHUNK)) {
        let (mut e, mut s, mut c) = (0i32, 0i32, 0u32);
        for (x, y) in ac.chunks_exact(2).zip(wc.chunks_exact(2)) {
            let p = x[0] * y[0] + x[1] * y[1];
            let q = p.clamp(-32768, 32767);
            e += p;
            s += q;
            c += u32::from(p != q);
        }
        exact += i64::from(e);
        sat += i64::from(s);
        n += u64::from(c);
    }
    (exact, sat, n)
}

/// `Σ a w` over equal-length slices (i32 chunks as in [`pair_sums`]).
fn dot_i(a: &[i32], w: &[i32]) -> i64 {
    a.chunks(CHUNK)
        .zip(w.chunks(CHUNK))
        .map(|(ac, wc)| i64::from(ac.iter().zip(wc).map(|(x, y)| x * y).sum::<i32>()))
        .sum()
}

/// `Σ a w` in eight lanes (lengths a multiple of 8).
fn dot_f(a: &[f32], w: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(w.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().map(|v| f64::from(*v)).sum()
}

/// The emulated errors of one site on one batch of input rows (float, in
/// the weight's column order).
fn emulate(s: &Kernel, x: &Array2<f32>, p: QuantParams) -> Sums {
    let fa = QuantFormat::U8;
    let kp = padded(s.cols);
    let sa = f64::from(p.scale);
    let zp = i64::from(p.zero_point);
    // Each output row's code sum (for the zero-point correction).
    let row_sums = |q: &[i32]| -> Vec<i64> {
        q.chunks(kp)
            .map(|r| r.iter().map(|v| i64::from(*v)).sum())
            .collect()
    };
    let (sum8, sum7, sump) = (row_sums(&s.q8), row_sums(&s.q7), row_sums(&s.qp));
    let clamp = |v: f64| match s.clamp {
        Some((lo, hi)) => v.clamp(lo, hi),
        None => v,
    };
    (0..x.nrows())
        .into_par_iter()
        .fold(
            || Sums::new(s.out_n),
            |mut t, i| {
                let row = x.row(i);
                // Codes past K multiply zero weights.
                let mut a = vec![0i32; kp];
                let mut af = vec![0f32; kp];
                for (k, &c) in s.perm.iter().enumerate() {
                    let code = fa.quantize(row[c], &p);
                    a[k] = code;
                    af[k] = ((code - p.zero_point) as f64 * sa) as f32;
                }
                for o in 0..s.out_n {
                    let span = o * kp..(o + 1) * kp;
                    let (acc8, sat8, nsat) = pair_sums(&a, &s.q8[span.clone()]);
                    let acc7 = dot_i(&a, &s.q7[span.clone()]);
                    let accp = dot_i(&a, &s.qp[span.clone()]);
                    let reference = dot_f(&af, &s.w[span]) + s.bias[o];
                    let y8 = sa * s.s8[o] * (acc8 - zp * sum8[o]) as f64 + s.bias[o];
                    let y8s = sa * s.s8[o] * (sat8 - zp * sum8[o]) as f64 + s.bias[o];
                    let y7 = sa * s.s7[o] * (acc7 - zp * sum7[o]) as f64 + s.bias[o];
                    let yp = sa * s.sp[o] * (accp - zp * sump[o]) as f64 + s.bias[o];
                    let r = clamp(reference);
                    t.energy[o] += r * r;
                    t.e8[o] += (clamp(y8) - r).powi(2);
                    t.e8s[o] += (clamp(y8s) - r).powi(2);
                    t.e7[o] += (clamp(y7) - r).powi(2);
                    t.ep[o] += (clamp(yp) - r).powi(2);
                    t.sat += nsat;
                    t.pairs += s.cols.div_ceil(2) as u64;
                }
                t
            },
        )
        .reduce(Sums::default, Sums::add)
}

/// Emulates every site on up to [`SAMPLES`] calibration samples of `data`
/// and gives 7-bit codes to the layers where they cost less than int8's
/// saturation (see the module docs). `model` is the float model the plan
/// belongs to.
pub fn guard(
    model: &Model,
    plan: &mut Plan,
    ranges: &Ranges,
    cfg: &QuantizeConfig,
    opset: i64,
    data: &Bound,
) -> Result<Option<GuardReport>> {
    let start = Instant::now();
    let (ss, skipped) = sites(model, plan, ranges, cfg, opset);
    if ss.is_empty() {
        return Ok(None);
    }
    let (fit, _) = crate::data::fit_and_judge(data.data.samples(), SAMPLES);
    let sub = data.data.pick(&fit);
    let proto = model.to_onnx();
    let names = quench_verify::input_names(&proto);
    let n_out = quench_verify::output_names(&proto).len();
    let mut inputs: Vec<String> = ss.iter().map(|s| s.input.clone()).collect();
    inputs.sort();
    inputs.dedup();
    let runners = Runners::new(&proto, inputs.clone());
    let mut sums: Vec<Sums> = ss.iter().map(|s| Sums::new(s.kernel.out_n)).collect();
    // Dynamic mode: one sample per run (a fixed batch: the batch), as a
    // deployed run feeds DynamicQuantizeLinear; a range over several
    // samples would give smaller codes and hide saturation.
    let dynamic = ss.iter().any(|s| matches!(s.input_q, Input::Dynamic));
    let batches = data
        .feed
        .ranges(sub.samples(), if dynamic { 1 } else { MAX_BATCH });
    let per_batch = ROWS.div_ceil(batches.len().max(1));
    for r in batches {
        let batch = sub.feed(data.feed, r)?;
        let outs = runners.run(&names, &batch)?;
        for (s, acc) in ss.iter().zip(sums.iter_mut()) {
            let Some(ix) = inputs.iter().position(|i| *i == s.input) else {
                continue;
            };
            let x = outs[n_out + ix].to_f32();
            match s.input_q {
                Input::Fixed(p) => {
                    if let Some(rows) = input_rows(&x, &s.rows, s.kernel.cols, per_batch) {
                        *acc = std::mem::take(acc).add(emulate(&s.kernel, &rows, p));
                    }
                }
                Input::Dynamic => {
                    let (lo, hi) = x
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                            (a.min(*v), b.max(*v))
                        });
                    let (Some(p), Some(rows)) = (
                        dynamic_params(lo, hi),
                        input_rows(&x, &s.rows, s.kernel.cols, per_batch),
                    ) else {
                        continue;
                    };
                    *acc = std::mem::take(acc).add(emulate(&s.kernel, &rows, p));
                }
            }
        }
    }
    let mut report = Vec::with_capacity(ss.len());
    let mut before = Vec::new();
    for (s, t) in ss.iter().zip(&sums) {
        if t.pairs == 0 {
            continue;
        }
        let total = |v: &[f64]| v.iter().sum::<f64>();
        let k = &s.kernel;
        let choices: Vec<Codes> = if s.per_channel {
            (0..k.out_n)
                .map(|o| choose(k.limited[o], t.e8[o], t.e8s[o], t.ep[o], t.e7[o]))
                .collect()
        } else {
            let all = choose(
                k.limited.iter().any(|b| *b),
                total(&t.e8),
                total(&t.e8s),
                total(&t.ep),
                total(&t.e7),
            );
            vec![all; k.out_n]
        };
        let rows = |c: Codes| -> Vec<bool> { choices.iter().map(|x| *x == c).collect() };
        let (narrowed, paired) = (rows(Codes::Narrow), rows(Codes::Paired));
        let n_narrow = narrowed.iter().filter(|b| **b).count();
        let n_paired = paired.iter().filter(|b| **b).count();
        let guarded_with = |int8: &[f64]| -> f64 {
            choices
                .iter()
                .enumerate()
                .map(|(o, c)| match c {
                    Codes::Int8 => int8[o],
                    Codes::Paired => t.ep[o],
                    Codes::Narrow => t.e7[o],
                })
                .sum()
        };
        let (guarded, guarded_exact) = (guarded_with(&t.e8s), guarded_with(&t.e8));
        if n_narrow > 0 || n_paired > 0 {
            before.push((s.node, s.format));
        }
        if n_narrow > 0 {
            if s.per_channel {
                plan.weight_narrow.insert(s.node, narrowed.clone());
            } else if let Some(f7) = quench_passes::quantize::one_bit_narrower(s.format) {
                plan.weight_formats.insert(s.node, f7);
            }
        }
        if n_paired > 0 {
            plan.weight_pairs.insert(
                s.node,
                PairLimit {
                    order: k.perm.clone(),
                    row_stride: s.strides.0,
                    col_stride: s.strides.1,
                    rows: paired.clone(),
                    qmax: if s.per_channel {
                        (0..k.out_n)
                            .map(|o| if paired[o] { k.pair_qmax[o] } else { 127 })
                            .collect()
                    } else {
                        vec![k.pair_qmax[0]]
                    },
                },
            );
        }
        report.push(LayerErrors {
            layer: s.name.clone(),
            saturated_pairs: t.sat as f64 / t.pairs as f64,
            energy: total(&t.energy),
            e8: total(&t.e8),
            e8_saturated: total(&t.e8s),
            e7: total(&t.e7),
            e_paired: total(&t.ep),
            e_guarded: guarded,
            e_guarded_exact: guarded_exact,
            channels: s.kernel.out_n,
            narrowed: (0..s.kernel.out_n).filter(|o| narrowed[*o]).collect(),
            paired: (0..s.kernel.out_n).filter(|o| paired[*o]).collect(),
            paired_qmax: (0..s.kernel.out_n)
                .filter(|o| paired[*o])
                .map(|o| s.kernel.pair_qmax[o])
                .collect(),
            moved: n_narrow + n_paired > 0,
        });
    }
    Ok(Some(GuardReport {
        layers: report,
        skipped,
        samples: fit.len(),
        seconds: start.elapsed().as_secs_f64(),
        reverted: None,
        before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair sums against a direct computation: products in pairs
    /// `(2j, 2j + 1)`, each pair clamped to int16, on lengths past one
    /// i32 chunk; and the two extreme pairs ONNX Runtime's `VPMADDUBSW`
    /// clamps.
    #[test]
    fn pair_sums_clamp_each_pair_to_int16() {
        let n = CHUNK * 2 + 10;
        let a: Vec<i32> = (0..n).map(|i| ((i * 97 + 13) % 256) as i32).collect();
        let w: Vec<i32> = (0..n).map(|i| ((i * 31 + 7) % 255) as i32 - 127).collect();
        let (mut exact, mut sat, mut clamped) = (0i64, 0i64, 0u64);
        for j in 0..n / 2 {
            let p = i64::from(a[2 * j] * w[2 * j]) + i64::from(a[2 * j + 1] * w[2 * j + 1]);
            exact += p;
            let c = p.clamp(-32768, 32767);
            sat += c;
            clamped += u64::from(c != p);
        }
        assert!(clamped > 0, "the test values must saturate some pairs");
        assert_eq!(pair_sums(&a, &w), (exact, sat, clamped));
        assert_eq!(dot_i(&a, &w), exact);
        // 255 x 127 twice: 64770 -> 32767; 255 x -127 twice: -64770 -> -32768.
        assert_eq!(pair_sums(&[255, 255], &[127, 127]), (64770, 32767, 1));
        assert_eq!(pair_sums(&[255, 255], &[-127, -127]), (-64770, -32768, 1));
        // 7-bit codes never saturate: 255 x 63 x 2 = 32130.
        assert_eq!(pair_sums(&[255, 255], &[63, 63]), (32130, 32130, 0));
        let f: Vec<f32> = (0..16).map(|i| i as f32 * 0.5).collect();
        let g: Vec<f32> = (0..16).map(|i| 1.0 - i as f32 * 0.25).collect();
        let want: f64 = f.iter().zip(&g).map(|(x, y)| f64::from(x * y)).sum();
        assert!((dot_f(&f, &g) - want).abs() < 1e-4);
        assert_eq!(padded(1), 8);
        assert_eq!(padded(27), 32);
        assert_eq!(padded(32), 32);
    }

    /// The choice per channel: codes that cannot saturate, or whose
    /// saturation costs nothing on the samples, stay int8; otherwise the
    /// lowest error summed over CPUs that saturate and CPUs that do not.
    #[test]
    fn the_choice_weighs_both_kinds_of_cpu() {
        // No pair past the limit: int8 whatever the figures.
        assert_eq!(choose(false, 1.0, 9.0, 0.1, 0.1), Codes::Int8);
        // Saturation costs nothing here (another grid scoring higher on
        // the samples is chance).
        assert_eq!(choose(true, 1.0, 1.0, 0.5, 0.5), Codes::Int8);
        // Saturation costs 0.3; paired costs 0.2 more where sums do not
        // saturate and gains 0.3 where they do: paired.
        assert_eq!(choose(true, 1.0, 1.5, 1.2, 2.0), Codes::Paired);
        // Paired costs 0.3 more for a 0.2 gain: int8.
        assert_eq!(choose(true, 1.0, 1.4, 1.3, 2.0), Codes::Int8);
        // 7-bit below paired: 7-bit (conv1-like saturation).
        assert_eq!(choose(true, 1.0, 100.0, 3.0, 2.0), Codes::Narrow);
        // Ties: int8, then paired.
        assert_eq!(choose(true, 1.0, 3.0, 2.0, 2.0), Codes::Int8);
        assert_eq!(choose(true, 1.0, 5.0, 2.0, 2.0), Codes::Paired);
    }

    /// One output channel of a 2-wide dense layer whose input codes and
    /// weights saturate their single pair: the emulated errors are those
    /// worked out by hand.
    #[test]
    fn emulation_errors_on_one_saturating_pair() {
        // Input: u8 codes 255 with zero point 0 and scale 1/255 (x = 1).
        let p = QuantParams {
            scale: 1.0 / 255.0,
            zero_point: 0,
        };
        let kp = padded(2);
        let mut q8 = vec![0; kp];
        q8[..2].copy_from_slice(&[127, 127]);
        let mut q7 = vec![0; kp];
        q7[..2].copy_from_slice(&[63, 63]);
        let mut w = vec![0f32; kp];
        w[..2].copy_from_slice(&[1.0, 1.0]);
        // Paired: (127, 127) brought onto the limit, (64, 64).
        let mut qp = vec![0; kp];
        qp[..2].copy_from_slice(&[64, 64]);
        let site = Kernel {
            cols: 2,
            perm: vec![0, 1],
            w,
            out_n: 1,
            q8,
            s8: vec![1.0 / 127.0],
            q7,
            s7: vec![1.0 / 63.0],
            qp,
            sp: vec![1.0 / 127.0],
            pair_qmax: vec![127],
            limited: vec![true],
            bias: vec![0.0],
            clamp: None,
        };
        let x = Array2::from_elem((3, 2), 1.0f32);
        let t = emulate(&site, &x, p);
        // Reference 2 per row; int8 exact 2; saturated 32767 / (255 x 127)
        // = 1.01180...; 7-bit exact 2.
        let sat = 32767.0 / (255.0 * 127.0);
        assert!((t.energy[0] - 12.0).abs() < 1e-9, "{:?}", t.energy);
        assert!(t.e8[0] < 1e-9 && t.e7[0] < 1e-9, "{:?} {:?}", t.e8, t.e7);
        assert!(
            (t.e8s[0] - 3.0 * (2.0 - sat) * (2.0 - sat)).abs() < 1e-6,
            "{:?}",
            t.e8s
        );
        // Paired: 128 / 127 per row, exactly (no saturation).
        let paired = 128.0 / 127.0;
        assert!(
            (t.ep[0] - 3.0 * (2.0 - paired) * (2.0 - paired)).abs() < 1e-6,
            "{:?}",
            t.ep
        );
        assert_eq!((t.sat, t.pairs), (3, 3));
        // A clamp at 1.5 (the output grid) hides part of it.
        let site = Kernel {
            clamp: Some((0.0, 1.5)),
            ..site
        };
        let t = emulate(&site, &x, p);
        assert!(
            (t.e8s[0] - 3.0 * (1.5 - sat) * (1.5 - sat)).abs() < 1e-6,
            "{:?}",
            t.e8s
        );
    }
}
