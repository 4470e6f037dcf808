//! Small crafted models on which tract panics (issue 12, defect 4). Before
//! the runner contained panics each of these unwound out of
//! `Runner::from_bytes`/`Runner::run` (exit 101 in the CLI); now each one is
//! an error, and the models tract handles keep working.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn};
use prost::Message;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quench_onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use quench_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use quench_verify::{ArrayData, RunError, Runner, RunnerConfig};

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

fn tensor(name: &str, elem: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(elem as i32),
        dims: dims.to_vec(),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

fn i64s(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    tensor(
        name,
        DataType::Int64,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    tensor(
        name,
        DataType::Float,
        dims,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn node(op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("the_{}", op.to_lowercase())),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(quench_onnx::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn model(
    n: NodeProto,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    out: ValueInfoProto,
) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: vec![n],
            input: inputs,
            initializer: inits,
            output: vec![out],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Compiles and runs `bytes` on `feed`; tract must not unwind out of it.
fn compile_and_run(bytes: &[u8], feed: Vec<ArrayData>) -> Result<Vec<ArrayData>, RunError> {
    let r = Runner::from_bytes(bytes, &RunnerConfig::default())?;
    r.run(&feed)
}

fn x_f32(dims: &[usize]) -> ArrayData {
    let n = dims.iter().product();
    ArrayData::F32(ArrayD::from_shape_vec(IxDyn(dims), vec![1.0; n]).unwrap())
}

/// Asserts the result is an error and returns its text (panics named the
/// phase as "tract panicked while ...").
fn expect_err(what: &str, r: Result<Vec<ArrayData>, RunError>) -> RunError {
    match r {
        Ok(out) => panic!("{what}: ran and returned {:?}", out[0].shape()),
        Err(e) => {
            eprintln!("{what}: {e}");
            e
        }
    }
}

/// Asserts `r` is a contained tract panic in `stage` and returns the node
/// it names, if any.
fn expect_panic(what: &str, r: Result<Vec<ArrayData>, RunError>, stage: &str) -> Option<String> {
    match expect_err(what, r) {
        RunError::Panic {
            stage: s,
            node,
            message,
        } => {
            assert_eq!(s, stage, "{what}: {message}");
            assert!(!message.is_empty());
            node
        }
        e => panic!("{what}: not a contained panic: {e:?}"),
    }
}

#[test]
fn gather_ids_past_the_table_is_an_error() {
    // Token ids >= embedding rows, as in calibration data for a text model:
    // tract indexed out of bounds and panicked at run time.
    let bytes = model(
        node("Gather", &["table", "ids"], vec![]),
        vec![vi("ids", DataType::Int64, &[1, 3])],
        vec![f32s("table", &[4, 2], &[0.5; 8])],
        vi("y", DataType::Float, &[1, 3, 2]),
    );
    let r = Runner::from_bytes(&bytes, &RunnerConfig::default()).unwrap();
    let ok = r
        .run(&[ArrayData::I64(
            ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0, 3, 1]).unwrap(),
        )])
        .unwrap();
    assert_eq!(
        ok[0].to_f32().iter().copied().collect::<Vec<_>>(),
        vec![0.5; 6]
    );
    let node = expect_panic(
        "gather id 7 of 4 rows",
        r.run(&[ArrayData::I64(
            ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0, 7, 1]).unwrap(),
        )]),
        "running the model",
    );
    // The node evaluating when it panicked is named.
    assert_eq!(node.as_deref(), Some("the_gather"));
    // The runner still works after a contained panic.
    let again = r
        .run(&[ArrayData::I64(
            ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![3, 3, 3]).unwrap(),
        )])
        .unwrap();
    assert_eq!(again[0].len(), 6);
}

#[test]
fn gather_from_an_empty_table_is_an_error() {
    let bytes = model(
        node("Gather", &["table", "ids"], vec![]),
        vec![vi("ids", DataType::Int64, &[2])],
        vec![f32s("table", &[0, 4], &[])],
        vi("y", DataType::Float, &[2, 4]),
    );
    expect_panic(
        "empty gather table",
        compile_and_run(
            &bytes,
            vec![ArrayData::I64(
                ArrayD::from_shape_vec(IxDyn(&[2]), vec![0, 0]).unwrap(),
            )],
        ),
        "running the model",
    );
}

#[test]
fn slice_with_step_zero_is_an_error() {
    let bytes = model(
        node("Slice", &["x", "starts", "ends", "axes", "steps"], vec![]),
        vec![vi("x", DataType::Float, &[4, 4])],
        vec![
            i64s("starts", &[1], &[0]),
            i64s("ends", &[1], &[4]),
            i64s("axes", &[1], &[0]),
            i64s("steps", &[1], &[0]),
        ],
        vi("y", DataType::Float, &[4, 4]),
    );
    expect_panic(
        "slice step 0",
        compile_and_run(&bytes, vec![x_f32(&[4, 4])]),
        "analysing and optimizing the model",
    );
}

#[test]
fn integer_division_by_zero_is_an_error() {
    for op in ["Div", "Mod"] {
        let bytes = model(
            node(op, &["x", "zero"], vec![]),
            vec![vi("x", DataType::Int64, &[3])],
            vec![i64s("zero", &[1], &[0])],
            vi("y", DataType::Int64, &[3]),
        );
        expect_panic(
            &format!("integer {op} by 0"),
            compile_and_run(
                &bytes,
                vec![ArrayData::I64(
                    ArrayD::from_shape_vec(IxDyn(&[3]), vec![1, 2, 3]).unwrap(),
                )],
            ),
            "running the model",
        );
    }
}

#[test]
fn conv_with_zero_output_channels_is_an_error() {
    let bytes = model(
        node("Conv", &["x", "w"], vec![]),
        vec![vi("x", DataType::Float, &[1, 3, 8, 8])],
        vec![f32s("w", &[0, 3, 3, 3], &[])],
        vi("y", DataType::Float, &[1, 0, 6, 6]),
    );
    // Either an error or a run with an empty output: never an unwind.
    match compile_and_run(&bytes, vec![x_f32(&[1, 3, 8, 8])]) {
        Ok(out) => assert_eq!(out[0].len(), 0),
        Err(e) => eprintln!("conv 0 channels: {e}"),
    }
}

#[test]
fn scalar_matmul_weight_is_an_error() {
    let bytes = model(
        node("MatMul", &["x", "w"], vec![]),
        vec![vi("x", DataType::Float, &[2, 3])],
        vec![f32s("w", &[], &[2.0])],
        vi("y", DataType::Float, &[2, 3]),
    );
    expect_panic(
        "scalar MatMul weight",
        compile_and_run(&bytes, vec![x_f32(&[2, 3])]),
        "analysing and optimizing the model",
    );
}

#[test]
fn string_initializer_in_raw_data_is_an_error() {
    let bytes = model(
        node("Identity", &["s"], vec![]),
        vec![],
        vec![tensor("s", DataType::String, &[2], b"abcd".to_vec())],
        vi("y", DataType::String, &[2]),
    );
    expect_panic(
        "STRING raw_data",
        compile_and_run(&bytes, vec![]),
        "loading the model",
    );
}

#[test]
fn a_panic_names_its_phase() {
    // Whatever tract does with these, a panic must come back as
    // RunError::Panic with a phase; count how many of the crafted models
    // above really panic so the test shows containment is exercised.
    let cases: Vec<(&str, Vec<u8>, Vec<ArrayData>)> = vec![
        (
            "slice step 0",
            model(
                node("Slice", &["x", "starts", "ends", "axes", "steps"], vec![]),
                vec![vi("x", DataType::Float, &[4, 4])],
                vec![
                    i64s("starts", &[1], &[0]),
                    i64s("ends", &[1], &[4]),
                    i64s("axes", &[1], &[0]),
                    i64s("steps", &[1], &[0]),
                ],
                vi("y", DataType::Float, &[4, 4]),
            ),
            vec![x_f32(&[4, 4])],
        ),
        (
            "int div 0",
            model(
                node("Div", &["x", "zero"], vec![]),
                vec![vi("x", DataType::Int64, &[3])],
                vec![i64s("zero", &[1], &[0])],
                vi("y", DataType::Int64, &[3]),
            ),
            vec![ArrayData::I64(
                ArrayD::from_shape_vec(IxDyn(&[3]), vec![1, 2, 3]).unwrap(),
            )],
        ),
        (
            "gather past rows",
            model(
                node("Gather", &["table", "ids"], vec![int_attr("axis", 0)]),
                vec![vi("ids", DataType::Int64, &[2])],
                vec![f32s("table", &[4, 2], &[0.5; 8])],
                vi("y", DataType::Float, &[2, 2]),
            ),
            vec![ArrayData::I64(
                ArrayD::from_shape_vec(IxDyn(&[2]), vec![9, 0]).unwrap(),
            )],
        ),
    ];
    let mut panicked = Vec::new();
    for (what, bytes, feed) in cases {
        if let Err(RunError::Panic { stage, message, .. }) = compile_and_run(&bytes, feed) {
            assert!(!stage.is_empty() && !message.is_empty());
            let e = RunError::Panic {
                stage,
                node: None,
                message,
            };
            assert!(e.to_string().starts_with("tract panicked while "), "{e}");
            panicked.push(what);
        }
    }
    eprintln!("panicked in tract (contained): {panicked:?}");
    assert!(!panicked.is_empty(), "no crafted model panicked tract");
}

#[test]
fn huge_expand_is_an_error() {
    // Expand of [1] to [2^31, 2^31]: tract's shape arithmetic goes negative
    // and an assertion fails while optimizing. (In tract 0.23.9 the same
    // ConstantOfShape and Tile give empty outputs instead; quench's constant
    // folder leaves all of these unfolded, see quench_passes::eval.)
    let bytes = model(
        node("Expand", &["a", "s"], vec![]),
        vec![],
        vec![i64s("a", &[1], &[1]), i64s("s", &[2], &[1 << 31, 1 << 31])],
        vi("y", DataType::Int64, &[]),
    );
    expect_panic(
        "huge Expand",
        compile_and_run(&bytes, vec![]),
        "analysing and optimizing the model",
    );
}
