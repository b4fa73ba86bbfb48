//! The pattern miner on arbitrary messages with arbitrary (clamped) options: no panic,
//! bounded clusters and templates, ids stable for the same input.
#![no_main]

use vitals::exporter::logs::fingerprint::{Miner, MinerOptions};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (o, rest) = data.split_at(6);
    let opts = MinerOptions {
        max_clusters: usize::from(o[0] % 64),
        similarity: f64::from(o[1]) / 250.0 - 0.01,
        depth: usize::from(o[2] % 8),
        max_template_len: usize::from(o[3]),
        max_tokens: usize::from(o[4] % 80),
        max_children: usize::from(o[5] % 16),
    };
    let text = String::from_utf8_lossy(rest);
    let mut a = Miner::new(opts.clone());
    let mut b = Miner::new(opts);
    let max_clusters = a.options().max_clusters;
    let max_template = a.options().max_template_len;
    for line in text.split('\n') {
        let id = a.observe(line);
        assert_eq!(b.observe(line), id, "two miners fed alike assign alike");
        assert_eq!(a.observe(line), id, "the same message again gets the same id");
        let template = a.template(id).expect("a just-assigned pattern is live");
        // `...` marks a cut template.
        assert!(template.chars().count() <= max_template + 3, "template {template:?}");
        assert!(a.count(id).is_some_and(|n| n >= 2));
        assert!(a.len() <= max_clusters, "{} > {max_clusters} clusters", a.len());
    }
    assert_eq!(a.patterns().count(), a.len());
});
