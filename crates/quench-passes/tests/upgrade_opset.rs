//! `upgrade_opset` in this crate's own tests: each rewrite of the module
//! docs on a graph in IR text, compared with the form the ONNX operator
//! changelog gives (reviewed by hand against it: attributes that became
//! inputs hold the same values, Softmax-like ops of opset < 13 on a
//! non-last axis become Flatten -> op(axis=-1) -> Reshape(Shape(x)),
//! Upsample becomes Resize with asymmetric coordinates), the rewrite
//! counts, and every reason `check` declines. The root package's
//! tests/opset_upgrade.rs runs upgraded models in tract; these run without
//! it. (Mutation testing found `upgrade_opset` unchecked by the crate's
//! tests; see benches/results/mutants_2026-11-27.md.)

use quench_ir::{parse_model, TextOptions};
use quench_passes::upgrade_opset::{apply, check};

/// `check` then `apply` from `from` to `to`; the rewrite count and the
/// printed model (constants up to 8 elements with data).
fn upgrade(text: &str, from: i64, to: i64) -> Result<String, String> {
    let mut m = parse_model(text).map_err(|e| e.to_string())?;
    check(&m.graph, from, to)?;
    let n = apply(&mut m.graph, from, to);
    m.set_opset("", to);
    m.graph.verify().map_err(|e| e.to_string())?;
    let opts = TextOptions {
        max_data_elements: 8,
    };
    Ok(format!("{n}\n{}", m.to_text_with(&opts)))
}

fn assert_text(got: Result<String, String>, want: &str) {
    match got {
        Ok(got) => assert!(
            got.trim_end() == want.trim_end(),
            "got:\n{got}\nwant:\n{want}"
        ),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

const OPSET7: &str = "# ir_version 3; opset ai.onnx 7
graph main(%x: f32[1,4,6], %i: i64[1,4,6], %m: f32[2,3,4,5]) -> (%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14)
  %s = const f32[4]
  %b = const f32[4]
  %mu = const f32[4]
  %v = const f32[4]
  %0 = BatchNormalization(%x, %s, %b, %mu, %v) {spatial=1} : ?  # bn: 0
  %1 = Slice(%x) {axes=[2], ends=[4], starts=[1]} : ?  # slice: 1
  %2, %2i = TopK(%x) {k=3} : ?, ?  # topk: 2, 2i
  %3 = Clip(%x) {max=6.0, min=0.0} : ?  # clip: 3
  %4 = Pad(%x) {pads=[0,0,1,0,0,1], value=0.5} : ?  # pad: 4
  %5, %5m = Dropout(%x) {ratio=0.25} : ?, ?  # drop: 5, 5m
  %6, %6b = Split(%x) {axis=1, split=[1,3]} : ?, ?  # split: 6, 6b
  %7 = Squeeze(%m) {axes=[0]} : ?  # sq: 7
  %8 = Unsqueeze(%x) {axes=[0]} : ?  # unsq: 8
  %9 = ReduceSum(%x) {axes=[1]} : ?  # rsum: 9
  %10 = ReduceMean(%x) {axes=[1]} : ?  # rmean: 10
  %11 = Softmax(%m) {axis=1} : ?  # sm: 11
  %12 = Softmax(%m) {axis=3} : ?  # sm_last: 12
  %13 = Scatter(%x, %i, %x) {axis=1} : ?  # sc: 13
  %14 = Upsample(%m) {mode=\"nearest\", scales=[1.0,1.0,2.0,2.0]} : ?  # up: 14
";

/// 7 -> 13: every rewrite up to 13 at once (13 nodes); ReduceMean keeps
/// its axes attribute until 18, the last-axis Softmax is unchanged.
#[test]
fn opset_7_to_13_rewrites_every_changed_op() {
    assert_text(
        upgrade(OPSET7, 7, 13),
        r#"13
# ir_version 3; opset ai.onnx 13
graph main(%x: f32[1,4,6], %i: i64[1,4,6], %m: f32[2,3,4,5]) -> (%0, %1, %2, %4, %5, %6, %8, %10, %11, %12, %13, %20, %14, %15, %16)
  %w0 = const f32[4] [1.0,1.125,1.25,1.375]     # s
  %w1 = const f32[4] [1.0,1.125,1.25,1.375]     # b
  %w2 = const f32[4] [1.0,1.125,1.25,1.375]     # mu
  %w3 = const f32[4] [1.0,1.125,1.25,1.375]     # v
  %w4 = const i64[1] [1]                        # slice_starts
  %w5 = const i64[1] [4]                        # slice_ends
  %w6 = const i64[1] [2]                        # slice_axes
  %w7 = const i64[1] [3]                        # topk_k
  %w8 = const f32[] [0.0]                       # clip_min
  %w9 = const f32[] [6.0]                       # clip_max
  %w10 = const i64[6] [0,0,1,0,0,1]             # pad_pads
  %w11 = const f32[] [0.5]                      # pad_value
  %w12 = const i64[2] [1,3]                     # split_split
  %w13 = const i64[1] [0]                       # sq_axes
  %w14 = const i64[1] [0]                       # unsq_axes
  %w15 = const i64[1] [1]                       # rsum_axes
  %w16 = const f32[4] [1.0,1.0,2.0,2.0]         # up_scales
  %0 = BatchNormalization(%x, %w0, %w1, %w2, %w3) : f32[1,4,6]  # bn: 0
  %1 = Slice(%x, %w4, %w5, %w6) : f32[*]        # slice: 1
  %2, %3 = TopK(%x, %w7) : f32[*], ?            # topk: 2, 2i
  %4 = Clip(%x, %w8, %w9) : f32[1,4,6]          # clip: 3
  %5 = Pad(%x, %w10, %w11) : f32[*]             # pad: 4
  %6, %7 = Dropout(%x) : f32[1,4,6], ?          # drop: 5, 5m
  %8, %9 = Split(%x, %w12) {axis=1} : f32[*], ? # split: 6, 6b
  %10 = Squeeze(%m, %w13) : f32[3,4,5]          # sq: 7
  %11 = Unsqueeze(%x, %w14) : f32[1,1,4,6]      # unsq: 8
  %12 = ReduceSum(%x, %w15) : f32[*]            # rsum: 9
  %13 = ReduceMean(%x) {axes=[1]} : f32[*]      # rmean: 10
  %14 = Softmax(%m) {axis=3} : f32[2,3,4,5]     # sm_last: 12
  %15 = ScatterElements(%x, %i, %x) {axis=1} : f32[1,4,6]  # sc: 13
  %16 = Resize(%m, _, %w16) {coordinate_transformation_mode="asymmetric", mode="nearest", nearest_mode="floor"} : f32[*]  # up: 14
  %17 = Flatten(%m) {axis=1} : f32[2,60]        # sm_flatten: sm_2d
  %18 = Softmax(%17) {axis=-1} : f32[2,60]      # sm: sm_out_2d
  %19 = Shape(%m) : i64[4]                      # sm_shape: sm_in_shape
  %20 = Reshape(%18, %19) : f32[*]              # sm_restore: 11
"#,
    );
    // Up to 9 only BatchNormalization changes; Scatter is still valid at
    // 10 and the Softmax rewrite waits for 13.
    let nine = upgrade(OPSET7, 7, 9).map(|t| t.lines().next().map(str::to_string));
    assert_eq!(nine, Ok(Some("1".to_string())));
    let ten = upgrade(OPSET7, 7, 10).map(|t| t.lines().next().map(str::to_string));
    // bn, slice, topk, upsample.
    assert_eq!(ten, Ok(Some("4".to_string())));
    let twelve = upgrade(OPSET7, 7, 12).map(|t| t.lines().next().map(str::to_string));
    // ... and scatter, clip, pad, dropout.
    assert_eq!(twelve, Ok(Some("8".to_string())));
}

/// Resize-10 -> 11+: asymmetric coordinates, scales moved to input 2,
/// nearest floors when every constant scale enlarges and rounds up when
/// every one shrinks; linear gets no nearest_mode. Custom-domain ops are
/// never touched.
#[test]
fn resize_10_gets_its_opset_10_sampling() {
    let text = "# ir_version 5; opset ai.onnx 10
graph main(%x: f32[1,2,4,4], %s: f32[4]) -> (%0, %1, %2, %3)
  %up = const f32[4] [1.0,1.0,2.0,3.0]
  %down = const f32[4] [1.0,1.0,0.5,0.5]
  %0 = Resize(%x, %up) {mode=\"nearest\"} : ?  # r_up: 0
  %1 = Resize(%x, %down) : ?  # r_down: 1
  %2 = Resize(%x, %s) {mode=\"linear\"} : ?  # r_lin: 2
  %3 = custom.Softmax(%x) {axis=1} : ?  # c: 3
";
    assert_text(
        upgrade(text, 10, 13),
        r#"3
# ir_version 5; opset ai.onnx 13
graph main(%x: f32[1,2,4,4], %s: f32[4]) -> (%0, %1, %2, %3)
  %w0 = const f32[4] [1.0,1.0,2.0,3.0]          # up
  %w1 = const f32[4] [1.0,1.0,0.5,0.5]          # down
  %0 = Resize(%x, _, %w0) {coordinate_transformation_mode="asymmetric", mode="nearest", nearest_mode="floor"} : f32[*]  # r_up: 0
  %1 = Resize(%x, _, %w1) {coordinate_transformation_mode="asymmetric", nearest_mode="ceil"} : f32[*]  # r_down: 1
  %2 = Resize(%x, _, %s) {coordinate_transformation_mode="asymmetric", mode="linear"} : f32[*]  # r_lin: 2
  %3 = custom.Softmax(%x) {axis=1} : ?          # c: 3
"#,
    );
}

const OPSET9: &str = "# ir_version 3; opset ai.onnx 9
graph main(%x: f32[1,2,4,4], %y: f32[1,2,4,4], %s: f32[4]) -> (%0, %1, %2, %3, %4)
  %0 = Upsample(%x, %s) {mode=\"bilinear\"} : ?  # u_lin: 0
  %1 = Upsample(%x, %s) : ?  # u_near: 1
  %2 = Softmax(%x) {axis=-2} : ?  # sm: 2
  %3 = LogSoftmax(%y) {axis=-1} : ?  # lsm: 3
  %4 = Hardmax(%x) {axis=0} : ?  # hm: 4
";

/// Upsample at exactly 10 becomes the two-input Resize-10 (bilinear ->
/// linear); above 10 the opset-11 form. A negative non-last Softmax axis on
/// a known rank flattens at axis + rank (-2 + 4 = 2); axis -1 is the same
/// op in both opsets.
#[test]
fn upsample_and_softmax_like_ops() {
    assert_text(
        upgrade(OPSET9, 9, 10),
        r#"2
# ir_version 3; opset ai.onnx 10
graph main(%x: f32[1,2,4,4], %y: f32[1,2,4,4], %s: f32[4]) -> (%0, %1, %2, %3, %4)
  %0 = Resize(%x, %s) {mode="linear"} : f32[*]  # u_lin: 0
  %1 = Resize(%x, %s) {mode="nearest"} : f32[*] # u_near: 1
  %2 = Softmax(%x) {axis=-2} : f32[1,2,4,4]     # sm: 2
  %3 = LogSoftmax(%y) {axis=-1} : f32[1,2,4,4]  # lsm: 3
  %4 = Hardmax(%x) {axis=0} : ?                 # hm: 4
"#,
    );
    assert_text(
        upgrade(OPSET9, 9, 13),
        r#"4
# ir_version 3; opset ai.onnx 13
graph main(%x: f32[1,2,4,4], %y: f32[1,2,4,4], %s: f32[4]) -> (%0, %1, %6, %2, %10)
  %0 = Resize(%x, _, %s) {coordinate_transformation_mode="asymmetric", mode="linear"} : f32[*]  # u_lin: 0
  %1 = Resize(%x, _, %s) {coordinate_transformation_mode="asymmetric", mode="nearest", nearest_mode="floor"} : f32[*]  # u_near: 1
  %2 = LogSoftmax(%y) {axis=-1} : f32[1,2,4,4]  # lsm: 3
  %3 = Flatten(%x) {axis=2} : f32[2,16]         # sm_flatten: sm_2d
  %4 = Softmax(%3) {axis=-1} : f32[2,16]        # sm: sm_out_2d
  %5 = Shape(%x) : i64[4]                       # sm_shape: sm_in_shape
  %6 = Reshape(%4, %5) : f32[*]                 # sm_restore: 2
  %7 = Flatten(%x) {axis=0} : f32[1,32]         # hm_flatten: hm_2d
  %8 = Hardmax(%7) {axis=-1} : ?                # hm: hm_out_2d
  %9 = Shape(%x) : i64[4]                       # hm_shape: hm_in_shape
  %10 = Reshape(%8, %9) : ?                     # hm_restore: 4
"#,
    );
}

/// The other Reduce ops' axes move to an input at 18, not before.
#[test]
fn reduce_axes_move_at_18() {
    let text = "# ir_version 8; opset ai.onnx 13
graph main(%x: f32[2,3,4]) -> (%0, %1, %2, %3)
  %a = const i64[1] [1]
  %0 = ReduceMean(%x) {axes=[1], keepdims=0} : ?  # rm: 0
  %1 = ReduceL2(%x) {axes=[0,2]} : ?  # rl2: 1
  %2 = ReduceSum(%x, %a) : ?  # rs: 2
  %3 = ReduceMax(%x) : ?  # rmax: 3
";
    let at17 = upgrade(text, 13, 17);
    assert_eq!(
        at17.as_ref()
            .map(|t| (t.starts_with("0\n"), t.contains("{axes=[0,2]}"))),
        Ok((true, true)),
        "{at17:?}"
    );
    assert_text(
        upgrade(text, 13, 18),
        r#"2
# ir_version 8; opset ai.onnx 18
graph main(%x: f32[2,3,4]) -> (%0, %1, %2, %3)
  %w0 = const i64[1] [1]                        # rm_axes
  %w1 = const i64[2] [0,2]                      # rl2_axes
  %w2 = const i64[1] [1]                        # a
  %0 = ReduceMean(%x, %w0) {keepdims=0} : f32[*]  # rm: 0
  %1 = ReduceL2(%x, %w1) : f32[*]               # rl2: 1
  %2 = ReduceSum(%x, %w2) : f32[*]              # rs: 2
  %3 = ReduceMax(%x) : f32[*]                   # rmax: 3
"#,
    );
}

/// Every decline of `check`, with the node it names; and the nearby cases
/// it accepts.
#[test]
fn check_declines_what_it_cannot_rewrite() {
    let graph = |opset: i64, inputs: &str, node: &str| {
        format!("# ir_version 3; opset ai.onnx {opset}\ngraph main({inputs}) -> (%y)\n  %c = const f32[4] [1.0,1.0,2.0,0.5]\n  %y = {node} : ?  # n: y\n")
    };
    let declined = |opset: i64, to: i64, inputs: &str, node: &str| -> String {
        let text = graph(opset, inputs, node);
        match parse_model(&text) {
            Ok(m) => match check(&m.graph, opset, to) {
                Ok(()) => "accepted".into(),
                Err(e) => e,
            },
            Err(e) => format!("parse error {e}"),
        }
    };
    let x = "%x: f32[1,2,4,4]";
    let cases: &[(i64, i64, &str, &str, &str)] = &[
        (6, 13, x, "Relu(%x)", "opset 6 is older than 7"),
        (
            17,
            21,
            "%x: f32[1,4,2], %s: f32[4], %b: f32[4]",
            "GroupNormalization(%x, %s, %b) {num_groups=2}",
            "node `n` (GroupNormalization) changed meaning in opset 21",
        ),
        (
            11,
            13,
            "%x: f32[*]",
            "Softmax(%x) {axis=-2}",
            "node `n` (Softmax) has a negative axis on an input of unknown rank",
        ),
        (
            10,
            13,
            x,
            "Resize(%x, %c) {mode=\"cubic\"}",
            "node `n` (Resize-10) has mode `cubic`",
        ),
        (
            10,
            13,
            x,
            "Resize(%x, %c)",
            "node `n` (Resize-10, nearest) has scales that are not constant or that both enlarge and shrink",
        ),
        (
            10,
            13,
            "%x: f32[1,2,4,4], %s: f32[4]",
            "Resize(%x, %s)",
            "node `n` (Resize-10, nearest) has scales that are not constant or that both enlarge and shrink",
        ),
        (
            9,
            13,
            "%x: f32[1,2,4,4], %s: f32[4]",
            "Upsample(%x, %s) {mode=\"cubic\"}",
            "node `n` (Upsample) has mode `cubic`",
        ),
        (
            8,
            13,
            "%x: f32[1,2], %s: f32[2], %b: f32[2], %m: f32[2], %v: f32[2]",
            "BatchNormalization(%x, %s, %b, %m, %v) {spatial=0}",
            "node `n` (BatchNormalization) uses spatial=0, removed in opset 9",
        ),
        (
            10,
            13,
            "%x: i32[4]",
            "Clip(%x) {max=6.0, min=0.0}",
            "node `n` (Clip) has an input whose type is not known to be f32",
        ),
        (
            10,
            13,
            "%x: f32[*]",
            "Pad(%x) {pads=[1,1]}",
            "accepted",
        ),
        (
            10,
            13,
            "%x: f64[4]",
            "Pad(%x) {pads=[1,1]}",
            "node `n` (Pad) has an input whose type is not known to be f32",
        ),
        (
            11,
            13,
            "%x: i32[4]",
            "Clip(%x)",
            "accepted",
        ),
        (
            11,
            13,
            "%x: f32[1,2,4,4], %r: f32[0], %s: f32[4]",
            "Resize(%x, %r, %s) {coordinate_transformation_mode=\"tf_half_pixel_for_nn\"}",
            "node `n` uses Resize mode tf_half_pixel_for_nn, removed in opset 13",
        ),
        // Not declined: last-axis Softmax of unknown rank, Resize-10
        // linear with any scales, spatial=1, nearest with one-sided scales.
        (11, 13, "%x: f32[*]", "Softmax(%x) {axis=-1}", "accepted"),
        (11, 13, "%x: f32[*]", "Softmax(%x) {axis=1}", "accepted"),
        (
            10,
            13,
            "%x: f32[1,2,4,4], %s: f32[4]",
            "Resize(%x, %s) {mode=\"linear\"}",
            "accepted",
        ),
        (
            8,
            13,
            "%x: f32[1,2], %s: f32[2], %b: f32[2], %m: f32[2], %v: f32[2]",
            "BatchNormalization(%x, %s, %b, %m, %v) {spatial=1}",
            "accepted",
        ),
        // GroupNormalization is fine when the model is already at 21 or
        // stays below it.
        (
            18,
            20,
            "%x: f32[1,4,2], %s: f32[2], %b: f32[2]",
            "GroupNormalization(%x, %s, %b) {num_groups=2}",
            "accepted",
        ),
    ];
    let mut failures = Vec::new();
    for (from, to, inputs, node, want) in cases {
        let got = declined(*from, *to, inputs, node);
        if got != *want {
            failures.push(format!(
                "{node} ({from} -> {to}): got `{got}`, want `{want}`"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Dropout below 10 is declined only when its mask is used; Scan below 9
/// always.
#[test]
fn dropout_mask_and_scan() {
    let used = "# ir_version 3; opset ai.onnx 9
graph main(%x: f32[4]) -> (%y, %mask)
  %y, %mask = Dropout(%x) : ?, ?  # d: y, mask
";
    let unused = "# ir_version 3; opset ai.onnx 9
graph main(%x: f32[4]) -> (%y)
  %y, %mask = Dropout(%x) : ?, ?  # d: y, mask
";
    let consumed = "# ir_version 3; opset ai.onnx 9
graph main(%x: f32[4]) -> (%z)
  %y, %mask = Dropout(%x) : ?, ?  # d: y, mask
  %z = Not(%mask) : ?  # n: z
";
    let scan = "# ir_version 3; opset ai.onnx 8
graph main(%x: f32[4]) -> (%y)
  %y = Scan(%x) {num_scan_inputs=1} : ?  # s: y
";
    let check_text = |text: &str, from: i64, to: i64| -> Result<(), String> {
        let m = parse_model(text).map_err(|e| e.to_string())?;
        check(&m.graph, from, to)
    };
    let mask_msg = "node `d` (Dropout) uses its mask, whose type changed in opset 10";
    assert_eq!(check_text(used, 9, 13), Err(mask_msg.to_string()));
    assert_eq!(check_text(consumed, 9, 13), Err(mask_msg.to_string()));
    assert_eq!(check_text(unused, 9, 13), Ok(()));
    assert_eq!(check_text(used, 10, 13), Ok(()));
    assert_eq!(
        check_text(scan, 8, 13),
        Err("node `s` (Scan) changed meaning in opset 9".to_string())
    );
    assert_eq!(check_text(scan, 9, 13), Ok(()));
}

/// Subgraphs are not rewritten: a subgraph using an op that changes in
/// `(from, to]` makes `check` decline (Slice changes at 10, 11 and 13).
#[test]
fn subgraphs_with_changing_ops_are_declined() {
    let text = |opset: i64| {
        format!(
            "# ir_version 8; opset ai.onnx {opset}
graph g(%c: bool[], %x: f32[4]) -> (%0)
  %0 = If(%c) {{else_branch=graph(1 nodes), then_branch=graph(1 nodes)}} captures(%x) : ?  # if: y
    else_branch:
      graph e() -> (%0)
        %0 = Relu(^x) : ?  # r: eo
    then_branch:
      graph t() -> (%0)
        %0 = Slice(^x) {{ends=[2], starts=[0]}} : ?  # s: to
"
        )
    };
    let check_text = |opset: i64, to: i64| -> Result<(), String> {
        let m = parse_model(&text(opset)).map_err(|e| e.to_string())?;
        check(&m.graph, opset, to)
    };
    let declined = Err("a subgraph of node `if` uses Slice".to_string());
    assert_eq!(check_text(9, 10), declined);
    assert_eq!(check_text(10, 11), declined);
    assert_eq!(check_text(12, 13), declined);
    assert_eq!(check_text(13, 21), Ok(()));
}

/// `check` knows a comparison gives bool: a Clip (below 11) of a Greater
/// is declined, a Clip of the f32 input accepted.
#[test]
fn clip_of_a_comparison_is_not_f32() {
    let text = |x: &str| {
        format!(
            "# ir_version 5; opset ai.onnx 10
graph g(%x: f32[4], %y: f32[4]) -> (%c)
  %g = Greater(%x, %y) : ?  # gt: g
  %c = Clip({x}) {{max=1.0, min=0.0}} : ?  # clip: c
"
        )
    };
    let run = |x: &str| -> Result<(), String> {
        let m = parse_model(&text(x)).map_err(|e| e.to_string())?;
        check(&m.graph, 10, 13)
    };
    assert_eq!(
        run("%g"),
        Err("node `clip` (Clip) has an input whose type is not known to be f32".to_string())
    );
    assert_eq!(run("%x"), Ok(()));
}

/// The rank of a Conv output whose weight is not a constant comes from
/// `kernel_shape`: 1-D (rank 3) and 3-D (rank 5) convolutions put a
/// Softmax's axis -2 at 1 and 3 when it is flattened for opset 13.
#[test]
fn conv_rank_from_kernel_shape() {
    let text = |x: &str, k: &str| {
        format!(
            "# ir_version 6; opset ai.onnx 11
graph g(%x: {x}, %w: f32[*]) -> (%s)
  %c = Conv(%x, %w) {{kernel_shape={k}}} : ?  # conv: c
  %s = Softmax(%c) {{axis=-2}} : ?  # sm: s
"
        )
    };
    for (x, k, axis) in [("f32[*]", "[3]", "axis=1"), ("f32[*]", "[3,3,3]", "axis=3")] {
        let got = upgrade(&text(x, k), 11, 13).unwrap_or_else(|e| e);
        let flatten = got
            .lines()
            .find(|l| l.contains("Flatten("))
            .unwrap_or_default()
            .to_string();
        assert!(flatten.contains(axis), "{k}: {got}");
    }
}
