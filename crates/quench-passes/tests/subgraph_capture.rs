//! A Relu whose output an `If` branch captures must not be absorbed into
//! the previous op's quantized output range: absorbing removes the Relu and
//! renames the MatMul output to the Relu's name, so the branch (which reads
//! the value by name, not through the Q/DQ pair) read the value *before*
//! the Relu. Found by the adversarial pass of issue 12: an If model came
//! out at -3.2 dB SQNR (exit 0) instead of 42.6 dB.
#![allow(clippy::unwrap_used)]

use quench_ir::{parse_model, OpKind};
use quench_passes::quantize::{apply, plan, QuantizeConfig, Ranges};
use quench_passes::PassCx;

const MODEL: &str = "\
# ir_version 8; opset ai.onnx 17
graph g(%x: f32[1,8]) -> (%4)
  %w = const f32[8,8]
  %w2 = const f32[8,4]
  %w3 = const f32[8,4]
  %z = const f32[]
  %0 = MatMul(%x, %w) : f32[1,8]                 # mm: m
  %1 = Relu(%0) : f32[1,8]                       # relu: r
  %2 = ReduceSum(%x) {keepdims=0} : f32[]        # rs: s
  %3 = Greater(%2, %z) : bool[]                  # gt: c
  %4 = If(%3) {else_branch=graph(1 nodes), then_branch=graph(1 nodes)} captures(%1, %w2, %w3) : f32[1,4]  # if: y
    else_branch:
      graph else_branch() -> (%0)
        %0 = MatMul(^r, ^w3) : f32[1,4]          # e_mm: e
    then_branch:
      graph then_branch() -> (%0)
        %0 = MatMul(^r, ^w2) : f32[1,4]          # t_mm: t
";

#[test]
fn relu_captured_by_a_branch_is_not_absorbed() {
    let mut m = parse_model(MODEL).unwrap();
    let cfg = QuantizeConfig::default();
    let pl = plan(&m.graph, &cfg).unwrap();
    let ranges: Ranges = pl
        .tensors_to_observe(&m.graph)
        .into_iter()
        .map(|t| (t, (-4.0, 4.0)))
        .collect();
    let mut cx = PassCx::new(17);
    apply(&mut m.graph, &pl, &ranges, &cfg, 17, &mut cx).unwrap();
    let g = &m.graph;
    let r = g.value_by_name("r").unwrap();
    let producer = g.producer(r).map(|n| g.node(n).kind());
    assert_eq!(
        producer,
        Some(OpKind::Relu),
        "the value the If branches capture must still be the Relu's output"
    );
    let relus = g
        .node_ids()
        .into_iter()
        .filter(|&n| g.contains_node(n) && g.node(n).kind() == OpKind::Relu)
        .count();
    assert_eq!(relus, 1);
}
