//! The `vitals` binary: parse the command line and hand over to [`vitals::run`].

fn main() {
    tune_allocator();
    let parsed = vitals::cli::parse();
    match vitals::run::main(parsed) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vitals: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Keeps glibc's malloc from holding on to the large buffers a scrape has freed (measured
/// with scripts/bench/postgres.sh, 13,000 series: 8.7 MiB of anonymous memory after 50
/// scrapes without this, 2.9 MiB with it).
///
/// glibc raises its mmap threshold to the size of the largest block freed (up to 32 MiB), so
/// after the first scrape the exposition buffers (1.4 MB, twice for text clients) are carved
/// from the worker threads' arenas and stay resident between scrapes, in each worker's arena.
/// A fixed threshold keeps blocks of 256 KiB and more in their own mappings, returned to the
/// system when freed.
///
/// One arena for all threads: glibc gives each thread that meets a locked arena one of its
/// own (up to 8 per core), and each keeps the memory its thread freed. Measured with
/// scripts/bench/postgres.sh (100 databases, defaults): anonymous memory 3.1 to 2.3 MiB; scrape
/// latency showed no difference beyond the noise of the shared 2-core machine, including the
/// bench's vitals_1s run where background refreshes overlap the scrapes (docs/BENCHMARKS.md).
/// An earlier measurement had found scrapes ten times slower with one arena while a
/// background refresh allocated on another thread; that did not show again here, but watch
/// for it on machines with more cores.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets parameters of the allocator; it is called first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
