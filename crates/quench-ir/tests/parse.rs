//! Reading IR text (`parse.rs`): the bytes of constants written with data,
//! for every element type the text can write, against `to_le_bytes` of the
//! same numbers; the documented fill rule of constants written without
//! data; and the line, column and message of each kind of syntax error
//! (columns are 1-based characters, checked by counting). (Mutation testing
//! found these paths unchecked: the fixtures' round trips only parse what
//! the printer writes; see benches/results/mutants_2026-11-27.md.)

use quench_ir::parse_model;
use quench_onnx::proto::TensorProto;

/// The tensor of constant `name` in a one-constant graph.
fn constant(decl: &str) -> Result<TensorProto, String> {
    let text = format!("graph g(%x: f32[1]) -> (%c)\n  %c = const {decl}  # c\n");
    let m = parse_model(&text).map_err(|e| e.to_string())?;
    let v = m.graph.value_by_name("c").ok_or("no value c")?;
    m.graph
        .const_tensor(v)
        .cloned()
        .ok_or_else(|| "not a constant".to_string())
}

fn raw(decl: &str) -> Vec<u8> {
    match constant(decl) {
        Ok(t) => t.raw_data.map(|b| b.to_vec()).unwrap_or_default(),
        Err(e) => panic!("{decl}: {e}"),
    }
}

#[test]
fn written_data_is_encoded_little_endian_per_type() {
    let cat = |parts: &[&[u8]]| parts.concat();
    assert_eq!(
        raw("f32[2] [0.5,-1.25]"),
        cat(&[&0.5f32.to_le_bytes(), &(-1.25f32).to_le_bytes()])
    );
    // Integers are accepted as float data.
    assert_eq!(
        raw("f64[2] [0.1,3]"),
        cat(&[&0.1f64.to_le_bytes(), &3f64.to_le_bytes()])
    );
    assert_eq!(
        raw("i64[2] [-3,9223372036854775807]"),
        cat(&[&(-3i64).to_le_bytes(), &i64::MAX.to_le_bytes()])
    );
    assert_eq!(raw("u64[1] [5]"), 5u64.to_le_bytes().to_vec());
    assert_eq!(raw("i32[1] [-2147483648]"), i32::MIN.to_le_bytes().to_vec());
    assert_eq!(raw("u32[1] [4294967295]"), u32::MAX.to_le_bytes().to_vec());
    assert_eq!(raw("i16[1] [-32768]"), i16::MIN.to_le_bytes().to_vec());
    assert_eq!(raw("u16[1] [65535]"), u16::MAX.to_le_bytes().to_vec());
    assert_eq!(raw("i8[2] [-128,127]"), vec![0x80, 0x7f]);
    assert_eq!(raw("u8[1] [255]"), vec![255]);
    assert_eq!(raw("bool[2] [true,false]"), vec![1, 0]);
    // Shape and type are the declared ones.
    let t = constant("i16[2,1] [1,2]").unwrap_or_default();
    assert_eq!((t.dims, t.data_type), (vec![2, 1], Some(5)));
}

#[test]
fn constants_without_data_follow_the_fill_rule() {
    // Floating point: 1 + (i mod 8) / 8.
    let f: Vec<u8> = (0..10)
        .flat_map(|i| (1.0f32 + (i % 8) as f32 / 8.0).to_le_bytes())
        .collect();
    assert_eq!(raw("f32[2,5]"), f);
    let d: Vec<u8> = (0..9)
        .flat_map(|i| (1.0f64 + (i % 8) as f64 / 8.0).to_le_bytes())
        .collect();
    assert_eq!(raw("f64[9]"), d);
    // Integers 1, bools true.
    assert_eq!(raw("i64[2]"), [1i64.to_le_bytes(); 2].concat());
    assert_eq!(raw("u64[1]"), 1u64.to_le_bytes().to_vec());
    assert_eq!(raw("i32[3]"), [1i32.to_le_bytes(); 3].concat());
    assert_eq!(raw("u32[1]"), 1u32.to_le_bytes().to_vec());
    assert_eq!(raw("i16[2]"), [1i16.to_le_bytes(); 2].concat());
    assert_eq!(raw("u16[1]"), 1u16.to_le_bytes().to_vec());
    assert_eq!(raw("i8[3]"), vec![1, 1, 1]);
    assert_eq!(raw("u8[2]"), vec![1, 1]);
    assert_eq!(raw("bool[2]"), vec![1, 1]);
    // Every other type: zero bytes of the packed size (f16: 2 bytes, int4:
    // two per byte, rounded up).
    assert_eq!(raw("f16[3]"), vec![0; 6]);
    assert_eq!(raw("i4[3]"), vec![0; 2]);
    // A scalar is one element.
    assert_eq!(raw("f32[]"), 1.0f32.to_le_bytes().to_vec());
}

#[test]
fn syntax_errors_name_line_column_and_problem() {
    let h = "graph g(%x: f32[2]) -> (%0)\n";
    let cases: Vec<(String, (usize, usize, &str))> = vec![
        // Header line.
        (
            "# ir_version 8; opset ai.onnx\ngraph g(%x: f32[2]) -> (%x)\n".into(),
            (1, 30, "expected an integer, found ``"),
        ),
        (
            "# ir_version x; opset ai.onnx 17\ngraph g(%x: f32[2]) -> (%x)\n".into(),
            (1, 14, "expected an integer, found ``"),
        ),
        (
            "# ir_version 8 opset ai.onnx 17\ngraph g(%x: f32[2]) -> (%x)\n".into(),
            (1, 16, "expected `;`, found `opset ai.onn`"),
        ),
        (
            "# ir_version 8; opset ai.onnx 17 extra\ngraph g(%x: f32[2]) -> (%x)\n".into(),
            (1, 34, "unexpected text after the opsets"),
        ),
        // Graph header and layout.
        (
            "graph g(%x: f32[2,]) -> (%x)\n".into(),
            (1, 19, "empty dimension"),
        ),
        (
            "graph g(%x: q32[2]) -> (%x)\n".into(),
            (1, 13, "unknown element type `q32`"),
        ),
        (h.into(), (1, 25, "`%0` is not defined above")),
        (
            "  graph g(%x: f32[2]) -> (%x)\n".into(),
            (1, 1, "expected a graph header indented by 0"),
        ),
        (
            "graph g(%x: f32[2]) -> (%x)\ngraph h(%x: f32[2]) -> (%x)\n".into(),
            (2, 1, "unexpected line after the graph"),
        ),
        (
            format!("{h}  %0 = Relu(%x) : f32[2]\n junk\n"),
            (3, 2, "expected a line indented by 2"),
        ),
        // Constants.
        (
            format!("{h}  %0 = const f32[2] [1.0,2.0] junk\n"),
            (2, 31, "unexpected text after the constant"),
        ),
        (
            format!("{h}  %0 = const f32[*]\n"),
            (2, 14, "a tensor needs a static shape"),
        ),
        (
            format!("{h}  %0 = const i64[2] [1.5,2]\n"),
            (2, 21, "integer data expected"),
        ),
        (
            format!("{h}  %0 = const string[1] [1]\n"),
            (2, 14, "unknown element type `string`"),
        ),
        (
            format!("{h}  %0 = const f32[2] [1.0]\n"),
            (2, 21, "the data has 1 elements, the shape needs 2"),
        ),
        // A comment naming more outputs than the node has: the column
        // after the code.
        (
            format!("{h}  %0 = Relu(%x) : f32[2]  # r: a, b\n"),
            (2, 25, "the comment names 2 outputs, the node has 1"),
        ),
        // Subgraph bodies under a label no graph attribute waits for, or
        // a malformed label (column of the label, indent + 3).
        (
            "graph g(%c: bool[]) -> (%0)\n  %0 = If(%c) {then_branch=graph(1 nodes)} : ?  # if: y\n    bogus:\n      graph t() -> (%0)\n        %0 = Constant() {value_float=1.0} : ?  # k: o\n".into(),
            (3, 5, "no graph attribute `bogus` waits for a body"),
        ),
        (
            "graph g(%c: bool[]) -> (%0)\n  %0 = If(%c) {then_branch=graph(1 nodes)} : ?  # if: y\n    then_branch[x]:\n      graph t() -> (%0)\n        %0 = Constant() {value_float=1.0} : ?  # k: o\n".into(),
            (3, 5, "bad subgraph label `then_branch[x]`"),
        ),
        // Nodes, values and attributes.
        (
            format!("{h}  %0 = 5\n"),
            (2, 9, "expected `(` at the end of the line"),
        ),
        (
            format!("{h}  %0 = Relu(x) : f32[2]\n"),
            (2, 13, "expected a value (`%name`)"),
        ),
        (
            format!("{h}  %0 = Relu(%) : f32[2]\n"),
            (2, 14, "expected a value name after the sigil"),
        ),
        (
            format!("{h}  %0 = Relu(%x) : f32[2] junk\n"),
            (2, 26, "unexpected text after the node"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{=1}} : f32[2]\n"),
            (2, 18, "expected an attribute name"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=1e}} : f32[2]\n"),
            (2, 20, "bad number `1e`"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=[1,2.5x]}} : f32[2]\n"),
            (2, 23, "bad number `2.5x`"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=true}} : f32[2]\n"),
            (2, 20, "expected a number, string or tensor"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=tensor [1]}} : f32[2]\n"),
            (2, 27, "unknown element type ``"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=tensor f32[*] [1]}} : f32[2]\n"),
            (2, 27, "a tensor needs a static shape"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=\"abc}} : f32[2]\n"),
            (2, 34, "unterminated string"),
        ),
        (
            format!("{h}  %0 = Relu(%x) {{a=\"a\\q\"}} : f32[2]\n"),
            (2, 24, "unknown escape `\\q`"),
        ),
    ];
    let mut failures = Vec::new();
    for (text, (line, column, message)) in &cases {
        match parse_model(text) {
            Ok(_) => failures.push(format!("accepted: {text:?}")),
            Err(e) => {
                if (e.line, e.column, e.message.as_str()) != (*line, *column, *message) {
                    failures.push(format!(
                        "{text:?}: got ({}, {}, {:?})",
                        e.line, e.column, e.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Special float values and string escapes as the module docs write them.
#[test]
fn special_values_and_escapes() {
    let t = raw("f32[3] [nan,inf,-inf]");
    let v: Vec<f32> = t
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(v[0].is_nan());
    assert_eq!(&v[1..], &[f32::INFINITY, f32::NEG_INFINITY]);

    let text = "graph g(%x: f32[2]) -> (%0)\n  %0 = custom.Op(%x) {s=\"a\\nb\\tc\\rd\\0e\\\\f\\\"g\\'h\\u{41}\"} : ?  # op: y\n";
    let m = parse_model(text).map_err(|e| e.to_string());
    let s = m.ok().and_then(|m| {
        let n = m.graph.node_ids()[0];
        m.graph.node(n).attr_string("s")
    });
    assert_eq!(s.as_deref(), Some("a\nb\tc\rd\0e\\f\"g'hA"));
}

/// Printing: infinities and signed zeros by name, int64 data exactly
/// (2^53 + 1 is not an f64).
#[test]
fn special_floats_and_large_integers_print_exactly() {
    use quench_ir::{format_float, TextOptions};
    assert_eq!(format_float(f64::INFINITY), "inf");
    assert_eq!(format_float(f64::NEG_INFINITY), "-inf");
    assert_eq!(format_float(-0.0), "-0.0");
    assert_eq!(format_float(0.0), "0.0");
    let text = "graph g(%x: f32[1]) -> (%c)\n  %c = const i64[2] [9007199254740993,-9007199254740993]  # c\n";
    let printed = parse_model(text)
        .map(|m| {
            m.to_text_with(&TextOptions {
                max_data_elements: 4,
            })
        })
        .unwrap_or_default();
    assert!(
        printed.contains("[9007199254740993,-9007199254740993]"),
        "{printed}"
    );
}
