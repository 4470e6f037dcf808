//! `quench inspect`: what a user wants to know first about a model.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use quench_compile::inspect::{summarize, Summary};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model to inspect (.onnx).
    pub model: PathBuf,
    /// Print the IR text of the graph instead of the summary.
    #[arg(long, conflicts_with = "json")]
    pub graph: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b} B")
    }
}

pub fn print_summary(s: &Summary) {
    println!("model      {} ({})", s.file, human_bytes(s.file_bytes));
    println!("ir_version {}", s.ir_version);
    let ops: Vec<String> = s.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    println!("opsets     {}", ops.join(", "));
    if !s.producer.is_empty() {
        println!("producer   {}", s.producer);
    }
    println!("inputs");
    for i in &s.inputs {
        println!("  {:<30} {}", i.name, i.r#type);
    }
    println!("outputs");
    for o in &s.outputs {
        println!("  {:<30} {}", o.name, o.r#type);
    }
    let sub = if s.subgraph_nodes > 0 {
        format!(" (+{} in subgraphs)", s.subgraph_nodes)
    } else {
        String::new()
    };
    println!("nodes      {}{sub}", s.nodes);
    let mut ops: Vec<(&String, &usize)> = s.ops.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        println!("  {op:<30} {n}");
    }
    println!(
        "parameters {} ({})",
        s.parameter_count,
        human_bytes(s.parameter_bytes)
    );
    for (t, p) in &s.parameters {
        println!(
            "  {t:<8} {:>6} tensors {:>12} elements {:>12}",
            p.tensors,
            p.elements,
            human_bytes(p.bytes)
        );
    }
    if s.external_data.tensors > 0 {
        println!(
            "external   {} tensors, {} in {}",
            s.external_data.tensors,
            human_bytes(s.external_data.bytes),
            s.external_data.files.join(", ")
        );
    } else {
        println!("external   none");
    }
    let q: usize = s.quantizable.values().sum();
    let list: Vec<String> = s
        .quantizable
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "quantizable {q} nodes in static int8 mode after the graph passes ({})",
        list.join(", ")
    );
    if let Some(q) = &s.already_quantized {
        println!("quantized  already quantized ({q}); `quench compile` takes FP32 models (--no-quantize runs only the passes)");
    }
    for (k, v) in &s.metadata {
        println!("metadata   {k} = {v}");
    }
}

pub fn run(a: InspectArgs) -> Result<()> {
    let (loaded, model) = crate::files::load(&a.model)?;
    if a.graph {
        print!("{}", model.to_text());
        return Ok(());
    }
    let s = summarize(&a.model, &loaded, &model);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_summary(&s);
    }
    Ok(())
}
