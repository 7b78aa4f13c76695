//! Per-thread scratch buffers for kernels' intermediate arrays (im2col
//! columns, padded copies, transformed tiles): after the first calls of a
//! thread, a kernel reuses memory instead of allocating, zeroing and
//! page-faulting a fresh buffer on every run, also when it holds two
//! buffers at once (Winograd's padded input and its transformed tiles).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers a thread keeps between uses; a returned buffer beyond this
/// many frees the smallest.
const KEPT_BUFFERS: usize = 4;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer of `len` floats whose contents are left over from
/// earlier uses (zero where it was grown): its user must write every
/// element it reads. It goes back to the thread's pool when dropped.
pub struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    /// Takes the smallest of the thread's buffers that holds `len` floats,
    /// else its largest one replaced by a fresh, zeroed buffer of `len`
    /// (the old contents are not kept, so nothing is copied).
    pub fn take(len: usize) -> Self {
        let buf = POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let fits = (0..pool.len())
                .filter(|&i| pool[i].len() >= len)
                .min_by_key(|&i| pool[i].len());
            let pick = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
            pick.map(|i| pool.swap_remove(i)).unwrap_or_default()
        });
        let buf = if buf.len() >= len {
            buf
        } else {
            drop(buf);
            vec![0.0; len]
        };
        Scratch { buf, len }
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // `try_with`: a buffer dropped while the thread exits is just freed.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            pool.push(buf);
            if pool.len() > KEPT_BUFFERS {
                if let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].len()) {
                    pool.swap_remove(i);
                }
            }
        });
    }
}

/// Calls `f` with [`Scratch::take`]`(len)`.
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    f(&mut Scratch::take(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_the_asked_length_and_nest() {
        with_scratch(8, |a| {
            assert_eq!(a.len(), 8);
            a.fill(1.0);
            with_scratch(4, |b| {
                assert_eq!(b.len(), 4);
                b.fill(2.0);
            });
            assert!(a.iter().all(|&x| x == 1.0));
        });
        with_scratch(16, |c| assert_eq!(c.len(), 16));
    }

    #[test]
    fn a_returned_buffer_is_reused() {
        let first = {
            let s = Scratch::take(64);
            s.as_ptr()
        };
        let again = Scratch::take(32);
        assert_eq!(again.as_ptr(), first);
    }

    #[test]
    fn two_buffers_held_at_once_are_both_reused() {
        let (a, b) = {
            let a = Scratch::take(1000);
            let b = Scratch::take(300);
            (a.as_ptr(), b.as_ptr())
        };
        // Best fit: the small request gets the small buffer back.
        let small = Scratch::take(200);
        let large = Scratch::take(900);
        assert_eq!((large.as_ptr(), small.as_ptr()), (a, b));
    }

    #[test]
    fn a_grown_buffer_has_the_asked_length_and_the_pool_stays_bounded() {
        let held: Vec<Scratch> = (1..=KEPT_BUFFERS + 2)
            .map(|k| Scratch::take(k * 10))
            .collect();
        drop(held);
        POOL.with(|p| assert_eq!(p.borrow().len(), KEPT_BUFFERS));
        // The smallest were freed: every kept buffer is one of the largest.
        POOL.with(|p| assert!(p.borrow().iter().all(|b| b.len() >= 30)));
        let big = Scratch::take(1 << 12);
        assert_eq!(big.len(), 1 << 12);
        assert!(big.iter().all(|&x| x == 0.0));
    }
}
