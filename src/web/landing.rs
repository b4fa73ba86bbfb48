//! The landing page: what this vitals is, where its endpoints are, and the state of every
//! collector and target, like Prometheus' targets page.

use std::time::{Duration, SystemTime};

/// One row of the targets table.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// Collector (or sidecar component) name.
    pub collector: String,
    /// Target name; empty for collectors without remote targets.
    pub target: String,
    /// Last state.
    pub up: bool,
    /// When it was last scraped.
    pub last_scrape: SystemTime,
    /// How long that took.
    pub duration: Duration,
    /// Last error, without secrets.
    pub error: Option<String>,
}

/// What a role shows on its landing page.
#[derive(Debug, Clone, Default)]
pub struct LandingPage {
    /// `exporter` or `sidecar`.
    pub role: String,
    /// Where the config came from.
    pub config_source: String,
    /// Enabled collectors or components.
    pub collectors: Vec<String>,
    /// Targets that can be probed with `/probe?target=`.
    pub probe_targets: Vec<String>,
    /// State table.
    pub rows: Vec<TargetRow>,
    /// Notes shown under the heading.
    pub notes: Vec<String>,
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) => format!("{:.1}s ago", d.as_secs_f64()),
        Err(_) => "just now".into(),
    }
}

/// Renders the page.
pub fn render(page: &LandingPage, telemetry_path: &str) -> String {
    let version = crate::telemetry::VERSION;
    let revision = crate::telemetry::REVISION;
    let mut h = String::with_capacity(4096);
    h.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>vitals ");
    h.push_str(&escape(&page.role));
    h.push_str("</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.up{color:#080}.down{color:#b00}</style></head><body>\n");
    h.push_str(&format!(
        "<h1>vitals {}</h1>\n<p>Version {} (revision {}). Config: <code>{}</code></p>\n",
        escape(&page.role),
        escape(version),
        escape(revision),
        escape(&page.config_source)
    ));
    for n in &page.notes {
        h.push_str(&format!("<p>{}</p>\n", escape(n)));
    }
    h.push_str(&format!(
        "<ul><li><a href=\"{0}\">{0}</a></li><li><a href=\"/-/healthy\">/-/healthy</a></li><li><a href=\"/-/ready\">/-/ready</a></li>",
        escape(telemetry_path)
    ));
    for t in &page.probe_targets {
        let q: String = form_urlencoded::byte_serialize(t.as_bytes()).collect();
        h.push_str(&format!(
            "<li><a href=\"/probe?target={}\">/probe?target={}</a></li>",
            escape(&q),
            escape(t)
        ));
    }
    h.push_str("</ul>\n<h2>Enabled collectors</h2>\n<p>");
    h.push_str(&escape(&page.collectors.join(", ")));
    h.push_str("</p>\n<h2>Targets</h2>\n<table><tr><th>Collector</th><th>Target</th><th>State</th><th>Last scrape</th><th>Duration</th><th>Error</th></tr>\n");
    if page.rows.is_empty() {
        h.push_str("<tr><td colspan=\"6\">No scrape yet.</td></tr>\n");
    }
    for r in &page.rows {
        let (class, state) = if r.up { ("up", "UP") } else { ("down", "DOWN") };
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td><td>{}</td><td>{:.3}s</td><td>{}</td></tr>\n",
            escape(&r.collector),
            escape(if r.target.is_empty() { "-" } else { &r.target }),
            ago(r.last_scrape),
            r.duration.as_secs_f64(),
            escape(r.error.as_deref().unwrap_or(""))
        ));
    }
    h.push_str("</table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_it_shows() {
        let page = LandingPage {
            role: "exporter".into(),
            config_source: "<x>".into(),
            collectors: vec!["vitals".into()],
            probe_targets: vec!["a&b".into()],
            rows: vec![TargetRow {
                collector: "postgres".into(),
                target: "<script>".into(),
                up: false,
                last_scrape: SystemTime::now(),
                duration: Duration::from_millis(12),
                error: Some("\"quoted\"".into()),
            }],
            notes: vec![],
        };
        let html = render(&page, "/metrics");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("/probe?target=a%26b"));
        assert!(html.contains("DOWN"));
    }
}
