//! Walks every tensor stored anywhere in a model: graph initializers, sparse
//! initializers, tensor attributes of nodes, subgraphs of `If`/`Loop`/`Scan`,
//! function bodies and training graphs.

use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto,
};

/// Calls `f` on every `TensorProto` in the model, depth first, stopping at
/// the first error.
pub fn try_for_each_tensor_mut<E>(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(g) = model.graph.as_mut() {
        graph_tensors(g, f)?;
    }
    for func in &mut model.functions {
        nodes_tensors(&mut func.node, f)?;
        for a in &mut func.attribute_proto {
            attr_tensors(a, f)?;
        }
    }
    for t in &mut model.training_info {
        if let Some(g) = t.initialization.as_mut() {
            graph_tensors(g, f)?;
        }
        if let Some(g) = t.algorithm.as_mut() {
            graph_tensors(g, f)?;
        }
    }
    Ok(())
}

/// Infallible form of [`try_for_each_tensor_mut`].
pub fn for_each_tensor_mut(model: &mut ModelProto, f: &mut dyn FnMut(&mut TensorProto)) {
    let _ = try_for_each_tensor_mut::<std::convert::Infallible>(model, &mut |t| {
        f(t);
        Ok(())
    });
}

fn graph_tensors<E>(
    g: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    for t in &mut g.initializer {
        f(t)?;
    }
    for s in &mut g.sparse_initializer {
        sparse_tensors(s, f)?;
    }
    nodes_tensors(&mut g.node, f)
}

fn nodes_tensors<E>(
    nodes: &mut [NodeProto],
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    for n in nodes {
        for a in &mut n.attribute {
            attr_tensors(a, f)?;
        }
    }
    Ok(())
}

fn sparse_tensors<E>(
    s: &mut SparseTensorProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(v) = s.values.as_mut() {
        f(v)?;
    }
    if let Some(i) = s.indices.as_mut() {
        f(i)?;
    }
    Ok(())
}

fn attr_tensors<E>(
    a: &mut AttributeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(t) = a.t.as_mut() {
        f(t)?;
    }
    for t in &mut a.tensors {
        f(t)?;
    }
    if let Some(s) = a.sparse_tensor.as_mut() {
        sparse_tensors(s, f)?;
    }
    for s in &mut a.sparse_tensors {
        sparse_tensors(s, f)?;
    }
    if let Some(g) = a.g.as_mut() {
        graph_tensors(g, f)?;
    }
    for g in &mut a.graphs {
        graph_tensors(g, f)?;
    }
    Ok(())
}
