//! The process collector over a fake /proc tree whose files come from the input (up to three
//! processes; per process the stat, status, io, limits and cmdline files, separated by 0xFF
//! bytes): no panic, two scrapes in a row, and an exposition that encodes.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use vitals::config::{ProcessConfig, ProcessGroup};
use vitals::exporter::process::ProcessCollector;

const FILES: [&str; 5] = ["stat", "status", "io", "limits", "cmdline"];

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let proc_root: PathBuf = dir().path().join("proc");
    let _ = std::fs::remove_dir_all(&proc_root);
    std::fs::create_dir_all(&proc_root).expect("proc root");
    std::fs::write(proc_root.join("stat"), "cpu 1 2 3\nbtime 1700000000\n").expect("stat");
    let chunks: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    for (i, files) in chunks.chunks(FILES.len()).take(3).enumerate() {
        let pid_dir = proc_root.join((i + 1).to_string());
        std::fs::create_dir_all(pid_dir.join("fd")).expect("pid dir");
        for (name, content) in FILES.iter().zip(files) {
            std::fs::write(pid_dir.join(name), content).expect("proc file");
        }
    }
    let group = |name: &str, comm: &[&str], cmdline: &[&str]| ProcessGroup {
        name: name.to_string(),
        comm: comm.iter().map(|s| s.to_string()).collect(),
        exe: Vec::new(),
        cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
    };
    let cfg = ProcessConfig {
        proc_path: proc_root,
        groups: vec![
            group("{comm}", &[], &["^(?P<first>\\S+) .+"]),
            group("all", &[".*"], &[]),
        ],
        watch: vec!["watched".to_string()],
    };
    let collector = ProcessCollector::from_config(&cfg)
        .expect("valid config")
        .expect("groups configured");
    for _ in 0..2 {
        let registry = collector.scrape_now().expect("the fake /proc is readable");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.ends_with("# EOF\n"));
    }
});
