//! Shared checks for the fuzz targets in `fuzz_targets/`: each target feeds bytes to one
//! parser of vitals and asserts, besides "no panic", the invariants that are cheap to check.

use vitals::exporter::logs::parsers::{LineParser, Parsed, Record};

/// What one run of a line parser over an input produced, for comparing two runs.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// Per input line: 0 record, 1 continuation, 2 failure.
    pub kinds: Vec<u8>,
    /// Records (including the one flushed at the end), rendered for comparison.
    pub records: Vec<String>,
}

/// Splits `data` into lines as the tailer does (on `\n`, a trailing `\r` removed, invalid
/// UTF-8 repaired) and runs `parser` over them, then flushes it.
///
/// Checks: every line gets exactly one verdict; an entry is made of at least one line, so
/// records plus failures never exceed lines; records are sane (count at least 1, finite
/// timestamps, message no longer than the input).
pub fn run_lines(parser: &mut dyn LineParser, data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let mut out = Outcome {
        kinds: Vec::new(),
        records: Vec::new(),
    };
    let mut failures = 0usize;
    let mut lines = 0usize;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        lines += 1;
        match parser.parse(line) {
            Parsed::Record(r) => {
                check_record(&r, text.len());
                out.records.push(render(&r));
                out.kinds.push(0);
            }
            Parsed::Continuation => out.kinds.push(1),
            Parsed::Failure => {
                failures += 1;
                out.kinds.push(2);
            }
        }
    }
    if let Some(r) = parser.flush() {
        check_record(&r, text.len());
        out.records.push(render(&r));
    }
    assert_eq!(out.kinds.len(), lines, "one verdict per line");
    assert!(
        out.records.len() + failures <= lines,
        "{} records and {failures} failures from {lines} lines",
        out.records.len()
    );
    assert!(parser.flush().is_none(), "a second flush returns nothing");
    out
}

fn check_record(r: &Record<'_>, input_len: usize) {
    assert!(r.count >= 1, "count {} < 1", r.count);
    if let Some(ts) = r.timestamp {
        assert!(ts.is_finite(), "timestamp {ts}");
    }
    assert!(
        r.message.len() <= input_len,
        "message of {} bytes from {input_len} bytes of input",
        r.message.len()
    );
}

fn render(r: &Record<'_>) -> String {
    format!(
        "{:?}|{:?}|{:?}|{}|{}|{:?}",
        r.level, r.timestamp, r.program, r.message, r.count, r.sqlstate
    )
}

/// Runs a fresh parser from `make` twice over `data` and checks both runs agree (parsers
/// keep no state beyond the lines they were given).
pub fn fuzz_parser(make: impl Fn() -> Box<dyn LineParser>, data: &[u8]) {
    let first = run_lines(make().as_mut(), data);
    let second = run_lines(make().as_mut(), data);
    assert_eq!(first, second, "same input, same outcome");
}

/// Runs the built-in parser named `name` (a `parser:` value) over `data`.
pub fn fuzz_named_parser(name: &str, data: &[u8]) {
    let kind = vitals::exporter::logs::parsers::ParserKind::from_name(name)
        .unwrap_or_else(|| panic!("unknown parser {name}"));
    fuzz_parser(|| kind.build(), data);
}
