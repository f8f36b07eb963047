//! The process's heap: glibc gives every thread that allocates concurrently an arena of
//! its own, up to eight per core, and keeps what each one freed. The runtime's workers
//! and the blocking threads that SQLite reads and compression run on then hold tens of
//! megabytes that no cache bound covers (measured with bench/mix at 100,000 listings:
//! 40-80 MB of RSS). One arena per core (at least two) served a two-core machine as
//! fast, within the noise, and keeps threads from contending for one on larger ones.

/// Caps glibc's arenas unless the operator set `MALLOC_ARENA_MAX` (glibc reads it at
/// start). Call before any thread starts.
pub fn bound_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes a parameter of the allocator; no thread has
        // started allocating in another arena yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
