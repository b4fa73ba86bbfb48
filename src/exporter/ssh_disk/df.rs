//! The remote command and a pure parser of its output: POSIX `df` tables (`df -P -T` with
//! any block size, and the inode table of `df -P -T -i`) as GNU coreutils and BusyBox print
//! them, with spaces in mount points and BusyBox' wrapped long device names.

use std::collections::HashMap;

use regex::Regex;

/// The one command vitals runs on a host. It is fixed: no config value is ever interpolated
/// into it. Both tables include bind mounts (`-a`); each is followed by a marker line with
/// its exit status, so that partial output (exit 1 when one mount point cannot be read) is
/// kept and told apart from a missing `df`. Use it verbatim in a `command="..."` restriction.
pub const REMOTE_COMMAND: &str = "LC_ALL=C df -a -P -T -B1; echo \"vitals-df-exit $?\"; LC_ALL=C df -a -P -T -i; echo \"vitals-df-exit $?\"";

const EXIT_MARKER: &str = "vitals-df-exit ";

/// One filesystem as reported by `df`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// The device (`Filesystem` column).
    pub device: String,
    /// The filesystem type.
    pub fstype: String,
    /// Where it is mounted, verbatim (spaces included).
    pub mountpoint: String,
    /// Total size in bytes.
    pub size_bytes: u64,
    /// Free bytes, including those reserved for root (size less used).
    pub free_bytes: u64,
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
    /// Inodes in total, when the inode table listed this filesystem.
    pub files: Option<u64>,
    /// Free inodes, when the inode table listed this filesystem.
    pub files_free: Option<u64>,
}

/// The parsed output of [`REMOTE_COMMAND`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DfOutput {
    /// Filesystems in the order `df` listed them, without duplicate label sets.
    pub filesystems: Vec<Filesystem>,
    /// Lines that were neither a header, a marker nor a filesystem row.
    pub unparsed_lines: usize,
    /// Exit status of the block table's `df`, when its marker was seen.
    pub blocks_exit: Option<i32>,
    /// Exit status of the inode table's `df`, when its marker was seen.
    pub inodes_exit: Option<i32>,
}

/// Why the output could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DfError {
    /// `df` failed and printed no filesystem (not installed, unknown option, ...).
    #[error("df exited with status {0} and listed no filesystem")]
    Failed(i32),
    /// The output holds no block table at all.
    #[error("no df table in the output ({unparsed} unparsed lines)")]
    NoTable {
        /// Lines that could not be read.
        unparsed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    /// Block counts, each worth this many bytes.
    Blocks(u64),
    Inodes,
}

/// Device, type and mount point: what identifies a row, as node_exporter's label set.
type MountKey<'a> = (&'a str, &'a str, &'a str);

#[derive(Debug)]
struct Row {
    device: String,
    fstype: String,
    mountpoint: String,
    total: Option<u64>,
    used: Option<u64>,
    avail: Option<u64>,
}

#[derive(Debug)]
struct Table {
    kind: TableKind,
    rows: Vec<Row>,
    exit: Option<i32>,
}

fn row_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        // Device may hold spaces (it is matched lazily); the mount point starts at the first
        // `/` after the capacity column and runs to the end of the line.
        Regex::new(r"^(\S.*?)\s+(\S+)\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)\s+(\d+%|-)\s+(/.*)$")
            .expect("a constant pattern, compiled by every test")
    })
}

/// The kind of table a header line starts, or `None` when the line is not a header.
fn header_kind(line: &str) -> Option<TableKind> {
    let mut words = line.split_whitespace();
    if words.next() != Some("Filesystem") {
        return None;
    }
    for w in words {
        if w.eq_ignore_ascii_case("Inodes") {
            return Some(TableKind::Inodes);
        }
        if let Some(unit) = w.strip_suffix("-blocks") {
            return block_unit(unit).map(TableKind::Blocks);
        }
    }
    None
}

/// Bytes per block for a header unit such as `1`, `512`, `1024`, `1K`, `1M`.
fn block_unit(unit: &str) -> Option<u64> {
    let digits_end = unit
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unit.len());
    let (number, suffix) = unit.split_at(digits_end);
    let number: u64 = if number.is_empty() {
        1
    } else {
        number.parse().ok()?
    };
    let scale: u64 = match suffix {
        "" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "kB" => 1000,
        "MB" => 1_000_000,
        _ => return None,
    };
    number.checked_mul(scale).filter(|n| *n > 0)
}

fn number(field: &str) -> Option<u64> {
    field.parse().ok()
}

fn parse_row(line: &str) -> Option<Row> {
    let c = row_regex().captures(line)?;
    let text = |i: usize| c.get(i).map_or("", |m| m.as_str());
    Some(Row {
        device: text(1).to_string(),
        fstype: text(2).to_string(),
        mountpoint: text(7).to_string(),
        total: number(text(3)),
        used: number(text(4)),
        avail: number(text(5)),
    })
}

/// Splits the output into tables; lines that fit nowhere are counted.
fn tables(stdout: &str) -> (Vec<Table>, usize) {
    let mut tables: Vec<Table> = Vec::new();
    let mut unparsed = 0;
    // The open table, if any: the index into `tables` whose rows the next lines extend.
    let mut open: Option<usize> = None;
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(code) = line.strip_prefix(EXIT_MARKER) {
            let code = code.trim().parse::<i32>().ok();
            match open.take().and_then(|i| tables.get_mut(i)) {
                Some(t) => t.exit = code,
                // A df that printed no header (not installed, bad option): an empty table
                // of unknown kind keeps the exit status in its place.
                None => tables.push(Table {
                    kind: TableKind::Blocks(1),
                    rows: Vec::new(),
                    exit: code,
                }),
            }
            continue;
        }
        if let Some(kind) = header_kind(line) {
            tables.push(Table {
                kind,
                rows: Vec::new(),
                exit: None,
            });
            open = Some(tables.len() - 1);
            continue;
        }
        let Some(table) = open.and_then(|i| tables.get_mut(i)) else {
            unparsed += 1;
            continue;
        };
        let row = parse_row(line).or_else(|| {
            // BusyBox (and df without -P) put a long device name on a line of its own and
            // the rest, indented, on the next one.
            let wrapped = !line.contains(char::is_whitespace)
                && lines.peek().is_some_and(|n| n.starts_with([' ', '\t']));
            if wrapped {
                let next = lines.next().unwrap_or_default();
                let joined = format!("{line} {}", next.trim_start());
                let row = parse_row(&joined);
                if row.is_none() {
                    unparsed += 1; // the second half of the pair
                }
                row
            } else {
                None
            }
        });
        match row {
            Some(r) => table.rows.push(r),
            None => unparsed += 1,
        }
    }
    (tables, unparsed)
}

/// Parses the standard output of [`REMOTE_COMMAND`] (or of a single `df -P -T` run by a
/// forced command). A failing `df` that still listed filesystems is kept: `df` exits 1 when
/// one mount point cannot be read and lists the others.
pub fn parse(stdout: &str) -> Result<DfOutput, DfError> {
    let (tables, unparsed) = tables(stdout);
    let blocks = tables
        .iter()
        .find(|t| matches!(t.kind, TableKind::Blocks(_)));
    let inodes = tables.iter().find(|t| t.kind == TableKind::Inodes);
    let Some(blocks) = blocks else {
        return Err(DfError::NoTable { unparsed });
    };
    let TableKind::Blocks(unit) = blocks.kind else {
        return Err(DfError::NoTable { unparsed });
    };
    if blocks.rows.is_empty() {
        return match blocks.exit {
            Some(code) if code != 0 => Err(DfError::Failed(code)),
            _ => Err(DfError::NoTable { unparsed }),
        };
    }
    let mut inode_rows: HashMap<MountKey<'_>, (Option<u64>, Option<u64>)> = HashMap::new();
    if let Some(t) = inodes {
        for r in &t.rows {
            inode_rows
                .entry((&r.device, &r.fstype, &r.mountpoint))
                .or_insert((r.total, r.avail));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut filesystems = Vec::with_capacity(blocks.rows.len());
    let mut unparsed = unparsed;
    for r in &blocks.rows {
        let (Some(total), Some(used), Some(avail)) = (r.total, r.used, r.avail) else {
            unparsed += 1;
            continue;
        };
        // The same mount listed twice (stacked mounts): keep the first, as node_exporter
        // keeps one series per label set.
        if !seen.insert((&r.device, &r.fstype, &r.mountpoint)) {
            continue;
        }
        let bytes = |blocks: u64| blocks.saturating_mul(unit);
        let (files, files_free) = inode_rows
            .get(&(r.device.as_str(), r.fstype.as_str(), r.mountpoint.as_str()))
            .copied()
            .unwrap_or((None, None));
        filesystems.push(Filesystem {
            device: r.device.clone(),
            fstype: r.fstype.clone(),
            mountpoint: r.mountpoint.clone(),
            size_bytes: bytes(total),
            free_bytes: bytes(total.saturating_sub(used)),
            avail_bytes: bytes(avail),
            files,
            files_free,
        });
    }
    Ok(DfOutput {
        filesystems,
        unparsed_lines: unparsed,
        blocks_exit: blocks.exit,
        inodes_exit: inodes.and_then(|t| t.exit),
    })
}

/// Which filesystems are left out, by mount point and type (node_exporter's flags).
#[derive(Debug, Clone)]
pub struct Exclude {
    mount_points: Regex,
    fs_types: Regex,
}

impl Exclude {
    /// Compiles both patterns; the error names the one that failed.
    pub fn new(mount_points: &str, fs_types: &str) -> Result<Self, String> {
        Ok(Self {
            mount_points: Regex::new(mount_points)
                .map_err(|e| format!("mount_points_exclude: {e}"))?,
            fs_types: Regex::new(fs_types).map_err(|e| format!("fs_types_exclude: {e}"))?,
        })
    }

    /// Whether a filesystem is left out.
    pub fn excludes(&self, fs: &Filesystem) -> bool {
        self.mount_points.is_match(&fs.mountpoint) || self.fs_types.is_match(&fs.fstype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_FS_TYPES_EXCLUDE, DEFAULT_MOUNT_POINTS_EXCLUDE};

    fn find<'a>(out: &'a DfOutput, mountpoint: &str) -> &'a Filesystem {
        out.filesystems
            .iter()
            .find(|f| f.mountpoint == mountpoint)
            .unwrap_or_else(|| panic!("{mountpoint} missing from {out:#?}"))
    }

    #[test]
    fn gnu_blocks_and_inodes_with_spaces_and_duplicates() {
        let out = parse(include_str!("fixtures/gnu.txt")).expect("parses");
        assert_eq!(out.unparsed_lines, 0);
        assert_eq!((out.blocks_exit, out.inodes_exit), (Some(0), Some(0)));
        // /dev/shm is listed twice with the same labels: one entry.
        assert_eq!(
            out.filesystems
                .iter()
                .filter(|f| f.mountpoint == "/dev/shm")
                .count(),
            1
        );
        assert_eq!(out.filesystems.len(), 9);
        let root = find(&out, "/");
        assert_eq!(
            root,
            &Filesystem {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                mountpoint: "/".into(),
                size_bytes: 270_553_174_016,
                free_bytes: 270_553_174_016 - 20_347_891_712,
                avail_bytes: 77_224_857_600,
                files: Some(16_777_216),
                files_free: Some(16_351_942),
            }
        );
        let spaced = find(&out, "/srv/data with  spaces");
        assert_eq!(spaced.device, "/dev/vdb1");
        assert_eq!(spaced.avail_bytes, 52_426_309_632);
        assert_eq!(spaced.files_free, Some(26_214_300));
        let bind = find(&out, "/tmp/exp mnt point");
        assert_eq!(bind.free_bytes, root.free_bytes);
        let proc = find(&out, "/proc");
        assert_eq!((proc.size_bytes, proc.files), (0, Some(0)));
    }

    #[test]
    fn partial_output_on_exit_1_is_kept_and_garbage_counted() {
        let out = parse(include_str!("fixtures/gnu_partial.txt")).expect("parses");
        assert_eq!(out.blocks_exit, Some(1));
        assert_eq!(out.unparsed_lines, 1);
        assert_eq!(out.filesystems.len(), 2);
        let backup = find(&out, "/mnt/backup");
        assert_eq!(backup.size_bytes, 1_073_741_824);
        assert_eq!(backup.free_bytes, 1_073_741_824);
        assert_eq!(backup.files, Some(65_536));
    }

    #[test]
    fn busybox_kilobyte_blocks_and_wrapped_device_names() {
        let out = parse(include_str!("fixtures/busybox.txt")).expect("parses");
        assert_eq!(out.unparsed_lines, 0);
        assert_eq!(out.filesystems.len(), 4);
        let data = find(&out, "/data");
        assert_eq!(data.device, "/dev/mapper/very-long-volume-group-name-data");
        assert_eq!(data.size_bytes, 20_511_312 * 1024);
        assert_eq!(data.free_bytes, (20_511_312 - 1_048_576) * 1024);
        assert_eq!(data.avail_bytes, 18_397_880 * 1024);
        assert_eq!(
            (data.files, data.files_free),
            (Some(1_310_720), Some(1_310_708))
        );
        assert_eq!(find(&out, "/").size_bytes, 7_941_576 * 1024);
    }

    #[test]
    fn a_failed_block_table_is_an_error_even_with_inodes() {
        let err =
            parse(include_str!("fixtures/busybox_no_blocksize.txt")).expect_err("no block table");
        assert_eq!(err, DfError::Failed(1));
        assert_eq!(
            parse("vitals-df-exit 127\nvitals-df-exit 127\n"),
            Err(DfError::Failed(127))
        );
        assert_eq!(
            parse("hello\nworld\n"),
            Err(DfError::NoTable { unparsed: 2 })
        );
        assert_eq!(parse(""), Err(DfError::NoTable { unparsed: 0 }));
    }

    #[test]
    fn a_plain_df_from_a_forced_command_is_enough() {
        let text = "Filesystem     Type 1024-blocks  Used Available Capacity Mounted on\n\
                    /dev/sda1      ext4        1000   400       500      45% /\n";
        let out = parse(text).expect("parses");
        assert_eq!(out.blocks_exit, None);
        assert_eq!(out.filesystems.len(), 1);
        assert_eq!(out.filesystems[0].free_bytes, 600 * 1024);
        assert_eq!(out.filesystems[0].files, None);
    }

    #[test]
    fn block_units() {
        assert_eq!(block_unit("1"), Some(1));
        assert_eq!(block_unit("512"), Some(512));
        assert_eq!(block_unit("1024"), Some(1024));
        assert_eq!(block_unit("1K"), Some(1024));
        assert_eq!(block_unit("4M"), Some(4 << 20));
        assert_eq!(block_unit("0"), None);
        assert_eq!(block_unit("1X"), None);
    }

    #[test]
    fn node_exporter_default_excludes() {
        let ex = Exclude::new(DEFAULT_MOUNT_POINTS_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE)
            .expect("defaults compile");
        let out = parse(include_str!("fixtures/gnu.txt")).expect("parses");
        let kept: Vec<&str> = out
            .filesystems
            .iter()
            .filter(|f| !ex.excludes(f))
            .map(|f| f.mountpoint.as_str())
            .collect();
        assert_eq!(kept, ["/", "/srv/data with  spaces", "/tmp/exp mnt point"]);
        let fs = |mountpoint: &str, fstype: &str| Filesystem {
            device: "d".into(),
            fstype: fstype.into(),
            mountpoint: mountpoint.into(),
            size_bytes: 0,
            free_bytes: 0,
            avail_bytes: 0,
            files: None,
            files_free: None,
        };
        assert!(ex.excludes(&fs("/run/credentials/x.service", "tmpfs")));
        assert!(!ex.excludes(&fs("/run", "tmpfs")));
        assert!(!ex.excludes(&fs("/devices", "ext4")));
        assert!(ex.excludes(&fs("/var/lib/containers/storage/overlay", "xfs")));
        assert!(ex.excludes(&fs("/x", "cgroup")));
        assert!(!ex.excludes(&fs("/x", "cgroupfs")));
        assert!(Exclude::new("(", "x").is_err());
    }
}
