//! The user-defined `regex` parser: the first line of the input is the pattern (as a config
//! would give it), the rest are log lines. Patterns that do not compile are rejected with an
//! error, never a panic; compiled ones parse like any other parser.
#![no_main]

use vitals::exporter::logs::parsers::RegexParser;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, lines) = text.split_once('\n').unwrap_or((&text, ""));
    // Bounded like a config line; the regex crate bounds compiled size itself.
    if pattern.len() > 256 {
        return;
    }
    let Ok(first) = RegexParser::new(pattern) else {
        return;
    };
    drop(first);
    vitals_fuzz::fuzz_parser(
        || Box::new(RegexParser::new(pattern).expect("compiled once already")),
        lines.as_bytes(),
    );
});
