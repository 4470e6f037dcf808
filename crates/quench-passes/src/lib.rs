//! Graph passes and the pass pipeline.
//!
//! A pass is a small named thing with a documented contract:
//! `run(&mut Graph, &mut PassCx) -> Result<Changed, PassError>`. One file per
//! pass; the default order is one readable list in [`pipeline`].
//!
//! Invariant: every pass keeps graph inputs and outputs (names included),
//! keeps value names users can see, and carries anything it does not
//! understand through untouched. The runner checks the IR's invariants with
//! [`quench_ir::Graph::verify`] after every pass when verification is on
//! (tests and debug builds), naming the pass that broke them.

pub mod batchnorm_to_muladd;
pub mod codes;
pub mod constants_to_initializers;
pub mod dead_code;
pub mod dedup_initializers;
pub mod equalize;
pub mod eval;
pub mod facts;
pub mod fold_batchnorm;
pub mod fold_constants;
pub mod fuse_hard_swish;
pub mod lower_hard_swish;
pub mod matmul_add_to_gemm;
pub mod pipeline;
pub mod prune;
pub mod quantize;
pub mod remove_identity;
pub mod rules;
pub mod simulate;
pub mod subgraphs;
pub mod typecheck;
pub mod upgrade_opset;
mod util;

use std::collections::BTreeMap;

use quench_ir::{Graph, IrError};

/// Whether a pass changed the graph.
pub type Changed = bool;

/// What passes share: settings and a log of what they did.
#[derive(Debug, Clone, Default)]
pub struct PassCx {
    /// Version of the default-domain opset of the model.
    pub opset: i64,
    /// Human-readable notes, one per decision worth telling the user
    /// (`"fold_batchnorm: folded bn1 into conv1"`).
    pub log: Vec<String>,
    /// Counters by `pass.counter` name (e.g. `fold_batchnorm.folded`).
    pub stats: BTreeMap<String, usize>,
    /// IR text after the passes named in [`RunOptions::dump_after`], each
    /// headed `# after NAME`.
    pub dumps: Vec<String>,
}

impl PassCx {
    pub fn new(opset: i64) -> PassCx {
        PassCx {
            opset,
            ..Default::default()
        }
    }
    pub fn note(&mut self, pass: &str, msg: impl Into<String>) {
        self.log.push(format!("{pass}: {}", msg.into()));
    }
    pub fn count(&mut self, pass: &str, counter: &str, n: usize) {
        *self.stats.entry(format!("{pass}.{counter}")).or_default() += n;
    }
    pub fn stat(&self, key: &str) -> usize {
        self.stats.get(key).copied().unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass `{pass}` left an invalid graph: {source}")]
    Broken { pass: String, source: IrError },
    #[error("pass `{pass}`: {msg}")]
    Failed { pass: String, msg: String },
    #[error("unknown pass `{0}` (see `quench passes` for the list)")]
    Unknown(String),
}

/// A graph pass.
pub trait Pass {
    /// Short snake_case name, as used on the command line.
    fn name(&self) -> &'static str;
    /// One line on what it does.
    fn description(&self) -> &'static str;
    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError>;
}

/// Runner settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Check the IR's invariants after every pass.
    pub verify: bool,
    /// Record the IR text after these passes (by name) in
    /// [`PassCx::dumps`].
    pub dump_after: Vec<String>,
}

/// Runs passes in order. With `verify`, checks the graph after each one and
/// names the pass in any error.
pub fn run_passes(
    g: &mut Graph,
    passes: &[Box<dyn Pass>],
    cx: &mut PassCx,
    opts: &RunOptions,
) -> Result<Changed, PassError> {
    let mut any = false;
    for p in passes {
        let changed = p.run(g, cx)?;
        any |= changed;
        if opts.verify {
            g.verify().map_err(|source| PassError::Broken {
                pass: p.name().to_string(),
                source,
            })?;
        }
        if opts.dump_after.iter().any(|d| d == p.name()) {
            cx.dumps.push(format!(
                "# after {}{}\n{}",
                p.name(),
                if changed { "" } else { " (no change)" },
                quench_ir::GraphText::to_text(g)
            ));
        }
    }
    Ok(any)
}
