//! Memory figures of this process for `vigil bench` and `vigil ingest`:
//! the heap a piece of work leaves allocated (operator state per series)
//! and the peak resident set size.
//!
//! The heap is read from the C allocator's own books (glibc's
//! `mallinfo2`: bytes in use in every arena plus mmapped chunks), before
//! and after the work. Until issue 21's last measurement a counting
//! global allocator did this; its call and atomic adds on every
//! allocation cost prost's raw decode, which allocates every string of
//! every batch, 13-15 % of its rate on tick batches (5-8 % with the
//! counter switched off), and tilted every ratio to raw decode that
//! `vigil bench` prints. Reading the allocator's books costs nothing
//! while a stage is timed. The figure includes malloc's chunk headers
//! and rounding, which the counter did not (memory the process does
//! hold).

/// Bytes the C allocator has handed out and not taken back, if this
/// platform's allocator says (glibc); `None` elsewhere.
pub fn heap_in_use() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallinfo2` only reads the allocator's statistics; it
        // takes no arguments and returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        Some(m.uordblks.saturating_add(m.hblkhd))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Runs `f` and returns its result and the heap bytes it left allocated
/// (what it allocated and kept, less what it freed of older memory), or
/// `None` where [`heap_in_use`] is not known. Meant for one thread at a
/// time: other threads' allocations meanwhile are counted too.
pub fn heap_growth<T>(f: impl FnOnce() -> T) -> (T, Option<usize>) {
    let before = heap_in_use();
    let r = f();
    let grown = match (before, heap_in_use()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    (r, grown)
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if
/// known.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_growth_sees_what_is_kept_and_not_what_is_freed() {
        const N: usize = 64 << 20;
        // The counts are the whole process's, and other tests (worker
        // members with their own threads among them) allocate and free
        // meanwhile: a tolerance of an eighth of the vector, both ways,
        // and one of ten tries must be within it.
        const SLACK: usize = N / 8;
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(heap_growth(|| ()).1, None);
            return;
        }
        let ok = (0..10).any(|_| {
            let (kept, grown) = heap_growth(|| vec![7u8; N]);
            let (_, freed) = heap_growth(|| drop(vec![7u8; N]));
            drop(kept);
            let grown = grown.unwrap_or(0);
            (N - SLACK..N + SLACK).contains(&grown) && freed.is_some_and(|f| f < SLACK)
        });
        assert!(
            ok,
            "heap growth of a kept {N}-byte vector never measured within {SLACK} bytes"
        );
    }
}
