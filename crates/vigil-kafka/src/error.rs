//! The typed error of the Kafka edge.

use rdkafka::error::KafkaError;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A secret property could not be read.
    #[error("kafka property {property}: {source_name} {problem}")]
    Secret {
        /// The librdkafka property.
        property: String,
        /// Where its value should come from.
        source_name: String,
        /// What went wrong.
        problem: String,
    },
    /// librdkafka refused a client configuration or an operation.
    #[error("kafka: {context}")]
    Kafka {
        /// What Vigil was doing.
        context: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// A message is larger than the producer's `message.max.bytes`.
    #[error("a {bytes}-byte message for {topic} is larger than the producer's message.max.bytes")]
    TooLarge {
        /// The topic.
        topic: String,
        /// Size of the message value.
        bytes: usize,
    },
    /// Creating a topic failed.
    #[error("creating topic {topic}: {problem}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        problem: String,
    },
    /// Deleting a topic failed.
    #[error("deleting topic {topic}: {problem}")]
    DeleteTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        problem: String,
    },
    /// The broker does not know the topic (or reports no partitions).
    #[error("topic {topic} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// Messages were not acknowledged by the broker.
    #[error("{failed} message(s) were not delivered (first error: {first})")]
    Delivery {
        /// Messages that failed since the last check.
        failed: u64,
        /// The first failure's error.
        first: String,
    },
    /// Messages were still in flight when the flush deadline passed.
    #[error("{in_flight} message(s) still unacknowledged after {waited:?}")]
    FlushTimeout {
        /// Messages still queued or in flight.
        in_flight: i32,
        /// How long the flush waited.
        waited: std::time::Duration,
    },
}

impl Error {
    /// Wraps a client error with what Vigil was doing.
    pub fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }
}
