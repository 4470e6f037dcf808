//! `--method auto`'s FP32 references come from the calibration run
//! (`calibrate::collect_keeping` on `search::search_groups`): they must be
//! what FP32 computes on the search's batches, and the statistics must be
//! those of a calibration run without the groups.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use quench_compile::{calibrate, data::DataPlan, search, Options, Silent};
use quench_ir::Model;
use quench_passes::quantize::{plan, QuantizeConfig};
use quench_verify::Runners;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(p)
}

/// Relative tolerance between FP32 outputs computed by two tract plans of
/// the same function (the calibration copy exposes every activation, so
/// tract fuses less): float rounding only.
const REL_TOL: f32 = 1e-5;

fn max_abs(xs: &[f32]) -> f32 {
    xs.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

#[test]
fn kept_calibration_outputs_are_the_fp32_outputs_of_the_search_batches() {
    let loaded = quench_onnx::load_model(&testdata("digits_cnn.onnx")).unwrap();
    let original = loaded.model.clone();
    let mut m = Model::from_onnx(original.clone()).unwrap();
    quench_compile::run_pipeline(&mut m, &None, &[]).unwrap();
    let pl = plan(&m.graph, &QuantizeConfig::default()).unwrap();
    let tensors = pl.tensors_to_observe(&m.graph);
    let opts = Options {
        calibration: Some(testdata("digits/calib")),
        verify: false,
        ..Options::default()
    };
    let data = DataPlan::new(&opts, &original).unwrap();
    let cal = data.calibration.unwrap();
    let n = cal.data.samples();
    assert!(n >= 32, "the fixture has {n} calibration samples");

    let (fit, judge) = search::search_groups(&cal);
    let judge = judge.expect("32 samples or more: judged on other rows");
    let keep: Vec<Vec<usize>> = fit.iter().chain(&judge).cloned().collect();
    // 16 fitting and 16 judging rows, none twice, all in range.
    let mut all: Vec<usize> = keep.iter().flatten().copied().collect();
    assert_eq!(all.len(), 32);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 32, "a row is in two batches");
    assert!(all.iter().all(|&r| r < n));
    assert!(keep.len() >= 2, "at least one batch per thread");

    let proto = m.to_onnx();
    let with =
        calibrate::collect_keeping(&proto, &cal.data, cal.feed, &tensors, true, &keep, &Silent)
            .unwrap();
    assert_eq!(with.kept.len(), keep.len());

    // The kept outputs against FP32 (the input model) on the same batches.
    let fp = Runners::new(&original, vec![]);
    let names = quench_verify::input_names(&original);
    for (rows, kept) in keep.iter().zip(&with.kept) {
        let inputs = cal.data.pick(rows).feed(cal.feed, 0..rows.len()).unwrap();
        let want = fp.run(&names, &inputs).unwrap();
        assert_eq!(kept.len(), want.len(), "graph outputs of batch {rows:?}");
        for (k, w) in kept.iter().zip(&want) {
            assert_eq!(k.shape(), w.shape(), "batch {rows:?}");
            let (k, w) = (
                k.to_f32().into_raw_vec_and_offset().0,
                w.to_f32().into_raw_vec_and_offset().0,
            );
            let tol = REL_TOL * max_abs(&w).max(1e-6);
            let worst = k
                .iter()
                .zip(w.iter())
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= tol,
                "batch {rows:?}: off by {worst} (tolerance {tol})"
            );
        }
    }

    // The statistics of the run without groups: same counts, same ranges
    // up to float rounding (other batch sizes).
    let (without, _) =
        calibrate::collect(&proto, &cal.data, cal.feed, &tensors, true, &Silent).unwrap();
    assert_eq!(with.stats.len(), without.len());
    for (name, a) in &with.stats {
        let b = &without[name];
        assert_eq!(a.count, b.count, "{name}");
        let (amin, amax) = (a.min, a.max);
        let (bmin, bmax) = (b.min, b.max);
        let tol = REL_TOL * amin.abs().max(amax.abs()).max(1e-6);
        assert!(
            (amin - bmin).abs() <= tol && (amax - bmax).abs() <= tol,
            "{name}: [{amin}, {amax}] against [{bmin}, {bmax}]"
        );
    }
}

/// An f32 tensor proto held in `float_data`.
fn f32_tensor(name: &str, dims: &[i64], seed: u64) -> quench_onnx::proto::TensorProto {
    let n: i64 = dims.iter().product();
    let mut s = seed;
    let float_data = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (((s >> 40) as f32) / (1u64 << 24) as f32 - 0.5) * 0.6
        })
        .collect();
    quench_onnx::proto::TensorProto {
        name: Some(name.into()),
        data_type: Some(quench_onnx::proto::tensor_proto::DataType::Float as i32),
        dims: dims.to_vec(),
        float_data,
        ..Default::default()
    }
}

/// A tensor value info of `elem` with `dims` (`None`: the symbolic `N`).
fn vi(
    name: &str,
    elem: quench_onnx::proto::tensor_proto::DataType,
    dims: &[Option<i64>],
) -> quench_onnx::proto::ValueInfoProto {
    use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
    use quench_onnx::proto::type_proto::{Tensor, Value};
    use quench_onnx::proto::*;
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => dimension::Value::DimValue(*v),
                                None => dimension::Value::DimParam("N".into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A default-domain node named after its one output.
fn node(
    op: &str,
    inputs: &[&str],
    out: &str,
    attribute: Vec<quench_onnx::proto::AttributeProto>,
) -> quench_onnx::proto::NodeProto {
    quench_onnx::proto::NodeProto {
        op_type: Some(op.into()),
        name: Some(out.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute,
        ..Default::default()
    }
}

/// `input` [N,16] reshaped to the constant shape [1,16], MatMul, Relu,
/// MatMul: tract runs it on batches of one sample only.
/// A model of `graph` at opset 17 (IR 8).
fn opset17(graph: quench_onnx::proto::GraphProto) -> quench_onnx::proto::ModelProto {
    use quench_onnx::proto::*;
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn batch_one_model() -> quench_onnx::proto::ModelProto {
    use quench_onnx::proto::tensor_proto::DataType;
    use quench_onnx::proto::*;
    let shape = TensorProto {
        name: Some("shape".into()),
        data_type: Some(DataType::Int64 as i32),
        dims: vec![2],
        int64_data: vec![1, 16],
        ..Default::default()
    };
    opset17(GraphProto {
        name: Some("g".into()),
        node: vec![
            node("Reshape", &["input", "shape"], "flat", vec![]),
            node("MatMul", &["flat", "w1"], "h", vec![]),
            node("Relu", &["h"], "r", vec![]),
            node("MatMul", &["r", "w2"], "output", vec![]),
        ],
        input: vec![vi("input", DataType::Float, &[None, Some(16)])],
        initializer: vec![
            shape,
            f32_tensor("w1", &[16, 24], 1),
            f32_tensor("w2", &[24, 10], 2),
        ],
        output: vec![vi("output", DataType::Float, &[Some(1), Some(10)])],
        ..Default::default()
    })
}

/// Writes pseudo-random f32 values of `shape` as `<dir>/<name>.npy`
/// (format 1.0).
fn write_npy(dir: &std::path::Path, name: &str, shape: &[usize], seed: u64) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let t = f32_tensor("x", &[shape.iter().product::<usize>() as i64], seed);
    for v in t.float_data {
        bytes.extend_from_slice(&(v * 5.0).to_le_bytes());
    }
    std::fs::write(dir.join(format!("{name}.npy")), bytes).unwrap();
}

/// A model tract runs one sample at a time only, with fewer than 16
/// calibration samples (every row in one of the search's batches of one
/// sample): calibration must fail at its own batch size and fall back to
/// weight-only, as it does with `--method minmax` (it used to calibrate
/// one sample at a time with `--method auto` only, and the written model
/// depended on the method and on the thread count).
#[test]
fn kept_batches_do_not_let_calibration_skip_its_own_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch_one.onnx");
    quench_onnx::save_model(&batch_one_model(), &path, &Default::default()).unwrap();
    let data = dir.path().join("calib");
    std::fs::create_dir(&data).unwrap();
    write_npy(&data, "input", &[8, 16], 7);
    let loaded = quench_onnx::load_model(&path).unwrap();
    let mut modes = Vec::new();
    for method in [quench_compile::Method::Auto, quench_compile::Method::Minmax] {
        let opts = Options {
            calibration: Some(data.clone()),
            verify: false,
            method,
            ..Options::default()
        };
        let out = quench_compile::compile(&loaded, &opts, &Silent).unwrap();
        modes.push((out.report.mode, out.report.calibration_samples));
    }
    assert_eq!(
        modes[0].0,
        quench_passes::quantize::Mode::WeightOnly,
        "auto: {modes:?}"
    );
    assert_eq!(modes[0], modes[1], "auto against minmax");
}

/// An f16 model at opset 17 keeps every activation float (f16 Q/DQ needs
/// opset 19), so the search's twin computes what FP32 computes: every
/// method scores the 300 dB cap. With references from the calibration
/// copy (which rounds the exposed activations to f16) they scored 65.7 dB.
#[test]
fn f16_models_take_their_references_from_the_fp32_plan() {
    let loaded = quench_onnx::load_model(&testdata("fp16/mlp_fp16_opset17.onnx")).unwrap();
    let opts = Options {
        calibration: Some(testdata("fp16/calib")),
        verify: false,
        ..Options::default()
    };
    let out = quench_compile::compile(&loaded, &opts, &Silent).unwrap();
    let auto = out.report.auto_ranges.expect("method auto ran");
    assert!(!auto.methods.is_empty());
    for (method, db, _) in &auto.methods {
        assert!(*db >= 299.0, "{method}: {db} dB against FP32");
    }
}

/// `opset/resize_opset10.onnx` is upgraded to opset 13 for quantization,
/// and tract computes the upgraded Resize differently from the original
/// one. The search must measure against what verification measures
/// against (the input model): its score of the ranges it chose is then
/// near the written model's verified SQNR. With references from the
/// calibration run (the upgraded model) it judged 300 dB a model verified
/// at 6.7 dB.
#[test]
fn an_upgraded_opset_takes_references_from_the_input_model() {
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path(), "x", &[40, 2, 3, 5], 11);
    let loaded = quench_onnx::load_model(&testdata("opset/resize_opset10.onnx")).unwrap();
    let opts = Options {
        calibration: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let out = quench_compile::compile(&loaded, &opts, &Silent).unwrap();
    let auto = out.report.auto_ranges.expect("method auto ran");
    let verified = out.report.verification.expect("verified").outputs[0]
        .file
        .as_ref()
        .expect("the written model ran")
        .sqnr_db;
    assert!(
        (auto.auto_db.min(auto.minmax_db) - verified).abs() <= 3.0,
        "search {} dB (min/max {} dB), verified {verified} dB",
        auto.auto_db,
        auto.minmax_db
    );
}

/// `input` [N,16] -> MatMul, Relu, MatMul -> `logits` [N,3], and `label`
/// [N]: the class name (a string) of the ArgMax, gathered from a string
/// constant.
fn string_output_model() -> quench_onnx::proto::ModelProto {
    use quench_onnx::proto::tensor_proto::DataType;
    use quench_onnx::proto::*;
    let int_attr = |name: &str, i: i64| AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    };
    let labels = TensorProto {
        name: Some("labels".into()),
        data_type: Some(DataType::String as i32),
        dims: vec![3],
        string_data: vec![
            b"cat".as_slice().into(),
            b"dog".as_slice().into(),
            b"fox".as_slice().into(),
        ],
        ..Default::default()
    };
    opset17(GraphProto {
        name: Some("g".into()),
        node: vec![
            node("MatMul", &["input", "w1"], "h", vec![]),
            node("Relu", &["h"], "r", vec![]),
            node("MatMul", &["r", "w2"], "logits", vec![]),
            node(
                "ArgMax",
                &["logits"],
                "idx",
                vec![int_attr("axis", 1), int_attr("keepdims", 0)],
            ),
            node(
                "Gather",
                &["labels", "idx"],
                "label",
                vec![int_attr("axis", 0)],
            ),
        ],
        input: vec![vi("input", DataType::Float, &[None, Some(16)])],
        initializer: vec![
            labels,
            f32_tensor("w1", &[16, 24], 3),
            f32_tensor("w2", &[24, 3], 4),
        ],
        output: vec![
            vi("logits", DataType::Float, &[None, Some(3)]),
            vi("label", DataType::String, &[None]),
        ],
        ..Default::default()
    })
}

/// Calibration reads back the graph outputs of the search's batches only:
/// a graph output `ArrayData` cannot hold (a string) must not make
/// calibration fail. It did (every calibration batch copied the graph
/// outputs), and the model fell back to weight-only with `--method auto`
/// while `--method minmax` quantized it statically.
#[test]
fn a_string_graph_output_does_not_stop_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("string_output.onnx");
    quench_onnx::save_model(&string_output_model(), &path, &Default::default()).unwrap();
    let data = dir.path().join("calib");
    std::fs::create_dir(&data).unwrap();
    write_npy(&data, "input", &[40, 16], 9);
    let loaded = quench_onnx::load_model(&path).unwrap();
    for method in [quench_compile::Method::Auto, quench_compile::Method::Minmax] {
        let opts = Options {
            calibration: Some(data.clone()),
            verify: false,
            method,
            ..Options::default()
        };
        let out = quench_compile::compile(&loaded, &opts, &Silent).unwrap();
        assert_eq!(
            out.report.mode,
            quench_passes::quantize::Mode::Static,
            "{method:?}"
        );
    }
}
