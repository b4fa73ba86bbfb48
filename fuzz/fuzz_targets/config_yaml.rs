//! The config file: any text is either a config or an error that names the file; a parsed
//! config, written back as YAML, parses to the same config (secrets aside).
#![no_main]

use vitals::config::Config;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.yml", None) {
        Ok(config) => {
            let yaml = serde_norway::to_string(&config).expect("a config serialises");
            let again = Config::parse(&yaml, "again.yml", None)
                .unwrap_or_else(|e| panic!("written back, it does not parse: {e}\n{yaml}"));
            // Compared as YAML: secrets serialise as `<secret>` and so compare equal there.
            let yaml2 = serde_norway::to_string(&again).expect("a config serialises");
            assert_eq!(yaml2, yaml, "round trip through YAML");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz.yml"), "error does not name the file: {msg}");
        }
    }
});
