//! Reading the text form back (see [`crate::GraphText`] for the format).
//!
//! [`parse_model`] reads what [`Model::to_text`](crate::Model::to_text)
//! prints, so a test can hold a graph as readable text instead of a binary
//! fixture. The contract is a round trip of the text: for every model `m`,
//! `parse_model(&m.to_text())?.to_text() == m.to_text()` (and the same with
//! any [`TextOptions`](crate::TextOptions)). The model itself is not
//! reproduced exactly, because the text does not show everything:
//!
//! - Names come from the trailing comments: `# name` on a constant,
//!   `# node_name: out0, out1` (or just `# out0, out1` for an unnamed node)
//!   on a node. Without a comment a value is named after its text id
//!   (`%3` → `3`, `%w0` → `w0`) and the node has no name. Graph inputs are
//!   named by their (sanitised) id.
//! - Constant data: a constant or `tensor` attribute written with data
//!   (`const f32[2] [0.5,-1.0]`, `value=tensor i64[2] [1,-1]`) holds exactly
//!   that data; one written by type and shape only is filled with
//!   deterministic data: floating-point elements `1 + (i mod 8) / 8`
//!   (positive and nonzero, so it is a valid BatchNormalization variance or
//!   divisor), integers 1, bools `true`, every other type zero bytes.
//! - Doc strings, metadata, value-info annotations of inputs and
//!   initializer defaults of graph inputs are not in the text and are empty.
//!
//! Lines that are blank or start with `;` are skipped (filetests put their
//! directives there); a first line `# ir_version N; opset D V, ...` sets the
//! model header (default: IR version 8, `ai.onnx` 17). Values must be
//! defined above their first use, as the printer writes them.
//!
//! Errors name the line and column (both 1-based) of the problem.

use std::collections::HashMap;

use bytes::Bytes;
use quench_onnx::dtype::{elem_name, packed_bytes};
use quench_onnx::proto::attribute_proto::AttributeType;
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::tensor_shape_proto::{dimension::Value as DimValue, Dimension};
use quench_onnx::proto::type_proto::{
    Map as MapType, Opaque as OpaqueType, Optional as OptionalType, Sequence as SequenceType,
    SparseTensor as SparseTensorType, Tensor as TensorType, Value as TypeValue,
};
use quench_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    TensorProto, TensorShapeProto, TypeProto,
};

use crate::graph::{Graph, Node, ValueDef, ValueId};
use crate::Model;

/// A syntax or structure error in IR text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line number in the parsed string.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub message: String,
}

/// Parses a model: an optional `# ir_version ...; opset ...` header line and
/// one graph. See the module docs for what the text does not carry.
pub fn parse_model(text: &str) -> Result<Model, ParseError> {
    let mut p = Parser::new(text);
    let mut header = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        ..Default::default()
    };
    if let Some((lineno, line)) = p.peek() {
        if line.trim_start().starts_with("# ir_version") {
            header = parse_header(lineno, line)?;
            p.pos += 1;
        }
    }
    let graph = p.graph(0)?;
    p.expect_end()?;
    Ok(Model { header, graph })
}

/// Parses a graph without a model header.
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    let mut p = Parser::new(text);
    let g = p.graph(0)?;
    p.expect_end()?;
    Ok(g)
}

fn parse_header(lineno: usize, line: &str) -> Result<ModelProto, ParseError> {
    let mut c = Cur::new(line, lineno);
    c.skip_ws();
    c.expect("#")?;
    c.skip_ws();
    c.expect("ir_version")?;
    c.skip_ws();
    let ir = c.int()?;
    c.skip_ws();
    c.expect(";")?;
    c.skip_ws();
    c.expect("opset")?;
    let mut opsets = Vec::new();
    loop {
        c.skip_ws();
        if c.at_end() {
            break;
        }
        let d = c.take_while(|ch| !ch.is_whitespace() && ch != ',');
        if d.is_empty() {
            return Err(c.err("expected an operator-set domain"));
        }
        c.skip_ws();
        let v = c.int()?;
        opsets.push(OperatorSetIdProto {
            domain: Some(if d == "ai.onnx" {
                String::new()
            } else {
                d.to_string()
            }),
            version: Some(v),
        });
        c.skip_ws();
        if !c.eat(",") {
            break;
        }
    }
    c.skip_ws();
    if !c.at_end() {
        return Err(c.err("unexpected text after the opsets"));
    }
    Ok(ModelProto {
        ir_version: Some(ir),
        opset_import: opsets,
        ..Default::default()
    })
}

/// Significant lines: `(1-based line number, text)`.
struct Parser<'a> {
    lines: Vec<(usize, &'a str)>,
    pos: usize,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A graph attribute waiting for its body: the attribute's index in the
/// node's list and, for a `graphs` list, the element.
struct PendingGraph {
    attr: usize,
    elem: Option<usize>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end()))
            .filter(|(_, l)| {
                let t = l.trim_start();
                !t.is_empty() && !t.starts_with(';')
            })
            .collect();
        Parser { lines, pos: 0 }
    }

    fn peek(&self) -> Option<(usize, &'a str)> {
        self.lines.get(self.pos).copied()
    }

    fn expect_end(&self) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some((n, l)) => Err(ParseError {
                line: n,
                column: indent_of(l) + 1,
                message: "unexpected line after the graph".into(),
            }),
        }
    }

    /// A graph whose header line is the current line, at `indent` spaces.
    fn graph(&mut self, indent: usize) -> Result<Graph, ParseError> {
        let Some((lineno, line)) = self.peek() else {
            return Err(ParseError {
                line: self.lines.last().map(|l| l.0).unwrap_or(1),
                column: 1,
                message: "expected `graph NAME(...) -> (...)`".into(),
            });
        };
        self.pos += 1;
        let mut c = Cur::new(line, lineno);
        if indent_of(line) != indent {
            return Err(c.err(format!("expected a graph header indented by {indent}")));
        }
        c.skip_ws();
        let mut st = GraphState {
            g: Graph::default(),
            ids: HashMap::new(),
        };
        c.expect("graph")?;
        c.skip_ws();
        let name = c.take_while(name_char);
        st.g.shell.name = Some(name.to_string());
        c.expect("(")?;
        c.skip_ws();
        if !c.eat(")") {
            loop {
                c.skip_ws();
                let col = c.column();
                let id = c.value_id()?;
                let Some(name) = id.strip_prefix('%') else {
                    return Err(c.err_at(col, "graph inputs are written `%name`"));
                };
                c.skip_ws();
                c.expect(":")?;
                c.skip_ws();
                let ty = c.type_()?;
                let v = st.define(&c, col, name, ValueDef::Input)?;
                st.g.value_mut(v).ty = ty;
                st.g.inputs.push(v);
                st.ids.insert(id, v);
                c.skip_ws();
                if c.eat(")") {
                    break;
                }
                c.expect(",")?;
            }
        }
        c.skip_ws();
        c.expect("->")?;
        c.skip_ws();
        c.expect("(")?;
        let mut outputs = Vec::new();
        c.skip_ws();
        if !c.eat(")") {
            loop {
                c.skip_ws();
                let col = c.column();
                outputs.push((col, c.value_id()?));
                c.skip_ws();
                if c.eat(")") {
                    break;
                }
                c.expect(",")?;
            }
        }
        c.end_or_comment()?;

        while let Some((n, l)) = self.peek() {
            let ind = indent_of(l);
            if ind <= indent {
                break;
            }
            if ind != indent + 2 {
                return Err(ParseError {
                    line: n,
                    column: ind + 1,
                    message: format!("expected a line indented by {}", indent + 2),
                });
            }
            self.pos += 1;
            self.statement(&mut st, n, l, indent + 2)?;
        }

        for (col, id) in outputs {
            let v = st.lookup(&Cur::new(line, lineno), col, &id)?;
            st.g.outputs.push(v);
        }
        Ok(st.g)
    }

    /// One constant or node line (and the bodies of its subgraphs).
    fn statement(
        &mut self,
        st: &mut GraphState,
        lineno: usize,
        line: &str,
        indent: usize,
    ) -> Result<(), ParseError> {
        let (code, comment) = split_comment(line);
        let mut c = Cur::new(code, lineno);
        c.skip_ws();
        // Outputs: `%a, _ = ` (a node without outputs starts with its op).
        let mut outs: Vec<Option<(usize, String)>> = Vec::new();
        if c.peek() == Some('%') || (c.peek() == Some('_') && code.contains('=')) {
            loop {
                c.skip_ws();
                let col = c.column();
                if c.eat("_") {
                    outs.push(None);
                } else {
                    outs.push(Some((col, c.value_id()?)));
                }
                c.skip_ws();
                if c.eat("=") {
                    break;
                }
                c.expect(",")?;
            }
            c.skip_ws();
        }
        let col = c.column();
        let op = c.take_while(name_char);
        if op.is_empty() {
            return Err(c.err("expected `const` or an op name"));
        }
        if op == "const" && c.peek() != Some('(') {
            let [Some((vcol, id))] = outs.as_slice() else {
                return Err(c.err_at(col, "a constant defines exactly one value"));
            };
            c.skip_ws();
            let name = if comment.is_empty() {
                id.trim_start_matches('%').to_string()
            } else {
                comment.to_string()
            };
            let v = if c.eat("sparse") {
                c.skip_ws();
                let ty = c.type_()?;
                let v = st.define(&c, *vcol, &name, ValueDef::Const)?;
                let (elem, dims) = static_tensor_type(&c, ty.as_ref())?;
                st.g.value_mut(v).ty = ty;
                st.g.shell.sparse_initializer.push(SparseTensorProto {
                    values: Some(TensorProto {
                        name: Some(name.clone()),
                        data_type: Some(elem),
                        dims: vec![0],
                        ..Default::default()
                    }),
                    indices: Some(TensorProto {
                        data_type: Some(DataType::Int64 as i32),
                        dims: vec![0],
                        ..Default::default()
                    }),
                    dims,
                });
                v
            } else {
                let mut t = c.tensor()?;
                t.name = Some(name.clone());
                let v = st.define(&c, *vcol, &name, ValueDef::Const)?;
                st.g.value_mut(v).ty = Some(crate::tensor::tensor_type(&t));
                st.g.set_const_data(v, t);
                v
            };
            st.ids.insert(id.clone(), v);
            c.skip_ws();
            if !c.at_end() {
                return Err(c.err("unexpected text after the constant"));
            }
            return Ok(());
        }
        let (domain, op_type) = match op.rfind('.') {
            Some(i) => (&op[..i], &op[i + 1..]),
            None => ("", op),
        };
        c.expect("(")?;
        let mut inputs = Vec::new();
        c.skip_ws();
        if !c.eat(")") {
            loop {
                c.skip_ws();
                let col = c.column();
                if c.eat("_") {
                    inputs.push(None);
                } else {
                    let id = c.value_id()?;
                    inputs.push(Some(st.lookup(&c, col, &id)?));
                }
                c.skip_ws();
                if c.eat(")") {
                    break;
                }
                c.expect(",")?;
            }
        }
        let mut attrs = Vec::new();
        let mut pending = Vec::new();
        c.skip_ws();
        if c.eat("{") {
            loop {
                c.skip_ws();
                let aname = c.take_while(|ch| name_char(ch) || ch == '-');
                if aname.is_empty() {
                    return Err(c.err("expected an attribute name"));
                }
                c.expect("=")?;
                let a = c.attr_value(aname, attrs.len(), &mut pending)?;
                attrs.push(a);
                c.skip_ws();
                if c.eat("}") {
                    break;
                }
                c.expect(",")?;
            }
        }
        let mut implicit = Vec::new();
        c.skip_ws();
        if c.eat("captures(") {
            loop {
                c.skip_ws();
                let col = c.column();
                let id = c.value_id()?;
                implicit.push(st.lookup(&c, col, &id)?);
                c.skip_ws();
                if c.eat(")") {
                    break;
                }
                c.expect(",")?;
            }
        }
        c.skip_ws();
        let mut types: Vec<Option<TypeProto>> = Vec::new();
        if c.eat(":") {
            loop {
                c.skip_ws();
                if c.eat("_") {
                    types.push(None);
                } else {
                    types.push(c.type_()?);
                }
                c.skip_ws();
                if !c.eat(",") {
                    break;
                }
            }
        }
        c.skip_ws();
        if !c.at_end() {
            return Err(c.err("unexpected text after the node"));
        }
        if types.len() != outs.len() {
            return Err(c.err_at(
                col,
                format!(
                    "the node has {} outputs but {} types after `:`",
                    outs.len(),
                    types.len()
                ),
            ));
        }

        // Comment: `node_name: out0, out1`, or `out0, out1` without a name.
        let present = outs.iter().flatten().count();
        let (node_name, out_names): (&str, Vec<String>) = if comment.is_empty() {
            ("", Vec::new())
        } else if present == 0 {
            (comment.trim_end_matches(':'), Vec::new())
        } else {
            let (n, rest) = match comment.split_once(": ") {
                Some((n, rest)) => (n, rest),
                None => ("", comment),
            };
            let names: Vec<String> = rest.split(", ").map(|s| s.to_string()).collect();
            if names.len() != present {
                return Err(ParseError {
                    line: lineno,
                    column: code.chars().count() + 1,
                    message: format!(
                        "the comment names {} outputs, the node has {present}",
                        names.len()
                    ),
                });
            }
            (n, names)
        };

        // Subgraph bodies follow, each under a `label:` line.
        for _ in 0..pending.len() {
            let Some((n, l)) = self.peek() else { break };
            if indent_of(l) != indent + 2 {
                break;
            }
            let mut lc = Cur::new(l, n);
            lc.skip_ws();
            let label = lc.take_while(|ch| ch != ':');
            lc.expect(":")?;
            let (aname, elem) = match label.split_once('[') {
                Some((a, k)) => {
                    let k: usize = k.trim_end_matches(']').parse().map_err(|_| {
                        lc.err_at(indent + 3, format!("bad subgraph label `{label}`"))
                    })?;
                    (a, Some(k))
                }
                None => (label, None),
            };
            let Some(slot) = pending.iter().position(|p: &PendingGraph| {
                attrs[p.attr].name.as_deref() == Some(aname) && p.elem == elem
            }) else {
                return Err(lc.err_at(
                    indent + 3,
                    format!("no graph attribute `{label}` waits for a body"),
                ));
            };
            let p = pending.swap_remove(slot);
            self.pos += 1;
            let sub = self.graph(indent + 4)?;
            let gp = crate::export::export_graph(&sub);
            let a: &mut AttributeProto = &mut attrs[p.attr];
            match p.elem {
                None => a.g = Some(gp),
                Some(k) => {
                    if a.graphs.len() <= k {
                        a.graphs.resize(k + 1, GraphProto::default());
                    }
                    a.graphs[k] = gp;
                }
            }
        }
        if let Some(p) = pending.first() {
            return Err(ParseError {
                line: lineno,
                column: 1,
                message: format!(
                    "graph attribute `{}` has no body below the node",
                    attrs[p.attr].name()
                ),
            });
        }

        let mut out_ids = Vec::with_capacity(outs.len());
        let mut named = out_names.into_iter();
        for (o, ty) in outs.iter().zip(types) {
            match o {
                None => out_ids.push(None),
                Some((col, id)) => {
                    let name = named
                        .next()
                        .unwrap_or_else(|| st.g.unique_name(id.trim_start_matches('%')));
                    let v = st.define(&c, *col, &name, ValueDef::Undefined)?;
                    st.g.value_mut(v).ty = ty;
                    st.ids.insert(id.clone(), v);
                    out_ids.push(Some(v));
                }
            }
        }
        let node = Node {
            proto: NodeProto {
                op_type: Some(op_type.to_string()),
                domain: (!domain.is_empty()).then(|| domain.to_string()),
                name: (!node_name.is_empty()).then(|| node_name.to_string()),
                attribute: attrs,
                ..Default::default()
            },
            inputs: Vec::new(),
            outputs: Vec::new(),
            implicit,
        };
        st.g.add_node(node, &inputs, &out_ids);
        Ok(())
    }
}

struct GraphState {
    g: Graph,
    /// Text ids (`%0`, `%w1`, `%x`, `^x`, `%?x`) to values.
    ids: HashMap<String, ValueId>,
}

impl GraphState {
    fn define(
        &mut self,
        c: &Cur,
        col: usize,
        name: &str,
        def: ValueDef,
    ) -> Result<ValueId, ParseError> {
        if self.g.value_by_name(name).is_some() {
            return Err(c.err_at(col, format!("the name `{name}` is defined twice")));
        }
        Ok(self.g.add_value_exact(name.to_string(), None, def))
    }

    fn lookup(&mut self, c: &Cur, col: usize, id: &str) -> Result<ValueId, ParseError> {
        if let Some(v) = self.ids.get(id) {
            return Ok(*v);
        }
        let def = if let Some(n) = id.strip_prefix('^') {
            Some((n, ValueDef::Outer))
        } else {
            id.strip_prefix("%?").map(|n| (n, ValueDef::Undefined))
        };
        match def {
            Some((name, def)) => {
                let v = self.define(c, col, name, def)?;
                self.ids.insert(id.to_string(), v);
                Ok(v)
            }
            None => Err(c.err_at(col, format!("`{id}` is not defined above"))),
        }
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Splits a line at its `#` comment (outside string literals).
fn split_comment(line: &str) -> (&str, &str) {
    let mut in_str = false;
    let mut escaped = false;
    for (i, ch) in line.char_indices() {
        if in_str {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
        } else if ch == '#' {
            let rest = &line[i + 1..];
            return (line[..i].trim_end(), rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    (line, "")
}

fn static_tensor_type(c: &Cur, ty: Option<&TypeProto>) -> Result<(i32, Vec<i64>), ParseError> {
    if let Some(TypeProto {
        value: Some(TypeValue::TensorType(t)),
        ..
    }) = ty
    {
        if let (Some(e), Some(sh)) = (t.elem_type, &t.shape) {
            let dims: Option<Vec<i64>> = sh
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(DimValue::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect();
            if let Some(dims) = dims {
                return Ok((e, dims));
            }
        }
    }
    Err(c.err("a constant needs an element type and a static shape"))
}

fn elem_code(name: &str) -> Option<i32> {
    if let Some(n) = name.strip_prefix("dt") {
        if let Ok(v) = n.parse() {
            return Some(v);
        }
    }
    (0..=32).find(|c| elem_name(*c) == name)
}

/// Deterministic data for a constant the text shows without data (see the
/// module docs).
fn fill(elem: i32, dims: &[i64]) -> Option<TensorProto> {
    let n = crate::tensor::numel(dims)?;
    let f = |i: usize| 1.0 + (i % 8) as f64 / 8.0;
    let raw: Vec<u8> = match DataType::try_from(elem).ok()? {
        DataType::Float => (0..n).flat_map(|i| (f(i) as f32).to_le_bytes()).collect(),
        DataType::Double => (0..n).flat_map(|i| f(i).to_le_bytes()).collect(),
        DataType::Int64 | DataType::Uint64 => (0..n).flat_map(|_| 1i64.to_le_bytes()).collect(),
        DataType::Int32 | DataType::Uint32 => (0..n).flat_map(|_| 1i32.to_le_bytes()).collect(),
        DataType::Int16 | DataType::Uint16 => (0..n).flat_map(|_| 1i16.to_le_bytes()).collect(),
        DataType::Int8 | DataType::Uint8 | DataType::Bool => vec![1u8; n],
        DataType::String => {
            return Some(TensorProto {
                dims: dims.to_vec(),
                data_type: Some(elem),
                string_data: vec![Bytes::new(); n],
                ..Default::default()
            })
        }
        _ => vec![0u8; packed_bytes(elem, n as u64).unwrap_or(0) as usize],
    };
    Some(TensorProto {
        dims: dims.to_vec(),
        data_type: Some(elem),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    })
}

/// Data written in the text, as little-endian bytes of `elem`.
fn encode(c: &Cur, elem: i32, items: &[Item], col: usize) -> Result<Vec<u8>, ParseError> {
    let dt = DataType::try_from(elem).map_err(|_| c.err_at(col, "unknown element type"))?;
    let mut raw = Vec::new();
    for it in items {
        let (f, i) = match it {
            Item::Float(f) => (*f, None),
            Item::Int(i) => (*i as f64, Some(*i)),
            Item::Bool(b) => (*b as i64 as f64, Some(*b as i64)),
        };
        let int = || i.ok_or_else(|| c.err_at(col, "integer data expected"));
        match dt {
            DataType::Float => raw.extend((f as f32).to_le_bytes()),
            DataType::Double => raw.extend(f.to_le_bytes()),
            DataType::Int64 => raw.extend(int()?.to_le_bytes()),
            DataType::Uint64 => raw.extend((int()? as u64).to_le_bytes()),
            DataType::Int32 => raw.extend((int()? as i32).to_le_bytes()),
            DataType::Uint32 => raw.extend((int()? as u32).to_le_bytes()),
            DataType::Int16 => raw.extend((int()? as i16).to_le_bytes()),
            DataType::Uint16 => raw.extend((int()? as u16).to_le_bytes()),
            DataType::Int8 | DataType::Uint8 | DataType::Bool => raw.push(int()? as u8),
            _ => {
                return Err(c.err_at(
                    col,
                    format!("data of type {} cannot be written in text", elem_name(elem)),
                ))
            }
        }
    }
    Ok(raw)
}

enum Item {
    Float(f64),
    Int(i64),
    Bool(bool),
}

/// A cursor over one line.
struct Cur<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str, line: usize) -> Cur<'a> {
        Cur { s, pos: 0, line }
    }
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    fn column(&self) -> usize {
        self.s[..self.pos].chars().count() + 1
    }
    fn err(&self, msg: impl Into<String>) -> ParseError {
        self.err_at(self.column(), msg)
    }
    fn err_at(&self, column: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            column,
            message: msg.into(),
        }
    }
    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }
    fn eat(&mut self, tok: &str) -> bool {
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, tok: &str) -> Result<(), ParseError> {
        if self.eat(tok) {
            Ok(())
        } else {
            let found: String = self.rest().chars().take(12).collect();
            Err(self.err(if found.is_empty() {
                format!("expected `{tok}` at the end of the line")
            } else {
                format!("expected `{tok}`, found `{found}`")
            }))
        }
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let r = self.rest();
        let n = r.find(|c: char| !f(c)).unwrap_or(r.len());
        self.pos += n;
        &r[..n]
    }
    fn end_or_comment(&mut self) -> Result<(), ParseError> {
        self.skip_ws();
        if self.at_end() || self.peek() == Some('#') {
            Ok(())
        } else {
            Err(self.err("unexpected text at the end of the line"))
        }
    }

    /// `%name`, `%?name` or `^name`, returned as written.
    fn value_id(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        if !(self.eat("%?") || self.eat("%") || self.eat("^")) {
            return Err(self.err("expected a value (`%name`)"));
        }
        if self.take_while(name_char).is_empty() {
            return Err(self.err("expected a value name after the sigil"));
        }
        Ok(self.s[start..self.pos].to_string())
    }

    fn int(&mut self) -> Result<i64, ParseError> {
        let col = self.column();
        let t = self.take_while(|c| c.is_ascii_digit() || c == '-');
        t.parse()
            .map_err(|_| self.err_at(col, format!("expected an integer, found `{t}`")))
    }

    /// A number or bool as written in data and attributes.
    fn item(&mut self) -> Result<Item, ParseError> {
        let col = self.column();
        let t = self.take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.'));
        match t {
            "true" => return Ok(Item::Bool(true)),
            "false" => return Ok(Item::Bool(false)),
            "nan" => return Ok(Item::Float(f64::NAN)),
            "inf" => return Ok(Item::Float(f64::INFINITY)),
            "-inf" => return Ok(Item::Float(f64::NEG_INFINITY)),
            _ => {}
        }
        if t.contains(['.', 'e']) {
            t.parse()
                .map(Item::Float)
                .map_err(|_| self.err_at(col, format!("bad number `{t}`")))
        } else {
            t.parse()
                .map(Item::Int)
                .map_err(|_| self.err_at(col, format!("bad number `{t}`")))
        }
    }

    /// A value type: `?`, `f32[1,N,?]`, `f32[*]`, `sparse f32[2]`,
    /// `seq<T>`, `opt<T>`, `map<i64,T>`, `opaque<domain.name>`.
    fn type_(&mut self) -> Result<Option<TypeProto>, ParseError> {
        let col = self.column();
        let ty = |v| {
            Ok(Some(TypeProto {
                denotation: None,
                value: Some(v),
            }))
        };
        if self.eat("seq<") {
            let e = self.type_()?;
            self.expect(">")?;
            return ty(TypeValue::SequenceType(Box::new(SequenceType {
                elem_type: e.map(Box::new),
            })));
        }
        if self.eat("opt<") {
            let e = self.type_()?;
            self.expect(">")?;
            return ty(TypeValue::OptionalType(Box::new(OptionalType {
                elem_type: e.map(Box::new),
            })));
        }
        if self.eat("map<") {
            let k = self.elem()?;
            self.expect(",")?;
            let v = self.type_()?;
            self.expect(">")?;
            return ty(TypeValue::MapType(Box::new(MapType {
                key_type: k,
                value_type: v.map(Box::new),
            })));
        }
        if self.eat("opaque<") {
            let s = self.take_while(|c| c != '>');
            self.expect(">")?;
            let (d, n) = s.rsplit_once('.').unwrap_or(("", s));
            return ty(TypeValue::OpaqueType(OpaqueType {
                domain: Some(d.to_string()),
                name: Some(n.to_string()),
            }));
        }
        let sparse = self.eat("sparse ");
        if !sparse && self.rest().starts_with('?') && !self.rest().starts_with("?[") {
            self.pos += 1;
            return Ok(None);
        }
        let elem = self.elem()?;
        if self.peek() != Some('[') {
            return Err(self.err_at(col, "expected a type such as `f32[1,3]` or `?`"));
        }
        let shape = self.shape()?;
        if sparse {
            ty(TypeValue::SparseTensorType(SparseTensorType {
                elem_type: elem,
                shape,
            }))
        } else {
            ty(TypeValue::TensorType(TensorType {
                elem_type: elem,
                shape,
            }))
        }
    }

    /// An element type name (`f32`, `?` for unknown).
    fn elem(&mut self) -> Result<Option<i32>, ParseError> {
        if self.eat("?") {
            return Ok(None);
        }
        let col = self.column();
        let n = self.take_while(|c| c.is_ascii_alphanumeric());
        elem_code(n)
            .map(Some)
            .ok_or_else(|| self.err_at(col, format!("unknown element type `{n}`")))
    }

    /// `[1,N,?]` or `[*]` (unknown rank).
    fn shape(&mut self) -> Result<Option<TensorShapeProto>, ParseError> {
        self.expect("[")?;
        if self.eat("*]") {
            return Ok(None);
        }
        let mut dim = Vec::new();
        if !self.eat("]") {
            loop {
                let col = self.column();
                let d = self.take_while(|c| c != ',' && c != ']');
                let value = if d == "?" {
                    None
                } else if let Ok(v) = d.parse::<i64>() {
                    Some(DimValue::DimValue(v))
                } else if d.is_empty() {
                    return Err(self.err_at(col, "empty dimension"));
                } else {
                    Some(DimValue::DimParam(d.to_string()))
                };
                dim.push(Dimension {
                    value,
                    denotation: None,
                });
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(Some(TensorShapeProto { dim }))
    }

    /// `f32[2,3]` with optional data `[...]` after a space.
    fn tensor(&mut self) -> Result<TensorProto, ParseError> {
        let col = self.column();
        let elem = self
            .elem()?
            .ok_or_else(|| self.err_at(col, "a tensor needs an element type"))?;
        let shape = self.shape()?;
        let dims: Vec<i64> = shape
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(DimValue::DimValue(v)) => Some(v),
                        _ => None,
                    })
                    .collect::<Option<Vec<i64>>>()
            })
            .unwrap_or(None)
            .ok_or_else(|| self.err_at(col, "a tensor needs a static shape"))?;
        let n = crate::tensor::numel(&dims)
            .ok_or_else(|| self.err_at(col, "invalid tensor dimensions"))?;
        let save = self.pos;
        self.skip_ws();
        if self.peek() == Some('[') {
            let dcol = self.column();
            self.pos += 1;
            let mut items = Vec::new();
            self.skip_ws();
            if !self.eat("]") {
                loop {
                    self.skip_ws();
                    items.push(self.item()?);
                    self.skip_ws();
                    if self.eat("]") {
                        break;
                    }
                    self.expect(",")?;
                }
            }
            if items.len() != n {
                return Err(self.err_at(
                    dcol,
                    format!("the data has {} elements, the shape needs {n}", items.len()),
                ));
            }
            let raw = encode(self, elem, &items, dcol)?;
            return Ok(TensorProto {
                dims,
                data_type: Some(elem),
                raw_data: Some(Bytes::from(raw)),
                ..Default::default()
            });
        }
        self.pos = save;
        fill(elem, &dims).ok_or_else(|| self.err_at(col, "cannot fill this tensor"))
    }

    fn string(&mut self) -> Result<Vec<u8>, ParseError> {
        self.expect("\"")?;
        let mut out = String::new();
        loop {
            let Some(ch) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.pos += ch.len_utf8();
            match ch {
                '"' => break,
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.pos += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        '\\' | '"' | '\'' => out.push(e),
                        'u' => {
                            self.expect("{")?;
                            let col = self.column();
                            let h = self.take_while(|c| c.is_ascii_hexdigit());
                            self.expect("}")?;
                            let c = u32::from_str_radix(h, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.err_at(col, "bad \\u escape"))?;
                            out.push(c);
                        }
                        _ => return Err(self.err(format!("unknown escape `\\{e}`"))),
                    }
                }
                c => out.push(c),
            }
        }
        Ok(out.into_bytes())
    }

    /// One attribute value; graph bodies are recorded in `pending`.
    fn attr_value(
        &mut self,
        name: &str,
        index: usize,
        pending: &mut Vec<PendingGraph>,
    ) -> Result<AttributeProto, ParseError> {
        let mut a = AttributeProto {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let set = |a: &mut AttributeProto, t: AttributeType| a.r#type = Some(t as i32);
        if self.eat("@") {
            a.ref_attr_name = Some(self.take_while(name_char).to_string());
            return Ok(a);
        }
        if self.eat("undefined") {
            set(&mut a, AttributeType::Undefined);
            return Ok(a);
        }
        if self.peek() == Some('[') {
            self.pos += 1;
            self.skip_ws();
            set(&mut a, AttributeType::Ints);
            let mut k = 0;
            while !self.eat("]") {
                self.skip_ws();
                match self.single()? {
                    Single::Float(f) => {
                        set(&mut a, AttributeType::Floats);
                        a.floats.push(f)
                    }
                    Single::Int(i) => a.ints.push(i),
                    Single::Str(s) => {
                        set(&mut a, AttributeType::Strings);
                        a.strings.push(Bytes::from(s))
                    }
                    Single::Tensor(t) => {
                        set(&mut a, AttributeType::Tensors);
                        a.tensors.push(*t)
                    }
                    Single::Graph => {
                        set(&mut a, AttributeType::Graphs);
                        a.graphs.push(GraphProto::default());
                        pending.push(PendingGraph {
                            attr: index,
                            elem: Some(k),
                        });
                    }
                    Single::Sparse(t) => {
                        set(&mut a, AttributeType::SparseTensors);
                        a.sparse_tensors.push(*t)
                    }
                    Single::Type(t) => {
                        set(&mut a, AttributeType::TypeProtos);
                        a.type_protos.push(*t)
                    }
                }
                k += 1;
                self.skip_ws();
                if self.eat("]") {
                    break;
                }
                self.expect(",")?;
            }
            return Ok(a);
        }
        match self.single()? {
            Single::Float(f) => {
                set(&mut a, AttributeType::Float);
                a.f = Some(f)
            }
            Single::Int(i) => {
                set(&mut a, AttributeType::Int);
                a.i = Some(i)
            }
            Single::Str(s) => {
                set(&mut a, AttributeType::String);
                a.s = Some(Bytes::from(s))
            }
            Single::Tensor(t) => {
                set(&mut a, AttributeType::Tensor);
                a.t = Some(*t)
            }
            Single::Graph => {
                set(&mut a, AttributeType::Graph);
                a.g = Some(GraphProto::default());
                pending.push(PendingGraph {
                    attr: index,
                    elem: None,
                });
            }
            Single::Sparse(t) => {
                set(&mut a, AttributeType::SparseTensor);
                a.sparse_tensor = Some(*t)
            }
            Single::Type(t) => {
                set(&mut a, AttributeType::TypeProto);
                a.tp = Some(*t)
            }
        }
        Ok(a)
    }

    fn single(&mut self) -> Result<Single, ParseError> {
        let col = self.column();
        if self.peek() == Some('"') {
            return self.string().map(Single::Str);
        }
        if self.eat("tensor ") {
            return self.tensor().map(|t| Single::Tensor(Box::new(t)));
        }
        if self.eat("graph(") {
            self.take_while(|c| c != ')');
            self.expect(")")?;
            return Ok(Single::Graph);
        }
        if self.eat("sparse ") {
            let t = self.type_()?;
            let (elem, dims) = static_tensor_type(self, t.as_ref())?;
            return Ok(Single::Sparse(Box::new(SparseTensorProto {
                values: Some(TensorProto {
                    data_type: Some(elem),
                    dims: vec![0],
                    ..Default::default()
                }),
                indices: Some(TensorProto {
                    data_type: Some(DataType::Int64 as i32),
                    dims: vec![0],
                    ..Default::default()
                }),
                dims,
            })));
        }
        if self.eat("type ") {
            let t = self.type_()?;
            return Ok(Single::Type(Box::new(t.unwrap_or_default())));
        }
        match self.item()? {
            Item::Float(f) => Ok(Single::Float(f as f32)),
            Item::Int(i) => Ok(Single::Int(i)),
            Item::Bool(_) => Err(self.err_at(col, "expected a number, string or tensor")),
        }
    }
}

enum Single {
    Float(f32),
    Int(i64),
    Str(Vec<u8>),
    Tensor(Box<TensorProto>),
    Graph,
    Sparse(Box<SparseTensorProto>),
    Type(Box<TypeProto>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GraphText, TextOptions};

    const SMALL: &str = "\
# ir_version 8; opset ai.onnx 17
graph main(%x: f32[1,3,8,8]) -> (%1)
  %w0 = const f32[8,3,3,3]                      # conv1.weight
  %w1 = const f32[2] [0.5,-1.0]                 # b
  %0 = Conv(%x, %w0) {pads=[1,1,1,1]} : f32[1,8,8,8]  # conv1: conv1_out
  %1 = Add(%0, %w1) : f32[1,8,8,?]              # y
";

    #[test]
    fn parses_and_reprints() {
        let m = parse_model(SMALL).unwrap();
        m.graph.verify().unwrap();
        let opts = TextOptions {
            max_data_elements: 4,
        };
        assert_eq!(m.to_text_with(&opts), SMALL);
        let b = m.graph.value_by_name("b").unwrap();
        let data = crate::tensor::to_f32(m.graph.const_tensor(b).unwrap()).unwrap();
        assert_eq!(data, vec![0.5, -1.0]);
        // Without data the weight was filled deterministically.
        let w = m.graph.value_by_name("conv1.weight").unwrap();
        let data = crate::tensor::to_f32(m.graph.const_tensor(w).unwrap()).unwrap();
        assert_eq!(&data[..3], &[1.0, 1.125, 1.25]);
        assert_eq!(m.graph.node(m.graph.node_ids()[0]).name(), "conv1");
        // Graph-only parse: no header.
        let g = parse_graph(SMALL.split_once('\n').unwrap().1).unwrap();
        assert_eq!(g.to_text_with(&opts), SMALL.split_once('\n').unwrap().1);
    }

    #[test]
    fn errors_name_line_and_column() {
        let text = "graph main(%x: f32[2]) -> (%0)\n  %0 = Relu(%y) : f32[2]\n";
        let e = parse_graph(text).unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("%y"), "{e}");

        let text = "graph main(%x: f33[2]) -> (%x)\n";
        let e = parse_graph(text).unwrap_err();
        assert_eq!((e.line, e.column), (1, 16), "{e}");

        let text = "graph main(%x: f32[2]) -> (%0)\n  %0 = const f32[2] [1.0]\n";
        let e = parse_graph(text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("needs 2"), "{e}");
        assert_eq!(
            e.to_string(),
            "line 2, column 21: the data has 1 elements, the shape needs 2"
        );
    }

    #[test]
    fn unnamed_values_take_their_ids() {
        let text =
            "graph g(%x: f32[2]) -> (%1)\n  %0 = Relu(%x) : f32[2]\n  %1 = Neg(%0) : f32[2]\n";
        let g = parse_graph(text).unwrap();
        assert!(g.value_by_name("0").is_some());
        assert!(g.to_text().contains("%1 = Neg(%0) : f32[2]"));
    }

    #[test]
    fn strings_with_hashes_and_escapes() {
        let text = "graph g(%x: f32[2]) -> (%0)\n  %0 = custom.Op(%x) {mode=\"a#b \\\"q\\\"\"} : ?  # op: y\n";
        let g = parse_graph(text).unwrap();
        let n = g.node(g.node_ids()[0]);
        assert_eq!(n.attr_string("mode").unwrap(), "a#b \"q\"");
        assert_eq!(n.domain(), "custom");
        assert_eq!(n.name(), "op");
        let printed = g.to_text();
        assert!(printed.contains(r#"{mode="a#b \"q\""} : ?"#), "{printed}");
        assert_eq!(parse_graph(&printed).unwrap().to_text(), printed);
    }
}
