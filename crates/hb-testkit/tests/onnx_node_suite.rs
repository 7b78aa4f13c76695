//! Every ONNX node conformance case on the allow-list passes (a regression
//! fails CI). Prints the pass count over the whole suite.

use hb_testkit::onnx_suite::*;

#[test]
fn allow_listed_onnx_node_cases_pass() {
    let dir = default_cases_dir();
    assert!(
        dir.exists(),
        "{} missing: CI needs ../shared beside the repo",
        dir.display()
    );
    let allow = read_allowlist(&allowlist_path()).unwrap();
    let names = list_cases(&dir, None).unwrap();
    let results = run_cases(&dir, &names);
    let passed = results.iter().filter(|r| r.outcome.is_ok()).count();
    println!(
        "onnx node suite: {passed} of {} cases pass ({} allow-listed)",
        results.len(),
        allow.len()
    );
    let regressions: Vec<String> = results
        .iter()
        .filter(|r| allow.contains(&r.name))
        .filter_map(|r| r.outcome.as_ref().err().map(|e| format!("{}: {e}", r.name)))
        .collect();
    let missing: Vec<&String> = allow.iter().filter(|n| !names.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "allow-listed cases missing: {missing:?}"
    );
    assert!(
        regressions.is_empty(),
        "{} regressions:\n{}",
        regressions.len(),
        regressions.join("\n")
    );
}
