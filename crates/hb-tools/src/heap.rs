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
//! With the environment variable [`HUGE_PAGES_ENV`] set,
//! [`advise_huge_pages_everywhere`] also asks for 2 MiB transparent huge
//! pages on the heaps, so the pages a run touches fault 512 at a time.
//! That is opt-in: it made seg_head's whole command ~10 % faster run after
//! run, but ~40 % slower right after another big process (ORT) had run on
//! this VM (docs/benchmarks.md, session 28).

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

/// Setting this environment variable to `1` turns the huge-page advice of
/// [`advise_huge_pages_everywhere`] on.
pub const HUGE_PAGES_ENV: &str = "HB_HUGE_PAGES";

/// Size of a transparent huge page on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// Linux's `MADV_COLLAPSE` (6.1+): makes the huge page now.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MADV_COLLAPSE: libc::c_int = 25;

/// True when [`HUGE_PAGES_ENV`] is `1`.
pub fn huge_pages_wanted() -> bool {
    std::env::var_os(HUGE_PAGES_ENV).is_some_and(|v| v == "1")
}

/// Asks the kernel to back the calling thread's malloc heap with 2 MiB
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`; the system default
/// `madvise` mode gives them only to advised memory). A run's activation
/// buffers then cost one page fault per 2 MiB instead of one per 4 KiB
/// (2 000 faults become 211 on seg_head), but every 2 MiB touched is
/// zeroed, and fresh huge pages cost more where the host backs guest
/// memory lazily (docs/benchmarks.md, session 28). glibc does the same with
/// its `glibc.malloc.hugetlb=1` tunable, which a program cannot set for
/// itself.
///
/// The heap is found from a fresh allocation (its mapping in
/// `/proc/self/maps`: the main thread's `[heap]`, or a worker's arena);
/// the probe asks for 256 KiB, so the main heap has grown by the
/// [`TOP_PAD`] reserve before it is advised. The arena's first huge page,
/// already touched by malloc's header, is collapsed into a huge page
/// (`MADV_COLLAPSE`). Call on each thread that allocates the big buffers,
/// after [`keep_freed_memory`]; the advice is best effort: errors (older
/// kernels, THP off, other C libraries) leave the heap as it was.
pub fn advise_huge_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let probe: Vec<u8> = Vec::with_capacity(256 << 10);
        let addr = std::hint::black_box(&probe).as_ptr() as usize;
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        let Some((start, end)) = heap_mapping(&maps, addr) else {
            return;
        };
        // SAFETY: advice on a mapping of this process that the allocator
        // owns; neither call changes its contents or protection.
        unsafe {
            if libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) != 0 {
                return;
            }
            let first = start.next_multiple_of(HUGE_PAGE);
            if first == start && first + HUGE_PAGE <= end {
                libc::madvise(first as *mut libc::c_void, HUGE_PAGE, MADV_COLLAPSE);
            }
        }
    }
}

/// The `[start, end)` of the writable anonymous mapping (heap or arena) of
/// `/proc/self/maps` text `maps` that holds `addr`; None when `addr` is in
/// another kind of mapping or in none.
pub fn heap_mapping(maps: &str, addr: usize) -> Option<(usize, usize)> {
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        if !(start <= addr && addr < end) {
            continue;
        }
        // offset, device, inode, then the optional path.
        let path = fields.nth(3).unwrap_or("");
        let anonymous = path.is_empty() || path == "[heap]";
        return (perms.starts_with("rw") && anonymous).then_some((start, end));
    }
    None
}

/// [`advise_huge_pages`] on the calling thread and on each thread of
/// rayon's global pool (built here, with that as its start handler), when
/// [`HUGE_PAGES_ENV`] is `1`. Other pools take the same start handler
/// ([`crate::exec::thread_pool`]).
pub fn advise_huge_pages_everywhere() {
    if !huge_pages_wanted() {
        return;
    }
    advise_huge_pages();
    // Fails only when the global pool exists already (its threads keep
    // their heaps as they are).
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| advise_huge_pages())
        .build_global();
}
