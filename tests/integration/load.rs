//! Load behaviour of the exporter against a real PostgreSQL: overlapping scrapes share one
//! collection (single-flight) instead of each running every collector. The long load and
//! soak runs are scripts (scripts/stress/exporter.sh, scripts/soak/exporter.sh).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::support::postgres::{Postgres, SUPERUSER_PASSWORD};
use crate::support::vitals::Vitals;
use crate::support::{http_client, parse_samples, sample_value};

fn counter(v: &Vitals, name: &str) -> f64 {
    let page = v.metrics();
    sample_value(&parse_samples(&page), name, &[])
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{page}"))
}

/// Fires `n` GETs of `path` at once; returns every (status, body, elapsed).
fn burst(v: &Vitals, path: &str, n: usize) -> Vec<(u16, String, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let url = format!("{}{path}", v.base_url());
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let client = http_client();
                barrier.wait();
                let started = Instant::now();
                let r = client
                    .get(&url)
                    .header("X-Prometheus-Scrape-Timeout-Seconds", "8")
                    .send()
                    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                let status = r.status().as_u16();
                (status, r.text().unwrap_or_default(), started.elapsed())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("request thread"))
        .collect()
}

#[test]
fn overlapping_scrapes_share_one_collection() {
    let pg = Postgres::start();
    // Targets that accept TCP but never answer: the first attempt on each lasts its
    // connect_timeout (later ones are cut short by the reconnect backoff), so each burst below
    // overlaps one slow collection. `probed` is first reached by the /probe burst, `hung` by
    // the /metrics burst.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let probed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = |name: &str, port: u16| {
        format!(
            "      - name: {name}\n        host: 127.0.0.1\n        port: {port}\n        user: postgres\n        password: ${{VITALS_IT_PG_PW}}\n        sslmode: disable\n        connect_timeout: 2s\n"
        )
    };
    let config = format!(
        "exporter:\n  postgres:\n    targets:\n{}{}{}",
        target("good", pg.port()),
        target("probed", probed.local_addr().expect("addr").port()),
        target("hung", hung.local_addr().expect("addr").port()),
    );
    let v = Vitals::builder()
        .config(&config)
        .env("VITALS_IT_PG_PW", SUPERUSER_PASSWORD)
        .arg("--no-collector.process")
        .start();

    // /probe of one target: 8 at once.
    const P: usize = 8;
    let answers = burst(&v, "/probe?target=probed", P);
    for (status, body, took) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains("pg_up{target=\"probed\"} 0"), "{body}");
        assert!(!body.contains("target=\"good\""), "{body}");
        assert!(
            *took >= Duration::from_millis(1500),
            "slow probe overlapped: {took:?}"
        );
    }
    // /metrics: 16 at once.
    const N: usize = 16;
    let xacts = "select sum(xact_commit + xact_rollback) from pg_stat_database";
    let xacts_before = pg.psql(xacts);
    let answers = burst(&v, "/metrics", N);
    let xacts_after = pg.psql(xacts);
    for (status, body, took) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(
            body.contains("pg_up{target=\"good\"} 1"),
            "every waiter got the good target's series:\n{body}"
        );
        assert!(body.contains("pg_up{target=\"hung\"} 0"), "{body}");
        assert!(
            *took < Duration::from_secs(8),
            "answered within budget: {took:?}"
        );
    }
    // Counted by this read's page, which is itself one more collection.
    let collections = counter(&v, "vitals_scrape_collections_total");
    let shared = counter(&v, "vitals_scrape_shared_total");
    eprintln!(
        "single-flight: {P} probes + {N} scrapes + 1 read -> {collections} collections, \
         {shared} shared; pg transactions during the burst: {} -> {}",
        xacts_before.trim(),
        xacts_after.trim()
    );
    assert!(
        collections <= 3.0 + 2.0,
        "{P} overlapping probes and {N} overlapping scrapes ran {collections} collections \
         (want 1 + 1, +1 for the read; at most 2 per burst if a thread was slow to start)"
    );
    assert!(
        shared >= (P + N - 4) as f64,
        "only {shared} of {} scrapes joined a running collection",
        P + N
    );
}
