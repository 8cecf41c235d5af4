//! Topic administration: create the telemetry, alert and dead-letter
//! topics (`vigil topics create`, or at worker start with
//! `kafka.create_topics`) and read a topic's partition count.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{KafkaSettings, Role};
use crate::error::{Error, Result};

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created with this many partitions.
    Created(i32),
    /// It already existed (left as it is).
    Existed,
}

/// Creates each `(topic, partitions)` that does not exist yet, with the
/// settings' replication factor. Topics that already exist are left alone.
pub fn create_topics(
    settings: &KafkaSettings,
    topics: &[(&str, i32)],
    timeout: Duration,
) -> Result<Vec<(String, TopicOutcome)>> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(Role::Admin)?
        .create()
        .map_err(Error::kafka("creating the admin client"))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(settings.replication_factor)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::CreateTopic {
            topic: topics.first().map(|t| t.0.to_string()).unwrap_or_default(),
            problem: format!("starting a runtime: {e}"),
        })?;
    let results = rt
        .block_on(admin.create_topics(new.iter(), &opts))
        .map_err(Error::kafka("creating topics"))?;
    let mut out = Vec::with_capacity(results.len());
    for (r, (_, parts)) in results.into_iter().zip(topics) {
        match r {
            Ok(t) => {
                tracing::info!(topic = %t, partitions = parts, "created topic");
                out.push((t, TopicOutcome::Created(*parts)));
            }
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((t, TopicOutcome::Existed)),
            Err((topic, code)) => {
                return Err(Error::CreateTopic {
                    topic,
                    problem: code.to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// The partition count of `topic`, or `None` when the broker does not
/// know it.
pub fn partition_count(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(Role::Admin)?
        .create()
        .map_err(Error::kafka("creating the admin client"))?;
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(Error::kafka(format!("reading metadata of {topic}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len()))
}
