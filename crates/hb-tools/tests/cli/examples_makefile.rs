//! `examples/Makefile` end to end on digits_cnn: hb-calib → hb-compile →
//! hb-model-exec → hb-verifier, with the binaries of this build.

use std::path::Path;
use std::process::Command;

#[test]
fn makefile_chains_the_tools() {
    if Command::new("make").arg("--version").output().is_err() {
        eprintln!("make is not installed; skipped");
        return;
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_hb-calib")).parent().unwrap();
    for b in ["hb-compile", "hb-model-exec", "hb-verifier", "hb-info"] {
        assert!(bin.join(b).exists(), "{b} is not built");
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("make")
        .arg("-C")
        .arg(root.join("examples"))
        .arg(format!("BIN={}", bin.display()))
        .arg(format!("WORK={}", tmp.path().join("digits").display()))
        .arg("FIXTURE=digits_cnn")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let verify = std::fs::read_to_string(tmp.path().join("digits/verify.txt")).unwrap();
    assert!(verify.contains("consistent"), "{verify}");
    assert!(!verify.contains("FAIL"), "{verify}");
    assert!(tmp.path().join("digits/m.hbm").exists());
}
