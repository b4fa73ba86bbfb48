//! Host key verification: OpenSSH `known_hosts` files, `SHA256:` fingerprint pins, and trust
//! on first use when it is configured.
//!
//! Lines are parsed by `ssh-key` (through russh); matching is done here, because russh's own
//! helper knows neither wildcards, negations nor `@revoked`. What is checked:
//!
//! - the name looked up is `host` for port 22 and `[host]:port` otherwise, lower-cased, as
//!   OpenSSH writes it;
//! - patterns: comma-separated, `*` and `?` wildcards, `!pattern` negation (a matching
//!   negation makes the whole line not apply), and hashed names (`|1|salt|hash`, HMAC-SHA1);
//! - a host may have several keys (one per type, or several during a rotation): any plain
//!   line naming the host with the presented key trusts it;
//! - a key listed on an `@revoked` line is refused for every host, whatever else the file
//!   says (stricter than OpenSSH, which only applies revocations whose patterns match);
//! - `@cert-authority` lines never trust a plain host key (certificates are not accepted);
//! - a line naming the host with another key of the same type is a changed key, refused, and
//!   never overwritten by trust on first use;
//! - lines that do not parse are skipped and counted, as OpenSSH skips them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

/// The name a host is listed under: `host` on port 22, `[host]:port` otherwise.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The `SHA256:...` fingerprint of a key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What a known_hosts file says about a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A plain line naming the host holds this key.
    Trusted {
        /// Line number (1-based).
        line: usize,
    },
    /// An `@revoked` line lists this key.
    Revoked {
        /// Line number (1-based).
        line: usize,
    },
    /// A line naming the host holds another key of the same type.
    Changed {
        /// Line number (1-based) of the first such line.
        line: usize,
    },
    /// No line trusts the key.
    NotListed {
        /// Whether other plain lines name the host (with keys of other types).
        host_known: bool,
    },
}

/// A parsed known_hosts file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<(usize, Entry)>,
    /// Lines that could not be parsed and were skipped.
    pub skipped: usize,
}

impl KnownHosts {
    /// Parses the text of a known_hosts file.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            // ssh-key splits on single spaces; OpenSSH accepts any blanks.
            let normalized = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
            match normalized.parse::<Entry>() {
                Ok(entry) => out.entries.push((i + 1, entry)),
                Err(e) => {
                    tracing::debug!(line = i + 1, error = %e, "skipping a known_hosts line");
                    out.skipped += 1;
                }
            }
        }
        out
    }

    /// Reads and parses a file; a file that does not exist is empty.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    fn plain_entries_for<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (usize, &'a Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.marker().is_none() && host_matches(e.host_patterns(), name))
            .map(|(line, e)| (*line, e))
    }

    /// Checks a presented host key for `host:port`.
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        if let Some((line, _)) = self.entries.iter().find(|(_, e)| {
            e.marker() == Some(&Marker::Revoked) && e.public_key().key_data() == key.key_data()
        }) {
            return Verdict::Revoked { line: *line };
        }
        let name = lookup_name(host, port);
        let mut changed = None;
        let mut host_known = false;
        for (line, e) in self.plain_entries_for(&name) {
            host_known = true;
            if e.public_key().key_data() == key.key_data() {
                return Verdict::Trusted { line };
            }
            if same_type(&e.public_key().algorithm(), &key.algorithm()) && changed.is_none() {
                changed = Some(line);
            }
        }
        match changed {
            Some(line) => Verdict::Changed { line },
            None => Verdict::NotListed { host_known },
        }
    }

    /// The key types listed for `host:port` on plain lines, in file order, so that the
    /// handshake can ask the server for a key that can be verified.
    pub fn algorithms_for(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for (_, e) in self.plain_entries_for(&name) {
            let alg = e.public_key().algorithm();
            let variants = if alg.clone().is_rsa() {
                // Any RSA signature hash verifies against an RSA key; prefer SHA-2.
                vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                ]
            } else {
                vec![alg]
            };
            for v in variants {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        out
    }
}

fn same_type(a: &Algorithm, b: &Algorithm) -> bool {
    a == b || (a.clone().is_rsa() && b.clone().is_rsa())
}

fn host_matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => Hmac::<Sha1>::new_from_slice(salt)
            .map(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
            .unwrap_or(false),
        HostPatterns::Patterns(list) => {
            let mut matched = false;
            for pattern in list {
                let (negated, pattern) = match pattern.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, pattern.as_str()),
                };
                if glob(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
                    if negated {
                        return false;
                    }
                    matched = true;
                }
            }
            matched
        }
    }
}

/// OpenSSH's pattern match: `*` any run of characters, `?` one character.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == text.get(t) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// Why a host key was refused. Messages carry fingerprints (public), never secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    /// The server presented a certificate; only plain keys are verified.
    #[error("the server presented a host certificate; only plain host keys are accepted")]
    Certificate,
    /// The key does not match the pinned fingerprint.
    #[error("host key {got} does not match host_key_fingerprint {want}")]
    FingerprintMismatch {
        /// Fingerprint of the presented key.
        got: String,
        /// The pinned fingerprint.
        want: String,
    },
    /// The key is revoked in known_hosts.
    #[error("host key {fingerprint} is revoked in {file}:{line}")]
    Revoked {
        /// Fingerprint of the presented key.
        fingerprint: String,
        /// The known_hosts file.
        file: String,
        /// Line of the `@revoked` entry.
        line: usize,
    },
    /// The host is listed with another key of the same type.
    #[error(
        "host key {fingerprint} differs from the one recorded in {file}:{line}: the host key changed (or someone is intercepting)"
    )]
    Changed {
        /// Fingerprint of the presented key.
        fingerprint: String,
        /// The known_hosts file.
        file: String,
        /// Line of the recorded key.
        line: usize,
    },
    /// The host (or this key type) is not in known_hosts and trust on first use is off.
    #[error("host key {fingerprint} for {name} is not in {file}")]
    Unknown {
        /// Fingerprint of the presented key.
        fingerprint: String,
        /// The name looked up.
        name: String,
        /// The known_hosts file.
        file: String,
    },
    /// The known_hosts file could not be read or written.
    #[error("{file}: {reason}")]
    Io {
        /// The known_hosts file.
        file: String,
        /// What failed.
        reason: String,
    },
}

/// How one target's host key is verified.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Host name as configured (looked up as in [`lookup_name`]).
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// known_hosts file, if any.
    pub known_hosts: Option<PathBuf>,
    /// Pinned `SHA256:` fingerprint, if any.
    pub fingerprint: Option<String>,
    /// Learn the key of a host that has no entry.
    pub trust_on_first_use: bool,
}

/// What a successful verification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The pin or a known_hosts line matched.
    Known,
    /// The key was learned and appended to known_hosts.
    Learned,
}

/// Serialises appends to known_hosts files within this process.
static APPEND_LOCK: Mutex<()> = Mutex::new(());

impl Policy {
    /// Reads the known_hosts file, once per connection; `None` when none is configured.
    pub fn load(&self) -> Result<Option<KnownHosts>, HostKeyError> {
        self.known_hosts
            .as_deref()
            .map(|path| {
                KnownHosts::read(path).map_err(|e| HostKeyError::Io {
                    file: path.display().to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// Host key algorithms to ask for, most preferred first; empty means russh's defaults.
    pub fn preferred_algorithms(&self, known: Option<&KnownHosts>) -> Vec<Algorithm> {
        known.map_or_else(Vec::new, |k| k.algorithms_for(&self.host, self.port))
    }

    /// Verifies a presented host key: the pin first, then `known` (as [`Policy::load`]
    /// read it).
    pub fn verify(
        &self,
        known: Option<&KnownHosts>,
        key: &PublicKey,
    ) -> Result<Accepted, HostKeyError> {
        let got = fingerprint(key);
        if let Some(want) = &self.fingerprint
            && *want != got
        {
            return Err(HostKeyError::FingerprintMismatch {
                got,
                want: want.clone(),
            });
        }
        let Some(path) = &self.known_hosts else {
            return Ok(Accepted::Known);
        };
        // A configured file that was not passed in trusts nothing.
        let empty = KnownHosts::default();
        let known = known.unwrap_or(&empty);
        let file = path.display().to_string();
        match known.check(&self.host, self.port, key) {
            Verdict::Trusted { .. } => Ok(Accepted::Known),
            Verdict::Revoked { line } => Err(HostKeyError::Revoked {
                fingerprint: got,
                file,
                line,
            }),
            Verdict::Changed { line } => Err(HostKeyError::Changed {
                fingerprint: got,
                file,
                line,
            }),
            Verdict::NotListed { host_known } => {
                if self.trust_on_first_use && !host_known {
                    append(path, &self.host, self.port, key).map_err(|e| HostKeyError::Io {
                        file,
                        reason: e.to_string(),
                    })?;
                    Ok(Accepted::Learned)
                } else {
                    Err(HostKeyError::Unknown {
                        fingerprint: got,
                        name: lookup_name(&self.host, self.port),
                        file,
                    })
                }
            }
        }
    }
}

/// Appends `name key` to a known_hosts file (created 0600 if missing).
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let line = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let _guard = APPEND_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let existing = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let sep = if existing.is_empty() || existing.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    writeln!(file, "{sep}{} {line}", lookup_name(host, port))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str = include_str!("fixtures/keys/ed_a.pub");
    const ED_B: &str = include_str!("fixtures/keys/ed_b.pub");
    const EC_A: &str = include_str!("fixtures/keys/ec_a.pub");
    const RSA_A: &str = include_str!("fixtures/keys/rsa_a.pub");

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text.trim()).expect("fixture key parses")
    }

    fn body(text: &str) -> &str {
        text.trim()
    }

    #[test]
    fn lookup_names_follow_openssh() {
        assert_eq!(lookup_name("DB1.Example.com", 22), "db1.example.com");
        assert_eq!(lookup_name("10.0.0.5", 2222), "[10.0.0.5]:2222");
    }

    #[test]
    fn plain_and_bracketed_names() {
        let kh = KnownHosts::parse(&format!("db1 {}\n[db1]:2222 {}\n", body(ED_A), body(ED_B)));
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::Trusted { line: 1 }
        );
        assert_eq!(
            kh.check("db1", 2222, &key(ED_B)),
            Verdict::Trusted { line: 2 }
        );
        // The port-22 entry does not cover another port, and the reverse.
        assert_eq!(
            kh.check("db1", 2222, &key(ED_A)),
            Verdict::Changed { line: 2 }
        );
        assert_eq!(
            kh.check("db1", 2200, &key(ED_A)),
            Verdict::NotListed { host_known: false }
        );
    }

    #[test]
    fn hashed_host_names() {
        let kh = KnownHosts::parse(include_str!("fixtures/keys/hashed_known_hosts"));
        assert_eq!(kh.skipped, 0);
        assert_eq!(
            kh.check("db.example.com", 2222, &key(ED_A)),
            Verdict::Trusted { line: 1 }
        );
        assert_eq!(
            kh.check("db.example.com", 2222, &key(ED_B)),
            Verdict::Changed { line: 1 }
        );
        assert_eq!(
            kh.check("db.example.com", 22, &key(ED_A)),
            Verdict::NotListed { host_known: false }
        );
    }

    #[test]
    fn wildcards_and_negation() {
        let kh = KnownHosts::parse(&format!(
            "*.prod.example,!bastion.prod.example,[10.0.0.?]:2222 {}\n",
            body(ED_A)
        ));
        assert_eq!(
            kh.check("db1.prod.example", 22, &key(ED_A)),
            Verdict::Trusted { line: 1 }
        );
        assert_eq!(
            kh.check("bastion.prod.example", 22, &key(ED_A)),
            Verdict::NotListed { host_known: false }
        );
        assert_eq!(
            kh.check("10.0.0.7", 2222, &key(ED_A)),
            Verdict::Trusted { line: 1 }
        );
        assert_eq!(
            kh.check("10.0.0.17", 2222, &key(ED_A)),
            Verdict::NotListed { host_known: false }
        );
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a?c", b"ac"));
        assert!(!glob(b"abc", b"abcd"));
    }

    #[test]
    fn several_keys_per_host_and_key_types() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\ndb1 {}\ndb1\t{}\ndb1 {}\ndb1 {}\n",
            body(ED_B),
            body(ED_A),
            body(EC_A),
            body(RSA_A)
        ));
        // ED_B is listed first, ED_A later: a rotation, both trusted.
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::Trusted { line: 4 }
        );
        assert_eq!(
            kh.check("db1", 22, &key(ED_B)),
            Verdict::Trusted { line: 3 }
        );
        assert_eq!(
            kh.check("db1", 22, &key(EC_A)),
            Verdict::Trusted { line: 5 }
        );
        assert_eq!(
            kh.check("db1", 22, &key(RSA_A)),
            Verdict::Trusted { line: 6 }
        );
        let algs = kh.algorithms_for("db1", 22);
        assert_eq!(algs.first(), Some(&Algorithm::Ed25519));
        assert!(algs.iter().any(|a| a.clone().is_rsa()));
        assert_eq!(algs.len(), 4, "{algs:?}");
    }

    #[test]
    fn changed_key_of_the_same_type_is_detected() {
        let kh = KnownHosts::parse(&format!("db1 {}\ndb1 {}\n", body(EC_A), body(ED_B)));
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::Changed { line: 2 }
        );
        // Only another type known: not a change, but not trusted either.
        let kh = KnownHosts::parse(&format!("db1 {}\n", body(EC_A)));
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::NotListed { host_known: true }
        );
    }

    #[test]
    fn revoked_keys_are_refused_whatever_else_is_listed() {
        let kh = KnownHosts::parse(&format!(
            "db1 {}\n@revoked * {}\n@revoked other {}\n",
            body(ED_A),
            body(ED_A),
            body(ED_B)
        ));
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::Revoked { line: 2 }
        );
        assert_eq!(
            kh.check("db1", 22, &key(ED_B)),
            Verdict::Revoked { line: 3 }
        );
    }

    #[test]
    fn cert_authority_lines_do_not_trust_plain_keys_and_bad_lines_are_skipped() {
        let kh = KnownHosts::parse(&format!(
            "@cert-authority db1 {}\ndb1 ssh-ed25519 not-base64!\ngarbage\n",
            body(ED_A)
        ));
        assert_eq!(kh.skipped, 2);
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::NotListed { host_known: false }
        );
    }

    fn verify(policy: &Policy, key: &PublicKey) -> Result<Accepted, HostKeyError> {
        let known = policy.load()?;
        policy.verify(known.as_ref(), key)
    }

    #[test]
    fn policy_pins_tofu_and_refusals() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("known_hosts");
        let mut policy = Policy {
            host: "db1".into(),
            port: 2222,
            known_hosts: Some(path.clone()),
            fingerprint: None,
            trust_on_first_use: false,
        };
        let a = key(ED_A);
        assert!(matches!(
            verify(&policy, &a),
            Err(HostKeyError::Unknown { .. })
        ));
        assert!(
            !path.exists(),
            "nothing is written without trust_on_first_use"
        );

        policy.trust_on_first_use = true;
        assert_eq!(verify(&policy, &a), Ok(Accepted::Learned));
        let text = std::fs::read_to_string(&path).expect("learned file");
        assert_eq!(text, format!("[db1]:2222 {}\n", body(ED_A)));
        assert_eq!(verify(&policy, &a), Ok(Accepted::Known));
        // A different key afterwards is a change, refused and not written.
        let err = verify(&policy, &key(ED_B)).expect_err("changed key");
        assert!(
            matches!(err, HostKeyError::Changed { line: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&fingerprint(&key(ED_B))));
        // A host known with another key type is not learned either.
        assert!(matches!(
            verify(&policy, &key(EC_A)),
            Err(HostKeyError::Unknown { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("file"), text);

        // The pin is checked on its own and before known_hosts.
        let pinned = Policy {
            known_hosts: None,
            fingerprint: Some(fingerprint(&a)),
            trust_on_first_use: false,
            ..policy.clone()
        };
        assert_eq!(verify(&pinned, &a), Ok(Accepted::Known));
        assert!(matches!(
            verify(&pinned, &key(ED_B)),
            Err(HostKeyError::FingerprintMismatch { .. })
        ));
        assert_eq!(
            fingerprint(&a),
            "SHA256:l8gIoO+2e3W7yDwjy2waozNh3gbkc2HTPuTWoEh6q5E"
        );
    }

    #[test]
    fn append_adds_a_newline_when_the_file_lacks_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, format!("db0 {}", body(EC_A))).expect("write");
        append(&path, "DB1", 22, &key(ED_A)).expect("append");
        let kh = KnownHosts::read(&path).expect("read");
        assert_eq!(kh.skipped, 0);
        assert_eq!(
            kh.check("db1", 22, &key(ED_A)),
            Verdict::Trusted { line: 2 }
        );
        assert_eq!(
            kh.check("db0", 22, &key(EC_A)),
            Verdict::Trusted { line: 1 }
        );
    }
}
