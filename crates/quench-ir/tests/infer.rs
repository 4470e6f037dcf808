//! The output types the text form shows for nodes a model does not annotate
//! (`infer.rs`), each against the shape the ONNX operator spec gives,
//! worked out by hand in the comment of its case. (Mutation testing found
//! the shape rules otherwise unchecked: the fixtures' exporters annotate
//! most values; see benches/results/mutants_2026-11-27.md.)

use quench_ir::{parse_graph, GraphText};

/// The type printed for `%y`, defined by `node` (written without a type,
/// `: ?`) after the constant lines `consts`, in a graph with `inputs`.
fn shown(inputs: &str, consts: &[&str], node: &str) -> String {
    let mut text = format!("graph g({inputs}) -> (%y)\n");
    for c in consts {
        text.push_str(&format!("  {c}\n"));
    }
    text.push_str(&format!("  %y = {node} : ?\n"));
    let g = match parse_graph(&text) {
        Ok(g) => g,
        Err(e) => return format!("parse error {e} in\n{text}"),
    };
    let printed = g.to_text();
    printed
        .lines()
        .find(|l| l.trim_end().ends_with("# y"))
        .and_then(|l| l.rsplit_once(" : "))
        .map(|(_, t)| t.split('#').next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|| format!("no line for y in\n{printed}"))
}

/// (inputs, constants, node, expected type).
type Case = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
);

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for (inputs, consts, node, want) in cases {
        let got = shown(inputs, consts, node);
        if got != *want {
            failures.push(format!("{node} over ({inputs}): got {got}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const W: &[&str] = &["%w = const f32[8,3,3,3]"];

#[test]
fn convolution_and_pooling_shapes() {
    check(&[
        // out = floor((n + pad_begin + pad_end - dil*(k-1) - 1) / s) + 1:
        // (10 + 2 - 3) / 2 + 1 = 5.
        (
            "%x: f32[1,3,10,10]",
            W,
            "Conv(%x, %w) {pads=[1,1,1,1], strides=[2,2]}",
            "f32[1,8,5,5]",
        ),
        // Dilation 2 makes the 3-tap kernel span 5: 10 - 5 + 1 = 6, 9 - 5 + 1 = 5.
        (
            "%x: f32[1,3,10,9]",
            W,
            "Conv(%x, %w) {dilations=[2,2]}",
            "f32[1,8,6,5]",
        ),
        // Asymmetric pads: height (10 + 0 + 2 - 3) + 1 = 10, width (10 + 1 + 0 - 3) + 1 = 9.
        (
            "%x: f32[1,3,10,10]",
            W,
            "Conv(%x, %w) {pads=[0,1,2,0]}",
            "f32[1,8,10,9]",
        ),
        // SAME_*: ceil(n / s) = ceil(9 / 2) = 5, ceil(10 / 2) = 5.
        (
            "%x: f32[1,3,9,10]",
            W,
            "Conv(%x, %w) {auto_pad=\"SAME_UPPER\", strides=[2,2]}",
            "f32[1,8,5,5]",
        ),
        (
            "%x: f32[1,3,9,10]",
            W,
            "Conv(%x, %w) {auto_pad=\"SAME_LOWER\", strides=[3,3]}",
            "f32[1,8,3,4]",
        ),
        // VALID: floor((n - k) / s) + 1 = (9 - 3) / 2 + 1 = 4, (10 - 3) / 2 + 1 = 4.
        (
            "%x: f32[1,3,9,10]",
            W,
            "Conv(%x, %w) {auto_pad=\"VALID\", strides=[2,2]}",
            "f32[1,8,4,4]",
        ),
        // An unknown batch stays unknown; an unknown spatial dim too.
        (
            "%x: f32[?,3,8,?]",
            W,
            "Conv(%x, %w) {pads=[1,1,1,1]}",
            "f32[?,8,8,?]",
        ),
        // A kernel larger than the input has no valid output: unknown.
        ("%x: f32[1,3,2,2]", W, "Conv(%x, %w)", "f32[1,8,?,?]"),
        // A zero stride is invalid: unknown (the other dim: 8 - 3 + 1 = 6).
        (
            "%x: f32[1,3,8,8]",
            W,
            "Conv(%x, %w) {strides=[0,1]}",
            "f32[1,8,?,6]",
        ),
        // Weight rank differs from the input's: no shape.
        ("%x: f32[1,3,8]", W, "Conv(%x, %w)", "f32[*]"),
        // Pooling: kernel from the attribute, channels from the input.
        // floor((10 - 3) / 2) + 1 = 4; with ceil_mode ceil(7 / 2) + 1 = 5.
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {kernel_shape=[3,3], strides=[2,2]}",
            "f32[1,3,4,4]",
        ),
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {ceil_mode=1, kernel_shape=[3,3], strides=[2,2]}",
            "f32[1,3,5,5]",
        ),
        // 1-D: (7 + 0 + 1 - 2) / 2 + 1 = 4.
        (
            "%x: f32[2,4,7]",
            &[],
            "AveragePool(%x) {kernel_shape=[2], pads=[0,1], strides=[2]}",
            "f32[2,4,4]",
        ),
        // A kernel of the wrong rank, attribute lists of the wrong length,
        // an unknown auto_pad mode or a rank-2 input: no shape.
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {kernel_shape=[3]}",
            "f32[*]",
        ),
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {kernel_shape=[3,3], pads=[1,1]}",
            "f32[*]",
        ),
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {kernel_shape=[3,3], strides=[1]}",
            "f32[*]",
        ),
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {dilations=[1], kernel_shape=[3,3]}",
            "f32[*]",
        ),
        (
            "%x: f32[1,3,10,10]",
            &[],
            "MaxPool(%x) {auto_pad=\"BOGUS\", kernel_shape=[3,3]}",
            "f32[1,3,?,?]",
        ),
        (
            "%x: f32[4,3]",
            &[],
            "MaxPool(%x) {kernel_shape=[3]}",
            "f32[*]",
        ),
        (
            "%x: f32[1,3,7,5]",
            &[],
            "GlobalAveragePool(%x)",
            "f32[1,3,1,1]",
        ),
        ("%x: f32[2,6,9]", &[], "GlobalMaxPool(%x)", "f32[2,6,1]"),
        ("%x: f32[2,6]", &[], "GlobalMaxPool(%x)", "f32[*]"),
    ]);
}

#[test]
fn matrix_and_layout_shapes() {
    check(&[
        // Flatten: [prod(d[..a]), prod(d[a..])].
        ("%x: f32[2,3,4,5]", &[], "Flatten(%x)", "f32[2,60]"),
        ("%x: f32[2,3,4,5]", &[], "Flatten(%x) {axis=2}", "f32[6,20]"),
        (
            "%x: f32[2,3,4,5]",
            &[],
            "Flatten(%x) {axis=-1}",
            "f32[24,5]",
        ),
        (
            "%x: f32[2,3,4,5]",
            &[],
            "Flatten(%x) {axis=0}",
            "f32[1,120]",
        ),
        (
            "%x: f32[2,3,4,5]",
            &[],
            "Flatten(%x) {axis=4}",
            "f32[120,1]",
        ),
        ("%x: f32[2,3,4,5]", &[], "Flatten(%x) {axis=5}", "f32[*]"),
        ("%x: f32[2,?,4,5]", &[], "Flatten(%x) {axis=2}", "f32[?,20]"),
        // Gemm: (M, K) x (K, N) -> (M, N), transposes by flag.
        (
            "%a: f32[3,7], %b: f32[7,2]",
            &[],
            "Gemm(%a, %b)",
            "f32[3,2]",
        ),
        (
            "%a: f32[7,3], %b: f32[7,2]",
            &[],
            "Gemm(%a, %b) {transA=1}",
            "f32[3,2]",
        ),
        (
            "%a: f32[3,7], %b: f32[2,7]",
            &[],
            "Gemm(%a, %b) {transB=1}",
            "f32[3,2]",
        ),
        (
            "%a: f32[3,7,1], %b: f32[7,2]",
            &[],
            "Gemm(%a, %b)",
            "f32[*]",
        ),
        // MatMul: batch dims broadcast, then (.., M, K) x (.., K, N).
        (
            "%a: f32[2,1,3,4], %b: f32[5,4,7]",
            &[],
            "MatMul(%a, %b)",
            "f32[2,5,3,7]",
        ),
        (
            "%a: f32[3,4], %b: f32[4,6]",
            &[],
            "MatMul(%a, %b)",
            "f32[3,6]",
        ),
        ("%a: f32[4], %b: f32[4,6]", &[], "MatMul(%a, %b)", "f32[*]"),
        ("%a: f32[3,4], %b: f32[4]", &[], "MatMul(%a, %b)", "f32[*]"),
        // Reshape: 0 copies the input dim (unless allowzero), -1 takes the rest.
        (
            "%x: f32[2,3,4]",
            &["%s = const i64[2] [0,-1]"],
            "Reshape(%x, %s)",
            "f32[2,12]",
        ),
        (
            "%x: f32[2,3,4]",
            &["%s = const i64[2] [-1,6]"],
            "Reshape(%x, %s)",
            "f32[4,6]",
        ),
        (
            "%x: f32[2,?,4]",
            &["%s = const i64[3] [0,0,4]"],
            "Reshape(%x, %s)",
            "f32[2,?,4]",
        ),
        (
            "%x: f32[2,3,4]",
            &["%s = const i64[2] [5,-1]"],
            "Reshape(%x, %s)",
            "f32[5,?]",
        ),
        (
            "%x: f32[2,3,4]",
            &["%s = const i64[2] [0,-1]"],
            "Reshape(%x, %s) {allowzero=1}",
            "f32[0,?]",
        ),
        (
            "%x: f32[2,3,4], %s: i64[2]",
            &[],
            "Reshape(%x, %s)",
            "f32[*]",
        ),
        // Transpose: out[i] = in[perm[i]], reversed by default.
        (
            "%x: f32[2,3,4]",
            &[],
            "Transpose(%x) {perm=[1,2,0]}",
            "f32[3,4,2]",
        ),
        ("%x: f32[2,3,4]", &[], "Transpose(%x)", "f32[4,3,2]"),
        (
            "%x: f32[2,3,4]",
            &[],
            "Transpose(%x) {perm=[-1,0,1]}",
            "f32[4,2,3]",
        ),
        (
            "%x: f32[2,3,4]",
            &[],
            "Transpose(%x) {perm=[1,0]}",
            "f32[*]",
        ),
        // Concat: the axis dims add up.
        (
            "%a: f32[2,3], %b: f32[2,5]",
            &[],
            "Concat(%a, %b) {axis=1}",
            "f32[2,8]",
        ),
        (
            "%a: f32[2,3], %b: f32[2,5], %c: f32[2,1]",
            &[],
            "Concat(%a, %b, %c) {axis=-1}",
            "f32[2,9]",
        ),
        (
            "%a: f32[2,3], %b: f32[2,?]",
            &[],
            "Concat(%a, %b) {axis=1}",
            "f32[2,?]",
        ),
        (
            "%a: f32[2,3], %b: f32[2]",
            &[],
            "Concat(%a, %b) {axis=0}",
            "f32[*]",
        ),
        // Unsqueeze / Squeeze by attribute (opset < 13) or constant input.
        (
            "%x: f32[2,3]",
            &[],
            "Unsqueeze(%x) {axes=[0,3]}",
            "f32[1,2,3,1]",
        ),
        (
            "%x: f32[2,3]",
            &[],
            "Unsqueeze(%x) {axes=[3,0]}",
            "f32[1,2,3,1]",
        ),
        (
            "%x: f32[2,3]",
            &[],
            "Unsqueeze(%x) {axes=[-1]}",
            "f32[2,3,1]",
        ),
        (
            "%x: f32[2,3]",
            &["%a = const i64[1] [1]"],
            "Unsqueeze(%x, %a)",
            "f32[2,1,3]",
        ),
        ("%x: f32[2,3]", &[], "Unsqueeze(%x) {axes=[5]}", "f32[*]"),
        (
            "%x: f32[1,3,1,4]",
            &[],
            "Squeeze(%x) {axes=[0,2]}",
            "f32[3,4]",
        ),
        (
            "%x: f32[1,3,1,4]",
            &[],
            "Squeeze(%x) {axes=[2,0]}",
            "f32[3,4]",
        ),
        (
            "%x: f32[1,3,1,4]",
            &[],
            "Squeeze(%x) {axes=[-2]}",
            "f32[1,3,4]",
        ),
        (
            "%x: f32[1,3,1,4]",
            &["%a = const i64[1] [0]"],
            "Squeeze(%x, %a)",
            "f32[3,1,4]",
        ),
    ]);
}

#[test]
fn broadcasting_and_element_types() {
    check(&[
        // Numpy broadcasting: right-aligned, 1 stretches.
        (
            "%a: f32[2,1,4], %b: f32[3,1]",
            &[],
            "Add(%a, %b)",
            "f32[2,3,4]",
        ),
        ("%a: f32[?,4], %b: f32[1,4]", &[], "Mul(%a, %b)", "f32[?,4]"),
        ("%a: f32[], %b: f32[3]", &[], "Sub(%a, %b)", "f32[3]"),
        ("%a: f32[1], %b: f32[1,1]", &[], "Div(%a, %b)", "f32[1,1]"),
        // Disagreeing dims cannot be told.
        ("%a: f32[2,3], %b: f32[4,3]", &[], "Add(%a, %b)", "f32[?,3]"),
        ("%a: i32[2,3], %b: i32[3]", &[], "Max(%a, %b)", "i32[2,3]"),
        // Comparisons and logic give bool.
        ("%a: f32[2,3], %b: f32[3]", &[], "Less(%a, %b)", "bool[2,3]"),
        ("%a: bool[4], %b: bool[4]", &[], "Xor(%a, %b)", "bool[4]"),
        // Where takes the element type of its second input.
        (
            "%c: bool[2,1], %a: i64[1,3], %b: i64[2,3]",
            &[],
            "Where(%c, %a, %b)",
            "i64[2,3]",
        ),
        // An input of unknown shape: element type only.
        ("%a: f32[2,3], %b: f32[*]", &[], "Add(%a, %b)", "f32[*]"),
        // Same as input 0.
        ("%x: f16[2,3]", &[], "Relu(%x)", "f16[2,3]"),
        (
            "%x: f32[2,3], %s: f32[3], %b: f32[3]",
            &[],
            "LayerNormalization(%x, %s, %b)",
            "f32[2,3]",
        ),
        // Element type of input 0, shape unknown (no shape rule).
        ("%x: f16[2,3]", &[], "ReduceSum(%x)", "f16[*]"),
        // OneHot: values (input 2) give the type.
        (
            "%i: i64[4], %d: i64[], %v: f32[2]",
            &[],
            "OneHot(%i, %d, %v)",
            "f32[*]",
        ),
        // Fixed element types with the input's shape.
        (
            "%x: i8[2,3], %s: f32[], %z: i8[]",
            &[],
            "DequantizeLinear(%x, %s, %z)",
            "f32[2,3]",
        ),
        ("%x: f32[5]", &[], "DynamicQuantizeLinear(%x)", "u8[5]"),
        // Cast: `to`, input shape (7 = INT64).
        ("%x: f32[2,3]", &[], "Cast(%x) {to=7}", "i64[2,3]"),
        // QuantizeLinear: the zero point's type, else output_dtype, else u8.
        (
            "%x: f32[2,3], %s: f32[], %z: i8[]",
            &[],
            "QuantizeLinear(%x, %s, %z)",
            "i8[2,3]",
        ),
        (
            "%x: f32[2,3], %s: f32[]",
            &[],
            "QuantizeLinear(%x, %s) {output_dtype=5}",
            "i16[2,3]",
        ),
        (
            "%x: f32[2,3], %s: f32[]",
            &[],
            "QuantizeLinear(%x, %s)",
            "u8[2,3]",
        ),
        // Shape: i64[end - start], both clamped to [0, rank].
        ("%x: f32[2,3,4,5]", &[], "Shape(%x)", "i64[4]"),
        (
            "%x: f32[2,3,4,5]",
            &[],
            "Shape(%x) {end=-1, start=1}",
            "i64[2]",
        ),
        ("%x: f32[2,3,4,5]", &[], "Shape(%x) {start=-10}", "i64[4]"),
        (
            "%x: f32[2,3,4,5]",
            &[],
            "Shape(%x) {end=9, start=3}",
            "i64[1]",
        ),
        (
            "%x: f32[2,3,4,5]",
            &[],
            "Shape(%x) {end=1, start=3}",
            "i64[0]",
        ),
        ("%x: f32[*]", &[], "Shape(%x)", "i64[*]"),
        ("%x: f32[2,3]", &[], "Size(%x)", "i64[]"),
        ("%x: f32[2,3]", &[], "ArgMax(%x)", "i64[*]"),
        ("%x: f32[2,3]", &[], "NonZero(%x)", "i64[*]"),
        (
            "%a: u8[2,3], %b: u8[3,4]",
            &[],
            "MatMulInteger(%a, %b)",
            "i32[*]",
        ),
        // Constant: the tensor's type, or a scalar float / int.
        (
            "%x: f32[1]",
            &[],
            "Constant() {value=tensor i32[2,2] [1,2,3,4]}",
            "i32[2,2]",
        ),
        ("%x: f32[1]", &[], "Constant() {value_float=1.5}", "f32[]"),
        ("%x: f32[1]", &[], "Constant() {value_int=3}", "i64[]"),
        ("%x: f32[1]", &[], "Constant() {value_ints=[3]}", "?"),
        // ConstantOfShape: the value's type (f32 by default), the constant
        // shape input.
        (
            "%x: f32[1]",
            &["%s = const i64[2] [2,3]"],
            "ConstantOfShape(%s) {value=tensor i32[1] [7]}",
            "i32[2,3]",
        ),
        (
            "%x: f32[1]",
            &["%s = const i64[1] [4]"],
            "ConstantOfShape(%s)",
            "f32[4]",
        ),
        ("%s: i64[2]", &[], "ConstantOfShape(%s)", "f32[*]"),
        // Control flow and unknown ops: nothing.
        ("%x: f32[2]", &[], "custom.Op(%x)", "?"),
    ]);
}

/// A declared type is never replaced, and types flow through unannotated
/// chains.
#[test]
fn declared_types_win_and_types_chain() {
    let text = "graph g(%x: f32[1,3,10,10]) -> (%2)
  %w = const f32[8,3,3,3]
  %0 = Conv(%x, %w) {pads=[1,1,1,1]} : f32[1,8,?,?]
  %1 = Relu(%0) : ?
  %2 = GlobalAveragePool(%1) : ?
";
    let g = parse_graph(text).map_err(|e| e.to_string());
    let printed = g.map(|g| g.to_text()).unwrap_or_else(|e| e);
    assert!(printed.contains(": f32[1,8,?,?]"), "{printed}");
    assert!(printed.contains("Relu(%0) : f32[1,8,?,?]"), "{printed}");
    assert!(
        printed.contains("GlobalAveragePool(%1) : f32[1,8,1,1]"),
        "{printed}"
    );
}
