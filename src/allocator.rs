//! The process's heap. The binary allocates through mimalloc (its `#[global_allocator]`):
//! on bench/mix's misses it took 11 % less of the server's CPU than glibc's malloc,
//! whose free lists were a sixth of a miss's profile, and the embedded mode, whose
//! SQLite reads run on blocking threads, served more than twice the reads at 10 and 50
//! writes/s (bench/mix, 100,000 listings, this machine: 4,945 and 2,247 reads/s with
//! glibc, 11,744 and 5,105 with mimalloc).
//!
//! Its peak resident memory in that run: 125 MB with glibc; 160 MB with mimalloc as it
//! comes, since it backs its arenas with transparent huge pages (where the kernel
//! offers them on request, as here); 129 MB built without them (`no_thp`), with its
//! options as they come (setting it to return freed memory at once and to commit its
//! arenas lazily made no difference then: 129.0 against 130.3 MB). C code (SQLite)
//! still allocates through glibc, whose arenas are bounded: glibc gives every thread
//! that allocates concurrently an arena of its own, up to eight per core, and keeps
//! what each one freed.

/// Bounds glibc's arenas, for SQLite's allocations, unless the operator set
/// `MALLOC_ARENA_MAX`. Call before any thread starts.
pub fn bound_glibc_arenas() {
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
