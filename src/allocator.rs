//! The process's heap. The binary allocates through mimalloc (its `#[global_allocator]`):
//! on bench/mix's misses it took 11 % less of the server's CPU than glibc's malloc,
//! whose free lists were a sixth of a miss's profile, and the embedded mode, whose
//! SQLite reads run on blocking threads, served more than twice the reads at 10 and 50
//! writes/s (bench/mix, 100,000 listings, this machine: 4,945 and 2,247 reads/s with
//! glibc, 11,744 and 5,105 with mimalloc).
//!
//! Its peak resident memory in that run: 125 MB with glibc; 160 MB with mimalloc as it
//! comes, since it backs its arenas with transparent huge pages (where the kernel
//! offers them on request, as here) and keeps freed memory for a second; 129 MB built
//! without huge pages (`no_thp`) and with freed memory returned at once (below). C code
//! (SQLite) still allocates through glibc, whose arenas are bounded: glibc gives every
//! thread that allocates concurrently an arena of its own, up to eight per core, and
//! keeps what each one freed.

/// mimalloc 3's `mi_option_e` (include/mimalloc.h of the pinned libmimalloc-sys;
/// the crate's own constants are mimalloc 2's).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the heap's options unless the operator set them in the environment
/// (`MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_PURGE_DELAY`, `MALLOC_ARENA_MAX`). Call
/// before any thread starts.
pub fn configure() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
        // SAFETY: sets one of mimalloc's options, which it reads when it next needs it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) }
    }
    if unset("MIMALLOC_PURGE_DELAY") {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if unset("MALLOC_ARENA_MAX") {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes a parameter of the allocator; no thread has
        // started allocating in another arena yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
