//! The Alertmanager delivery queue file, as read back after a restart: any bytes are either
//! a queue or an error; a restored queue respects its bound, survives a save/restore round
//! trip unchanged, keeps working through updates at any time, and empties once every
//! notification is acknowledged.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vitals::sidecar::alertmanager::{Alert, Notifier, NotifierSettings};

const AM: &str = "http://127.0.0.1:9093";

fn settings() -> NotifierSettings {
    NotifierSettings {
        resend_delay: Duration::from_secs(60),
        valid_for: Duration::from_secs(240),
        resolved_retention: Duration::from_secs(900),
        max_alerts: 8,
        restore_cycles: 2,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ams: BTreeSet<String> = [AM.to_string()].into();
    let Ok(mut n) = Notifier::restore(settings(), ams.clone(), data) else {
        return;
    };
    assert!(n.queue_len() <= 8, "bound after restore: {}", n.queue_len());
    let saved = n.to_json();
    let again = Notifier::restore(settings(), ams.clone(), &saved).expect("own file restores");
    assert_eq!(again.to_json(), saved, "save/restore round trip");

    // Whatever times the file holds, updates at both ends of time and in between work.
    let alert = Alert {
        labels: BTreeMap::from([("alertname".to_string(), "Fuzz".to_string())]),
        annotations: BTreeMap::new(),
        starts_at_ms: 1_700_000_000_000,
        generator_url: None,
    };
    for now in [i64::MIN, 0, 1_700_000_000_000, i64::MAX] {
        n.update(vec![alert.clone()], now);
        n.update(Vec::new(), now);
        assert!(n.queue_len() <= 8);
        let _ = n.firing().count();
        let _ = n.active_by_alertname();
    }
    for batch in n.batches(AM) {
        assert!(!batch.items.is_empty());
        let _: serde_json::Value = serde_json::from_slice(&batch.body).expect("batch is JSON");
        n.ack(AM, &batch.items);
    }
    assert!(!n.has_pending(AM), "every batch acknowledged");
    assert_eq!(n.queue_len(), 0);
});
