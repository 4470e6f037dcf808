//! End-to-end tests of datasets, the tract runner and metrics on the
//! fixtures in `testdata/`.

#![allow(clippy::unwrap_used)]
// `!(x <= tol)` on purpose: NaN must fail the check.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ndarray::{ArrayD, Axis, IxDyn};
use ndarray_npy::{NpzWriter, WriteNpyExt};
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::{ModelProto, TensorProto};
use quench_verify::{
    prepare_for_tract, Accumulator, ArrayData, DataError, Dataset, Feed, InputFact, ModelInput,
    RunError, Runner, RunnerConfig,
};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata");

fn testdata(rel: &str) -> PathBuf {
    Path::new(TESTDATA).join(rel)
}

fn load(rel: &str) -> ModelProto {
    quench_onnx::load_model(&testdata(rel)).unwrap().model
}

fn f32_input(name: &str, shape: &[usize]) -> InputFact {
    InputFact {
        name: name.into(),
        elem_type: DataType::Float as i32,
        shape: shape.to_vec(),
    }
}

/// Deterministic pseudo-random f32 values in [-1, 1).
fn pseudo_random(shape: &[usize], seed: u64) -> ArrayData {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    ArrayData::F32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

/// Largest |a - b|; NaN (which fails every `<=` assertion) when either side
/// holds a NaN or an infinity. Panics on a shape or element type mismatch.
/// (`fold(0.0, f32::max)` alone would drop a NaN and report 0.)
fn max_abs_diff(a: &ArrayData, b: &ArrayData) -> f32 {
    assert_eq!(a.shape(), b.shape());
    assert_eq!(a.dtype_name(), b.dtype_name());
    let (a, b) = (a.to_f32(), b.to_f32());
    if a.iter().chain(b.iter()).any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn max_abs_diff_is_not_blind_to_nan_and_inf() {
    let v = |x: Vec<f32>| ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[x.len()]), x).unwrap());
    assert_eq!(max_abs_diff(&v(vec![1.0, 2.0]), &v(vec![1.0, 2.5])), 0.5);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let d = max_abs_diff(&v(vec![1.0, 2.0]), &v(vec![1.0, bad]));
        assert!(!(d <= 1e-4), "{bad}: {d}");
        let d = max_abs_diff(&v(vec![bad, 2.0]), &v(vec![1.0, 2.0]));
        assert!(!(d <= 1e-4), "{bad}: {d}");
    }
}

fn argmax_rows(logits: &ArrayD<f32>) -> Vec<usize> {
    logits
        .lanes(Axis(1))
        .into_iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                )
                .0
        })
        .collect()
}

#[test]
fn runs_fixture_models() {
    for (file, input, shape, out_shape) in [
        ("mlp.onnx", "input", vec![3, 32], vec![3, 10]),
        ("cnn_bn.onnx", "input", vec![1, 3, 16, 16], vec![1, 10]),
        ("digits_cnn.onnx", "input", vec![4, 1, 8, 8], vec![4, 10]),
    ] {
        let model = load(file);
        let config = RunnerConfig {
            input_facts: vec![f32_input(input, &shape)],
            extra_outputs: vec![],
        };
        let runner = Runner::new(&model, &config).unwrap();
        assert_eq!(runner.input_names(), vec![input]);
        let out = runner.run(&[pseudo_random(&shape, 7)]).unwrap();
        assert_eq!(out.len(), 1, "{file}");
        assert_eq!(out[0].shape(), &out_shape[..], "{file}");
        assert!(out[0].to_f32().iter().all(|v| v.is_finite()), "{file}");
        // The wrong shape is refused with the input's name.
        let e = runner
            .run(&[pseudo_random(&[2, 2], 1)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("input `input`"), "{e}");
    }
}

#[test]
fn runner_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Runner>();
    assert_send_sync::<Dataset>();
}

#[test]
fn digits_accuracy_matches_onnxruntime() {
    let model = load("digits_cnn.onnx");
    let mut eval = Dataset::load(&testdata("digits/eval")).unwrap();
    let feed = eval.check_against(&ModelInput::from_model(&model)).unwrap();
    assert_eq!(feed, Feed::Batch { fixed: None });
    assert_eq!(eval.samples(), 341);
    assert_eq!(eval.input_names(), vec!["input"]);
    let labels = match eval.extra("labels") {
        Some(ArrayData::I64(l)) => l.clone(),
        other => panic!("labels: {other:?}"),
    };
    assert_eq!(labels.shape(), &[341]);

    // No input facts: tract keeps the model's symbolic batch dimension, so
    // one runner takes batches of any size, including the short last one.
    let runner = Runner::new(&model, &RunnerConfig::default()).unwrap();
    let mut correct = 0;
    let mut seen = 0;
    for range in feed.ranges(eval.samples(), 64) {
        let inputs = eval.feed(feed, range.clone()).unwrap();
        let logits = runner.run(&inputs).unwrap().remove(0).to_f32();
        assert_eq!(logits.shape(), &[range.len(), 10]);
        for (k, pred) in argmax_rows(&logits).into_iter().enumerate() {
            correct += usize::from(pred as i64 == labels[range.start + k]);
            seen += 1;
        }
    }
    assert_eq!(seen, 341);
    assert!(
        (331..=333).contains(&correct),
        "accuracy {correct}/341, onnxruntime has 332/341"
    );
}

#[test]
fn onnx_test_data_matches_runner_output() {
    let model = load("digits_cnn.onnx");
    let mut sets = Dataset::load(&testdata("digits/test_data")).unwrap();
    assert_eq!(sets.samples(), 3);
    let feed = sets.check_against(&ModelInput::from_model(&model)).unwrap();
    // Each set stores input [1,1,8,8]: the model's own batch of one.
    assert_eq!(feed, Feed::Sample);
    let config = RunnerConfig {
        input_facts: vec![f32_input("input", &[1, 1, 8, 8])],
        extra_outputs: vec![],
    };
    let runner = Runner::new(&model, &config).unwrap();
    for i in 0..sets.samples() {
        let inputs = sets.feed(feed, i..i + 1).unwrap();
        assert_eq!(inputs[0].shape(), &[1, 1, 8, 8]);
        let out = runner.run(&inputs).unwrap();
        let expected = sets.expected_outputs(i).unwrap();
        assert_eq!(expected[0].0, "logits");
        let err = max_abs_diff(&out[0], &expected[0].1);
        assert!(err <= 1e-4, "set {i}: max abs err {err}");
    }
    // The test sets are the first three eval samples.
    let mut eval = Dataset::load(&testdata("digits/eval")).unwrap();
    eval.check_against(&ModelInput::from_model(&model)).unwrap();
    let first = &eval.sample_batch(0..1).unwrap()[0].1;
    assert_eq!(first, &sets.sample(0).unwrap()[0].1);
}

#[test]
fn npz_and_npy_directory_hold_the_same_data() {
    let npz = Dataset::load(&testdata("digits/calib.npz")).unwrap();
    let dir = Dataset::load(&testdata("digits/calib")).unwrap();
    assert_eq!(npz.input_names(), vec!["input"]);
    assert_eq!(dir.input_names(), vec!["input"]);
    assert_eq!(npz.samples(), 256);
    assert_eq!(dir.samples(), 256);
    let a = npz.sample_batch(0..256).unwrap();
    let b = dir.sample_batch(0..256).unwrap();
    assert_eq!(a, b);
    assert_eq!(a[0].1.shape(), &[256, 1, 8, 8]);
    assert_eq!(a[0].1.dtype_name(), "f32");
    // A single sample drops the sample axis.
    assert_eq!(dir.sample(5).unwrap()[0].1.shape(), &[1, 8, 8]);
}

#[test]
fn split_keeps_labels_aligned() {
    let model = load("digits_cnn.onnx");
    let mut eval = Dataset::load(&testdata("digits/eval")).unwrap();
    eval.check_against(&ModelInput::from_model(&model)).unwrap();
    let whole = eval.clone();
    let (head, tail) = eval.split(300);
    assert_eq!((head.samples(), tail.samples()), (300, 41));
    assert_eq!(head.extra("labels").unwrap().shape(), &[300]);
    assert_eq!(tail.extra("labels").unwrap().shape(), &[41]);
    assert_eq!(tail.sample(0).unwrap(), whole.sample(300).unwrap());
    assert_eq!(
        tail.extra("labels").unwrap().index_axis0(0),
        whole.extra("labels").unwrap().index_axis0(300)
    );
}

/// Names of the outputs of the first node with `op_type`.
fn first_output_of(model: &ModelProto, op_type: &str) -> String {
    let graph = model.graph.as_ref().unwrap();
    graph
        .node
        .iter()
        .find(|n| n.op_type() == op_type)
        .unwrap()
        .output[0]
        .clone()
}

#[test]
fn extra_outputs_expose_intermediate_tensors() {
    let model = load("digits_cnn.onnx");
    let relu = first_output_of(&model, "Relu");
    let shape = [5, 1, 8, 8];
    let x = pseudo_random(&shape, 3);
    let plain = Runner::new(
        &model,
        &RunnerConfig {
            input_facts: vec![f32_input("input", &shape)],
            extra_outputs: vec![],
        },
    )
    .unwrap();
    let with_extra = Runner::new(
        &model,
        &RunnerConfig {
            input_facts: vec![f32_input("input", &shape)],
            extra_outputs: vec![relu.clone(), "input".into()],
        },
    )
    .unwrap();
    assert_eq!(
        with_extra.output_names(),
        &["logits".to_string(), relu.clone(), "input".to_string()]
    );
    let a = plain.run(std::slice::from_ref(&x)).unwrap();
    let b = with_extra.run(std::slice::from_ref(&x)).unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 3);
    let diff = max_abs_diff(&a[0], &b[0]);
    assert!(
        diff <= 1e-5,
        "graph output changed by exposing `{relu}`: {diff}"
    );
    // First Conv has 8 output channels and pads 1: [5, 8, 8, 8], after Relu.
    assert_eq!(b[1].shape(), &[5, 8, 8, 8]);
    assert!(b[1].to_f32().iter().all(|&v| v >= 0.0));
    assert!(b[1].to_f32().iter().any(|&v| v > 0.0));
    assert_eq!(b[2], x);

    let e = Runner::new(
        &model,
        &RunnerConfig {
            input_facts: vec![],
            extra_outputs: vec!["no_such_tensor".into()],
        },
    )
    .unwrap_err();
    assert!(
        matches!(&e, RunError::UnknownTensor { name } if name == "no_such_tensor"),
        "{e}"
    );
}

/// `if_subgraph.onnx` with the If condition replaced by a constant.
fn with_constant_condition(model: &ModelProto, value: bool) -> ModelProto {
    let mut m = model.clone();
    let g = m.graph.as_mut().unwrap();
    let cond = TensorProto {
        dims: vec![],
        data_type: Some(DataType::Bool as i32),
        name: Some("const_cond".into()),
        raw_data: Some(Bytes::from(vec![u8::from(value)])),
        ..Default::default()
    };
    g.initializer.push(cond);
    let node = g.node.iter_mut().find(|n| n.op_type() == "If").unwrap();
    node.input[0] = "const_cond".into();
    m
}

#[test]
fn prepare_for_tract_folds_constant_if() {
    let model = load("if_subgraph.onnx");
    let shape = vec![1usize, 16];
    let config = RunnerConfig {
        input_facts: vec![f32_input("input", &shape)],
        extra_outputs: vec![],
    };
    let original = Runner::new(&model, &config).unwrap();
    let x = pseudo_random(&shape, 11);
    let sum: f32 = x.to_f32().sum();
    // Inputs whose sum takes each branch in the original model.
    let (pos, neg) = if sum > 0.0 {
        (x.clone(), ArrayData::F32(x.to_f32().mapv(|v| -v)))
    } else {
        (ArrayData::F32(x.to_f32().mapv(|v| -v)), x.clone())
    };
    for (value, input) in [(true, pos), (false, neg)] {
        let variant = with_constant_condition(&model, value);
        let (prepared, notes) = prepare_for_tract(&variant, &[("input".into(), vec![1, 16])]);
        let graph = prepared.graph.as_ref().unwrap();
        assert!(graph.node.iter().all(|n| n.op_type() != "If"), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("folded If") && n.contains(&value.to_string())),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("set the shape of input `input`")),
            "{notes:?}"
        );
        let expect = original.run(std::slice::from_ref(&input)).unwrap();
        let got = Runner::new(&prepared, &RunnerConfig::default())
            .unwrap()
            .run(std::slice::from_ref(&input))
            .unwrap();
        assert_eq!(got[0].shape(), &[1, 8]);
        let diff = max_abs_diff(&expect[0], &got[0]);
        assert!(diff <= 1e-6, "cond {value}: {diff}");
    }
    // A data-dependent condition is left alone.
    let (prepared, notes) = prepare_for_tract(&model, &[]);
    assert_eq!(
        prepared
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type() == "If")
            .count(),
        1
    );
    assert!(notes.iter().all(|n| !n.contains("folded")), "{notes:?}");
}

#[test]
fn prepare_for_tract_drops_value_info_and_output_shapes() {
    let model = load("custom_domain.onnx");
    assert!(!model.graph.as_ref().unwrap().value_info.is_empty());
    let (prepared, notes) = prepare_for_tract(&model, &[("nope".into(), vec![1])]);
    let g = prepared.graph.as_ref().unwrap();
    assert!(g.value_info.is_empty());
    for o in &g.output {
        match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(quench_onnx::proto::type_proto::Value::TensorType(t)) => {
                assert!(t.shape.is_none());
                assert_eq!(t.elem_type(), DataType::Float as i32);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(notes.iter().any(|n| n.contains("value_info")), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("`nope` is not a graph input")),
        "{notes:?}"
    );
}

#[test]
fn unknown_op_is_named() {
    let model = load("custom_domain.onnx");
    let e = Runner::new(&model, &RunnerConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, RunError::Unsupported { ops, .. } if ops.len() == 1 && ops[0].op == "MyOp"),
        "{e:?}"
    );
    assert!(
        msg.contains("`MyOp`") && msg.contains("com.quench.test"),
        "{msg}"
    );
}

fn write_npy(dir: &Path, name: &str, a: &ArrayData) {
    let f = std::fs::File::create(dir.join(format!("{name}.npy"))).unwrap();
    match a {
        ArrayData::F32(x) => x.write_npy(f).unwrap(),
        ArrayData::F64(x) => x.write_npy(f).unwrap(),
        ArrayData::I64(x) => x.write_npy(f).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn f32_array(shape: &[usize]) -> ArrayData {
    pseudo_random(shape, 5)
}

fn inputs(spec: &[(&str, &[Option<i64>])]) -> Vec<ModelInput> {
    spec.iter()
        .map(|(n, s)| ModelInput {
            name: n.to_string(),
            elem_type: DataType::Float as i32,
            shape: Some(s.to_vec()),
        })
        .collect()
}

#[test]
fn dataset_errors_name_the_input() {
    let model_inputs = inputs(&[("a", &[None, Some(4)]), ("b", &[None, Some(2)])]);

    // Missing input.
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path(), "a", &f32_array(&[5, 4]));
    write_npy(dir.path(), "wrong", &f32_array(&[5, 2]));
    let mut ds = Dataset::load(dir.path()).unwrap();
    let e = ds.check_against(&model_inputs).unwrap_err();
    assert!(
        matches!(&e, DataError::MissingInput { missing, .. } if missing == &["b".to_string()]),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("`b`") && msg.contains("`wrong`"), "{msg}");
    // The failed check left the dataset as it was.
    assert_eq!(ds.input_names(), vec!["a", "wrong"]);

    // Wrong element type.
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path(), "a", &f32_array(&[5, 4]));
    write_npy(
        dir.path(),
        "b",
        &ArrayData::F64(ArrayD::zeros(IxDyn(&[5, 2]))),
    );
    let e = Dataset::load(dir.path())
        .unwrap()
        .check_against(&model_inputs)
        .unwrap_err();
    assert!(
        matches!(&e, DataError::DtypeMismatch { name, expected, found, .. } if name == "b" && expected == "f32" && found == "f64"),
        "{e}"
    );

    // Mismatched sample counts.
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path(), "a", &f32_array(&[5, 4]));
    write_npy(dir.path(), "b", &f32_array(&[6, 2]));
    let e = Dataset::load(dir.path())
        .unwrap()
        .check_against(&model_inputs)
        .unwrap_err();
    assert!(
        matches!(&e, DataError::SampleCount { name, count: 6, first, first_count: 5, .. } if name == "b" && first == "a"),
        "{e}"
    );

    // Wrong sample shape.
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path(), "a", &f32_array(&[5, 3]));
    write_npy(dir.path(), "b", &f32_array(&[5, 2]));
    let e = Dataset::load(dir.path())
        .unwrap()
        .check_against(&model_inputs)
        .unwrap_err();
    assert!(
        matches!(&e, DataError::ShapeMismatch { name, .. } if name == "a"),
        "{e}"
    );

    // Good data binds; labels become an extra array.
    let dir = tempfile::tempdir().unwrap();
    write_npy(dir.path(), "b", &f32_array(&[5, 2]));
    write_npy(dir.path(), "a", &f32_array(&[5, 4]));
    write_npy(
        dir.path(),
        "labels",
        &ArrayData::I64(ArrayD::zeros(IxDyn(&[5]))),
    );
    let mut ds = Dataset::load(dir.path()).unwrap();
    // Samples of shape [4] and [2] for model inputs [?,4], [?,2]: batch axis.
    assert_eq!(
        ds.check_against(&model_inputs).unwrap(),
        Feed::Batch { fixed: None }
    );
    assert_eq!(ds.input_names(), vec!["a", "b"]);
    assert_eq!(ds.extras().len(), 1);
    assert_eq!(ds.extra("labels").unwrap().dtype_name(), "i64");
    let batch = ds.feed(Feed::Batch { fixed: None }, 1..3).unwrap();
    assert_eq!(
        (batch[0].shape(), batch[1].shape()),
        (&[2, 4][..], &[2, 2][..])
    );

    // Not a dataset.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Dataset::load(empty.path()).unwrap_err(),
        DataError::NoData { .. }
    ));
}

#[test]
fn npz_written_here_round_trips_and_scalar_inputs_bind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.npz");
    let mut w = NpzWriter::new_compressed(std::fs::File::create(&path).unwrap());
    let x = ArrayD::from_shape_vec(IxDyn(&[3]), vec![1.0f32, 2.0, 3.0]).unwrap();
    w.add_array("scale", &x).unwrap();
    w.add_array(
        "flags",
        &ArrayD::from_shape_vec(IxDyn(&[3]), vec![true, false, true]).unwrap(),
    )
    .unwrap();
    w.finish().unwrap();
    let mut ds = Dataset::load(&path).unwrap();
    let scalar = [ModelInput {
        name: "scale".into(),
        elem_type: DataType::Float as i32,
        shape: Some(vec![]),
    }];
    assert_eq!(ds.check_against(&scalar).unwrap(), Feed::Sample);
    assert_eq!(
        ds.sample(1).unwrap()[0].1,
        ArrayData::F32(ArrayD::from_shape_vec(IxDyn(&[]), vec![2.0]).unwrap())
    );
    assert_eq!(ds.extra("flags").unwrap().dtype_name(), "bool");
    assert!(matches!(
        ds.sample(3).unwrap_err(),
        DataError::OutOfRange {
            index: 3,
            count: 3,
            ..
        }
    ));
}

#[test]
fn metrics_over_a_quantized_like_perturbation() {
    // A test output that differs from the reference by a constant 0.01
    // everywhere: mean and max abs error are both 0.01.
    let model = load("digits_cnn.onnx");
    let runner = Runner::new(&model, &RunnerConfig::default()).unwrap();
    let x = pseudo_random(&[8, 1, 8, 8], 9);
    let reference = runner.run(&[x]).unwrap().remove(0).to_f32();
    let test = reference.mapv(|v| v + 0.01);
    let mut acc = Accumulator::new();
    for i in 0..8 {
        acc.update(
            reference.index_axis(Axis(0), i).insert_axis(Axis(0)),
            test.index_axis(Axis(0), i).insert_axis(Axis(0)),
        )
        .unwrap();
    }
    let m = acc.finish();
    assert!(
        (m.mean_abs_err - 0.01).abs() < 1e-6 && (m.max_abs_err - 0.01).abs() < 1e-6,
        "{m:?}"
    );
    assert_eq!(m.top1.as_ref().map(|t| (t.agree, t.rows)), Some((8, 8)));
    assert!(m.sqnr_db > 20.0 && m.cosine > 0.999, "{m:?}");
}

/// The verification names the sample with the lowest SQNR by its row in the
/// data as the user gave it, through a pick (the held-back split) and
/// batches: checked against each picked sample run alone through both
/// models, its SQNR computed here.
#[test]
fn worst_sample_names_its_row_in_the_users_data() {
    let model = load("digits_cnn.onnx");
    // The test model: the first conv's weights each off by up to 20%.
    let mut perturbed = model.clone();
    let w = perturbed
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 4)
        .unwrap();
    let data = w.raw_data.as_ref().unwrap();
    let scaled: Vec<u8> = data
        .chunks_exact(4)
        .enumerate()
        .flat_map(|(i, b)| {
            let f = 1.0 + 0.2 * (i as f32 * 1.7).sin();
            (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * f).to_le_bytes()
        })
        .collect();
    w.raw_data = Some(Bytes::from(scaled));
    let mut all = Dataset::load(&testdata("digits/eval")).unwrap();
    let feed = all.check_against(&ModelInput::from_model(&model)).unwrap();
    // 18 rows: two batches of at most 16.
    let rows = [
        200, 3, 77, 150, 9, 301, 42, 18, 260, 120, 5, 99, 33, 250, 11, 180, 60, 140,
    ];
    let picked = all.pick(&rows);
    let names = quench_verify::input_names(&model);
    let eval = quench_verify::Evaluator::new(&picked, feed, names);
    let (a, b) = (
        quench_verify::Runners::new(&model, vec![]),
        quench_verify::Runners::new(&perturbed, vec![]),
    );
    let figures = eval
        .compare(
            &[
                quench_verify::Subject::Required(&a, "the FP32 model"),
                quench_verify::Subject::Run(&b),
            ],
            &[(0, 1)],
            1,
        )
        .unwrap();
    let m = figures[0].outputs.as_ref().unwrap()[0].clone();
    let worst = m.worst_sample.clone().unwrap();
    assert_eq!(worst.of, rows.len() as u64);
    assert!(worst.sqnr_db <= m.sqnr_db, "{m:?}");
    // Each row alone, in both models.
    let config = RunnerConfig {
        input_facts: vec![f32_input("input", &[1, 1, 8, 8])],
        extra_outputs: vec![],
    };
    let (ra, rb) = (
        Runner::new(&model, &config).unwrap(),
        Runner::new(&perturbed, &config).unwrap(),
    );
    let own: Vec<(usize, f64)> = rows
        .iter()
        .map(|&row| {
            let x = all.sample_batch(row..row + 1).unwrap().remove(0).1;
            let ya = ra.run(&[x.clone()]).unwrap().remove(0).to_f32();
            let yb = rb.run(&[x]).unwrap().remove(0).to_f32();
            let s: f64 = ya.iter().map(|&v| f64::from(v).powi(2)).sum();
            let e: f64 = ya
                .iter()
                .zip(yb.iter())
                .map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2))
                .sum();
            (row, 10.0 * (s / e).log10())
        })
        .collect();
    let (lowest_row, lowest) =
        own.iter()
            .copied()
            .fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
    // The rows differ: the figure is not a constant.
    assert!(own.iter().any(|&(_, db)| db > lowest + 1.0), "{own:?}");
    assert!(
        own.iter()
            .filter(|&&(r, _)| r != lowest_row)
            .all(|&(_, db)| db > lowest + 0.05),
        "two rows within 0.05 dB of the lowest: {own:?}"
    );
    // The pooled figure's interval over these rows lies between the rows'
    // own figures, measured alone above (a pooled SQNR over any resample is
    // a weighted mean of its rows' in the linear domain), and holds the
    // pooled figure.
    let iv = m.interval.clone().unwrap();
    let highest = own
        .iter()
        .map(|&(_, db)| db)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(iv.samples, rows.len() as u64);
    let [lo, hi] = iv.sqnr_db.unwrap();
    assert!(
        lowest - 0.01 <= lo && lo < m.sqnr_db && m.sqnr_db < hi && hi <= highest + 0.01,
        "interval [{lo:.3}, {hi:.3}] for {:.3}; rows alone {lowest:.3} to {highest:.3}",
        m.sqnr_db
    );
    let named = own.iter().find(|&&(r, _)| r == worst.sample).unwrap();
    assert!(
        (named.1 - worst.sqnr_db).abs() < 0.01 && worst.sqnr_db <= lowest + 0.01,
        "named row {} at {:.3} dB (alone {:.3}); lowest alone: row {lowest_row} at {lowest:.3}",
        worst.sample,
        worst.sqnr_db,
        named.1
    );
}

/// A batch's output is split into samples only along an axis the model
/// declares as the batch: digits' `logits` shares its first dimension with
/// the input; the same output declared sequence-first (`[T, N, 10]`) or
/// without a shape is not split (its figures then have no worst sample).
#[test]
fn only_a_declared_batch_axis_splits_outputs_into_samples() {
    use quench_onnx::proto::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use quench_onnx::proto::type_proto::Value;
    let model = load("digits_cnn.onnx");
    assert_eq!(quench_verify::batch_leading_outputs(&model), vec![true]);
    // The declared type of the (only) output.
    fn out_type(m: &mut ModelProto) -> &mut quench_onnx::proto::type_proto::Tensor {
        match m.graph.as_mut().unwrap().output[0]
            .r#type
            .as_mut()
            .unwrap()
            .value
            .as_mut()
            .unwrap()
        {
            Value::TensorType(t) => t,
            _ => unreachable!(),
        }
    }
    let mut seq_first = model.clone();
    out_type(&mut seq_first).shape.as_mut().unwrap().dim.insert(
        0,
        Dimension {
            value: Some(Dim::DimParam("T".into())),
            ..Default::default()
        },
    );
    assert_eq!(
        quench_verify::batch_leading_outputs(&seq_first),
        vec![false]
    );
    let mut no_shape = model.clone();
    out_type(&mut no_shape).shape = None;
    assert_eq!(quench_verify::batch_leading_outputs(&no_shape), vec![false]);
}
