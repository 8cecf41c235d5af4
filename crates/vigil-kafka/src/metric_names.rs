//! Metric names owned by this crate (`vigil_kafka_*`). Labels: `topic`,
//! `partition`.

/// Messages librdkafka failed to deliver after its retries, label `topic`.
pub const PRODUCE_FAILURES: &str = "vigil_kafka_produce_failures_total";
/// Sends retried because the producer queue was full, label `topic`.
pub const PRODUCE_RETRIES: &str = "vigil_kafka_produce_retries_total";
/// Records between the group's committed offset and the high watermark,
/// per partition this worker consumes, label `partition` (from librdkafka
/// statistics, every `statistics.interval.ms`). Sum it over partitions and
/// workers to autoscale on lag.
pub const CONSUMER_LAG: &str = "vigil_kafka_consumer_lag_records";
