//! Fixture discovery: `fixtures/<name>/{model.onnx, calib/, test/, ort/}`.

use anyhow::{Context, Result};
use hb_tensor::Tensor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The fixtures folder.
pub fn fixtures_dir() -> PathBuf {
    crate::workspace_root().join("fixtures")
}

/// The numbered samples of a set folder (`<set>/<input>/<k>.npy`) as one map per sample.
pub fn load_samples(set_dir: &Path, names: &[String]) -> Result<Vec<HashMap<String, Tensor>>> {
    let mut count = usize::MAX;
    for n in names {
        let c = std::fs::read_dir(set_dir.join(n))
            .with_context(|| format!("{}", set_dir.join(n).display()))?
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.path().extension().is_some_and(|x| x == "npy"))
                    .unwrap_or(false)
            })
            .count();
        count = count.min(c);
    }
    let count = if names.is_empty() { 0 } else { count };
    (0..count)
        .map(|k| {
            names
                .iter()
                .map(|n| {
                    let p = set_dir.join(n).join(format!("{k}.npy"));
                    Ok((n.clone(), hb_tensor::io::read_npy(&p)?))
                })
                .collect()
        })
        .collect()
}

/// One model file of a fixture and where its ORT reference outputs are.
#[derive(Debug, Clone)]
pub struct FixtureModel {
    /// Fixture name (folder).
    pub fixture: String,
    /// The `.onnx` file.
    pub model: PathBuf,
    /// Folder of ORT outputs `<output>/<k>.npy` for the test samples.
    pub ort_dir: PathBuf,
    /// Folder of held-out inputs `<input>/<k>.npy`.
    pub test_dir: PathBuf,
    /// Folder of calibration inputs.
    pub calib_dir: PathBuf,
}

/// Every fixture model listed in `fixtures/*/meta.json` (`models[].file`, `models[].ort_dir`).
pub fn all_models() -> Result<Vec<FixtureModel>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").exists())
        .collect();
    dirs.sort();
    for d in dirs {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("meta.json"))?)?;
        let fixture = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let models = meta["models"].as_array().cloned().unwrap_or_default();
        for m in models {
            let file = m["file"].as_str().context("models[].file")?;
            let ort = m["ort_dir"].as_str().unwrap_or("ort");
            out.push(FixtureModel {
                fixture: fixture.clone(),
                model: d.join(file),
                ort_dir: d.join(ort),
                test_dir: d.join("test"),
                calib_dir: d.join("calib"),
            });
        }
    }
    Ok(out)
}
