//! The binaries' huge-page advice (`hb_tools::heap::advise_huge_pages`):
//! a thread's malloc heap becomes eligible for transparent huge pages. Its
//! own test binary: it sets the process-wide heap policy, which
//! `heap_policy.rs` checks the absence of first.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

/// The `THPeligible` flag of the smaps entry of the mapping holding `addr`.
fn thp_eligible(addr: usize) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("THPeligible:") {
                return Some(v.trim() == "1");
            }
        }
    }
    None
}

#[test]
fn a_threads_heap_is_advised_huge_pages() {
    let mode =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !mode.contains("[madvise]") {
        // "always": eligible without advice; "never": never eligible.
        eprintln!("skipped: transparent huge pages are not in madvise mode ({mode:?})");
        return;
    }
    hb_tools::heap::keep_freed_memory();
    // A fresh thread has its own malloc arena, not advised before; 4 MiB
    // grow it past a huge page.
    std::thread::spawn(|| {
        let probe: Vec<u8> = Vec::with_capacity(4 << 20);
        let addr = probe.as_ptr() as usize;
        assert_eq!(
            thp_eligible(addr),
            Some(false),
            "arena eligible before the advice"
        );
        hb_tools::heap::advise_huge_pages();
        assert_eq!(
            thp_eligible(addr),
            Some(true),
            "arena not eligible after the advice"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn heap_mapping_takes_only_writable_anonymous_mappings() {
    let maps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/hb-calib
55d0c2000000-55d0c6000000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
7f0004000000-7f0008000000 ---p 00000000 00:00 0
7f0010000000-7f0010001000 rw-p 00000000 08:01 77 /tmp/data.bin
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
";
    use hb_tools::heap::heap_mapping;
    assert_eq!(
        heap_mapping(maps, 0x55d0c2000010),
        Some((0x55d0c2000000, 0x55d0c6000000))
    );
    assert_eq!(
        heap_mapping(maps, 0x7f0003ffffff),
        Some((0x7f0000000000, 0x7f0004000000))
    );
    assert_eq!(
        heap_mapping(maps, 0x7f0004000000),
        None,
        "reserved, not writable"
    );
    assert_eq!(heap_mapping(maps, 0x55d0c0000100), None, "code");
    assert_eq!(heap_mapping(maps, 0x7f0010000000), None, "file mapping");
    assert_eq!(heap_mapping(maps, 0x7ffc00000100), None, "stack");
    assert_eq!(heap_mapping(maps, 0x10), None, "unmapped");
}
