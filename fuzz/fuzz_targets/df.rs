//! The df output parser: no panic; parsed values consistent (free and available never above
//! size where df said so, mount points absolute and on one line, one row per label set), and
//! a filesystem printed back as a df row parses to the same mount point.
#![no_main]

use std::collections::HashSet;
use vitals::exporter::ssh_disk::df;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(out) = df::parse(&text) else {
        return;
    };
    // A table whose rows all lack numbers (`-` columns) is Ok with no filesystem: that is
    // what `df -a` prints for some pseudo filesystems, so only the counts are checked.
    assert!(out.filesystems.len() + out.unparsed_lines <= text.lines().count());
    let mut seen = HashSet::new();
    for fs in &out.filesystems {
        assert!(fs.mountpoint.starts_with('/'), "mount point {:?}", fs.mountpoint);
        assert!(!fs.mountpoint.contains('\n') && !fs.device.contains('\n'));
        assert!(!fs.device.is_empty() && !fs.fstype.is_empty());
        assert!(fs.free_bytes <= fs.size_bytes, "{fs:?}");
        assert!(
            seen.insert((&fs.device, &fs.fstype, &fs.mountpoint)),
            "duplicate label set {fs:?}"
        );
        // Round trip: a df -B1 row for this filesystem gives back the same mount point.
        if fs.device.chars().any(char::is_whitespace) || fs.fstype.contains(char::is_whitespace) {
            continue;
        }
        let row = format!(
            "Filesystem Type 1-blocks Used Available Capacity Mounted on\n{} {} {} {} {} 0% {}\n",
            fs.device,
            fs.fstype,
            fs.size_bytes,
            fs.size_bytes - fs.free_bytes,
            fs.avail_bytes,
            fs.mountpoint
        );
        let again = df::parse(&row).expect("a well-formed row parses");
        assert_eq!(again.filesystems.len(), 1, "{row:?}");
        let back = &again.filesystems[0];
        assert_eq!(back.mountpoint, fs.mountpoint, "{row:?}");
        assert_eq!(back.size_bytes, fs.size_bytes);
        assert_eq!(back.free_bytes, fs.free_bytes);
        assert_eq!(back.avail_bytes, fs.avail_bytes);
    }
});
