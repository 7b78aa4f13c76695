//! The in-place kernel variants give what the plain kernels give, and never
//! touch a value something else still reads.

use super::Session;
use crate::kernels::horizon::{FakeQuant, FqType};
use crate::registry::Registry;
use hb_ir::{Attr, Graph, Model, Node, ValueInfo};
use hb_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// The standard registry with every in-place variant dropped (plain kernels
/// registered again).
fn plain_registry() -> Registry {
    let standard = Registry::standard();
    let mut r = Registry::standard();
    for (domain, op) in standard.ops() {
        if let Some(f) = standard.get(&domain, &op) {
            r.register_in(&domain, &op, f);
        }
    }
    r
}

/// x → Identity → Reshape → HzCalibration → Unsqueeze → Squeeze → Flatten,
/// with the calibrated value also a graph output (so the Unsqueeze after it
/// must copy), a Reshape of an initializer (shared, so it is copied) and
/// `x` read again at the end by an Add.
fn model() -> Model {
    let mut g = Graph::default();
    g.inputs
        .push(ValueInfo::tensor("x", DType::F32, &[2, 3, 4]));
    for (name, shape) in [
        ("f", vec![6, 4]),
        ("q", vec![6, 4]),
        ("w2", vec![4, 3]),
        ("s", vec![2, 3, 4]),
    ] {
        g.outputs.push(ValueInfo::tensor(name, DType::F32, &shape));
    }
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    g.initializers
        .insert("w".into(), Arc::new(Tensor::from_f32(&[12], w).expect("w")));
    g.initializers.insert(
        "shape".into(),
        Arc::new(Tensor::from_vec(&[2], vec![6i64, 4]).expect("shape")),
    );
    g.initializers.insert(
        "wshape".into(),
        Arc::new(Tensor::from_vec(&[2], vec![4i64, 3]).expect("wshape")),
    );
    g.initializers.insert(
        "axes".into(),
        Arc::new(Tensor::from_vec(&[1], vec![0i64]).expect("axes")),
    );
    g.nodes.push(Node::new("id", "Identity", &["x"], &["a"]));
    g.nodes
        .push(Node::new("r", "Reshape", &["a", "shape"], &["b"]));
    g.nodes
        .push(FakeQuant::feature(FqType::Int8, &[1.5]).to_node("cal", "b", "q"));
    g.nodes
        .push(Node::new("u", "Unsqueeze", &["q", "axes"], &["d"]));
    g.nodes
        .push(Node::new("sq", "Squeeze", &["d", "axes"], &["e"]));
    let mut fl = Node::new("fl", "Flatten", &["e"], &["f"]);
    fl.set_attr("axis", Attr::Int(1));
    g.nodes.push(fl);
    g.nodes
        .push(Node::new("rw", "Reshape", &["w", "wshape"], &["w2"]));
    g.nodes.push(Node::new("add", "Add", &["x", "x"], &["s"]));
    let mut m = crate::kernels::testutil::model_of(g, 13);
    m.opsets.insert("horizon".to_string(), 1);
    m
}

#[test]
fn in_place_variants_match_the_plain_kernels() {
    let m = model();
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let inputs = HashMap::from([(
        "x".to_string(),
        Tensor::from_f32(&[2, 3, 4], x.clone()).expect("x"),
    )]);
    let fast = Session::new(&m).expect("session");
    let plain = Session::with_registry(&m, &plain_registry()).expect("plain session");
    // The in-place path is taken where it may be and nowhere else.
    let taken: Vec<&str> = fast
        .steps
        .iter()
        .zip(&m.graph.nodes)
        .filter(|(s, _)| s.in_place.is_some())
        .map(|(_, n)| n.name.as_str())
        .collect();
    assert_eq!(taken, ["r", "cal", "sq", "fl", "rw"]);
    assert!(plain.steps.iter().all(|s| s.in_place.is_none()));
    for _ in 0..2 {
        let got = fast.run(&inputs).expect("run");
        assert_eq!(got, plain.run(&inputs).expect("plain run"));
        let q = FakeQuant::feature(FqType::Int8, &[1.5])
            .apply(&Tensor::from_f32(&[6, 4], x.clone()).expect("x"))
            .expect("fake quant");
        assert_eq!(got[1].1, q);
        let s: Vec<f32> = x.iter().map(|v| v + v).collect();
        assert_eq!(got[3].1, Tensor::from_f32(&[2, 3, 4], s).expect("s"));
    }
    // The initializer was shared: it is unchanged.
    let w = m.graph.initializer("w").expect("w").to_f32().expect("f32");
    assert_eq!(w.shape(), [12]);
}

/// Broadcasting arithmetic and Where in place: the handed-over operand is
/// input 0 or 1 (`c0 - a` keeps `a`), a smaller handed-over operand
/// declines (`y · d` reuses `d`, not `y`), and a result larger than every
/// operand is computed by the plain kernel.
fn arith_model() -> Model {
    let mut g = Graph::default();
    g.inputs
        .push(ValueInfo::tensor("x", DType::F32, &[2, 3, 4]));
    g.inputs.push(ValueInfo::tensor("y", DType::F32, &[3, 4]));
    g.outputs
        .push(ValueInfo::tensor("h", DType::F32, &[5, 2, 3, 4]));
    let init = |g: &mut Graph, name: &str, t: Tensor| {
        g.initializers.insert(name.into(), Arc::new(t));
    };
    init(
        &mut g,
        "bias",
        Tensor::from_f32(&[4], vec![0.5, -1.0, 2.0, 0.25]).expect("bias"),
    );
    init(&mut g, "c0", Tensor::from_f32(&[1], vec![3.0]).expect("c0"));
    init(
        &mut g,
        "cond",
        Tensor::from_vec(&[3, 4], (0..12).map(|i| i % 3 != 1).collect::<Vec<bool>>())
            .expect("cond"),
    );
    init(
        &mut g,
        "ninf",
        Tensor::from_f32(&[1], vec![f32::NEG_INFINITY]).expect("ninf"),
    );
    init(
        &mut g,
        "k",
        Tensor::from_f32(&[5, 1, 1, 1], vec![1.0, 2.0, 3.0, 4.0, 5.0]).expect("k"),
    );
    for (name, op, ins, out) in [
        ("n1", "Add", &["bias", "x"][..], "a"),
        ("n2", "Sub", &["c0", "a"], "b"),
        ("n3", "Div", &["b", "y"], "d"),
        ("n4", "Mul", &["y", "d"], "e"),
        ("n5", "Where", &["cond", "e", "ninf"], "f"),
        ("n6", "Add", &["x", "f"], "g"),
        ("n7", "Add", &["g", "k"], "h"),
    ] {
        g.nodes.push(Node::new(name, op, ins, &[out]));
    }
    crate::kernels::testutil::model_of(g, 13)
}

/// The inputs of [`arith_model`]: `x` [2, 3, 4] and `y` [3, 4].
fn arith_inputs(x: Vec<f32>, y: Vec<f32>) -> HashMap<String, Tensor> {
    HashMap::from([
        ("x".to_string(), Tensor::from_f32(&[2, 3, 4], x).expect("x")),
        ("y".to_string(), Tensor::from_f32(&[3, 4], y).expect("y")),
    ])
}

/// Sessions of `m` with and without the in-place variants.
fn fast_and_plain(m: &Model) -> (Session, Session) {
    let fast = Session::new(m).expect("session");
    let plain = Session::with_registry(m, &plain_registry()).expect("plain session");
    (fast, plain)
}

#[test]
fn broadcast_arithmetic_in_place_matches_the_plain_kernels() {
    let m = arith_model();
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let y: Vec<f32> = (0..12).map(|i| 0.5 + i as f32 * 0.25).collect();
    let inputs = arith_inputs(x, y);
    let (fast, plain) = fast_and_plain(&m);
    let slots: Vec<(&str, Vec<usize>)> = fast
        .steps
        .iter()
        .zip(&m.graph.nodes)
        .filter(|(s, _)| s.in_place.is_some())
        .map(|(s, n)| (n.name.as_str(), s.in_place_slots.clone()))
        .collect();
    // Every last read is offered (initializers too: they are shared, so
    // the run puts them back); `x` is read again by n6 and `y` by n4, so n1
    // and n3 cannot take them.
    assert_eq!(
        slots,
        [
            ("n1", vec![0]),
            ("n2", vec![0, 1]),
            ("n3", vec![0]),
            ("n4", vec![0, 1]),
            ("n5", vec![0, 1, 2]),
            ("n6", vec![0, 1]),
            ("n7", vec![0, 1]),
        ]
    );
    for _ in 0..2 {
        let got = fast.run(&inputs).expect("run");
        assert_eq!(got, plain.run(&inputs).expect("plain run"));
    }
    // The shared initializers are unchanged.
    let k = m.graph.initializer("k").expect("k").to_f32().expect("f32");
    assert_eq!(
        k.iter().copied().collect::<Vec<_>>(),
        [1.0, 2.0, 3.0, 4.0, 5.0]
    );
    let c0 = m
        .graph
        .initializer("c0")
        .expect("c0")
        .to_f32()
        .expect("f32");
    assert_eq!(c0.iter().copied().collect::<Vec<_>>(), [3.0]);
}

/// A [`ValueDump`](crate::ValueDump) shares the values it keeps with the
/// run: the in-place variants then leave them alone (each dumped value is
/// what the plain kernels produced), and the run's outputs are unchanged.
#[test]
fn dumped_values_are_shared_and_never_overwritten_in_place() {
    let m = arith_model();
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.41).cos() * 1.5).collect();
    let y: Vec<f32> = (0..12).map(|i| 0.75 + i as f32 * 0.125).collect();
    let inputs = arith_inputs(x, y);
    let (fast, plain) = fast_and_plain(&m);
    let (mut shared, mut reference) = (crate::ValueDump::default(), crate::ValueDump::default());
    let got = fast.run_with_hook(&inputs, &mut shared).expect("run");
    let want = plain
        .run_with_hook(&inputs, &mut reference)
        .expect("plain run");
    assert_eq!(got, want);
    let names: Vec<&str> = shared.values.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(names, ["a", "b", "d", "e", "f", "g", "h"]);
    for ((_, name, a), (_, _, b)) in shared.values.iter().zip(&reference.values) {
        assert_eq!(**a, **b, "dumped '{name}'");
    }
    // Without a dump the same run still computes in place and agrees.
    assert_eq!(fast.run(&inputs).expect("run"), want);
}
