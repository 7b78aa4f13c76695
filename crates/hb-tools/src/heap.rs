//! The process heap policy of the hbkit binaries.
//!
//! The interpreter frees and reallocates activation buffers on every run.
//! glibc's defaults serve each buffer above 128 KiB with a fresh `mmap` and
//! give it back with `munmap` when it is freed (and trim the heap's top
//! above 128 KiB), so every run pays a page fault, zeroing and a
//! memory-cgroup charge per 4 KiB page again: 2.5–3.4 µs a page on a VM,
//! a third of the time of a small CNN's run. [`keep_freed_memory`] turns
//! both off, so freed buffers are reused from the heap (best fit across
//! sizes, neighbours coalesced), which touches fewer pages than a
//! size-class allocator such as mimalloc, whose per-size pages and arena
//! set-up cost the short runs more (docs/benchmarks.md, session 27).

/// Buffers up to this size come from the heap, not their own `mmap`
/// (glibc's largest accepted value on 64-bit targets: half its 64 MiB
/// per-thread heap).
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free memory at the top of the heap is kept up to this size.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Extra address space each heap growth asks for (reserved, not touched:
/// fewer `brk`/`mprotect` calls while a run's heap grows).
const TOP_PAD: i32 = 64 << 20;

/// Makes glibc's allocator keep and reuse freed memory instead of
/// returning it to the kernel (see the module docs). Call once, before the
/// work starts; a no-op on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is
    // thread-safe and every value here is in its accepted range.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}
