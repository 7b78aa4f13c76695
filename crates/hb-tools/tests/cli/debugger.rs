//! hb-debugger end to end on calibrated fixtures (made once per test run by
//! hb-calib on a few samples): reuse == naive sensitivity, compare-per-layer,
//! sensitivity-analysis, diagnose (sem_decoder traps), edit round trip, and
//! bad input (one line, exit 2, nothing written).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::fixtures;
use crate::debugger_common::{calib_dir, calibrate_max, dbg};

fn tmp() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("hb-debugger-tests")
}

/// Calibrates fixture `name` (max, few samples) once; returns the calibrated model.
fn calibrated(name: &str) -> PathBuf {
    static RESNET: OnceLock<PathBuf> = OnceLock::new();
    static SEM: OnceLock<PathBuf> = OnceLock::new();
    let cell = if name == "resnet_tiny" { &RESNET } else { &SEM };
    cell.get_or_init(|| calibrate_max(&fixtures(), name, &tmp()))
        .clone()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn rows(v: &Value) -> Vec<(String, Value)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["metrics"].clone(),
            )
        })
        .collect()
}

#[test]
fn sensitivity_reuse_equals_naive() {
    for (name, kind) in [("resnet_tiny", "node"), ("sem_decoder", "activation")] {
        let m = calibrated(name);
        let data = calib_dir(name);
        let args = [
            "get-sensitivity-of-nodes",
            s(&m),
            s(&data),
            "-n",
            kind,
            "-d",
            "2",
            "-m",
            "cosine-similarity,mse,sqnr",
            "--json",
        ];
        let fast = json_of(&dbg(&args));
        let mut nargs = args.to_vec();
        nargs.push("--naive");
        let naive = json_of(&dbg(&nargs));
        assert_eq!(fast["method"], "reuse");
        assert_eq!(naive["method"], "naive");
        let (a, b) = (rows(&fast), rows(&naive));
        assert!(a.len() > 5, "{name}: {} rows", a.len());
        assert_eq!(a, b, "{name}: reuse and naive differ");
        // Worst first (NaN, serialized as null, first of all).
        let cos: Vec<f64> = a
            .iter()
            .map(|r| r.1["cosine-similarity"].as_f64().unwrap_or(f64::NAN))
            .collect();
        let finite: Vec<f64> = cos.iter().copied().skip_while(|c| c.is_nan()).collect();
        assert!(finite.iter().all(|c| !c.is_nan()), "{cos:?}");
        assert!(finite.windows(2).all(|w| w[0] <= w[1]), "{cos:?}");
    }
}

#[test]
fn sensitivity_text_save_and_output_node() {
    let m = calibrated("resnet_tiny");
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("sens");
    let out = dbg(&[
        "get-sensitivity-of-nodes",
        s(&m),
        s(&calib_dir("resnet_tiny")),
        "-n",
        "weight",
        "-d",
        "1",
        "-v",
        "-s",
        s(&save),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("weight sensitivity"), "{text}");
    assert!(save.join("sensitivity_weight.txt").is_file());
    let j: Value = serde_json::from_str(
        &std::fs::read_to_string(save.join("sensitivity_weight.json")).unwrap(),
    )
    .unwrap();
    assert!(j["rows"].as_array().unwrap().len() >= 5);
    // Scoring at an intermediate node: only nodes upstream of it change it.
    let v = json_of(&dbg(&[
        "get-sensitivity-of-nodes",
        s(&m),
        s(&calib_dir("resnet_tiny")),
        "-o",
        "/maxpool/MaxPool",
        "-d",
        "1",
        "--json",
    ]));
    let perfect = rows(&v)
        .iter()
        .filter(|r| r.1["cosine-similarity"].as_f64().unwrap() == 1.0)
        .count();
    assert!(
        perfect > 0,
        "downstream nodes cannot change /maxpool output"
    );
}

#[test]
fn compare_per_layer_resnet_tiny() {
    let m = calibrated("resnet_tiny");
    let float = m.with_file_name("resnet_tiny_optimized_float_model.onnx");
    let dir = tempfile::tempdir().unwrap();
    for mode in ["cumulative", "isolated"] {
        let v = json_of(&dbg(&[
            "compare-per-layer",
            s(&float),
            s(&m),
            "-d",
            s(&calib_dir("resnet_tiny")),
            "--mode",
            mode,
            "-s",
            s(dir.path()),
            "--json",
        ]));
        let layers = v["layers"].as_array().unwrap();
        assert!(layers.len() >= 10, "{mode}: {}", layers.len());
        assert!(v["float_model_max_diff"].as_f64().unwrap() < 1e-4);
        for l in layers {
            let c = l["cosine"].as_f64().unwrap();
            assert!(c > 0.9 && c <= 1.0 + 1e-9, "{mode} {l}");
        }
        let conv = layers
            .iter()
            .find(|l| l["op"] == "Conv")
            .expect("a Conv layer");
        assert_eq!(conv["qtype"], "int8");
        assert!(conv["scale"].as_f64().unwrap() > 0.0);
        assert!(conv["max_qscale_diff"].as_f64().is_some());
        let csv = std::fs::read_to_string(dir.path().join(format!("compare_per_layer_{mode}.csv")))
            .unwrap();
        assert!(csv.starts_with("index,node,op,shape,qtype,qscale"));
        assert_eq!(csv.lines().count(), layers.len() + 1);
    }
    // Isolated errors are no larger than cumulative ones at the last layer.
    let text = dbg(&[
        "compare-per-layer",
        s(&float),
        s(&m),
        "-d",
        s(&calib_dir("resnet_tiny")),
        "--order",
        "sorted",
    ]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("max_qscale_diff"));

    // The integer program made from the same calibration: every layer
    // present, close to the simulation (docs/integer-semantics.md §16).
    let bc = m.with_file_name("resnet_tiny_quantized_model.bc");
    let data = calib_dir("resnet_tiny");
    let per_layer = |extra: &[&str]| {
        let mut args = vec![
            "compare-per-layer",
            s(&float),
            s(&m),
            "-d",
            s(&data),
            "-s",
            s(dir.path()),
            "--json",
        ];
        args.extend_from_slice(extra);
        json_of(&dbg(&args))
    };
    let sim = per_layer(&[]);
    let prog = per_layer(&["--program", s(&bc)]);
    assert_eq!(prog["mode"], "program");
    assert!(dir.path().join("compare_per_layer_program.csv").is_file());
    let (sl, pl) = (
        sim["layers"].as_array().unwrap(),
        prog["layers"].as_array().unwrap(),
    );
    assert!(pl.len() >= 10, "{}", pl.len());
    let last = |l: &[Value]| l.last().unwrap()["cosine"].as_f64().unwrap();
    assert!(
        (last(sl) - last(pl)).abs() < 1e-3,
        "{} vs {}",
        last(sl),
        last(pl)
    );
    let bad = dbg(&[
        "compare-per-layer",
        s(&float),
        s(&m),
        "-d",
        s(&calib_dir("resnet_tiny")),
        "--program",
        s(&float),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim().lines().count(),
        1
    );
}

#[test]
fn sensitivity_analysis_promotes_and_writes_quant_config() {
    let m = calibrated("resnet_tiny");
    let dir = tempfile::tempdir().unwrap();
    let v = json_of(&dbg(&[
        "sensitivity-analysis",
        s(&m),
        s(&calib_dir("resnet_tiny")),
        "-t",
        "0.9999,1.0",
        "-d",
        "2",
        "-s",
        s(dir.path()),
        "--json",
    ]));
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    let score = |k: usize| steps[k]["outputs"][0]["metric"].as_f64().unwrap();
    // Everything int16 beats int8.
    assert!(score(2) > score(0), "{} vs {}", score(2), score(0));
    let qc = &steps[2]["quant_config"];
    assert!(!qc["node_config"].as_object().unwrap().is_empty());
    hb_quant::config::quant_config::parse(qc, "quant_config").expect("hb-calib accepts it");
    assert!(dir.path().join("quant_config_1.json").is_file());
}

fn findings(v: &Value) -> Vec<Value> {
    v["findings"].as_array().unwrap().clone()
}

#[test]
fn diagnose_sem_decoder_finds_the_traps() {
    let m = calibrated("sem_decoder");
    let v = json_of(&dbg(&[
        "diagnose",
        s(&m),
        s(&calib_dir("sem_decoder")),
        "-d",
        "3",
        "--json",
    ]));
    let f = findings(&v);
    let has = |kind: &str, needle: &str| {
        f.iter()
            .any(|x| x["kind"] == kind && x.to_string().contains(needle))
    };
    assert!(has("mask-values", "Softmax"), "{f:#?}");
    assert!(has("integer-input", "timestep"), "{f:#?}");
    assert!(has("integer-input", "joint_relative_pos"), "{f:#?}");
    // hb-calib's precision guard already reads the cast timestep as int16.
    assert!(!has("integer-as-feature", "timestep"), "{f:#?}");
    let qc = &v["suggested_quant_config"];
    hb_quant::config::quant_config::parse(qc, "quant_config").expect("hb-calib accepts it");

    // Back to int8 (what a calibration without the guard gives): diagnose
    // names the integer-valued tensor quantized as a feature.
    let dir = tempfile::tempdir().unwrap();
    let int8 = dir.path().join("int8.onnx");
    let e = dbg(&[
        "edit",
        s(&m),
        "-o",
        s(&int8),
        "--node",
        "/Unsqueeze_output_0,/Div_output_0",
        "--qtype",
        "int8",
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let v = json_of(&dbg(&[
        "diagnose",
        s(&int8),
        s(&calib_dir("sem_decoder")),
        "-d",
        "3",
        "--json",
    ]));
    let f = findings(&v);
    assert!(
        f.iter()
            .any(|x| x["kind"] == "integer-as-feature" && x.to_string().contains("timestep")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|x| x["kind"] == "periodic-argument" && x.to_string().contains("/Sin")),
        "{f:#?}"
    );

    // Break a mask the way a naive calibration does (threshold from -inf /
    // lowest f32): diagnose names the node and the collapse.
    let broken = dir.path().join("broken.onnx");
    let e = dbg(&[
        "edit",
        s(&m),
        "-o",
        s(&broken),
        "--op-type",
        "Softmax",
        "--threshold",
        "3.4e38",
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let v = json_of(&dbg(&[
        "diagnose",
        s(&broken),
        s(&calib_dir("sem_decoder")),
        "-d",
        "2",
        "--json",
    ]));
    let f = findings(&v);
    assert!(
        f.iter()
            .any(|x| x["kind"] == "degenerate-threshold" && x["level"] == "error"),
        "{f:#?}"
    );
    let before = v["before"][0]["cosine"].as_f64().unwrap();
    let after = v["after"][0]["cosine"].as_f64().unwrap();
    assert!(after > before, "{before} -> {after}");
}

#[test]
fn edit_round_trip() {
    let m = calibrated("resnet_tiny");
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.onnx");
    let v = json_of(&dbg(&[
        "edit",
        s(&m),
        "-o",
        s(&a),
        "--op-type",
        "Gemm",
        "--all-weights",
        "--qtype",
        "int16",
        "--json",
    ]));
    let changed = v.as_array().unwrap().len();
    assert!(changed >= 5);
    let model = hb_ir::load_model(&a).unwrap();
    let orig = hb_ir::load_model(&m).unwrap();
    let q = |m: &hb_ir::Model, n: &hb_ir::Node| {
        let _ = m;
        n.string_or("qtype", "int8").unwrap()
    };
    let mut int16 = 0;
    for (n, o) in model.graph.nodes.iter().zip(&orig.graph.nodes) {
        assert_eq!(n.name, o.name);
        if n.op_type == "HzCalibration" {
            if q(&model, n) == "int16" {
                int16 += 1;
            } else {
                assert_eq!(n.attrs, o.attrs, "{} changed", n.name);
            }
        }
    }
    assert_eq!(int16, changed);
    // Second edit on the result: threshold and switch of one node by name.
    let b = dir.path().join("b.onnx");
    let target = model
        .graph
        .nodes
        .iter()
        .find(|n| n.op_type == "HzCalibration" && q(&model, n) == "int8")
        .unwrap()
        .name
        .clone();
    let out = dbg(&[
        "edit",
        s(&a),
        "-o",
        s(&b),
        "--node",
        &target,
        "--threshold",
        "2.5",
        "--switch",
        "off",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mb = hb_ir::load_model(&b).unwrap();
    let n = mb.graph.nodes.iter().find(|n| n.name == target).unwrap();
    assert_eq!(n.get_floats("thresholds").unwrap().unwrap(), vec![2.5]);
    assert_eq!(n.string_or("switch", "ON").unwrap(), "OFF");
}

/// hb-info's similarity of an edited model follows its switches: every
/// node OFF is the float model (cosine 1, no error), one node OFF differs
/// from every node ON.
#[test]
fn hb_info_compares_the_model_as_edited() {
    let m = calibrated("resnet_tiny");
    let test = fixtures().join("resnet_tiny/test");
    let dir = tempfile::tempdir().unwrap();
    let info = |model: &Path| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_hb-info"))
            .args([s(model), "-c", s(&test), "--json"])
            .output()
            .unwrap();
        json_of(&out)["comparison"][0].clone()
    };
    let edit = |out: &Path, args: &[&str]| {
        let mut a = vec!["edit", s(&m), "-o", s(out)];
        a.extend_from_slice(args);
        json_of(&dbg(&[a.as_slice(), &["--json"]].concat()));
    };
    let (all_off, one_off) = (dir.path().join("off.onnx"), dir.path().join("one.onnx"));
    edit(
        &all_off,
        &["--all-features", "--all-weights", "--switch", "off"],
    );
    edit(&one_off, &["--op-type", "Gemm", "--switch", "off"]);
    let (on, off, one) = (info(&m), info(&all_off), info(&one_off));
    assert_eq!(off["cosine"].as_f64(), Some(1.0), "{off}");
    assert_eq!(off["chebyshev"].as_f64(), Some(0.0), "{off}");
    assert!(on["cosine"].as_f64().unwrap() < 1.0, "{on}");
    assert_ne!(one["l1"], on["l1"], "{one} vs {on}");
}

fn fails(args: &[&str], needle: &str, never: &[&Path]) {
    let out = dbg(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("hb-debugger: error: "), "{err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("internal error"), "{err}");
    for p in never {
        assert!(!p.exists(), "{} was written", p.display());
    }
}

#[test]
fn bad_input_is_one_line_exit_2_nothing_written() {
    let m = calibrated("resnet_tiny");
    let float = fixtures().join("resnet_tiny/model.onnx");
    let data = calib_dir("resnet_tiny");
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("save");
    let out = dir.path().join("out.onnx");
    let missing = dir.path().join("missing.onnx");
    let sv = s(&save);
    fails(
        &["get-sensitivity-of-nodes", s(&missing), s(&data), "-s", sv],
        "no such file",
        &[&save],
    );
    fails(
        &["diagnose", s(&float), s(&data), "-s", sv],
        "not a calibrated model",
        &[&save],
    );
    fails(
        &[
            "get-sensitivity-of-nodes",
            s(&m),
            s(&dir.path().join("nope")),
            "-s",
            sv,
        ],
        "no such data folder",
        &[&save],
    );
    let wrong = fixtures().join("sem_decoder/calib");
    fails(
        &["get-sensitivity-of-nodes", s(&m), s(&wrong), "-s", sv],
        "no .npy",
        &[&save],
    );
    fails(
        &[
            "get-sensitivity-of-nodes",
            s(&m),
            s(&data),
            "-m",
            "psnr",
            "-s",
            sv,
        ],
        "unknown metric",
        &[&save],
    );
    fails(
        &[
            "get-sensitivity-of-nodes",
            s(&m),
            s(&data),
            "-i",
            "nope",
            "-s",
            sv,
        ],
        "nope",
        &[&save],
    );
    fails(
        &[
            "edit",
            s(&m),
            "-o",
            s(&out),
            "--node",
            "nope",
            "--qtype",
            "int16",
        ],
        "nope",
        &[&out],
    );
    fails(
        &[
            "edit",
            s(&m),
            "-o",
            s(&out),
            "--all-features",
            "--qtype",
            "int4",
        ],
        "int4",
        &[&out],
    );
    fails(
        &[
            "edit",
            s(&m),
            "-o",
            s(&out),
            "--all-features",
            "--threshold=-1",
        ],
        "threshold",
        &[&out],
    );
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    fails(
        &[
            "compare-per-layer",
            s(&float),
            s(&garbage),
            "-d",
            s(&data),
            "-s",
            sv,
        ],
        "garbage.onnx",
        &[&save],
    );
}
