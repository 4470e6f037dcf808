//! `fold_constants`: evaluates nodes whose inputs are all constants.
//!
//! Requires: nothing. Guarantees: each folded node is replaced by an
//! initializer of its output's name, computed by [`crate::eval`]; repeated
//! until nothing changes, so chains of constant nodes fold. Declines: ops or
//! types the evaluator does not cover, nodes in other domains or with
//! subgraphs, nodes with several outputs, and outputs that are graph
//! outputs (their producer stays visible).
//!
//! `ConstantOfShape` with a `value` of a type the evaluator does not hold
//! (bool, i32, f16, ...) is filled here by repeating the value's bytes, so the
//! folded constant keeps the element type of `value`.

use bytes::Bytes;
use quench_ir::{tensor, Graph, Node, OpKind};
use quench_onnx::proto::tensor_proto::DataType;
use quench_onnx::proto::TensorProto;

use crate::eval::{eval, Tensor};
use crate::{util, Changed, Pass, PassCx, PassError};

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }
    fn description(&self) -> &'static str {
        "evaluate nodes whose inputs are all constants"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut folded = 0;
        loop {
            let mut progress = false;
            let order = g.topo_order().map_err(|e| PassError::Failed {
                pass: self.name().into(),
                msg: e.to_string(),
            })?;
            for n in order {
                if !util::plain(g, n) {
                    continue;
                }
                let node = g.node(n);
                if node.outputs().len() != 1 || node.inputs().iter().flatten().next().is_none() {
                    continue;
                }
                let Some(out) = node.output(0) else { continue };
                if g.is_graph_output(out) {
                    continue;
                }
                let mut ins = Vec::new();
                let mut all_const = true;
                for i in node.inputs() {
                    match i {
                        None => ins.push(None),
                        Some(v) => match g.const_tensor(*v).and_then(Tensor::from_proto) {
                            Some(t) => ins.push(Some(t)),
                            None => {
                                all_const = false;
                                break;
                            }
                        },
                    }
                }
                if !all_const {
                    continue;
                }
                let folded_proto = match constant_of_shape_raw(g, node) {
                    Some(t) => t,
                    None => {
                        let Some(mut outs) = eval(node, &ins) else {
                            continue;
                        };
                        let Some(t) = outs.pop() else { continue };
                        t.to_proto("")
                    }
                };
                g.remove_node(n);
                g.define_const(out, folded_proto);
                folded += 1;
                progress = true;
            }
            if !progress {
                break;
            }
        }
        if folded > 0 {
            cx.count(self.name(), "folded", folded);
            cx.note(self.name(), format!("folded {folded} constant nodes"));
        }
        Ok(folded > 0)
    }
}

/// Largest `ConstantOfShape` result filled here (elements), as in `eval`.
const MAX_ELEMENTS: usize = 1 << 24;

/// The output of a `ConstantOfShape` whose `value` has a fixed-width type
/// other than f32/i64 (those go through [`eval`]), with a constant shape
/// input: `value`'s bytes repeated, of `value`'s element type.
fn constant_of_shape_raw(g: &Graph, node: &Node) -> Option<TensorProto> {
    if node.kind() != OpKind::ConstantOfShape {
        return None;
    }
    let value = node.attr_tensor("value")?;
    let elem = value.data_type();
    if elem == DataType::Float as i32 || elem == DataType::Int64 as i32 {
        return None;
    }
    let bits = quench_onnx::dtype::elem_bits(elem)?;
    if bits % 8 != 0 || tensor::numel(&value.dims)? != 1 {
        return None;
    }
    let width = (bits / 8) as usize;
    let bytes: Vec<u8> = match &value.raw_data {
        Some(raw) => raw.to_vec(),
        None => match DataType::try_from(elem).ok()? {
            DataType::Bool
            | DataType::Int8
            | DataType::Uint8
            | DataType::Int16
            | DataType::Uint16
            | DataType::Int32
            | DataType::Float16
            | DataType::Bfloat16 => value.int32_data.first()?.to_le_bytes()[..width].to_vec(),
            DataType::Uint32 | DataType::Uint64 => {
                value.uint64_data.first()?.to_le_bytes()[..width].to_vec()
            }
            DataType::Double => value.double_data.first()?.to_le_bytes().to_vec(),
            _ => return None,
        },
    };
    if bytes.len() != width {
        return None;
    }
    let dims = tensor::to_i64(g.const_tensor(node.input(0)?)?).ok()?;
    let n = tensor::numel(&dims)?;
    if n > MAX_ELEMENTS {
        return None;
    }
    Some(TensorProto {
        dims,
        data_type: Some(elem),
        raw_data: Some(Bytes::from(bytes.repeat(n))),
        ..Default::default()
    })
}
