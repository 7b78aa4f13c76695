//! The binaries' heap policy (`hb_tools::heap`): large buffers come from
//! the heap and are reused, not mapped and unmapped per allocation. Its own
//! test binary: the check counts glibc's mmapped chunks process-wide.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

/// Chunks glibc currently serves with their own `mmap`.
fn mmapped_chunks() -> usize {
    // SAFETY: `mallinfo2` only reads allocator statistics.
    unsafe { libc::mallinfo2() }.hblks
}

/// Allocates and fills `bytes`, returning the mmapped-chunk count while
/// the buffer is alive.
fn chunks_while_holding(bytes: usize) -> usize {
    let v = vec![1u8; bytes];
    let during = mmapped_chunks();
    std::hint::black_box(&v);
    during
}

#[test]
fn large_buffers_come_from_the_heap_once_the_policy_is_set() {
    // glibc's default: a 4 MiB buffer is mapped on its own (the probe
    // works). Freeing it raises glibc's dynamic threshold to 4 MiB.
    let before = mmapped_chunks();
    assert_eq!(chunks_while_holding(4 << 20), before + 1);
    // With the policy an 8 MiB buffer (above that threshold) comes from
    // the heap, twice.
    hb_tools::heap::keep_freed_memory();
    let before = mmapped_chunks();
    assert_eq!(chunks_while_holding(8 << 20), before);
    assert_eq!(chunks_while_holding(8 << 20), before);
}
