//! End-to-end tests of the `quench` binary: `inspect` (text, JSON, IR text)
//! on the fixtures, `convert` round trips (inline, external data and back),
//! and the error path for every kind of bad input.
//!
//! Invariant: every failing run exits with code 1, prints `error: ...` naming
//! the file (and, where there is one, the node or tensor) and never panics;
//! a failing `convert` leaves nothing behind in the output directory; no run
//! ever changes its input files.
//!
//! Every model a successful `convert` writes is also copied into
//! `target/interop/cli/`, where CI runs onnx.checker and onnxruntime over it
//! (`scripts/interop_check.py target/interop`). Only good models go there.

#![allow(clippy::unwrap_used)]

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use quench_onnx::proto::{ModelProto, TensorProto};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn testdata(name: &str) -> PathBuf {
    root().join("testdata").join(name)
}

/// `target/interop/cli/<sub>`, created on demand.
fn interop_dir(sub: &str) -> PathBuf {
    let d = root().join("target").join("interop").join("cli").join(sub);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every good fixture, `testdata/*.onnx`, sorted.
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("testdata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 15,
        "expected the fixtures of testdata/README.md, found {v:?}"
    );
    v
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn quench<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs quench and asserts success.
fn ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let r = quench(args);
    assert_eq!(r.code, 0, "{}", r.context());
    assert!(!r.stderr.contains("panicked"), "{}", r.context());
    r
}

/// Runs quench and asserts a clean failure whose message contains every
/// string in `expect`.
fn fails<S: AsRef<std::ffi::OsStr>>(args: &[S], expect: &[&str]) -> Run {
    let r = quench(args);
    assert_eq!(
        r.code,
        1,
        "expected a clean failure (exit 1)\n{}",
        r.context()
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.context());
    assert!(r.stderr.starts_with("error: "), "{}", r.context());
    for e in expect {
        assert!(
            r.stderr.contains(e),
            "stderr should contain {e:?}\n{}",
            r.context()
        );
    }
    r
}

/// Length and hash of a file's contents.
fn fingerprint(p: &Path) -> (u64, u64) {
    let b = std::fs::read(p).unwrap();
    let mut h = DefaultHasher::new();
    h.write(&b);
    (b.len() as u64, h.finish())
}

/// A fixture plus its external data files, with their fingerprints.
fn input_files(p: &Path) -> Vec<(PathBuf, (u64, u64))> {
    let mut files = vec![p.to_path_buf()];
    let data = p.with_file_name(format!("{}.data", p.file_name().unwrap().to_string_lossy()));
    if data.exists() {
        files.push(data);
    }
    files
        .into_iter()
        .map(|f| (f.clone(), fingerprint(&f)))
        .collect()
}

fn assert_unchanged(before: &[(PathBuf, (u64, u64))]) {
    for (f, fp) in before {
        assert_eq!(&fingerprint(f), fp, "{} was modified", f.display());
    }
}

/// Entries of a directory, sorted (names only).
fn dir_entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn inspect_json(p: &Path) -> Value {
    let r = ok(&["inspect", s(p), "--json"]);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e})\n{}", r.context()))
}

fn load(p: &Path) -> ModelProto {
    quench_onnx::load_model(p)
        .unwrap_or_else(|e| panic!("{e}"))
        .model
}

/// A tensor's bytes in little-endian form, whichever field holds them.
fn tensor_bytes(t: &TensorProto) -> Vec<u8> {
    if let Some(r) = &t.raw_data {
        if !r.is_empty() {
            return r.to_vec();
        }
    }
    let mut v = Vec::new();
    v.extend(t.float_data.iter().flat_map(|x| x.to_le_bytes()));
    v.extend(t.double_data.iter().flat_map(|x| x.to_le_bytes()));
    v.extend(t.int32_data.iter().flat_map(|x| x.to_le_bytes()));
    v.extend(t.int64_data.iter().flat_map(|x| x.to_le_bytes()));
    v.extend(t.uint64_data.iter().flat_map(|x| x.to_le_bytes()));
    for b in &t.string_data {
        v.extend(b.iter());
    }
    v
}

/// Every tensor of a model (initializers and tensor attributes, in
/// subgraphs too) by a path-like key, as (type, dims, bytes).
fn tensors(m: &ModelProto) -> BTreeMap<String, (i32, Vec<i64>, Vec<u8>)> {
    let mut m = m.clone();
    let mut out = BTreeMap::new();
    let mut i = 0;
    quench_onnx::visit::for_each_tensor_mut(&mut m, &mut |t: &mut TensorProto| {
        i += 1;
        let key = if t.name().is_empty() {
            format!("#{i}")
        } else {
            t.name().to_string()
        };
        let prev = out.insert(
            key.clone(),
            (t.data_type(), t.dims.clone(), tensor_bytes(t)),
        );
        assert!(prev.is_none(), "tensor name {key} twice");
    });
    // Unnamed tensors (Constant attributes) are keyed by visiting order,
    // which the round trip keeps for the fixtures.
    out
}

/// Asserts two models hold the same tensors, name for name, bit for bit.
fn assert_same_tensors(a: &ModelProto, b: &ModelProto, what: &str) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>(),
        "{what}: tensor names differ"
    );
    for (k, va) in &ta {
        let vb = &tb[k];
        assert_eq!(
            (va.0, &va.1),
            (vb.0, &vb.1),
            "{what}: tensor {k}: type or shape differs"
        );
        assert!(
            va.2 == vb.2,
            "{what}: tensor {k}: data differs ({} vs {} bytes)",
            va.2.len(),
            vb.2.len()
        );
    }
}

/// The deterministic IR text of a model file.
fn ir_text(p: &Path) -> String {
    quench_ir::Model::from_onnx(load(p))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .to_text()
}

/// Number of tensors in `p` stored as external data, per `inspect --json`.
fn external_tensors(p: &Path) -> u64 {
    inspect_json(p)["external_data"]["tensors"]
        .as_u64()
        .unwrap()
}

/// The external data files a written model refers to (beside it).
fn data_files(model: &Path) -> Vec<PathBuf> {
    quench_onnx::load_model(model)
        .unwrap_or_else(|e| panic!("{e}"))
        .external
        .files
        .iter()
        .map(|f| model.with_file_name(f))
        .collect()
}

/// Copies a model file written by a test (and its data files) into the
/// interop directory. Data files keep their names, since the model refers
/// to them; the data files of an earlier model of that name are removed.
fn publish(model: &Path, sub: &str) {
    let dir = interop_dir(sub);
    let name = model.file_name().unwrap().to_string_lossy().into_owned();
    for old in quench_onnx::replaced_data_files(&dir.join(&name)) {
        let _ = std::fs::remove_file(old);
    }
    std::fs::copy(model, dir.join(&name)).unwrap();
    for data in data_files(model) {
        std::fs::copy(&data, dir.join(data.file_name().unwrap())).unwrap();
    }
}

// ---------------------------------------------------------------- inspect

#[test]
fn inspect_text_summary_of_digits_cnn() {
    let r = ok(&["inspect", s(&testdata("digits_cnn.onnx"))]);
    let out = &r.stdout;
    let line = |prefix: &str| -> String {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}\n{out}"))
            .to_string()
    };
    assert!(line("model").contains("digits_cnn.onnx"));
    assert_eq!(
        line("ir_version").split_whitespace().collect::<Vec<_>>(),
        ["ir_version", "8"]
    );
    assert!(line("opsets").contains("ai.onnx 17"));
    assert_eq!(
        line("input ").split_whitespace().collect::<Vec<_>>(),
        ["input", "f32[N,1,8,8]"]
    );
    assert_eq!(
        line("logits").split_whitespace().collect::<Vec<_>>(),
        ["logits", "f32[N,10]"]
    );
    assert_eq!(
        line("Conv").split_whitespace().collect::<Vec<_>>(),
        ["Conv", "2"]
    );
    assert_eq!(
        line("Gemm").split_whitespace().collect::<Vec<_>>(),
        ["Gemm", "1"]
    );
    assert!(line("parameters").starts_with("parameters 3914 "), "{out}");
    assert_eq!(line("external").trim(), "external   none");
}

#[test]
fn inspect_text_summary_of_external_data() {
    let r = ok(&["inspect", s(&testdata("external_data.onnx"))]);
    let ext = r
        .stdout
        .lines()
        .find(|l| l.starts_with("external"))
        .unwrap_or_else(|| panic!("{}", r.context()));
    assert!(
        ext.contains("2 tensors") && ext.contains("external_data.onnx.data"),
        "{ext}"
    );
}

/// Expected `inspect --json` facts, checked against the Python reference
/// (`onnx.load`) when the fixtures were made.
struct Expect {
    file: &'static str,
    ir_version: i64,
    opsets: &'static [(&'static str, i64)],
    inputs: &'static [(&'static str, &'static str)],
    outputs: &'static [(&'static str, &'static str)],
    ops: &'static [(&'static str, u64)],
    nodes: u64,
    parameter_count: u64,
    external: (u64, u64),
}

const EXPECT: &[Expect] = &[
    Expect {
        file: "digits_cnn.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[N,1,8,8]")],
        outputs: &[("logits", "f32[N,10]")],
        ops: &[
            ("Conv", 2),
            ("BatchNormalization", 2),
            ("Relu", 2),
            ("Flatten", 1),
            ("Gemm", 1),
        ],
        nodes: 8,
        parameter_count: 3914,
        external: (0, 0),
    },
    Expect {
        file: "mlp.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[N,32]")],
        outputs: &[("output", "f32[N,10]")],
        ops: &[("MatMul", 2), ("Add", 2), ("Relu", 2), ("Gemm", 1)],
        nodes: 7,
        parameter_count: 6922,
        external: (0, 0),
    },
    Expect {
        file: "external_data.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[1,64]")],
        outputs: &[("output", "f32[1,16]")],
        ops: &[("MatMul", 2), ("Add", 2), ("Relu", 1)],
        nodes: 5,
        parameter_count: 5200,
        external: (2, 20480),
    },
    Expect {
        file: "custom_domain.onnx",
        ir_version: 10,
        opsets: &[("ai.onnx", 17), ("com.quench.test", 1)],
        inputs: &[("input", "f32[1,8]")],
        outputs: &[("output", "f32[1,8]")],
        ops: &[
            ("MatMul", 1),
            ("Relu", 1),
            ("com.quench.test.MyOp", 1),
            ("Add", 1),
        ],
        nodes: 4,
        parameter_count: 72,
        external: (0, 0),
    },
    Expect {
        file: "transformer.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[1,8,32]")],
        outputs: &[("output", "f32[1,8,32]")],
        ops: &[
            ("MatMul", 8),
            ("Add", 12),
            ("Softmax", 1),
            ("LayerNormalization", 1),
            ("Erf", 1),
        ],
        nodes: 42,
        parameter_count: 8621,
        external: (0, 0),
    },
    Expect {
        file: "constant_weights.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[1,3,8,8]")],
        outputs: &[("output", "f32[1,10]")],
        ops: &[("Constant", 5), ("Conv", 1), ("MatMul", 1)],
        nodes: 10,
        parameter_count: 2684,
        external: (0, 0),
    },
    Expect {
        file: "resnet_tiny.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[1,3,32,32]")],
        outputs: &[("output", "f32[1,10]")],
        ops: &[
            ("Conv", 6),
            ("BatchNormalization", 6),
            ("Relu", 5),
            ("Add", 2),
            ("MaxPool", 1),
        ],
        nodes: 23,
        parameter_count: 20282,
        external: (0, 0),
    },
    Expect {
        file: "if_subgraph.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[("input", "f32[1,16]")],
        outputs: &[("output", "f32[1,8]")],
        ops: &[("If", 1), ("ReduceSum", 1), ("Greater", 1)],
        nodes: 4,
        parameter_count: 145,
        external: (0, 0),
    },
    // Parameters inside the If's branches (initializers and a Constant
    // node) count too: 10281 in all (onnx, walked in Python).
    Expect {
        file: "control_flow/vad_if.onnx",
        ir_version: 8,
        opsets: &[("ai.onnx", 17)],
        inputs: &[
            ("input", "f32[1,64]"),
            ("state", "f32[2,1,32]"),
            ("sr", "i64[]"),
        ],
        outputs: &[("output", "f32[1,1]"), ("stateN", "f32[2,1,32]")],
        ops: &[("If", 1), ("Equal", 1)],
        nodes: 2,
        parameter_count: 10281,
        external: (0, 0),
    },
];

#[test]
fn inspect_json_reports_the_real_values() {
    for e in EXPECT {
        let p = testdata(e.file);
        let j = inspect_json(&p);
        let what = e.file;
        assert_eq!(
            j["ir_version"].as_i64(),
            Some(e.ir_version),
            "{what}: {j:#}"
        );
        let opsets: BTreeMap<String, i64> = j["opsets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap()))
            .collect();
        let want: BTreeMap<String, i64> =
            e.opsets.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(opsets, want, "{what}: opsets");
        let io = |v: &Value| -> Vec<(String, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap().to_string(),
                        x["type"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let want_io = |w: &[(&str, &str)]| -> Vec<(String, String)> {
            w.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(io(&j["inputs"]), want_io(e.inputs), "{what}: inputs");
        assert_eq!(io(&j["outputs"]), want_io(e.outputs), "{what}: outputs");
        for (op, n) in e.ops {
            assert_eq!(
                j["ops"][op].as_u64(),
                Some(*n),
                "{what}: count of {op} in {}",
                j["ops"]
            );
        }
        assert_eq!(j["nodes"].as_u64(), Some(e.nodes), "{what}: nodes");
        assert_eq!(
            j["parameter_count"].as_u64(),
            Some(e.parameter_count),
            "{what}: parameter_count"
        );
        assert_eq!(
            j["external_data"]["tensors"].as_u64(),
            Some(e.external.0),
            "{what}: external tensors"
        );
        assert_eq!(
            j["external_data"]["bytes"].as_u64(),
            Some(e.external.1),
            "{what}: external bytes"
        );
    }
}

#[test]
fn inspect_json_is_consistent_on_every_fixture() {
    for p in fixtures() {
        let j = inspect_json(&p);
        let what = p.display();
        for field in [
            "ir_version",
            "opsets",
            "inputs",
            "outputs",
            "ops",
            "parameter_count",
            "external_data",
        ] {
            assert!(!j[field].is_null(), "{what}: no field {field}: {j:#}");
        }
        assert_eq!(
            j["file_bytes"].as_u64(),
            Some(std::fs::metadata(&p).unwrap().len()),
            "{what}: file_bytes"
        );
        let ops: u64 = j["ops"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            Some(ops),
            j["nodes"].as_u64(),
            "{what}: op histogram does not add up to the node count"
        );
        assert!(
            !j["inputs"].as_array().unwrap().is_empty()
                && !j["outputs"].as_array().unwrap().is_empty(),
            "{what}"
        );
        assert!(
            j["parameter_count"].as_u64().unwrap() > 0,
            "{what}: every fixture has weights"
        );
        // Initializers are not listed as inputs.
        assert_eq!(
            j["inputs"].as_array().unwrap().len(),
            1,
            "{what}: every fixture has one real input"
        );
        let elems: u64 = j["parameters"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p["elements"].as_u64().unwrap())
            .sum();
        assert_eq!(Some(elems), j["parameter_count"].as_u64(), "{what}");
    }
}

#[test]
fn inspect_graph_prints_ir_text() {
    for p in fixtures() {
        let r = ok(&["inspect", s(&p), "--graph"]);
        assert!(
            r.stdout.starts_with("# ir_version"),
            "{}: {}",
            p.display(),
            r.context()
        );
        assert!(r.stdout.contains("\ngraph "), "{}", r.context());
        // The same text as the library produces.
        assert_eq!(r.stdout, ir_text(&p), "{}", p.display());
    }
}

#[test]
fn inspect_graph_and_json_conflict() {
    let r = quench(&["inspect", s(&testdata("mlp.onnx")), "--graph", "--json"]);
    assert_ne!(r.code, 0, "{}", r.context());
    assert!(!r.stderr.contains("panicked"), "{}", r.context());
}

// ---------------------------------------------------------------- bad inputs

/// A bad input: a path and the strings its error message must contain.
struct Bad {
    path: PathBuf,
    expect: Vec<String>,
}

/// Writes every kind of bad input under `dir` (or names a testdata/bad
/// file) and says what the error must name.
fn bad_inputs(dir: &Path) -> Vec<Bad> {
    let mut v = Vec::new();
    let mut add = |path: PathBuf, extra: &[&str]| {
        let mut expect = vec![path.display().to_string()];
        expect.extend(extra.iter().map(|e| e.to_string()));
        v.push(Bad { path, expect });
    };

    // Garbage: deterministic noise, and text.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    let p = dir.join("garbage.onnx");
    std::fs::write(&p, &noise).unwrap();
    add(p, &["not a valid ONNX model"]);
    let p = dir.join("text.onnx");
    std::fs::write(&p, "this is not a model\n").unwrap();
    add(p, &[]);

    // Truncations of a real model, including inside the header and inside
    // tensor data.
    let full = std::fs::read(testdata("mlp.onnx")).unwrap();
    for n in [1, 7, 40, 100, full.len() / 2, full.len() - 1] {
        let p = dir.join(format!("truncated_{n}.onnx"));
        std::fs::write(&p, &full[..n]).unwrap();
        add(p, &[]);
    }

    let p = dir.join("empty.onnx");
    std::fs::write(&p, b"").unwrap();
    add(p, &["empty"]);
    add(dir.join("does_not_exist.onnx"), &["No such file"]);
    let p = dir.join("a_directory.onnx");
    std::fs::create_dir(&p).unwrap();
    add(p, &["directory"]);

    let bad = |n: &str| testdata(&format!("bad/{n}"));
    add(
        bad("missing_external.onnx"),
        &["`w`", "missing_external.onnx.data"],
    );
    add(
        bad("short_external.onnx"),
        &["`w`", "short_external.onnx.data", "512", "1152"],
    );
    add(bad("cycle.onnx"), &["cycle", "`add`"]);
    add(bad("undefined_input.onnx"), &["`add`", "`ghost`"]);
    add(
        bad("duplicate_names.onnx"),
        &["`output`", "`relu`", "`sigmoid`"],
    );
    v
}

#[test]
fn inspect_rejects_bad_inputs_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    for b in bad_inputs(tmp.path()) {
        let before = if b.path.is_file() {
            Some(fingerprint(&b.path))
        } else {
            None
        };
        let expect: Vec<&str> = b.expect.iter().map(String::as_str).collect();
        for mode in [&[][..], &["--json"][..], &["--graph"][..]] {
            let mut args = vec!["inspect", s(&b.path)];
            args.extend_from_slice(mode);
            let r = fails(&args, &expect);
            assert!(
                r.stdout.is_empty(),
                "nothing on stdout for a failed inspect\n{}",
                r.context()
            );
        }
        if let Some(fp) = before {
            assert_eq!(
                fingerprint(&b.path),
                fp,
                "{} was modified",
                b.path.display()
            );
        }
    }
}

#[test]
fn convert_of_bad_inputs_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    for b in bad_inputs(&inputs) {
        let expect: Vec<&str> = b.expect.iter().map(String::as_str).collect();
        for mode in [&[][..], &["--external-data"][..], &["--inline"][..]] {
            let out_dir = tempfile::tempdir().unwrap();
            let out = out_dir.path().join("out.onnx");
            let mut args = vec!["convert", s(&b.path), "-o", s(&out)];
            args.extend_from_slice(mode);
            fails(&args, &expect);
            assert_eq!(
                dir_entries(out_dir.path()),
                Vec::<String>::new(),
                "{} {mode:?}: output directory not empty",
                b.path.display()
            );
        }
    }
}

// ---------------------------------------------------------------- convert

/// Converts every fixture inline (the default for inline inputs) and checks
/// that the result is the same model: same IR text, same tensors, same
/// summary; the input is untouched.
#[test]
fn convert_round_trips_every_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    for p in fixtures() {
        let before = input_files(&p);
        let out = tmp.path().join(format!("{}.onnx", stem(&p)));
        let r = ok(&["convert", s(&p), "-o", s(&out)]);
        assert!(r.stdout.starts_with("wrote "), "{}", r.context());
        assert_unchanged(&before);
        assert!(out.is_file());
        let what = format!("{} -> {}", p.display(), out.display());
        assert_eq!(ir_text(&out), ir_text(&p), "{what}: IR text differs");
        assert_same_tensors(&load(&p), &load(&out), &what);
        let (a, b) = (inspect_json(&p), inspect_json(&out));
        for field in [
            "ir_version",
            "opsets",
            "inputs",
            "outputs",
            "ops",
            "nodes",
            "subgraph_nodes",
            "parameters",
            "metadata",
        ] {
            assert_eq!(a[field], b[field], "{what}: {field}");
        }
        // External data stays external unless asked otherwise.
        assert_eq!(
            a["external_data"]["tensors"], b["external_data"]["tensors"],
            "{what}"
        );
        // A converted model converts to the same bytes again (same file
        // name, so that external data locations match too).
        let again_dir = tmp.path().join("again");
        std::fs::create_dir_all(&again_dir).unwrap();
        let again = again_dir.join(out.file_name().unwrap());
        ok(&["convert", s(&out), "-o", s(&again)]);
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
            "{what}: convert is not idempotent"
        );
        let (data, data_again) = (input_files(&out), input_files(&again));
        assert_eq!(data.len(), data_again.len(), "{what}");
        if data.len() == 2 {
            assert_eq!(
                data[1].1, data_again[1].1,
                "{what}: external data differs on the second convert"
            );
        }
        publish(&out, "roundtrip");
    }
}

/// `--external-data` writes `<out>.data` holding the same tensors as the
/// inline conversion, and `--inline` brings them back.
#[test]
fn convert_to_external_data_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    for p in fixtures() {
        let before = input_files(&p);
        let name = stem(&p);
        let inline = tmp.path().join(format!("{name}.inline.onnx"));
        let ext = tmp.path().join(format!("{name}.external.onnx"));
        let back = tmp.path().join(format!("{name}.back.onnx"));

        ok(&["convert", s(&p), "-o", s(&inline), "--inline"]);
        assert!(!tmp.path().join(format!("{name}.inline.onnx.data")).exists());
        assert_eq!(
            external_tensors(&inline),
            0,
            "{name}: --inline left external tensors"
        );

        let r = ok(&["convert", s(&p), "-o", s(&ext), "--external-data"]);
        // `<out>.<16 hex digits>.data`, named after the data.
        let ext_files = data_files(&ext);
        let ext_data = ext_files
            .first()
            .cloned()
            .unwrap_or_else(|| tmp.path().join("none"));
        let big = tensors(&load(&p))
            .values()
            .filter(|t| t.2.len() >= quench_onnx::DEFAULT_EXTERNAL_THRESHOLD)
            .count() as u64;
        if big > 0 {
            assert!(
                ext_data.is_file(),
                "{name}: no {}\n{}",
                ext_data.display(),
                r.context()
            );
            let data_name = ext_data.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                data_name.starts_with(&format!("{name}.external.onnx."))
                    && data_name.ends_with(".data")
                    && data_name.len() == format!("{name}.external.onnx.").len() + 16 + 5,
                "{data_name}"
            );
            assert!(r.stdout.contains(&data_name), "{}", r.context());
        }
        assert_eq!(
            external_tensors(&ext),
            big,
            "{name}: tensors of >= 1 KiB must be external"
        );
        // The .onnx itself is small: the big tensors are not inline any more.
        if big > 0 {
            let data_len = std::fs::metadata(&ext_data).unwrap().len();
            let onnx_len = std::fs::metadata(&ext).unwrap().len();
            let inline_len = std::fs::metadata(&inline).unwrap().len();
            assert!(
                onnx_len + 1024 * big <= inline_len,
                "{name}: {onnx_len} vs inline {inline_len}"
            );
            assert!(
                data_len >= 1024 * big,
                "{name}: data file has {data_len} bytes"
            );
        }
        assert_same_tensors(
            &load(&inline),
            &load(&ext),
            &format!("{name}: inline vs external"),
        );
        assert_eq!(ir_text(&inline), ir_text(&ext), "{name}");

        let r = ok(&["convert", s(&ext), "-o", s(&back), "--inline"]);
        assert!(
            !tmp.path().join(format!("{name}.back.onnx.data")).exists(),
            "{}",
            r.context()
        );
        assert_eq!(external_tensors(&back), 0);
        assert_same_tensors(
            &load(&inline),
            &load(&back),
            &format!("{name}: inline vs back"),
        );
        assert_eq!(
            std::fs::read(&inline).unwrap(),
            std::fs::read(&back).unwrap(),
            "{name}: inline -> external -> inline is not the same file"
        );

        assert_unchanged(&before);
        publish(&inline, "external");
        publish(&ext, "external");
        publish(&back, "external");
    }
}

/// A model with external data converts with default options to a model
/// that still uses external data, in another directory, and it loads there.
#[test]
fn convert_external_model_to_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let src = testdata("external_data.onnx");
    let before = input_files(&src);
    let out = tmp.path().join("sub").join("moved.onnx");
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    ok(&["convert", s(&src), "-o", s(&out)]);
    let data = data_files(&out);
    assert_eq!(data.len(), 1);
    assert!(data[0].is_file() && data[0].starts_with(tmp.path().join("sub")));
    assert!(data[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("moved.onnx."));
    assert_eq!(external_tensors(&out), 2);
    assert_same_tensors(&load(&src), &load(&out), "moved");
    assert_unchanged(&before);
}

#[test]
fn convert_refuses_to_overwrite_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m.onnx");
    std::fs::copy(testdata("mlp.onnx"), &m).unwrap();
    let before = input_files(&m);
    for out in [
        m.clone(),
        tmp.path().join(".").join("m.onnx"),
        tmp.path().join("x").join("..").join("m.onnx"),
    ] {
        if out.to_string_lossy().contains("/x/") {
            std::fs::create_dir_all(tmp.path().join("x")).unwrap();
        }
        for mode in [&[][..], &["--external-data"][..], &["--inline"][..]] {
            let mut args = vec!["convert", s(&m), "-o", s(&out)];
            args.extend_from_slice(mode);
            fails(&args, &["overwrite"]);
            assert_unchanged(&before);
        }
    }
    // A relative spelling of the same file, from its directory.
    let o = Command::new(env!("CARGO_BIN_EXE_quench"))
        .current_dir(tmp.path())
        .args(["convert", s(&m), "-o", "m.onnx"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_unchanged(&before);
    assert!(!tmp.path().join("m.onnx.data").exists());
}

/// A save never writes or removes a data file an input reads: the new data
/// gets a fresh name, and an existing output whose data file is also the
/// input's (a copied model) is refused, since replacing it would remove
/// that file.
#[test]
fn convert_never_replaces_or_removes_the_inputs_external_data() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.onnx");
    ok(&[
        "convert",
        s(&testdata("mlp.onnx")),
        "-o",
        s(&a),
        "--external-data",
    ]);
    let data = data_files(&a);
    assert_eq!(data.len(), 1);
    let data_name = data[0].file_name().unwrap().to_string_lossy().into_owned();
    // b.onnx is a copy of a.onnx: both refer to a's data file.
    let b = tmp.path().join("b.onnx");
    std::fs::copy(&a, &b).unwrap();
    let before = vec![
        (b.clone(), fingerprint(&b)),
        (data[0].clone(), fingerprint(&data[0])),
    ];
    fails(
        &["convert", s(&b), "-o", s(&a), "--external-data"],
        &[&data_name],
    );
    assert_unchanged(&before);
    // Moved instead of copied: nothing is replaced, and the data (the same
    // bytes, so the same name) stays as b.onnx reads it.
    std::fs::remove_file(&a).unwrap();
    ok(&["convert", s(&b), "-o", s(&a), "--external-data"]);
    assert_unchanged(&before);
    assert_eq!(data_files(&a), data);
    assert_same_tensors(&load(&b), &load(&a), "b vs a");
    // Another model to the same output: a new data file, b's is kept.
    ok(&[
        "convert",
        s(&testdata("resnet_tiny.onnx")),
        "-o",
        s(&b.with_file_name("c.onnx")),
        "--external-data",
    ]);
    assert_unchanged(&before);
}

/// Failures while writing (not while reading) leave nothing behind either.
#[test]
fn convert_write_failures_leave_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = testdata("mlp.onnx");
    let before = input_files(&src);

    // The output directory does not exist.
    let missing = tmp.path().join("no_such_dir").join("out.onnx");
    fails(&["convert", s(&src), "-o", s(&missing)], &["no_such_dir"]);
    assert_eq!(dir_entries(tmp.path()), Vec::<String>::new());

    // The output path is an existing directory (inline and external).
    let d = tmp.path().join("out.onnx");
    std::fs::create_dir(&d).unwrap();
    for mode in [&["--inline"][..], &["--external-data"][..]] {
        let mut args = vec!["convert", s(&src), "-o", s(&d)];
        args.extend_from_slice(mode);
        fails(&args, &["out.onnx"]);
        assert_eq!(
            dir_entries(tmp.path()),
            vec!["out.onnx".to_string()],
            "{mode:?}: stray files"
        );
        assert_eq!(dir_entries(&d), Vec::<String>::new());
    }
    assert_unchanged(&before);
}

/// A convert over an existing output replaces it completely (no stale data
/// file from an earlier external conversion is used by the inline one).
#[test]
fn convert_replaces_an_existing_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.onnx");
    ok(&[
        "convert",
        s(&testdata("mlp.onnx")),
        "-o",
        s(&out),
        "--external-data",
    ]);
    ok(&[
        "convert",
        s(&testdata("resnet_tiny.onnx")),
        "-o",
        s(&out),
        "--inline",
    ]);
    assert_eq!(external_tensors(&out), 0);
    assert_eq!(ir_text(&out), ir_text(&testdata("resnet_tiny.onnx")));
    // Only the model: the inline save removed the data file of the first.
    let entries = dir_entries(tmp.path());
    assert_eq!(entries, vec!["out.onnx".to_string()]);
}

/// External data must stay inside the model's directory, even when the file
/// it names exists; malformed references are errors naming the tensor.
#[test]
fn external_data_references_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::copy(
        testdata("external_data.onnx.data"),
        tmp.path().join("external_data.onnx.data"),
    )
    .unwrap();
    let base = ModelProto::decode(
        std::fs::read(testdata("external_data.onnx"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "parent",
            "location",
            "../external_data.onnx.data",
            "relative path",
        ),
        ("absolute", "location", "/etc/passwd", "relative path"),
        ("offset", "offset", "twelve", "not a number"),
        ("length", "length", "-5", "not a number"),
        (
            "huge_length",
            "length",
            "18446744073709551615",
            "external_data.onnx.data",
        ),
    ];
    for (name, key, value, expect) in cases {
        let mut m = base.clone();
        let t = &mut m.graph.as_mut().unwrap().initializer[0];
        let tensor = t.name().to_string();
        for e in &mut t.external_data {
            if e.key() == *key {
                e.value = Some(value.to_string());
            }
        }
        let p = sub.join(format!("{name}.onnx"));
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        // The data file for locations that are not changed.
        std::fs::copy(
            testdata("external_data.onnx.data"),
            sub.join("external_data.onnx.data"),
        )
        .unwrap();
        if *key == "location" {
            std::fs::remove_file(sub.join("external_data.onnx.data")).unwrap();
        }
        let tensor = format!("`{tensor}`");
        fails(&["inspect", s(&p)], &[s(&p), &tensor, expect]);
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        fails(
            &["convert", s(&p), "-o", s(&out.join("x.onnx"))],
            &[&tensor, expect],
        );
        assert_eq!(dir_entries(&out), Vec::<String>::new());
    }
}

#[test]
fn convert_never_overwrites_the_inputs_data_file_or_model_via_data() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let m = dir.path().join("external_data.onnx");
    let d = dir.path().join("external_data.onnx.data");
    std::fs::copy(root.join("external_data.onnx"), &m).unwrap();
    std::fs::copy(root.join("external_data.onnx.data"), &d).unwrap();
    let before = (std::fs::read(&m).unwrap(), std::fs::read(&d).unwrap());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_quench"))
        .args(["convert", m.to_str().unwrap(), "-o", d.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        (std::fs::read(&m).unwrap(), std::fs::read(&d).unwrap()),
        before
    );
    // An input named like a data file quench writes is left alone: the
    // output's data file is named after its content.
    let y = dir.path().join("y.onnx.data");
    std::fs::copy(root.join("mlp.onnx"), &y).unwrap();
    let yb = std::fs::read(&y).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_quench"))
        .args([
            "convert",
            y.to_str().unwrap(),
            "-o",
            dir.path().join("y.onnx").to_str().unwrap(),
            "--external-data",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read(&y).unwrap(), yb);
    let written = data_files(&dir.path().join("y.onnx"));
    assert_eq!(written.len(), 1);
    assert_ne!(written[0], y);
}

/// A model quench itself quantized (static QDQ output of the digits CNN)
/// is refused by every quantizing mode with a message naming its form and
/// a node; `--no-quantize` still runs the passes; `inspect` says it is
/// already quantized and in which form. A float fixture says nothing of
/// the kind.
#[test]
fn already_quantized_models_are_refused_and_inspect_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("digits.int8.onnx");
    ok(&[
        "compile",
        s(&testdata("digits_cnn.onnx")),
        "-c",
        s(&testdata("digits/calib")),
        "-o",
        s(&q),
    ]);
    let again = dir.path().join("again.onnx");
    for mode in ["static", "weight-only", "dynamic"] {
        let r = fails(
            &[
                "compile",
                s(&q),
                "--mode",
                mode,
                "-c",
                s(&testdata("digits/calib")),
                "-o",
                s(&again),
            ],
            &[
                "model is already quantized (QDQ: ",
                "QuantizeLinear and ",
                "DequantizeLinear nodes, e.g. node `",
                "quench quantizes FP32 models; use --no-quantize",
            ],
        );
        assert!(!again.exists(), "mode {mode}: {}", r.context());
    }
    ok(&["compile", s(&q), "--no-quantize", "-o", s(&again)]);
    assert!(again.exists());
    // `calibrate` refuses it with the same message (it used to write a
    // table of the quantized model's ranges, exit 0).
    let table = dir.path().join("table.json");
    let r = fails(
        &[
            "calibrate",
            s(&q),
            "-c",
            s(&testdata("digits/calib")),
            "-o",
            s(&table),
        ],
        &[
            "model is already quantized (QDQ: ",
            "QuantizeLinear and ",
            "DequantizeLinear nodes, e.g. node `",
            "quench quantizes FP32 models",
        ],
    );
    assert!(!table.exists(), "{}", r.context());

    let r = ok(&["inspect", s(&q)]);
    assert!(
        r.stdout.contains("already quantized (QDQ: "),
        "{}",
        r.context()
    );
    let r = ok(&["inspect", "--json", s(&q)]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(
        v["already_quantized"]
            .as_str()
            .is_some_and(|t| t.starts_with("QDQ: ")),
        "{}",
        r.context()
    );
    let r = ok(&["inspect", s(&testdata("digits_cnn.onnx"))]);
    assert!(!r.stdout.contains("already quantized"), "{}", r.context());
    let r = ok(&["inspect", "--json", s(&testdata("digits_cnn.onnx"))]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["already_quantized"].is_null(), "{}", r.context());
}
