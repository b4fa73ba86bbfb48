//! The signals a sidecar evaluates: the shipped defaults (default_signals.yml, covering
//! vitals' own families and node_exporter's) merged with the configured ones.

use crate::config::{SidecarConfig, Signal};

/// The shipped default signals, as YAML.
pub const DEFAULTS_YAML: &str = include_str!("default_signals.yml");

/// The shipped default signals.
pub fn defaults() -> Vec<Signal> {
    // The file is part of the binary and covered by a unit test; an error here is a bug in
    // this build, reported rather than panicking.
    // Through the config reader, as the configured ones: one deserializer per type in the
    // binary (each extra one is more code, and code pages are most of the resident memory).
    match crate::config::parse_yaml(DEFAULTS_YAML, "default_signals.yml") {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "the embedded default signals do not parse; using none");
            Vec::new()
        }
    }
}

/// Defaults (unless switched off) with configured signals replacing defaults of the same
/// name and adding the rest, in order.
pub fn effective(cfg: &SidecarConfig) -> Vec<Signal> {
    let mut out: Vec<Signal> = if cfg.default_signals {
        defaults()
    } else {
        Vec::new()
    };
    for s in &cfg.signals {
        match out.iter_mut().find(|d| d.name == s.name) {
            Some(d) => *d = s.clone(),
            None => out.push(s.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn defaults_parse_and_validate() {
        let d = defaults();
        assert!(d.len() >= 20, "{}", d.len());
        let mut cfg = Config::default();
        cfg.sidecar.signals = d.clone();
        assert_eq!(cfg.validate(), vec![], "defaults are valid config");
        let domains: std::collections::BTreeSet<_> = d.iter().map(|s| s.domain.as_str()).collect();
        for want in ["postgres", "process", "logs", "disk", "system", "network"] {
            assert!(domains.contains(want), "no default signal in {want}");
        }
    }

    #[test]
    fn configured_signals_replace_and_extend() {
        let mut cfg = SidecarConfig::default();
        let mut mine = defaults()[0].clone();
        mine.expr = "vector(1)".into();
        cfg.signals = vec![
            mine.clone(),
            Signal {
                name: "extra".into(),
                ..mine.clone()
            },
        ];
        let e = effective(&cfg);
        assert_eq!(e.len(), defaults().len() + 1);
        assert_eq!(e[0], mine);
        assert_eq!(e.last().map(|s| s.name.as_str()), Some("extra"));
        cfg.default_signals = false;
        assert_eq!(effective(&cfg).len(), 2);
    }
}
