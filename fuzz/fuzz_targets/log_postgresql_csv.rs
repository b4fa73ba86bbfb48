//! The `postgresql_csv` log parser on arbitrary lines: no panic, sane records, deterministic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vitals_fuzz::fuzz_named_parser("postgresql_csv", data);
});
