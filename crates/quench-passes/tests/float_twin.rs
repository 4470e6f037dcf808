//! The float twin (`simulate.rs`) computes what ONNX says a
//! `QuantizeLinear -> DequantizeLinear` pair computes: the twin graph is run
//! here by a small interpreter of its six float ops (ONNX semantics: `Round`
//! is half to even, `Clip` by inputs from opset 11 and by attributes
//! before) and compared, element by element and exactly, with
//! `(clamp(round_half_even(x / s) + zp, qmin, qmax) - zp) * s` written out
//! for every integer type, zero point and opset form, over inputs that hit
//! ties, both saturation ends and zero. (Mutation testing found the twin's
//! arithmetic unchecked by this crate's tests; see
//! benches/results/mutants_2026-11-27.md.)

use std::collections::HashMap;

use quench_calib::ElemType;
use quench_ir::{tensor, Graph, Node, ValueId};
use quench_passes::codes;
use quench_passes::simulate::float_twin_report;

/// ONNX's QuantizeLinear then DequantizeLinear, in f32 like the ops.
fn reference(x: f32, s: f32, zp: f32, lo: f32, hi: f32) -> f32 {
    let q = ((x / s).round_ties_even() + zp).clamp(lo, hi);
    (q - zp) * s
}

/// Runs the float ops of `g` on input `x` (constants broadcast as
/// scalars); returns the graph's first output.
fn interpret(g: &Graph, x: ValueId, data: &[f32]) -> Result<Vec<f32>, String> {
    let mut vals: HashMap<ValueId, Vec<f32>> = HashMap::new();
    vals.insert(x, data.to_vec());
    let get = |vals: &HashMap<ValueId, Vec<f32>>, v: Option<ValueId>| -> Result<Vec<f32>, String> {
        let v = v.ok_or("missing input")?;
        if let Some(d) = vals.get(&v) {
            return Ok(d.clone());
        }
        let t = g
            .const_tensor(v)
            .ok_or("input neither computed nor constant")?;
        tensor::to_f32(t).map_err(|e| e.to_string())
    };
    let zip = |a: &[f32], b: &[f32], f: &dyn Fn(f32, f32) -> f32| -> Vec<f32> {
        let n = a.len().max(b.len());
        (0..n)
            .map(|i| f(a[i.min(a.len() - 1)], b[i.min(b.len() - 1)]))
            .collect()
    };
    let order = g.topo_order().map_err(|e| e.to_string())?;
    for n in order {
        let node = g.node(n);
        let a = get(&vals, node.input(0))?;
        let out: Vec<f32> = match node.op_type() {
            "Div" => zip(&a, &get(&vals, node.input(1))?, &|p, q| p / q),
            "Mul" => zip(&a, &get(&vals, node.input(1))?, &|p, q| p * q),
            "Add" => zip(&a, &get(&vals, node.input(1))?, &|p, q| p + q),
            "Sub" => zip(&a, &get(&vals, node.input(1))?, &|p, q| p - q),
            "Round" => a.iter().map(|v| v.round_ties_even()).collect(),
            "Clip" => {
                let (lo, hi) = match (node.input(1), node.attr_float("min")) {
                    (Some(_), _) => (get(&vals, node.input(1))?[0], get(&vals, node.input(2))?[0]),
                    (None, Some(lo)) => (lo, node.attr_float("max").ok_or("no max")?),
                    (None, None) => return Err("Clip without bounds".into()),
                };
                a.iter().map(|v| v.clamp(lo, hi)).collect()
            }
            other => return Err(format!("unexpected op {other} in the twin")),
        };
        let o = node.output(0).ok_or("no output")?;
        vals.insert(o, out);
    }
    let y = *g.outputs().first().ok_or("no graph output")?;
    vals.get(&y)
        .cloned()
        .ok_or_else(|| "output not computed".into())
}

#[test]
fn twin_of_every_integer_pair_matches_onnx_quantize_dequantize() -> Result<(), String> {
    // (type, zero point, qmin, qmax, scale)
    let cases: [(ElemType, i32, f32, f32, f32); 8] = [
        (ElemType::Uint8, 128, 0.0, 255.0, 0.5),
        (ElemType::Uint8, 3, 0.0, 255.0, 0.03125),
        (ElemType::Int8, 0, -128.0, 127.0, 0.25),
        (ElemType::Int8, -5, -128.0, 127.0, 1.5),
        (ElemType::Uint16, 30000, 0.0, 65535.0, 0.001),
        (ElemType::Int16, 0, -32768.0, 32767.0, 0.125),
        (ElemType::Uint4, 8, 0.0, 15.0, 0.5),
        (ElemType::Int4, -1, -8.0, 7.0, 2.0),
    ];
    for (elem, zp, lo, hi, s) in cases {
        // x / s on a half-step grid from below qmin - zp to above qmax - zp:
        // every tie, both saturated ends, and zero.
        let span = (hi - lo) as i64 + 8;
        let first = 2 * (lo as i64 - i64::from(zp) - 4);
        let data: Vec<f32> = (0..=2 * span)
            .map(|k| (first + k) as f32 * 0.5 * s)
            .collect();
        for opset in [10, 21] {
            let mut g = Graph::new("t");
            let x = g.add_input("x", None);
            let sv = g.add_const("s", tensor::from_f32("", &[], &[s]));
            let zv = g.add_const("z", codes::encode(elem, &[], &[zp]));
            let (_, q) = g.add_op(Node::new("QuantizeLinear", "q"), &[x, sv, zv], &["xq"]);
            let (_, d) = g.add_op(
                Node::new("DequantizeLinear", "dq"),
                &[q[0], sv, zv],
                &["xd"],
            );
            g.add_output(d[0]);
            let rep = float_twin_report(&mut g, opset);
            assert_eq!(rep.pairs.len(), 1, "{elem:?} {rep:?}");
            assert!(rep.declined.is_empty(), "{elem:?} {rep:?}");
            // Clip-6 (before opset 11) takes its bounds as attributes,
            // Clip-11 as inputs.
            let clip = g
                .node_ids()
                .into_iter()
                .find(|n| g.node(*n).op_type() == "Clip")
                .map(|n| g.node(n));
            let form = clip.map(|c| (c.input(1).is_some(), c.attr_float("min").is_some()));
            assert_eq!(form, Some((opset >= 11, opset < 11)), "{elem:?} {opset}");
            // The graph output keeps the DQ output's name.
            let out = g.outputs()[0];
            assert_eq!(g.value(out).name, "xd", "{elem:?}");
            let got = interpret(&g, x, &data)?;
            let zpf = zp as f32;
            let mut saturated = (0, 0);
            for (i, (&v, &xv)) in got.iter().zip(&data).enumerate() {
                let want = reference(xv, s, zpf, lo, hi);
                assert!(
                    v.to_bits() == want.to_bits() || (v == 0.0 && want == 0.0),
                    "{elem:?} zp {zp} opset {opset}: x[{i}] = {xv}: twin {v}, ONNX {want}"
                );
                if want == (lo - zpf) * s {
                    saturated.0 += 1;
                }
                if want == (hi - zpf) * s {
                    saturated.1 += 1;
                }
            }
            // The grid reaches past both ends.
            assert!(
                saturated.0 >= 8 && saturated.1 >= 8,
                "{elem:?} {saturated:?}"
            );
        }
    }
    Ok(())
}

/// Pairs the twin must leave alone, each with its reason.
#[test]
fn twin_declines_pairs_it_cannot_express() -> Result<(), String> {
    let build = |scale_dims: &[i64], dq_scale: f32, q_output: bool, extra_use: bool| {
        let mut g = Graph::new("t");
        let x = g.add_input("x", None);
        let n: usize = scale_dims.iter().product::<i64>().max(1) as usize;
        let sv = g.add_const("s", tensor::from_f32("", scale_dims, &vec![0.5; n]));
        let zv = g.add_const("z", codes::encode(ElemType::Uint8, scale_dims, &vec![0; n]));
        let (_, q) = g.add_op(Node::new("QuantizeLinear", "q"), &[x, sv, zv], &["xq"]);
        let s2 = g.add_const("s2", tensor::from_f32("", &[], &[dq_scale]));
        let z2 = g.add_const("z2", codes::encode(ElemType::Uint8, &[], &[0]));
        let dq_in = if scale_dims.is_empty() {
            [q[0], s2, z2]
        } else {
            [q[0], sv, zv]
        };
        let (_, d) = g.add_op(Node::new("DequantizeLinear", "dq"), &dq_in, &["xd"]);
        g.add_output(d[0]);
        if q_output {
            g.add_output(q[0]);
        }
        if extra_use {
            let (_, r) = g.add_op(Node::new("Cast", "c"), &[q[0]], &["c"]);
            g.add_output(r[0]);
        }
        g
    };
    let reason = |mut g: Graph| {
        let rep = float_twin_report(&mut g, 21);
        assert!(rep.pairs.is_empty(), "{rep:?}");
        rep.declined
            .first()
            .map(|d| d.1.clone())
            .unwrap_or_default()
    };
    // Per-axis parameters.
    assert_eq!(
        reason(build(&[2], 0.5, false, false)),
        "scale is not one constant value"
    );
    // DQ with another scale (a lowered HardSwish's `x / 6`): its own
    // multiple of the same codes.
    let mut g = build(&[], 0.25, false, false);
    let rep = float_twin_report(&mut g, 21);
    assert_eq!((rep.pairs.len(), rep.declined.len()), (1, 0), "{rep:?}");
    // x = 1.3: codes round(1.3 / 0.5) = 3, read at 0.25: 0.75 (not 1.5).
    let x = g.inputs()[0];
    assert_eq!(interpret(&g, x, &[1.3, -0.4])?, vec![0.75, 0.0]);
    // The quantized tensor is a graph output or feeds another op.
    let other = "quantized tensor is used by something other than DequantizeLinear";
    assert_eq!(reason(build(&[], 0.5, true, false)), other);
    assert_eq!(reason(build(&[], 0.5, false, true)), other);
    // The same pair with matching parameters is replaced.
    let mut g = build(&[], 0.5, false, false);
    assert_eq!(float_twin_report(&mut g, 21).pairs.len(), 1);
    Ok(())
}

/// A constant per-axis DequantizeLinear with a negative axis (-1 on a
/// `[2, 3]` tensor: one scale and zero point per column) folds to
/// `(q - zp[c]) * s[c]`, worked out here; `float_twin` and
/// `float_twin_pairs` report the same counts and names as the report.
#[test]
fn per_axis_fold_with_negative_axis_and_entry_points() -> Result<(), String> {
    use quench_passes::simulate::{float_twin, float_twin_pairs};
    let build = || {
        let mut g = Graph::new("t");
        let q = [-128, 0, 127, 5, -5, 1];
        let qv = g.add_const("q", codes::encode(ElemType::Int8, &[2, 3], &q));
        let sv = g.add_const("s", tensor::from_f32("", &[3], &[0.5, 2.0, 0.25]));
        let zv = g.add_const("z", codes::encode(ElemType::Int8, &[3], &[0, 1, -4]));
        let mut dq = Node::new("DequantizeLinear", "dq");
        dq.set_attr(quench_ir::attr::int("axis", -1));
        let (_, y) = g.add_op(dq, &[qv, sv, zv], &["y"]);
        g.add_output(y[0]);
        (g, y[0])
    };
    let (mut g, y) = build();
    assert_eq!(float_twin(&mut g, 21), (0, 1));
    let got = g
        .const_tensor(y)
        .and_then(|t| tensor::to_f32(t).ok())
        .ok_or("not folded")?;
    // Row 0: (-128 - 0) * 0.5, (0 - 1) * 2, (127 + 4) * 0.25;
    // row 1: (5 - 0) * 0.5, (-5 - 1) * 2, (1 + 4) * 0.25.
    assert_eq!(got, vec![-64.0, -2.0, 32.75, 2.5, -12.0, 1.25]);

    // A Q/DQ pair: the pair list names the quantized tensor and the twin's
    // output, which took over the graph output's name.
    let mut g = Graph::new("t");
    let x = g.add_input("x", None);
    let sv = g.add_const("s", tensor::from_f32("", &[], &[0.5]));
    let zv = g.add_const("z", codes::encode(ElemType::Uint8, &[], &[128]));
    let (_, q) = g.add_op(Node::new("QuantizeLinear", "q"), &[x, sv, zv], &["xq"]);
    let (_, d) = g.add_op(
        Node::new("DequantizeLinear", "dq"),
        &[q[0], sv, zv],
        &["xd"],
    );
    g.add_output(d[0]);
    let mut g2 = g.clone();
    assert_eq!(
        float_twin_pairs(&mut g, 21),
        (vec![("x".to_string(), "xd".to_string())], 0)
    );
    assert_eq!(float_twin(&mut g2, 21), (1, 0));
    Ok(())
}
