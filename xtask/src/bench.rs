//! Float latency benchmark (filled in below).
use anyhow::Result;

/// Runs the benchmark.
pub fn run(_args: &[String]) -> Result<()> {
    anyhow::bail!("bench: not built yet")
}
