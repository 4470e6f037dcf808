//! `remove_identity`: drops Identity and inference-mode Dropout.
//!
//! Requires: nothing. Guarantees: consumers read the node's input directly;
//! when the removed node's output was a graph output, the input value takes
//! over the output's name so the model's interface is unchanged. Declines:
//! Dropout in training mode or with its mask output used; nodes whose output
//! is captured by a subgraph; cases where keeping the output name would need
//! renaming a graph input, a constant or another graph output.

use quench_ir::{Graph, OpKind, ValueDef};

use crate::{Changed, Pass, PassCx, PassError};

pub struct RemoveIdentity;

impl Pass for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove_identity"
    }
    fn description(&self) -> &'static str {
        "remove Identity and inference-mode Dropout"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut removed = 0;
        for n in g.node_ids() {
            let node = g.node(n);
            let removable = match node.kind() {
                OpKind::Identity => node.outputs().len() == 1,
                OpKind::Dropout => {
                    let mask_used = node.output(1).is_some_and(|m| g.use_count(m) > 0);
                    // training_mode is an input from opset 12; a constant false
                    // (or absent) means inference.
                    let training = match node.input(2) {
                        None => false,
                        Some(t) => match g
                            .const_tensor(t)
                            .and_then(|t| quench_ir::tensor::to_f64(t).ok())
                        {
                            Some(v) => v.first().copied().unwrap_or(0.0) != 0.0,
                            None => true,
                        },
                    };
                    !mask_used && !training && node.attr_int("is_test") != Some(0)
                }
                _ => false,
            };
            if !removable {
                continue;
            }
            let (Some(input), Some(out)) = (node.input(0), node.output(0)) else {
                continue;
            };
            if g.is_captured(out) {
                continue;
            }
            if g.is_graph_output(out) {
                // The input must take the output's name: only possible for a
                // node-produced, otherwise invisible value.
                let inp = g.value(input);
                if !matches!(inp.def, ValueDef::Node { .. })
                    || g.is_graph_output(input)
                    || g.is_captured(input)
                {
                    continue;
                }
                let name = g.value(out).name.clone();
                let ty = g.value(out).ty.clone();
                let info = g.value(out).info.clone();
                g.remove_node(n);
                g.replace_all_uses(out, input);
                let old_in_name = g.value(input).name.clone();
                // Free the name, then give it to the input value.
                let tmp = g.unique_name(&format!("{name}__removed"));
                g.rename_value(out, &tmp);
                g.rename_value(input, &name);
                let _ = old_in_name;
                let v = g.value_mut(input);
                if ty.is_some() {
                    v.ty = ty;
                }
                if info.is_some() {
                    v.info = info;
                }
            } else {
                g.remove_node(n);
                g.replace_all_uses(out, input);
            }
            removed += 1;
        }
        if removed > 0 {
            cx.count(self.name(), "removed", removed);
            cx.note(
                self.name(),
                format!("removed {removed} Identity/Dropout nodes"),
            );
        }
        Ok(removed > 0)
    }
}
