//! Pure parsers for /proc files, shared by vitals' self metrics and the process collector.
//!
//! They take file contents, not paths, so they are tested on fixtures; the readers at the
//! bottom are the only place that touches the live /proc.

use std::path::Path;

/// A /proc file did not have the expected shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {reason}")]
pub struct ParseError {
    /// Which file kind (`stat`, `limits`, ...).
    pub file: &'static str,
    /// What was wrong.
    pub reason: String,
}

fn perr(file: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError {
        file,
        reason: reason.into(),
    }
}

/// The fields of /proc/PID/stat that vitals uses. Times are in clock ticks, sizes in pages
/// (rss) or bytes (vsize), as the kernel writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Process id.
    pub pid: u32,
    /// Command name, which may contain spaces and parentheses.
    pub comm: String,
    /// State letter (R, S, D, Z, T, t, X, I, ...).
    pub state: char,
    /// Parent process id.
    pub ppid: u32,
    /// Minor page faults.
    pub minflt: u64,
    /// Major page faults.
    pub majflt: u64,
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// Number of threads.
    pub num_threads: u64,
    /// Start time in clock ticks after boot.
    pub starttime: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat. The command name is taken up to the *last* `)`, since it may
/// itself contain `)` and spaces.
pub fn parse_stat(content: &str) -> Result<Stat, ParseError> {
    const F: &str = "stat";
    let open = content
        .find('(')
        .ok_or_else(|| perr(F, "no '(' before comm"))?;
    let close = content
        .rfind(')')
        .ok_or_else(|| perr(F, "no ')' after comm"))?;
    if close < open {
        return Err(perr(F, "')' before '('"));
    }
    let pid = content[..open]
        .trim()
        .parse::<u32>()
        .map_err(|_| perr(F, "bad pid"))?;
    let comm = content[open + 1..close].to_string();
    let rest: Vec<&str> = content[close + 1..].split_ascii_whitespace().collect();
    // rest[0] is field 3 (state) in proc(5) numbering, so field N is rest[N - 3].
    let field = |n: usize| -> Result<u64, ParseError> {
        rest.get(n - 3)
            .ok_or_else(|| perr(F, format!("missing field {n}")))?
            .parse::<u64>()
            .map_err(|_| perr(F, format!("field {n} is not a number")))
    };
    let state = rest
        .first()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| perr(F, "missing state"))?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: u32::try_from(field(4)?).map_err(|_| perr(F, "bad ppid"))?,
        minflt: field(10)?,
        majflt: field(12)?,
        utime: field(14)?,
        stime: field(15)?,
        num_threads: field(20)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// Reads the boot time (`btime`, seconds since the epoch) from /proc/stat contents.
pub fn parse_boot_time(proc_stat: &str) -> Result<u64, ParseError> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| perr("/proc/stat", "no btime line"))?
        .trim()
        .parse()
        .map_err(|_| perr("/proc/stat", "btime is not a number"))
}

/// Reads the soft limit on open files from /proc/PID/limits contents; `None` means
/// unlimited.
pub fn parse_max_open_files(limits: &str) -> Result<Option<u64>, ParseError> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| perr("limits", "no 'Max open files' line"))?;
    let soft = line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()
        .ok_or_else(|| perr("limits", "no soft limit"))?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse()
        .map(Some)
        .map_err(|_| perr("limits", "soft limit is not a number"))
}

/// The fields of /proc/PID/status that vitals uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Real user id.
    pub uid: Option<u32>,
    /// Swapped-out memory in bytes (`VmSwap`).
    pub swapped_bytes: u64,
    /// Voluntary context switches.
    pub voluntary_ctxt_switches: u64,
    /// Involuntary context switches.
    pub nonvoluntary_ctxt_switches: u64,
}

/// Parses /proc/PID/status. Missing lines (kernel threads have no `VmSwap`) read as 0.
pub fn parse_status(content: &str) -> Status {
    let mut s = Status::default();
    let num = |v: &str| -> u64 {
        v.split_ascii_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in content.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Uid" => {
                s.uid = value
                    .split_ascii_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
            }
            "VmSwap" => s.swapped_bytes = num(value).saturating_mul(1024),
            "voluntary_ctxt_switches" => s.voluntary_ctxt_switches = num(value),
            "nonvoluntary_ctxt_switches" => s.nonvoluntary_ctxt_switches = num(value),
            _ => {}
        }
    }
    s
}

/// Storage I/O of a process from /proc/PID/io.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Io {
    /// Bytes read from storage.
    pub read_bytes: u64,
    /// Bytes written to storage.
    pub write_bytes: u64,
}

/// Parses /proc/PID/io.
pub fn parse_io(content: &str) -> Result<Io, ParseError> {
    let mut io = Io::default();
    // Bit 0: read_bytes seen, bit 1: write_bytes seen (one of them twice is not both).
    let mut seen = 0u8;
    for line in content.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "read_bytes" => {
                seen |= 1;
                &mut io.read_bytes
            }
            "write_bytes" => {
                seen |= 2;
                &mut io.write_bytes
            }
            _ => continue,
        };
        *field = value
            .trim()
            .parse()
            .map_err(|_| perr("io", format!("{key} is not a number")))?;
    }
    if seen != 3 {
        return Err(perr("io", "read_bytes or write_bytes missing"));
    }
    Ok(io)
}

/// Splits /proc/PID/cmdline (NUL-separated) into a space-joined command line.
pub fn parse_cmdline(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

/// System constants needed to turn /proc figures into base units.
#[derive(Debug, Clone, Copy)]
pub struct SystemInfo {
    /// Clock ticks per second (`CLK_TCK`).
    pub clk_tck: u64,
    /// Page size in bytes.
    pub page_size: u64,
    /// Boot time, seconds since the epoch.
    pub boot_time: u64,
}

impl SystemInfo {
    /// Reads the constants of the running system under `proc_root` (normally `/proc`).
    pub fn read(proc_root: &Path) -> std::io::Result<Self> {
        let stat = std::fs::read_to_string(proc_root.join("stat"))?;
        let boot_time = parse_boot_time(&stat)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(Self {
            clk_tck: rustix::param::clock_ticks_per_second().max(1),
            page_size: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
            boot_time,
        })
    }
}

/// Counts the entries of a /proc/PID/fd directory.
pub fn count_fds(fd_dir: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(fd_dir)? {
        entry?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1500 0 3 0 250 75 0 0 20 0 4 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = parse_stat(STAT).expect("parses");
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "my (odd) proc");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.minflt, 1500);
        assert_eq!(s.majflt, 3);
        assert_eq!(s.utime, 250);
        assert_eq!(s.stime, 75);
        assert_eq!(s.num_threads, 4);
        assert_eq!(s.starttime, 123456);
        assert_eq!(s.vsize, 104857600);
        assert_eq!(s.rss_pages, 2560);
    }

    #[test]
    fn truncated_stat_is_an_error() {
        assert!(parse_stat("12 (x) S 1 2").is_err());
        assert!(parse_stat("garbage").is_err());
        assert!(parse_stat("").is_err());
    }

    #[test]
    fn boot_time_and_limits() {
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Ok(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Ok(Some(1024)));
        let unl = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unl), Ok(None));
    }

    #[test]
    fn status_io_cmdline() {
        let st = parse_status(
            "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nVmSwap:\t      12 kB\nvoluntary_ctxt_switches:\t5\nnonvoluntary_ctxt_switches:\t7\n",
        );
        assert_eq!(st.uid, Some(1000));
        assert_eq!(st.swapped_bytes, 12 * 1024);
        assert_eq!(
            (st.voluntary_ctxt_switches, st.nonvoluntary_ctxt_switches),
            (5, 7)
        );
        assert_eq!(parse_status("Name: kthread\n").swapped_bytes, 0);
        let io = parse_io(
            "rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n",
        );
        assert_eq!(
            io,
            Ok(Io {
                read_bytes: 4096,
                write_bytes: 8192
            })
        );
        assert!(parse_io("rchar: 1\n").is_err());
        assert_eq!(
            parse_cmdline(b"postgres\0-D\0/var/lib/pg\0"),
            "postgres -D /var/lib/pg"
        );
        assert_eq!(parse_cmdline(b""), "");
    }

    #[test]
    fn live_self_stat_parses() {
        let text = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
        let s = parse_stat(&text).expect("live stat parses");
        assert_eq!(s.pid, std::process::id());
        assert!(s.num_threads >= 1);
    }

    /// Fuzzing regression: a huge `VmSwap` overflowed the kB-to-bytes multiplication.
    #[test]
    fn huge_swap_saturates() {
        let s = parse_status("VmSwap:\t18446744073709551615 kB\n");
        assert_eq!(s.swapped_bytes, u64::MAX);
    }

    /// Fuzzing regression (procfs): `read_bytes` twice and no `write_bytes` was accepted as
    /// a complete io file, with write_bytes 0.
    #[test]
    fn io_needs_both_fields_not_one_twice() {
        assert!(parse_io("read_bytes: 1\nread_bytes: 2\n").is_err());
        assert!(parse_io("write_bytes: 1\nwrite_bytes: 2\n").is_err());
        assert!(parse_io("read_bytes: 1\nwrite_bytes: 2\n").is_ok());
    }
}
