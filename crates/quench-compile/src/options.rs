//! What a compile is asked to do: plain data (serde), so a recipe file, the
//! command line and a Python binding all fill the same struct.
//!
//! Invariant: `Options::default()` is the command line's default
//! (`quench compile MODEL -o OUT` with no other flag); every field is
//! validated by [`Options::validate`] before anything runs.

use std::path::PathBuf;

use quench_calib::{QuantFormat, RangeMethod};
use quench_passes::prune::PruneTarget;
use quench_passes::quantize::{ActType, Mode, QuantizeConfig, WeightType};
use serde::{Deserialize, Serialize};

/// How activation ranges are chosen from calibration statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Observed min/max (only a running min/max is kept).
    Minmax,
    /// A percentile of the values (see [`Options::percentile`]).
    Percentile,
    /// TensorRT's KL search, guarded by MSE (see [`Options::entropy_guard`]).
    Entropy,
    /// Minimum expected squared rounding plus clipping error.
    Mse,
    /// The ranges that cost the least at the model output: one method for
    /// all (min/max, percentiles, MSE, entropy) and outliers left float,
    /// measured on calibration samples ([`crate::search`]); min/max
    /// without samples. The default.
    #[default]
    Auto,
}

/// How `--prune` spreads a sparsity fraction over layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMethod {
    /// The same sparsity in every prunable layer.
    #[default]
    Layer,
    /// One threshold over all prunable layers, on magnitudes divided by
    /// each layer's RMS.
    Global,
    /// Per-layer sparsities chosen from the output SQNR measured in tract
    /// with each layer pruned alone (needs data).
    Sensitivity,
}

/// Magnitude pruning settings (see `quench compile --help`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneOptions {
    pub target: PruneTarget,
    #[serde(default)]
    pub method: PruneMethod,
    /// Also prune the first and last compute layers, depthwise convolutions
    /// and small layers.
    #[serde(default)]
    pub all_layers: bool,
    /// Never prune these (node or weight names).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Everything a compile can be asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Calibration samples (a directory of `<input>.npy`, an `.npz`, or an
    /// ONNX `test_data_set_*` directory).
    pub calibration: Option<PathBuf>,
    /// Ranges from `quench calibrate` instead of a calibration run.
    pub calibration_table: Option<PathBuf>,
    /// Evaluation samples; without, part of the calibration samples is held
    /// back (see [`crate::data`]).
    pub eval: Option<PathBuf>,
    pub mode: Mode,
    pub method: Method,
    /// Percentile for [`Method::Percentile`], in `(0, 100]`.
    pub percentile: f64,
    /// [`Method::Entropy`]: use the MSE range where the KL threshold's
    /// expected squared error is more than this many times larger (0: off).
    pub entropy_guard: f64,
    pub activations: ActType,
    pub weights: WeightType,
    /// The default activation format, overriding `activations` (any
    /// [`QuantFormat`]: 2-16-bit integers, float8).
    pub activation_format: Option<QuantFormat>,
    /// The default weight scheme, overriding `weights` (the granularity
    /// still follows `per_channel` / `weight_block_size`).
    pub weight_format: Option<QuantFormat>,
    /// Weights in blocks of this many elements along the reduction axis
    /// (opset 21), instead of per channel.
    pub weight_block_size: Option<usize>,
    /// One weight scale per output channel (needs opset 13; upgraded when
    /// safe).
    pub per_channel: bool,
    pub exclude_nodes: Vec<String>,
    pub exclude_op_types: Vec<String>,
    /// Also quantize Softmax inputs.
    pub quantize_softmax_inputs: bool,
    /// Clamp each activation range to where its consumers are not flat
    /// (Relu, Clip, HardSwish, HardSigmoid, Tanh, Sigmoid saturation):
    /// exact, on by default.
    pub consumer_ranges: bool,
    /// [`Method::Auto`]: leave float each activation that alone causes at
    /// least half of the output error ([`crate::search::OUTLIER_DB`]).
    pub float_outliers: bool,
    /// [`Method::Auto`]: for outputs assembled from parts (a detector's
    /// boxes and scores), give blocks of activations another range method
    /// where that raises the parts' score ([`crate::search`], step 3).
    pub part_ranges: bool,
    /// Static mode: lower each HardSwish between uint8 Q/DQ to an Add and
    /// a Mul on Q/DQ pairs in the written model (ONNX Runtime's QLinearAdd
    /// and QLinearMul; [`quench_passes::lower_hard_swish`]). On by default.
    pub lower_hard_swish: bool,
    /// Round weights with their rounding error compensated on the later
    /// input columns, weighted by the calibration inputs' Hessian (GPTQ's
    /// method; [`crate::rounding`]).
    pub error_compensated_rounding: bool,
    /// Cross-layer equalization of Conv -> (Relu) -> Conv weight ranges
    /// before calibration (the `equalize` pass).
    pub equalize: bool,
    /// Empirical bias correction of quantized compute layers (see
    /// [`crate::bias`]); off by default, applied when calibration data is
    /// given.
    pub bias_correction: bool,
    /// The saturation guard ([`crate::saturation`]): 7-bit weight codes
    /// for the int8 layers whose sums ONNX Runtime's u8 x s8 kernels would
    /// saturate on x86 CPUs without VNNI, where that costs more than the
    /// lost bit; on by default, needs calibration samples.
    pub saturation_guard: bool,
    /// SmoothQuant for MatMuls fed by a LayerNormalization (see
    /// [`crate::smooth`]); on by default.
    pub smooth_quant: bool,
    /// Search SmoothQuant's strength among 0.25, 0.5 and 0.75 (instead of
    /// 0.5 alone).
    #[serde(default)]
    pub smooth_quant_search: bool,
    /// Graph passes by name (`None`: the default pipeline; empty: none).
    pub passes: Option<Vec<String>>,
    /// Record the IR text after these passes (in [`crate::Outcome::dumps`]).
    pub dump_after: Vec<String>,
    /// Fail the compile's check when an output's SQNR is below this (dB).
    pub min_sqnr: Option<f64>,
    /// Fail the compile's check when top-1 agreement is below this.
    pub min_top1: Option<f64>,
    /// Leave the activations that cost the most at the output float, fewest
    /// first, until the output SQNR on evaluation data reaches this (dB).
    pub target_sqnr: Option<f64>,
    /// Raise the costliest activations (as for `target_sqnr`) until top-1
    /// agreement with FP32 on the class-score outputs of the evaluation
    /// data has dropped by at most this many percentage points.
    pub max_top1_drop: Option<f64>,
    /// Raise the costliest activations until accuracy against the
    /// evaluation data's integer `labels` is at most this many percentage
    /// points below FP32's.
    pub max_accuracy_drop: Option<f64>,
    /// With a target: a tensor left float is tried at 16 bits (the default
    /// activation format widened, opset 21) and kept there when the
    /// targets still hold.
    pub mixed_int16: bool,
    /// Run verification in tract.
    pub verify: bool,
    /// Measure every quantized activation's own error (static mode).
    pub explain: bool,
    /// Measure the per-tensor table (as `explain`, which it implies) on
    /// this one evaluation sample alone, named by its row in the data as
    /// given (as the verification's worst sample is). A row the evaluation
    /// data does not hold is an error before anything runs (in static mode
    /// with verification; elsewhere a note says there is nothing to
    /// explain).
    pub explain_sample: Option<usize>,
    /// Error instead of falling back to weight-only when tract cannot run
    /// the model for calibration.
    pub no_fallback: bool,
    /// Passes only; the output stays FP32.
    pub no_quantize: bool,
    pub prune: Option<PruneOptions>,
}

impl Default for Options {
    fn default() -> Self {
        let q = QuantizeConfig::default();
        Options {
            calibration: None,
            calibration_table: None,
            eval: None,
            mode: q.mode,
            method: Method::Auto,
            percentile: 99.999,
            entropy_guard: quench_calib::ENTROPY_GUARD_RATIO,
            activations: q.activations,
            weights: q.weights,
            activation_format: None,
            weight_format: None,
            weight_block_size: None,
            per_channel: q.per_channel,
            exclude_nodes: Vec::new(),
            exclude_op_types: Vec::new(),
            quantize_softmax_inputs: !q.keep_softmax_inputs_float,
            consumer_ranges: true,
            float_outliers: true,
            part_ranges: true,
            lower_hard_swish: true,
            error_compensated_rounding: false,
            equalize: false,
            bias_correction: false,
            saturation_guard: true,
            smooth_quant: true,
            smooth_quant_search: false,
            passes: None,
            dump_after: Vec::new(),
            min_sqnr: None,
            min_top1: None,
            target_sqnr: None,
            max_top1_drop: None,
            max_accuracy_drop: None,
            mixed_int16: true,
            verify: true,
            explain: false,
            explain_sample: None,
            no_fallback: false,
            no_quantize: false,
            prune: None,
        }
    }
}

impl Options {
    /// Checks every value; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: Option<f64>| match v {
            Some(x) if !x.is_finite() => Err(format!("{name} {x}: must be a finite number")),
            _ => Ok(()),
        };
        if !(self.percentile > 0.0 && self.percentile <= 100.0) {
            return Err(format!(
                "--percentile {}: must be in (0, 100]",
                self.percentile
            ));
        }
        if !(self.entropy_guard.is_finite() && self.entropy_guard >= 0.0) {
            return Err(format!(
                "--entropy-guard {}: must be 0 (off) or a positive ratio",
                self.entropy_guard
            ));
        }
        finite("--min-sqnr", self.min_sqnr)?;
        finite("--min-top1", self.min_top1)?;
        finite("--target-sqnr", self.target_sqnr)?;
        for (name, v) in [
            ("--max-top1-drop", self.max_top1_drop),
            ("--max-accuracy-drop", self.max_accuracy_drop),
        ] {
            if let Some(x) = v {
                if !(x.is_finite() && (0.0..=100.0).contains(&x)) {
                    return Err(format!("{name} {x}: percentage points in [0, 100]"));
                }
            }
        }
        if let Some(t) = self.min_top1 {
            if !(0.0..=1.0).contains(&t) {
                return Err(format!("--min-top1 {t}: a fraction in [0, 1]"));
            }
        }
        Ok(())
    }

    /// The quantizer's settings for these options (before any fallback).
    pub fn quantize_config(&self) -> QuantizeConfig {
        QuantizeConfig {
            mode: self.mode,
            activations: self.activations,
            weights: self.weights,
            per_channel: self.per_channel,
            exclude_nodes: self.exclude_nodes.clone(),
            exclude_op_types: self.exclude_op_types.clone(),
            keep_softmax_inputs_float: !self.quantize_softmax_inputs,
            activation_format: self.activation_format,
            weight_format: self.weight_format,
            weight_block_size: self.weight_block_size,
            ..QuantizeConfig::default()
        }
    }

    /// The mixed-precision targets asked (`target_sqnr`, `max_top1_drop`,
    /// `max_accuracy_drop`).
    pub fn targets(&self) -> crate::mixed::Targets {
        crate::mixed::Targets {
            sqnr_db: self.target_sqnr,
            max_top1_drop: self.max_top1_drop,
            max_accuracy_drop: self.max_accuracy_drop,
        }
    }

    /// The range method with its parameter.
    pub fn range_method(&self) -> RangeMethod {
        match self.method {
            Method::Minmax => RangeMethod::MinMax,
            Method::Percentile => RangeMethod::Percentile(self.percentile),
            Method::Entropy => RangeMethod::Entropy,
            Method::Mse => RangeMethod::Mse,
            // The starting point of the search (and its fallback).
            Method::Auto => RangeMethod::MinMax,
        }
    }

    /// Whether static calibration runs on data (not a table, not skipped).
    pub(crate) fn calibrates_on_data(&self) -> bool {
        !self.no_quantize
            && self.mode == Mode::Static
            && self.calibration.is_some()
            && self.calibration_table.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mixed_precision_targets_fill_from_a_recipe_and_are_checked() {
        let o: Options = serde_json::from_str(
            r#"{"max_top1_drop": 1.5, "max_accuracy_drop": 0.5, "mixed_int16": false}"#,
        )
        .unwrap();
        let t = o.targets();
        assert_eq!(
            (t.sqnr_db, t.max_top1_drop, t.max_accuracy_drop),
            (None, Some(1.5), Some(0.5))
        );
        assert!(t.any() && !o.mixed_int16);
        assert_eq!(t.flags(), "--max-top1-drop 1.5 --max-accuracy-drop 0.5");
        // The command line's defaults: no target, 16 bits tried.
        let d = Options::default();
        assert!(!d.targets().any() && d.mixed_int16);
        for bad in [-1.0, 101.0, f64::NAN] {
            let o = Options {
                max_top1_drop: Some(bad),
                ..Options::default()
            };
            assert!(o.validate().unwrap_err().contains("--max-top1-drop"));
            let o = Options {
                max_accuracy_drop: Some(bad),
                ..Options::default()
            };
            assert!(o.validate().unwrap_err().contains("--max-accuracy-drop"));
        }
    }
}
