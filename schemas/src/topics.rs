//! Default topic names (configurable wherever they are used).

pub const REQUESTS: &str = "driftline.requests";
pub const PREDICTIONS: &str = "driftline.predictions";
pub const ACTUALS: &str = "driftline.actuals";
pub const LABELLED: &str = "driftline.labelled";
pub const DRIFT: &str = "driftline.drift";
pub const RETRAIN: &str = "driftline.retrain";
pub const MODELS: &str = "driftline.models";
pub const DLQ: &str = "driftline.dlq";
/// How far the trainer has decided each model's versions (`--swap-lag`; compacted).
pub const PROGRESS: &str = "driftline.progress";

pub const ALL: [&str; 9] = [
    REQUESTS,
    PREDICTIONS,
    ACTUALS,
    LABELLED,
    DRIFT,
    RETRAIN,
    MODELS,
    DLQ,
    PROGRESS,
];
