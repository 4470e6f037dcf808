//! Issue 12 regressions through the command line, on models built here:
//! the BERT attention-mask pattern (`And(ConstantOfShape(value=bool), mask)`)
//! must come out of `compile --no-quantize` with a bool constant (it was
//! written as f32, an invalid model), and `inspect` must not panic or blow
//! up on constant subgraphs that crashed the evaluator.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use prost::bytes::Bytes;
use prost::Message;
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quench_onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use quench_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

fn vi(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(dimension::Value::DimValue(*d)),
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

fn raw(name: &str, dt: DataType, dims: &[i64], bytes: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dt as i32),
        dims: dims.to_vec(),
        raw_data: Some(Bytes::from(bytes)),
        ..Default::default()
    }
}

fn i64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    raw(
        name,
        DataType::Int64,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn node(op: &str, name: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            input: inputs,
            initializer: inits,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quench(args: &[&str]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(args)
        .output()
        .expect("run quench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, m: &ModelProto) -> String {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).expect("write model");
    p.to_string_lossy().into_owned()
}

#[test]
fn bool_constant_of_shape_mask_stays_bool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let value = AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(raw("value", DataType::Bool, &[1], vec![1])),
        ..Default::default()
    };
    let m = model(
        vec![
            node(
                "ConstantOfShape",
                "ones",
                &["shape"],
                "ones_out",
                vec![value],
            ),
            node("And", "attn_mask_and", &["ones_out", "mask"], "y", vec![]),
        ],
        vec![vi("mask", DataType::Bool, &[1, 4])],
        vec![i64s("shape", &[2], &[1, 4])],
        vec![vi("y", DataType::Bool, &[1, 4])],
    );
    let input = write(dir.path(), "mask.onnx", &m);
    let out = dir.path().join("out.onnx");
    let (code, text) = quench(&[
        "compile",
        &input,
        "-o",
        out.to_str().expect("path"),
        "--no-quantize",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let written = quench_onnx::load_model(&out).expect("output loads").model;
    let g = written.graph.as_ref().expect("graph");
    let and = g
        .node
        .iter()
        .find(|n| n.op_type() == "And")
        .expect("And kept");
    for i in &and.input {
        let elem = g
            .initializer
            .iter()
            .find(|t| t.name() == i)
            .map(|t| t.data_type())
            .or_else(|| {
                g.input.iter().find(|v| v.name() == i).and_then(|v| {
                    match v.r#type.as_ref()?.value.as_ref()? {
                        TypeValue::TensorType(t) => t.elem_type,
                        _ => None,
                    }
                })
            });
        assert_eq!(elem, Some(DataType::Bool as i32), "And input `{i}`");
    }
    // The same model passes the type check.
    let ir = quench_ir::Model::from_onnx(written).expect("import");
    assert_eq!(quench_passes::typecheck::check(&ir.graph, 17), Ok(()));
}

#[test]
fn inspect_survives_constant_subgraphs_that_crashed_the_evaluator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = |name: &str, dims: &[i64], v: &[f32]| {
        raw(
            name,
            DataType::Float,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    };
    let ints = |name: &str, v: &[i64]| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    };
    let n = 60_000usize;
    let cases: Vec<(&str, Vec<NodeProto>, Vec<TensorProto>)> = vec![
        (
            "min_div",
            vec![node("Div", "d", &["a", "b"], "c", vec![])],
            vec![i64s("a", &[1], &[i64::MIN]), i64s("b", &[1], &[-1])],
        ),
        (
            "gather_scalar",
            vec![node("Gather", "g", &["a", "b"], "c", vec![])],
            vec![f("a", &[], &[1.0]), i64s("b", &[], &[0])],
        ),
        (
            "squeeze_scalar",
            vec![node("Squeeze", "s", &["a", "b"], "c", vec![])],
            vec![f("a", &[], &[1.0]), i64s("b", &[1], &[0])],
        ),
        (
            "cos_2p32_squared",
            vec![node("ConstantOfShape", "k", &["a"], "c", vec![])],
            vec![i64s("a", &[2], &[1 << 32, 1 << 32])],
        ),
        (
            "outer_add_60000",
            vec![node("Add", "add", &["a", "b"], "c", vec![])],
            vec![
                f("a", &[1, n as i64], &vec![1.0; n]),
                f("b", &[n as i64, 1], &vec![2.0; n]),
            ],
        ),
        (
            "transpose_0_0",
            vec![node(
                "Transpose",
                "t",
                &["a"],
                "c",
                vec![ints("perm", &[0, 0])],
            )],
            vec![f("a", &[2, 3], &[0.0; 6])],
        ),
    ];
    for (name, mut nodes, inits) in cases {
        // A consumer with a graph input, so the constant node is neither a
        // graph output nor removed before folding.
        nodes.push(node("Add", "use", &["c", "x"], "y", vec![]));
        let elem = if name == "min_div" {
            DataType::Int64
        } else {
            DataType::Float
        };
        let m = model(
            nodes,
            vec![vi("x", elem, &[])],
            inits,
            vec![ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
        );
        let p = write(dir.path(), &format!("{name}.onnx"), &m);
        let start = Instant::now();
        let (code, text) = quench(&["inspect", &p]);
        let secs = start.elapsed().as_secs_f64();
        assert!(!text.contains("panicked"), "{name}: {text}");
        assert!(code == 0 || code == 1, "{name}: exit {code}: {text}");
        assert!(secs < 10.0, "{name}: inspect took {secs:.1} s");
    }
}

#[test]
fn weight_only_outputs_pass_the_type_check() {
    // What the quantizer writes (Q/DQ types per opset, after any opset
    // upgrade) must satisfy quench_passes::typecheck, so the driver can
    // refuse a model that does not.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for name in [
        "mlp",
        "cnn_bn",
        "transformer",
        "resnet_tiny",
        "silu_cnn",
        "mobilenet_tiny",
        "digits_cnn",
    ] {
        let input = root.join(format!("{name}.onnx"));
        let out = dir.path().join(format!("{name}.onnx"));
        let (code, text) = quench(&[
            "compile",
            input.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
            "--mode",
            "weight-only",
        ]);
        assert_eq!(code, 0, "{name}: {text}");
        let m = quench_ir::Model::from_onnx(quench_onnx::load_model(&out).expect("load").model)
            .expect("import");
        assert!(
            m.graph
                .node_ids()
                .iter()
                .any(|n| m.graph.node(*n).op_type() == "DequantizeLinear"),
            "{name}: nothing quantized"
        );
        let opset = m.default_opset().unwrap_or(0);
        if let Err(errs) = quench_passes::typecheck::check(&m.graph, opset) {
            panic!("{name} (opset {opset}): {errs:?}");
        }
    }
    // Static int8 (Q/DQ on activations too), with the digits calibration set.
    let out = dir.path().join("digits_static.onnx");
    let (code, text) = quench(&[
        "compile",
        root.join("digits_cnn.onnx").to_str().expect("path"),
        "-c",
        root.join("digits/calib.npz").to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{text}");
    let m = quench_ir::Model::from_onnx(quench_onnx::load_model(&out).expect("load").model)
        .expect("import");
    let q = m
        .graph
        .node_ids()
        .iter()
        .filter(|n| m.graph.node(**n).op_type() == "QuantizeLinear")
        .count();
    assert!(q > 3, "{q} QuantizeLinear nodes");
    let opset = m.default_opset().unwrap_or(0);
    assert_eq!(quench_passes::typecheck::check(&m.graph, opset), Ok(()));
}

fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    raw(
        name,
        DataType::Float,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

/// A tract panic is contained and reported as an error naming the phase
/// and node; it must not also be printed by the default panic hook
/// ("thread 'main' panicked at .../gather.rs", which a user reads as a
/// crash). Found by the adversarial pass: token ids past the embedding
/// table in the evaluation data (exit 0, verification reported as failed,
/// and a panic message with a backtrace on stderr).
#[test]
fn contained_tract_panics_print_no_panic_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let emb: Vec<f32> = (0..50 * 8).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
    let w: Vec<f32> = (0..64).map(|i| (i % 5) as f32 * 0.2 - 0.4).collect();
    let m = model(
        vec![
            node("Gather", "embed", &["emb", "ids"], "e", vec![]),
            node("MatMul", "proj", &["e", "w"], "y", vec![]),
        ],
        vec![vi("ids", DataType::Int64, &[1, 5])],
        vec![f32s("emb", &[50, 8], &emb), f32s("w", &[8, 8], &w)],
        vec![vi("y", DataType::Float, &[1, 5, 8])],
    );
    let input = write(dir.path(), "tokens.onnx", &m);
    let cal = dir.path().join("cal");
    let eval = dir.path().join("eval");
    for (d, id) in [(&cal, 3_i64), (&eval, 99)] {
        std::fs::create_dir(d).expect("mkdir");
        let ids = ndarray::Array3::<i64>::from_shape_fn((4, 1, 5), |(s, _, k)| {
            if id == 99 {
                id
            } else {
                (s as i64 * 5 + k as i64 + id) % 50
            }
        });
        ndarray_npy::write_npy(d.join("ids.npy"), &ids).expect("npy");
    }
    let out = dir.path().join("out.onnx");
    let (code, text) = quench(&[
        "compile",
        &input,
        "-c",
        cal.to_str().expect("path"),
        "--eval",
        eval.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(code == 0 || code == 1, "{code}: {text}");
    // The error (or note) still says what happened, once.
    assert!(text.contains("tract panicked"), "{text}");
    assert!(!text.contains("panicked at"), "{text}");
    assert!(!text.contains("RUST_BACKTRACE"), "{text}");
}

/// `--method auto` counts samples, not rows of a fixed first input
/// dimension, and says when the judging samples are the fitting ones
/// (fewer than 16). Found by the adversarial pass: 8 samples of an [8, 3]
/// input were reported as "64 calibration samples ... judged on 64 other
/// samples".
#[test]
fn auto_reports_samples_not_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<f32> = (0..12).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
    let w2: Vec<f32> = (0..8).map(|i| (i % 3) as f32 * 0.5 - 0.4).collect();
    let m = model(
        vec![
            node("MatMul", "mm", &["x", "w"], "m", vec![]),
            node("Relu", "relu", &["m"], "r", vec![]),
            node("MatMul", "mm2", &["r", "w2"], "y", vec![]),
        ],
        vec![vi("x", DataType::Float, &[8, 3])],
        vec![f32s("w", &[3, 4], &w), f32s("w2", &[4, 2], &w2)],
        vec![vi("y", DataType::Float, &[8, 2])],
    );
    let input = write(dir.path(), "fixed.onnx", &m);
    let cal = dir.path().join("cal");
    std::fs::create_dir(&cal).expect("mkdir");
    let x = ndarray::Array3::<f32>::from_shape_fn((10, 8, 3), |(s, i, k)| {
        ((s * 31 + i * 7 + k * 3) % 17) as f32 / 8.0 - 1.0
    });
    ndarray_npy::write_npy(cal.join("x.npy"), &x).expect("npy");
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("r.json");
    let (code, text) = quench(&[
        "compile",
        &input,
        "-c",
        cal.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--report",
        report.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{text}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    let auto = &r["auto_ranges"];
    // 10 samples, 2 held back for evaluation: 8 calibrate.
    assert_eq!(auto["fit_samples"], 8, "{auto}");
    assert_eq!(auto["judge_samples"], 8, "{auto}");
    assert_eq!(auto["judged_apart"], false, "{auto}");
    assert!(!text.contains("other samples"), "{text}");
}

/// NaN in any calibration sample is an error naming the sample's index in
/// the file, wherever it falls. Found by the adversarial pass: with 20
/// samples, a NaN in one of the 4 held back for evaluation gave exit 0 and
/// "SQNR NaN dB", and one elsewhere was named by its index after the
/// split (file sample 4 reported as "sample 3").
#[test]
fn nan_in_any_calibration_sample_is_named_by_its_file_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<f32> = (0..32).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
    let m = model(
        vec![
            node("MatMul", "mm", &["x", "w"], "m", vec![]),
            node("Relu", "relu", &["m"], "y", vec![]),
        ],
        vec![vi("x", DataType::Float, &[1, 8])],
        vec![f32s("w", &[8, 4], &w)],
        vec![vi("y", DataType::Float, &[1, 4])],
    );
    let input = write(dir.path(), "mlp.onnx", &m);
    let out = dir.path().join("out.onnx");
    for bad in 0..20 {
        let cal = dir.path().join(format!("cal{bad}"));
        std::fs::create_dir(&cal).expect("mkdir");
        let mut x = ndarray::Array3::<f32>::from_shape_fn((20, 1, 8), |(s, _, k)| {
            ((s * 13 + k * 5) % 11) as f32 / 5.0 - 1.0
        });
        x[[bad, 0, 3]] = f32::NAN;
        ndarray_npy::write_npy(cal.join("x.npy"), &x).expect("npy");
        let (code, text) = quench(&[
            "compile",
            &input,
            "-c",
            cal.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
        ]);
        assert_eq!(code, 1, "NaN in sample {bad}: {text}");
        assert!(
            text.contains(&format!("calibration input `x`, sample {bad}: holds NaN")),
            "NaN in sample {bad}: {text}"
        );
        assert!(!out.exists(), "NaN in sample {bad}: a model was written");
    }
}

/// A FIFO (or other special file) in a data directory is refused at once:
/// opening one blocks until a writer appears, so `compile -c dir` with a
/// FIFO named `x.npy` hung (issue 12, defect 7; still there in the
/// adversarial pass).
#[test]
fn a_fifo_in_the_data_directory_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<f32> = (0..32).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
    let m = model(
        vec![node("MatMul", "mm", &["x", "w"], "y", vec![])],
        vec![vi("x", DataType::Float, &[1, 8])],
        vec![f32s("w", &[8, 4], &w)],
        vec![vi("y", DataType::Float, &[1, 4])],
    );
    let input = write(dir.path(), "mm.onnx", &m);
    let cal = dir.path().join("cal");
    let pb = dir.path().join("pb").join("test_data_set_0");
    std::fs::create_dir(&cal).expect("mkdir");
    std::fs::create_dir_all(&pb).expect("mkdir");
    for f in [cal.join("x.npy"), pb.join("input_0.pb")] {
        let st = Command::new("mkfifo").arg(&f).status().expect("mkfifo");
        assert!(st.success());
    }
    let out = dir.path().join("out.onnx");
    for data in [cal, dir.path().join("pb")] {
        let t0 = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_quench"))
            .args(["compile", &input, "-c"])
            .arg(&data)
            .arg("-o")
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run quench");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if t0.elapsed().as_secs() > 30 {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let status =
            status.unwrap_or_else(|| panic!("{}: still waiting after 30 s", data.display()));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert_eq!(status.code(), Some(1), "{}: {err}", data.display());
        assert!(err.contains("not a regular file"), "{err}");
    }
}

/// An unknown `--exclude-nodes` name on a model whose nodes have no names
/// suggests no empty names (it printed "nearest: ``, ``, ``").
#[test]
fn exclude_nodes_suggests_no_empty_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<f32> = (0..32).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
    let m = model(
        vec![
            node("MatMul", "", &["x", "w"], "m", vec![]),
            node("Relu", "", &["m"], "y", vec![]),
        ],
        vec![vi("x", DataType::Float, &[1, 8])],
        vec![f32s("w", &[8, 4], &w)],
        vec![vi("y", DataType::Float, &[1, 4])],
    );
    let input = write(dir.path(), "unnamed.onnx", &m);
    let out = dir.path().join("out.onnx");
    let (code, text) = quench(&[
        "compile",
        &input,
        "-o",
        out.to_str().expect("path"),
        "--mode",
        "weight-only",
        "--exclude-nodes",
        "nope",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--exclude-nodes `nope`"), "{text}");
    assert!(!text.contains("``"), "{text}");
    assert!(text.contains("its nodes have no names"), "{text}");
}

/// A calibration table that holds none of the model's activation tensors
/// was made for another model: an error, nothing written (it was accepted
/// with a note, every activation left float, exit 0).
#[test]
fn a_table_from_another_model_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w: Vec<f32> = (0..32).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
    let mlp = |x: &str, m: &str, y: &str| {
        model(
            vec![
                node("MatMul", "mm", &[x, "w"], m, vec![]),
                node("Relu", "relu", &[m], y, vec![]),
            ],
            vec![vi(x, DataType::Float, &[1, 8])],
            vec![f32s("w", &[8, 4], &w)],
            vec![vi(y, DataType::Float, &[1, 4])],
        )
    };
    let a = write(dir.path(), "a.onnx", &mlp("x", "m", "y"));
    let b = write(dir.path(), "b.onnx", &mlp("input", "hidden", "output"));
    let cal = dir.path().join("cal");
    std::fs::create_dir(&cal).expect("mkdir");
    let x = ndarray::Array3::<f32>::from_shape_fn((6, 1, 8), |(s, _, k)| {
        ((s * 13 + k * 5) % 11) as f32 / 5.0 - 1.0
    });
    ndarray_npy::write_npy(cal.join("x.npy"), &x).expect("npy");
    let table = dir.path().join("a.json");
    let table = table.to_str().expect("path");
    let (code, text) = quench(&[
        "calibrate",
        &a,
        "-c",
        cal.to_str().expect("path"),
        "-o",
        table,
    ]);
    assert_eq!(code, 0, "{text}");
    let out = dir.path().join("out.onnx");
    let out_s = out.to_str().expect("path");
    let (code, text) = quench(&["compile", &a, "--calibration-table", table, "-o", out_s]);
    assert_eq!(code, 0, "its own table: {text}");
    std::fs::remove_file(&out).expect("rm");
    let (code, text) = quench(&["compile", &b, "--calibration-table", table, "-o", out_s]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("none of this model's"), "{text}");
    assert!(!out.exists(), "a model was written");
}
