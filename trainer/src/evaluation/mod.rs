//! The quality benchmark: the feature classifier, KID/FID metrics, `eval`
//! runs, and the reports and plots made from them.

pub mod classifier;
pub mod eval;
pub mod metrics;
pub mod plot;
pub mod report;
