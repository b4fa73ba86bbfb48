//! Log template mining: groups messages into patterns with stable ids.
//!
//! The [`Miner`] is an online miner in the Drain family (He et al., "Drain: An Online Log
//! Parsing Approach with Fixed Depth Tree", ICWS 2017): each message is tokenised and masked,
//! routed by its token count and its first tokens to a small set of candidate clusters, and
//! joins the most similar one when the similarity reaches a threshold; otherwise it starts a
//! new cluster. Joining generalises the cluster's template: positions where the message
//! differs become `<*>`.
//!
//! Compared with plain Drain:
//! - masking runs inside each token and keeps the constant parts around a value
//!   (`onExtend:<*>`, `/<*>`, `HTTP/<*>`); a run of values joined by punctuation collapses to
//!   one `<*>` (an IP with its port, a date with its time), and so does a run of `<*>` tokens
//!   (a list of ids of any length);
//! - values are recognised by shape: anything with a digit (numbers, hex, IPv4/IPv6 with
//!   port, UUIDs, durations and sizes with units, versions, ids), paths, URLs, long hex runs,
//!   dotted names joined to a value (`host.example.org:443`), month and weekday names next
//!   to a value, `key=value` values (up to `,` `;` or the closing bracket), quoted values
//!   (`key="..."`); other quoted text is one token, masked inside (`"GET <*> HTTP/<*>"`);
//! - similarity leaves out the positions that are `<*>` in both the template and the message,
//!   so messages made mostly of values still group, and the default threshold is higher
//!   than Drain's (0.7) since masking has already taken the values out;
//! - a pattern's id is a hash of the first masked template of its cluster, so it is the same
//!   across restarts for the same log and never changes while the cluster lives;
//! - a message seen before (same masked tokens) goes straight to its cluster through a
//!   bounded exact-match cache;
//! - everything is bounded: bytes and tokens per message, clusters (least recently used
//!   evicted), clusters per leaf (the work per message), template length, cache size.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;

use rustc_hash::{FxBuildHasher, FxHasher};
use sha2::{Digest, Sha256};

/// The placeholder that stands for a variable part in a template.
pub const WILDCARD: &str = "<*>";

/// Bytes of one message that are looked at; the rest is ignored for mining, so that a
/// hostile multi-megabyte line costs no more than a long one.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// How far a quoted string may extend (in bytes) to be masked as one value.
const MAX_QUOTED_BYTES: usize = 256;

/// Options of a [`Miner`].
#[derive(Debug, Clone, PartialEq)]
pub struct MinerOptions {
    /// Most clusters kept; when a new one is needed beyond this, the least recently used is
    /// forgotten (its id may come back later for the same messages).
    pub max_clusters: usize,
    /// Least similarity (0..=1) for a message to join a cluster: among the token positions
    /// that are not `<*>` in both the template and the message, the share where they hold
    /// the same constant.
    pub similarity: f64,
    /// Depth of the prefix tree as in Drain: the root, the token count, then `depth - 2`
    /// leading tokens route a message to its candidate clusters. At least 3.
    pub depth: usize,
    /// Characters kept in [`Miner::template`]; longer templates end with `...`.
    pub max_template_len: usize,
    /// Tokens of a message used for mining; the rest of a long message is ignored.
    pub max_tokens: usize,
    /// Most clusters under one leaf of the tree (same token count and leading tokens): this
    /// bounds the work per message; the least recently used of the leaf gives way.
    pub max_children: usize,
}

impl Default for MinerOptions {
    fn default() -> Self {
        Self {
            max_clusters: 1000,
            similarity: 0.7,
            depth: 4,
            max_template_len: 256,
            max_tokens: 64,
            max_children: 100,
        }
    }
}

/// Why [`MinerOptions`] are not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionsError {
    /// `similarity` is outside 0..=1 (or not a number).
    #[error("similarity must be between 0 and 1, got {0}")]
    Similarity(f64),
    /// `depth` is below 3.
    #[error("depth must be at least 3, got {0}")]
    Depth(usize),
    /// A bound is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl MinerOptions {
    /// Checks the options, for config validation. [`Miner::new`] clamps instead of failing.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !(0.0..=1.0).contains(&self.similarity) {
            return Err(OptionsError::Similarity(self.similarity));
        }
        if self.depth < 3 {
            return Err(OptionsError::Depth(self.depth));
        }
        for (name, v) in [
            ("max_clusters", self.max_clusters),
            ("max_template_len", self.max_template_len),
            ("max_tokens", self.max_tokens),
            ("max_children", self.max_children),
        ] {
            if v == 0 {
                return Err(OptionsError::Zero(name));
            }
        }
        Ok(())
    }

    fn clamped(mut self) -> Self {
        self.similarity = if self.similarity.is_nan() {
            Self::default().similarity
        } else {
            self.similarity.clamp(0.0, 1.0)
        };
        self.depth = self.depth.max(3);
        self.max_clusters = self.max_clusters.max(1);
        self.max_template_len = self.max_template_len.max(1);
        self.max_tokens = self.max_tokens.max(1);
        self.max_children = self.max_children.max(1);
        self
    }
}

/// Identifies a pattern. Derived from a hash of the first masked template of the pattern's
/// cluster, so it is stable across restarts for the same log, and kept while the cluster
/// lives even as its template generalises. Displays as 12 lowercase hex digits, for use as
/// a Prometheus label value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PatternId(u64);

impl PatternId {
    /// Bits of the id (48).
    const BITS: u32 = 48;

    /// The id as a number (below 2^48).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    fn of_template(tokens: &Masked, salt: u32) -> Self {
        let mut h = Sha256::new();
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                h.update(b" ");
            }
            h.update(t.as_bytes());
        }
        if salt > 0 {
            h.update(salt.to_le_bytes());
        }
        let d = h.finalize();
        let mut v = 0u64;
        for b in d.iter().take((Self::BITS / 8) as usize) {
            v = (v << 8) | u64::from(*b);
        }
        Self(v)
    }
}

impl fmt::Display for PatternId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// A message after tokenisation and masking: the token texts back to back in one buffer.
#[derive(Debug, Default)]
struct Masked {
    text: String,
    ends: Vec<usize>,
    hashes: Vec<u64>,
    /// Buffers kept for rewriting tokens, so that a rewrite does not allocate.
    spare_text: String,
    spare_ends: Vec<usize>,
}

fn hash_str(s: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(s.as_bytes());
    h.write_u8(0xff);
    h.finish()
}

/// Bytes that separate the parts of a token and are kept as they are: brackets, quotes,
/// `=`, `,`, `;`, `|`. A part after `=` is a value and is masked.
const fn is_hard_sep(c: u8) -> bool {
    matches!(
        c,
        b'=' | b','
            | b';'
            | b'('
            | b')'
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'<'
            | b'>'
            | b'|'
            | b'"'
            | b'\''
            | b'`'
    )
}

/// Bytes that separate the sub-words of a part (`host:port`, `a/b`, `user@host`). A run of
/// variable sub-words joined only by these collapses into one `<*>`.
const fn is_soft_sep(c: u8) -> bool {
    matches!(
        c,
        b':' | b'/' | b'\\' | b'@' | b'#' | b'+' | b'!' | b'?' | b'&' | b'*' | b'~' | b'$' | b'%'
    )
}

/// [`BYTE_CLASS`] bit: a hard or soft separator, or a quote (the token needs the full
/// masking rules).
const SEPARATOR: u8 = 1;
/// [`BYTE_CLASS`] bit: an ASCII digit.
const DIGIT: u8 = 2;
/// [`BYTE_CLASS`] bit: not an ASCII hex digit.
const NOT_HEX: u8 = 4;

/// Class bits of every byte, so that one pass over a token tells whether it takes the fast
/// path of [`Masked::fill`].
const BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut bits = 0;
        if is_hard_sep(b) || is_soft_sep(b) {
            bits |= SEPARATOR;
        }
        if b.is_ascii_digit() {
            bits |= DIGIT;
        }
        if !b.is_ascii_hexdigit() {
            bits |= NOT_HEX;
        }
        t[c] = bits;
        c += 1;
    }
    t
};

/// Whether a quote at this position may open a quoted string (start of token or after one
/// of these), so that apostrophes inside words are left alone.
fn is_quote_lead(c: u8) -> bool {
    matches!(c, b'=' | b':' | b'(' | b'[' | b'{' | b',')
}

/// The closing quote of a quoted string opened just before `from`: the next `q` followed by
/// the end or a byte that is not alphanumeric, within [`MAX_QUOTED_BYTES`].
fn find_close(b: &[u8], from: usize, end: usize, q: u8) -> Option<usize> {
    let limit = end.min(from.saturating_add(MAX_QUOTED_BYTES));
    let mut j = from;
    while j < limit {
        if b[j] == q {
            let next = b.get(j + 1).copied();
            if j + 1 >= end || !next.is_some_and(|n| n.is_ascii_alphanumeric()) {
                return Some(j);
            }
        }
        j += 1;
    }
    None
}

/// Whether a sub-word is a value: it holds a digit (numbers, hex, versions, ids, durations
/// and sizes with units, IPv4, UUIDs, timestamps).
fn is_variable_subword(w: &[u8]) -> bool {
    w.iter().any(|c| c.is_ascii_digit())
}

/// Whether a sub-word is a dotted name (`host.example.org`, `Main.java`): in a word that also
/// holds a value (`host.example.org:8080`, `Main.java:42`) it is part of an address, and is
/// masked with it.
fn is_dotted_name(w: &[u8]) -> bool {
    w.contains(&b'.') && w.iter().any(|c| c.is_ascii_alphanumeric())
}

impl Masked {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.hashes.clear();
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Tokenises `msg` on whitespace and masks each token.
    fn fill(&mut self, msg: &str, max_tokens: usize) {
        self.clear();
        let mut n = msg.len().min(MAX_MESSAGE_BYTES);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        let b = msg.as_bytes();
        let mut i = 0;
        while i < n && self.ends.len() < max_tokens {
            while i < n && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i >= n {
                break;
            }
            let tok_start = i;
            // Fast path for the common tokens (words, numbers, IPv4 addresses, versions):
            // without separators or quotes, a token is a value when it holds a digit or is a
            // long hex run (what `mask_piece` decides for such a token), else kept as is.
            let mut class = 0u8;
            let mut end = i;
            while end < n && !b[end].is_ascii_whitespace() {
                class |= BYTE_CLASS[usize::from(b[end])];
                end += 1;
            }
            if class & SEPARATOR == 0 {
                if class & DIGIT != 0 || (class & NOT_HEX == 0 && end - i >= 16) {
                    self.text.push_str(WILDCARD);
                } else {
                    self.text.push_str(&msg[i..end]);
                }
                i = end;
                self.end_token();
                continue;
            }
            let mut piece = i;
            while i < n && !b[i].is_ascii_whitespace() {
                let c = b[i];
                if matches!(c, b'"' | b'\'' | b'`')
                    && (i == tok_start || is_quote_lead(b[i - 1]))
                    && let Some(close) = find_close(b, i + 1, n, c)
                {
                    mask_piece(&msg[piece..i], &mut self.text);
                    self.text.push(char::from(c));
                    if i > 0 && b[i - 1] == b'=' {
                        // `key="value"`: the value is masked whole.
                        self.text.push_str(WILDCARD);
                    } else {
                        // Free text in quotes is one token, masked inside (`"GET <*> <*>"`).
                        for (k, w) in msg[i + 1..close].split_ascii_whitespace().enumerate() {
                            if k > 0 {
                                self.text.push(' ');
                            }
                            mask_piece(w, &mut self.text);
                        }
                    }
                    self.text.push(char::from(c));
                    i = close + 1;
                    piece = i;
                    continue;
                }
                i += 1;
            }
            mask_piece(&msg[piece..i], &mut self.text);
            self.end_token();
        }
        self.mask_date_names();
    }

    /// Ends the token that `text` holds past the last end: records it, or drops it when it
    /// is a bare `<*>` right after another (a list of values of any length is one `<*>`).
    fn end_token(&mut self) {
        let start = self.ends.last().copied().unwrap_or(0);
        let tok = &self.text[start..];
        if tok.is_empty() {
            return;
        }
        if tok == WILDCARD && self.len() > 0 && self.get(self.len() - 1) == WILDCARD {
            self.text.truncate(start);
            return;
        }
        self.hashes.push(hash_str(tok));
        self.ends.push(self.text.len());
    }

    /// Masks month and weekday names next to a value or to each other (`Fri Jul <*> <*>`):
    /// they belong to a timestamp. A name on its own (`May`) is left alone.
    fn mask_date_names(&mut self) {
        let n = self.len();
        let is_name = |m: &Self, i: usize| date_name_len(m.get(i)).is_some();
        let is_value = |m: &Self, i: usize| m.get(i).starts_with(WILDCARD);
        let mut marks: u128 = 0;
        for i in 0..n.min(128) {
            if !is_name(self, i) {
                continue;
            }
            let near = |j: usize| is_name(self, j) || is_value(self, j);
            if (i > 0 && near(i - 1)) || (i + 1 < n && near(i + 1)) {
                marks |= 1 << i;
            }
        }
        if marks == 0 {
            return;
        }
        std::mem::swap(&mut self.text, &mut self.spare_text);
        std::mem::swap(&mut self.ends, &mut self.spare_ends);
        let (old, old_ends) = (
            std::mem::take(&mut self.spare_text),
            std::mem::take(&mut self.spare_ends),
        );
        self.text.clear();
        self.ends.clear();
        self.hashes.clear();
        let mut start = 0;
        for (i, &end) in old_ends.iter().enumerate() {
            let tok = &old[start..end];
            if i < 128 && marks & (1 << i) != 0 {
                let keep = date_name_len(tok).unwrap_or(tok.len());
                self.text.push_str(WILDCARD);
                self.text.push_str(&tok[keep..]);
            } else {
                self.text.push_str(tok);
            }
            self.end_token();
            start = end;
        }
        self.spare_text = old;
        self.spare_ends = old_ends;
    }
}

/// When the token is a month or weekday name (English, abbreviated or full, any case),
/// possibly followed by `,` or `.`, the length of the name.
fn date_name_len(tok: &str) -> Option<usize> {
    // Called for every token: the first three bytes decide most of them. `| 0x20`
    // lower-cases ASCII letters and maps no other byte onto a lower-case letter.
    let b = tok.as_bytes();
    if b.len() < 3 {
        return None;
    }
    let full: &[u8] = match [b[0] | 0x20, b[1] | 0x20, b[2] | 0x20] {
        [b'j', b'a', b'n'] => b"january",
        [b'f', b'e', b'b'] => b"february",
        [b'm', b'a', b'r'] => b"march",
        [b'a', b'p', b'r'] => b"april",
        [b'm', b'a', b'y'] => b"may",
        [b'j', b'u', b'n'] => b"june",
        [b'j', b'u', b'l'] => b"july",
        [b'a', b'u', b'g'] => b"august",
        [b's', b'e', b'p'] => b"september",
        [b'o', b'c', b't'] => b"october",
        [b'n', b'o', b'v'] => b"november",
        [b'd', b'e', b'c'] => b"december",
        [b'm', b'o', b'n'] => b"monday",
        [b't', b'u', b'e'] => b"tuesday",
        [b'w', b'e', b'd'] => b"wednesday",
        [b't', b'h', b'u'] => b"thursday",
        [b'f', b'r', b'i'] => b"friday",
        [b's', b'a', b't'] => b"saturday",
        [b's', b'u', b'n'] => b"sunday",
        _ => return None,
    };
    // The three letters matched, so trimming cannot reach them.
    let name = tok.trim_end_matches([',', '.']).as_bytes();
    if name.len() > 9 {
        return None;
    }
    let hit =
        name.len() == 3 || name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(b"sept");
    hit.then_some(name.len())
}

/// Masks one whitespace-free piece of a token into `out`; URLs in it become `<*>` whole.
fn mask_piece(s: &str, out: &mut String) {
    let mut rest = s;
    while let Some(p) = rest.as_bytes().windows(3).position(|w| w == b"://") {
        let b = rest.as_bytes();
        let mut start = p;
        while start > 0 && (b[start - 1].is_ascii_alphanumeric() || b"+.-".contains(&b[start - 1]))
        {
            start -= 1;
        }
        let end = b[p..]
            .iter()
            .position(|c| b"\"'`<>()[]{},".contains(c))
            .map_or(b.len(), |e| p + e);
        mask_parts(&rest[..start], out);
        out.push_str(WILDCARD);
        rest = &rest[end..];
    }
    mask_parts(rest, out);
}

/// Masks a piece without URLs: parts between hard separators, sub-words within parts.
fn mask_parts(s: &str, out: &mut String) {
    let b = s.as_bytes();
    let mut word = 0;
    let mut j = 0;
    while j < b.len() {
        let c = b[j];
        if j == word && (c == b'/' || s[j..].starts_with("./") || s[j..].starts_with("~/")) {
            // A path keeps its query (`/a/b?x=1`) and ends at a bracket, quote, `,` or `;`.
            let end = b[j..]
                .iter()
                .position(|&c| is_hard_sep(c) && c != b'=')
                .map_or(b.len(), |e| j + e);
            if b[j..end].iter().filter(|&&c| c == b'/').count() >= 2 {
                out.push_str(WILDCARD);
                j = end;
                word = end;
                continue;
            }
        }
        if !is_hard_sep(c) {
            j += 1;
            continue;
        }
        mask_word(&s[word..j], out);
        out.push(char::from(c));
        j += 1;
        if c == b'=' && b.get(j).is_some_and(|&n| n != b'=') && (j < 2 || b[j - 2] != b'=') {
            // `key=value`: the value runs to `,` `;` or an unbalanced closing bracket.
            let end = value_end(b, j);
            if end > j {
                out.push_str(WILDCARD);
            }
            j = end;
        }
        word = j;
    }
    mask_word(&s[word..], out);
}

/// End of a `key=value` value starting at `from`: the first `,` or `;` outside brackets, or
/// a closing bracket without its opening one, or the end.
fn value_end(b: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    for (k, &c) in b.iter().enumerate().skip(from) {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return k;
                }
                depth -= 1;
            }
            b',' | b';' if depth == 0 => return k,
            _ => {}
        }
    }
    b.len()
}

fn mask_word(w: &str, out: &mut String) {
    let b = w.as_bytes();
    if b.is_empty() {
        return;
    }
    let (mut slashes, mut backslashes, mut digits, mut hex) = (0usize, 0usize, false, true);
    for &c in b {
        match c {
            b'/' => slashes += 1,
            b'\\' => backslashes += 1,
            b'0'..=b'9' => digits = true,
            _ => {}
        }
        hex &= c.is_ascii_hexdigit();
    }
    // Whole values by shape: paths with two slashes or more (`/var/log`, `a/b/c`), relative
    // paths (`./` `../` `~/`), Windows paths, long hex runs.
    if slashes >= 2
        || backslashes >= 2
        || w.starts_with("./")
        || w.starts_with("../")
        || w.starts_with("~/")
        || (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\')
        || (hex && b.len() >= 16)
    {
        out.push_str(WILDCARD);
        return;
    }
    if !digits {
        out.push_str(w);
        return;
    }
    // Position in `out` just after the last `<*>` pushed for this word, while only soft
    // separators followed it.
    let mut after_wild: Option<usize> = None;
    let mut sub = 0;
    let mut emit = |sub_start: usize, sub_end: usize, out: &mut String| {
        let part = &w[sub_start..sub_end];
        if part.is_empty() {
            return;
        }
        if is_variable_subword(part.as_bytes()) || is_dotted_name(part.as_bytes()) {
            match after_wild {
                Some(p) if out[p..].bytes().all(is_soft_sep) => out.truncate(p),
                _ => {
                    out.push_str(WILDCARD);
                    after_wild = Some(out.len());
                }
            }
        } else {
            out.push_str(part);
            after_wild = None;
        }
    };
    for (j, &c) in b.iter().enumerate() {
        if is_soft_sep(c) {
            emit(sub, j, out);
            out.push(char::from(c));
            sub = j + 1;
        }
    }
    emit(sub, b.len(), out);
}

const NIL: usize = usize::MAX;

/// Entries of the exact-match cache (at least; four per cluster when more).
const SEEN_CAPACITY: usize = 4096;

#[derive(Debug)]
struct Cluster {
    id: PatternId,
    /// Token hashes of the template; `<*>` positions hold the hash of [`WILDCARD`].
    tokens: Vec<u64>,
    /// Token texts of the template, cut to what `template` can show (memory stays bounded
    /// whatever the message length).
    words: Vec<Box<str>>,
    /// The template as text, bounded.
    template: String,
    count: u64,
    leaf: u64,
    last_used: u64,
    prev: usize,
    next: usize,
}

/// An online log template miner for one source. See the module documentation.
#[derive(Debug)]
pub struct Miner {
    opts: MinerOptions,
    wild: u64,
    slots: Vec<Option<Cluster>>,
    free: Vec<usize>,
    live: usize,
    /// Most recently used cluster.
    head: usize,
    /// Least recently used cluster.
    tail: usize,
    tick: u64,
    leaves: HashMap<u64, Vec<usize>, FxBuildHasher>,
    ids: HashMap<PatternId, usize, FxBuildHasher>,
    scratch: Masked,
    /// Exact-match cache: hash of a whole masked message to the cluster it went to, so that
    /// a message seen before skips the candidate search. Cleared when full.
    seen: HashMap<u64, (usize, PatternId), FxBuildHasher>,
}

impl Miner {
    /// A miner with these options (out-of-range values are clamped to the nearest usable).
    pub fn new(opts: MinerOptions) -> Self {
        Self {
            opts: opts.clamped(),
            wild: hash_str(WILDCARD),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            head: NIL,
            tail: NIL,
            tick: 0,
            leaves: HashMap::default(),
            ids: HashMap::default(),
            scratch: Masked::default(),
            seen: HashMap::default(),
        }
    }

    /// The options in force (after clamping).
    pub fn options(&self) -> &MinerOptions {
        &self.opts
    }

    /// Assigns the message to a pattern, creating one when no existing pattern is similar
    /// enough, and returns the pattern's id.
    pub fn observe(&mut self, message: &str) -> PatternId {
        let mut masked = std::mem::take(&mut self.scratch);
        masked.fill(message, self.opts.max_tokens);
        let id = self.assign(&masked);
        self.scratch = masked;
        id
    }

    /// The current template of a pattern, at most `max_template_len` characters; `None`
    /// when no live cluster has this id (never seen, or evicted).
    pub fn template(&self, id: PatternId) -> Option<&str> {
        let slot = *self.ids.get(&id)?;
        self.cluster(slot).map(|c| c.template.as_str())
    }

    /// How many messages a pattern has been assigned since its cluster was created.
    pub fn count(&self, id: PatternId) -> Option<u64> {
        let slot = *self.ids.get(&id)?;
        self.cluster(slot).map(|c| c.count)
    }

    /// Number of live patterns.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no pattern is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every live pattern: id, template and count of messages, in no particular order.
    pub fn patterns(&self) -> impl Iterator<Item = (PatternId, &str, u64)> {
        self.slots
            .iter()
            .flatten()
            .map(|c| (c.id, c.template.as_str(), c.count))
    }

    fn cluster(&self, slot: usize) -> Option<&Cluster> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn leaf_key(&self, m: &Masked) -> u64 {
        let mut h = FxHasher::default();
        h.write_usize(m.len());
        for t in m.hashes.iter().take(self.opts.depth - 2) {
            h.write_u64(*t);
        }
        h.finish()
    }

    /// Similarity of a message to a template: among the positions that are not `<*>` in both,
    /// the share where the template has a constant equal to the message's token. Unlike
    /// Drain, a value masked in the message that meets a `<*>` of the template is left out
    /// rather than counted as a mismatch, so messages made mostly of values still group.
    /// Ties prefer the template with more `<*>`.
    fn similarity(&self, template: &[u64], m: &[u64]) -> (f64, usize) {
        let mut same = 0usize;
        let mut params = 0usize;
        let mut both = 0usize;
        for (t, x) in template.iter().zip(m) {
            if *t == self.wild {
                params += 1;
                if *x == self.wild {
                    both += 1;
                }
            } else if t == x {
                same += 1;
            }
        }
        let den = template.len() - both;
        if den == 0 {
            return (1.0, params);
        }
        (same as f64 / den as f64, params)
    }

    fn assign(&mut self, m: &Masked) -> PatternId {
        self.tick += 1;
        let mut h = FxHasher::default();
        h.write_usize(m.len());
        for t in &m.hashes {
            h.write_u64(*t);
        }
        let key = h.finish();
        if let Some(&(slot, id)) = self.seen.get(&key)
            && let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut)
            && c.id == id
            && c.tokens.len() == m.len()
            && c.tokens
                .iter()
                .zip(&m.hashes)
                .all(|(t, x)| *t == self.wild || t == x)
        {
            // Seen before and still covered by its cluster's template: nothing to change.
            c.count += 1;
            c.last_used = self.tick;
            self.touch(slot);
            return id;
        }
        let id = self.search(m);
        if self.seen.len() >= SEEN_CAPACITY.max(4 * self.opts.max_clusters) {
            self.seen.clear();
        }
        if let Some(&slot) = self.ids.get(&id) {
            self.seen.insert(key, (slot, id));
        }
        id
    }

    /// Drain's search: candidates of the message's leaf, the most similar joined when similar
    /// enough, else a new cluster.
    fn search(&mut self, m: &Masked) -> PatternId {
        let leaf = self.leaf_key(m);
        let mut best: Option<(usize, f64, usize)> = None;
        if let Some(cands) = self.leaves.get(&leaf) {
            for &slot in cands {
                let Some(c) = self.cluster(slot) else {
                    continue;
                };
                if c.tokens.len() != m.len() {
                    continue;
                }
                let (sim, params) = self.similarity(&c.tokens, &m.hashes);
                let better = match best {
                    None => true,
                    Some((_, bs, bp)) => sim > bs || (sim == bs && params > bp),
                };
                if better {
                    best = Some((slot, sim, params));
                }
            }
        }
        match best {
            Some((slot, sim, _)) if sim >= self.opts.similarity => self.join(slot, m),
            _ => self.create(leaf, m),
        }
    }

    fn join(&mut self, slot: usize, m: &Masked) -> PatternId {
        let wild = self.wild;
        let max_len = self.opts.max_template_len;
        let tick = self.tick;
        let id = match self.slots.get_mut(slot).and_then(Option::as_mut) {
            Some(c) => {
                let mut changed = false;
                for (i, t) in c.tokens.iter_mut().enumerate() {
                    if *t != wild && *t != m.hashes[i] {
                        *t = wild;
                        c.words[i] = WILDCARD.into();
                        changed = true;
                    }
                }
                if changed {
                    c.template = render(&c.words, max_len);
                }
                c.count += 1;
                c.last_used = tick;
                c.id
            }
            None => return self.create(self.leaf_key(m), m),
        };
        self.touch(slot);
        id
    }

    fn create(&mut self, leaf: u64, m: &Masked) -> PatternId {
        if self.live >= self.opts.max_clusters && self.tail != NIL {
            self.evict(self.tail);
        }
        if let Some(cands) = self.leaves.get(&leaf)
            && cands.len() >= self.opts.max_children
        {
            let oldest = cands
                .iter()
                .copied()
                .min_by_key(|&s| self.cluster(s).map_or(0, |c| c.last_used));
            if let Some(s) = oldest {
                self.evict(s);
            }
        }
        let mut salt = 0;
        let mut id = PatternId::of_template(m, salt);
        while self.ids.contains_key(&id) {
            salt += 1;
            id = PatternId::of_template(m, salt);
        }
        // Only as much text as the bounded template can show is kept.
        let mut budget = self.opts.max_template_len.saturating_mul(4);
        let words: Vec<Box<str>> = m
            .iter()
            .map(|w| {
                let mut cut = w.len().min(budget);
                while !w.is_char_boundary(cut) {
                    cut -= 1;
                }
                budget = budget.saturating_sub(cut + 1);
                Box::from(&w[..cut])
            })
            .collect();
        let cluster = Cluster {
            id,
            tokens: m.hashes.clone(),
            template: render(&words, self.opts.max_template_len),
            words,
            count: 1,
            leaf,
            last_used: self.tick,
            prev: NIL,
            next: NIL,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(cluster);
                s
            }
            None => {
                self.slots.push(Some(cluster));
                self.slots.len() - 1
            }
        };
        self.live += 1;
        self.leaves.entry(leaf).or_default().push(slot);
        self.ids.insert(id, slot);
        self.link_front(slot);
        id
    }

    fn evict(&mut self, slot: usize) {
        self.unlink(slot);
        let Some(c) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.live -= 1;
        self.free.push(slot);
        self.ids.remove(&c.id);
        if let Some(v) = self.leaves.get_mut(&c.leaf) {
            v.retain(|&s| s != slot);
            if v.is_empty() {
                self.leaves.remove(&c.leaf);
            }
        }
    }

    fn links(&mut self, slot: usize) -> Option<&mut Cluster> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn unlink(&mut self, slot: usize) {
        let Some(c) = self.links(slot) else {
            return;
        };
        let (prev, next) = (c.prev, c.next);
        c.prev = NIL;
        c.next = NIL;
        match self.links(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.links(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn link_front(&mut self, slot: usize) {
        let old = self.head;
        if let Some(c) = self.links(slot) {
            c.prev = NIL;
            c.next = old;
        }
        match self.links(old) {
            Some(o) => o.prev = slot,
            None => self.tail = slot,
        }
        self.head = slot;
    }

    fn touch(&mut self, slot: usize) {
        if self.head != slot {
            self.unlink(slot);
            self.link_front(slot);
        }
    }
}

/// Joins template tokens with spaces, cut to `max` characters (ending in `...` when cut).
fn render(words: &[Box<str>], max: usize) -> String {
    let mut s = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(w);
    }
    if s.chars().count() > max {
        let keep = max.saturating_sub(3);
        let cut = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
        s.truncate(cut);
        if max >= 3 {
            s.push_str("...");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(s: &str) -> String {
        let mut m = Masked::default();
        m.fill(s, 64);
        m.iter().collect::<Vec<_>>().join(" ")
    }

    fn tokens(s: &str) -> usize {
        let mut m = Masked::default();
        m.fill(s, 64);
        m.len()
    }

    fn miner() -> Miner {
        Miner::new(MinerOptions::default())
    }

    #[test]
    fn masks_values() {
        assert_eq!(mask("took 12ms size 1.5GB"), "took <*> size <*>");
        assert_eq!(mask("from 10.1.2.3:8080 to 10.1.2.4"), "from <*> to <*>");
        assert_eq!(mask("peer /10.10.34.11:45307"), "peer /<*>");
        assert_eq!(mask("addr fe80::1ff:fe23:4567:890a port"), "addr <*> port");
        assert_eq!(mask("addr [2001:db8::1]:443"), "addr [<*>]:<*>");
        assert_eq!(mask("ptr 0x7fed806eb5d"), "ptr <*>");
        assert_eq!(mask("sum deadbeefcafebabedeadbeef ok"), "sum <*> ok");
        assert_eq!(
            mask("req 123e4567-e89b-12d3-a456-426614174000 done"),
            "req <*> done"
        );
        assert_eq!(mask("open /var/lib/x/y.db failed"), "open <*> failed");
        assert_eq!(mask("GET /v2/x/detail?all=1&b=c ok"), "GET <*> ok");
        assert_eq!(mask("chdir(/p/gb2/x) failed"), "chdir(<*>) failed");
        assert_eq!(mask("in ./a/b, ~/c/d;"), "in <*>, <*>;");
        assert_eq!(mask(r"load C:\Windows\x.dll"), "load <*>");
        assert_eq!(mask("get https://example.org/a?b=c ok"), "get <*> ok");
        assert_eq!(mask("(see http://x.org/a)."), "(see <*>).");
        assert_eq!(mask("block blk_-6952295868487656571"), "block <*>");
        assert_eq!(mask("retry in 30s, -5 left"), "retry in <*>, <*> left");
        assert_eq!(mask("plain words only"), "plain words only");
    }

    #[test]
    fn fast_path_tokens_mask_as_the_full_rules_do() {
        // Tokens without separators take a shortcut in `fill`; it must agree with
        // `mask_piece`, which applies every rule.
        for tok in [
            "Failed",
            "1.2.3.4",
            "ssh2",
            "v1.2.3",
            "a.b.c",
            "abc-def_ghi",
            "0",
            "deadbeefcafebab",
            "deadbeefcafebabe",
            "DEADBEEFCAFEBABE",
            "deadbeefcafebabeg",
            "deadbeefcafebabe1",
            "héllo",
            "x\u{e9}1",
            "blk_-6952295868487656571",
        ] {
            let mut full = String::new();
            mask_piece(tok, &mut full);
            assert_eq!(mask(tok), full, "{tok}");
        }
    }

    #[test]
    fn masks_inside_tokens_and_keeps_constant_parts() {
        assert_eq!(mask("onExtend:1514038530000 14"), "onExtend:<*> <*>");
        assert_eq!(mask("at 2016/9/27:20:30:31.455 ok"), "at <*> ok");
        assert_eq!(mask("[sweep:1831]: x"), "[sweep:<*>]: x");
        assert_eq!(mask("a=1,b=2"), "a=<*>,b=<*>");
        // A dotted name joined to a value is an address: masked with it.
        assert_eq!(mask("to www.example.org:443 ok"), "to <*> ok");
        assert_eq!(mask("at Main.java:42 and a.b.c"), "at <*> and a.b.c");
    }

    #[test]
    fn masks_quoted_strings_and_key_values() {
        assert_eq!(mask(r#"tag="View Lock", name=x"#), r#"tag="<*>", name=<*>"#);
        // Free text in quotes is one token, masked inside; a quoted value is masked whole.
        assert_eq!(mask("say 'hello  world' now"), "say 'hello world' now");
        assert_eq!(tokens("say 'hello  world' now"), 3);
        assert_eq!(
            mask(r#"ip "GET /v2/1f/servers/detail HTTP/1.1" status: 200"#),
            r#"ip "GET <*> HTTP/<*>" status: <*>"#
        );
        assert_eq!(mask("can't stop won't stop"), "can't stop won't stop");
        assert_eq!(
            mask("uid=0 euid=0 ruser= rhost=a.b"),
            "uid=<*> euid=<*> ruser= rhost=<*>"
        );
        assert_eq!(mask("by (uid=0)"), "by (uid=<*>)");
        assert_eq!(mask("top=Info{a.b/c.D} x"), "top=<*> x");
        assert_eq!(mask("x == null?true"), "x == null?true");
        // An unclosed quote is left as it is.
        assert_eq!(mask(r#"say "hello"#), r#"say "hello"#);
    }

    #[test]
    fn masks_timestamps_with_names_and_collapses_value_lists() {
        assert_eq!(mask("at Fri Jul  1 07:57:30 2005 done"), "at <*> done");
        assert_eq!(mask("Mon, 3 Jan 2022"), "<*>, <*>");
        assert_eq!(mask("May I help"), "May I help");
        assert_eq!(mask("on Wednesday, September 7"), "on <*>, <*>");
        assert_eq!(mask("Sept 7 monday."), "<*> <*>.");
        assert_eq!(mask("Monkey Julia"), "Monkey Julia");
        assert_eq!(mask("delete blk_1 blk_2 blk_3"), "delete <*>");
    }

    #[test]
    fn empty_and_whitespace_lines_share_one_empty_pattern() {
        let mut m = miner();
        let a = m.observe("");
        let b = m.observe("   \t  ");
        assert_eq!(a, b);
        assert_eq!(m.template(a), Some(""));
        assert_eq!(m.count(a), Some(2));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn groups_same_messages_and_separates_different_ones() {
        let mut m = miner();
        let a = m.observe("Failed password for root from 10.0.0.1 port 22 ssh2");
        let b = m.observe("Failed password for admin from 10.0.0.2 port 4242 ssh2");
        let c = m.observe("Accepted password for root from 10.0.0.3 port 22 ssh2");
        let d = m.observe("Connection closed by 10.0.0.9 [preauth]");
        let e = m.observe("Connection closed by 10.1.0.9 [preauth]");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(d, e);
        assert_ne!(a, d);
        assert_eq!(
            m.template(a),
            Some("Failed password for <*> from <*> port <*>")
        );
        assert_eq!(m.template(d), Some("Connection closed by <*> [preauth]"));
        assert_eq!(m.len(), 3);
        let mut counts: Vec<u64> = m.patterns().map(|p| p.2).collect();
        counts.sort_unstable();
        assert_eq!(counts, vec![1, 2, 2]);
    }

    #[test]
    fn ids_are_stable_across_miners_and_while_templates_generalise() {
        let lines = [
            "login ok for user alice from 10.0.0.1",
            "disk /dev/sda1 is 91% full",
            "login ok for user bob from 10.0.0.2",
            "disk /dev/sdb1 is 97% full",
            "login ok for user carol from 10.0.0.3",
        ];
        let mut m1 = miner();
        let mut m2 = miner();
        let ids1: Vec<_> = lines.iter().map(|l| m1.observe(l)).collect();
        let ids2: Vec<_> = lines.iter().map(|l| m2.observe(l)).collect();
        assert_eq!(ids1, ids2);
        // The first template was "login ok for user alice from <*>"; it generalised and
        // kept its id.
        assert_eq!(ids1[0], ids1[2]);
        assert_eq!(ids1[0], ids1[4]);
        assert_eq!(m1.template(ids1[0]), Some("login ok for user <*> from <*>"));
        // The id derives from the first masked template, not from arrival order.
        let mut m3 = miner();
        m3.observe("something else entirely");
        assert_eq!(m3.observe(lines[1]), ids1[1]);
    }

    #[test]
    fn id_displays_as_short_lowercase_hex() {
        let mut m = miner();
        let id = m.observe("hello world");
        let s = id.to_string();
        assert_eq!(s.len(), 12);
        assert!(
            s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(u64::from_str_radix(&s, 16).ok(), Some(id.as_u64()));
    }

    #[test]
    fn evicts_least_recently_used_beyond_max_clusters() {
        let mut m = Miner::new(MinerOptions {
            max_clusters: 3,
            ..MinerOptions::default()
        });
        let a = m.observe("alpha one");
        let b = m.observe("beta two");
        let c = m.observe("gamma three");
        assert_eq!(m.observe("alpha one"), a); // a is now the most recent
        let d = m.observe("delta four");
        assert_eq!(m.len(), 3);
        assert!(m.template(b).is_none(), "b was the least recently used");
        assert!(m.template(a).is_some());
        assert!(m.template(c).is_some());
        assert!(m.template(d).is_some());
        // b comes back with the same id, and its count starts again.
        assert_eq!(m.observe("beta two"), b);
        assert_eq!(m.count(b), Some(1));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn bounds_clusters_per_leaf() {
        let mut m = Miner::new(MinerOptions {
            max_children: 2,
            ..MinerOptions::default()
        });
        // Same token count and first two tokens: one leaf; all different after that.
        let a = m.observe("job step alpha beta gamma");
        m.observe("job step delta epsilon zeta");
        m.observe("job step eta theta iota");
        assert_eq!(m.len(), 2);
        assert!(m.template(a).is_none());
    }

    #[test]
    fn memory_stays_bounded_under_distinct_messages() {
        let mut m = Miner::new(MinerOptions {
            max_clusters: 50,
            ..MinerOptions::default()
        });
        for i in 0..20_000u32 {
            // Letters only, so nothing is masked: every message is new.
            let w: String = i
                .to_string()
                .bytes()
                .map(|d| char::from(b'a' + (d - b'0')))
                .collect();
            let line = format!("{w} {w}{w} x{w} y{w} {}", "z".repeat((i % 7) as usize + 1));
            m.observe(&line);
            assert!(m.len() <= 50);
        }
        assert_eq!(m.len(), 50);
        assert!(m.slots.len() <= 50);
        assert!(m.ids.len() <= 50);
        assert!(m.leaves.values().map(Vec::len).sum::<usize>() <= 50);
        assert!(m.leaves.len() <= 50);
        assert!(m.seen.len() <= SEEN_CAPACITY);
    }

    #[test]
    fn repeated_messages_take_the_fast_path_to_the_same_pattern() {
        let mut m = miner();
        let a = m.observe("cache hit for key 42 in 3ms");
        for i in 0..10 {
            assert_eq!(m.observe(&format!("cache hit for key {i} in {i}ms")), a);
        }
        assert_eq!(m.count(a), Some(11));
        assert_eq!(m.len(), 1);
        assert_eq!(m.template(a), Some("cache hit for key <*> in <*>"));
    }

    #[test]
    fn long_lines_are_truncated_for_mining_and_templates_are_bounded() {
        let opts = MinerOptions {
            max_tokens: 8,
            max_template_len: 20,
            ..MinerOptions::default()
        };
        let mut m = Miner::new(opts);
        let head = "a b c d e f g h";
        let a = m.observe(&format!("{head} tail one {}", "x ".repeat(10_000)));
        let b = m.observe(&format!("{head} another tail"));
        assert_eq!(a, b, "only the first 8 tokens are mined");
        let t = m.template(a).unwrap_or_default();
        assert_eq!(t, "a b c d e f g h");
        let long = "word ".repeat(30);
        let c = m.observe(&long);
        let t = m.template(c).unwrap_or_default();
        assert!(t.chars().count() <= 20, "{t:?}");
        assert!(t.ends_with("..."));
        // A huge single token costs at most MAX_MESSAGE_BYTES of work.
        let huge = "z".repeat(10 * MAX_MESSAGE_BYTES);
        let d = m.observe(&huge);
        assert_eq!(m.observe(&huge[..MAX_MESSAGE_BYTES]), d);
        assert_eq!(m.template(d).map(|t| t.chars().count()), Some(20));
        // The cluster keeps no more text than its template can show.
        let kept: usize = m
            .slots
            .iter()
            .flatten()
            .flat_map(|c| c.words.iter())
            .map(|w| w.len())
            .sum();
        assert!(kept <= 4 * 4 * 20, "{kept}");
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let mut m = Miner::new(MinerOptions {
            max_template_len: 5,
            ..MinerOptions::default()
        });
        let id = m.observe("ééééééééé ünïcödé");
        assert_eq!(m.template(id), Some("éé..."));
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        m.observe(&long);
    }

    #[test]
    fn options_are_validated_and_clamped() {
        assert!(MinerOptions::default().validate().is_ok());
        let bad = MinerOptions {
            similarity: 1.5,
            ..MinerOptions::default()
        };
        assert_eq!(bad.validate(), Err(OptionsError::Similarity(1.5)));
        let bad = MinerOptions {
            depth: 2,
            ..MinerOptions::default()
        };
        assert_eq!(bad.validate(), Err(OptionsError::Depth(2)));
        let bad = MinerOptions {
            max_clusters: 0,
            ..MinerOptions::default()
        };
        assert_eq!(bad.validate(), Err(OptionsError::Zero("max_clusters")));
        let m = Miner::new(MinerOptions {
            similarity: f64::NAN,
            depth: 0,
            max_clusters: 0,
            max_template_len: 0,
            max_tokens: 0,
            max_children: 0,
        });
        assert!(m.options().validate().is_ok());
    }
}
