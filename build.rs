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
/// warning) and glibc 2.36 to run (the linker records that requirement, so an older glibc
/// refuses to start the binary with a clear message). `VITALS_PACK_RELOCS=0` turns it off.
fn pack_relative_relocations() {
    println!("cargo:rerun-if-env-changed=VITALS_PACK_RELOCS");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("VITALS_PACK_RELOCS") != "0"
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
