//! TEMPORARY STUB (replaced by feature/promql): the agreed API only.
#![allow(missing_docs)]
pub type Labels = std::collections::BTreeMap<String, String>;
#[derive(Clone)]
pub struct PromClient;
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("stub")]
    Stub,
}
pub struct RangeSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}
pub struct RangeResult {
    pub series: Vec<RangeSeries>,
    pub warnings: Vec<String>,
}
pub struct InstantSample {
    pub labels: Labels,
    pub ts_ms: i64,
    pub value: f64,
}
pub enum InstantData {
    Vector(Vec<InstantSample>),
    Scalar(i64, f64),
    String(i64, String),
    Matrix(Vec<RangeSeries>),
}
pub struct InstantResult {
    pub data: InstantData,
    pub warnings: Vec<String>,
}
impl PromClient {
    pub fn new(_e: &crate::config::PrometheusEndpoint) -> Result<PromClient, PromError> {
        Ok(PromClient)
    }
    pub async fn query(&self, _expr: &str, _t: Option<i64>) -> Result<InstantResult, PromError> {
        Err(PromError::Stub)
    }
    pub async fn query_range(
        &self,
        _expr: &str,
        _s: i64,
        _e: i64,
        _step: std::time::Duration,
    ) -> Result<RangeResult, PromError> {
        Err(PromError::Stub)
    }
    pub fn requests(&self) -> u64 {
        0
    }
}
