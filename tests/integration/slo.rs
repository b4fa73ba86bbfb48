//! `vitals rules slo`: the built binary writes the SLO rules, and Prometheus' own `promtool`
//! checks them (`check rules`) and runs the unit tests of rules/slo/ on the fresh output
//! (`test rules`): a 100% outage of a 99.9% SLO pages within 2 minutes, a steady 5x burn
//! raises only the ticket alert, and the budget left matches a hand computation. The
//! sidecar's `slo_*` exposition is checked with `promtool check metrics`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use vitals::sidecar::promql::InstantSample;
use vitals::sidecar::slo;

use crate::support::vitals::BINARY;
use crate::support::{promtool_check, require_binary, run_ok, temp_dir, write_file};

const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/slo");

fn promtool() -> PathBuf {
    require_binary("/usr/bin/promtool", "prometheus")
}

fn rules_slo(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(["rules", "slo"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {BINARY} rules slo: {e}"))
}

/// Copies a promtool unit-test file from rules/slo into `dir`, next to the fresh rules.
fn copy_test(dir: &Path, name: &str) {
    let text = std::fs::read_to_string(Path::new(RULES_DIR).join(name))
        .unwrap_or_else(|e| panic!("reading rules/slo/{name}: {e}"));
    write_file(&dir.join(name), text);
}

fn promtool_ok(dir: &Path, args: &[&str], what: &str) -> String {
    let out = run_ok(Command::new(promtool()).current_dir(dir).args(args), what);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn default_slo_rules_are_the_checked_in_ones_and_pass_promtool() {
    let dir = temp_dir("slo-rules");
    let config = dir.path().join("vitals.yml");
    write_file(&config, "sidecar:\n  interval: 1m\n");
    let out = rules_slo(&["--config", &config.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).expect("utf-8 rules");
    let checked_in = std::fs::read_to_string(Path::new(RULES_DIR).join("default.yml"))
        .expect("rules/slo/default.yml");
    assert_eq!(generated, checked_in, "rules/slo/default.yml is stale");
    write_file(&dir.path().join("default.yml"), &generated);
    let check = promtool_ok(
        dir.path(),
        &["check", "rules", "default.yml"],
        "promtool check rules",
    );
    assert!(check.contains("SUCCESS: 63 rules found"), "{check}");
    copy_test(dir.path(), "default_test.yml");
    let test = promtool_ok(
        dir.path(),
        &["test", "rules", "default_test.yml"],
        "promtool test rules",
    );
    assert!(test.contains("SUCCESS"), "{test}");
}

#[test]
fn a_sloth_spec_becomes_rules_whose_alerts_fire_at_the_expected_minutes() {
    let dir = temp_dir("slo-sloth");
    let output = dir.path().join("example.yml");
    let spec = Path::new(RULES_DIR).join("example.sloth.yml");
    let out = rules_slo(&[
        "--config",
        &spec.display().to_string(),
        "--output",
        &output.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "with --output nothing goes to stdout"
    );
    let check = promtool_ok(
        dir.path(),
        &["check", "rules", "example.yml"],
        "promtool check rules",
    );
    assert!(check.contains("SUCCESS: 12 rules found"), "{check}");
    for t in ["example_test.yml", "example_budget_test.yml"] {
        copy_test(dir.path(), t);
        let started = Instant::now();
        let test = promtool_ok(dir.path(), &["test", "rules", t], "promtool test rules");
        assert!(test.contains("SUCCESS"), "{t}: {test}");
        eprintln!("promtool test rules {t}: {:?}", started.elapsed());
    }
}

#[test]
fn unsupported_sloth_features_and_bad_files_fail_with_a_clear_message() {
    let dir = temp_dir("slo-bad");
    let spec = dir.path().join("plugin.yml");
    write_file(
        &spec,
        "version: prometheus/v1\nservice: s\nslos:\n  - name: a\n    objective: 99\n    sli:\n      plugin:\n        id: sloth-common/kubernetes/apiserver/availability\n    alerting:\n      name: A\n",
    );
    let out = rules_slo(&["--config", &spec.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("slos[0].sli.plugin"), "{err}");
    assert!(err.contains("not supported"), "{err}");
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("missing.yml");
    let out = rules_slo(&["--config", &missing.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yml"));
}

fn sample(labels: &[(&str, &str)], value: f64) -> InstantSample {
    InstantSample {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        ts_ms: 0,
        value,
    }
}

#[test]
fn slo_exposition_passes_promtool_check_metrics() {
    let slos = slo::defaults();
    let avail = slos
        .iter()
        .find(|s| s.name == "pg-availability")
        .expect("default pg-availability");
    let windows = slo::windows(avail);
    let samples = windows
        .iter()
        .map(|w| {
            sample(
                &[
                    ("target", "main"),
                    ("vitals_slo_part", &format!("ratio:{}", w.name)),
                ],
                0.0005,
            )
        })
        .collect();
    let statuses = slo::assemble(avail, &windows, samples);
    assert_eq!(statuses.len(), 1);
    let report = slo::SloReport {
        statuses,
        slos: vec![slo::SloQueryStats {
            slo: avail.name.clone(),
            up: true,
            series: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut reg = prometheus_client::registry::Registry::default();
    slo::encode(&report, &mut reg);
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &reg).expect("encode");
    // As /metrics serves it to a scraper that does not ask for OpenMetrics.
    let body = vitals::web::openmetrics_to_text(&body);
    let (ok, problems) = promtool_check(&body);
    assert!(ok && problems.trim().is_empty(), "{problems}\n{body}");
    assert!(
        body.contains(
            "slo_error_budget_remaining_ratio{slo=\"pg-availability\",target=\"main\"} 0.5"
        )
    );
    assert!(
        body.contains("slo_burn_rate{slo=\"pg-availability\",target=\"main\",window=\"30d\"} 0.5")
    );
}
