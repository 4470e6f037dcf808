//! IR → ONNX.

use quench_onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

use crate::graph::{Graph, ValueDef, ValueId};
use crate::Model;

pub(crate) fn export_model(m: &Model) -> ModelProto {
    let mut out = m.header.clone();
    out.graph = Some(export_graph(&m.graph));
    out
}

fn value_info(g: &Graph, v: ValueId) -> ValueInfoProto {
    let val = g.value(v);
    let mut vi = val.info.clone().unwrap_or_default();
    vi.name = Some(val.name.clone());
    vi.r#type = val.ty.clone();
    vi
}

/// Exports a graph. Nodes are written in the graph's topological order
/// (creation order where dependencies allow, so an untouched import keeps
/// its order); if the graph has a cycle they are written in creation order
/// and the result is as invalid as the input.
pub fn export_graph(g: &Graph) -> GraphProto {
    let mut gp = g.shell.clone();
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids());
    let name = |v: Option<ValueId>| v.map(|v| g.value(v).name.clone()).unwrap_or_default();

    let mut nodes = Vec::with_capacity(order.len());
    let mut infos = Vec::new();
    for n in &order {
        let node = g.node(*n);
        let mut np: NodeProto = node.proto.clone();
        np.input = node.inputs().iter().map(|v| name(*v)).collect();
        np.output = node.outputs().iter().map(|v| name(*v)).collect();
        nodes.push(np);
        for o in node.outputs().iter().flatten() {
            let val = g.value(*o);
            if (val.ty.is_some() || val.info.is_some()) && !g.is_graph_output(*o) {
                infos.push(value_info(g, *o));
            }
        }
    }
    gp.node = nodes;
    gp.input = g.inputs().iter().map(|v| value_info(g, *v)).collect();
    gp.output = g.outputs().iter().map(|v| value_info(g, *v)).collect();
    gp.initializer = g
        .initializers()
        .map(|(v, t)| {
            let mut t: TensorProto = t.clone();
            t.name = Some(g.value(v).name.clone());
            t
        })
        .collect();
    // Annotations that named no node output came back in the shell; ours go
    // after them.
    gp.value_info.extend(infos);
    debug_assert!(g
        .inputs()
        .iter()
        .all(|v| g.value(*v).def == ValueDef::Input));
    gp
}
