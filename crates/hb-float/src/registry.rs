//! The op registry: `(domain, op_type)` → kernel.

use crate::error::OpResult;
use hb_ir::Node;
use hb_tensor::Tensor;
use std::collections::HashMap;

/// What a kernel knows about the node it runs.
pub struct OpCtx<'a> {
    /// The node (attributes, names).
    pub node: &'a Node,
    /// The opset version of the node's domain in this model.
    pub opset: i64,
}

/// A kernel: inputs (`None` for omitted optional inputs) → outputs, one per
/// node output (trailing optional outputs may be left off).
pub type KernelFn = fn(&OpCtx, &[Option<&Tensor>]) -> OpResult<Vec<Tensor>>;

/// An in-place variant of a kernel: an input is handed over by value (the
/// session does so when this node is its last reader and nothing else
/// holds it) and its slot in `inputs` is `None`. Input 0, or for variants
/// registered with [`Registry::register_in_place_any`] any input. It may
/// reuse that buffer for the output, or return `Ok(Err(x))` to decline,
/// giving the tensor back unchanged (the session then tries the next
/// input or runs the plain kernel). Results must equal the plain kernel's.
pub type InPlaceFn =
    fn(&OpCtx, Tensor, &[Option<&Tensor>]) -> OpResult<std::result::Result<Vec<Tensor>, Tensor>>;

/// Maps `(domain, op_type)` to kernels. The default domain is `""`.
#[derive(Clone)]
pub struct Registry {
    map: HashMap<(String, String), KernelFn>,
    in_place: HashMap<(String, String), (InPlaceFn, bool)>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Registry {
            map: HashMap::new(),
            in_place: HashMap::new(),
        }
    }

    /// The registry with every built-in kernel (a fresh copy, to extend or
    /// replace kernels in; [`Registry::shared`] to only look them up).
    pub fn standard() -> Self {
        let mut r = Self::empty();
        crate::kernels::register_all(&mut r);
        r
    }

    /// The standard registry, built once per process: sessions, constant
    /// folding and lowering look kernels up in it without rebuilding the
    /// maps (a few hundred entries) each time.
    pub fn shared() -> &'static Registry {
        static SHARED: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        SHARED.get_or_init(Registry::standard)
    }

    /// Registers (or replaces) a kernel for an op of the default domain.
    pub fn register(&mut self, op_type: &str, f: KernelFn) {
        self.register_in("", op_type, f);
    }

    /// Registers (or replaces) a kernel for an op in `domain`. A replaced
    /// kernel's in-place variant is dropped.
    pub fn register_in(&mut self, domain: &str, op_type: &str, f: KernelFn) {
        let key = (normalize_domain(domain).to_string(), op_type.to_string());
        self.in_place.remove(&key);
        self.map.insert(key, f);
    }

    /// Registers the in-place variant of an op's kernel (after the
    /// kernel); it is handed input 0.
    pub fn register_in_place(&mut self, domain: &str, op_type: &str, f: InPlaceFn) {
        self.in_place.insert(
            (normalize_domain(domain).to_string(), op_type.to_string()),
            (f, false),
        );
    }

    /// Registers an in-place variant that may be handed any input (e.g.
    /// `Add(bias, x)` reuses `x`).
    pub fn register_in_place_any(&mut self, domain: &str, op_type: &str, f: InPlaceFn) {
        self.in_place.insert(
            (normalize_domain(domain).to_string(), op_type.to_string()),
            (f, true),
        );
    }

    /// The in-place variant of an op's kernel, if any, and whether it takes
    /// any input (not only input 0).
    pub fn get_in_place(&self, domain: &str, op_type: &str) -> Option<(InPlaceFn, bool)> {
        self.in_place
            .get(&(normalize_domain(domain).to_string(), op_type.to_string()))
            .copied()
    }

    /// The kernel for an op, if any.
    pub fn get(&self, domain: &str, op_type: &str) -> Option<KernelFn> {
        self.map
            .get(&(normalize_domain(domain).to_string(), op_type.to_string()))
            .copied()
    }

    /// True when the op has a kernel.
    pub fn supports(&self, domain: &str, op_type: &str) -> bool {
        self.get(domain, op_type).is_some()
    }

    /// Every registered `(domain, op_type)`, sorted.
    pub fn ops(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.map.keys().cloned().collect();
        v.sort();
        v
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::standard()
    }
}

fn normalize_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}
