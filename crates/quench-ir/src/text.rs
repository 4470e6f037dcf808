//! The text form of the IR: compact, deterministic, built for diffs.
//!
//! ```text
//! # ir_version 8; opset ai.onnx 17
//! graph main(%x: f32[1,3,8,8]) -> (%1)
//!   %w0 = const f32[8,3,3,3]                      # conv1.weight
//!   %0 = Conv(%x, %w0) {pads=[1,1,1,1]} : f32[1,8,8,8]  # conv1: conv1_out
//!   %1 = Relu(%0) : f32[1,8,8,8]                  # relu1: y
//! ```
//!
//! Node outputs are numbered `%0, %1, ...` in topological order; constants
//! `%w0, %w1, ...` in order of first use; graph inputs keep their (sanitised)
//! names; values captured from an enclosing graph print as `^name`. Node
//! outputs without a declared type show the type [`crate::infer`] works out
//! (`f32[1,8]`, or `f32[*]` when only the element type is known); `?` means
//! nothing is known. Attributes
//! are sorted by name and floats print with six significant digits. Tensors
//! show type and shape; with [`TextOptions::max_data_elements`] above zero,
//! constants (and `tensor` attributes) of at most that many elements also
//! show their data, flat, after the type: `%w0 = const f32[2] [0.5,-1.0]`
//! (floats at six significant digits, integers exactly, bools as
//! `true`/`false`; only f32, f64, integer and bool data print). Original ONNX
//! names follow as comments. Subgraph bodies print nested under their node,
//! numbered on their own.
//!
//! [`parse_model`](crate::parse_model) reads this form back; see its module
//! for what it fills in that the text does not show.

use std::collections::HashMap;
use std::fmt::Write;

use quench_onnx::dtype::elem_name;
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use quench_onnx::proto::type_proto::Value as TypeValue;
use quench_onnx::proto::{
    AttributeProto, GraphProto, SparseTensorProto, TensorProto, TensorShapeProto, TypeProto,
};

use crate::graph::{Graph, ValueDef, ValueId};
use crate::Model;

const COMMENT_COLUMN: usize = 48;

/// Options of the text form. The default shows no tensor data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Constants and tensor attributes with at most this many elements show
    /// their data (0: never).
    pub max_data_elements: usize,
}

/// Something that prints as IR text.
pub trait GraphText {
    /// The text with default [`TextOptions`] (no tensor data).
    fn to_text(&self) -> String {
        self.to_text_with(&TextOptions::default())
    }
    fn to_text_with(&self, opts: &TextOptions) -> String;
}

impl GraphText for Graph {
    fn to_text_with(&self, opts: &TextOptions) -> String {
        let mut s = String::new();
        graph_text(self, 0, opts, &mut s);
        s
    }
}

pub(crate) fn model_text(m: &Model, opts: &TextOptions) -> String {
    let mut s = format!("# ir_version {}; opset ", m.header.ir_version());
    let ops: Vec<String> = m.opsets().iter().map(|(d, v)| format!("{d} {v}")).collect();
    s.push_str(&ops.join(", "));
    s.push('\n');
    graph_text(&m.graph, 0, opts, &mut s);
    s
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let numeric_like = s.chars().all(|c| c.is_ascii_digit())
        || (s.starts_with('w') && s.len() > 1 && s[1..].chars().all(|c| c.is_ascii_digit()));
    if s.is_empty() || numeric_like {
        format!("in_{s}")
    } else {
        s
    }
}

fn graph_text(g: &Graph, indent: usize, opts: &TextOptions, s: &mut String) {
    let pad = " ".repeat(indent);
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids());
    let inferred = crate::infer::display_types(g);
    let mut names: HashMap<ValueId, String> = HashMap::new();
    for v in g.inputs() {
        names.insert(*v, format!("%{}", sanitize(&g.value(*v).name)));
    }
    let mut consts: Vec<ValueId> = Vec::new();
    let mut next = 0usize;
    let is_const = |v: ValueId| g.value(v).def == ValueDef::Const;
    for n in &order {
        let node = g.node(*n);
        for v in node.inputs().iter().flatten().chain(node.implicit_inputs()) {
            if is_const(*v) && !names.contains_key(v) {
                names.insert(*v, format!("%w{}", consts.len()));
                consts.push(*v);
            }
        }
        for o in node.outputs().iter().flatten() {
            names.insert(*o, format!("%{next}"));
            next += 1;
        }
    }
    // Constants no node uses (graph outputs, or dead) come last.
    for v in g.value_ids() {
        if is_const(v)
            && !names.contains_key(&v)
            && (g.initializer(v).is_some() || g.use_count(v) > 0)
        {
            names.insert(v, format!("%w{}", consts.len()));
            consts.push(v);
        }
    }
    let name_of = |v: &Option<ValueId>| -> String {
        match v {
            None => "_".to_string(),
            Some(v) => names
                .get(v)
                .cloned()
                .unwrap_or_else(|| match g.value(*v).def {
                    ValueDef::Outer => format!("^{}", sanitize(&g.value(*v).name)),
                    _ => format!("%?{}", sanitize(&g.value(*v).name)),
                }),
        }
    };

    let gname = if g.shell.name().is_empty() {
        "main"
    } else {
        g.shell.name()
    };
    let ins: Vec<String> = g
        .inputs()
        .iter()
        .map(|v| {
            format!(
                "{}: {}",
                name_of(&Some(*v)),
                type_text(g.value(*v).ty.as_ref())
            )
        })
        .collect();
    let outs: Vec<String> = g.outputs().iter().map(|v| name_of(&Some(*v))).collect();
    let _ = writeln!(
        s,
        "{pad}graph {}({}) -> ({})",
        sanitize(gname),
        ins.join(", "),
        outs.join(", ")
    );

    for v in &consts {
        let t = g.initializer(*v);
        let ty = match t {
            Some(t) => tensor_text_with(t, opts),
            None => format!("sparse {}", type_text(g.value(*v).ty.as_ref())),
        };
        let line = format!("{pad}  {} = const {ty}", names[v]);
        push_commented(s, line, &g.value(*v).name);
    }
    for n in &order {
        let node = g.node(*n);
        let outs: Vec<String> = node.outputs().iter().map(&name_of).collect();
        let ins: Vec<String> = node.inputs().iter().map(&name_of).collect();
        let op = if node.domain().is_empty() {
            node.op_type().to_string()
        } else {
            format!("{}.{}", node.domain(), node.op_type())
        };
        let mut line = format!("{pad}  ");
        if !outs.is_empty() {
            let _ = write!(line, "{} = ", outs.join(", "));
        }
        let _ = write!(line, "{op}({})", ins.join(", "));
        let mut attrs: Vec<&AttributeProto> = node.proto.attribute.iter().collect();
        attrs.sort_by(|a, b| a.name().cmp(b.name()));
        if !attrs.is_empty() {
            let a: Vec<String> = attrs
                .iter()
                .map(|a| format!("{}={}", a.name(), attr_text(a, opts)))
                .collect();
            let _ = write!(line, " {{{}}}", a.join(", "));
        }
        if !node.implicit_inputs().is_empty() {
            let c: Vec<String> = node
                .implicit_inputs()
                .iter()
                .map(|v| name_of(&Some(*v)))
                .collect();
            let _ = write!(line, " captures({})", c.join(", "));
        }
        if !node.outputs().is_empty() {
            let tys: Vec<String> = node
                .outputs()
                .iter()
                .map(|o| {
                    o.map(|o| type_text(g.value(o).ty.as_ref().or_else(|| inferred.get(&o))))
                        .unwrap_or_else(|| "_".into())
                })
                .collect();
            let _ = write!(line, " : {}", tys.join(", "));
        }
        let onames: Vec<&str> = node
            .outputs()
            .iter()
            .flatten()
            .map(|o| g.value(*o).name.as_str())
            .collect();
        let comment = if node.name().is_empty() {
            onames.join(", ")
        } else {
            format!("{}: {}", node.name(), onames.join(", "))
        };
        push_commented(s, line, &comment);
        for a in attrs {
            for (k, sg) in a.g.iter().chain(a.graphs.iter()).enumerate() {
                let label = if a.g.is_some() {
                    a.name().to_string()
                } else {
                    format!("{}[{k}]", a.name())
                };
                let _ = writeln!(s, "{pad}    {label}:");
                subgraph_text(sg, indent + 6, opts, s);
            }
        }
    }
}

fn subgraph_text(sg: &GraphProto, indent: usize, opts: &TextOptions, s: &mut String) {
    match crate::import::import_subgraph(sg.clone()) {
        Ok(g) => graph_text(&g, indent, opts, s),
        Err(e) => {
            let _ = writeln!(s, "{}<invalid subgraph: {e}>", " ".repeat(indent));
        }
    }
}

fn push_commented(s: &mut String, mut line: String, comment: &str) {
    if !comment.is_empty() {
        let width = line.chars().count();
        if width < COMMENT_COLUMN {
            line.push_str(&" ".repeat(COMMENT_COLUMN - width));
        } else {
            line.push_str("  ");
        }
        line.push_str("# ");
        line.push_str(comment);
    }
    s.push_str(&line);
    s.push('\n');
}

fn shape_text(shape: Option<&TensorShapeProto>) -> String {
    match shape {
        None => "[*]".into(),
        Some(sh) => {
            let d: Vec<String> = sh
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(DimValue::DimValue(v)) => v.to_string(),
                    Some(DimValue::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect();
            format!("[{}]", d.join(","))
        }
    }
}

/// Prints a type: `f32[1,3,N,?]`, `f32[*]` (unknown rank), `seq<...>`.
pub(crate) fn type_text(t: Option<&TypeProto>) -> String {
    let Some(t) = t else { return "?".into() };
    match &t.value {
        Some(TypeValue::TensorType(tt)) => {
            format!(
                "{}{}",
                tt.elem_type.map(elem_name).unwrap_or_else(|| "?".into()),
                shape_text(tt.shape.as_ref())
            )
        }
        Some(TypeValue::SparseTensorType(tt)) => {
            format!(
                "sparse {}{}",
                tt.elem_type.map(elem_name).unwrap_or_else(|| "?".into()),
                shape_text(tt.shape.as_ref())
            )
        }
        Some(TypeValue::SequenceType(s)) => format!("seq<{}>", type_text(s.elem_type.as_deref())),
        Some(TypeValue::OptionalType(s)) => format!("opt<{}>", type_text(s.elem_type.as_deref())),
        Some(TypeValue::MapType(m)) => {
            format!(
                "map<{},{}>",
                m.key_type.map(elem_name).unwrap_or_else(|| "?".into()),
                type_text(m.value_type.as_deref())
            )
        }
        Some(TypeValue::OpaqueType(o)) => format!("opaque<{}.{}>", o.domain(), o.name()),
        None => "?".into(),
    }
}

fn tensor_text(t: &TensorProto) -> String {
    let d: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", elem_name(t.data_type()), d.join(","))
}

/// `f32[2]`, followed by ` [0.5,-1.0]` when `opts` asks for the data of a
/// tensor this small and the data is readable.
fn tensor_text_with(t: &TensorProto, opts: &TextOptions) -> String {
    let mut s = tensor_text(t);
    if let Some(d) = data_text(t, opts) {
        s.push(' ');
        s.push_str(&d);
    }
    s
}

fn data_text(t: &TensorProto, opts: &TextOptions) -> Option<String> {
    let n = crate::tensor::numel(&t.dims)?;
    if n > opts.max_data_elements {
        return None;
    }
    let dt = DataType::try_from(t.data_type()).ok()?;
    let items: Vec<String> = match dt {
        DataType::Float | DataType::Double => crate::tensor::to_f64(t)
            .ok()?
            .into_iter()
            .map(format_float)
            .collect(),
        DataType::Bool => crate::tensor::to_f64(t)
            .ok()?
            .into_iter()
            .map(|x| (x != 0.0).to_string())
            .collect(),
        DataType::Int64 => crate::tensor::to_i64(t)
            .ok()?
            .into_iter()
            .map(|x| x.to_string())
            .collect(),
        DataType::Int8
        | DataType::Uint8
        | DataType::Int16
        | DataType::Uint16
        | DataType::Int32
        | DataType::Uint32
        | DataType::Uint64 => crate::tensor::to_f64(t)
            .ok()?
            .into_iter()
            .map(|x| format!("{x:.0}"))
            .collect(),
        _ => return None,
    };
    if items.len() != n {
        return None;
    }
    Some(format!("[{}]", items.join(",")))
}

fn sparse_text(t: &SparseTensorProto) -> String {
    let d: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let e = t
        .values
        .as_ref()
        .map(|v| elem_name(v.data_type()))
        .unwrap_or_else(|| "?".into());
    format!("sparse {e}[{}]", d.join(","))
}

fn quote(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn attr_text(a: &AttributeProto, opts: &TextOptions) -> String {
    if let Some(r) = &a.ref_attr_name {
        return format!("@{r}");
    }
    let ty = a
        .r#type
        .and_then(|t| AttributeType::try_from(t).ok())
        .unwrap_or_else(|| infer_attr_type(a));
    match ty {
        AttributeType::Float => format_float(a.f() as f64),
        AttributeType::Int => a.i().to_string(),
        AttributeType::String => quote(a.s()),
        AttributeType::Tensor => {
            a.t.as_ref()
                .map(|t| format!("tensor {}", tensor_text_with(t, opts)))
                .unwrap_or_default()
        }
        AttributeType::Graph => {
            a.g.as_ref()
                .map(|g| format!("graph({} nodes)", g.node.len()))
                .unwrap_or_default()
        }
        AttributeType::SparseTensor => a
            .sparse_tensor
            .as_ref()
            .map(sparse_text)
            .unwrap_or_default(),
        AttributeType::TypeProto => format!("type {}", type_text(a.tp.as_ref())),
        AttributeType::Floats => list(a.floats.iter().map(|f| format_float(*f as f64))),
        AttributeType::Ints => list(a.ints.iter().map(|i| i.to_string())),
        AttributeType::Strings => list(a.strings.iter().map(|s| quote(s))),
        AttributeType::Tensors => list(
            a.tensors
                .iter()
                .map(|t| format!("tensor {}", tensor_text_with(t, opts))),
        ),
        AttributeType::Graphs => list(
            a.graphs
                .iter()
                .map(|g| format!("graph({} nodes)", g.node.len())),
        ),
        AttributeType::SparseTensors => list(a.sparse_tensors.iter().map(sparse_text)),
        AttributeType::TypeProtos => list(
            a.type_protos
                .iter()
                .map(|t| format!("type {}", type_text(Some(t)))),
        ),
        AttributeType::Undefined => "undefined".into(),
    }
}

fn infer_attr_type(a: &AttributeProto) -> AttributeType {
    if a.f.is_some() {
        AttributeType::Float
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else {
        AttributeType::Undefined
    }
}

fn list(it: impl Iterator<Item = String>) -> String {
    format!("[{}]", it.collect::<Vec<_>>().join(","))
}

/// Formats a float with six significant digits, trailing zeros trimmed:
/// `1.0`, `0.5`, `1e-05` → `1e-5`, `3.40282e38`.
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let e = format!("{x:.5e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        let decimals = (5 - exp).max(0) as usize;
        let mut s = format!("{x:.decimals$}");
        if s.contains('.') {
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.push('0');
            }
        } else {
            s.push_str(".0");
        }
        s
    } else {
        let mut m = mant.to_string();
        if m.contains('.') {
            while m.ends_with('0') {
                m.pop();
            }
            if m.ends_with('.') {
                m.pop();
            }
        }
        format!("{m}e{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::format_float;

    #[test]
    fn floats_print_with_six_significant_digits() {
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(1e-5), "1e-5");
        assert_eq!(format_float(0.001), "0.001");
        assert_eq!(format_float(6.0), "6.0");
        assert_eq!(format_float(-3.4028234663852886e38), "-3.40282e38");
        assert_eq!(format_float(123456.7), "123457.0");
        assert_eq!(format_float(1234567.0), "1.23457e6");
        assert_eq!(format_float(0.1f32 as f64), "0.1");
        assert_eq!(format_float(f64::NAN), "nan");
    }
}
