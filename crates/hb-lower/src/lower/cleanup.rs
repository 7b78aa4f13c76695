//! Dead-op elimination and tensor renumbering (lowering emits conversions
//! eagerly; the ones nothing reads are dropped here).

use hb_bpu::program::{pb, Program};

/// Removes ops whose outputs nobody reads and tensors nobody references,
/// renumbering the rest (order preserved).
pub fn remove_dead(mut p: Program) -> Program {
    let n = p.tensors.len();
    loop {
        let mut used = vec![false; n];
        for &o in &p.outputs {
            used[o as usize] = true;
        }
        for op in &p.ops {
            for &i in &op.inputs {
                if i >= 0 {
                    used[i as usize] = true;
                }
            }
            for post in &op.post {
                if let Some(pb::post_op::Kind::Add(a)) = &post.kind {
                    used[a.other as usize] = true;
                }
            }
        }
        let before = p.ops.len();
        p.ops
            .retain(|op| op.outputs.iter().any(|&o| used[o as usize]));
        if p.ops.len() == before {
            break;
        }
    }
    let mut keep = vec![false; n];
    for &i in p.inputs.iter().chain(&p.outputs) {
        keep[i as usize] = true;
    }
    for op in &p.ops {
        for &i in &op.inputs {
            if i >= 0 {
                keep[i as usize] = true;
            }
        }
        for &o in &op.outputs {
            keep[o as usize] = true;
        }
        if let Some(pb::op::Kind::Cpu(c)) = &op.kind {
            for a in &c.attrs {
                if let Some(pb::attribute::Value::Tensor(t)) = a.value {
                    keep[t as usize] = true;
                }
            }
        }
        for post in &op.post {
            if let Some(pb::post_op::Kind::Add(a)) = &post.kind {
                keep[a.other as usize] = true;
            }
        }
    }
    let mut map = vec![u32::MAX; n];
    let mut tensors = Vec::new();
    for (i, t) in std::mem::take(&mut p.tensors).into_iter().enumerate() {
        if keep[i] {
            map[i] = tensors.len() as u32;
            tensors.push(t);
        }
    }
    p.tensors = tensors;
    renumber(&mut p, &map);
    p
}

/// Applies a tensor-id map to every reference in the program.
pub fn renumber(p: &mut Program, map: &[u32]) {
    for i in p.inputs.iter_mut().chain(p.outputs.iter_mut()) {
        *i = map[*i as usize];
    }
    for op in &mut p.ops {
        for i in &mut op.inputs {
            if *i >= 0 {
                *i = map[*i as usize] as i32;
            }
        }
        for o in &mut op.outputs {
            *o = map[*o as usize];
        }
        if let Some(pb::op::Kind::Cpu(c)) = &mut op.kind {
            for a in &mut c.attrs {
                if let Some(pb::attribute::Value::Tensor(t)) = &mut a.value {
                    *t = map[*t as usize];
                }
            }
        }
        for post in &mut op.post {
            if let Some(pb::post_op::Kind::Add(a)) = &mut post.kind {
                a.other = map[a.other as usize];
            }
        }
    }
}
