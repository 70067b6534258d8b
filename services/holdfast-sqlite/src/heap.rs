//! SQLite's own memory: [`keep_freed_memory`].
//!
//! The bundled SQLite allocates through the C library's `malloc`, not through the binary's
//! Rust global allocator. The writer wraps every job in a `SAVEPOINT`, so SQLite keeps the
//! original of every page the job rewrites in an in-memory statement journal (1 KiB
//! chunks), truncated when the job's savepoint is released. With glibc's default trim
//! threshold (128 KiB) freeing those chunks shrinks the writer thread's arena
//! (`madvise(MADV_DONTNEED)`), and the next job faults the same pages back in, zero-filled:
//! `bench checkout` found 10.6% of the writer thread in `madvise` and more in page faults.
//! Keeping up to [`TRIM_THRESHOLD`] bytes of freed memory at the top of each arena lets every
//! job reuse the last one's pages.

/// Freed bytes glibc keeps at the top of an arena before it gives any back to the kernel
/// (its default is 128 KiB); several batches' worth of journal.
pub const TRIM_THRESHOLD: libc::c_int = 32 << 20;

/// Raises glibc's trim threshold to [`TRIM_THRESHOLD`] for the whole process (which also
/// fixes its mmap threshold at the default 128 KiB). Call it once, early, from `main`. Off
/// glibc it does nothing.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of the allocator's tunables; glibc takes its arena locks
    // to do so, so calling it while other threads allocate is sound. Its answer (1 when
    // taken) is not needed: without it the process is only slower.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
