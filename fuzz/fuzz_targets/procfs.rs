//! The /proc file parsers (stat, /proc/stat btime, limits, status, io, cmdline) on the same
//! arbitrary bytes: no panic, and what they return is consistent with the text.
#![no_main]

use vitals::exporter::procfs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let cmdline = procfs::parse_cmdline(data);
    assert!(!cmdline.contains('\0'));
    let text = String::from_utf8_lossy(data);
    if let Ok(stat) = procfs::parse_stat(&text) {
        assert!(text.contains(&format!("({})", stat.comm)));
        // The state is the first non-blank after the command (ASCII blanks as the kernel writes them).
        assert!(!stat.state.is_ascii_whitespace());
    }
    if let Ok(btime) = procfs::parse_boot_time(&text) {
        assert!(text.contains("btime "), "{btime}");
    }
    let _ = procfs::parse_max_open_files(&text);
    let status = procfs::parse_status(&text);
    if status.uid.is_some() {
        assert!(text.contains("Uid:"));
    }
    if procfs::parse_io(&text).is_ok() {
        assert!(text.contains("read_bytes:") && text.contains("write_bytes:"));
    }
});
