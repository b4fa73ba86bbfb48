//! A log source's state file, as read back after a restart, steering a real tailer over a
//! real file: any bytes are either positions or an error; restored positions (offsets, head
//! fingerprints, any values) never make the tailer panic, read past the file, or deliver a
//! line twice.
#![no_main]

use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;
use std::time::Duration;
use vitals::exporter::logs::decode_checkpoint;
use vitals::exporter::logs::tail::{Line, StartAt, Tailer};

const CONTENT: &str = "alpha one\nbeta two\ngamma three\n";

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp dir");
        std::fs::write(d.path().join("app.log"), CONTENT).expect("write log");
        d
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut saved) = decode_checkpoint(text) else {
        return;
    };
    let log = dir().path().join("app.log");
    let meta = std::fs::metadata(&log).expect("log exists");
    // Positions the fuzzer marks with path "app.log" refer to the real file, so that its
    // offsets and fingerprints are exercised; others stay as they are (not found).
    for p in &mut saved.positions {
        if p.path.as_os_str() == "app.log" {
            p.path = log.clone();
            p.dev = meta.dev();
            p.ino = meta.ino();
        }
    }
    let mut t = Tailer::new(
        &log.display().to_string(),
        Some(saved),
        StartAt::Beginning,
        64,
        Duration::ZERO,
    );
    let mut lines = 0usize;
    let mut bytes = 0usize;
    for _ in 0..2 {
        t.poll(&mut |l: Line<'_>| {
            lines += 1;
            bytes += l.bytes.len() + 1;
        });
    }
    assert!(lines <= 3, "{lines} lines delivered from a file of 3");
    assert!(bytes <= CONTENT.len(), "{bytes} bytes delivered from {}", CONTENT.len());
    for p in t.positions() {
        assert!(p.offset <= CONTENT.len() as u64, "offset {} past the end", p.offset);
    }
});
