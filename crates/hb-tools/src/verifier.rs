//! `hb-verifier`: compare two models on the same inputs.
//!
//! - a float/calibrated ONNX model against another model (ONNX, `.bc` or
//!   `.hbm`): per-output similarity (cosine, L1, L2, Chebyshev); the check
//!   fails when an output's cosine is below `--min-cosine`;
//! - two programs (`.bc` ↔ `.hbm`, `.hbm` ↔ `.hbm`): consistency per output
//!   (equal when rounded to `--compare-digits` decimals): mismatched count
//!   and ratio, max absolute and max relative error; any mismatch fails.
//!
//! `--all-nodes` also compares every tensor both models name and reports the
//! first (in the first model's execution order) that diverges.

use crate::cli::{ToolError, ToolResult};
use crate::inputs::{read_inputs, Sample};
use crate::prog::{as_f32, is_program, Loaded};
use hb_bpu::engine::Workspace;
use hb_float::{Session, ValueDump};
use hb_tensor::{metrics, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Options of one comparison.
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    /// The two models.
    pub models: Vec<PathBuf>,
    /// Input specs (joined with ',').
    pub inputs: Vec<String>,
    /// Decimal digits of the consistency check.
    pub digits: u32,
    /// Compare every shared tensor.
    pub all_nodes: bool,
    /// Lowest acceptable cosine of a similarity check.
    pub min_cosine: f64,
}

/// One output's comparison (means over samples for similarity; totals for
/// consistency).
#[derive(Debug, Serialize, Clone)]
pub struct OutputCmp {
    /// Output name.
    pub name: String,
    /// Consistency check (two programs) or similarity.
    pub mode: String,
    /// Passed.
    pub ok: bool,
    /// Cosine similarity (mean over samples).
    pub cosine: f64,
    /// Mean absolute difference.
    pub l1: f64,
    /// Euclidean distance.
    pub l2: f64,
    /// Largest absolute difference.
    pub chebyshev: f64,
    /// Elements that differ at the compared precision.
    pub mismatched: usize,
    /// Elements compared.
    pub total: usize,
    /// Largest relative difference.
    pub max_rel: f64,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Models.
    pub models: Vec<String>,
    /// Samples run.
    pub samples: usize,
    /// Per output.
    pub outputs: Vec<OutputCmp>,
    /// `--all-nodes`: tensors compared and the first that diverges.
    pub nodes_compared: usize,
    /// The first diverging tensor (name, max abs diff).
    pub first_divergence: Option<(String, f64)>,
    /// All checks passed.
    pub ok: bool,
}

// Two of these exist per run.
#[allow(clippy::large_enum_variant)]
enum M {
    Onnx(Box<Session>, Box<hb_ir::Model>),
    Prog(Loaded),
}

impl M {
    fn open(p: &Path) -> ToolResult<M> {
        if is_program(p) {
            return Ok(M::Prog(Loaded::open(p, false)?));
        }
        let model = crate::cli::load_model(p)?;
        let s =
            Session::new(&model).map_err(|e| ToolError::input(format!("{}: {e}", p.display())))?;
        Ok(M::Onnx(Box::new(s), Box::new(model)))
    }

    fn graph(&self) -> hb_ir::Graph {
        match self {
            M::Onnx(_, m) => m.graph.clone(),
            M::Prog(l) => l.input_graph(),
        }
    }

    /// Outputs as (name, f32) and, with `all`, every tensor (name, f32).
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        s: &Sample,
        all: bool,
        ws: &mut Workspace,
    ) -> ToolResult<(Vec<(String, Vec<f32>)>, Vec<(String, Vec<f32>)>)> {
        let f = |t: &Tensor| -> ToolResult<Vec<f32>> {
            Ok(t.to_f64_vec()
                .map_err(ToolError::input)?
                .iter()
                .map(|&x| x as f32)
                .collect())
        };
        match self {
            M::Onnx(sess, m) => {
                let ins: HashMap<String, Tensor> = m
                    .graph
                    .inputs
                    .iter()
                    .filter_map(|v| s.get(&v.name).map(|t| (v.name.clone(), t.clone())))
                    .collect();
                let mut dump = ValueDump::default();
                let outs = if all {
                    sess.run_with_hook(&ins, &mut dump)
                } else {
                    sess.run(&ins)
                }
                .map_err(|e| ToolError::input(e.to_string()))?;
                let o = outs
                    .iter()
                    .map(|(n, t)| Ok((n.clone(), f(t)?)))
                    .collect::<ToolResult<Vec<_>>>()?;
                let a = dump
                    .values
                    .iter()
                    .filter(|(_, _, t)| t.dtype().is_float())
                    .map(|(_, n, t)| Ok((n.clone(), f(t)?)))
                    .collect::<ToolResult<Vec<_>>>()?;
                Ok((o, a))
            }
            M::Prog(l) => {
                let ins = l.inputs_of(s)?;
                let names = l.output_names();
                let p = &l.program;
                let ids: HashMap<&str, usize> = p
                    .tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.as_str(), i))
                    .collect();
                if all {
                    let (outs, every) = l.run_all(&ins, ws)?;
                    let o = names
                        .iter()
                        .zip(&outs)
                        .zip(&p.outputs)
                        .map(|((n, t), &id)| Ok((n.clone(), as_f32(p, id as usize, t)?)))
                        .collect::<ToolResult<Vec<_>>>()?;
                    let mut a = Vec::new();
                    for (n, t) in every {
                        if let Some(&id) = ids.get(n.as_str()) {
                            if t.dtype() == hb_tensor::DType::Bool {
                                continue;
                            }
                            a.push((n, as_f32(p, id, &t)?));
                        }
                    }
                    Ok((o, a))
                } else {
                    let outs = l.run(&ins, ws)?;
                    let o = names
                        .iter()
                        .zip(&outs)
                        .zip(&p.outputs)
                        .map(|((n, t), &id)| Ok((n.clone(), as_f32(p, id as usize, t)?)))
                        .collect::<ToolResult<Vec<_>>>()?;
                    Ok((o, Vec::new()))
                }
            }
        }
    }
}

fn consistency(a: &[f32], b: &[f32], digits: u32) -> (usize, f64, f64) {
    let tol = 0.5 * 10f64.powi(-(digits as i32));
    let mut mism = 0;
    let (mut max_abs, mut max_rel) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = (f64::from(x) - f64::from(y)).abs();
        // Equal values (also equal infinities, such as attention-mask
        // −inf, whose difference is NaN) and NaN against NaN agree.
        let d = if x == y || (x.is_nan() && y.is_nan()) {
            0.0
        } else if d.is_nan() {
            f64::INFINITY
        } else {
            d
        };
        if d > tol {
            mism += 1;
        }
        max_abs = max_abs.max(d);
        let den = f64::from(x.abs()).max(1e-12);
        max_rel = max_rel.max(d / den);
    }
    (mism, max_abs, max_rel)
}

/// The base name a program tensor stands for (`x:q8` → `x`).
fn base(n: &str) -> &str {
    n.split(':').next().unwrap_or(n)
}

/// Runs the comparison.
pub fn run(args: &VerifyArgs) -> ToolResult<VerifyReport> {
    if args.models.len() != 2 {
        return Err(ToolError::input("-m needs exactly two models: A,B"));
    }
    if args.inputs.is_empty() {
        return Err(ToolError::input("give the inputs with -i"));
    }
    let a = M::open(&args.models[0])?;
    let b = M::open(&args.models[1])?;
    let both_prog = matches!((&a, &b), (M::Prog(_), M::Prog(_)));
    let spec = args.inputs.join(",");
    let samples = read_inputs(&a.graph(), &spec)?;
    let mut acc: Vec<OutputCmp> = Vec::new();
    let mut first: Option<(String, f64)> = None;
    let mut compared = 0;
    let (mut wa, mut wb) = (Workspace::new(), Workspace::new());
    for s in &samples {
        let (oa, ta) = a.run(s, args.all_nodes, &mut wa)?;
        let (ob, tb) = b.run(s, args.all_nodes, &mut wb)?;
        if oa.len() != ob.len() {
            return Err(ToolError::input(format!(
                "the models have {} and {} outputs",
                oa.len(),
                ob.len()
            )));
        }
        for (k, ((na, va), (_, vb))) in oa.iter().zip(&ob).enumerate() {
            if va.len() != vb.len() {
                return Err(ToolError::input(format!(
                    "output '{na}' has {} and {} elements",
                    va.len(),
                    vb.len()
                )));
            }
            let (mism, max_abs, max_rel) = consistency(va, vb, args.digits);
            let c = OutputCmp {
                name: na.clone(),
                mode: if both_prog {
                    "consistency".into()
                } else {
                    "similarity".into()
                },
                ok: true,
                cosine: metrics::cosine(va, vb),
                l1: metrics::l1_distance(va, vb),
                l2: metrics::l2_distance(va, vb),
                chebyshev: max_abs,
                mismatched: mism,
                total: va.len(),
                max_rel,
            };
            if acc.len() <= k {
                acc.push(c);
            } else {
                let e = &mut acc[k];
                e.cosine = e.cosine.min(c.cosine);
                e.l1 = e.l1.max(c.l1);
                e.l2 = e.l2.max(c.l2);
                e.chebyshev = e.chebyshev.max(c.chebyshev);
                e.mismatched += c.mismatched;
                e.total += c.total;
                e.max_rel = e.max_rel.max(c.max_rel);
            }
        }
        if args.all_nodes && first.is_none() {
            // ONNX vs program: a quantized program tensor `x:q8` stands for
            // the calibration output `x_calibrated` when there is one.
            let (onnx, prog) = if matches!(a, M::Onnx(..)) {
                (&ta, &tb)
            } else {
                (&tb, &ta)
            };
            let onnx_names: HashMap<&str, &Vec<f32>> =
                onnx.iter().map(|(n, v)| (n.as_str(), v)).collect();
            let key_of = |n: &str| -> String {
                if both_prog {
                    return n.to_string();
                }
                let b = base(n);
                if n.contains(":q") {
                    let cal = format!("{b}_calibrated");
                    if onnx_names.contains_key(cal.as_str()) {
                        return cal;
                    }
                }
                b.to_string()
            };
            let mut mb: HashMap<String, &Vec<f32>> = HashMap::new();
            for (n, v) in &tb {
                let k = if std::ptr::eq(&tb, prog) {
                    key_of(n)
                } else {
                    n.clone()
                };
                mb.entry(k).or_insert(v);
            }
            for (n, va) in &ta {
                let key = if std::ptr::eq(&ta, prog) {
                    key_of(n)
                } else {
                    n.clone()
                };
                let Some(vb) = mb.get(&key) else { continue };
                if vb.len() != va.len() {
                    continue;
                }
                compared += 1;
                let (mism, max_abs, _) = consistency(va, vb, args.digits);
                let cos = metrics::cosine(va, vb);
                if std::env::var_os("HB_VERIFY_TRACE").is_some() {
                    eprintln!(
                        "{key:<60} cos {cos:.6} max_abs {max_abs:.4e} n {}",
                        va.len()
                    );
                    continue;
                }
                let diverged = if both_prog {
                    mism > 0
                } else {
                    cos < args.min_cosine
                };
                if diverged {
                    first = Some((n.clone(), max_abs));
                    break;
                }
            }
        }
    }
    for c in &mut acc {
        c.ok = if both_prog {
            c.mismatched == 0
        } else {
            c.cosine >= args.min_cosine
        };
    }
    let ok = acc.iter().all(|c| c.ok) && (!both_prog || first.is_none());
    Ok(VerifyReport {
        models: args
            .models
            .iter()
            .map(|m| m.display().to_string())
            .collect(),
        samples: samples.len(),
        outputs: acc,
        nodes_compared: compared,
        first_divergence: first,
        ok,
    })
}

/// Text rendering.
pub fn render(r: &VerifyReport, all_nodes: bool) -> String {
    let mut t = format!(
        "{} vs {} on {} sample(s)\n",
        r.models[0], r.models[1], r.samples
    );
    for c in &r.outputs {
        if c.mode == "consistency" {
            t += &format!(
                "  output {}: {} (mismatched {}/{} = {:.6}, max abs error {:.6e}, max rel error {:.6e})\n",
                c.name,
                if c.ok { "consistent" } else { "INCONSISTENT" },
                c.mismatched,
                c.total,
                c.mismatched as f64 / c.total.max(1) as f64,
                c.chebyshev,
                c.max_rel
            );
        } else {
            t += &format!(
                "  output {}: cosine {:.6}  L1 {:.6e}  L2 {:.6e}  Chebyshev {:.6e}{}{}\n",
                c.name,
                c.cosine,
                c.l1,
                c.l2,
                c.chebyshev,
                // Each metric's worst sample (hb-info -c gives means).
                if r.samples > 1 {
                    "  (worst sample each)"
                } else {
                    ""
                },
                if c.ok { "" } else { "  (below --min-cosine)" }
            );
        }
    }
    if all_nodes {
        match &r.first_divergence {
            Some((n, d)) => {
                t += &format!(
                    "  first diverging tensor: {n} (max abs diff {d:.6e}) after {} compared\n",
                    r.nodes_compared
                )
            }
            None => t += &format!("  all {} shared tensors agree\n", r.nodes_compared),
        }
    }
    t += if r.ok { "PASS\n" } else { "FAIL\n" };
    t
}

#[cfg(test)]
mod tests {
    use super::consistency;

    #[test]
    fn equal_infinities_and_nans_agree() {
        let inf = f32::INFINITY;
        let same = [-inf, inf, f32::NAN, 1.0, -0.0];
        assert_eq!(consistency(&same, &same, 6), (0, 0.0, 0.0));
        let (mism, max_abs, _) = consistency(&[-inf, 1.0, f32::NAN], &[1.0, -inf, 2.0], 6);
        assert_eq!(mism, 3);
        assert!(max_abs.is_infinite());
    }
}
