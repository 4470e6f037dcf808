//! Pass filetests, in the manner of Cranelift's: each file in
//! `crates/quench-passes/filetests/*.qir` holds the passes to run, an input
//! graph in IR text and the expected output, so a reviewer sees a pass's
//! effect in one readable file.
//!
//! File layout:
//!
//! ```text
//! ; What the test shows, in a sentence or two.
//! ; passes: fold_batchnorm, dead_code
//! ; data: 16
//! # ir_version 8; opset ai.onnx 17
//! graph main(%x: f32[1,2]) -> (%0)
//!   ...
//! ; expect:
//! # ir_version 8; opset ai.onnx 17
//! graph main(%x: f32[1,2]) -> (%0)
//!   ...
//! ; log:
//! ; fold_batchnorm: folded `bn`
//! ```
//!
//! - `; passes:` names the passes (see `quench passes`), run in order with
//!   [`quench_ir::Graph::verify`] after each.
//! - `; data: N` (optional, default 16): constants of at most N elements
//!   print their data, so folded values are checked exactly; larger ones
//!   show type and shape only and the parser fills them with deterministic
//!   data (see `quench_ir::parse_model`).
//! - Everything after `; expect:` is compared with the model printed after
//!   the passes, followed by `; log:` and the passes' log lines (when there
//!   are any). The printed output must also parse back to the same text.
//!
//! A failure prints a line diff of expected against actual. To accept the
//! new output, run with `QUENCH_BLESS=1`
//! (`QUENCH_BLESS=1 cargo test -p quench-passes --test filetests`): each
//! differing file's expected section is rewritten. Review the diff in git
//! before committing, as with `cargo insta review`.

use std::path::{Path, PathBuf};

use quench_ir::{parse_model, TextOptions};
use quench_passes::{pipeline, run_passes, PassCx, RunOptions};

const EXPECT: &str = "; expect:";

fn filetest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("filetests")
}

/// A parsed test file.
struct FileTest {
    /// Everything up to and including the `; expect:` line.
    head: String,
    input: String,
    expected: String,
    passes: Vec<String>,
    data: usize,
}

fn read_test(path: &Path) -> Result<FileTest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (input, expected) = match text.find(&format!("\n{EXPECT}")) {
        Some(i) => {
            let rest = &text[i + 1 + EXPECT.len()..];
            (
                text[..i + 1].to_string(),
                rest.strip_prefix('\n').unwrap_or(rest).to_string(),
            )
        }
        None => (text.clone(), String::new()),
    };
    let mut passes = None;
    let mut data = 16;
    for line in input.lines() {
        if let Some(p) = line.strip_prefix("; passes:") {
            passes = Some(
                p.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        } else if let Some(d) = line.strip_prefix("; data:") {
            data = d
                .trim()
                .parse()
                .map_err(|_| format!("bad `; data:` value `{}`", d.trim()))?;
        }
    }
    Ok(FileTest {
        head: format!("{input}{EXPECT}\n"),
        input,
        expected,
        passes: passes.ok_or("no `; passes:` line")?,
        data,
    })
}

/// Runs one test; returns the actual output text.
fn run(t: &FileTest) -> Result<String, String> {
    let mut model = parse_model(&t.input).map_err(|e| format!("input: {e}"))?;
    model
        .graph
        .verify()
        .map_err(|e| format!("input graph: {e}"))?;
    let passes = pipeline::by_names(&t.passes).map_err(|e| e.to_string())?;
    let mut cx = PassCx::new(model.default_opset().unwrap_or(0));
    run_passes(
        &mut model.graph,
        &passes,
        &mut cx,
        &RunOptions {
            verify: true,
            dump_after: vec![],
        },
    )
    .map_err(|e| e.to_string())?;
    let opts = TextOptions {
        max_data_elements: t.data,
    };
    let mut out = model.to_text_with(&opts);
    // The output is IR text too: it must read back as itself.
    let again = parse_model(&out)
        .map_err(|e| format!("output does not parse: {e}\n{out}"))?
        .to_text_with(&opts);
    if again != out {
        return Err(format!(
            "output does not print back the same:\n{}",
            diff(&out, &again)
        ));
    }
    if !cx.log.is_empty() {
        out.push_str("; log:\n");
        for l in &cx.log {
            out.push_str("; ");
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A line diff (longest common subsequence): ` ` kept, `-` expected only,
/// `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn filetests() {
    let bless = std::env::var("QUENCH_BLESS").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(filetest_dir())
        .expect("filetests directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("qir"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} filetests found", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let t = match read_test(path) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let actual = match run(&t) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        if actual == t.expected {
            continue;
        }
        if bless {
            std::fs::write(path, format!("{}{actual}", t.head)).expect("write filetest");
            eprintln!("blessed {name}");
        } else {
            failures.push(format!(
                "{name}: output differs (- expected, + actual):\n{}",
                diff(&t.expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} filetests failed (QUENCH_BLESS=1 accepts the new output):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
    assert_eq!(diff("a\n", "a\nb\n"), "  a\n+ b\n");
}
