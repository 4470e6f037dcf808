//! The loader and IR import never panic, whatever the bytes.
//!
//! A deterministic, dependency-free cousin of the `fuzz/` target. Inputs:
//! the fixtures themselves; a few thousand byte-level mutations of them (bit
//! flips, byte overwrites with interesting values, truncations, deletions,
//! duplicated and spliced ranges, varint bumps); every truncation of a few
//! small models; and a few thousand structure-aware mutations, made on the
//! decoded `ModelProto` and re-encoded (odd dims and element types, attribute
//! kinds, dangling or duplicated names, reordered nodes, broken subgraphs),
//! which get past the protobuf decoder that rejects most byte-level mutants.
//!
//! Each goes through the pipeline the fuzzer drives: decode, import, verify,
//! IR text, export, encode, decode and re-import (which must succeed and give
//! the same IR text). Every input must fail with an error or succeed; a panic
//! fails the test and the offending input is written to
//! `target/loader_robustness/panic-<n>.onnx` for reproduction (feed it to
//! `quench inspect` or to the fuzz target).
//!
//! Crashes the fuzzer finds go to `fuzz/regressions/`, which this test
//! replays as well.

#![allow(clippy::unwrap_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use prost::Message;
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use quench_onnx::proto::type_proto;
use quench_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pipeline of `fuzz/fuzz_targets/load.rs`; errors are fine, panics are
/// not.
/// Returns how far the input got: 0 rejected by the decoder, 1 rejected by
/// the import, 2 imported.
fn pipeline(data: &[u8]) -> u8 {
    let Ok(proto) =
        quench_onnx::load_model_from_bytes(data.to_vec().into(), Path::new("mutant.onnx"))
    else {
        return 0;
    };
    let Ok(model) = quench_ir::Model::from_onnx(proto) else {
        return 1;
    };
    let _ = model.graph.verify();
    let text = model.to_text();
    assert!(text.starts_with("# ir_version"));
    let out = model.to_onnx();
    let bytes = out.encode_to_vec();
    let again = quench_onnx::load_model_from_bytes(bytes.into(), Path::new("re-encoded.onnx"))
        .unwrap_or_else(|e| panic!("an exported model does not decode: {e}"));
    // An imported model exports to a model that imports again.
    let model2 = quench_ir::Model::from_onnx(again)
        .unwrap_or_else(|e| panic!("an exported model does not import: {e}"));
    assert_eq!(
        model2.to_text(),
        text,
        "IR text changes over export and re-import"
    );
    2
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12, 0x1a, 0x22, 0x3a, 0x42,
];

/// One mutation of `seed` (`other` is another fixture for splicing).
fn mutate(r: &mut Lcg, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    let rounds = 1 + r.below(4);
    for _ in 0..rounds {
        if d.is_empty() {
            break;
        }
        let n = d.len();
        match r.below(9) {
            0 => {
                let i = r.below(n);
                d[i] ^= 1 << r.below(8);
            }
            1 => {
                let i = r.below(n);
                d[i] = INTERESTING[r.below(INTERESTING.len())];
            }
            2 => {
                let i = r.below(n);
                d[i] = r.next() as u8;
            }
            3 => d.truncate(r.below(n)),
            4 => {
                let i = r.below(n);
                let len = 1 + r.below((n - i).min(64));
                d.drain(i..i + len);
            }
            5 => {
                let i = r.below(n);
                let len = 1 + r.below((n - i).min(64));
                let chunk: Vec<u8> = d[i..i + len].to_vec();
                let at = r.below(n);
                d.splice(at..at, chunk);
            }
            6 => {
                // Splice: a prefix of this fixture with a suffix of another.
                let at = r.below(n);
                let from = r.below(other.len());
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
            7 => {
                // Make a length or count varint large: set continuation bits.
                let i = r.below(n);
                for b in d.iter_mut().skip(i).take(1 + r.below(5)) {
                    *b |= 0x80;
                }
            }
            _ => {
                // Insert a few random bytes.
                let at = r.below(n + 1);
                let k = 1 + r.below(8);
                let bytes: Vec<u8> = (0..k).map(|_| r.next() as u8).collect();
                d.splice(at..at, bytes);
            }
        }
    }
    d
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(root().join("testdata"))
        .unwrap()
        .chain(std::fs::read_dir(root().join("testdata/bad")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(v.len() >= 20, "fixtures missing");
    v
}

/// Runs `pipeline` on each input; writes panicking inputs to
/// `target/loader_robustness/` and returns their descriptions.
fn check_all(inputs: impl Iterator<Item = (String, Vec<u8>)>) -> (usize, Vec<String>) {
    let dir = root().join("target").join("loader_robustness");
    let mut n = 0;
    let mut reached = [0usize; 3];
    let mut slowest = (std::time::Duration::ZERO, String::new());
    let mut panics = Vec::new();
    for (what, data) in inputs {
        n += 1;
        let t = std::time::Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| pipeline(&data)));
        if t.elapsed() > slowest.0 {
            slowest = (t.elapsed(), what.clone());
        }
        if let Ok(stage) = r {
            reached[stage as usize] += 1;
        } else {
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(format!("panic-{}.onnx", panics.len()));
            std::fs::write(&p, &data).unwrap();
            panics.push(format!("{what} -> {}", p.display()));
        }
    }
    eprintln!(
        "{n} inputs: {} not decoded, {} not imported, {} imported and round-tripped; slowest {:.1?} ({})",
        reached[0], reached[1], reached[2], slowest.0, slowest.1
    );
    (n, panics)
}

#[test]
fn fixtures_themselves_go_through_the_pipeline() {
    let (n, panics) = check_all(fixtures().into_iter());
    assert!(n >= 20);
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}

#[test]
fn mutated_fixtures_never_panic() {
    let fx = fixtures();
    let per_fixture = 150;
    let start = std::time::Instant::now();
    let inputs = fx.iter().enumerate().flat_map(|(k, (name, seed))| {
        let other = &fx[(k + 7) % fx.len()].1;
        let mut r = Lcg(0x5eed ^ ((k as u64) << 32));
        (0..per_fixture).map(move |i| (format!("{name} mutation {i}"), mutate(&mut r, seed, other)))
    });
    let (n, panics) = check_all(inputs);
    assert!(n >= 3000, "{n} inputs");
    assert!(
        panics.is_empty(),
        "{} of {n} inputs panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
    eprintln!("{n} mutated inputs in {:.2?}", start.elapsed());
}

/// Every truncation of a small model and of the start of a larger one.
#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let mut inputs = Vec::new();
    for name in [
        "custom_domain.onnx",
        "if_subgraph.onnx",
        "bad/cycle.onnx",
        "digits_cnn.onnx",
    ] {
        let full = std::fs::read(root().join("testdata").join(name)).unwrap();
        for n in 0..full.len().min(1500) {
            inputs.push((format!("{name}[..{n}]"), full[..n].to_vec()));
        }
    }
    let (n, panics) = check_all(inputs.into_iter());
    assert!(
        panics.is_empty(),
        "{} of {n} truncations panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
}

/// Files in `fuzz/regressions` (written by its `make_seeds.py`, plus any
/// crash `cargo fuzz` finds later). Update when adding a seed.
const SEED_COUNT: usize = 14;

/// Inputs found by `cargo fuzz` and the committed seed corpus (see
/// `fuzz/regressions/README.md`): none panics, the corpus is all there
/// (a missing directory or file fails instead of running zero cases), and the
/// valid seeds get through the whole pipeline.
#[test]
fn fuzz_regressions_never_panic() {
    let dir = root().join("fuzz").join("regressions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(
        files.len() >= SEED_COUNT,
        "{} has {} .onnx inputs, expected at least {SEED_COUNT}",
        dir.display(),
        files.len()
    );
    let inputs: Vec<_> = files
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    let valid: Vec<_> = inputs
        .iter()
        .filter(|(n, _)| n.contains("/valid_"))
        .collect();
    assert_eq!(valid.len(), 3);
    for (name, data) in valid {
        assert_eq!(pipeline(data), 2, "{name} should import and round-trip");
    }
    let (n, panics) = check_all(inputs.into_iter());
    assert_eq!(n, files.len());
    assert!(panics.is_empty(), "panics:\n{}", panics.join("\n"));
}

// ------------------------------------------------------------------------
// Structure-aware mutations: most byte-level mutants are rejected by the
// protobuf decoder, so these mutate the decoded message instead (odd dims,
// element types, attribute kinds, dangling names, reordered nodes, broken
// subgraphs) and re-encode it, to exercise the import, the text printer and
// the export on well-formed protobuf that is nonsense as a model.

const OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "Constant",
    "If",
    "Loop",
    "Scan",
    "QuantizeLinear",
    "DequantizeLinear",
    "Reshape",
    "Relu",
    "Clip",
    "Add",
    "Concat",
    "Flatten",
    "Softmax",
    "LayerNormalization",
    "MaxPool",
    "GlobalAveragePool",
    "Cast",
    "Identity",
    "Split",
    "Transpose",
    "Unknown_Op",
];
const ATTR_NAMES: &[&str] = &[
    "value",
    "then_branch",
    "else_branch",
    "body",
    "group",
    "pads",
    "strides",
    "axis",
    "transB",
    "to",
    "epsilon",
    "perm",
    "value_float",
    "value_ints",
];
const ODD_DIMS: &[&[i64]] = &[
    &[],
    &[0],
    &[-1],
    &[1 << 40, 1 << 40],
    &[i64::MAX],
    &[2, -3],
    &[3, 3],
    &[1],
    &[4, 0, 4],
    &[i64::MIN],
];
const ODD_INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    16,
    1 << 31,
    -(1 << 31),
    1 << 40,
    i64::MAX,
    i64::MIN,
];

fn odd_int(r: &mut Lcg) -> i64 {
    ODD_INTS[r.below(ODD_INTS.len())]
}

fn odd_tensor(r: &mut Lcg, name: &str) -> TensorProto {
    let mut t = TensorProto {
        name: Some(name.into()),
        data_type: Some(1),
        dims: vec![2, 2],
        ..Default::default()
    };
    t.raw_data = Some(vec![0u8; 16].into());
    mutate_tensor(r, &mut t, &[]);
    t
}

fn mutate_tensor(r: &mut Lcg, t: &mut TensorProto, names: &[String]) {
    match r.below(10) {
        0 | 1 => t.dims = ODD_DIMS[r.below(ODD_DIMS.len())].to_vec(),
        2 => t.data_type = Some(r.below(30) as i32 - 1),
        3 => {
            if let Some(raw) = &t.raw_data {
                let n = r.below(raw.len() + 1);
                t.raw_data = Some(raw.slice(..n));
            }
        }
        4 => {
            t.raw_data = None;
            t.float_data = (0..r.below(9)).map(|i| i as f32).collect();
        }
        5 => {
            t.int64_data = (0..r.below(9)).map(|_| odd_int(r)).collect();
            if r.below(2) == 0 {
                t.raw_data = None;
            }
        }
        6 => t.string_data = vec![b"abc".to_vec().into(); r.below(3)],
        7 => {
            t.name = Some(if names.is_empty() || r.below(3) == 0 {
                String::new()
            } else {
                names[r.below(names.len())].clone()
            })
        }
        8 => {
            t.double_data = vec![1.5; r.below(5)];
            t.uint64_data = vec![u64::MAX; r.below(3)];
            t.int32_data = vec![-7; r.below(5)];
        }
        _ => t.segment = Some(Default::default()),
    }
}

fn odd_type(r: &mut Lcg) -> Option<TypeProto> {
    let dim = |r: &mut Lcg| Dimension {
        denotation: None,
        value: match r.below(4) {
            0 => None,
            1 => Some(dimension::Value::DimParam(String::new())),
            2 => Some(dimension::Value::DimParam("N".into())),
            _ => Some(dimension::Value::DimValue(odd_int(r))),
        },
    };
    let tensor = |r: &mut Lcg| type_proto::Tensor {
        elem_type: Some(r.below(30) as i32 - 1),
        shape: if r.below(4) == 0 {
            None
        } else {
            Some(TensorShapeProto {
                dim: (0..r.below(5)).map(|_| dim(r)).collect(),
            })
        },
    };
    let value = match r.below(6) {
        0 => return None,
        1 => None,
        2 => Some(type_proto::Value::SequenceType(Box::new(
            type_proto::Sequence {
                elem_type: Some(Box::new(TypeProto {
                    denotation: None,
                    value: Some(type_proto::Value::TensorType(tensor(r))),
                })),
            },
        ))),
        3 => Some(type_proto::Value::SparseTensorType(
            type_proto::SparseTensor {
                elem_type: Some(1),
                shape: None,
            },
        )),
        _ => Some(type_proto::Value::TensorType(tensor(r))),
    };
    Some(TypeProto {
        denotation: None,
        value,
    })
}

fn value_names(g: &GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    v.extend(g.initializer.iter().map(|t| t.name().to_string()));
    v.extend(g.node.iter().flat_map(|n| n.output.iter().cloned()));
    v.push("ghost".into());
    v.push(String::new());
    v
}

fn mutate_attr(r: &mut Lcg, a: &mut AttributeProto, names: &[String], donor: &GraphProto) {
    match r.below(9) {
        0 => a.r#type = Some(r.below(16) as i32),
        1 => a.i = Some(odd_int(r)),
        2 => a.ints = (0..r.below(6)).map(|_| odd_int(r)).collect(),
        3 => a.t = Some(odd_tensor(r, "")),
        4 => {
            a.g = Some(if r.below(2) == 0 {
                GraphProto::default()
            } else {
                donor.clone()
            });
            a.r#type = Some(AttributeType::Graph as i32);
        }
        5 => {
            if let Some(t) = a.t.as_mut() {
                mutate_tensor(r, t, names);
            } else if let Some(g) = a.g.as_mut() {
                mutate_graph(r, g, donor, 1);
            }
        }
        6 => a.name = Some(ATTR_NAMES[r.below(ATTR_NAMES.len())].into()),
        7 => a.s = Some(vec![0xff, 0xfe].into()),
        _ => {
            a.floats = vec![f32::NAN, f32::INFINITY, -0.0];
            a.graphs = vec![GraphProto::default(); r.below(3)];
        }
    }
}

fn mutate_node(r: &mut Lcg, n: &mut NodeProto, names: &[String], donor: &GraphProto) {
    let pick = |r: &mut Lcg| names[r.below(names.len())].clone();
    match r.below(10) {
        0 => {
            n.input.pop();
        }
        1 if !n.input.is_empty() => {
            let k = r.below(n.input.len());
            n.input[k] = pick(r);
        }
        2 => n.input.push(pick(r)),
        3 => match r.below(3) {
            0 => n.output.clear(),
            1 => n.output.push(pick(r)),
            _ => {
                if let Some(o) = n.output.first_mut() {
                    *o = pick(r);
                }
            }
        },
        4 | 5 => n.op_type = Some(OPS[r.below(OPS.len())].into()),
        6 => n.domain = Some(["", "ai.onnx", "com.microsoft", "x.y"][r.below(4)].into()),
        7 => {
            n.attribute.pop();
        }
        8 => {
            let mut a = AttributeProto {
                name: Some(ATTR_NAMES[r.below(ATTR_NAMES.len())].into()),
                ..Default::default()
            };
            mutate_attr(r, &mut a, names, donor);
            n.attribute.push(a);
        }
        _ => {
            if !n.attribute.is_empty() {
                let k = r.below(n.attribute.len());
                mutate_attr(r, &mut n.attribute[k], names, donor);
            }
        }
    }
}

fn mutate_graph(r: &mut Lcg, g: &mut GraphProto, donor: &GraphProto, depth: usize) {
    let names = value_names(g);
    match r.below(14) {
        0..=3 if !g.node.is_empty() => {
            let k = r.below(g.node.len());
            // Sometimes descend into a subgraph of the node instead.
            if depth == 0 && r.below(3) == 0 {
                if let Some(sg) = g.node[k].attribute.iter_mut().find_map(|a| a.g.as_mut()) {
                    mutate_graph(r, sg, donor, depth + 1);
                    return;
                }
            }
            mutate_node(r, &mut g.node[k], &names, donor);
        }
        4 | 5 if !g.initializer.is_empty() => {
            let k = r.below(g.initializer.len());
            mutate_tensor(r, &mut g.initializer[k], &names);
        }
        6 => match r.below(4) {
            0 => {
                g.input.pop();
            }
            1 => g.input.push(ValueInfoProto {
                name: Some(names[r.below(names.len())].clone()),
                r#type: odd_type(r),
                ..Default::default()
            }),
            _ => {
                if let Some(i) = g.input.first_mut() {
                    i.r#type = odd_type(r);
                }
            }
        },
        7 => match r.below(3) {
            0 => g.output.clear(),
            1 => g.output.push(ValueInfoProto {
                name: Some(names[r.below(names.len())].clone()),
                r#type: odd_type(r),
                ..Default::default()
            }),
            _ => {
                if let Some(o) = g.output.first_mut() {
                    o.r#type = odd_type(r);
                }
            }
        },
        8 => g.node.reverse(),
        9 if !g.node.is_empty() => {
            let k = r.below(g.node.len());
            if r.below(2) == 0 {
                g.node.remove(k);
            } else {
                let n = g.node[k].clone();
                g.node.push(n);
            }
        }
        10 => g.value_info.push(ValueInfoProto {
            name: Some(names[r.below(names.len())].clone()),
            r#type: odd_type(r),
            ..Default::default()
        }),
        11 => {
            let name = names[r.below(names.len())].clone();
            g.sparse_initializer.push(SparseTensorProto {
                values: Some(odd_tensor(r, &name)),
                indices: Some(odd_tensor(r, "")),
                dims: ODD_DIMS[r.below(ODD_DIMS.len())].to_vec(),
            })
        }
        12 => {
            let name = names[r.below(names.len())].clone();
            let t = odd_tensor(r, &name);
            g.initializer.push(t);
        }
        _ => {
            let t = odd_tensor(r, "");
            g.node.push(NodeProto {
                op_type: Some("Constant".into()),
                output: vec![names[r.below(names.len())].clone()],
                attribute: vec![AttributeProto {
                    name: Some("value".into()),
                    r#type: Some(AttributeType::Tensor as i32),
                    t: Some(t),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
}

fn mutate_model(r: &mut Lcg, m: &mut ModelProto, donor: &GraphProto) {
    match r.below(12) {
        0 => match r.below(3) {
            0 => m.opset_import.clear(),
            1 => m.opset_import.push(OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(odd_int(r)),
            }),
            _ => {
                if let Some(o) = m.opset_import.first_mut() {
                    o.version = Some(odd_int(r));
                }
            }
        },
        1 => m.ir_version = Some(odd_int(r)),
        _ => {
            if let Some(g) = m.graph.as_mut() {
                mutate_graph(r, g, donor, 0);
            }
        }
    }
}

#[test]
fn structurally_mutated_models_never_panic() {
    let fx: Vec<(String, ModelProto)> = fixtures()
        .into_iter()
        .filter_map(|(name, b)| ModelProto::decode(b.as_slice()).ok().map(|m| (name, m)))
        .filter(|(_, m)| m.graph.is_some())
        .map(|(name, mut m)| {
            // A model in memory cannot resolve external data: make those
            // tensors inline but empty, which is interesting in itself.
            quench_onnx::visit::for_each_tensor_mut(&mut m, &mut |t: &mut TensorProto| {
                t.data_location = None;
                t.external_data.clear();
            });
            (name, m)
        })
        .collect();
    let donor = fx
        .iter()
        .find(|(n, _)| n == "if_subgraph.onnx")
        .and_then(|(_, m)| m.graph.clone())
        .unwrap_or_default();
    let per_fixture = 150;
    let inputs = fx.iter().enumerate().flat_map(|(k, (name, m))| {
        let donor = donor.clone();
        let mut r = Lcg(0xfeed ^ ((k as u64) << 24));
        (0..per_fixture).map(move |i| {
            let mut m = m.clone();
            for _ in 0..1 + r.below(3) {
                mutate_model(&mut r, &mut m, &donor);
            }
            (format!("{name} structural mutation {i}"), m.encode_to_vec())
        })
    });
    let (n, panics) = check_all(inputs);
    assert!(n >= 3000, "{n} inputs");
    assert!(
        panics.is_empty(),
        "{} of {n} inputs panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
}
