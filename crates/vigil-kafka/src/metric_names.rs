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
/// Seconds from the instant a timed message was handed to the producer
/// to the broker's acknowledgement, label `topic`. The worker times its
/// alerts from the moment the pipeline emitted them (a window closed, a
/// detector fired), so on the alert topic this is "window close → alert
/// acknowledged".
pub const ACK_LATENCY: &str = "vigil_kafka_produce_ack_latency_seconds";
