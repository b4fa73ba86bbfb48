//! Security and service events recognised in parsed records: SSH logins and authentication
//! failures (with the source address), fail2ban actions, firewall blocks from netfilter log
//! lines (UFW, firewalld, iptables LOG), PostgreSQL errors by SQLSTATE class and certbot
//! renewal results.
//!
//! Runs on every line of a source, so the hot path allocates nothing for the common events:
//! label values borrow from the message (or are static) and only become owned `String`s
//! when the caller stores a new key.

use std::borrow::Cow;

use super::parsers::{Level, Record};

/// One recognised event. Label values borrow from the record where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `Failed <method> for [invalid user] <user> from <ip>`.
    SshAuthFailure {
        /// `password`, `publickey`, `keyboard_interactive`, `none`, `invalid_user`.
        reason: Cow<'a, str>,
        /// Source address.
        ip: Cow<'a, str>,
    },
    /// `Accepted <method> for <user> from <ip>`.
    SshLogin {
        /// `password`, `publickey`, ...
        method: Cow<'a, str>,
    },
    /// `[jail] Ban|Unban|Restore Ban <ip>`.
    Fail2ban {
        /// Jail name.
        jail: Cow<'a, str>,
        /// `ban`, `unban` or `restore_ban`.
        action: Cow<'a, str>,
    },
    /// A netfilter log line of a blocked (or logged) packet.
    FirewallBlock {
        /// `block`, `drop`, `reject`, `allow`, `audit` or `log`.
        action: Cow<'a, str>,
        /// Lower-case protocol (`tcp`, `udp`, `icmp`, ...).
        proto: Cow<'a, str>,
    },
    /// A PostgreSQL error, fatal or panic.
    PostgresError {
        /// `error` or `critical` (FATAL and PANIC).
        severity: Cow<'a, str>,
        /// The SQLSTATE class (two characters), or `unknown`.
        sqlstate_class: Cow<'a, str>,
    },
    /// A certbot renewal outcome.
    CertbotRenewal {
        /// `success`, `failure` or `not_due`.
        result: Cow<'a, str>,
    },
}

/// Substring search without the set-up cost of `str::find` for short texts.
fn find(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    let first = *n.first()?;
    hay.as_bytes()
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .map(|(i, _)| i)
        .find(|&i| hay.as_bytes().get(i..i + n.len()) == Some(n))
}

fn word_after<'a>(s: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = s.strip_prefix(prefix)?;
    Some(rest.split_once(' ').unwrap_or((rest, "")))
}

/// Keeps a token only if it looks like an IPv4 or IPv6 address (bounded label values), in
/// its canonical text form. An IPv4 address that parses is already canonical (the parser
/// rejects leading zeros), so it is borrowed; IPv6 is rewritten (`2001:DB8:0::1` ->
/// `2001:db8::1`).
fn address(tok: &str) -> Option<Cow<'_, str>> {
    let t = tok.trim_matches(|c| c == '[' || c == ']');
    match t.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => Some(Cow::Borrowed(t)),
        a @ std::net::IpAddr::V6(_) => Some(Cow::Owned(a.to_string())),
    }
}

/// `keyboard-interactive` -> `keyboard_interactive`, without allocating when there is no `-`.
fn underscored(method: &str) -> Cow<'_, str> {
    if method.contains('-') {
        Cow::Owned(method.replace('-', "_"))
    } else {
        Cow::Borrowed(method)
    }
}

fn ssh(msg: &str) -> Option<Event<'_>> {
    // Cheap pre-check: both events start with a capital letter this function knows.
    match msg.as_bytes().first() {
        Some(b'F' | b'A') => {}
        _ => return None,
    }
    if let Some((method, rest)) = word_after(msg, "Failed ") {
        let rest = rest.strip_prefix("for ")?;
        let (invalid, rest) = match rest.strip_prefix("invalid user ") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let from = find(rest, " from ")?;
        let ip = address(rest[from + 6..].split(' ').next()?)?;
        let reason = if invalid {
            Cow::Borrowed("invalid_user")
        } else {
            underscored(method)
        };
        return Some(Event::SshAuthFailure { reason, ip });
    }
    if let Some((method, rest)) = word_after(msg, "Accepted ") {
        rest.strip_prefix("for ")?;
        find(rest, " from ")?;
        return Some(Event::SshLogin {
            method: underscored(method),
        });
    }
    None
}

fn fail2ban(msg: &str) -> Option<Event<'_>> {
    let rest = msg.strip_prefix('[')?;
    let (jail, rest) = rest.split_once("] ")?;
    let rest = rest.trim_start();
    let action = if rest.starts_with("Restore Ban ") {
        "restore_ban"
    } else if rest.starts_with("Ban ") {
        "ban"
    } else if rest.starts_with("Unban ") {
        "unban"
    } else {
        return None;
    };
    Some(Event::Fail2ban {
        jail: Cow::Borrowed(jail),
        action: Cow::Borrowed(action),
    })
}

fn firewall(msg: &str) -> Option<Event<'static>> {
    let src = find(msg, " SRC=")?;
    let proto_at = find(msg, " PROTO=")?;
    let proto = msg[proto_at + 7..]
        .split(' ')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let head = msg[..src].to_ascii_uppercase();
    let action: Cow<'static, str> = if let Some(i) = head.find("[UFW ") {
        Cow::Owned(
            head[i + 5..]
                .split(']')
                .next()
                .unwrap_or("log")
                .to_ascii_lowercase(),
        )
    } else if head.contains("REJECT") {
        Cow::Borrowed("reject")
    } else if head.contains("DROP") {
        Cow::Borrowed("drop")
    } else if head.contains("BLOCK") || head.contains("DENY") {
        Cow::Borrowed("block")
    } else if head.contains("ACCEPT") || head.contains("ALLOW") {
        Cow::Borrowed("allow")
    } else {
        Cow::Borrowed("log")
    };
    let proto = if proto.is_empty() || proto.len() > 16 {
        Cow::Borrowed("other")
    } else {
        Cow::Owned(proto)
    };
    Some(Event::FirewallBlock { action, proto })
}

fn certbot(msg: &str) -> Option<Event<'static>> {
    let result = if msg.contains("Failed to renew certificate") || msg.contains("renewal failure") {
        "failure"
    } else if msg.contains("not yet due for renewal") {
        "not_due"
    } else if msg.contains("all renewals succeeded")
        || msg.contains("Successfully renewed")
        || msg.starts_with("Congratulations! Your certificate")
    {
        "success"
    } else {
        return None;
    };
    Some(Event::CertbotRenewal {
        result: Cow::Borrowed(result),
    })
}

/// The event a record carries, if any.
pub fn classify<'a>(r: &'a Record<'_>) -> Option<Event<'a>> {
    let program = r.program.as_deref().unwrap_or("");
    let msg = r.message.as_ref();
    match program {
        "postgres" => {
            if r.level <= Level::Error {
                return Some(Event::PostgresError {
                    severity: Cow::Borrowed(r.level.as_str()),
                    sqlstate_class: Cow::Borrowed(
                        r.sqlstate
                            .as_deref()
                            .and_then(|s| s.get(..2))
                            .unwrap_or("unknown"),
                    ),
                });
            }
            return None;
        }
        "fail2ban" => return fail2ban(msg),
        "certbot" => return certbot(msg),
        _ => {}
    }
    if (program.starts_with("sshd") || program.is_empty())
        && let Some(e) = ssh(msg)
    {
        return Some(e);
    }
    if (program == "kernel" || program.is_empty())
        && let Some(e) = firewall(msg)
    {
        return Some(e);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn rec<'a>(program: &'a str, msg: &'a str) -> Record<'a> {
        let mut r = Record::new(Level::infer(msg), msg);
        r.program = Some(Cow::Borrowed(program));
        r
    }

    #[test]
    fn ssh_events() {
        assert_eq!(
            classify(&rec(
                "sshd",
                "Failed password for root from 112.95.230.3 port 45378 ssh2"
            )),
            Some(Event::SshAuthFailure {
                reason: "password".into(),
                ip: "112.95.230.3".into()
            })
        );
        assert_eq!(
            classify(&rec(
                "sshd",
                "Failed password for invalid user admin from 2001:db8::1 port 2 ssh2"
            )),
            Some(Event::SshAuthFailure {
                reason: "invalid_user".into(),
                ip: "2001:db8::1".into()
            })
        );
        assert_eq!(
            classify(&rec(
                "sshd",
                "Failed password for root from 5.36.59.76 port 42393"
            )),
            Some(Event::SshAuthFailure {
                reason: "password".into(),
                ip: "5.36.59.76".into()
            })
        );
        assert_eq!(
            classify(&rec(
                "sshd",
                "Accepted publickey for bob from 10.0.0.1 port 50000 ssh2: ED25519 SHA256:x"
            )),
            Some(Event::SshLogin {
                method: "publickey".into()
            })
        );
        assert_eq!(
            classify(&rec(
                "sshd",
                "Failed password for root from not-an-ip port 1"
            )),
            None
        );
        assert_eq!(
            classify(&rec("sshd", "Connection closed by 1.2.3.4 [preauth]")),
            None
        );
    }

    #[test]
    fn other_events() {
        assert_eq!(
            classify(&rec("fail2ban", "[sshd] Ban 1.2.3.4")),
            Some(Event::Fail2ban {
                jail: "sshd".into(),
                action: "ban".into()
            })
        );
        assert_eq!(
            classify(&rec("fail2ban", "[sshd] Found 1.2.3.4 - 2024-01-15")),
            None
        );
        assert_eq!(
            classify(&rec(
                "kernel",
                "[UFW BLOCK] IN=eth0 OUT= MAC=aa SRC=1.2.3.4 DST=5.6.7.8 LEN=60 PROTO=TCP SPT=1 DPT=22"
            )),
            Some(Event::FirewallBlock {
                action: "block".into(),
                proto: "tcp".into()
            })
        );
        assert_eq!(
            classify(&rec(
                "kernel",
                "FINAL_REJECT: IN=eth0 OUT= SRC=1.2.3.4 DST=5.6.7.8 PROTO=UDP"
            )),
            Some(Event::FirewallBlock {
                action: "reject".into(),
                proto: "udp".into()
            })
        );
        let mut pg = rec("postgres", "relation \"x\" does not exist");
        pg.level = Level::Error;
        pg.sqlstate = Some(Cow::Borrowed("42P01"));
        assert_eq!(
            classify(&pg),
            Some(Event::PostgresError {
                severity: "error".into(),
                sqlstate_class: "42".into()
            })
        );
        assert_eq!(
            classify(&rec(
                "certbot",
                "Failed to renew certificate example.com with error: x"
            )),
            Some(Event::CertbotRenewal {
                result: "failure".into()
            })
        );
    }
}
