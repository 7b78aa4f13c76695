//! How many threads a kernel may split its work over. Kernels split large
//! outputs over the rayon pool; a caller that already runs one sample per
//! thread (hb-calib's statistics and scoring workers) runs its sessions
//! under [`serial_kernels`], so each kernel stays on its worker's thread
//! and core instead of handing pieces to a pool that is busy anyway.

use std::cell::Cell;
use std::thread::LocalKey;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// The threads a kernel may split over on this thread: 1 inside
/// [`serial_kernels`], else the rayon pool's size.
pub fn kernel_threads() -> usize {
    if SERIAL.with(Cell::get) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Runs `f` with the kernels it calls on this thread kept whole (no
/// intra-op split); the previous setting is restored afterwards, also when
/// `f` panics.
pub fn serial_kernels<R>(f: impl FnOnce() -> R) -> R {
    with_flag_set(&SERIAL, f)
}

/// Runs `f` with the thread-local `flag` set, restoring its previous value
/// afterwards, also when `f` panics.
pub(crate) fn with_flag_set<R>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> R) -> R {
    struct Restore(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|c| c.replace(true)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_kernels_is_scoped_to_the_call_and_the_thread() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(kernel_threads(), 2);
            let (inside, other) = serial_kernels(|| {
                let other = std::thread::spawn(kernel_threads).join().unwrap();
                (kernel_threads(), other)
            });
            assert_eq!(inside, 1);
            // Another thread keeps its own setting: the pool it sees.
            let fresh = std::thread::spawn(rayon::current_num_threads)
                .join()
                .unwrap();
            assert_eq!(other, fresh);
            assert_eq!(kernel_threads(), 2);
            let _ = std::panic::catch_unwind(|| serial_kernels(|| panic!("inside")));
            assert_eq!(kernel_threads(), 2);
        });
    }
}
