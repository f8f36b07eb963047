//! The process's heap: glibc gives every thread that allocates concurrently an arena of
//! its own, up to eight per core, and keeps what each one freed. The runtime's workers
//! and the blocking threads that SQLite reads and compression run on then hold tens of
//! megabytes that no cache bound covers (measured with bench/mix at 100,000 listings:
//! 40-80 MB of RSS). Two arenas serve two-core machines as fast, within the noise.

/// Caps glibc's arenas unless the operator set `MALLOC_ARENA_MAX` (glibc reads it at
/// start). Call before any thread starts.
pub fn bound_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        const ARENAS: libc::c_int = 2;
        // SAFETY: mallopt only changes a parameter of the allocator; no thread has
        // started allocating in another arena yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
