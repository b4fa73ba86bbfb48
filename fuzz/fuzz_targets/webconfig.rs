//! The web config file (`--web.config.file`) and basic-auth headers: any text is either a
//! config or an error naming the file; no panic.
#![no_main]

use std::sync::OnceLock;
use vitals::web::webconfig::{WebConfig, parse_basic};

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((user, pass)) = parse_basic(data) {
        assert!(!user.contains(':'), "the user ends at the first colon");
        let _ = pass;
    }
    let path = dir().path().join("web.yml");
    std::fs::write(&path, data).expect("write the web config");
    match WebConfig::load(&path) {
        Ok(c) => {
            let _ = (c.requires_auth(), c.headers().len(), c.tls().is_some());
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("web.yml"), "error does not name the file: {msg}");
        }
    }
});
