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
