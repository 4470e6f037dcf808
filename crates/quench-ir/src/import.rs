//! ONNX → IR.

use std::collections::{BTreeSet, HashMap, HashSet};

use quench_onnx::proto::{GraphProto, ModelProto, ValueInfoProto};

use crate::error::{IrError, Problem};
use crate::graph::{Graph, Node, ValueDef, ValueId};
use crate::Model;

pub(crate) fn import_model(mut model: ModelProto) -> Result<Model, IrError> {
    let gp = model.graph.take().unwrap_or_default();
    let graph = import_graph(gp, false)?;
    Ok(Model {
        header: model,
        graph,
    })
}

/// Imports a subgraph (an `If`/`Loop`/`Scan` body): names it does not
/// define become [`ValueDef::Outer`] values instead of errors.
pub fn import_subgraph(gp: GraphProto) -> Result<Graph, IrError> {
    import_graph(gp, true)
}

fn info_shell(vi: &ValueInfoProto) -> Option<ValueInfoProto> {
    if vi.doc_string.is_none() && vi.metadata_props.is_empty() {
        return None;
    }
    Some(ValueInfoProto {
        name: None,
        r#type: None,
        doc_string: vi.doc_string.clone(),
        metadata_props: vi.metadata_props.clone(),
    })
}

fn import_graph(mut gp: GraphProto, allow_outer: bool) -> Result<Graph, IrError> {
    let mut problems = Vec::new();
    let nodes = std::mem::take(&mut gp.node);
    let inputs = std::mem::take(&mut gp.input);
    let outputs = std::mem::take(&mut gp.output);
    let inits = std::mem::take(&mut gp.initializer);
    let value_info = std::mem::take(&mut gp.value_info);
    let mut g = Graph::default();
    g.shell = gp;
    // Who defined each name first, for duplicate messages.
    let mut definer: HashMap<String, String> = HashMap::new();

    let mut define = |g: &mut Graph,
                      problems: &mut Vec<Problem>,
                      name: &str,
                      by: String,
                      def: ValueDef|
     -> Option<ValueId> {
        if let Some(first) = definer.get(name) {
            problems.push(Problem::DuplicateName {
                value: name.to_string(),
                first: first.clone(),
                second: by,
            });
            return None;
        }
        definer.insert(name.to_string(), by);
        Some(g.add_value_exact(name.to_string(), None, def))
    };

    for vi in &inputs {
        if let Some(v) = define(
            &mut g,
            &mut problems,
            vi.name(),
            "a graph input".into(),
            ValueDef::Input,
        ) {
            g.value_mut(v).ty = vi.r#type.clone();
            g.value_mut(v).info = info_shell(vi);
            g.inputs.push(v);
        }
    }
    for t in inits {
        let name = t.name().to_string();
        if let Some(v) = g
            .value_by_name(&name)
            .filter(|v| g.value(*v).def == ValueDef::Input && g.initializer(*v).is_none())
        {
            // An initializer with a graph input's name is that input's default.
            g.set_const_data(v, t);
            continue;
        }
        if let Some(v) = define(
            &mut g,
            &mut problems,
            &name,
            "an initializer".into(),
            ValueDef::Const,
        ) {
            g.value_mut(v).ty = Some(crate::tensor::tensor_type(&t));
            g.set_const_data(v, t);
        }
    }
    for s in &g.shell.sparse_initializer.clone() {
        let Some(values) = &s.values else { continue };
        if let Some(v) = define(
            &mut g,
            &mut problems,
            values.name(),
            "a sparse initializer".into(),
            ValueDef::Const,
        ) {
            g.value_mut(v).ty = Some(crate::tensor::tensor_type_of(values.data_type(), &s.dims));
        }
    }

    // Pass 1: every node's outputs, so that order in the file does not
    // matter (cycles are reported, not mistaken for undefined inputs).
    let mut pending = Vec::with_capacity(nodes.len());
    for (i, mut np) in nodes.into_iter().enumerate() {
        let label = node_label(&np, i);
        let outs: Vec<Option<ValueId>> = np
            .output
            .iter()
            .map(|o| {
                if o.is_empty() {
                    None
                } else {
                    define(
                        &mut g,
                        &mut problems,
                        o,
                        format!("node `{label}`"),
                        ValueDef::Undefined,
                    )
                }
            })
            .collect();
        let ins = std::mem::take(&mut np.input);
        np.output.clear();
        pending.push((np, ins, outs, label));
    }
    // Pass 2: connect inputs and subgraph captures.
    let mut outer: HashMap<String, ValueId> = HashMap::new();
    for (np, ins, outs, label) in pending {
        let op = np.op_type().to_string();
        let mut resolve =
            |g: &mut Graph, problems: &mut Vec<Problem>, name: &str| -> Option<ValueId> {
                if let Some(v) = g.value_by_name(name) {
                    return Some(v);
                }
                if let Some(v) = outer.get(name) {
                    return Some(*v);
                }
                if allow_outer {
                    let v = g.add_value_exact(name.to_string(), None, ValueDef::Outer);
                    outer.insert(name.to_string(), v);
                    return Some(v);
                }
                problems.push(Problem::UndefinedInput {
                    node: label.clone(),
                    op: op.clone(),
                    value: name.to_string(),
                });
                None
            };
        let inputs: Vec<Option<ValueId>> = ins
            .iter()
            .map(|n| {
                if n.is_empty() {
                    None
                } else {
                    resolve(&mut g, &mut problems, n)
                }
            })
            .collect();
        let mut captured = BTreeSet::new();
        for a in &np.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                free_names(sg, &mut captured);
            }
        }
        let implicit: Vec<ValueId> = captured
            .iter()
            .filter_map(|n| resolve(&mut g, &mut problems, n))
            .collect();
        // Undefined inputs were reported above; the node stays connected to
        // what exists so that further problems can still be found.
        let node = Node {
            proto: np,
            inputs: Vec::new(),
            outputs: Vec::new(),
            implicit,
        };
        g.add_node(node, &inputs, &outs);
    }

    for vi in &value_info {
        match g.value_by_name(vi.name()) {
            Some(v) if matches!(g.value(v).def, ValueDef::Node { .. }) => {
                g.value_mut(v).ty = vi.r#type.clone();
                g.value_mut(v).info = info_shell(vi);
            }
            // Annotations of inputs, constants or names nothing defines stay
            // in the shell, written back as they came.
            _ => g.shell.value_info.push(vi.clone()),
        }
    }
    for vi in &outputs {
        match g.value_by_name(vi.name()) {
            Some(v) if g.value(v).def != ValueDef::Undefined => {
                if matches!(g.value(v).def, ValueDef::Node { .. } | ValueDef::Outer)
                    || g.value(v).ty.is_none()
                {
                    g.value_mut(v).ty = vi.r#type.clone();
                }
                if let Some(info) = info_shell(vi) {
                    g.value_mut(v).info = Some(info);
                }
                g.outputs.push(v);
            }
            None if allow_outer => {
                let v =
                    g.add_value_exact(vi.name().to_string(), vi.r#type.clone(), ValueDef::Outer);
                g.outputs.push(v);
            }
            _ => problems.push(Problem::UndefinedOutput {
                value: vi.name().to_string(),
            }),
        }
    }
    if let Err(e) = g.topo_order() {
        problems.extend(e.problems().iter().cloned());
    }
    if problems.is_empty() {
        Ok(g)
    } else {
        Err(IrError::Invalid(problems))
    }
}

fn node_label(np: &quench_onnx::proto::NodeProto, index: usize) -> String {
    if !np.name().is_empty() {
        np.name().to_string()
    } else {
        format!("#{index} {}", np.op_type())
    }
}

/// Names a subgraph uses but does not define (recursively through nested
/// subgraphs): the values it captures from enclosing scopes.
pub(crate) fn free_names(g: &GraphProto, out: &mut BTreeSet<String>) {
    let mut defined: HashSet<&str> = HashSet::new();
    for i in &g.input {
        defined.insert(i.name());
    }
    for t in &g.initializer {
        defined.insert(t.name());
    }
    for s in &g.sparse_initializer {
        if let Some(v) = &s.values {
            defined.insert(v.name());
        }
    }
    for n in &g.node {
        for o in &n.output {
            defined.insert(o);
        }
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    for n in &g.node {
        for i in &n.input {
            used.insert(i.clone());
        }
        for a in &n.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                free_names(sg, &mut used);
            }
        }
    }
    for o in &g.output {
        used.insert(o.name().to_string());
    }
    for u in used {
        if !u.is_empty() && !defined.contains(u.as_str()) {
            out.insert(u);
        }
    }
}
