//! `fold_constants`: evaluates nodes whose inputs are all constants.
//!
//! Requires: nothing. Guarantees: each folded node is replaced by an
//! initializer of its output's name, computed by [`crate::eval`]; repeated
//! until nothing changes, so chains of constant nodes fold. Declines: ops or
//! types the evaluator does not cover, nodes in other domains or with
//! subgraphs, nodes with several outputs, and outputs that are graph
//! outputs (their producer stays visible).

use quench_ir::Graph;

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
                let Some(mut outs) = eval(node, &ins) else {
                    continue;
                };
                let Some(t) = outs.pop() else { continue };
                g.remove_node(n);
                g.define_const(out, t.to_proto(""));
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
