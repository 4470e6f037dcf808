//! Segmented runs (quench_verify's `Runner::with_segments`, used by
//! `Runner::new` for graphs over 256 nodes) give bit for bit the outputs of
//! the whole graph: every fixture, cut into segments of 2 to 7 nodes, with
//! and without every intermediate tensor exposed, and its float twin after
//! a static compile's Q/DQ.

mod common;

use common::{input_facts, load, random_inputs, testdata};
use quench_onnx::proto::ModelProto;
use quench_verify::{ArrayData, Runner, RunnerConfig};

/// Same element types, shapes and bytes.
fn same_bits(a: &[ArrayData], b: &[ArrayData]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} outputs vs {}", a.len(), b.len()));
    }
    let mut bad = vec![];
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.dtype_name() != y.dtype_name()
            || x.shape() != y.shape()
            || x.to_tensor_proto("").raw_data != y.to_tensor_proto("").raw_data
        {
            let d = (x.to_f32() - y.to_f32())
                .mapv(f32::abs)
                .fold(0f32, |m, v| m.max(*v));
            bad.push(format!("output {i} differs by {d}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

/// Every tensor a main-graph node makes.
fn node_outputs(m: &ModelProto) -> Vec<String> {
    m.graph
        .as_ref()
        .map(|g| {
            g.node
                .iter()
                .flat_map(|n| n.output.iter())
                .filter(|o| !o.is_empty())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `m` whole and in segments of `sizes` nodes; returns how many runs
/// were segmented.
fn check(name: &str, m: &ModelProto, sizes: &[usize]) -> usize {
    let facts = input_facts(m, 2);
    // As the Evaluator does: stale value_info and symbolic output shapes
    // dropped, inputs fixed.
    let shapes: Vec<(String, Vec<i64>)> = facts
        .iter()
        .map(|f| (f.name.clone(), f.shape.iter().map(|d| *d as i64).collect()))
        .collect();
    let (prepared, _) = quench_verify::prepare_for_tract(m, &shapes);
    let m = &prepared;
    let inputs = random_inputs(&facts, 7);
    let mut segmented = 0;
    for extra in [vec![], node_outputs(m)] {
        let config = RunnerConfig {
            input_facts: facts.clone(),
            extra_outputs: extra.clone(),
        };
        // A fixture tract cannot run whole is not this test's concern.
        let Ok(whole) = Runner::with_segments(m, &config, usize::MAX) else {
            continue;
        };
        assert_eq!(whole.segment_count(), 1);
        let Ok(expected) = whole.run(&inputs) else {
            continue;
        };
        for &k in sizes {
            let r = Runner::with_segments(m, &config, k)
                .unwrap_or_else(|e| panic!("{name}, segments of {k}: {e}"));
            if r.segment_count() > 1 {
                segmented += 1;
            }
            assert_eq!(r.output_names(), whole.output_names(), "{name}");
            let got = r
                .run(&inputs)
                .unwrap_or_else(|e| panic!("{name}, segments of {k}: {e}"));
            if let Err(e) = same_bits(&got, &expected) {
                panic!(
                    "{name}, segments of {k} ({} segments), {} extra outputs {:?}: {e}",
                    r.segment_count(),
                    extra.len(),
                    r.output_names()
                );
            }
        }
    }
    segmented
}

#[test]
fn segmented_runs_match_whole_runs_bit_for_bit() {
    let mut runs = 0;
    let mut models = 0;
    let mut paths: Vec<_> = std::fs::read_dir(testdata(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    for p in paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(m) = std::panic::catch_unwind(|| load(&p)) else {
            continue;
        };
        let n = check(&name, &m, &[2, 3, 5, 7]);
        if n > 0 {
            models += 1;
        }
        runs += n;
    }
    println!("{models} models segmented, {runs} segmented runs, all bit-exact");
    // The check must have cut real models into segments.
    assert!(models >= 10 && runs >= 60, "{models} models, {runs} runs");
}

/// A static compile's output and its float twin (Q/DQ pairs written out
/// as Div/Round/Add/Clip/Sub/Mul: long element-wise runs tract could fuse)
/// segment exactly too.
#[test]
fn quantized_model_and_twin_segment_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.onnx");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_quench"))
        .args([
            "compile",
            testdata("digits_cnn.onnx").to_str().unwrap(),
            "-c",
            testdata("digits/calib").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let q = load(&out);
    let mut twin = quench_ir::Model::from_onnx(q.clone()).unwrap();
    quench_passes::simulate::float_twin(&mut twin.graph, 17);
    assert!(check("quantized", &q, &[2, 3, 4, 5]) > 0);
    assert!(check("twin", &twin.to_onnx(), &[2, 3, 4, 5]) > 0);
}

/// `Runner::new` segments a long chain by itself (900 nodes, segments of
/// at most 256), bit-exact with the whole run, graph output and every
/// exposed tensor alike.
#[test]
fn runner_new_segments_long_chains() {
    use quench_onnx::proto::{GraphProto, NodeProto, OperatorSetIdProto};
    let mut r = common::Lcg(3);
    let mut g = GraphProto {
        name: Some("chain".into()),
        ..Default::default()
    };
    let mut prev = "x".to_string();
    let node = |op: &str, ins: &[&str], out: &str| NodeProto {
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.to_string()],
        name: Some(out.to_string()),
        ..Default::default()
    };
    for i in 0..300 {
        let w: Vec<f32> = (0..64).map(|_| r.normal() * 0.35).collect();
        let b: Vec<f32> = (0..8).map(|_| r.normal() * 0.1 + 0.05).collect();
        g.initializer
            .push(quench_ir::tensor::from_f32(&format!("w{i}"), &[8, 8], &w));
        g.initializer
            .push(quench_ir::tensor::from_f32(&format!("b{i}"), &[8], &b));
        let (m, a, y) = (format!("m{i}"), format!("a{i}"), format!("y{i}"));
        g.node.push(node("MatMul", &[&prev, &format!("w{i}")], &m));
        g.node.push(node("Add", &[&m, &format!("b{i}")], &a));
        g.node.push(node("Relu", &[&a], &y));
        prev = y;
    }
    let ty = quench_ir::tensor::tensor_type_of(1, &[2, 8]);
    g.input.push(quench_onnx::proto::ValueInfoProto {
        name: Some("x".into()),
        r#type: Some(ty.clone()),
        ..Default::default()
    });
    g.output.push(quench_onnx::proto::ValueInfoProto {
        name: Some(prev.clone()),
        r#type: Some(ty),
        ..Default::default()
    });
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(g),
        ..Default::default()
    };
    let facts = input_facts(&m, 2);
    let inputs = random_inputs(&facts, 11);
    for extra in [
        vec![],
        vec!["y10".to_string(), "m150".into(), "a299".into()],
    ] {
        let config = RunnerConfig {
            input_facts: facts.clone(),
            extra_outputs: extra,
        };
        let seg = Runner::new(&m, &config).unwrap();
        assert!(seg.segment_count() >= 4, "{}", seg.segment_count());
        let whole = Runner::with_segments(&m, &config, usize::MAX).unwrap();
        assert_eq!(whole.segment_count(), 1);
        let (a, b) = (seg.run(&inputs).unwrap(), whole.run(&inputs).unwrap());
        same_bits(&a, &b).unwrap();
        // Not a trivially constant output.
        assert!(a[0].to_f32().iter().any(|v| *v > 0.0));
    }
}
