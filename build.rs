//! Records the git revision for `--version` and `vitals_build_info`.
use std::process::Command;

fn main() {
    let rev = std::env::var("VITALS_GIT_REVISION")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=VITALS_GIT_REVISION={rev}");
    println!("cargo:rerun-if-env-changed=VITALS_GIT_REVISION");
    pack_relative_relocations();
    // HEAD names the branch; the branch's ref file changes with every commit.
    let mut watch = vec![".git/HEAD".to_string(), ".git/packed-refs".to_string()];
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(r) = head.trim().strip_prefix("ref: ")
    {
        watch.push(format!(".git/{r}"));
    }
    for f in watch {
        if std::path::Path::new(&f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
}

/// Links the binary with packed relative relocations (DT_RELR) on GNU/Linux: the ~38,000
/// relocations of a position-independent vitals take 0.9 MB as RELA entries, which the
/// dynamic loader reads at every start (resident for the life of the process), and a few KB
/// as RELR. Needs binutils 2.38 or lld 15 to link (older GNU ld ignores the option with a
/// warning) and glibc 2.36 to run, so it is only used when this machine's glibc is 2.36 or
/// newer and the build is not a cross build: a binary built on Ubuntu 22.04 (glibc 2.35) or
/// RHEL 9 must still start there. `VITALS_PACK_RELOCS=0` turns it off, `=1` forces it.
fn pack_relative_relocations() {
    println!("cargo:rerun-if-env-changed=VITALS_PACK_RELOCS");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    let wanted = match var("VITALS_PACK_RELOCS").as_str() {
        "0" => false,
        "1" => true,
        _ => var("HOST") == var("TARGET") && host_glibc_at_least(2, 36),
    };
    if wanted {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether `getconf GNU_LIBC_VERSION` reports at least `major.minor` ("glibc 2.36").
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Some(out) = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .filter(|o| o.status.success())
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches("glibc")
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
