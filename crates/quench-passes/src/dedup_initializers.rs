//! `dedup_initializers`: identical initializers become one.
//!
//! Requires: nothing. Guarantees: constants with the same element type,
//! dims and bytes are merged into the first of them (in creation order);
//! uses of the others point at it and the others are removed. Declines:
//! graph inputs and outputs, and constants captured by name in subgraphs.

use std::collections::HashMap;

use prost::Message;
use quench_ir::{Graph, ValueId};

use crate::{Changed, Pass, PassCx, PassError};

pub struct DedupInitializers;

fn key(t: &quench_onnx::proto::TensorProto) -> (i32, Vec<i64>, bytes::Bytes) {
    let data = match &t.raw_data {
        Some(r) => r.clone(),
        None => {
            let mut c = t.clone();
            c.name = None;
            c.doc_string = None;
            c.dims.clear();
            bytes::Bytes::from(c.encode_to_vec())
        }
    };
    (t.data_type(), t.dims.clone(), data)
}

impl Pass for DedupInitializers {
    fn name(&self) -> &'static str {
        "dedup_initializers"
    }
    fn description(&self) -> &'static str {
        "merge identical initializers"
    }
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut first: HashMap<(i32, Vec<i64>, bytes::Bytes), ValueId> = HashMap::new();
        let mut dups: Vec<(ValueId, ValueId)> = Vec::new();
        for (v, t) in g.initializers() {
            if g.const_tensor(v).is_none()
                || g.is_graph_output(v)
                || g.is_captured(v)
                || !t.external_data.is_empty()
            {
                continue;
            }
            match first.get(&key(t)) {
                Some(f) => dups.push((v, *f)),
                None => {
                    first.insert(key(t), v);
                }
            }
        }
        for (dup, keep) in &dups {
            g.replace_all_uses(*dup, *keep);
            g.remove_const(*dup);
        }
        cx.count(self.name(), "merged", dups.len());
        if !dups.is_empty() {
            cx.note(
                self.name(),
                format!("merged {} duplicate initializers", dups.len()),
            );
        }
        Ok(!dups.is_empty())
    }
}
