//! `hb-debugger tune` end to end: reaches a target with fewer int16 nodes
//! than the first sensitivity batch (`--sweep`: a row per threshold, each
//! better than the last), the written quant_config reproduces
//! the figures through hb-calib (calibration samples) and hb-info (held-out
//! samples), `--eval-cmd`, `--max-int16`, and bad input (exit 2, one line,
//! nothing written).

use crate::common::run_ok;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .canonicalize()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hb-debugger-tune")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hb-debugger"))
        .arg("tune")
        .args(args)
        .output()
        .unwrap()
}

fn config(name: &str) -> String {
    fixtures()
        .join(name)
        .join("model.yaml")
        .display()
        .to_string()
}

/// The JSON report of a run that must succeed.
fn json_of_success(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(out)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}); exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn tune_meets_target_with_few_int16_and_reproduces_through_hb_calib() {
    let dir = tmp("seg_head");
    let out = tune(&[
        "--config",
        &config("seg_head"),
        "--target",
        "cosine>=0.999",
        "--sweep",
        "-s",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let t = json_of_success(&out);
    assert_eq!(t["reached"], true);
    // --sweep: the guide's table, one row per threshold, more int16 nodes
    // and a better output at each.
    let rows: Vec<&Value> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "threshold")
        .collect();
    assert!(rows.len() >= 3, "{rows:?}");
    for w in rows.windows(2) {
        assert!(w[1]["threshold"].as_f64() > w[0]["threshold"].as_f64());
        assert!(w[1]["int16"].as_u64() > w[0]["int16"].as_u64());
        assert!(w[1]["score"].as_f64() >= w[0]["score"].as_f64());
    }
    let steps = t["steps"].as_array().unwrap();
    let best = &steps[t["best"].as_u64().unwrap() as usize];
    assert_eq!(best["meets"], true);
    // Step 0 (int8) misses, all-int16 meets: the search had work to do.
    assert_eq!(steps[0]["meets"], false);
    let all16 = steps.iter().find(|s| s["stage"] == "all-int16").unwrap();
    let n_best = best["int16"].as_u64().unwrap();
    assert!(n_best > 0 && n_best < all16["int16"].as_u64().unwrap());
    // Fewer int16 nodes than the first sensitivity batch that met the target.
    let first = t["first_batch"][1].as_u64().unwrap();
    assert!(n_best < first, "best {n_best} vs first batch {first}");
    assert!(best["outputs"][0]["cosine"].as_f64().unwrap() >= 0.999);

    // The quant_config and the YAML pointing at it.
    let qc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quant_config.json")).unwrap())
            .unwrap();
    let nodes = qc["node_config"].as_object().unwrap();
    assert_eq!(
        nodes.len() as u64,
        best["promoted"].as_object().unwrap().len() as u64
    );
    assert!(nodes.values().all(|v| v["qtype"] == "int16"));
    assert!(qc["model_config"]["activation"]["calibration_type"].is_string());
    for f in ["tuned.yaml", "tune.txt", "tune.json"] {
        assert!(dir.join(f).is_file(), "{f}");
    }

    // hb-calib with the tuned YAML: same per-output cosine on the
    // calibration search samples as tune's step.
    let calib = run_ok(
        Command::new(env!("CARGO_BIN_EXE_hb-calib"))
            .arg("--config")
            .arg(dir.join("tuned.yaml"))
            .arg("--json"),
    );
    let c = json_of(&calib);
    let got = c["outputs"][0]["cosine"].as_f64().unwrap();
    let want = best["calibration_cosine"][0].as_f64().unwrap();
    assert!((got - want).abs() < 1e-12, "hb-calib {got} vs tune {want}");

    // hb-info on the held-out samples: tune's figure.
    let model = dir.join("hb_calib/seg_head_calibrated_model.onnx");
    let info = run_ok(
        Command::new(env!("CARGO_BIN_EXE_hb-info"))
            .arg(&model)
            .arg("-c")
            .arg(fixtures().join("seg_head/test"))
            .arg("--json"),
    );
    let i = json_of(&info);
    let got = i["comparison"][0]["cosine"].as_f64().unwrap();
    let want = best["outputs"][0]["cosine"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "hb-info {got} vs tune {want}");
}

#[test]
fn tune_eval_cmd_and_max_int16() {
    // --eval-cmd: the command sees one .npy per evaluation sample.
    let dir = tmp("resnet_cmd");
    let out = tune(&[
        "--config",
        &config("resnet_tiny"),
        "--target",
        "files>=10",
        "--eval-cmd",
        "ls {outputs}/logits | grep -c npy",
        "-s",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let t = json_of_success(&out);
    assert_eq!(t["steps"][0]["custom"].as_f64(), Some(10.0));
    assert_eq!(t["reached"], true);

    // --max-int16 0 on a target int8 misses: exit 1, best config still written.
    let dir = tmp("seg_cap");
    let out = tune(&[
        "--config",
        &config("seg_head"),
        "--target",
        "cosine>=0.9999",
        "--max-int16",
        "0",
        "-s",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not reached"), "{err}");
    assert!(dir.join("quant_config.json").is_file());
}

#[test]
fn tune_bad_input_exits_2_with_one_line_and_writes_nothing() {
    let dir = tmp("bad");
    let d = dir.to_str().unwrap();
    let cfg = config("resnet_tiny");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--config", &cfg, "--target", "cosine>=abc", "-s", d],
            "not a number",
        ),
        (
            vec!["--config", &cfg, "--target", "cosine<=0.99", "-s", d],
            "use >=",
        ),
        (
            vec!["--config", &cfg, "--target", "foo>=0.9", "-s", d],
            "unknown metric",
        ),
        (
            vec![
                "--config", &cfg, "--target", "0.9", "--metric", "bar", "-s", d,
            ],
            "unknown metric",
        ),
        (
            vec![
                "--config",
                &cfg,
                "--target",
                "cosine>=0.99",
                "--allow",
                "magic",
                "-s",
                d,
            ],
            "--allow",
        ),
        (
            vec![
                "--config",
                "/no/such/model.yaml",
                "--target",
                "cosine>=0.99",
                "-s",
                d,
            ],
            "/no/such/model.yaml",
        ),
        (vec!["--target", "cosine>=0.99", "-s", d], "--config"),
        (vec!["--config", &cfg, "-s", d], "--target"),
        (
            vec![
                "--config",
                &cfg,
                "--target",
                "cosine>=0.99",
                "--eval-data",
                "/no/such/dir",
                "-s",
                d,
            ],
            "/no/such/dir",
        ),
    ];
    for (args, want) in cases {
        let out = tune(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
    }
}
