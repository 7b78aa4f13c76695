//! Executes a model's graph node by node.

use crate::error::FloatError;
use crate::registry::{InPlaceFn, KernelFn, OpCtx, Registry};
use hb_ir::{Graph, Model, Node};
use hb_tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

#[cfg(test)]
mod in_place_tests;
mod resume;
pub use resume::ValueCache;

/// Sees every node's outputs as they are produced and may replace them.
pub trait NodeHook {
    /// Called after node `index` ran; `outputs[k]` is the value named `node.outputs[k]`.
    fn after_node(
        &mut self,
        index: usize,
        node: &Node,
        outputs: &mut [Tensor],
    ) -> Result<(), String>;

    /// Called once node `index`'s outputs are stored (after
    /// [`NodeHook::after_node`]): shared handles to them, `None` for an
    /// unnamed output. Keeping a handle costs no copy; the session then
    /// computes ops that would have overwritten that value in place into a
    /// new buffer instead.
    fn after_store(
        &mut self,
        _index: usize,
        _node: &Node,
        _outputs: &[Option<Arc<Tensor>>],
    ) -> Result<(), String> {
        Ok(())
    }
}

/// A hook that keeps every produced value (for `--dump-intermediate`, the
/// per-node report): shared with the run, not copied.
#[derive(Default)]
pub struct ValueDump {
    /// `(node name, value name, tensor)` in execution order.
    pub values: Vec<(String, String, Arc<Tensor>)>,
}

impl NodeHook for ValueDump {
    fn after_node(
        &mut self,
        _index: usize,
        _node: &Node,
        _outputs: &mut [Tensor],
    ) -> Result<(), String> {
        Ok(())
    }

    fn after_store(
        &mut self,
        _index: usize,
        node: &Node,
        outputs: &[Option<Arc<Tensor>>],
    ) -> Result<(), String> {
        for (name, t) in node.outputs.iter().zip(outputs) {
            if let (false, Some(t)) = (name.is_empty(), t) {
                self.values
                    .push((node.name.clone(), name.clone(), Arc::clone(t)));
            }
        }
        Ok(())
    }
}

struct Step {
    kernel: KernelFn,
    /// The kernel's in-place variant, when this step is the last reader of
    /// an input it may take (`in_place_slots`) and reads it once.
    in_place: Option<InPlaceFn>,
    /// The input slots that may be handed over, tried in order.
    in_place_slots: Vec<usize>,
    opset: i64,
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
    /// Values whose last reader is this step (freed after it).
    frees: Vec<usize>,
}

/// A model prepared for execution: kernels resolved, values numbered, and
/// the last reader of every value known so memory is released early.
pub struct Session {
    graph: Graph,
    steps: Vec<Step>,
    value_names: Vec<String>,
    input_ids: Vec<usize>,
    output_ids: Vec<usize>,
    constants: Vec<(usize, Arc<Tensor>)>,
}

impl Session {
    /// Prepares `model` with the standard kernels.
    pub fn new(model: &Model) -> Result<Self, FloatError> {
        Self::with_registry(model, Registry::shared())
    }

    /// Prepares `model` with the given registry. Fails, naming the first
    /// node, when an op has no kernel.
    pub fn with_registry(model: &Model, registry: &Registry) -> Result<Self, FloatError> {
        let graph = model.graph.clone();
        let missing: Vec<&Node> = graph
            .nodes
            .iter()
            .filter(|n| !registry.supports(&n.domain, &n.op_type))
            .collect();
        if let Some(first) = missing.first() {
            let mut others: Vec<String> =
                missing.iter().skip(1).map(|n| n.qualified_op()).collect();
            others.sort();
            others.dedup();
            others.retain(|o| *o != first.qualified_op());
            let more = if others.is_empty() {
                String::new()
            } else {
                format!(" (also missing: {})", others.join(", "))
            };
            return Err(FloatError::UnsupportedOp {
                node: first.name.clone(),
                op: first.qualified_op(),
                more,
            });
        }
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut value_names = Vec::new();
        let mut id_of = |name: &str, ids: &mut HashMap<String, usize>| -> usize {
            if let Some(&i) = ids.get(name) {
                return i;
            }
            let i = value_names.len();
            value_names.push(name.to_string());
            ids.insert(name.to_string(), i);
            i
        };
        let input_ids: Vec<usize> = graph
            .inputs
            .iter()
            .map(|v| id_of(&v.name, &mut ids))
            .collect();
        let constants: Vec<(usize, Arc<Tensor>)> = graph
            .initializers
            .iter()
            .map(|(n, t)| (id_of(n, &mut ids), t.clone()))
            .collect();
        let mut defined: Vec<bool> = Vec::new();
        let mut steps = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            let inputs = n
                .inputs
                .iter()
                .map(|i| {
                    if i.is_empty() {
                        None
                    } else {
                        Some(id_of(i, &mut ids))
                    }
                })
                .collect();
            let outputs = n
                .outputs
                .iter()
                .map(|o| {
                    if o.is_empty() {
                        None
                    } else {
                        Some(id_of(o, &mut ids))
                    }
                })
                .collect();
            let kernel = registry.get(&n.domain, &n.op_type).expect("checked above");
            steps.push(Step {
                kernel,
                in_place: None,
                in_place_slots: Vec::new(),
                opset: model.opset_for(&n.domain),
                inputs,
                outputs,
                frees: Vec::new(),
            });
        }
        let output_ids: Vec<usize> = graph
            .outputs
            .iter()
            .map(|o| id_of(&o.name, &mut ids))
            .collect();
        // Every value read must be a graph input, an initializer or produced earlier.
        defined.resize(value_names.len(), false);
        for &i in &input_ids {
            defined[i] = true;
        }
        for (i, _) in &constants {
            defined[*i] = true;
        }
        for (s, n) in steps.iter().zip(&graph.nodes) {
            for (k, i) in s.inputs.iter().enumerate() {
                if let Some(i) = i {
                    if !defined[*i] {
                        return Err(FloatError::Graph(format!(
                            "node '{}' ({}) reads '{}', which no node, input or initializer provides",
                            n.name, n.op_type, n.inputs[k]
                        )));
                    }
                }
            }
            for o in s.outputs.iter().flatten() {
                defined[*o] = true;
            }
        }
        for (o, v) in output_ids.iter().zip(&graph.outputs) {
            if !defined[*o] {
                return Err(FloatError::Graph(format!(
                    "graph output '{}' is never produced",
                    v.name
                )));
            }
        }
        // Last use: free a value after its last reader unless it is an output.
        let mut last: Vec<Option<usize>> = vec![None; value_names.len()];
        for (k, s) in steps.iter().enumerate() {
            for i in s.inputs.iter().flatten() {
                last[*i] = Some(k);
            }
        }
        for o in &output_ids {
            last[*o] = None;
        }
        for (v, l) in last.iter().enumerate() {
            if let Some(k) = l {
                steps[*k].frees.push(v);
            }
        }
        for (s, n) in steps.iter_mut().zip(&graph.nodes) {
            let Some((f, any)) = registry.get_in_place(&n.domain, &n.op_type) else {
                continue;
            };
            let slots = if any { s.inputs.len() } else { 1 };
            s.in_place_slots = (0..slots)
                .filter(|&k| {
                    s.inputs[k].is_some_and(|v| {
                        s.frees.contains(&v)
                            && s.inputs.iter().flatten().filter(|&&i| i == v).count() == 1
                    })
                })
                .collect();
            if !s.in_place_slots.is_empty() {
                s.in_place = Some(f);
            }
        }
        Ok(Session {
            graph,
            steps,
            value_names,
            input_ids,
            output_ids,
            constants,
        })
    }

    /// The graph being run.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the model; `inputs` are by graph-input name. Returns the outputs in graph order.
    pub fn run(
        &self,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, FloatError> {
        self.run_inner(inputs, None)
    }

    /// Runs the model and calls `hook` after every node.
    pub fn run_with_hook(
        &self,
        inputs: &HashMap<String, Tensor>,
        hook: &mut dyn NodeHook,
    ) -> Result<Vec<(String, Tensor)>, FloatError> {
        self.run_inner(inputs, Some(hook))
    }

    /// Checks inputs against the declared types and shapes.
    pub fn check_inputs(&self, inputs: &HashMap<String, Tensor>) -> Result<(), FloatError> {
        for v in &self.graph.inputs {
            let t = inputs.get(&v.name).ok_or_else(|| FloatError::Input {
                name: v.name.clone(),
                msg: "missing (the model needs it)".into(),
            })?;
            if !v.accepts(t) {
                return Err(FloatError::Input {
                    name: v.name.clone(),
                    msg: format!(
                        "expected {}{}, got {}",
                        v.dtype_name(),
                        v.shape_text(),
                        t.describe()
                    ),
                });
            }
        }
        for name in inputs.keys() {
            if !self.graph.inputs.iter().any(|v| &v.name == name) {
                let names: Vec<&str> = self.graph.inputs.iter().map(|v| v.name.as_str()).collect();
                return Err(FloatError::Input {
                    name: name.clone(),
                    msg: format!("the model has no such input (inputs: {})", names.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// Runs a step's in-place variant on the first input it may take that
    /// nothing else holds; `None` when there is none or every try declined
    /// (each declined input is put back unchanged).
    fn run_in_place(
        &self,
        f: InPlaceFn,
        step: &Step,
        ctx: &OpCtx,
        values: &mut [Option<Arc<Tensor>>],
    ) -> crate::error::OpResult<Option<Vec<Tensor>>> {
        for &slot in &step.in_place_slots {
            let Some(id) = step.inputs[slot] else {
                continue;
            };
            let owned = match values[id].take().map(Arc::try_unwrap) {
                Some(Ok(t)) => t,
                Some(Err(shared)) => {
                    values[id] = Some(shared);
                    continue;
                }
                None => continue,
            };
            let args: Vec<Option<&Tensor>> = step
                .inputs
                .iter()
                .enumerate()
                .map(|(k, i)| i.filter(|_| k != slot).and_then(|i| values[i].as_deref()))
                .collect();
            match f(ctx, owned, &args)? {
                Ok(outs) => return Ok(Some(outs)),
                Err(x) => values[id] = Some(Arc::new(x)),
            }
        }
        Ok(None)
    }

    fn run_inner(
        &self,
        inputs: &HashMap<String, Tensor>,
        mut hook: Option<&mut dyn NodeHook>,
    ) -> Result<Vec<(String, Tensor)>, FloatError> {
        self.check_inputs(inputs)?;
        let mut values: Vec<Option<Arc<Tensor>>> = vec![None; self.value_names.len()];
        for (id, t) in &self.constants {
            values[*id] = Some(t.clone());
        }
        for (id, v) in self.input_ids.iter().zip(&self.graph.inputs) {
            values[*id] = inputs.get(&v.name).map(|t| Arc::new(t.clone()));
        }
        let mut stored: Vec<Option<Arc<Tensor>>> = Vec::new();
        for (k, (step, node)) in self.steps.iter().zip(&self.graph.nodes).enumerate() {
            let ctx = OpCtx {
                node,
                opset: step.opset,
            };
            let node_err = |source| FloatError::Node {
                node: node.name.clone(),
                op: node.qualified_op(),
                source,
            };
            let mut done = None;
            if let Some(f) = step.in_place {
                done = self
                    .run_in_place(f, step, &ctx, &mut values)
                    .map_err(node_err)?;
            }
            let mut outs = match done {
                Some(outs) => outs,
                None => {
                    let args: Vec<Option<&Tensor>> = step
                        .inputs
                        .iter()
                        .map(|i| i.and_then(|i| values[i].as_deref()))
                        .collect();
                    (step.kernel)(&ctx, &args).map_err(node_err)?
                }
            };
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
            if let Some(h) = hook.as_deref_mut() {
                h.after_node(k, node, &mut outs).map_err(FloatError::Hook)?;
            }
            for (o, t) in step.outputs.iter().zip(outs) {
                if let Some(o) = o {
                    values[*o] = Some(Arc::new(t));
                }
            }
            if let Some(h) = hook.as_deref_mut() {
                // One buffer for the run; emptied before the next step so
                // its handles never block an in-place kernel.
                stored.extend(
                    step.outputs
                        .iter()
                        .map(|o| o.and_then(|o| values[o].clone())),
                );
                let r = h.after_store(k, node, &stored);
                stored.clear();
                r.map_err(FloatError::Hook)?;
            }
            for f in &step.frees {
                values[*f] = None;
            }
        }
        self.output_ids
            .iter()
            .zip(&self.graph.outputs)
            .map(|(id, v)| {
                let t = values[*id].clone().ok_or_else(|| {
                    FloatError::Graph(format!("output '{}' was not produced", v.name))
                })?;
                Ok((
                    v.name.clone(),
                    Arc::try_unwrap(t).unwrap_or_else(|a| (*a).clone()),
                ))
            })
            .collect()
    }
}

/// One node's accumulated timing: (node name, op type, total seconds, calls).
pub type NodeTiming = (String, String, f64, usize);

/// A hook that measures each node's wall time (time since the previous node
/// finished), accumulated over runs.
#[derive(Default)]
pub struct TimingHook {
    last: Option<std::time::Instant>,
    /// Per node index: (node name, op type, total seconds, calls).
    pub nodes: Vec<NodeTiming>,
}

impl TimingHook {
    /// Marks the start of a run.
    pub fn start_run(&mut self) {
        self.last = Some(std::time::Instant::now());
    }
}

impl NodeHook for TimingHook {
    fn after_node(
        &mut self,
        index: usize,
        node: &Node,
        _outputs: &mut [Tensor],
    ) -> Result<(), String> {
        let now = std::time::Instant::now();
        let dt = self
            .last
            .map_or(0.0, |l| now.duration_since(l).as_secs_f64());
        if self.nodes.len() <= index {
            self.nodes
                .resize(index + 1, (String::new(), String::new(), 0.0, 0));
        }
        let e = &mut self.nodes[index];
        if e.0.is_empty() {
            e.0 = node.name.clone();
            e.1 = node.op_type.clone();
        }
        e.2 += dt;
        e.3 += 1;
        self.last = Some(std::time::Instant::now());
        Ok(())
    }
}
