//! `cargo xtask bench [--runs N]`: float latency of each fixture with 1 and 2
//! threads (median of N runs of `hb-model-exec perf`), side by side with ONNX
//! Runtime on the same input in the same run when Python onnxruntime is
//! available; then the `.hbm` of resnet_tiny and sem_decoder (hb-calib with
//! the fixture's YAML, hb-compile O2) against ORT's float latency of the
//! original model, 1 thread, three interleaved rounds. Writes
//! `docs/benchmarks.md` (the float-latency and hbm-latency sections).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fixture models benchmarked: (label, model path, input folder).
const MODELS: &[(&str, &str, &str)] = &[
    (
        "digits_cnn",
        "fixtures/digits_cnn/model.onnx",
        "fixtures/digits_cnn/test",
    ),
    (
        "resnet_tiny",
        "fixtures/resnet_tiny/model.onnx",
        "fixtures/resnet_tiny/test",
    ),
    (
        "seg_head",
        "fixtures/seg_head/model.onnx",
        "fixtures/seg_head/test",
    ),
    (
        "sem_decoder",
        "fixtures/sem_decoder/model.onnx",
        "fixtures/sem_decoder/test",
    ),
    (
        "torch_opsets (op17)",
        "fixtures/torch_opsets/model_op17.onnx",
        "fixtures/torch_opsets/test",
    ),
];

/// Models whose `.hbm` is measured against ORT's float latency (issue 4's
/// goal: at most 0.7 × ORT).
const HBM_MODELS: &[&str] = &["resnet_tiny", "sem_decoder"];

/// Interleaved rounds of the `.hbm` comparison.
const HBM_ROUNDS: usize = 3;

/// One `.hbm` comparison: medians of the rounds' medians.
struct HbmRow {
    label: String,
    hbm_ms: f64,
    float_ms: f64,
    ort_ms: Option<f64>,
}

struct Row {
    label: String,
    threads: usize,
    ours_ms: f64,
    ort_ms: Option<f64>,
}

/// Runs the benchmark and writes docs/benchmarks.md.
pub fn run(args: &[String]) -> Result<()> {
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).context("--runs needs a number")?.parse()?,
        None => 50,
    };
    let root = crate::workspace_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "hb-tools"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("release build of hb-tools failed");
    }
    let exe = root.join("target/release/hb-model-exec");
    let have_ort = Command::new("python3")
        .args(["-c", "import onnxruntime"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut rows = Vec::new();
    for (label, model, inputs) in MODELS {
        let model = root.join(model);
        if !model.exists() {
            println!("skip {label}: {} missing", model.display());
            continue;
        }
        let first = first_sample_dir(&root.join(inputs))?;
        for threads in [1usize, 2] {
            let ours = ours_ms(&exe, &model, &first, threads, runs)?;
            let ort = if have_ort {
                Some(ort_ms(&root, &model, &first, threads, runs)?)
            } else {
                None
            };
            println!(
                "{label:<22} threads={threads}  hbkit {ours:8.3} ms   ort {}",
                ort.map_or("-".into(), |v| format!("{v:8.3} ms"))
            );
            rows.push(Row {
                label: label.to_string(),
                threads,
                ours_ms: ours,
                ort_ms: ort,
            });
        }
    }
    write_report(&root.join("docs/benchmarks.md"), &rows, runs)?;
    let hbm_runs = runs.max(300);
    let mut hbm_rows = Vec::new();
    for label in HBM_MODELS {
        hbm_rows.push(hbm_row(&root, label, hbm_runs, have_ort)?);
    }
    write_hbm_report(&root.join("docs/benchmarks.md"), &hbm_rows, hbm_runs)?;
    Ok(())
}

/// Builds `<label>`'s `.hbm` from its fixture YAML and times it against
/// ORT and our float interpreter on the original model, interleaved.
fn hbm_row(root: &Path, label: &str, runs: usize, have_ort: bool) -> Result<HbmRow> {
    let dir = root.join("fixtures").join(label);
    let work = std::env::temp_dir().join(format!("hbkit-bench-hbm-{label}"));
    let _ = std::fs::remove_dir_all(&work);
    let bin = |name: &str| root.join("target/release").join(name);
    let status = Command::new(bin("hb-calib"))
        .arg("--config")
        .arg(dir.join("model.yaml"))
        .arg("--output-dir")
        .arg(&work)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("hb-calib failed on {label}");
    }
    let hbm = work.join(format!("{label}.hbm"));
    let status = Command::new(bin("hb-compile"))
        .arg(work.join(format!("{label}_quantized_model.bc")))
        .arg("-o")
        .arg(&hbm)
        .args(["--optimize-level", "O2"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("hb-compile failed on {label}");
    }
    let model = dir.join("model.onnx");
    let first = first_sample_dir(&dir.join("test"))?;
    let exe = bin("hb-model-exec");
    let (mut hbm_ms, mut float_ms, mut ort_ms_v) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..HBM_ROUNDS {
        if have_ort {
            ort_ms_v.push(ort_ms(root, &model, &first, 1, runs)?);
        }
        float_ms.push(ours_ms(&exe, &model, &first, 1, runs)?);
        hbm_ms.push(ours_ms(&exe, &hbm, &first, 1, runs)?);
    }
    let row = HbmRow {
        label: label.to_string(),
        hbm_ms: median(&mut hbm_ms),
        float_ms: median(&mut float_ms),
        ort_ms: have_ort.then(|| median(&mut ort_ms_v)),
    };
    println!(
        "{label:<22} .hbm {:8.3} ms   float {:8.3} ms   ort {}",
        row.hbm_ms,
        row.float_ms,
        row.ort_ms.map_or("-".into(), |v| format!("{v:8.3} ms"))
    );
    Ok(row)
}

/// The median of `v` (not empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn write_hbm_report(path: &Path, rows: &[HbmRow], runs: usize) -> Result<()> {
    let mut table = String::from("| model | .hbm (ms) | ours float (ms) | ORT float (ms) | .hbm / ORT | goal ≤ 0.7 × ORT | .hbm below our float |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (ort, ratio, met) = match r.ort_ms {
            Some(o) => (
                format!("{o:.3}"),
                format!("{:.2}×", r.hbm_ms / o),
                if r.hbm_ms <= 0.7 * o {
                    "met"
                } else {
                    "not met"
                }
                .to_string(),
            ),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        let below = if r.hbm_ms < r.float_ms { "yes" } else { "no" };
        table += &format!(
            "| {} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
            r.label, r.hbm_ms, r.float_ms, ort, ratio, met, below
        );
    }
    let section = format!(
        "<!-- hbm-latency:begin -->\n### `.hbm` vs ONNX Runtime (`cargo xtask bench`)\n\nSame run as the table above: each fixture's `.hbm` (hb-calib with `fixtures/<m>/model.yaml`, hb-compile O2), our float interpreter and ORT on the original model, 1 thread, first held-out sample, {HBM_ROUNDS} interleaved rounds of {runs} runs (median of the rounds' medians).\n\n{table}<!-- hbm-latency:end -->\n"
    );
    replace_section(path, "hbm-latency", &section)
}

/// Replaces the `<!-- name:begin -->` … `<!-- name:end -->` section of
/// `path` with `section` (appended when missing).
fn replace_section(path: &Path, name: &str, section: &str) -> Result<()> {
    let (begin, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->\n"),
    );
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
        _ => format!("{old}\n{section}"),
    };
    std::fs::write(path, new)?;
    println!("wrote {} ({name})", path.display());
    Ok(())
}

/// Makes a folder `<tmp>/<input>/0.npy` holding sample 0 of each input.
fn first_sample_dir(set: &Path) -> Result<PathBuf> {
    let tmp = std::env::temp_dir().join(format!(
        "hbkit-bench-{}",
        set.to_string_lossy().replace('/', "_")
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    for e in std::fs::read_dir(set).with_context(|| set.display().to_string())? {
        let e = e?;
        if e.path().is_dir() {
            let d = tmp.join(e.file_name());
            std::fs::create_dir_all(&d)?;
            std::fs::copy(e.path().join("0.npy"), d.join("0.npy"))?;
        }
    }
    Ok(tmp)
}

fn ours_ms(exe: &Path, model: &Path, inputs: &Path, threads: usize, runs: usize) -> Result<f64> {
    let out = Command::new(exe)
        .args(["perf", "--json", "--model-file"])
        .arg(model)
        .arg("--input-file")
        .arg(inputs)
        .args([
            "--thread-num",
            &threads.to_string(),
            "--frame-count",
            &runs.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "hb-model-exec perf failed on {}: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    json_number(&String::from_utf8_lossy(&out.stdout), "median_ms")
}

fn ort_ms(root: &Path, model: &Path, inputs: &Path, threads: usize, runs: usize) -> Result<f64> {
    let out = Command::new("python3")
        .arg(root.join("xtask/ort_bench.py"))
        .arg(model)
        .arg(inputs)
        .args([threads.to_string(), runs.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "ort_bench.py failed on {}: {}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    json_number(&String::from_utf8_lossy(&out.stdout), "median_ms")
}

fn json_number(text: &str, key: &str) -> Result<f64> {
    let pat = format!("\"{key}\":");
    let rest = text
        .split(&pat)
        .nth(1)
        .with_context(|| format!("no {key} in {text}"))?;
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
        .collect();
    Ok(num.parse()?)
}

fn write_report(path: &Path, rows: &[Row], runs: usize) -> Result<()> {
    let mut table = String::from("| model | threads | hbkit median (ms) | ONNX Runtime median (ms) | hbkit / ORT |\n|---|---|---|---|---|\n");
    for r in rows {
        let (ort, ratio) = match r.ort_ms {
            Some(o) => (format!("{o:.3}"), format!("{:.2}×", r.ours_ms / o)),
            None => ("n/a".into(), "n/a".into()),
        };
        table += &format!(
            "| {} | {} | {:.3} | {} | {} |\n",
            r.label, r.threads, r.ours_ms, ort, ratio
        );
    }
    let section = format!(
        "<!-- float-latency:begin -->\n## Float interpreter latency\n\nMeasured by `cargo xtask bench` (median of {runs} runs after a warm-up, first held-out sample of each fixture, `hb-model-exec perf` vs onnxruntime in the same run; ORT with intra_op_num_threads = threads, sequential execution). Machine: 2 cores.\n\n{table}<!-- float-latency:end -->\n"
    );
    replace_section(path, "float-latency", &section)
}
