//! Following log files across rotation without losing lines.
//!
//! Files are identified by (device, inode), not by path:
//! - rename rotation: when the path points to a new inode, the old file is kept open and
//!   drained for a grace period (writers may still append before they reopen), then closed;
//! - copytruncate: a size below the read offset, or a changed fingerprint of the file's head,
//!   means the file was truncated and is read again from the start;
//! - globs: a rotated sibling that the glob also matches is recognised by its inode and not
//!   read again.
//!
//! Read positions (device, inode, offset, head fingerprint) are handed out by [`Tailer::positions`]
//! so the caller can persist them together with its counters; on restart a file rotated while
//! vitals was down is found among its siblings by inode and drained from the saved offset.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes of a file's head covered by the fingerprint.
const HEAD_BYTES: u64 = 256;
/// Read size.
const CHUNK: usize = 64 * 1024;

/// A persisted read position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Path the file had when last seen.
    pub path: PathBuf,
    /// Device id.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Bytes consumed (up to the last complete line).
    pub offset: u64,
    /// Fingerprint of the first `head_len` bytes.
    pub head: u64,
    /// How many bytes the fingerprint covers.
    pub head_len: u64,
}

pub use crate::config::StartAt;

/// Everything a tailer needs to resume after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Saved {
    /// Open files and how far they were read.
    pub positions: Vec<Position>,
    /// Head fingerprints (and lengths) of content already read, before truncations too.
    pub seen_heads: Vec<(u64, u64)>,
    /// When this was saved (seconds since the epoch): files rotated in since are read.
    pub saved_at: Option<f64>,
}

/// What happened to the files in one poll, besides lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Rename rotations seen.
    pub renamed: u64,
    /// Truncations (copytruncate) seen.
    pub truncated: u64,
    /// Files that could not be opened or read (permission), by path.
    pub errors: Vec<String>,
}

/// A line as read: bytes without the line ending, and whether it was cut at the limit.
pub struct Line<'a> {
    /// Line content (a trailing `\r` removed).
    pub bytes: &'a [u8],
    /// The line was longer than the limit and was truncated.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy)]
struct Retired {
    offset: u64,
    head: u64,
    head_len: u64,
}

impl Retired {
    fn of(f: &Followed) -> Self {
        Self {
            offset: f.offset,
            head: f.head,
            head_len: f.head_len,
        }
    }

    /// Whether `path` still holds the file this was (same head bytes).
    fn matches(&self, path: &Path) -> bool {
        File::open(path)
            .and_then(|f| fingerprint(&f, self.head_len))
            .is_ok_and(|h| h == self.head)
    }
}

struct Followed {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    read_to: u64,
    head: u64,
    head_len: u64,
    /// The first `head_len` bytes as read, so that the head grows with what was actually
    /// consumed (a file opened while empty and then truncated and refilled before the next
    /// poll would otherwise get the new content's head, and the truncation would go unseen).
    head_bytes: Vec<u8>,
    partial: Vec<u8>,
    skipping: bool,
    drain_until: Option<Instant>,
}

fn fingerprint(file: &File, len: u64) -> std::io::Result<u64> {
    Ok(digest(&head_of(file, len)?))
}

fn head_of(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

fn digest(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(b)
}

impl Followed {
    fn open(path: &Path, offset: u64) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let head_len = meta.len().min(HEAD_BYTES);
        let head_bytes = head_of(&file, head_len)?;
        let head = digest(&head_bytes);
        let offset = offset.min(meta.len());
        Ok(Self {
            path: path.to_path_buf(),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            read_to: offset,
            head,
            head_len,
            head_bytes,
            partial: Vec::new(),
            skipping: false,
            drain_until: None,
        })
    }

    fn position(&self) -> Position {
        Position {
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
            offset: self.offset,
            head: self.head,
            head_len: self.head_len,
        }
    }

    /// Detects truncation of the same inode; returns true when the file was truncated.
    fn check_truncated(&mut self, size: u64) -> std::io::Result<bool> {
        let shrunk = size < self.read_to;
        let changed_head = !shrunk
            && self.head_len > 0
            && size >= self.head_len
            && fingerprint(&self.file, self.head_len)? != self.head;
        if shrunk || changed_head {
            self.offset = 0;
            self.read_to = 0;
            self.partial.clear();
            self.skipping = false;
            self.set_head(head_of(&self.file, size.min(HEAD_BYTES))?);
            return Ok(true);
        }
        if self.head_len < HEAD_BYTES && size > self.head_len && self.read_to != self.head_len {
            // Reads do not continue the head (resumed inside it): take it from the file.
            self.set_head(head_of(&self.file, size.min(HEAD_BYTES))?);
        }
        Ok(false)
    }

    fn set_head(&mut self, bytes: Vec<u8>) {
        self.head_len = bytes.len() as u64;
        self.head = digest(&bytes);
        self.head_bytes = bytes;
    }

    /// Reads from the last position to EOF and emits complete lines. With `eof_flush`, an
    /// unterminated last line is emitted too (the file will not grow any more).
    fn read(
        &mut self,
        max_line: usize,
        eof_flush: bool,
        sink: &mut dyn FnMut(Line<'_>),
    ) -> std::io::Result<bool> {
        let mut buf = vec![0u8; CHUNK];
        let mut any = false;
        loop {
            let n = self.file.read_at(&mut buf, self.read_to)?;
            if n == 0 {
                break;
            }
            any = true;
            // Grow the head from the bytes read, while they continue it.
            let have = self.head_bytes.len();
            if (have as u64) < HEAD_BYTES && self.read_to == have as u64 {
                let take = n.min(HEAD_BYTES as usize - have);
                let mut bytes = std::mem::take(&mut self.head_bytes);
                bytes.extend_from_slice(&buf[..take]);
                self.set_head(bytes);
            }
            self.read_to += n as u64;
            let mut start = 0;
            let chunk = &buf[..n];
            while let Some(i) = chunk[start..].iter().position(|b| *b == b'\n') {
                let piece = &chunk[start..start + i];
                start += i + 1;
                if self.skipping {
                    self.skipping = false;
                    self.partial.clear();
                } else if self.partial.is_empty() {
                    emit(piece, false, max_line, sink);
                } else {
                    self.partial.extend_from_slice(piece);
                    let line = std::mem::take(&mut self.partial);
                    emit(&line, false, max_line, sink);
                }
                self.offset = self.read_to - (chunk.len() - start) as u64;
            }
            let rest = &chunk[start..];
            if !self.skipping {
                self.partial.extend_from_slice(rest);
                if self.partial.len() > max_line {
                    let line = std::mem::take(&mut self.partial);
                    emit(&line[..max_line], true, max_line, sink);
                    self.skipping = true;
                }
            }
        }
        if eof_flush && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            emit(&line, false, max_line, sink);
            self.offset = self.read_to;
        }
        Ok(any)
    }
}

fn emit(bytes: &[u8], truncated: bool, max_line: usize, sink: &mut dyn FnMut(Line<'_>)) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let (bytes, cut) = if bytes.len() > max_line {
        (&bytes[..max_line], true)
    } else {
        (bytes, false)
    };
    sink(Line {
        bytes,
        truncated: truncated || cut,
    });
}

/// Follows the files of one source (a path or a glob).
pub struct Tailer {
    pattern: String,
    followed: Vec<Followed>,
    draining: Vec<Followed>,
    /// Files closed after rotation, by (dev, ino): offset reached and head fingerprint (an
    /// inode number reused by a new file does not match the fingerprint).
    retired: HashMap<(u64, u64), Retired>,
    saved: Option<Saved>,
    start_at: StartAt,
    max_line: usize,
    drain_grace: Duration,
    first_poll: bool,
    /// Wall-clock time of the previous poll, to find files rotated since.
    last_poll: Option<std::time::SystemTime>,
    /// Head fingerprints of content already read (before truncations too), so that a
    /// copytruncate copy is not mistaken for an unread rotated file.
    seen_heads: std::collections::VecDeque<(u64, u64)>,
}

impl Tailer {
    /// A tailer for `pattern`, resuming from `saved` positions when given.
    pub fn new(
        pattern: &str,
        saved: Option<Saved>,
        start_at: StartAt,
        max_line: usize,
        drain_grace: Duration,
    ) -> Self {
        Self {
            pattern: pattern.to_string(),
            followed: Vec::new(),
            draining: Vec::new(),
            retired: HashMap::new(),
            saved,
            start_at,
            max_line: max_line.max(1),
            drain_grace,
            first_poll: true,
            last_poll: None,
            seen_heads: std::collections::VecDeque::new(),
        }
    }

    fn resolve(&self) -> Vec<PathBuf> {
        if self.pattern.contains(['*', '?', '[']) {
            match glob::glob(&self.pattern) {
                Ok(paths) => {
                    let mut v: Vec<PathBuf> = paths.flatten().filter(|p| p.is_file()).collect();
                    v.sort();
                    v
                }
                Err(_) => Vec::new(),
            }
        } else {
            let p = PathBuf::from(&self.pattern);
            if p.exists() { vec![p] } else { Vec::new() }
        }
    }

    /// What to save for a restart.
    pub fn checkpoint(&self) -> Saved {
        Saved {
            positions: self.positions(),
            seen_heads: self.seen_heads.iter().copied().collect(),
            saved_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64()),
        }
    }

    /// How many files are open (followed or being drained).
    pub fn open_files(&self) -> usize {
        self.followed.len() + self.draining.len()
    }

    /// Current positions of every open file, for checkpoints.
    pub fn positions(&self) -> Vec<Position> {
        self.followed
            .iter()
            .chain(&self.draining)
            .map(Followed::position)
            .collect()
    }

    /// Bytes not yet read across followed files (size minus offset), and total size.
    pub fn backlog(&self) -> (u64, u64) {
        let mut backlog = 0;
        let mut size = 0;
        for f in &self.followed {
            if let Ok(m) = std::fs::metadata(&f.path) {
                size += m.len();
                backlog += m.len().saturating_sub(f.offset);
            }
        }
        (backlog, size)
    }

    /// Reads everything new; calls `sink` for each line in file order.
    pub fn poll(&mut self, sink: &mut dyn FnMut(Line<'_>)) -> PollReport {
        let mut report = PollReport::default();
        let now = Instant::now();
        let max_line = self.max_line;

        let initial = std::mem::replace(&mut self.first_poll, false);
        let mut previous_poll = self.last_poll.replace(std::time::SystemTime::now());
        let had_saved = self.saved.is_some();
        if initial && let Some(at) = self.saved.as_ref().and_then(|s| s.saved_at) {
            // A damaged state file may hold any number: one no Duration can hold is no time.
            previous_poll = Duration::try_from_secs_f64(at.max(0.0))
                .ok()
                .and_then(|d| std::time::UNIX_EPOCH.checked_add(d));
        }
        if initial {
            self.restore(&mut report, sink);
        }

        // Files being drained after a rename.
        let mut still = Vec::new();
        for mut f in std::mem::take(&mut self.draining) {
            if let Ok(fm) = f.file.metadata()
                && f.check_truncated(fm.len()).unwrap_or(false)
            {
                report.truncated += 1;
            }
            let grew = f.read(max_line, false, sink).unwrap_or(false);
            if grew {
                f.drain_until = Some(now + self.drain_grace);
            }
            if f.drain_until.is_some_and(|t| now >= t) {
                tracing::debug!(file = %f.path.display(), offset = f.offset, "drained and closed");
                let _ = f.read(max_line, true, sink);
                self.retired.insert((f.dev, f.ino), Retired::of(&f));
            } else {
                still.push(f);
            }
        }
        self.draining = still;

        // Followed files: rotation, truncation, new data.
        let mut keep = Vec::new();
        for mut f in std::mem::take(&mut self.followed) {
            // Truncation is checked on the open file itself, so that a copytruncate followed
            // by a rename before the next poll is still seen.
            if let Ok(fm) = f.file.metadata() {
                let head_before = (f.head, f.head_len);
                match f.check_truncated(fm.len()) {
                    Ok(true) => {
                        tracing::debug!(file = %f.path.display(), size = fm.len(), "file truncated");
                        remember(&mut self.seen_heads, head_before);
                        report.truncated += 1;
                    }
                    Ok(false) => {}
                    Err(e) => report.errors.push(format!("{}: {e}", f.path.display())),
                }
            }
            match std::fs::metadata(&f.path) {
                Ok(m) if (m.dev(), m.ino()) == (f.dev, f.ino) => {
                    if let Err(e) = f.read(max_line, false, sink) {
                        report.errors.push(format!("{}: {e}", f.path.display()));
                    }
                    keep.push(f);
                }
                _ => {
                    // Renamed away or deleted: drain what is left through the open handle.
                    tracing::debug!(file = %f.path.display(), offset = f.offset, "file rotated away; draining");
                    report.renamed += 1;
                    let _ = f.read(max_line, false, sink);
                    f.drain_until = Some(now + self.drain_grace);
                    self.draining.push(f);
                }
            }
        }
        self.followed = keep;

        // New paths.
        for path in self.resolve() {
            if self.followed.iter().any(|f| f.path == path) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            // The same inode under another name (a rotated sibling matched by the glob).
            if let Some(pos) = self.draining.iter().position(|f| (f.dev, f.ino) == id) {
                let mut f = self.draining.remove(pos);
                f.path = path.clone();
                f.drain_until = None;
                let _ = f.read(max_line, false, sink);
                self.followed.push(f);
                continue;
            }
            if self.followed.iter().any(|f| (f.dev, f.ino) == id) {
                continue;
            }
            // A file that appeared at the path since the last poll may have had a predecessor
            // that was created and rotated away in between: read such siblings first. The
            // path is opened before the siblings are listed, so that a rotation racing with
            // this poll is either among the siblings (renamed before the listing) or seen on
            // the open handle at the next poll (renamed after the open), never missed.
            let retired = self.retired.get(&id).copied().filter(|r| r.matches(&path));
            let offset = match retired {
                Some(r) => r.offset,
                // Present before vitals' first start: honour start_at.
                None if initial && !had_saved && self.start_at == StartAt::End => meta.len(),
                // Created since (or while vitals was down): read it all.
                None => 0,
            };
            let opened = Followed::open(&path, offset);
            let opened_id = opened.as_ref().ok().map(|f| (f.dev, f.ino));
            if (!initial || had_saved)
                && retired.is_none()
                && let Some(since) = previous_poll
            {
                for sibling in rotated_siblings(&path, since) {
                    let Ok(sm) = std::fs::metadata(&sibling) else {
                        continue;
                    };
                    let sid = (sm.dev(), sm.ino());
                    let already_read = File::open(&sibling).is_ok_and(|sf| {
                        self.seen_heads
                            .iter()
                            .copied()
                            .chain(
                                self.followed
                                    .iter()
                                    .chain(&self.draining)
                                    .map(|f| (f.head, f.head_len)),
                            )
                            .any(|(h, l)| l > 0 && fingerprint(&sf, l).is_ok_and(|x| x == h))
                    });
                    let known = already_read
                        || opened_id == Some(sid)
                        || self.retired.get(&sid).is_some_and(|r| r.matches(&sibling))
                        || self
                            .draining
                            .iter()
                            .chain(&self.followed)
                            .any(|f| (f.dev, f.ino) == sid);
                    if known {
                        continue;
                    }
                    if let Ok(mut f) = Followed::open(&sibling, 0) {
                        tracing::debug!(file = %sibling.display(), "reading a file rotated away since the last poll");
                        report.renamed += 1;
                        let _ = f.read(max_line, false, sink);
                        f.drain_until = Some(now + self.drain_grace);
                        self.draining.push(f);
                    }
                }
            }
            match opened {
                Ok(mut f) => {
                    tracing::debug!(file = %path.display(), offset, ino = f.ino, "following");
                    let _ = f.read(max_line, false, sink);
                    self.followed.push(f);
                }
                Err(e) => report.errors.push(format!("{}: {e}", path.display())),
            }
        }
        report
    }

    /// Re-opens files at their saved positions. A saved file no longer at its path (rotated
    /// while vitals was down) is looked up by inode among its siblings and drained.
    fn restore(&mut self, report: &mut PollReport, sink: &mut dyn FnMut(Line<'_>)) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        for h in saved.seen_heads {
            remember(&mut self.seen_heads, h);
        }
        let paths = self.resolve();
        for pos in saved.positions {
            let at_path = paths.iter().find(|p| {
                std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == (pos.dev, pos.ino))
            });
            let found = match at_path {
                Some(p) => Some((p.clone(), false)),
                None => find_sibling(&pos).map(|p| (p, true)),
            };
            let Some((path, rotated)) = found else {
                continue;
            };
            let mut f = match Followed::open(&path, pos.offset) {
                Ok(f) => f,
                Err(e) => {
                    // Unreadable for now (permissions): remember where it was left, so that
                    // once it can be opened it is resumed there rather than read again from
                    // the start (which would count its lines twice).
                    report.errors.push(format!("{}: {e}", path.display()));
                    self.retired.insert(
                        (pos.dev, pos.ino),
                        Retired {
                            offset: pos.offset,
                            head: pos.head,
                            head_len: pos.head_len,
                        },
                    );
                    continue;
                }
            };
            // Same inode but different head or shorter: truncated while down.
            let same_head = f.head_len >= pos.head_len
                && fingerprint(&f.file, pos.head_len).is_ok_and(|h| h == pos.head);
            if !same_head || f.offset < pos.offset {
                remember(&mut self.seen_heads, (pos.head, pos.head_len));
                report.truncated += 1;
                f.offset = 0;
                f.read_to = 0;
            }
            tracing::debug!(file = %path.display(), offset = f.offset, saved_offset = pos.offset, ino = pos.ino, rotated, "restored position");
            if rotated {
                report.renamed += 1;
                let _ = f.read(self.max_line, true, sink);
                self.retired.insert((f.dev, f.ino), Retired::of(&f));
            } else {
                let _ = f.read(self.max_line, false, sink);
                self.followed.push(f);
            }
        }
    }
}

/// Siblings that look like rotations of `path` (`app.log.1`, `app.log-2024...`; compressed
/// ones excluded) and were renamed or created since `since` (by ctime, with 20 ms of slack for
/// timestamp granularity), oldest first.
fn rotated_siblings(path: &Path, since: std::time::SystemTime) -> Vec<PathBuf> {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let since = since
        .checked_sub(Duration::from_millis(20))
        .unwrap_or(std::time::UNIX_EPOCH)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(f64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let rest = name.strip_prefix(base)?;
            if !(rest.starts_with('.') || rest.starts_with('-') || rest.starts_with('_')) {
                return None;
            }
            if [".gz", ".bz2", ".xz", ".zst", ".lz4", ".tmp"]
                .iter()
                .any(|x| name.ends_with(x))
            {
                return None;
            }
            let m = e.metadata().ok()?;
            let ctime = m.ctime() as f64 + m.ctime_nsec() as f64 / 1e9;
            (m.is_file() && ctime >= since).then_some((ctime, e.path()))
        })
        .collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found.into_iter().map(|(_, p)| p).collect()
}

fn remember(seen: &mut std::collections::VecDeque<(u64, u64)>, head: (u64, u64)) {
    if head.1 == 0 || seen.contains(&head) {
        return;
    }
    if seen.len() >= 32 {
        seen.pop_front();
    }
    seen.push_back(head);
}

/// Finds a file with the saved inode in the saved path's directory.
fn find_sibling(pos: &Position) -> Option<PathBuf> {
    let dir = pos.path.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == (pos.dev, pos.ino))
        })
}

/// Wakes a file reader when something changes in the directory of its files (inotify), so
/// that lines are counted within milliseconds of being written instead of at the next poll.
///
/// One inotify instance per source, watching the directory of the path (or of the glob, when
/// only the file name has wildcards) for writes, creations, renames and deletions. Events for
/// other files in that directory are ignored. When inotify cannot be used (no instance or
/// watch left under the user's limits, a wildcard in a directory component, a directory that
/// does not exist yet), [`Watcher::active`] is false and the caller polls; a missing or
/// removed directory is watched again as soon as it exists.
pub struct Watcher {
    fd: Option<rustix::fd::OwnedFd>,
    dir: Option<PathBuf>,
    /// File names that matter: the path's own name as a prefix (its rotated siblings too), or
    /// the glob's last component.
    filter: NameFilter,
    watching: bool,
    /// Why inotify is not used, reported once.
    reported: bool,
}

enum NameFilter {
    Prefix(Vec<u8>),
    Glob(glob::Pattern),
    Any,
}

impl NameFilter {
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            NameFilter::Prefix(p) => name.starts_with(p),
            NameFilter::Glob(g) => std::str::from_utf8(name).is_ok_and(|n| g.matches(n)),
            NameFilter::Any => true,
        }
    }
}

impl Watcher {
    /// A watcher for the files of `pattern`; `enabled: false` (or no inotify) means polling.
    pub fn new(pattern: &str, enabled: bool) -> Self {
        let path = Path::new(pattern);
        let dir = path
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    d.to_path_buf()
                }
            })
            .filter(|d| !d.to_string_lossy().contains(['*', '?', '[']));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let filter = match name {
            Some(n) if n.contains(['*', '?', '[']) => glob::Pattern::new(&n)
                .map(NameFilter::Glob)
                .unwrap_or(NameFilter::Any),
            Some(n) => NameFilter::Prefix(n.into_bytes()),
            None => NameFilter::Any,
        };
        let fd = if enabled && dir.is_some() {
            use rustix::fs::inotify::{CreateFlags, init};
            match init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(pattern, error = %e, "inotify unavailable; polling instead");
                    None
                }
            }
        } else {
            if enabled {
                tracing::info!(
                    pattern,
                    "a wildcard in a directory component: polling instead of inotify"
                );
            }
            None
        };
        let mut w = Self {
            fd,
            dir,
            filter,
            watching: false,
            reported: false,
        };
        w.ensure_watch();
        w
    }

    /// Whether changes wake the reader (else the caller must poll).
    pub fn active(&self) -> bool {
        self.watching
    }

    fn ensure_watch(&mut self) {
        use rustix::fs::inotify::{WatchFlags, add_watch};
        if self.watching {
            return;
        }
        let (Some(fd), Some(dir)) = (&self.fd, &self.dir) else {
            return;
        };
        let flags = WatchFlags::MODIFY
            | WatchFlags::CREATE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::ATTRIB
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        match add_watch(fd, dir.as_path(), flags) {
            Ok(_) => {
                tracing::debug!(dir = %dir.display(), "inotify watch added");
                self.watching = true;
                self.reported = false;
            }
            Err(e) => {
                if !self.reported {
                    // ENOENT: the directory may appear later; ENOSPC: max_user_watches.
                    tracing::info!(dir = %dir.display(), error = %e, "cannot watch the directory with inotify; polling until it can");
                    self.reported = true;
                }
            }
        }
    }

    /// Waits until a file of interest changes or `timeout` has passed. Returns true when woken
    /// by a change. Without an active watch, sleeps for `timeout` (and then tries to watch
    /// again).
    pub fn wait(&mut self, timeout: Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        if !self.watching {
            std::thread::sleep(timeout);
            self.ensure_watch();
            return false;
        }
        let Some(fd) = self.fd.take() else {
            std::thread::sleep(timeout);
            return false;
        };
        let deadline = Instant::now() + timeout;
        let mut woken = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => break,
                Ok(_) => {
                    if self.drain(&fd) {
                        woken = true;
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "inotify poll failed; polling instead");
                    self.watching = false;
                    std::thread::sleep(left);
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.fd = Some(fd);
        if !self.watching {
            self.ensure_watch();
        }
        woken
    }

    /// Reads every pending event; true when one concerns a file of interest (or events were
    /// lost to a queue overflow, or the directory itself went away).
    fn drain(&mut self, fd: &rustix::fd::OwnedFd) -> bool {
        use rustix::fs::inotify::{ReadFlags, Reader};
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = Reader::new(fd, &mut buf);
        let mut relevant = false;
        loop {
            match reader.next() {
                Ok(ev) => {
                    let flags = ev.events();
                    if flags.intersects(ReadFlags::IGNORED | ReadFlags::UNMOUNT) {
                        // The watch is gone (directory deleted or moved): re-add later.
                        self.watching = false;
                        relevant = true;
                    } else if flags.contains(ReadFlags::QUEUE_OVERFLOW)
                        || flags.intersects(ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF)
                    {
                        relevant = true;
                    } else if let Some(name) = ev.file_name()
                        && self.filter.matches(name.to_bytes())
                    {
                        relevant = true;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        relevant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text.as_bytes()).expect("append");
    }

    fn lines(t: &mut Tailer) -> (Vec<String>, PollReport) {
        let mut out = Vec::new();
        let r = t.poll(&mut |l: Line<'_>| out.push(String::from_utf8_lossy(l.bytes).into_owned()));
        (out, r)
    }

    fn tailer(pattern: &Path, saved: Option<Saved>) -> Tailer {
        Tailer::new(
            &pattern.display().to_string(),
            saved,
            StartAt::Beginning,
            100,
            Duration::ZERO,
        )
    }

    #[test]
    fn appends_partial_lines_crlf_and_overlong() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("a.log");
        append(&p, "one\r\ntw");
        let mut t = tailer(&p, None);
        assert_eq!(lines(&mut t).0, vec!["one"]);
        append(&p, "o\n");
        assert_eq!(lines(&mut t).0, vec!["two"]);
        append(&p, &format!("{}\nshort\n", "x".repeat(250)));
        let mut got = Vec::new();
        t.poll(&mut |l: Line<'_>| got.push((l.bytes.len(), l.truncated)));
        assert_eq!(got, vec![(100, true), (5, false)]);
    }

    #[test]
    fn rename_rotation_loses_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "1\n2\n");
        let mut t = tailer(&p, None);
        assert_eq!(lines(&mut t).0, vec!["1", "2"]);
        append(&p, "3\n");
        std::fs::rename(&p, d.path().join("app.log.1")).expect("rename");
        append(&d.path().join("app.log.1"), "4\n"); // the writer had not reopened yet
        append(&p, "5\n");
        let (got, report) = lines(&mut t);
        let mut got2 = lines(&mut t).0;
        let mut all = got;
        all.append(&mut got2);
        all.sort();
        assert_eq!(all, vec!["3", "4", "5"]);
        assert_eq!(report.renamed, 1);
    }

    #[test]
    fn copytruncate_is_detected_by_size_and_by_head() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "first line\nsecond line\n");
        let mut t = tailer(&p, None);
        assert_eq!(lines(&mut t).0.len(), 2);
        std::fs::write(&p, "").expect("truncate");
        append(&p, "x\n");
        let (got, r) = lines(&mut t);
        assert_eq!((got, r.truncated), (vec!["x".to_string()], 1));
        // Truncated and regrown past the old offset between two polls: the head changed.
        std::fs::write(&p, "").expect("truncate");
        append(&p, "another first line that is longer\n");
        let (got, r) = lines(&mut t);
        assert_eq!(
            (got, r.truncated),
            (vec!["another first line that is longer".to_string()], 1)
        );
    }

    #[test]
    fn glob_does_not_reread_rotated_siblings() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("a.log");
        append(&p, "1\n");
        let pattern = d.path().join("*.log");
        let mut t = tailer(&pattern, None);
        assert_eq!(lines(&mut t).0, vec!["1"]);
        std::fs::rename(&p, d.path().join("a-old.log")).expect("rename");
        append(&p, "2\n");
        let mut all = lines(&mut t).0;
        all.extend(lines(&mut t).0);
        assert_eq!(all, vec!["2"]);
    }

    #[test]
    fn restart_resumes_and_finds_files_rotated_while_down() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "1\n2\n");
        let mut t = tailer(&p, None);
        assert_eq!(lines(&mut t).0, vec!["1", "2"]);
        let saved = t.checkpoint();
        drop(t);
        // While down: more lines, then rotation, then a new file.
        append(&p, "3\n");
        std::fs::rename(&p, d.path().join("app.log.1")).expect("rename");
        append(&p, "4\n");
        let mut t = tailer(&p, Some(saved));
        assert_eq!(lines(&mut t).0, vec!["3", "4"]);
        let saved = t.checkpoint();
        drop(t);
        append(&p, "5\n");
        let mut t = tailer(&p, Some(saved));
        assert_eq!(lines(&mut t).0, vec!["5"]);
    }

    #[test]
    fn a_file_created_and_rotated_between_polls_is_still_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        let mut t = tailer(&p, None);
        assert!(lines(&mut t).0.is_empty());
        append(&p, "1\n2\n");
        std::fs::rename(&p, d.path().join("app.log.1")).expect("rename");
        append(&p, "3\n");
        let mut all = lines(&mut t).0;
        all.extend(lines(&mut t).0);
        assert_eq!(all, vec!["1", "2", "3"]);
    }

    #[test]
    fn files_created_and_rotated_while_down_are_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "1\n");
        let mut t = tailer(&p, None);
        assert_eq!(lines(&mut t).0, vec!["1"]);
        // A copytruncate copy made before the checkpoint is not read again later.
        std::fs::copy(&p, d.path().join("app.log.0")).expect("copy");
        std::fs::write(&p, "").expect("truncate");
        let saved = t.checkpoint();
        drop(t);
        std::thread::sleep(Duration::from_millis(30));
        // While down: new lines, rotation, a new file, another rotation, a newer file.
        append(&p, "2\n");
        std::fs::rename(&p, d.path().join("app.log.1")).expect("rename");
        append(&p, "3\n");
        std::fs::rename(&p, d.path().join("app.log.2")).expect("rename");
        append(&p, "4\n");
        let mut t = tailer(&p, Some(saved));
        let mut all = lines(&mut t).0;
        all.extend(lines(&mut t).0);
        all.sort();
        assert_eq!(all, vec!["2", "3", "4"]);
    }

    #[test]
    fn watcher_wakes_on_writes_renames_and_creation_of_its_files_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "0\n");
        let mut w = Watcher::new(&p.display().to_string(), true);
        assert!(w.active(), "inotify works in the test environment");
        assert!(!w.wait(Duration::from_millis(20)), "nothing happened yet");
        append(&d.path().join("other.txt"), "x\n");
        assert!(
            !w.wait(Duration::from_millis(50)),
            "another file in the directory"
        );
        append(&p, "1\n");
        let t = Instant::now();
        assert!(w.wait(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
        std::fs::rename(&p, d.path().join("app.log.1")).expect("rename");
        assert!(w.wait(Duration::from_secs(5)));
        append(&p, "2\n");
        assert!(w.wait(Duration::from_secs(5)));
        // Globs: the last component filters.
        let mut g = Watcher::new(&d.path().join("*.log").display().to_string(), true);
        append(&d.path().join("b.log"), "x\n");
        assert!(g.wait(Duration::from_secs(5)));
        append(&d.path().join("other.txt"), "x\n");
        assert!(!g.wait(Duration::from_millis(50)));
        // Disabled, or a wildcard in a directory: polling.
        assert!(!Watcher::new(&p.display().to_string(), false).active());
        let nested = d.path().join("*").join("x.log");
        assert!(!Watcher::new(&nested.display().to_string(), true).active());
    }

    #[test]
    fn watcher_picks_up_a_directory_created_later() {
        let d = tempfile::tempdir().expect("tempdir");
        let sub = d.path().join("later");
        let p = sub.join("app.log");
        let mut w = Watcher::new(&p.display().to_string(), true);
        assert!(!w.active());
        std::fs::create_dir(&sub).expect("mkdir");
        assert!(!w.wait(Duration::from_millis(10)));
        assert!(w.active(), "watched once the directory exists");
        append(&p, "1\n");
        assert!(w.wait(Duration::from_secs(5)));
    }

    #[test]
    fn copytruncate_of_a_file_opened_while_empty_is_detected() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "");
        let mut t = tailer(&p, None);
        assert!(lines(&mut t).0.is_empty());
        append(
            &p,
            "line 1 of the first content\nline 2 of the first content\n",
        );
        assert_eq!(lines(&mut t).0.len(), 2);
        // Truncated and refilled past the old offset before the next poll.
        std::fs::write(&p, "").expect("truncate");
        append(&p, &"line 9 of the second, longer content\n".repeat(3));
        let (got, r) = lines(&mut t);
        assert_eq!((got.len(), r.truncated), (3, 1));
    }

    #[test]
    fn start_at_end_skips_history_of_files_present_at_first_start() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "old\n");
        let mut t = Tailer::new(
            &p.display().to_string(),
            None,
            StartAt::End,
            100,
            Duration::ZERO,
        );
        assert!(lines(&mut t).0.is_empty());
        append(&p, "new\n");
        assert_eq!(lines(&mut t).0, vec!["new"]);
    }

    #[test]
    fn a_saved_time_no_duration_can_hold_is_ignored() {
        // Found by the log_checkpoint fuzz target: a damaged state file's `saved_at`.
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, "one\n");
        for at in [1e300, f64::INFINITY, f64::NAN, -5.0] {
            let saved = Saved {
                positions: Vec::new(),
                seen_heads: Vec::new(),
                saved_at: Some(at),
            };
            let mut t = Tailer::new(
                &p.display().to_string(),
                Some(saved),
                StartAt::Beginning,
                100,
                Duration::ZERO,
            );
            assert_eq!(lines(&mut t).0, vec!["one"], "saved_at {at}");
        }
    }
}
