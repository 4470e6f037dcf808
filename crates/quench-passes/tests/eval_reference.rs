//! The constant evaluator against ONNX's reference implementation.
//!
//! `testdata/reference/eval_cases.json` is written by
//! `testdata/reference/eval_cases.py` with `onnx.reference.ReferenceEvaluator`
//! (single-node cases: broadcasting, scalars, empty tensors, every integer
//! width, overflow edges, bool, casts between all covered types). Each case
//! must fold to the reference result with the same element type and shape,
//! integers and bools exactly, floats within 1 ulp (NaN matches NaN); cases
//! marked `decline` (undefined results, invalid axes, outputs over the size
//! cap) must not fold.

use std::path::Path;

use prost::Message;
use quench_ir::Node;
use quench_onnx::proto::{NodeProto, TensorProto};
use quench_passes::eval::{eval, Tensor};

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn tensor(hex: &str) -> TensorProto {
    TensorProto::decode(unhex(hex).as_slice()).expect("TensorProto")
}

/// Distance in units in the last place between two floats of the same
/// width given as sign-magnitude bit patterns; NaN only matches NaN.
fn ulps(a_bits: u64, b_bits: u64, sign: u64, a_nan: bool, b_nan: bool) -> u64 {
    if a_nan || b_nan {
        return if a_nan && b_nan { 0 } else { u64::MAX };
    }
    // Map sign-magnitude to a monotonic integer line.
    let line = |b: u64| -> i128 {
        if b & sign != 0 {
            -((b & !sign) as i128)
        } else {
            b as i128
        }
    };
    (line(a_bits) - line(b_bits)).unsigned_abs() as u64
}

/// `None` if equal within the tolerance, else a description.
fn compare(got: &Tensor, want: &Tensor) -> Option<String> {
    if got.data_type() != want.data_type() {
        return Some(format!(
            "type {:?}, expected {:?}",
            got.data_type(),
            want.data_type()
        ));
    }
    if got.shape() != want.shape() {
        return Some(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    match (got, want) {
        (Tensor::F32(a), Tensor::F32(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                let d = ulps(
                    x.to_bits() as u64,
                    y.to_bits() as u64,
                    1 << 31,
                    x.is_nan(),
                    y.is_nan(),
                );
                if d > 1 {
                    return Some(format!("element {i}: {x:e}, expected {y:e} ({d} ulp)"));
                }
            }
            None
        }
        (Tensor::F64(a), Tensor::F64(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                let d = ulps(x.to_bits(), y.to_bits(), 1 << 63, x.is_nan(), y.is_nan());
                if d > 1 {
                    return Some(format!("element {i}: {x:e}, expected {y:e} ({d} ulp)"));
                }
            }
            None
        }
        _ => (got != want).then(|| format!("got {got:?}, expected {want:?}")),
    }
}

#[test]
fn evaluator_matches_onnx_reference() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/reference/eval_cases.json");
    let text = std::fs::read_to_string(&path).expect("eval_cases.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() > 400, "only {} cases", cases.len());
    let mut failures = Vec::new();
    let (mut folded, mut declined) = (0, 0);
    for c in cases {
        let name = c["name"].as_str().expect("name");
        let mut proto = NodeProto::decode(unhex(c["node"].as_str().expect("node")).as_slice())
            .expect("NodeProto");
        proto.input.clear();
        proto.output.clear();
        let mut node = Node::new(proto.op_type(), proto.name());
        node.proto = proto;
        let inputs: Vec<Option<Tensor>> = c["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| {
                i.as_str().map(|h| {
                    Tensor::from_proto(&tensor(h))
                        .unwrap_or_else(|| panic!("{name}: input not decodable"))
                })
            })
            .collect();
        let got = eval(&node, &inputs);
        match &c["expect"] {
            serde_json::Value::String(s) if s == "decline" => {
                declined += 1;
                if let Some(out) = got {
                    failures.push(format!("{name}: folded to {out:?}, must decline"));
                }
            }
            serde_json::Value::Array(outs) => {
                folded += 1;
                let want: Vec<Tensor> = outs
                    .iter()
                    .map(|o| {
                        Tensor::from_proto(&tensor(o.as_str().expect("hex")))
                            .unwrap_or_else(|| panic!("{name}: expected output not decodable"))
                    })
                    .collect();
                match got {
                    None => failures.push(format!("{name}: declined")),
                    Some(got) if got.len() != want.len() => {
                        failures.push(format!("{name}: {} outputs", got.len()))
                    }
                    Some(got) => {
                        for (g, w) in got.iter().zip(&want) {
                            if let Some(why) = compare(g, w) {
                                failures.push(format!("{name}: {why}"));
                            }
                        }
                    }
                }
            }
            other => panic!("{name}: bad expect {other}"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the ONNX reference:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{folded} cases folded as the reference, {declined} declined");
    // The table must exercise both sides.
    assert!(
        folded > 350 && declined > 20,
        "{folded} folded, {declined} declined"
    );
}
