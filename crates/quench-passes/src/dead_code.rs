//! `dead_code`: removes nodes and initializers nothing uses.
//!
//! Requires: nothing. Guarantees: a default-domain node none of whose
//! outputs is used (by nodes, subgraph captures or graph outputs) is
//! removed, repeatedly, and so are initializers no node uses that are not
//! graph inputs or outputs. Declines: nodes of other domains (their effects
//! are unknown to us, so they stay).

use quench_ir::Graph;

use crate::{Changed, Pass, PassCx, PassError};

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead_code"
    }
    fn description(&self) -> &'static str {
        "remove unused nodes and initializers"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut nodes = 0;
        loop {
            let mut progress = false;
            for n in g.node_ids().into_iter().rev() {
                let node = g.node(n);
                if !node.domain().is_empty() {
                    continue;
                }
                if node
                    .outputs()
                    .iter()
                    .flatten()
                    .all(|o| g.use_count(*o) == 0)
                {
                    g.remove_node(n);
                    nodes += 1;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        let dead: Vec<_> = g
            .initializers()
            .map(|(v, _)| v)
            .filter(|v| g.use_count(*v) == 0 && !g.is_graph_input(*v))
            .collect();
        for v in &dead {
            g.remove_const(*v);
        }
        cx.count(self.name(), "nodes", nodes);
        cx.count(self.name(), "initializers", dead.len());
        if nodes + dead.len() > 0 {
            cx.note(
                self.name(),
                format!("removed {nodes} nodes and {} initializers", dead.len()),
            );
        }
        Ok(nodes + dead.len() > 0)
    }
}
