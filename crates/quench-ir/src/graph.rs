//! The graph: nodes over a petgraph `StableDiGraph`, a value table and a
//! constant side table.
//!
//! Invariant: the petgraph edges and the per-value use lists mirror the
//! nodes' input lists exactly. All mutation goes through [`Graph`] methods,
//! which keep them in step; node and value payloads are never handed out
//! mutably in a way that could change connectivity.

use std::collections::{BTreeMap, HashMap, HashSet};

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use quench_onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use quench_onnx::proto::type_proto::Value as TypeValue;
use quench_onnx::proto::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
};

use crate::error::{IrError, Problem};
use crate::op::OpKind;

/// A node of a [`Graph`]. Stable across removal of other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
    fn ix(self) -> NodeIndex<u32> {
        NodeIndex::new(self.0 as usize)
    }
}

/// A value (tensor) of a [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueDef {
    /// Graph input (it may also have an initializer: a default value).
    Input,
    /// A constant tensor in the side table (an initializer).
    Const,
    /// Output `slot` of `node`.
    Node { node: NodeId, slot: usize },
    /// A name from the enclosing graph (only inside imported subgraphs).
    Outer,
    /// Nothing defines it (yet); `verify` rejects consumed undefined values.
    Undefined,
}

/// One use of a value: input `index` of `node` (implicit inputs, the values
/// a subgraph captures, use indices from `node.inputs.len()` on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Use {
    pub node: NodeId,
    pub index: usize,
}

/// One dimension of a shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(i64),
    Sym(String),
    Unknown,
}

/// A value: its ONNX name, type where known, and definition.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    /// The ONNX type, from graph inputs/outputs, `value_info` or constants.
    pub ty: Option<TypeProto>,
    /// `doc_string` and `metadata_props` of its `ValueInfoProto`, if any
    /// (name and type cleared; they live above).
    pub info: Option<ValueInfoProto>,
    pub def: ValueDef,
}

impl Value {
    /// Element type code of a tensor value.
    pub fn elem_type(&self) -> Option<i32> {
        match self.ty.as_ref()?.value.as_ref()? {
            TypeValue::TensorType(t) => t.elem_type,
            TypeValue::SparseTensorType(t) => t.elem_type,
            _ => None,
        }
    }

    /// Shape of a tensor value, if its rank is known.
    pub fn shape(&self) -> Option<Vec<Dim>> {
        let shape = match self.ty.as_ref()?.value.as_ref()? {
            TypeValue::TensorType(t) => t.shape.as_ref()?,
            TypeValue::SparseTensorType(t) => t.shape.as_ref()?,
            _ => return None,
        };
        Some(
            shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(DimValue::DimValue(v)) => Dim::Known(*v),
                    Some(DimValue::DimParam(p)) => Dim::Sym(p.clone()),
                    None => Dim::Unknown,
                })
                .collect(),
        )
    }

    /// The shape when every dimension is a known number.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape()?
            .into_iter()
            .map(|d| if let Dim::Known(v) = d { Some(v) } else { None })
            .collect()
    }
}

/// A node: op type, domain, attributes and connections.
#[derive(Debug, Clone)]
pub struct Node {
    /// The ONNX node without its `input`/`output` lists: name, op type,
    /// domain, attributes, doc string, metadata, overload, device
    /// configurations. Written back as it is.
    pub proto: NodeProto,
    /// Inputs; `None` is an omitted optional input (`""` in ONNX).
    pub(crate) inputs: Vec<Option<ValueId>>,
    /// Outputs; `None` is an omitted optional output.
    pub(crate) outputs: Vec<Option<ValueId>>,
    /// Values of this graph captured by the node's subgraphs.
    pub(crate) implicit: Vec<ValueId>,
}

impl Node {
    /// A new node with no inputs or outputs yet.
    pub fn new(op_type: &str, name: &str) -> Node {
        Node {
            proto: NodeProto {
                op_type: Some(op_type.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            inputs: Vec::new(),
            outputs: Vec::new(),
            implicit: Vec::new(),
        }
    }
    pub fn op_type(&self) -> &str {
        self.proto.op_type()
    }
    pub fn domain(&self) -> &str {
        crate::norm_domain(self.proto.domain())
    }
    pub fn name(&self) -> &str {
        self.proto.name()
    }
    pub fn kind(&self) -> OpKind {
        OpKind::of(self.domain(), self.op_type())
    }
    pub fn inputs(&self) -> &[Option<ValueId>] {
        &self.inputs
    }
    pub fn outputs(&self) -> &[Option<ValueId>] {
        &self.outputs
    }
    pub fn implicit_inputs(&self) -> &[ValueId] {
        &self.implicit
    }
    /// Input `i` if present.
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
    /// Output `i` if present.
    pub fn output(&self, i: usize) -> Option<ValueId> {
        self.outputs.get(i).copied().flatten()
    }
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }
    pub fn attr_int(&self, name: &str) -> Option<i64> {
        self.attr(name).and_then(|a| a.i)
    }
    pub fn attr_float(&self, name: &str) -> Option<f32> {
        self.attr(name).and_then(|a| a.f)
    }
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }
    pub fn attr_string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
    pub fn attr_tensor(&self, name: &str) -> Option<&TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }
    /// Sets an attribute, replacing one of the same name.
    pub fn set_attr(&mut self, attr: AttributeProto) {
        match self
            .proto
            .attribute
            .iter_mut()
            .find(|a| a.name == attr.name)
        {
            Some(a) => *a = attr,
            None => self.proto.attribute.push(attr),
        }
    }
    pub fn remove_attr(&mut self, name: &str) {
        self.proto.attribute.retain(|a| a.name() != name);
    }
    /// Whether any attribute holds a subgraph.
    pub fn has_subgraphs(&self) -> bool {
        self.proto
            .attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }
}

/// A graph of nodes, values and constants. See the crate docs.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    g: StableDiGraph<Node, ValueId, u32>,
    values: Vec<Value>,
    uses: Vec<Vec<Use>>,
    consts: BTreeMap<ValueId, TensorProto>,
    by_name: HashMap<String, ValueId>,
    /// Node name → number of live nodes with that name, kept by
    /// [`Graph::add_node`] and [`Graph::remove_node`] so that
    /// [`Graph::unique_name`] costs O(1) per probe instead of a scan of
    /// every node (a quantized 10k-node chain asks for ~40k names).
    node_names: HashMap<String, u32>,
    pub(crate) inputs: Vec<ValueId>,
    pub(crate) outputs: Vec<ValueId>,
    /// The graph message without nodes, inputs, outputs, initializers and
    /// `value_info`: name, doc string, sparse initializers, quantization
    /// annotations, metadata. Written back as it is.
    pub shell: GraphProto,
}

impl Graph {
    pub fn new(name: &str) -> Graph {
        Graph {
            shell: GraphProto {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    // ----- values -----

    /// Adds a value named `name`. If the name is taken, a fresh unique name
    /// derived from it is used instead (see [`Graph::value`]`.name`).
    pub fn add_value(&mut self, name: &str, ty: Option<TypeProto>) -> ValueId {
        let name = self.unique_name(name);
        self.add_value_exact(name, ty, ValueDef::Undefined)
    }

    pub(crate) fn add_value_exact(
        &mut self,
        name: String,
        ty: Option<TypeProto>,
        def: ValueDef,
    ) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        if !name.is_empty() {
            self.by_name.insert(name.clone(), id);
        }
        self.values.push(Value {
            name,
            ty,
            info: None,
            def,
        });
        self.uses.push(Vec::new());
        id
    }

    /// A name not used by any value yet: `base`, else `base_1`, `base_2`, ...
    ///
    /// Node names are checked too, so the result also serves as a new node's
    /// name (runtimes such as tract require unique node names).
    pub fn unique_name(&self, base: &str) -> String {
        let taken = |n: &str| self.by_name.contains_key(n) || self.node_names.contains_key(n);
        if !base.is_empty() && !taken(base) {
            return base.to_string();
        }
        let base = if base.is_empty() { "v" } else { base };
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken(n))
            .unwrap_or_default()
    }

    pub fn value(&self, v: ValueId) -> &Value {
        &self.values[v.index()]
    }

    /// Mutable access to a value's type and info. Connectivity (`def`) is
    /// managed by the graph; do not change it through this.
    pub fn value_mut(&mut self, v: ValueId) -> &mut Value {
        &mut self.values[v.index()]
    }

    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    /// Renames a value (the new name must be unused).
    pub fn rename_value(&mut self, v: ValueId, name: &str) -> bool {
        if self.by_name.contains_key(name) {
            return false;
        }
        let old = std::mem::replace(&mut self.values[v.index()].name, name.to_string());
        self.by_name.remove(&old);
        self.by_name.insert(name.to_string(), v);
        true
    }

    /// All values ever created (including ones no longer used).
    pub fn value_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        (0..self.values.len() as u32).map(ValueId)
    }

    /// Uses of a value by nodes, in no particular order.
    pub fn uses(&self, v: ValueId) -> &[Use] {
        &self.uses[v.index()]
    }

    /// Number of node uses plus graph-output uses.
    pub fn use_count(&self, v: ValueId) -> usize {
        self.uses[v.index()].len() + self.outputs.iter().filter(|&&o| o == v).count()
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.outputs.contains(&v)
    }

    pub fn is_graph_input(&self, v: ValueId) -> bool {
        self.inputs.contains(&v)
    }

    /// The node producing `v`, if a node does.
    pub fn producer(&self, v: ValueId) -> Option<NodeId> {
        match self.values[v.index()].def {
            ValueDef::Node { node, .. } => Some(node),
            _ => None,
        }
    }

    // ----- constants -----

    /// Adds a constant (initializer). The tensor's name is set to the
    /// value's name when exported.
    pub fn add_const(&mut self, name: &str, tensor: TensorProto) -> ValueId {
        let ty = crate::tensor::tensor_type(&tensor);
        let v = self.add_value(name, Some(ty));
        self.values[v.index()].def = ValueDef::Const;
        self.consts.insert(v, tensor);
        v
    }

    pub(crate) fn set_const_data(&mut self, v: ValueId, tensor: TensorProto) {
        self.consts.insert(v, tensor);
    }

    /// The constant tensor of a value: an initializer that is not also an
    /// overridable graph input.
    pub fn const_tensor(&self, v: ValueId) -> Option<&TensorProto> {
        if self.values[v.index()].def != ValueDef::Const {
            return None;
        }
        self.consts.get(&v)
    }

    /// The initializer data of a value, including defaults of graph inputs.
    pub fn initializer(&self, v: ValueId) -> Option<&TensorProto> {
        self.consts.get(&v)
    }

    /// Replaces the data of a constant (the type annotation follows).
    pub fn replace_const(&mut self, v: ValueId, tensor: TensorProto) {
        self.values[v.index()].ty = Some(crate::tensor::tensor_type(&tensor));
        self.consts.insert(v, tensor);
    }

    /// Makes an undefined value (e.g. the output of a removed `Constant`
    /// node) a constant holding `tensor`.
    pub fn define_const(&mut self, v: ValueId, tensor: TensorProto) {
        self.values[v.index()].def = ValueDef::Const;
        self.replace_const(v, tensor);
        let uses = self.uses[v.index()].clone();
        // Constants have no producer node: no edges to keep.
        let _ = uses;
    }

    /// Removes a constant that nothing uses any more.
    pub fn remove_const(&mut self, v: ValueId) {
        if self.consts.remove(&v).is_some() && !self.inputs.contains(&v) {
            self.values[v.index()].def = ValueDef::Undefined;
        }
    }

    /// All initializers in creation order.
    pub fn initializers(&self) -> impl Iterator<Item = (ValueId, &TensorProto)> + '_ {
        self.consts.iter().map(|(v, t)| (*v, t))
    }

    // ----- inputs and outputs -----

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }
    /// Adds a graph input.
    pub fn add_input(&mut self, name: &str, ty: Option<TypeProto>) -> ValueId {
        let v = self.add_value(name, ty);
        self.values[v.index()].def = ValueDef::Input;
        self.inputs.push(v);
        v
    }
    /// Appends a graph output.
    pub fn add_output(&mut self, v: ValueId) {
        self.outputs.push(v);
    }
    /// Replaces graph output `i`.
    pub fn set_output(&mut self, i: usize, v: ValueId) {
        self.outputs[i] = v;
    }

    // ----- nodes -----

    pub fn node(&self, n: NodeId) -> &Node {
        &self.g[n.ix()]
    }

    /// Mutable access to a node's ONNX payload (attributes, doc string,
    /// ...). Connections change only through the graph's methods, and the
    /// name must not change here: the graph indexes node names (remove the
    /// node and add a renamed one instead).
    pub fn node_proto_mut(&mut self, n: NodeId) -> &mut Node {
        &mut self.g[n.ix()]
    }

    pub fn contains_node(&self, n: NodeId) -> bool {
        self.g.contains_node(n.ix())
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Node ids in creation order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .g
            .node_indices()
            .map(|i| NodeId(i.index() as u32))
            .collect();
        v.sort();
        v
    }

    /// Adds a node consuming `inputs` and defining `outputs` (values that
    /// must be undefined so far). Returns its id.
    pub fn add_node(
        &mut self,
        mut node: Node,
        inputs: &[Option<ValueId>],
        outputs: &[Option<ValueId>],
    ) -> NodeId {
        node.inputs = inputs.to_vec();
        node.outputs = outputs.to_vec();
        let implicit = std::mem::take(&mut node.implicit);
        *self.node_names.entry(node.name().to_string()).or_insert(0) += 1;
        let ix = self.g.add_node(node);
        let id = NodeId(ix.index() as u32);
        for (slot, o) in outputs.iter().enumerate() {
            if let Some(o) = o {
                self.values[o.index()].def = ValueDef::Node { node: id, slot };
                // Uses recorded before the producer existed get their edges now.
                let earlier: Vec<Use> = self.uses[o.index()].clone();
                for u in earlier {
                    self.g.add_edge(ix, u.node.ix(), *o);
                }
            }
        }
        for (i, v) in inputs.iter().enumerate() {
            if let Some(v) = v {
                self.link(id, i, *v);
            }
        }
        self.set_implicit_inputs(id, implicit);
        id
    }

    /// Convenience: adds a node with fresh output values named after
    /// `out_names`; returns the node and its outputs.
    pub fn add_op(
        &mut self,
        node: Node,
        inputs: &[ValueId],
        out_names: &[&str],
    ) -> (NodeId, Vec<ValueId>) {
        let outs: Vec<ValueId> = out_names.iter().map(|n| self.add_value(n, None)).collect();
        let ins: Vec<Option<ValueId>> = inputs.iter().map(|v| Some(*v)).collect();
        let o: Vec<Option<ValueId>> = outs.iter().map(|v| Some(*v)).collect();
        let id = self.add_node(node, &ins, &o);
        (id, outs)
    }

    fn link(&mut self, node: NodeId, index: usize, v: ValueId) {
        self.uses[v.index()].push(Use { node, index });
        if let ValueDef::Node { node: p, .. } = self.values[v.index()].def {
            self.g.add_edge(p.ix(), node.ix(), v);
        }
    }

    fn unlink(&mut self, node: NodeId, index: usize, v: ValueId) {
        let u = &mut self.uses[v.index()];
        if let Some(pos) = u.iter().position(|x| x.node == node && x.index == index) {
            u.swap_remove(pos);
        }
        if let ValueDef::Node { node: p, .. } = self.values[v.index()].def {
            let edge = self
                .g
                .edges_connecting(p.ix(), node.ix())
                .find(|e| *e.weight() == v)
                .map(|e| e.id());
            if let Some(e) = edge {
                self.g.remove_edge(e);
            }
        }
    }

    /// Replaces input `i` of `node`.
    pub fn set_input(&mut self, node: NodeId, i: usize, v: Option<ValueId>) {
        let old = self.g[node.ix()].inputs.get(i).copied().flatten();
        if let Some(o) = old {
            self.unlink(node, i, o);
        }
        let n = &mut self.g[node.ix()];
        if n.inputs.len() <= i {
            n.inputs.resize(i + 1, None);
        }
        n.inputs[i] = v;
        if let Some(v) = v {
            self.link(node, i, v);
        }
    }

    /// Sets the values captured by a node's subgraphs.
    pub fn set_implicit_inputs(&mut self, node: NodeId, implicit: Vec<ValueId>) {
        let base = self.g[node.ix()].inputs.len();
        let old = std::mem::take(&mut self.g[node.ix()].implicit);
        for (k, v) in old.iter().enumerate() {
            self.unlink(node, base + k, *v);
        }
        for (k, v) in implicit.iter().enumerate() {
            self.link(node, base + k, *v);
        }
        self.g[node.ix()].implicit = implicit;
    }

    /// Makes `v` (currently undefined) output `slot` of `node`, in place of
    /// the value that was there (which becomes undefined). Keeps node ids, so
    /// the node keeps its place in the graph's order.
    pub fn set_node_output(&mut self, node: NodeId, slot: usize, v: ValueId) {
        let old = self.g[node.ix()].outputs.get(slot).copied().flatten();
        if let Some(o) = old {
            let edges: Vec<_> = self
                .g
                .edges_directed(node.ix(), Direction::Outgoing)
                .filter(|e| *e.weight() == o)
                .map(|e| e.id())
                .collect();
            for e in edges {
                self.g.remove_edge(e);
            }
            self.values[o.index()].def = ValueDef::Undefined;
        }
        // Edges from v's previous producer, if any, go away.
        if let ValueDef::Node { node: p, .. } = self.values[v.index()].def {
            let edges: Vec<_> = self
                .g
                .edges_directed(p.ix(), Direction::Outgoing)
                .filter(|e| *e.weight() == v)
                .map(|e| e.id())
                .collect();
            for e in edges {
                self.g.remove_edge(e);
            }
        }
        let n = &mut self.g[node.ix()];
        if n.outputs.len() <= slot {
            n.outputs.resize(slot + 1, None);
        }
        n.outputs[slot] = Some(v);
        self.values[v.index()].def = ValueDef::Node { node, slot };
        let uses = self.uses[v.index()].clone();
        for u in uses {
            self.g.add_edge(node.ix(), u.node.ix(), v);
        }
    }

    /// Whether a subgraph of some node captures `v` by name (renaming or
    /// replacing `v` would break that subgraph).
    pub fn is_captured(&self, v: ValueId) -> bool {
        self.uses[v.index()]
            .iter()
            .any(|u| u.index >= self.g[u.node.ix()].inputs.len())
    }

    /// Points every use of `old` (by nodes and graph outputs) at `new`.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        self.replace_node_uses(old, new);
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Points every node use of `old` at `new`; graph outputs keep `old`.
    pub fn replace_node_uses(&mut self, old: ValueId, new: ValueId) {
        let uses = self.uses[old.index()].clone();
        for u in uses {
            let n = &self.g[u.node.ix()];
            if u.index < n.inputs.len() {
                self.set_input(u.node, u.index, Some(new));
            } else {
                let mut imp = n.implicit.clone();
                imp[u.index - n.inputs.len()] = new;
                self.set_implicit_inputs(u.node, imp);
            }
        }
    }

    /// Removes a node. Its outputs become undefined values (they should be
    /// unused or redefined by the caller).
    pub fn remove_node(&mut self, node: NodeId) -> Node {
        let n = self.g[node.ix()].clone();
        if let Some(c) = self.node_names.get_mut(n.name()) {
            *c -= 1;
            if *c == 0 {
                self.node_names.remove(n.name());
            }
        }
        for (i, v) in n.inputs.iter().enumerate() {
            if let Some(v) = v {
                self.unlink(node, i, *v);
            }
        }
        for (k, v) in n.implicit.iter().enumerate() {
            self.unlink(node, n.inputs.len() + k, *v);
        }
        for o in n.outputs.iter().flatten() {
            if self.values[o.index()].def
                == (ValueDef::Node {
                    node,
                    slot: self.slot_of(&n, *o),
                })
            {
                self.values[o.index()].def = ValueDef::Undefined;
            }
        }
        // Edges to consumers go with the node.
        self.g.remove_node(node.ix()).unwrap_or(n)
    }

    fn slot_of(&self, n: &Node, v: ValueId) -> usize {
        n.outputs
            .iter()
            .position(|o| *o == Some(v))
            .unwrap_or(usize::MAX)
    }

    /// Nodes consuming `v` (each once).
    pub fn consumers(&self, v: ValueId) -> Vec<NodeId> {
        let mut c: Vec<NodeId> = self.uses[v.index()].iter().map(|u| u.node).collect();
        c.sort();
        c.dedup();
        c
    }

    /// Node ids in a deterministic topological order: among ready nodes the
    /// one created first goes first, so an imported graph that was already
    /// sorted keeps its order. Errors name a node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indeg: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        for n in self.g.node_indices() {
            indeg.insert(n, self.g.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<u32>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(n, _)| std::cmp::Reverse(n.index() as u32))
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(std::cmp::Reverse(i)) = ready.pop() {
            let ix = NodeIndex::new(i as usize);
            order.push(NodeId(i));
            for e in self.g.edges_directed(ix, Direction::Outgoing) {
                let d = indeg.entry(e.target()).or_default();
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse(e.target().index() as u32));
                }
            }
        }
        if order.len() != indeg.len() {
            let done: HashSet<NodeId> = order.iter().copied().collect();
            let stuck = self.node_ids().into_iter().find(|n| !done.contains(n));
            let (node, op) = stuck
                .map(|n| {
                    (
                        self.node(n).name().to_string(),
                        self.node(n).op_type().to_string(),
                    )
                })
                .unwrap_or_default();
            return Err(IrError::Invalid(vec![Problem::Cycle { node, op }]));
        }
        Ok(order)
    }

    /// Checks the graph's invariants (see the crate docs), reporting every
    /// problem found.
    pub fn verify(&self) -> Result<(), IrError> {
        let mut problems = Vec::new();
        for n in self.node_ids() {
            let node = self.node(n);
            for v in node.inputs.iter().flatten().chain(node.implicit.iter()) {
                if self.values[v.index()].def == ValueDef::Undefined {
                    problems.push(Problem::UndefinedInput {
                        node: node.name().to_string(),
                        op: node.op_type().to_string(),
                        value: self.values[v.index()].name.clone(),
                    });
                }
            }
            for (slot, o) in node.outputs.iter().enumerate() {
                if let Some(o) = o {
                    if self.values[o.index()].def != (ValueDef::Node { node: n, slot }) {
                        problems.push(Problem::DuplicateName {
                            value: self.values[o.index()].name.clone(),
                            first: "another definition".into(),
                            second: format!("node `{}`", node.name()),
                        });
                    }
                }
            }
        }
        for o in &self.outputs {
            if self.values[o.index()].def == ValueDef::Undefined {
                problems.push(Problem::UndefinedOutput {
                    value: self.values[o.index()].name.clone(),
                });
            }
        }
        for (v, _) in &self.consts {
            if !matches!(
                self.values[v.index()].def,
                ValueDef::Const | ValueDef::Input
            ) {
                problems.push(Problem::Other(format!(
                    "initializer `{}` is also defined otherwise",
                    self.values[v.index()].name
                )));
            }
        }
        let mut seen = HashSet::new();
        for v in self.value_ids() {
            let val = &self.values[v.index()];
            if val.def != ValueDef::Undefined
                && !val.name.is_empty()
                && !seen.insert(val.name.as_str())
            {
                problems.push(Problem::DuplicateName {
                    value: val.name.clone(),
                    first: "one value".into(),
                    second: "another".into(),
                });
            }
        }
        if let Err(e) = self.topo_order() {
            problems.extend(e.problems().iter().cloned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IrError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node-name index behind `unique_name` follows adds and removes:
    /// a name held by a live node (or two nodes) is never handed out, and
    /// a name freed by removing its last node is available again.
    #[test]
    fn unique_name_tracks_node_names_through_adds_and_removes() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", None);
        let (a, _) = g.add_op(Node::new("Relu", "n"), &[x], &["a"]);
        let (b, _) = g.add_op(Node::new("Relu", "n"), &[x], &["b"]);
        assert_eq!(g.unique_name("n"), "n_1");
        // A value name is taken too.
        assert_eq!(g.unique_name("a"), "a_1");
        g.remove_node(a);
        // One node is still called `n`.
        assert_eq!(g.unique_name("n"), "n_1");
        g.remove_node(b);
        assert_eq!(g.unique_name("n"), "n");
        // Many nodes: every generated name is fresh.
        let mut names = HashSet::new();
        for _ in 0..1000 {
            let name = g.unique_name("q");
            assert!(names.insert(name.clone()), "{name} handed out twice");
            g.add_op(Node::new("Relu", &name), &[x], &[&format!("{name}_out")]);
        }
        assert_eq!(g.unique_name("q"), "q_1000");
    }
}
