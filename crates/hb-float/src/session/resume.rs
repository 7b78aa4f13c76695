//! Resuming execution from cached values: run a model once keeping every
//! value ([`Session::run_cached`]), then re-run only what a change touches
//! ([`Session::rerun_downstream`]).
//!
//! This is what makes per-node sensitivity analysis cheap: the float
//! activations of a sample are computed once, and quantizing one node
//! recomputes only the steps that (transitively) read a value it changed.
//! A recomputed value that is bit for bit equal to its cached value stops
//! the propagation (e.g. a padding mask computed from a changed tensor), so
//! results are exactly those of a full run.

use super::Session;
use crate::error::FloatError;
use crate::kernels::horizon::FakeQuant;
use crate::registry::OpCtx;
use hb_ir::Node;
use hb_tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// Every value of one run, by value id (see [`Session::value_id`]).
#[derive(Debug, Clone, Default)]
pub struct ValueCache {
    values: Vec<Option<Arc<Tensor>>>,
}

impl ValueCache {
    /// The value with id `id`, if it was produced.
    pub fn get(&self, id: usize) -> Option<&Tensor> {
        self.values.get(id).and_then(|v| v.as_deref())
    }

    /// The shared handle of value `id`.
    pub fn get_arc(&self, id: usize) -> Option<Arc<Tensor>> {
        self.values.get(id).and_then(|v| v.clone())
    }

    /// Bytes held by distinct tensors (aliases counted once, initializers included).
    pub fn bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.values
            .iter()
            .flatten()
            .filter(|a| seen.insert(Arc::as_ptr(a)))
            .map(|a| a.len() * a.dtype().size_of().max(1))
            .sum()
    }
}

/// True for an `HzCalibration` node that passes its input unchanged
/// (`switch = OFF` or `qtype = float32`): executed as an alias, no copy.
fn is_identity_calibration(node: &Node) -> bool {
    node.op_type == "HzCalibration"
        && node.domain == crate::kernels::horizon::DOMAIN
        && FakeQuant::from_node(node).is_ok_and(|f| f.is_identity())
}

/// Bit-for-bit equality (NaN payloads included for f32).
fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return false;
    }
    match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => match (x.as_slice(), y.as_slice()) {
            (Some(x), Some(y)) => x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
            _ => x
                .iter()
                .zip(y.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits()),
        },
        _ => a == b,
    }
}

impl Session {
    /// The id of value `name` (graph input, initializer or node output).
    pub fn value_id(&self, name: &str) -> Option<usize> {
        self.value_names.iter().position(|n| n == name)
    }

    /// Ids of the graph outputs, in graph order.
    pub fn output_value_ids(&self) -> &[usize] {
        &self.output_ids
    }

    /// Ids of the values step (node) `index` produces (`None` for unnamed outputs).
    pub fn step_output_ids(&self, index: usize) -> &[Option<usize>] {
        &self.steps[index].outputs
    }

    /// Ids of the values step (node) `index` reads (`None` for omitted inputs).
    pub fn step_input_ids(&self, index: usize) -> &[Option<usize>] {
        &self.steps[index].inputs
    }

    /// Runs the model and keeps every value (nothing is freed), so that
    /// [`Session::rerun_downstream`] can resume from it. Identity
    /// calibration nodes share their input's buffer.
    pub fn run_cached(&self, inputs: &HashMap<String, Tensor>) -> Result<ValueCache, FloatError> {
        self.check_inputs(inputs)?;
        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.value_names.len()];
        for (id, t) in &self.constants {
            values[*id] = Some(t.clone());
        }
        for (id, v) in self.input_ids.iter().zip(&self.graph.inputs) {
            values[*id] = inputs.get(&v.name).map(|t| Arc::new(t.clone()));
        }
        for (k, node) in self.graph.nodes.iter().enumerate() {
            let outs = self.exec_step(k, node, &|i| values[i].clone())?;
            for (o, t) in self.steps[k].outputs.iter().zip(outs) {
                if let Some(o) = o {
                    values[*o] = Some(t);
                }
            }
        }
        Ok(ValueCache { values })
    }

    /// Runs step `k` as `node` (the graph's node or a replacement with other
    /// attributes) reading values through `get`; identity calibration nodes
    /// alias their input.
    fn exec_step(
        &self,
        k: usize,
        node: &Node,
        get: &dyn Fn(usize) -> Option<Arc<Tensor>>,
    ) -> Result<Vec<Arc<Tensor>>, FloatError> {
        let step = &self.steps[k];
        let held: Vec<Option<Arc<Tensor>>> = step.inputs.iter().map(|i| i.and_then(get)).collect();
        if is_identity_calibration(node) {
            if let Some(Some(x)) = held.first() {
                return Ok(vec![x.clone()]);
            }
        }
        let args: Vec<Option<&Tensor>> = held.iter().map(|a| a.as_deref()).collect();
        let ctx = OpCtx {
            node,
            opset: step.opset,
        };
        let mut outs = (step.kernel)(&ctx, &args).map_err(|source| FloatError::Node {
            node: node.name.clone(),
            op: node.qualified_op(),
            source,
        })?;
        let needed = step
            .outputs
            .iter()
            .rposition(|o| o.is_some())
            .map_or(0, |p| p + 1);
        if outs.len() < needed {
            return Err(FloatError::Node {
                node: node.name.clone(),
                op: node.qualified_op(),
                source: crate::invalid!(
                    "kernel produced {} outputs, the node names {}",
                    outs.len(),
                    needed
                ),
            });
        }
        outs.truncate(step.outputs.len());
        Ok(outs.into_iter().map(Arc::new).collect())
    }

    /// Re-executes the steps in `seeds` as the given replacement nodes (same
    /// inputs and outputs, other attributes — e.g. a calibration node with
    /// its switch ON) and every step that reads a changed value, in graph
    /// order, reading unchanged values from `cache`. A seed reads its inputs
    /// as they are at that point (changed by earlier seeds or not). A
    /// recomputed value equal bit for bit to its cached value counts as
    /// unchanged, and execution stops once no changed value is live.
    ///
    /// Returns the values `targets` (ids), changed or cached, and whether
    /// each changed. The result is exactly that of a full run of the model
    /// with the seed nodes replaced.
    pub fn rerun_downstream(
        &self,
        cache: &ValueCache,
        seeds: &[(usize, &Node)],
        targets: &[usize],
    ) -> Result<Vec<(Arc<Tensor>, bool)>, FloatError> {
        let n = self.value_names.len();
        let mut new: Vec<Option<Arc<Tensor>>> = vec![None; n];
        let mut live = 0usize;
        let keep: std::collections::HashSet<usize> = targets.iter().copied().collect();
        let mut seed_at: HashMap<usize, &Node> = HashMap::new();
        for (k, node) in seeds {
            seed_at.insert(*k, *node);
        }
        let start = seeds.iter().map(|s| s.0).min().unwrap_or(self.steps.len());
        let last_seed = seeds.iter().map(|s| s.0).max().unwrap_or(0);
        for k in start..self.steps.len() {
            let step = &self.steps[k];
            let node = &self.graph.nodes[k];
            let get = |i: usize| {
                new[i]
                    .clone()
                    .or_else(|| cache.values.get(i).cloned().flatten())
            };
            let outs: Vec<Arc<Tensor>> = if let Some(seed) = seed_at.get(&k) {
                self.exec_step(k, seed, &get)?
            } else if step.inputs.iter().flatten().any(|i| new[*i].is_some()) {
                self.exec_step(k, node, &get)?
            } else {
                if live == 0 && k > last_seed {
                    break;
                }
                continue;
            };
            for (o, t) in step.outputs.iter().zip(outs) {
                let Some(o) = o else { continue };
                let unchanged = cache.get(*o).is_some_and(|c| same_bits(c, &t));
                if !unchanged {
                    if new[*o].is_none() {
                        live += 1;
                    }
                    new[*o] = Some(t);
                }
            }
            for f in &step.frees {
                if !keep.contains(f) && new[*f].take().is_some() {
                    live -= 1;
                }
            }
        }
        targets
            .iter()
            .map(|&id| match &new[id] {
                Some(t) => Ok((t.clone(), true)),
                None => cache.get_arc(id).map(|t| (t, false)).ok_or_else(|| {
                    FloatError::Graph(format!(
                        "value '{}' was not produced",
                        self.value_names.get(id).map_or("?", |s| s.as_str())
                    ))
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hb_ir::{Attr, Graph, Model, ValueInfo};
    use hb_tensor::DType;

    fn model() -> Model {
        // y = Relu(q(x) * 2) + Abs(x) with q an HzCalibration (switch OFF).
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::tensor("x", DType::F32, &[4]));
        g.outputs.push(ValueInfo::tensor("y", DType::F32, &[4]));
        g.initializers.insert(
            "two".into(),
            Arc::new(Tensor::from_f32(&[1], vec![2.0]).unwrap()),
        );
        let mut q = Node::new("q", "HzCalibration", &["x"], &["xq"]);
        q.domain = "horizon".into();
        q.set_attr("thresholds", Attr::Floats(vec![1.0]));
        q.set_attr("switch", Attr::String("OFF".into()));
        g.nodes.push(q);
        g.nodes.push(Node::new("m", "Mul", &["xq", "two"], &["h"]));
        g.nodes.push(Node::new("r", "Relu", &["h"], &["hr"]));
        g.nodes.push(Node::new("a", "Abs", &["x"], &["ax"]));
        g.nodes.push(Node::new("s", "Add", &["hr", "ax"], &["y"]));
        let mut m = crate::kernels::testutil::model_of(g, 13);
        m.opsets.insert("horizon".into(), 1);
        m
    }

    #[test]
    fn rerun_matches_full_run_with_the_switch_on() {
        let m = model();
        let s = Session::new(&m).unwrap();
        let x = Tensor::from_f32(&[4], vec![0.3, -0.7, 0.011, 0.5]).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        let cache = s.run_cached(&inputs).unwrap();
        let y_id = s.output_value_ids()[0];
        let mut q_on = m.graph.nodes[0].clone();
        q_on.set_attr("switch", Attr::String("ON".into()));
        let got = s.rerun_downstream(&cache, &[(0, &q_on)], &[y_id]).unwrap();
        let mut on = m.clone();
        on.graph.nodes[0] = q_on.clone();
        let want = Session::new(&on).unwrap().run(&inputs).unwrap();
        assert!(got[0].1);
        assert_eq!(*got[0].0, want[0].1);
        // Nothing changes: the cached output comes back unchanged.
        let same = s
            .rerun_downstream(&cache, &[(0, &m.graph.nodes[0])], &[y_id])
            .unwrap();
        assert!(!same[0].1);
        assert_eq!(*same[0].0, s.run(&inputs).unwrap()[0].1);
    }

    #[test]
    fn a_change_that_relu_removes_stops_propagating() {
        let m = model();
        let s = Session::new(&m).unwrap();
        let x = Tensor::from_f32(&[4], vec![-0.3, -0.7, -0.011, -0.5]).unwrap();
        let inputs = HashMap::from([("x".to_string(), x)]);
        let cache = s.run_cached(&inputs).unwrap();
        let hr = s.value_id("hr").unwrap();
        // int8 with threshold 1: every value changes a little, stays negative.
        let mut q_on = m.graph.nodes[0].clone();
        q_on.set_attr("switch", Attr::String("ON".into()));
        let got = s
            .rerun_downstream(&cache, &[(0, &q_on)], &[hr, s.output_value_ids()[0]])
            .unwrap();
        assert!(!got[0].1 && !got[1].1);
        assert!(cache.bytes() > 0);
    }
}
