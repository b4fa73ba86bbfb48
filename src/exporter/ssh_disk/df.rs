//! The remote command and a pure parser of its output: POSIX `df` tables (`df -P -T` with
//! any block size, and the inode table of `df -P -T -i`) as GNU coreutils and BusyBox print
//! them, with spaces in mount points and BusyBox' wrapped long device names, followed by
//! `/proc/mounts` for the read-only flag and the mounts `df` could not read.

use std::collections::HashMap;

use regex::Regex;

/// The one command vitals runs on a host. It is fixed: no config value is ever interpolated
/// into it. Both tables include bind mounts (`-a`); each is followed by a marker line with
/// its exit status, so that partial output (exit 1 when one mount point cannot be read) is
/// kept and told apart from a missing `df`. `/proc/mounts` follows a third marker: it gives
/// the read-only flag (`node_filesystem_readonly`) and the mounts `df` could not read
/// (`node_filesystem_device_error`). Use it verbatim in a `command="..."` restriction.
pub const REMOTE_COMMAND: &str = "LC_ALL=C df -a -P -T -B1; echo \"vitals-df-exit $?\"; LC_ALL=C df -a -P -T -i; echo \"vitals-df-exit $?\"; echo vitals-mounts; cat /proc/mounts";

const EXIT_MARKER: &str = "vitals-df-exit ";
/// The line after which `/proc/mounts` follows.
const MOUNTS_MARKER: &str = "vitals-mounts";

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
    /// Whether it is mounted read-only, when `/proc/mounts` was read.
    pub readonly: Option<bool>,
}

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mounted device or source.
    pub device: String,
    /// The filesystem type.
    pub fstype: String,
    /// Where it is mounted (octal escapes such as `\040` decoded).
    pub mountpoint: String,
    /// Mounted with the `ro` option.
    pub readonly: bool,
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
    /// Mounts listed in `/proc/mounts` that `df` did not list: `df` could not read them
    /// (node_exporter's `device_error`). Empty when `/proc/mounts` was not in the output.
    pub unreadable: Vec<Mount>,
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

/// Decodes the octal escapes the kernel writes in `/proc/mounts` (`\040` for a space,
/// `\011` tab, `\012` newline, `\134` backslash); anything else is kept as it is.
fn unescape_mount_field(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes.get(i) == Some(&b'\\') && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.extend(bytes.get(i).copied());
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/mounts`: `device mountpoint fstype options dump pass`.
fn parse_mount(line: &str) -> Option<Mount> {
    let mut f = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let (device, mountpoint, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if !mountpoint.starts_with('/') {
        return None;
    }
    Some(Mount {
        device: unescape_mount_field(device),
        fstype: unescape_mount_field(fstype),
        mountpoint: unescape_mount_field(mountpoint),
        readonly: options.split(',').any(|o| o == "ro"),
    })
}

/// Splits the output into tables and the `/proc/mounts` section (`None` when absent); lines
/// that fit nowhere are counted.
fn tables(stdout: &str) -> (Vec<Table>, Option<Vec<Mount>>, usize) {
    let mut tables: Vec<Table> = Vec::new();
    let mut mounts: Option<Vec<Mount>> = None;
    let mut unparsed = 0;
    // The open table, if any: the index into `tables` whose rows the next lines extend.
    let mut open: Option<usize> = None;
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        // `lines` drops one `\r` before the newline; a terminal or a wrapper may leave more.
        // df itself never prints a control character in a mount point (GNU df shows it as
        // `?`), so trailing ones are line noise, not part of the name.
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(list) = mounts.as_mut() {
            match parse_mount(line) {
                Some(m) => list.push(m),
                None => unparsed += 1,
            }
            continue;
        }
        if line == MOUNTS_MARKER {
            mounts = Some(Vec::new());
            open = None;
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
    (tables, mounts, unparsed)
}

/// Parses the standard output of [`REMOTE_COMMAND`] (or of a single `df -P -T` run by a
/// forced command). A failing `df` that still listed filesystems is kept: `df` exits 1 when
/// one mount point cannot be read and lists the others.
pub fn parse(stdout: &str) -> Result<DfOutput, DfError> {
    let (tables, mounts, unparsed) = tables(stdout);
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
    // The visible mount at a mount point is the last one listed there.
    let readonly: HashMap<&str, bool> = mounts
        .iter()
        .flatten()
        .map(|m| (m.mountpoint.as_str(), m.readonly))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut filesystems = Vec::with_capacity(blocks.rows.len());
    let mut unreadable: Vec<Mount> = Vec::new();
    for r in &blocks.rows {
        let (Some(total), Some(used), Some(avail)) = (r.total, r.used, r.avail) else {
            // GNU `df -a` prints `-` in every column (type included) for a mount point it
            // may not stat (EACCES, ENOENT): node_exporter's device_error.
            let mount = mounts
                .iter()
                .flatten()
                .rev()
                .find(|m| m.mountpoint == r.mountpoint);
            unreadable.push(Mount {
                device: r.device.clone(),
                fstype: match (r.fstype.as_str(), mount) {
                    ("-", Some(m)) => m.fstype.clone(),
                    _ => r.fstype.clone(),
                },
                mountpoint: r.mountpoint.clone(),
                readonly: mount.is_some_and(|m| m.readonly),
            });
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
            readonly: readonly.get(r.mountpoint.as_str()).copied(),
        });
    }
    // A mount that df printed no row for, not even one with `-` figures, is one it could not
    // read (it reports the error on stderr and exits 1).
    let listed: std::collections::HashSet<&str> =
        blocks.rows.iter().map(|r| r.mountpoint.as_str()).collect();
    for m in mounts.into_iter().flatten() {
        let duplicate = unreadable.iter().any(|u| {
            (&u.device, &u.fstype, &u.mountpoint) == (&m.device, &m.fstype, &m.mountpoint)
        });
        if !listed.contains(m.mountpoint.as_str()) && !duplicate {
            unreadable.push(m);
        }
    }
    Ok(DfOutput {
        filesystems,
        unparsed_lines: unparsed,
        blocks_exit: blocks.exit,
        inodes_exit: inodes.and_then(|t| t.exit),
        unreadable,
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
        self.excludes_mount(&fs.mountpoint, &fs.fstype)
    }

    /// Whether a mount point of this type is left out.
    pub fn excludes_mount(&self, mountpoint: &str, fstype: &str) -> bool {
        self.mount_points.is_match(mountpoint) || self.fs_types.is_match(fstype)
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
                readonly: Some(false),
            }
        );
        let spaced = find(&out, "/srv/data with  spaces");
        assert_eq!(spaced.device, "/dev/vdb1");
        assert_eq!(spaced.avail_bytes, 52_426_309_632);
        assert_eq!(spaced.files_free, Some(26_214_300));
        assert_eq!(spaced.readonly, Some(true), "ro in /proc/mounts");
        let bind = find(&out, "/tmp/exp mnt point");
        assert_eq!(bind.free_bytes, root.free_bytes);
        assert_eq!(bind.readonly, Some(false));
        // The mount df printed with `-` placeholders (type from /proc/mounts), and the NFS
        // mount df did not list (listed twice in /proc/mounts): two unreadable mounts.
        assert_eq!(
            out.unreadable,
            [
                Mount {
                    device: "/dev/vdc1".into(),
                    fstype: "ext4".into(),
                    mountpoint: "/root/no access".into(),
                    readonly: true,
                },
                Mount {
                    device: "nas:/export".into(),
                    fstype: "nfs4".into(),
                    mountpoint: "/mnt/stale\tnfs".into(),
                    readonly: false,
                }
            ]
        );
        let proc = find(&out, "/proc");
        assert_eq!((proc.size_bytes, proc.files), (0, Some(0)));
    }

    #[test]
    fn carriage_returns_at_line_ends_are_not_part_of_the_mount_point() {
        // Found by the df fuzz target: `lines` strips one CR, the row kept the other.
        let text = "Filesystem Type 1-blocks Used Available Capacity Mounted on\r\n\
                    /dev/sdb1 ext4 65536 11 65525 1% /mnt/back\r\r\n\
                    /dev/sdc1 ext4 65536 11 65525 1% /mnt/a\rb\r\n";
        let out = parse(text).expect("parses");
        assert_eq!(out.unparsed_lines, 0);
        let names: Vec<&str> = out
            .filesystems
            .iter()
            .map(|f| f.mountpoint.as_str())
            .collect();
        assert_eq!(names, ["/mnt/back", "/mnt/a\rb"]);
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
        assert_eq!(out.filesystems[0].readonly, None);
        assert!(out.unreadable.is_empty());
    }

    #[test]
    fn proc_mounts_lines_escapes_and_garbage() {
        assert_eq!(
            parse_mount("/dev/sda2 /a\\040b\\134c ext4 ro,noatime 0 0"),
            Some(Mount {
                device: "/dev/sda2".into(),
                fstype: "ext4".into(),
                mountpoint: "/a b\\c".into(),
                readonly: true,
            })
        );
        assert_eq!(
            parse_mount("/dev/sda2 /x ext4 rw,errors=remount-ro 0 0").map(|m| m.readonly),
            Some(false)
        );
        assert_eq!(unescape_mount_field("/odd\\x\\0"), "/odd\\x\\0");
        assert_eq!(parse_mount("three short words"), None);
        assert_eq!(parse_mount("a relative path x"), None);
        // A host without /proc/mounts (cat's error goes to stderr): an empty section; a
        // stray line in it is counted.
        let text = "Filesystem Type 1-blocks Used Available Capacity Mounted on\n\
                    /dev/sda1 ext4 1000 400 500 45% /\n\
                    vitals-df-exit 0\n\
                    vitals-mounts\n\
                    oops\n";
        let out = parse(text).expect("parses");
        assert_eq!((out.filesystems.len(), out.unparsed_lines), (1, 1));
        assert!(out.unreadable.is_empty());
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
            readonly: None,
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
