//! Bad `.bc` / `.hbm` files and bad inputs: one-line errors, exit code 2,
//! never a panic; a failed hb-compile leaves no file behind.

use crate::common::fixtures;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "hb-calib" => env!("CARGO_BIN_EXE_hb-calib"),
        "hb-compile" => env!("CARGO_BIN_EXE_hb-compile"),
        "hb-info" => env!("CARGO_BIN_EXE_hb-info"),
        "hb-model-exec" => env!("CARGO_BIN_EXE_hb-model-exec"),
        _ => env!("CARGO_BIN_EXE_hb-verifier"),
    })
}

/// Runs a tool; returns (exit code, stderr).
fn run(name: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin(name)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn expect_input_error(name: &str, args: &[&str], needle: &str) {
    let (code, err) = run(name, args);
    assert_eq!(code, 2, "{name} {args:?}: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{name} {args:?}: not one line: {err}"
    );
    assert!(err.contains(needle), "{name} {args:?}: {err}");
    assert!(!err.contains("internal error"), "{err}");
}

fn calibrated(dir: &Path) -> PathBuf {
    let f = fixtures().join("digits_cnn");
    let cfg = dir.join("m.yaml");
    std::fs::write(
        &cfg,
        format!(
            "model_parameters:\n  onnx_model: {}\n  march: nash-e\n  working_dir: {}\n  output_model_file_prefix: m\ninput_parameters:\n  input_name: image\ncalibration_parameters:\n  cal_data_dir: {}\n",
            f.join("model.onnx").display(),
            dir.display(),
            f.join("calib/image").display()
        ),
    )
    .unwrap();
    let (code, err) = run(
        "hb-calib",
        &["--config", cfg.to_str().unwrap(), "--search-samples", "2"],
    );
    assert_eq!(code, 0, "{err}");
    dir.join("m_quantized_model.bc")
}

#[test]
fn corrupt_truncated_and_foreign_programs() {
    let tmp = tempfile::tempdir().unwrap();
    let bc = calibrated(tmp.path());
    let hbm = tmp.path().join("m.hbm");
    let (code, err) = run(
        "hb-compile",
        &[bc.to_str().unwrap(), "-o", hbm.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&hbm).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.hbm",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated",
        ),
        ("tiny.hbm", bytes[..5].to_vec(), "truncated"),
        (
            "magic.hbm",
            [b"NOTHBKIT".to_vec(), bytes[8..].to_vec()].concat(),
            "bad magic",
        ),
        (
            "version.hbm",
            {
                let mut v = bytes.clone();
                v[8] = 7;
                v
            },
            "version 7 is not supported",
        ),
        (
            "garbage.hbm",
            {
                let mut v = bytes.clone();
                for b in v.iter_mut().skip(16).step_by(3) {
                    *b ^= 0x5a;
                }
                v
            },
            "m",
        ),
    ];
    let x = fixtures().join("digits_cnn/test/image/0.npy");
    for (name, data, needle) in cases {
        let p = tmp.path().join(name);
        std::fs::write(&p, data).unwrap();
        let ps = p.to_str().unwrap();
        expect_input_error("hb-info", &[ps], needle);
        expect_input_error("hb-model-exec", &["model-info", "--model-file", ps], needle);
        expect_input_error(
            "hb-model-exec",
            &[
                "infer",
                "--model-file",
                ps,
                "--input-file",
                x.to_str().unwrap(),
                "--output-dir",
                tmp.path().join("o").to_str().unwrap(),
            ],
            needle,
        );
        expect_input_error(
            "hb-verifier",
            &[
                "-m",
                &format!("{},{ps}", bc.display()),
                "-i",
                x.to_str().unwrap(),
            ],
            needle,
        );
        let out = tmp.path().join(format!("{name}.out.hbm"));
        expect_input_error("hb-compile", &[ps, "-o", out.to_str().unwrap()], needle);
        assert!(!out.exists(), "a failed compile left {out:?}");
    }
    expect_input_error(
        "hb-compile",
        &[tmp.path().join("missing.bc").to_str().unwrap()],
        "no such file",
    );
    expect_input_error(
        "hb-compile",
        &[bc.to_str().unwrap(), "--optimize-level", "O9"],
        "O9",
    );
}

#[test]
fn wrong_input_shape_and_type() {
    let tmp = tempfile::tempdir().unwrap();
    let bc = calibrated(tmp.path());
    let bad_shape = tmp.path().join("shape.npy");
    hb_tensor::io::write_npy(
        &bad_shape,
        &hb_tensor::Tensor::from_f32(&[1, 1, 4, 4], vec![0.0; 16]).unwrap(),
    )
    .unwrap();
    let bad_type = tmp.path().join("type.npy");
    hb_tensor::io::write_npy(
        &bad_type,
        &hb_tensor::Tensor::from_vec(&[1, 1, 8, 8], vec![0i64; 64]).unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("o");
    for x in [&bad_shape, &bad_type] {
        expect_input_error(
            "hb-model-exec",
            &[
                "infer",
                "--model-file",
                bc.to_str().unwrap(),
                "--input-file",
                x.to_str().unwrap(),
                "--output-dir",
                out.to_str().unwrap(),
            ],
            "input 'image'",
        );
        expect_input_error(
            "hb-verifier",
            &[
                "-m",
                &format!("{0},{0}", bc.display()),
                "-i",
                x.to_str().unwrap(),
            ],
            "input 'image'",
        );
    }
}
