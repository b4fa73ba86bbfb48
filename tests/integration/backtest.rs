//! `vitals backtest`: the detector over real NAB files (tests/fixtures/nab, MIT) through the
//! binary, scored with the NAB v1.1 rules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::temp_dir;
use crate::support::vitals::BINARY;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nab")
}

fn backtest(args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("backtest")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {BINARY}: {e}"))
}

/// (profile, normalised score, threshold, detected windows, windows) per profile line.
fn profiles(stdout: &str) -> Vec<(String, f64, f64, usize, usize)> {
    stdout
        .lines()
        .filter(|l| l.contains(" score ") && l.contains(" threshold "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let detected = f[f.iter().position(|w| *w == "detected").unwrap() + 1];
            let (d, w) = detected.split_once('/').unwrap();
            (
                f[0].to_string(),
                f[2].parse().unwrap(),
                f[4].parse().unwrap(),
                d.parse().unwrap(),
                w.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn nab_folder_prints_the_three_profile_scores() {
    let out = backtest(&["--nab", fixtures().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 files, 6 windows, 7321 points"),
        "{stdout}"
    );
    let p = profiles(&stdout);
    let names: Vec<&str> = p.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        ["standard", "reward_low_FP_rate", "reward_low_FN_rate"],
        "{stdout}"
    );
    for (name, score, threshold, detected, windows) in &p {
        assert!((0.0..=100.0).contains(score), "{name}: {stdout}");
        assert!((0.0..=1.1).contains(threshold), "{name}: {stdout}");
        assert_eq!(*windows, 6);
        assert!(*detected <= 6);
    }
    // The sidecar's detector finds the anomalies of these three series: well above the
    // windowedGaussian reference below, and the FN-averse profile scores highest.
    assert!(p[0].1 > 60.0, "{stdout}");
    assert!(p[2].1 >= p[0].1 && p[0].1 >= p[1].1, "{stdout}");

    let reference = backtest(&[
        "--nab",
        fixtures().to_str().unwrap(),
        "--detector",
        "windowed-gaussian",
    ]);
    let ref_stdout = String::from_utf8_lossy(&reference.stdout);
    assert!(reference.status.success(), "{ref_stdout}");
    let r = profiles(&ref_stdout);
    assert_eq!(r.len(), 3);
    assert!(r[0].1 < p[0].1, "{ref_stdout}\n{stdout}");
}

#[test]
fn nab_output_dir_and_perturbed_params() {
    let dir = temp_dir("backtest-nab");
    let out = backtest(&[
        "--nab",
        fixtures().to_str().unwrap(),
        "--output-dir",
        dir.path().to_str().unwrap(),
        "--per-file",
        "--param",
        "clip=3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("realTraffic/speed_7578.csv (4 windows)"),
        "{stdout}"
    );
    let scored = dir.path().join("realTraffic/speed_7578.csv");
    let text = std::fs::read_to_string(&scored).unwrap();
    assert_eq!(text.lines().count(), 1128);

    let bad = backtest(&[
        "--nab",
        fixtures().to_str().unwrap(),
        "--param",
        "no_such_knob=1",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no_such_knob"));
}

#[test]
fn input_csv_is_scored_row_by_row_at_full_precision() {
    let input = fixtures().join("data/realTraffic/speed_7578.csv");
    let dir = temp_dir("backtest-csv");
    let output = dir.path().join("scored.csv");
    let out = backtest(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let original = std::fs::read_to_string(&input).unwrap();
    let scored = std::fs::read_to_string(&output).unwrap();
    let mut lines = scored.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    let mut max = 0.0f64;
    let mut distinct = std::collections::BTreeSet::new();
    for (orig, line) in original.lines().skip(1).zip(lines.by_ref()) {
        let (ts, _) = orig.split_once(',').unwrap();
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 3, "{line}");
        assert_eq!(f[0], ts, "timestamps copied as given");
        let value: f64 = f[1].parse().unwrap();
        let orig_value: f64 = orig.split_once(',').unwrap().1.parse().unwrap();
        assert_eq!(value, orig_value);
        let s: f64 = f[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&s), "{line}");
        max = max.max(s);
        distinct.insert(f[2].to_string());
    }
    assert_eq!(lines.next(), None);
    assert_eq!(scored.lines().count(), original.lines().count());
    assert!(max > 0.5, "the series' anomalies score high: max {max}");
    assert!(distinct.len() > 500, "scores keep their precision");

    // Without --output the same CSV goes to stdout.
    let out = backtest(&["--input", input.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), scored);
}

#[test]
fn malformed_csv_names_file_and_line_and_exits_1() {
    let dir = temp_dir("backtest-bad");
    let input = dir.path().join("bad.csv");
    std::fs::write(
        &input,
        "timestamp,value\n2015-09-08 11:39:00,73\n2015-09-08 11:44:00,sixty\n",
    )
    .unwrap();
    let out = backtest(&["--input", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3: bad value \"sixty\"", input.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = backtest(&["--nab", dir.path().to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("combined_windows.json"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
