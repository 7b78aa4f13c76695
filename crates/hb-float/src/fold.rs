//! Constant folding: nodes whose inputs are all constants are run once and
//! replaced by initializers.

use crate::error::FloatError;
use crate::registry::{OpCtx, Registry};
use hb_ir::Model;
use std::sync::Arc;

/// Ops never folded (non-deterministic or with side effects).
const NEVER_FOLD: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// Folds constant subgraphs; returns the number of nodes folded. Nodes
/// without a kernel or whose kernel fails are left in place.
pub fn fold_constants(model: &mut Model, registry: &Registry) -> Result<usize, FloatError> {
    let mut folded = 0;
    let g = &mut model.graph;
    let mut k = 0;
    while k < g.nodes.len() {
        let n = &g.nodes[k];
        let all_const = n
            .inputs
            .iter()
            .all(|i| i.is_empty() || g.initializers.contains_key(i));
        let foldable =
            all_const && !NEVER_FOLD.contains(&n.op_type.as_str()) && !n.inputs.is_empty();
        let kernel = registry.get(&n.domain, &n.op_type);
        if let (true, Some(kernel)) = (foldable, kernel) {
            let args: Vec<Option<&hb_tensor::Tensor>> = n
                .inputs
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        None
                    } else {
                        g.initializers.get(i).map(|t| t.as_ref())
                    }
                })
                .collect();
            let opset = if n.domain.is_empty() {
                model.opsets.get("").copied().unwrap_or(1)
            } else {
                model.opsets.get(&n.domain).copied().unwrap_or(1)
            };
            let ctx = OpCtx { node: n, opset };
            if let Ok(outs) = kernel(&ctx, &args) {
                if outs.len() >= n.outputs.iter().filter(|o| !o.is_empty()).count() {
                    let names = n.outputs.clone();
                    for (name, t) in names.iter().zip(outs) {
                        if !name.is_empty() {
                            g.initializers.insert(name.clone(), Arc::new(t));
                        }
                    }
                    g.nodes.remove(k);
                    folded += 1;
                    continue;
                }
            }
        }
        k += 1;
    }
    // Graph outputs that became initializers stay reachable through the initializer map.
    g.prune_unused_initializers();
    Ok(folded)
}
