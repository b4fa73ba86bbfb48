//! Alert delivery end to end: `vitals sidecar` evaluating recommendation rules against a real
//! Prometheus and delivering to a real Alertmanager (which notifies the harness' webhook).
//!
//! - delivery: an always-true rule shows up in Alertmanager's `/api/v2/alerts` with identity
//!   labels and the numbers in annotations; dropping the rule (config rewrite + SIGHUP)
//!   resolves it there.
//! - issue 8's acceptance: Alertmanager stopped while alerts fire, one alert resolving and
//!   others starting during the outage, the sidecar restarted once in between (SIGTERM, new
//!   process with the same queue file); after Alertmanager returns every alert that fired is
//!   there, none lost, and the queue metrics show the outage.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::alertmanager::Alertmanager;
use crate::support::prometheus::Prometheus;
use crate::support::vitals::Vitals;
use crate::support::{parse_samples, poll_until, promtool_check, sample_value, temp_dir};

const GRAFANA: &str = "http://grafana.example:3000";
/// Sidecar evaluation interval and resend delay in these tests (defaults: 1m and 1m).
const INTERVAL: &str = "1s";
const RESEND: &str = "2s";

/// A recommendation rule that always returns one series with `target` = `name` (titles
/// differ per rule: configured rules with the same title replace each other).
fn rule(name: &str, value: u32) -> String {
    format!(
        r#"    - id: always_{name}
      category: configuration
      severity: warning
      condition: 'label_replace(vector({value}), "target", "{name}", "", "")'
      title: 'Rule {name} always fires on {{{{target}}}}'
      target: '{{{{target}}}}'
      description: 'the condition returned {{{{value}}}} for {{{{target}}}}'
      remediation: ['nothing to do, it is a test']
      runbook_url: https://example.com/runbooks/always
"#
    )
}

fn config(prom: &str, am: &str, queue: &Path, rules: &[&str]) -> String {
    let rules: String = rules
        .iter()
        .enumerate()
        .map(|(i, n)| rule(n, 40 + u32::try_from(i).unwrap_or(0)))
        .collect();
    format!(
        r#"sidecar:
  prometheus: {{url: "{prom}"}}
  alertmanagers:
    - url: "{am}"
      timeout: 2s
      retries: 0
  interval: {INTERVAL}
  alert_resend_delay: {RESEND}
  alert_queue: {{path: "{}"}}
  grafana_url: {GRAFANA}
  external_labels: {{cluster: it}}
  default_signals: false
  default_recommendations: false
  recommendations:{}
{rules}"#,
        queue.display(),
        if rules.is_empty() { " []" } else { "" },
    )
}

/// The alerts Alertmanager holds for rule `always_<name>`.
fn find<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["id"] == format!("always_{name}").as_str())
}

fn ts_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .timestamp_millis()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether Alertmanager holds the alert as firing (its endsAt still ahead).
fn firing_in(am: &Alertmanager, name: &str) -> Option<Value> {
    let alerts = am.alerts();
    find(&alerts, name)
        .filter(|a| ts_ms(&a["endsAt"]) > now_ms())
        .cloned()
}

/// Whether a webhook notification reports rule `name`'s alert with `status`.
fn notified(am: &Alertmanager, name: &str, status: &str) -> bool {
    am.received().iter().any(|n| {
        n["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|a| {
                a["status"] == status && a["labels"]["id"] == format!("always_{name}").as_str()
            })
        })
    })
}

fn metrics(v: &Vitals) -> (String, Vec<crate::support::Sample>) {
    let text = v.metrics();
    let samples = parse_samples(&text);
    (text, samples)
}

fn value(samples: &[crate::support::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(samples, name, labels).unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[test]
fn alerts_reach_alertmanager_with_identity_labels_and_resolve() {
    let prom = Prometheus::start("");
    let am = Alertmanager::start();
    let dir = temp_dir("alerting");
    let queue = dir.path().join("state").join("alerts.json");
    let mut vitals = Vitals::builder()
        .subcommand("sidecar")
        .config(&config(&prom.url(), &am.url(), &queue, &["db1"]))
        .start();
    let alert =
        poll_until(Duration::from_secs(30), || firing_in(&am, "db1")).unwrap_or_else(|| {
            panic!(
                "no alert in Alertmanager: {:#?}\n{}",
                am.alerts(),
                vitals.logs()
            )
        });
    let labels = &alert["labels"];
    let expected: BTreeMap<&str, &str> = BTreeMap::from([
        ("alertname", "VitalsRecommendation"),
        ("severity", "warning"),
        ("id", "always_db1"),
        ("category", "configuration"),
        ("target", "db1"),
        ("title", "Rule db1 always fires on db1"),
        ("cluster", "it"),
    ]);
    let got: BTreeMap<&str, &str> = labels
        .as_object()
        .expect("labels")
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    assert_eq!(got, expected, "identity labels only, no numbers");
    let ann = &alert["annotations"];
    assert_eq!(ann["summary"], "Rule db1 always fires on db1");
    assert_eq!(ann["description"], "the condition returned 40 for db1");
    assert_eq!(ann["value"], "40");
    assert_eq!(ann["runbook_url"], "https://example.com/runbooks/always");
    assert!(
        ann["remediation"]
            .as_str()
            .is_some_and(|r| r.contains("nothing to do")),
        "{ann}"
    );
    let starts = ts_ms(&alert["startsAt"]);
    let link = ann["grafana_url"].as_str().expect("grafana_url");
    assert_eq!(
        link,
        format!(
            "{GRAFANA}/d/vitals-event-snapshot/vitals-event-snapshot?from={}&to={}&var-target=db1",
            starts - 1_800_000,
            starts + 1_800_000
        )
    );
    assert_eq!(alert["generatorURL"].as_str(), Some(link));
    // endsAt = send time + 4 x max(interval, resend delay, 1m) = about 4 minutes ahead.
    let ends = ts_ms(&alert["endsAt"]);
    let ahead = ends - now_ms();
    assert!(
        (200_000..=241_000).contains(&ahead),
        "endsAt {ahead} ms ahead"
    );
    // Re-sent every 2 s with a moving endsAt and the same startsAt.
    let later = poll_until(Duration::from_secs(15), || {
        firing_in(&am, "db1").filter(|a| ts_ms(&a["endsAt"]) >= ends + 2_000)
    })
    .expect("a resend moves endsAt");
    assert_eq!(ts_ms(&later["startsAt"]), starts, "startsAt is stable");
    am.wait_for_webhook(
        |n| n["status"] == "firing" && n["alerts"][0]["labels"]["id"] == "always_db1",
        Duration::from_secs(15),
    );

    // The sidecar's own metrics: sends counted, nothing failed, queue empty; promtool agrees.
    let (text, samples) = metrics(&vitals);
    let amurl = am.url();
    assert!(
        value(
            &samples,
            "vitals_sidecar_alerts_sent_total",
            &[("alertmanager", &amurl)]
        ) >= 2.0
    );
    assert_eq!(
        value(
            &samples,
            "vitals_sidecar_alerts_failed_total",
            &[("alertmanager", &amurl)]
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "vitals_sidecar_alerts_active",
            &[("alertname", "VitalsRecommendation")]
        ),
        1.0
    );
    let (ok, problems) = promtool_check(&text);
    assert!(ok, "promtool check metrics: {problems}");
    let (_, landing) = vitals.get("/");
    assert!(
        landing.contains("Alert VitalsRecommendation (warning) firing since"),
        "{landing}"
    );
    assert!(queue.exists(), "the queue file is written");

    // The condition ends (the rule is dropped by a reload): resolved in Alertmanager.
    vitals.write_config(&config(&prom.url(), &am.url(), &queue, &[]));
    vitals.sighup();
    am.wait_for_webhook(
        |n| n["status"] == "resolved" && n["alerts"][0]["labels"]["id"] == "always_db1",
        Duration::from_secs(30),
    );
    let gone = poll_until(Duration::from_secs(10), || {
        firing_in(&am, "db1").is_none().then_some(())
    });
    assert!(gone.is_some(), "still firing: {:#?}", am.alerts());
    let (_, samples) = metrics(&vitals);
    assert_eq!(
        sample_value(
            &samples,
            "vitals_sidecar_alerts_active",
            &[("alertname", "VitalsRecommendation")]
        ),
        None
    );
}

/// How long Alertmanager is down: the 3 minutes of issue 8's acceptance.
const OUTAGE: Duration = Duration::from_secs(180);

/// Issue 8's acceptance: Alertmanager down for 3 minutes while alerts fire, with a 1 s
/// evaluation interval and a 2 s resend delay (so the outage spans many cycles and missed
/// resends): sends failing and staying queued, a resolution and a new alert arising during
/// the outage, a restart that must reload the queue, and delivery of everything once
/// Alertmanager is back.

#[test]
fn alertmanager_outage_and_sidecar_restart_lose_no_alert() {
    let prom = Prometheus::start("");
    let mut am = Alertmanager::start();
    let dir = temp_dir("alerting");
    let queue = dir.path().join("alerts.json");
    let amurl = am.url();
    let cfg = |rules: &[&str]| config(&prom.url(), &amurl, &queue, rules);

    // a and b fire and reach Alertmanager.
    let mut first = Vitals::builder()
        .subcommand("sidecar")
        .config(&cfg(&["a", "b"]))
        .start();
    let b_before = poll_until(Duration::from_secs(30), || {
        Some((firing_in(&am, "a")?, firing_in(&am, "b")?))
    })
    .unwrap_or_else(|| panic!("a and b did not reach Alertmanager: {:#?}", am.alerts()))
    .1;
    let b_starts = ts_ms(&b_before["startsAt"]);
    am.wait_for_webhook(
        |n| n["status"] == "firing" && n["alerts"][0]["labels"]["id"] == "always_a",
        Duration::from_secs(15),
    );

    // Alertmanager stops.
    am.stop();
    let outage = Instant::now();

    // During the outage: a resolves, c starts firing (reload), then the sidecar restarts
    // (SIGTERM) and the new process, with the same queue file, also fires d.
    first.write_config(&cfg(&["b", "c"]));
    first.sighup();
    let queued = poll_until(Duration::from_secs(30), || {
        let (_, s) = metrics(&first);
        let failed = sample_value(
            &s,
            "vitals_sidecar_alerts_failed_total",
            &[("alertmanager", &amurl)],
        )?;
        let len = sample_value(&s, "vitals_sidecar_alert_queue_length", &[])?;
        let c = sample_value(
            &s,
            "vitals_sidecar_alerts_active",
            &[("alertname", "VitalsRecommendation")],
        )?;
        (failed > 0.0 && len >= 3.0 && c == 2.0).then_some(len)
    })
    .unwrap_or_else(|| {
        panic!(
            "the first sidecar did not queue a, b, c: {}",
            first.metrics()
        )
    });
    assert!(queued >= 3.0);
    std::thread::sleep(Duration::from_secs(5));
    let status = first.sigterm();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", first.logs());
    let saved = std::fs::read_to_string(&queue).expect("queue file after shutdown");
    for id in ["always_a", "always_b", "always_c"] {
        assert!(saved.contains(id), "{id} not in the queue file: {saved}");
    }
    drop(first);

    let second = Vitals::builder()
        .subcommand("sidecar")
        .config(&cfg(&["b", "c", "d"]))
        .start();
    poll_until(Duration::from_secs(30), || {
        let (_, s) = metrics(&second);
        let failed = sample_value(
            &s,
            "vitals_sidecar_alerts_failed_total",
            &[("alertmanager", &amurl)],
        )?;
        let active = sample_value(
            &s,
            "vitals_sidecar_alerts_active",
            &[("alertname", "VitalsRecommendation")],
        )?;
        (failed > 0.0 && active == 3.0).then_some(())
    })
    .unwrap_or_else(|| panic!("the second sidecar did not take over: {}", second.metrics()));
    let elapsed = outage.elapsed();
    if elapsed < OUTAGE {
        std::thread::sleep(OUTAGE - elapsed);
    }

    // Alertmanager comes back on the same port (with no alerts: it does not persist them).
    am.restart();
    let back = Instant::now();
    assert!(am.alerts().is_empty() || firing_in(&am, "a").is_none());
    let all = poll_until(Duration::from_secs(30), || {
        Some((
            firing_in(&am, "b")?,
            firing_in(&am, "c")?,
            firing_in(&am, "d")?,
        ))
    })
    .unwrap_or_else(|| {
        panic!(
            "not every firing alert reached Alertmanager: {:#?}\n{}",
            am.alerts(),
            second.logs()
        )
    });
    let delivered_after = back.elapsed();
    assert_eq!(
        ts_ms(&all.0["startsAt"]),
        b_starts,
        "b keeps its startsAt across the outage and the restart"
    );
    // a resolved during the outage: the resolution, queued before the restart, arrives and
    // Alertmanager notifies it (it notified a as firing before the outage).
    assert!(firing_in(&am, "a").is_none(), "a must not fire again");
    am.wait_for_webhook(
        |n| {
            n["status"] == "resolved"
                && n["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["labels"]["id"] == "always_a"))
        },
        Duration::from_secs(30),
    );
    for name in ["b", "c", "d"] {
        assert!(notified(&am, name, "firing"), "{name} was not notified");
    }
    // The queue drains; the counters show the outage.
    let (_, s) = poll_until(Duration::from_secs(20), || {
        let (t, s) = metrics(&second);
        (sample_value(&s, "vitals_sidecar_alert_queue_length", &[]) == Some(0.0)).then_some((t, s))
    })
    .unwrap_or_else(|| panic!("the queue did not drain: {}", second.metrics()));
    let failed = value(
        &s,
        "vitals_sidecar_alerts_failed_total",
        &[("alertmanager", &amurl)],
    );
    let sent = value(
        &s,
        "vitals_sidecar_alerts_sent_total",
        &[("alertmanager", &amurl)],
    );
    let dropped = value(&s, "vitals_sidecar_alerts_dropped_total", &[]);
    assert!(
        failed > 0.0 && sent >= 4.0 && dropped == 0.0,
        "failed {failed} sent {sent} dropped {dropped}"
    );
    eprintln!(
        "outage {:.1} s; after Alertmanager returned, all alerts were there within {:.1} s; second sidecar: {failed} alerts in failed POSTs, {sent} sent, {dropped} dropped",
        (back - outage).as_secs_f64(),
        delivered_after.as_secs_f64()
    );
}

/// A scrape target with two services: checkout fails every request (a 100% outage), search
/// fails 0.5% of them (a steady 5x burn of a 99.9% SLO).
fn serve_outage() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let start = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let n = start.elapsed().as_secs_f64() * 100.0;
            // checkout: every request fails; search: 0.5% fail (5x a 99.9% budget).
            let body = format!(
                "# TYPE vitals_test_requests_total counter\nvitals_test_requests_total {n}\n\
                 # TYPE vitals_test_errors_total counter\nvitals_test_errors_total {n}\n\
                 # TYPE vitals_test_search_requests_total counter\nvitals_test_search_requests_total {n}\n\
                 # TYPE vitals_test_search_errors_total counter\nvitals_test_search_errors_total {}\n",
                n * 0.005
            );
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[test]
fn a_full_outage_of_a_slo_pages_through_alertmanager() {
    let am = Alertmanager::start();
    let source = serve_outage();
    let prom = Prometheus::builder()
        .scrape("shop", &source, "/metrics")
        .start();
    let dir = temp_dir("slo-page");
    let config = format!(
        r#"sidecar:
  prometheus: {{url: "{}"}}
  alertmanagers: [{{url: "{}", timeout: 2s, retries: 0}}]
  interval: {INTERVAL}
  alert_resend_delay: {RESEND}
  alert_queue: {{path: "{}"}}
  default_signals: false
  default_recommendations: false
  default_slos: false
  slos:
    - name: checkout
      objective: 99.9
      description: Checkout requests succeed
      labels: {{team: shop}}
      sli:
        events:
          error_query: sum(rate(vitals_test_errors_total[{{{{.window}}}}]))
          total_query: sum(rate(vitals_test_requests_total[{{{{.window}}}}]))
      alerting:
        name: CheckoutErrorBudgetBurn
        page_alert:
          labels: {{routing: pager}}
    - name: search
      objective: 99.9
      sli:
        events:
          error_query: sum(rate(vitals_test_search_errors_total[{{{{.window}}}}]))
          total_query: sum(rate(vitals_test_search_requests_total[{{{{.window}}}}]))
      alerting:
        name: SearchErrorBudgetBurn
"#,
        prom.url(),
        am.url(),
        dir.path().join("queue.json").display()
    );
    let started = Instant::now();
    let v = Vitals::builder()
        .subcommand("sidecar")
        .config(&config)
        .start();
    let page = poll_until(Duration::from_secs(120), || {
        am.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "CheckoutErrorBudgetBurn"
                && a["labels"]["slo_alert"] == "page"
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no page alert in Alertmanager after 120 s: {:?}\n{}\n{}",
            am.alerts(),
            v.metrics(),
            v.logs()
        )
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(120), "paged after {took:?}");
    let labels = &page["labels"];
    assert_eq!(labels["severity"], "critical", "{page}");
    assert_eq!(labels["routing"], "pager", "{page}");
    assert_eq!(labels["team"], "shop", "{page}");
    assert_eq!(labels["slo"], "checkout", "{page}");
    let description = page["annotations"]["description"].as_str().unwrap_or("");
    assert!(
        description.contains("burn rates 5m 1000"),
        "the description states the burn rates: {description}"
    );
    let (_, samples) = metrics(&v);
    let remaining = value(
        &samples,
        "slo_error_budget_remaining_ratio",
        &[("slo", "checkout")],
    );
    assert!(
        (remaining - (1.0 - 1.0 / 0.001)).abs() < 1e-6,
        "a 100% error ratio spends the budget 1000 times: {remaining}"
    );
    assert_eq!(
        value(
            &samples,
            "slo_alert_active",
            &[("slo", "checkout"), ("alert", "page")]
        ),
        1.0
    );
    // The steady 5x burn: a ticket, never a page.
    let ticket = poll_until(Duration::from_secs(60), || {
        am.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "SearchErrorBudgetBurn"
                && a["labels"]["slo_alert"] == "ticket"
        })
    })
    .unwrap_or_else(|| panic!("no ticket for search: {:?}\n{}", am.alerts(), v.metrics()));
    assert_eq!(ticket["labels"]["severity"], "warning", "{ticket}");
    let (_, samples) = metrics(&v);
    let burn = value(
        &samples,
        "slo_burn_rate",
        &[("slo", "search"), ("window", "1h")],
    );
    assert!(
        (burn - 5.0).abs() < 0.01,
        "search burns 5x its budget: {burn}"
    );
    // By hand: 0.5% errors over the period against a 0.1% budget leave 1 - 0.005/0.001.
    let left = value(
        &samples,
        "slo_error_budget_remaining_ratio",
        &[("slo", "search")],
    );
    assert!(
        (left - -4.0).abs() < 0.001,
        "budget left {left}, by hand -4"
    );
    assert_eq!(
        value(
            &samples,
            "slo_alert_active",
            &[("slo", "search"), ("alert", "page")]
        ),
        0.0
    );
    assert!(
        !am.alerts()
            .iter()
            .any(|a| a["labels"]["alertname"] == "SearchErrorBudgetBurn"
                && a["labels"]["slo_alert"] == "page"),
        "a 5x burn must not page"
    );
}
