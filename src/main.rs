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
/// system when freed. (Limiting the arenas to one would save another 0.6 MiB, but measured
/// scrapes ten times slower while a background refresh allocated on another thread.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets a parameter of the allocator; it is called first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
