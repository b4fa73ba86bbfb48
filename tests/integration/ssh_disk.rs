//! The ssh_disk collector against a real OpenSSH server on loopback: key types, passphrases,
//! passwords, host key verification, forced commands, timeouts, stale data, and agreement
//! with the local `df` (sshd runs on this machine, so its filesystems are ours).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vitals::exporter::ssh_disk::df::REMOTE_COMMAND;

use crate::support::promtool_check;
use crate::support::sshd::{Sshd, known_hosts_line, public_key, ssh_keygen};
use crate::support::vitals::Vitals;
use crate::support::{
    Sample, chmod, http_client, parse_samples, poll_until, require_binary, run_ok, sample_value,
    temp_dir, write_file,
};

/// How long a test waits for a refresh result (refreshes run every second here).
const WAIT: Duration = Duration::from_secs(20);

/// A directory bind-mounted onto a mount point whose name holds spaces; unmounted on drop.
struct BindMount {
    _dir: tempfile::TempDir,
    target: PathBuf,
}

impl BindMount {
    /// A bind mount at `<tmp>/disk with  spaces`, read-only when `readonly`. With `hidden`
    /// it lies under a directory only root may enter, so the test user's `df` cannot read it.
    fn new(readonly: bool, hidden: bool) -> BindMount {
        let dir = temp_dir("bind");
        // sshd runs df as the unprivileged test user: it must be able to reach the mount.
        chmod(dir.path(), 0o755);
        let source = dir.path().join("source");
        let parent = dir.path().join("private");
        let target = if hidden { &parent } else { dir.path() }.join("disk with  spaces");
        for d in [&source, &target] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let mount = require_binary("/usr/bin/mount", "mount");
        run_ok(
            Command::new(&mount).arg("--bind").arg(&source).arg(&target),
            "mount --bind (the tests run as root)",
        );
        if readonly {
            run_ok(
                Command::new(&mount)
                    .args(["-o", "remount,bind,ro"])
                    .arg(&target),
                "mount -o remount,bind,ro",
            );
        }
        if hidden {
            chmod(&parent, 0o700);
        }
        BindMount { _dir: dir, target }
    }

    fn mountpoint(&self) -> &str {
        self.target.to_str().expect("utf-8 temp path")
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.target)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
    }
}

/// One target's YAML, indented for `exporter.ssh_disk.targets`.
fn target_yaml(name: &str, sshd: &Sshd, extra: &[(&str, String)]) -> String {
    let mut s = format!(
        "      - name: {name}\n        host: {}\n        port: {}\n        user: {}\n        interval: 1s\n",
        sshd.host(),
        sshd.port(),
        sshd.user()
    );
    for (k, v) in extra {
        if v == "true" || v == "false" {
            s.push_str(&format!("        {k}: {v}\n"));
        } else {
            s.push_str(&format!("        {k}: '{v}'\n"));
        }
    }
    s
}

fn config(targets: &[String], top: &str) -> String {
    format!(
        "exporter:\n  ssh_disk:\n{top}    targets:\n{}",
        targets.concat()
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn scrape(v: &Vitals) -> (String, Vec<Sample>) {
    let text = v.metrics();
    let samples = parse_samples(&text);
    (text, samples)
}

fn up(s: &[Sample], target: &str) -> Option<f64> {
    sample_value(s, "ssh_target_up", &[("target", target)])
}

fn failures(s: &[Sample], target: &str, reason: &str) -> f64 {
    sample_value(
        s,
        "ssh_target_failures_total",
        &[("target", target), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Scrapes until `check` holds; panics with the last exposition and the logs otherwise.
fn wait_for(v: &Vitals, what: &str, check: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let mut last = String::new();
    let found = poll_until(WAIT, || {
        let (text, samples) = scrape(v);
        last = text;
        check(&samples).then_some(samples)
    });
    found.unwrap_or_else(|| {
        let ours: String = last
            .lines()
            .filter(|l| l.starts_with("ssh_target"))
            .collect::<Vec<_>>()
            .join("\n");
        panic!("timed out waiting for {what}\n{ours}\n{}", v.logs())
    })
}

/// Waits until every target is up, or has failed with its expected reason.
fn wait_for_outcomes(v: &Vitals, expected: &[(&str, Option<&str>)]) -> Vec<Sample> {
    wait_for(v, &format!("outcomes {expected:?}"), |s| {
        expected.iter().all(|(t, reason)| match reason {
            None => up(s, t) == Some(1.0),
            Some(r) => up(s, t) == Some(0.0) && failures(s, t, r) >= 1.0,
        })
    })
}

/// `Filesystem Type 1-blocks Used Available Capacity Mounted on` of `df -P -T -B1 PATH`, run
/// locally: (device, fstype, size, free, avail).
fn local_df(path: &str) -> (String, String, f64, f64, f64) {
    let out = run_ok(
        Command::new("df")
            .args(["-P", "-T", "-B1", path])
            .env("LC_ALL", "C"),
        "df",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().nth(1).expect("df data line").to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| f[i].parse::<f64>().expect("df number");
    (
        f[0].to_string(),
        f[1].to_string(),
        num(2),
        num(2) - num(3),
        num(4),
    )
}

fn openmetrics(v: &Vitals) -> String {
    http_client()
        .get(format!("{}/metrics", v.base_url()))
        .header("Accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .expect("GET /metrics")
        .text()
        .expect("body")
}

fn fs_value(s: &[Sample], metric: &str, target: &str, mountpoint: &str) -> Option<f64> {
    sample_value(s, metric, &[("target", target), ("mountpoint", mountpoint)])
}

fn last_success(s: &[Sample], target: &str) -> f64 {
    sample_value(
        s,
        "ssh_target_last_success_timestamp_seconds",
        &[("target", target)],
    )
    .unwrap_or(0.0)
}

#[test]
fn key_auth_reads_a_bind_mount_with_spaces_and_agrees_with_local_df() {
    let sshd = Sshd::start();
    let mount = BindMount::new(true, false);
    let hidden = BindMount::new(false, true);
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let local = target_yaml(
        "local",
        &sshd,
        &[
            ("key_file", path(sshd.client_key_path())),
            ("known_hosts", path(sshd.known_hosts_path())),
        ],
    );
    let down = format!(
        "      - name: down\n        host: 127.0.0.1\n        port: {closed}\n        user: x\n        interval: 1s\n        key_file: '{}'\n        known_hosts: '{}'\n",
        path(sshd.client_key_path()),
        path(sshd.known_hosts_path())
    );
    // The default type excludes would drop an overlay root; keep the mount point defaults.
    let v = Vitals::start(&config(
        &[local, down],
        "    fs_types_exclude: '^(proc|sysfs|cgroup2?|devpts|mqueue|tracefs|securityfs)$'\n",
    ));
    let mp = mount.mountpoint();
    wait_for(&v, "the bind mount", |s| {
        fs_value(s, "node_filesystem_avail_bytes", "local", mp).is_some()
    });

    // Agreement with the local df: sizes are equal; free and available bytes of the shared
    // root filesystem move with concurrent writes, so the value vitals reports must lie
    // between two local readings taken before and after a refresh that started after the
    // first reading (two new refreshes), widened by 256 MiB for writes that came and went.
    let before = local_df(mp);
    let s0 = scrape(&v).1;
    let t0 = last_success(&s0, "local");
    let s = wait_for(&v, "two more refreshes", |s| {
        last_success(s, "local") >= t0 + 1.5
    });
    let after = local_df(mp);
    let slack = 256.0 * 1024.0 * 1024.0;
    let size = fs_value(&s, "node_filesystem_size_bytes", "local", mp).expect("size");
    assert_eq!(size, before.2, "size of {mp}");
    for (metric, b, a) in [
        ("node_filesystem_free_bytes", before.3, after.3),
        ("node_filesystem_avail_bytes", before.4, after.4),
    ] {
        let got = fs_value(&s, metric, "local", mp).expect(metric);
        let (lo, hi) = (b.min(a) - slack, b.max(a) + slack);
        assert!(
            (lo..=hi).contains(&got),
            "{metric} {got} outside local df readings {b}..{a} ± 256 MiB"
        );
    }
    let labels = &s
        .iter()
        .find(|x| {
            x.name == "node_filesystem_size_bytes"
                && x.labels.get("mountpoint").map(String::as_str) == Some(mp)
        })
        .expect("series")
        .labels;
    assert_eq!(labels.get("device"), Some(&before.0));
    assert_eq!(labels.get("fstype"), Some(&before.1));
    assert!(
        fs_value(&s, "node_filesystem_files", "local", mp).is_some_and(|f| f >= 0.0),
        "inode counts come from the second table"
    );
    // /proc/mounts: the read-only bind mount, a writable root, and a mount the test user's
    // df cannot read (under a directory it may not enter): device_error 1 and no figures.
    assert_eq!(
        fs_value(&s, "node_filesystem_readonly", "local", mp),
        Some(1.0)
    );
    assert_eq!(
        fs_value(&s, "node_filesystem_device_error", "local", mp),
        Some(0.0)
    );
    let hp = hidden.mountpoint();
    assert_eq!(
        fs_value(&s, "node_filesystem_device_error", "local", hp),
        Some(1.0),
        "the unreadable mount {hp}"
    );
    assert_eq!(
        fs_value(&s, "node_filesystem_readonly", "local", hp),
        Some(0.0)
    );
    assert_eq!(
        fs_value(&s, "node_filesystem_size_bytes", "local", hp),
        None
    );
    let age = sample_value(&s, "ssh_target_cache_age_seconds", &[("target", "local")])
        .expect("cache age");
    assert!(
        (0.0..3.0).contains(&age),
        "cache age {age} with a 1 s interval"
    );
    // node_exporter's default mount point excludes apply.
    for hidden in ["/proc", "/sys", "/dev"] {
        assert!(
            fs_value(&s, "node_filesystem_size_bytes", "local", hidden).is_none(),
            "{hidden} should be excluded"
        );
    }
    assert_eq!(up(&s, "local"), Some(1.0));
    for reason in ["connect", "timeout", "auth", "hostkey", "command", "parse"] {
        assert_eq!(failures(&s, "local", reason), 0.0, "local {reason}");
    }
    let s = wait_for_outcomes(&v, &[("down", Some("connect"))]);
    assert!(
        !s.iter().any(|x| x.name.starts_with("node_filesystem")
            && x.labels.get("target").map(String::as_str) == Some("down")),
        "a target that never answered has no filesystem series"
    );

    // The exposition passes promtool; /probe returns one target; the landing page says why
    // a target is down.
    let text = v.metrics();
    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool: {report}\n{text}");
    let om = openmetrics(&v);
    for family in [
        "# TYPE node_filesystem_size_bytes gauge",
        "# UNIT node_filesystem_size_bytes bytes",
        "# TYPE ssh_target_failures counter",
        "# TYPE ssh_target_last_success_timestamp_seconds gauge",
        "# TYPE ssh_target_duration_seconds gauge",
        "# TYPE ssh_target_cache_age_seconds gauge",
        "# TYPE node_filesystem_readonly gauge",
        "# TYPE node_filesystem_device_error gauge",
    ] {
        assert!(om.lines().any(|l| l == family), "missing {family}:\n{om}");
    }
    let (status, probe) = v.get("/probe?target=local");
    assert_eq!(status, 200, "{probe}");
    assert!(probe.contains("target=\"local\""), "{probe}");
    assert!(!probe.contains("target=\"down\""), "{probe}");
    let (_, html) = v.get("/");
    assert!(html.contains("<td>ssh_disk</td><td>down</td>"), "{html}");
    assert!(html.contains("connect: "), "{html}");
    drop(mount);
    drop(hidden);
}

/// Generates a key of `key_type` protected by `passphrase` (empty for none).
fn keygen(dir: &Path, name: &str, key_type: &str, passphrase: &str) -> PathBuf {
    let p = dir.join(name);
    if passphrase.is_empty() {
        ssh_keygen(key_type, &p, name);
    } else {
        run_ok(
            Command::new(require_binary("/usr/bin/ssh-keygen", "openssh-client"))
                .args(["-q", "-t", key_type, "-N", passphrase, "-C", name, "-f"])
                .arg(&p),
            "ssh-keygen with a passphrase",
        );
    }
    p
}

#[test]
fn ecdsa_rsa_encrypted_keys_and_passwords_authenticate_and_stay_secret() {
    let sshd = Sshd::start();
    let dir = temp_dir("ssh-keys");
    let kh = path(sshd.known_hosts_path());
    let passphrase = "correct horse battery";
    let ecdsa = keygen(dir.path(), "id_ecdsa", "ecdsa", "");
    let rsa = keygen(dir.path(), "id_rsa", "rsa", "");
    let locked = keygen(dir.path(), "id_locked", "ed25519", passphrase);
    for k in [&ecdsa, &rsa, &locked] {
        sshd.authorize_key(k, "");
    }
    let pass_file = dir.path().join("passphrase");
    write_file(&pass_file, format!("{passphrase}\n"));
    let pw_file = dir.path().join("password");
    write_file(&pw_file, format!("{}\n", sshd.password()));
    let wrong_pw = "not-the-Password-42";
    let wrong_file = dir.path().join("wrong");
    write_file(&wrong_file, wrong_pw);
    let stranger = keygen(dir.path(), "id_stranger", "ed25519", "");

    let kh_only = |extra: Vec<(&'static str, String)>| {
        let mut e = vec![("known_hosts", kh.clone())];
        e.extend(extra);
        e
    };
    let targets = [
        target_yaml("ecdsa", &sshd, &kh_only(vec![("key_file", path(&ecdsa))])),
        target_yaml("rsa", &sshd, &kh_only(vec![("key_file", path(&rsa))])),
        target_yaml(
            "locked",
            &sshd,
            &kh_only(vec![
                ("key_file", path(&locked)),
                ("passphrase_file", path(&pass_file)),
            ]),
        ),
        target_yaml(
            "password",
            &sshd,
            &kh_only(vec![("password_file", path(&pw_file))]),
        ),
        target_yaml(
            "badpassword",
            &sshd,
            &kh_only(vec![("password_file", path(&wrong_file))]),
        ),
        target_yaml(
            "stranger",
            &sshd,
            &kh_only(vec![("key_file", path(&stranger))]),
        ),
    ];
    let v = Vitals::start(&config(&targets, ""));
    wait_for_outcomes(
        &v,
        &[
            ("ecdsa", None),
            ("rsa", None),
            ("locked", None),
            ("password", None),
            ("badpassword", Some("auth")),
            ("stranger", Some("auth")),
        ],
    );
    let text = v.metrics();
    assert!(text.contains("node_filesystem_size_bytes{target=\"locked\""));
    let (_, html) = v.get("/");
    assert!(
        html.contains("auth: the server refused password authentication"),
        "{html}"
    );
    for secret in [passphrase, sshd.password(), wrong_pw] {
        for (what, body) in [
            ("metrics", &text),
            ("landing page", &html),
            ("logs", &v.logs()),
        ] {
            assert!(!body.contains(secret), "a secret leaked into the {what}");
        }
    }

    // Without its passphrase file the encrypted key is a load error naming the target.
    let bad = config(
        &[target_yaml(
            "locked",
            &sshd,
            &kh_only(vec![("key_file", path(&locked))]),
        )],
        "",
    );
    let (status, logs) = Vitals::builder()
        .config(&bad)
        .run_until_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        logs.contains("targets[0] (locked)") && logs.contains("set passphrase_file"),
        "{logs}"
    );
}

/// The fingerprint of a public key line, as `ssh-keygen -l` prints it.
fn fingerprint_of(public_key_line: &str) -> String {
    let dir = temp_dir("fp");
    let p = dir.path().join("k.pub");
    write_file(&p, format!("{public_key_line}\n"));
    let out = run_ok(
        Command::new(require_binary("/usr/bin/ssh-keygen", "openssh-client"))
            .arg("-l")
            .arg("-f")
            .arg(&p),
        "ssh-keygen -l",
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

#[test]
fn host_keys_are_verified_pinned_hashed_revoked_changed_and_learned() {
    let sshd = Sshd::start();
    let dir = temp_dir("ssh-hostkeys");
    let port = sshd.port();
    let host_keys = sshd.host_public_keys(); // ed25519, ecdsa, rsa
    let (ed, rsa) = (&host_keys[0], &host_keys[2]);
    let other = keygen(dir.path(), "other_host", "ed25519", "");
    let other_pub = public_key(&other);

    let file = |name: &str, text: String| {
        let p = dir.path().join(name);
        write_file(&p, text);
        path(&p)
    };
    let hashed = {
        let p = dir.path().join("hashed");
        std::fs::copy(sshd.known_hosts_path(), &p).expect("copy known_hosts");
        run_ok(
            Command::new(require_binary("/usr/bin/ssh-keygen", "openssh-client"))
                .arg("-H")
                .arg("-f")
                .arg(&p),
            "ssh-keygen -H",
        );
        let text = std::fs::read_to_string(&p).expect("hashed file");
        assert!(text.starts_with("|1|"), "{text}");
        path(&p)
    };
    let tofu_path = dir.path().join("learned_known_hosts");
    let key = path(sshd.client_key_path());
    let t = |name: &str, extra: Vec<(&'static str, String)>| {
        let mut e = vec![("key_file", key.clone())];
        e.extend(extra);
        target_yaml(name, &sshd, &e)
    };
    let targets = [
        t("pinned", vec![("host_key_fingerprint", fingerprint_of(ed))]),
        t(
            "badpin",
            vec![("host_key_fingerprint", fingerprint_of(&other_pub))],
        ),
        t("hashed", vec![("known_hosts", hashed)]),
        t(
            "wildcard",
            vec![(
                "known_hosts",
                file(
                    "wild",
                    known_hosts_line(port, ed).replacen("127.0.0.1", "127.0.0.*", 1),
                ),
            )],
        ),
        t(
            "rsaonly",
            vec![("known_hosts", file("rsa", known_hosts_line(port, rsa)))],
        ),
        t(
            "changed",
            vec![(
                "known_hosts",
                file("changed", known_hosts_line(port, &other_pub)),
            )],
        ),
        t(
            "revoked",
            vec![(
                "known_hosts",
                file(
                    "revoked",
                    format!(
                        "{}\n@revoked * {}\n",
                        known_hosts_line(port, ed),
                        ed.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
                    ),
                ),
            )],
        ),
        t(
            "unknown",
            vec![("known_hosts", file("empty", String::new()))],
        ),
        t(
            "tofu",
            vec![
                ("known_hosts", path(&tofu_path)),
                ("trust_on_first_use", "true".into()),
            ],
        ),
    ];
    let v = Vitals::start(&config(&targets, ""));
    wait_for_outcomes(
        &v,
        &[
            ("pinned", None),
            ("badpin", Some("hostkey")),
            ("hashed", None),
            ("wildcard", None),
            ("rsaonly", None),
            ("changed", Some("hostkey")),
            ("revoked", Some("hostkey")),
            ("unknown", Some("hostkey")),
            ("tofu", None),
        ],
    );
    // A refused host key means no data at all: no filesystem series, no success time.
    let s = scrape(&v).1;
    for refused in ["badpin", "changed", "revoked", "unknown"] {
        let leaked: Vec<&Sample> = s
            .iter()
            .filter(|x| {
                x.labels.get("target").map(String::as_str) == Some(refused)
                    && (x.name.starts_with("node_filesystem")
                        || x.name == "ssh_target_last_success_timestamp_seconds"
                        || x.name == "ssh_target_cache_age_seconds")
            })
            .collect();
        assert!(leaked.is_empty(), "{refused} has data: {leaked:?}");
        assert_eq!(
            failures(&s, refused, "auth"),
            0.0,
            "{refused} never authenticated"
        );
    }
    assert!(
        s.iter().any(|x| x.name == "node_filesystem_size_bytes"
            && x.labels.get("target").map(String::as_str) == Some("pinned")),
        "the accepted key gives data"
    );
    let learned = std::fs::read_to_string(&tofu_path).expect("learned known_hosts");
    assert_eq!(learned.lines().count(), 1, "{learned}");
    let ed_body: Vec<&str> = ed.split_whitespace().take(2).collect();
    assert_eq!(
        learned.trim(),
        format!("[127.0.0.1]:{port} {}", ed_body.join(" ")),
        "the learned line is the server's ed25519 key"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("empty")).expect("empty file"),
        "",
        "nothing is learned without trust_on_first_use"
    );
    let (_, html) = v.get("/");
    assert!(html.contains("host key changed"), "{html}");
    assert!(html.contains("is revoked in"), "{html}");
    assert!(
        html.contains("does not match host_key_fingerprint"),
        "{html}"
    );
}

#[test]
fn forced_commands_in_authorized_keys_are_honoured_and_failures_classified() {
    let sshd = Sshd::start();
    let restricted = sshd.generate_client_key("restricted");
    // authorized_keys escapes a double quote inside command="..." with a backslash.
    let forced = REMOTE_COMMAND.replace('"', "\\\"");
    sshd.authorize_key(&restricted, &format!("restrict,command=\"{forced}\""));
    let root_only = sshd.generate_client_key("root_only");
    sshd.authorize_key(&root_only, "restrict,command=\"df -P -T -B1 /\"");
    let chatty = sshd.generate_client_key("chatty");
    sshd.authorize_key(&chatty, "restrict,command=\"echo no df here\"");
    let failing = sshd.generate_client_key("failing");
    sshd.authorize_key(&failing, "restrict,command=\"echo oops >&2; exit 3\"");
    let kh = path(sshd.known_hosts_path());
    let t = |name: &str, key: &Path| {
        target_yaml(
            name,
            &sshd,
            &[("key_file", path(key)), ("known_hosts", kh.clone())],
        )
    };
    let v = Vitals::start(&config(
        &[
            t("restricted", &restricted),
            t("rootonly", &root_only),
            t("chatty", &chatty),
            t("failing", &failing),
        ],
        // Keep an overlay root, which node_exporter's type defaults would drop.
        "    fs_types_exclude: '^(proc|sysfs)$'\n",
    ));
    let s = wait_for_outcomes(
        &v,
        &[
            ("restricted", None),
            ("rootonly", None),
            ("chatty", Some("parse")),
            ("failing", Some("command")),
        ],
    );
    let (_, _, size, ..) = local_df("/");
    assert_eq!(
        fs_value(&s, "node_filesystem_size_bytes", "rootonly", "/"),
        Some(size),
        "the forced `df /` ran: one filesystem"
    );
    let rootonly_series = s
        .iter()
        .filter(|x| {
            x.name == "node_filesystem_size_bytes"
                && x.labels.get("target").map(String::as_str) == Some("rootonly")
        })
        .count();
    assert_eq!(rootonly_series, 1);
    assert!(
        s.iter().any(|x| x.name == "node_filesystem_files"
            && x.labels.get("target").map(String::as_str) == Some("restricted")),
        "the full forced command gives inode tables too"
    );
    let (_, html) = v.get("/");
    assert!(
        html.contains("command: the command exited with status 3: oops"),
        "{html}"
    );
}

#[test]
fn silent_servers_time_out_scrapes_stay_fast_and_stale_data_is_dropped() {
    let sshd = Sshd::start();
    // Accepts TCP connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    // The thread holds every accepted socket until the test process exits.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    let key = path(sshd.client_key_path());
    let kh = path(sshd.known_hosts_path());
    let silent_target = format!(
        "      - name: silent\n        host: 127.0.0.1\n        port: {silent_port}\n        user: x\n        interval: 1s\n        connect_timeout: 2s\n        key_file: '{key}'\n        known_hosts: '{kh}'\n"
    );
    let fading = target_yaml(
        "fading",
        &sshd,
        &[
            ("key_file", key.clone()),
            ("known_hosts", kh.clone()),
            ("max_age", "3s".into()),
            ("connect_timeout", "1s".into()),
        ],
    );
    let v = Vitals::start(&config(&[silent_target, fading], ""));
    let s = wait_for_outcomes(&v, &[("silent", Some("timeout")), ("fading", None)]);
    // The silent server costs the configured connect_timeout (2 s), not more.
    let took = sample_value(&s, "ssh_target_duration_seconds", &[("target", "silent")])
        .expect("duration of the silent target");
    assert!((2.0..2.5).contains(&took), "a timeout of 2 s took {took} s");
    assert!(
        !s.iter().any(|x| x.name.starts_with("node_filesystem")
            && x.labels.get("target").map(String::as_str) == Some("silent")),
        "a silent server has no data"
    );

    // Scrapes read stored results: a target stuck in its handshake does not slow them.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let _ = v.metrics();
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a scrape took {slowest:?} while a target hung"
    );

    // The host goes away: its data stays for max_age, then disappears; up says why.
    let s = scrape(&v).1;
    let last_ok = last_success(&s, "fading");
    let gone_at = Instant::now();
    drop(sshd);
    let s = wait_for(&v, "fading data to expire", |s| {
        !s.iter().any(|x| {
            x.name == "node_filesystem_size_bytes"
                && x.labels.get("target").map(String::as_str) == Some("fading")
        })
    });
    assert!(
        gone_at.elapsed() >= Duration::from_secs(1),
        "data was dropped before max_age: {:?}",
        gone_at.elapsed()
    );
    assert_eq!(up(&s, "fading"), Some(0.0));
    assert!(failures(&s, "fading", "connect") >= 1.0);
    let age = sample_value(&s, "ssh_target_cache_age_seconds", &[("target", "fading")])
        .expect("the age stays while the data is dropped");
    assert!(
        age > 3.0,
        "data dropped at cache age {age}, before max_age 3 s"
    );
    assert!(
        last_success(&s, "fading") >= last_ok,
        "the last success time stays"
    );
}

/// When each connection was accepted, and when the client hung up (if it did).
type Spans = std::sync::Arc<std::sync::Mutex<Vec<(Instant, Option<Instant>)>>>;

/// A listener that accepts and never speaks, recording when each connection was open.
struct SilentServer {
    port: u16,
    spans: Spans,
}

impl SilentServer {
    fn start() -> SilentServer {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let spans = Spans::default();
        let recorder = spans.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let index = {
                    let mut spans = recorder.lock().expect("spans");
                    spans.push((Instant::now(), None));
                    spans.len() - 1
                };
                let recorder = recorder.clone();
                // Reads (the client's banner) until the client hangs up.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    recorder.lock().expect("spans")[index].1 = Some(Instant::now());
                });
            }
        });
        SilentServer { port, spans }
    }

    fn spans(&self) -> Vec<(Instant, Instant)> {
        let now = Instant::now();
        self.spans
            .lock()
            .expect("spans")
            .iter()
            .map(|(a, b)| (*a, b.unwrap_or(now)))
            .collect()
    }
}

/// The most connections open at one moment, over several servers. A connection's end is
/// moved 50 ms earlier: the server notices a hang-up and the next connect in two threads,
/// in either order, within microseconds.
fn most_at_once(servers: &[&SilentServer]) -> usize {
    let grace = Duration::from_millis(50);
    let spans: Vec<(Instant, Instant)> = servers.iter().flat_map(|s| s.spans()).collect();
    spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(a, b)| a <= start && b.checked_sub(grace).is_some_and(|e| e > *start))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn one_refresh_per_target_and_the_global_limit_hold() {
    let dir = temp_dir("ssh-limit");
    let key = dir.path().join("id");
    ssh_keygen("ed25519", &key, "limit");
    let kh = dir.path().join("known_hosts");
    write_file(&kh, "");
    let slow = SilentServer::start();
    let many = SilentServer::start();
    let silent = |name: &str, port: u16, timeout: &str| {
        format!(
            "      - name: {name}\n        host: 127.0.0.1\n        port: {port}\n        user: x\n        interval: 1s\n        connect_timeout: {timeout}\n        key_file: '{}'\n        known_hosts: '{}'\n",
            path(&key),
            path(&kh)
        )
    };
    // `slow` hangs for 3 s per refresh with a 1 s interval: its refreshes must not overlap.
    // Four targets, two permits: never more than two connections at once.
    let targets = [
        silent("slow", slow.port, "3s"),
        silent("many1", many.port, "1s"),
        silent("many2", many.port, "1s"),
        silent("many3", many.port, "1s"),
    ];
    let v = Vitals::start(&config(&targets, "    concurrency: 2\n"));
    let started = Instant::now();
    let s = wait_for(&v, "two timeouts of the slow target", |s| {
        failures(s, "slow", "timeout") >= 2.0
    });
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5),
        "two 3 s timeouts in a row cannot end after {elapsed:?}"
    );
    assert_eq!(
        most_at_once(&[&slow]),
        1,
        "refreshes of one target overlapped"
    );
    assert_eq!(
        most_at_once(&[&slow, &many]),
        2,
        "the concurrency limit of 2 was not used or exceeded"
    );
    let many_timeouts: f64 = ["many1", "many2", "many3"]
        .iter()
        .map(|t| failures(&s, t, "timeout"))
        .sum();
    assert!(
        many_timeouts >= 3.0,
        "every target got its turn: {many_timeouts}"
    );
}

#[test]
fn a_reload_stops_the_old_refreshers() {
    let dir = temp_dir("ssh-reload");
    let key = dir.path().join("id");
    ssh_keygen("ed25519", &key, "reload");
    let kh = dir.path().join("known_hosts");
    write_file(&kh, "");
    let server = SilentServer::start();
    let target = format!(
        "      - name: silent\n        host: 127.0.0.1\n        port: {}\n        user: x\n        interval: 1s\n        connect_timeout: 1s\n        key_file: '{}'\n        known_hosts: '{}'\n",
        server.port,
        path(&key),
        path(&kh)
    );
    let mut v = Vitals::start(&config(&[target], ""));
    wait_for(&v, "a first timeout", |s| {
        failures(s, "silent", "timeout") >= 1.0
    });
    v.write_config("{}\n");
    v.sighup();
    wait_for(&v, "the reload", |s| up(s, "silent").is_none());
    let connections = server.spans().len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        server.spans().len(),
        connections,
        "the old config's refresher still connects after the reload"
    );
    assert!(v.has_exited().is_none(), "vitals died: {}", v.logs());
    assert_eq!(v.get("/-/healthy").0, 200);
}
