//! The process collector against real processes this test starts, and side by side with
//! prometheus-process-exporter on the same groups.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::vitals::Vitals;
use crate::support::{
    Sample, free_port, http_client, parse_samples, poll_until, require_binary, sample_value,
    temp_dir, write_file,
};

/// Copies a program under a unique name, so its comm identifies this test's processes.
fn renamed(dir: &Path, program: &str, prefix: &str) -> PathBuf {
    // comm is at most 15 characters: prefix (5) + up to 7 digits.
    let name = format!("{prefix}{}", std::process::id() % 10_000_000);
    let path = dir.join(&name);
    std::fs::copy(program, &path).unwrap_or_else(|e| panic!("copy {program}: {e}"));
    path
}

struct Procs(Vec<Child>);

impl Procs {
    fn sleepers(bin: &Path, n: usize) -> Procs {
        Procs((0..n).map(|_| spawn_sleep(bin)).collect())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_sleep(bin: &Path) -> Child {
    Command::new(bin)
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep copy")
}

/// A perl copy that forks 3 sleeping children and 5 children that exit at once and are never
/// reaped (zombies), in its own process group. Optionally burns `cpu` seconds first.
fn spawn_forker(bin: &Path, cpu: f64) -> Child {
    spawn_forker_after(bin, cpu, None)
}

/// Like [`spawn_forker`], but the CPU burning starts only once `go` exists.
fn spawn_forker_after(bin: &Path, cpu: f64, go: Option<&Path>) -> Child {
    let wait = go.map_or(String::new(), |f| {
        format!(
            "until (-e '{}') {{ select(undef, undef, undef, 0.01) }} ",
            f.display()
        )
    });
    let script = format!(
        "{wait}while ((times)[0] < {cpu}) {{}} for (1..3) {{ if (!fork) {{ sleep 1000; exit }} }} for (1..5) {{ if (!fork) {{ exit 0 }} }} sleep 1000;"
    );
    Command::new(bin)
        .args(["-e", &script])
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn forker")
}

fn kill_group(child: &mut Child) {
    let pgid = child.id().to_string();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
    let _ = child.wait();
}

fn scrape(v: &Vitals) -> Vec<Sample> {
    parse_samples(&v.metrics())
}

fn group_value(s: &[Sample], metric: &str, group: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("groupname", group)];
    labels.extend_from_slice(extra);
    sample_value(s, metric, &labels)
}

fn wait_for(v: &Vitals, what: &str, check: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let mut last = Vec::new();
    let found = poll_until(Duration::from_secs(20), || {
        last = scrape(v);
        check(&last).then(|| last.clone())
    });
    found.unwrap_or_else(|| {
        let ours: Vec<_> = last
            .iter()
            .filter(|s| {
                s.labels
                    .get("groupname")
                    .is_some_and(|g| g.starts_with("vt"))
            })
            .collect();
        panic!("timed out waiting for {what}; last samples: {ours:#?}")
    })
}

#[test]
fn groups_states_threads_restarts_and_watch_list() {
    let dir = temp_dir("proc");
    let sleep = renamed(dir.path(), "/bin/sleep", "vtslp");
    let perl = renamed(dir.path(), "/usr/bin/perl", "vtfrk");
    let (sg, fg) = (
        sleep
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string(),
        perl.file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string(),
    );
    let config = format!(
        "exporter:\n  process:\n    groups:\n      - name: \"{{comm}}\"\n        comm: ['{sg}', '{fg}']\n    watch: ['{sg}']\n"
    );
    let v = Vitals::builder()
        .config(&config)
        .arg("--no-collector.vitals")
        .start();
    let np = "namedprocess_namegroup_num_procs";

    // Watched and absent: exported with 0 processes.
    let s = scrape(&v);
    assert_eq!(group_value(&s, np, &sg, &[]), Some(0.0));

    let mut sleepers = Procs::sleepers(&sleep, 50);
    let mut forker = spawn_forker(&perl, 0.0);
    let s = wait_for(
        &v,
        "50 sleepers and 9 forker processes with 5 zombies",
        |s| {
            group_value(s, np, &sg, &[]) == Some(50.0)
                && group_value(s, np, &fg, &[]) == Some(9.0)
                && group_value(
                    s,
                    "namedprocess_namegroup_states",
                    &fg,
                    &[("state", "Zombie")],
                ) == Some(5.0)
        },
    );
    assert_eq!(
        group_value(&s, "namedprocess_namegroup_num_threads", &sg, &[]),
        Some(50.0)
    );
    assert_eq!(
        group_value(
            &s,
            "namedprocess_namegroup_states",
            &sg,
            &[("state", "Sleeping")]
        ),
        Some(50.0)
    );
    assert_eq!(
        group_value(
            &s,
            "namedprocess_namegroup_states",
            &fg,
            &[("state", "Sleeping")]
        ),
        Some(4.0)
    );
    assert_eq!(
        group_value(&s, "namedprocess_namegroup_restarts_total", &sg, &[]),
        Some(0.0)
    );
    assert!(
        group_value(
            &s,
            "namedprocess_namegroup_memory_bytes",
            &sg,
            &[("memtype", "resident")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        group_value(
            &s,
            "namedprocess_namegroup_oldest_start_time_seconds",
            &sg,
            &[]
        )
        .unwrap_or(0.0)
            > 1.6e9
    );

    // One sleeper replaced by a new one: one restart.
    let mut old = sleepers.0.remove(0);
    old.kill().expect("kill one sleeper");
    old.wait().expect("reap it");
    sleepers.0.push(spawn_sleep(&sleep));
    let s = wait_for(&v, "a counted restart", |s| {
        group_value(s, np, &sg, &[]) == Some(50.0)
            && group_value(s, "namedprocess_namegroup_restarts_total", &sg, &[]) == Some(1.0)
    });
    assert_eq!(
        group_value(&s, "namedprocess_namegroup_restarts_total", &fg, &[]),
        Some(0.0)
    );

    // All killed: the watched group shows 0, the unwatched one is dropped.
    drop(sleepers);
    kill_group(&mut forker);
    let s = wait_for(&v, "the groups to empty", |s| {
        group_value(s, np, &sg, &[]) == Some(0.0) && group_value(s, np, &fg, &[]).is_none()
    });
    assert_eq!(
        group_value(&s, "namedprocess_namegroup_restarts_total", &sg, &[]),
        Some(1.0)
    );
}

#[test]
fn values_agree_with_prometheus_process_exporter() {
    let pe = require_binary(
        "/usr/bin/prometheus-process-exporter",
        "prometheus-process-exporter",
    );
    let dir = temp_dir("procpeer");
    let sleep = renamed(dir.path(), "/bin/sleep", "vtpsl");
    let perl = renamed(dir.path(), "/usr/bin/perl", "vtpfk");
    let names: Vec<String> = [&sleep, &perl]
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string()
        })
        .collect();
    let pe_config = dir.path().join("pe.yml");
    write_file(
        &pe_config,
        format!(
            "process_names:\n  - name: \"{{{{.Comm}}}}\"\n    comm: [{}, {}]\n",
            names[0], names[1]
        ),
    );
    let port = free_port();
    let mut pe_child = Command::new(pe)
        .arg(format!("-config.path={}", pe_config.display()))
        .arg(format!("-web.listen-address=127.0.0.1:{port}"))
        .args(["-children=false", "-threads=false", "-gather-smaps=false"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn process-exporter");
    // process-exporter counts only the CPU a process uses after it first saw the process;
    // vitals counts all of it. So the forker burns its CPU only once process-exporter has
    // seen it.
    let client = http_client();
    let pe_url = format!("http://127.0.0.1:{port}/metrics");
    let pe_scrape = || {
        poll_until(Duration::from_secs(20), || {
            client
                .get(&pe_url)
                .send()
                .ok()
                .filter(|r| r.status() == 200)?
                .text()
                .ok()
        })
        .expect("process-exporter answers")
    };
    let _sleepers = Procs::sleepers(&sleep, 20);
    let go = dir.path().join("go");
    let mut forker = spawn_forker_after(&perl, 0.5, Some(&go));
    let seen = poll_until(Duration::from_secs(20), || {
        let page = parse_samples(&pe_scrape());
        (group_value(&page, "namedprocess_namegroup_num_procs", &names[1], &[]) == Some(1.0))
            .then_some(())
    });
    assert!(seen.is_some(), "process-exporter never saw the forker");
    write_file(&go, "");
    let config = format!(
        "exporter:\n  process:\n    groups:\n      - name: \"{{comm}}\"\n        comm: ['{}', '{}']\n",
        names[0], names[1]
    );
    let v = Vitals::builder().config(&config).start();
    // Wait until the forker has burnt its CPU and all its children exist.
    let fg = names[1].clone();
    wait_for(&v, "the forker's 9 processes", |s| {
        group_value(s, "namedprocess_namegroup_num_procs", &fg, &[]) == Some(9.0)
            && group_value(
                s,
                "namedprocess_namegroup_cpu_seconds_total",
                &fg,
                &[("mode", "user")],
            )
            .unwrap_or(0.0)
                >= 0.5
    });
    let pe_text = pe_scrape();
    let theirs = parse_samples(&pe_text);
    let ours = scrape(&v);
    let _ = pe_child.kill();
    let _ = pe_child.wait();
    kill_group(&mut forker);

    for g in &names {
        for (metric, extra) in [
            ("namedprocess_namegroup_num_procs", vec![]),
            ("namedprocess_namegroup_num_threads", vec![]),
            ("namedprocess_namegroup_open_filedesc", vec![]),
        ] {
            let a = group_value(&ours, metric, g, &extra);
            let b = group_value(&theirs, metric, g, &extra);
            assert!(
                a.is_some() && a == b,
                "{metric}{{groupname={g}}}: vitals {a:?} vs process-exporter {b:?}"
            );
        }
        for (metric, extra) in [
            (
                "namedprocess_namegroup_cpu_seconds_total",
                vec![("mode", "user")],
            ),
            (
                "namedprocess_namegroup_memory_bytes",
                vec![("memtype", "resident")],
            ),
            (
                "namedprocess_namegroup_memory_bytes",
                vec![("memtype", "virtual")],
            ),
        ] {
            let a = group_value(&ours, metric, g, &extra).expect("vitals has it");
            let b = group_value(&theirs, metric, g, &extra).expect("process-exporter has it");
            // 5% plus one clock tick; CPU gets 10% plus two ticks: under a loaded machine the
            // two exporters' reads of a process that just stopped burning CPU land apart.
            let tolerance = if metric.contains("cpu") {
                0.10 * a.abs().max(b.abs()) + 0.021
            } else {
                0.05 * a.abs().max(b.abs()) + 0.011
            };
            assert!(
                (a - b).abs() <= tolerance,
                "{metric}{{groupname={g},{extra:?}}}: vitals {a} vs process-exporter {b}"
            );
        }
    }
}
