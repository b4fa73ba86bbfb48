//! Recommendations against real servers: every shipped rule's PromQL is accepted by a real
//! Prometheus, and — issue 8's acceptance — a table with autovacuum off and many deleted rows
//! in a real PostgreSQL, scraped by the vitals exporter into a real Prometheus, raises the
//! vacuum recommendation naming the table and its dead-tuple ratio; after VACUUM it resolves.

use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::registry::Registry;
use vitals::config::PrometheusEndpoint;
use vitals::sidecar::promql::{InstantSample, PromClient};
use vitals::sidecar::recommend::{self, FindingState, QueryApi, Recommender, Report};
use vitals::web::openmetrics_to_text;

use crate::support::postgres::{Postgres, SUPERUSER_PASSWORD};
use crate::support::prometheus::{Prometheus, sample_values};
use crate::support::promtool_check;
use crate::support::vitals::Vitals;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[test]
fn every_shipped_rule_parses_in_prometheus() {
    let prom = Prometheus::start("");
    let rules = recommend::defaults();
    assert!(rules.len() >= 36, "{} rules", rules.len());
    let mut queries = 0;
    for r in &rules {
        // Prometheus::query panics with Prometheus' error when the PromQL does not parse.
        prom.query(&r.condition);
        queries += 1;
        for expr in r.values.values() {
            prom.query(expr);
            queries += 1;
        }
    }
    assert!(queries > rules.len(), "{queries} queries");
}

/// The query API through the test harness' own HTTP client, so the scenario also runs
/// where the sidecar's PromClient is not available.
struct HarnessApi<'a>(&'a Prometheus);

impl QueryApi for HarnessApi<'_> {
    async fn instant(&self, expr: &str, time_ms: i64) -> Result<Vec<InstantSample>, String> {
        let time = format!("{:.3}", time_ms as f64 / 1000.0);
        // The harness' client is blocking; it must not run on the runtime's thread.
        let data = std::thread::scope(|s| {
            s.spawn(|| {
                self.0
                    .api_get("/api/v1/query", &[("query", expr), ("time", &time)])
            })
            .join()
        })
        .map_err(|_| format!("query {expr} failed (see the panic above)"))?;
        let result = &data["result"];
        if data["resultType"] == "scalar" {
            let v = sample_values(&serde_json::Value::Array(vec![
                serde_json::json!({ "value": result }),
            ]));
            return Ok(v
                .into_iter()
                .map(|value| InstantSample {
                    labels: Default::default(),
                    ts_ms: time_ms,
                    value,
                })
                .collect());
        }
        let samples = result
            .as_array()
            .ok_or_else(|| format!("not a vector: {data}"))?;
        Ok(samples
            .iter()
            .map(|s| InstantSample {
                labels: s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
                ts_ms: time_ms,
                value: sample_values(&serde_json::Value::Array(vec![s.clone()]))
                    .first()
                    .copied()
                    .unwrap_or(f64::NAN),
            })
            .collect())
    }
}

fn evaluate(rec: &mut Recommender, api: &impl QueryApi) -> Report {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(rec.evaluate(api, now_ms()))
}

fn exposition(report: &Report) -> String {
    let mut reg = Registry::default();
    recommend::register(report, &mut reg);
    let mut out = String::new();
    encode_registry(&mut out, &reg).expect("encoding");
    out
}

const TARGET: &str = "main/postgres/public.orders";

/// PostgreSQL with a table `orders` (autovacuum off) of 100000 rows of which 60000 are
/// deleted, the vitals exporter reading it, and Prometheus scraping the exporter.
fn table_needing_vacuum() -> (Postgres, Vitals, Prometheus) {
    let pg = Postgres::start();
    pg.psql("create table orders (id int primary key, pad text) with (autovacuum_enabled = off)");
    pg.psql("insert into orders select g, repeat('x', 50) from generate_series(1, 100000) g");
    pg.psql("delete from orders where id <= 60000");
    let exporter = Vitals::builder()
        .config(&format!(
            "exporter:\n  postgres:\n    targets:\n      - name: main\n        host: 127.0.0.1\n        port: {}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: disable\n        tables_refresh_interval: 0s\n",
            pg.port()
        ))
        .env("VITALS_IT_PG_PW", SUPERUSER_PASSWORD)
        .start();
    let prom = Prometheus::builder()
        .scrape("vitals", &exporter.host_port(), "/metrics")
        .start();
    (pg, exporter, prom)
}

/// PostgreSQL with a table `orders` (autovacuum off) of 100000 rows of which 60000 are
/// deleted, the vitals exporter reading it, Prometheus scraping the exporter; then `eval`
/// runs the shipped rules against that Prometheus, before and after VACUUM.
fn vacuum_finding_names_the_table_and_clears_after_vacuum(
    eval: impl Fn(&mut Recommender, &Prometheus) -> Report,
) {
    let (pg, _exporter, prom) = table_needing_vacuum();
    prom.wait_for(
        r#"pg_stat_user_tables_n_dead_tup{relname="orders"} == 60000 and pg_stat_user_tables_n_live_tup == 40000"#,
        |r| sample_values(r).len() == 1,
        Duration::from_secs(30),
    );
    let mut rec = Recommender::new(recommend::defaults(), Duration::from_secs(60), 100);

    let report = eval(&mut rec, &prom);
    let errors: Vec<_> = report
        .rules
        .iter()
        .filter(|r| r.errors_total > 0)
        .map(|r| (&r.id, &r.last_error))
        .collect();
    assert!(errors.is_empty(), "rules failed: {errors:?}");
    let vacuum: Vec<_> = report
        .active()
        .filter(|f| f.id == "table_needs_vacuum")
        .collect();
    assert_eq!(vacuum.len(), 1, "{:#?}", report.findings);
    let f = vacuum[0];
    assert_eq!(f.target, TARGET);
    assert_eq!(f.title, "Table public.orders in postgres needs VACUUM");
    assert_eq!(
        f.description,
        "public.orders: 60% dead tuples (60k of 100k), last autovacuum never"
    );
    assert!((f.value - 0.6).abs() < 1e-9, "{}", f.value);
    assert!(!f.remediation.is_empty() && f.runbook_url.is_some());
    let out = exposition(&report);
    let line = format!(
        "recommendation_active{{id=\"table_needs_vacuum\",category=\"vacuum\",severity=\"warning\",target=\"{TARGET}\",title=\"Table public.orders in postgres needs VACUUM\"}} 1\n"
    );
    assert!(out.contains(&line), "{out}");
    assert!(
        out.contains("recommendation_findings{id=\"table_needs_vacuum\"} 1\n"),
        "{out}"
    );
    // As /metrics serves it to a client that does not ask for OpenMetrics.
    let (ok, problems) = promtool_check(&openmetrics_to_text(&format!("{out}# EOF\n")));
    assert!(ok && problems.trim().is_empty(), "{problems}\n{out}");

    pg.psql("vacuum orders");
    prom.wait_for(
        r#"pg_stat_user_tables_n_dead_tup{relname="orders"} == 0"#,
        |r| sample_values(r).len() == 1,
        Duration::from_secs(30),
    );
    let report = eval(&mut rec, &prom);
    assert_eq!(
        report
            .active()
            .filter(|f| f.id == "table_needs_vacuum")
            .count(),
        0,
        "{:#?}",
        report.findings
    );
    let resolved: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.target == TARGET && f.state == FindingState::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{:#?}", report.findings);
    assert!(resolved[0].resolved_at_ms.is_some());
    let out = exposition(&report);
    assert!(!out.contains(TARGET), "{out}");
    assert!(
        out.contains("recommendation_findings{id=\"table_needs_vacuum\"} 0\n"),
        "{out}"
    );
}

/// Issue 8's acceptance through the sidecar's own query client.
#[test]
fn vacuum_recommendation_through_the_sidecar_client() {
    vacuum_finding_names_the_table_and_clears_after_vacuum(|rec, prom| {
        let endpoint: PrometheusEndpoint =
            serde_norway::from_str(&format!("url: {}", prom.url())).expect("endpoint");
        evaluate(rec, &PromClient::new(&endpoint).expect("client"))
    });
}

/// The same through the harness' HTTP client: the evaluator, the shipped rule and the
/// exporter's series against real servers, independent of the sidecar's client.
#[test]
fn vacuum_recommendation_through_the_harness_client() {
    vacuum_finding_names_the_table_and_clears_after_vacuum(|rec, prom| {
        evaluate(rec, &HarnessApi(prom))
    });
}

/// Issue 8's acceptance end to end: the same table, the `vitals sidecar` binary with its
/// shipped rules evaluating that Prometheus, and a real Alertmanager: the recommendation
/// arrives there naming the table and its dead-tuple ratio, and after VACUUM it resolves.
#[test]
fn vacuum_recommendation_reaches_alertmanager_and_resolves() {
    use crate::support::alertmanager::Alertmanager;
    let (pg, _exporter, prom) = table_needing_vacuum();
    let am = Alertmanager::start();
    let dir = crate::support::temp_dir("vacuum-am");
    let sidecar = Vitals::builder()
        .subcommand("sidecar")
        .config(&format!(
            "sidecar:\n  prometheus: {{url: '{}'}}\n  alertmanagers: [{{url: '{}', retries: 0, timeout: 2s}}]\n  interval: 1s\n  alert_resend_delay: 2s\n  alert_queue: {{path: '{}'}}\n  default_signals: false\n  default_slos: false\n",
            prom.url(),
            am.url(),
            dir.path().join("queue.json").display()
        ))
        .start();
    let is_vacuum = |a: &serde_json::Value| {
        a["labels"]["id"] == "table_needs_vacuum" && a["labels"]["target"] == TARGET
    };
    let alert = crate::support::poll_until(Duration::from_secs(60), || {
        am.alerts().into_iter().find(|a| is_vacuum(a))
    })
    .unwrap_or_else(|| {
        panic!(
            "no vacuum recommendation in Alertmanager: {:?}\n{}",
            am.alerts(),
            sidecar.logs()
        )
    });
    assert_eq!(
        alert["labels"]["alertname"], "VitalsRecommendation",
        "{alert}"
    );
    assert_eq!(alert["labels"]["category"], "vacuum", "{alert}");
    let description = alert["annotations"]["description"].as_str().unwrap_or("");
    assert!(
        description.contains("public.orders: 60% dead tuples (60k of 100k)"),
        "{alert}"
    );

    pg.psql("vacuum orders");
    am.wait_for_webhook(
        |n| {
            n["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["status"] == "resolved" && is_vacuum(a))
            })
        },
        Duration::from_secs(90),
    );
}
