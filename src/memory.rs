//! Handing the heap's free memory back to the kernel after a start or reload's bulk work.
//!
//! Why: glibc's malloc keeps memory freed by a thread in that thread's arena for reuse, so
//! rendering 5,000 meetings at start (and writing their plan on a second thread at the same
//! time) leaves megabytes of free heap counted in the daemon's RSS for as long as it runs.
//! `malloc_trim(0)` returns the free pages of every arena; nothing else in the process changes.

/// Sets glibc's malloc up for a start's bulk work before READY (parsing the config, computing
/// revisions and rendering the feeds: megabytes at 5,000 meetings) until [`end_bulk_work`]; a
/// no-op elsewhere. By default every
/// allocation of 128 KiB or more is a fresh `mmap` handed back at `free`, and the heap gives
/// its top back past 128 KiB free: each of parsing's and rendering's growing buffers then
/// page-faults on fresh zeroed pages again (a third of the config's load time at 5,000
/// meetings). Meanwhile, blocks under 32 MiB come from the heap and memory freed stays there
/// for the next phase.
pub fn keep_freed_memory_for_bulk_work() {
    set_thresholds(32 << 20, 128 << 20);
}

/// Puts glibc's default thresholds back (128 KiB; its adjustment of them as big blocks come and
/// go stays off, as with any `mallopt` of them) and gives the free
/// memory the bulk work left back to the kernel ([`release_free_heap`]). Kept on, each arena
/// would keep what later work frees at its top (the plan's rows, the feed cache write's
/// buffers: megabytes) for the daemon's life: `malloc_trim` gives back a thread arena's free
/// chunks, not its top.
pub fn end_bulk_work() {
    set_thresholds(128 << 10, 128 << 10);
    release_free_heap();
}

fn set_thresholds(mmap: i32, trim: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes plain integers and only changes glibc's thresholds for later
    // allocations and frees; it takes the allocator's locks like any malloc call.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap, trim);
}

/// Returns the heap's free pages to the kernel (glibc's `malloc_trim`); a no-op elsewhere.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers: it locks and walks glibc's own arenas and gives
    // their unused pages back with madvise. It is thread-safe and leaves allocations intact.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// This process's anonymous resident memory, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon")
    }

    #[test]
    fn free_heap_in_the_middle_of_an_arena_goes_back_to_the_kernel() {
        // 40 MB in 4 KiB blocks, written to; every 64th kept, so no arena can shrink from its
        // top and free() alone returns nothing.
        let blocks: Vec<Vec<u8>> = (0..10_000_u32)
            .map(|i| vec![i.to_le_bytes()[0] | 1; 4096])
            .collect();
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(64).collect();
        let before = rss_anon_kib();
        release_free_heap();
        let after = rss_anon_kib();
        assert!(
            before.saturating_sub(after) > 20_000,
            "RssAnon {before} KiB -> {after} KiB"
        );
        assert!(kept.iter().all(|b| b.len() == 4096 && b[0] & 1 == 1));
    }
}
