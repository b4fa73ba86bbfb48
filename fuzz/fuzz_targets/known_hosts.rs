//! known_hosts parsing and matching: the first line is `host port` to look up, the rest is
//! the file. No panic; and a line naming the host with a key, appended to whatever the file
//! says, makes that key trusted for the host (unless the file revokes it).
#![no_main]

use russh::keys::{Algorithm, PublicKey};
use vitals::exporter::ssh_disk::known_hosts::{KnownHosts, Verdict, lookup_name};

const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID2UCNTX2vN78TeJYuRfFvEn5Svig2OlwKK4DYuHBVsQ";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, file) = text.split_once('\n').unwrap_or(("db1 22", &text));
    let mut words = first.split_whitespace();
    let host: String = words
        .next()
        .unwrap_or("db1")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        .take(64)
        .collect();
    let host = if host.is_empty() { "db1".to_string() } else { host };
    let port: u16 = words.next().and_then(|p| p.parse().ok()).unwrap_or(22);
    let key = PublicKey::from_openssh(ED).expect("constant key parses");

    let known = KnownHosts::parse(file);
    let verdict = known.check(&host, port, &key);
    assert_eq!(verdict, known.check(&host, port, &key), "deterministic");
    let _ = known.algorithms_for(&host, port);

    let sep = if file.is_empty() || file.ends_with('\n') { "" } else { "\n" };
    let appended = format!("{file}{sep}{} {ED}\n", lookup_name(&host, port));
    let known = KnownHosts::parse(&appended);
    let verdict = known.check(&host, port, &key);
    assert!(
        matches!(verdict, Verdict::Trusted { .. } | Verdict::Revoked { .. }),
        "{verdict:?} for {host}:{port}"
    );
    if matches!(verdict, Verdict::Trusted { .. }) {
        assert!(known.algorithms_for(&host, port).contains(&Algorithm::Ed25519));
    }
});
