//! `onnx-suite [--dir D] [--filter S] [--verbose] [--promote] [--check]`
//!
//! Runs the ONNX node conformance cases. `--check` fails when a case on the
//! allow-list fails; `--promote` rewrites the allow-list with every passing
//! case. Prints the pass count either way.

use hb_testkit::onnx_suite::*;
use std::path::PathBuf;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("onnx-suite: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = default_cases_dir();
    let mut filter = None;
    let (mut verbose, mut promote, mut check) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => {
                dir = PathBuf::from(
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("--dir needs a value"))?,
                )
            }
            "--filter" => filter = it.next().cloned(),
            "--verbose" | "-v" => verbose = true,
            "--promote" => promote = true,
            "--check" => check = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let names = list_cases(&dir, filter.as_deref())?;
    let results = run_cases(&dir, &names);
    let passed: Vec<&str> = results
        .iter()
        .filter(|r| r.outcome.is_ok())
        .map(|r| r.name.as_str())
        .collect();
    if verbose {
        for r in &results {
            match &r.outcome {
                Ok(()) => println!("PASS {}", r.name),
                Err(e) => println!("FAIL {}: {}", r.name, e.lines().next().unwrap_or("")),
            }
        }
    }
    println!(
        "onnx node suite: {} of {} cases pass",
        passed.len(),
        results.len()
    );
    if promote {
        let mut text = String::from(
            "# ONNX node conformance cases expected to pass (cargo xtask onnx-suite --promote)\n",
        );
        for p in &passed {
            text.push_str(p);
            text.push('\n');
        }
        std::fs::write(allowlist_path(), text)?;
        println!(
            "wrote {} ({} cases)",
            allowlist_path().display(),
            passed.len()
        );
    }
    if check {
        let allow = read_allowlist(&allowlist_path())?;
        let regressions: Vec<String> = results
            .iter()
            .filter(|r| allow.contains(&r.name))
            .filter_map(|r| {
                r.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {}", r.name, e.lines().next().unwrap_or("")))
            })
            .collect();
        let missing: Vec<&String> = allow.iter().filter(|n| !names.contains(n)).collect();
        if filter.is_none() && !missing.is_empty() {
            anyhow::bail!(
                "{} allow-listed cases are missing from {}",
                missing.len(),
                dir.display()
            );
        }
        if !regressions.is_empty() {
            for r in &regressions {
                eprintln!("REGRESSION {r}");
            }
            anyhow::bail!("{} allow-listed cases fail", regressions.len());
        }
        println!("allow-list: all {} listed cases pass", allow.len());
    }
    Ok(())
}
