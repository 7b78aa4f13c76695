//! A per-thread scratch buffer for kernels' intermediate arrays (im2col
//! columns, padded copies): after the first call of a thread, a kernel
//! reuses the memory instead of allocating, zeroing and page-faulting a
//! fresh buffer on every run.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The thread's scratch buffer, `len` floats long, whose contents are left
/// over from earlier uses (zero where it was grown): its user must write
/// every element it reads. It goes back to the thread when dropped; one
/// taken while another is out gets memory of its own.
pub struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    /// Takes the thread's buffer, grown to at least `len` floats.
    pub fn take(len: usize) -> Self {
        let mut buf = SCRATCH.with(Cell::take);
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
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
        // Keep the larger of this buffer and one returned meanwhile.
        SCRATCH.with(|s| {
            let other = s.take();
            s.set(if other.len() > buf.len() { other } else { buf });
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
}
