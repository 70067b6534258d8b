//! SQLite's own memory: [`keep_freed_memory`].
//!
//! The bundled SQLite allocates through the C library's `malloc`, not through the binary's
//! Rust global allocator. The writer wraps every job in a `SAVEPOINT`, so a batch's
//! statement journal holds the original of every page a job rewrites after an earlier job of
//! the batch; the journal is an in-memory file of 1 KiB chunks, freed when the batch ends.
//! With glibc's default trim threshold (128 KiB) freeing those chunks shrinks the writer
//! thread's arena (`madvise(MADV_DONTNEED)`), and the next batch faults the same pages back
//! in, zero-filled: `bench checkout` found 10.6% of the writer thread in `madvise` and more
//! in page faults. Keeping up to [`TRIM_THRESHOLD`] of freed memory at the top of each
//! arena lets every batch reuse the last one's pages.

/// Freed memory glibc keeps at the top of an arena before it gives any back to the kernel
/// (its default is 128 KiB). A batch's journal is at most `max_batch` jobs' pages; this
/// keeps several such batches' worth.
pub const TRIM_THRESHOLD: usize = 32 << 20;

/// Raises glibc's trim threshold to [`TRIM_THRESHOLD`] for the whole process (which also
/// fixes its mmap threshold at the default 128 KiB). Call it once, early, from `main`.
/// Returns whether the C library took it (always `false` off glibc, where it does nothing).
#[allow(unsafe_code)]
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(threshold) = libc::c_int::try_from(TRIM_THRESHOLD) else {
            return false;
        };
        // SAFETY: mallopt only sets one of the allocator's tunables; glibc takes its arena
        // locks to do so, so calling it while other threads allocate is sound.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, threshold) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
