//! Decoding of Prometheus / VictoriaMetrics query API answers: no panic on any body; decoded
//! range series have strictly increasing timestamps.
#![no_main]

use vitals::sidecar::promql::{InstantData, decode_instant, decode_range};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_range(data) {
        for s in &r.series {
            assert!(s.samples.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", s.samples);
        }
    }
    if let Ok(r) = decode_instant(data)
        && let InstantData::Matrix(series) = &r.data
    {
        for s in series {
            assert!(s.samples.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", s.samples);
        }
    }
});
