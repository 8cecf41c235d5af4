//! Topic administration: create the telemetry, alert and dead-letter
//! topics (`vigil topics create`, or at worker start with
//! `kafka.create_topics`), delete topics (`vigil bench --brokers` cleans up
//! after itself), read a topic's partition count, and probe a group's
//! consumer lag ([`OffsetProbe`]: high watermarks against committed
//! offsets, as Kafka's own lag tools and KEDA compute it).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{create_client, KafkaSettings, RedactingContext, Role};
use crate::error::{Error, Result};

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// Created with this many partitions.
    Created(i32),
    /// It already existed (left as it is).
    Existed,
}

/// The runtime the admin client's futures run on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
}

/// Creates each `(topic, partitions)` that does not exist yet, with the
/// settings' replication factor. Topics that already exist are left alone.
pub fn create_topics(
    settings: &KafkaSettings,
    topics: &[(&str, i32)],
    timeout: Duration,
) -> Result<Vec<(String, TopicOutcome)>> {
    let config = settings.client_config(Role::Admin)?;
    let admin: AdminClient<RedactingContext> =
        create_client(&config, RedactingContext::of(&config), "admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(settings.replication_factor)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let rt = runtime().map_err(|e| Error::CreateTopic {
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
    let config = settings.client_config(Role::Admin)?;
    let admin: AdminClient<RedactingContext> =
        create_client(&config, RedactingContext::of(&config), "admin client")?;
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

/// Deletes `topics`. A topic that does not exist is not an error.
pub fn delete_topics(settings: &KafkaSettings, topics: &[&str], timeout: Duration) -> Result<()> {
    let config = settings.client_config(Role::Admin)?;
    let admin: AdminClient<RedactingContext> =
        create_client(&config, RedactingContext::of(&config), "admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(timeout));
    let rt = runtime().map_err(|e| Error::DeleteTopic {
        topic: topics.first().map(|t| t.to_string()).unwrap_or_default(),
        problem: format!("starting a runtime: {e}"),
    })?;
    let results = rt
        .block_on(admin.delete_topics(topics, &opts))
        .map_err(Error::kafka("deleting topics"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "deleted topic"),
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(Error::DeleteTopic {
                    topic,
                    problem: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// One partition's offsets: where the topic starts and ends, and where
/// the group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: i32,
    /// Low watermark: the oldest offset still on the broker.
    pub low: i64,
    /// High watermark: the offset the next record will get.
    pub high: i64,
    /// The group's committed offset, `None` before its first commit.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Records the group has yet to commit: high watermark minus the
    /// committed offset (the low watermark before the first commit).
    pub fn lag(&self) -> u64 {
        let from = self.committed.unwrap_or(self.low).max(self.low);
        u64::try_from(self.high - from).unwrap_or(0)
    }
}

/// Reads a topic's watermarks and a group's committed offsets, repeatedly,
/// over one connection. It does not join the group (it never subscribes),
/// so probing does not disturb the members.
pub struct OffsetProbe {
    consumer: BaseConsumer<RedactingContext>,
    topic: String,
    partitions: Vec<i32>,
}

impl OffsetProbe {
    /// A probe of `settings.group_id` on `topic` (its partitions are read
    /// now, from the broker's metadata).
    pub fn new(settings: &KafkaSettings, topic: &str, timeout: Duration) -> Result<OffsetProbe> {
        let mut config = settings.client_config(Role::Consumer)?;
        // Nobody polls this client: no statistics to pile up.
        config.set("statistics.interval.ms", "0");
        let consumer: BaseConsumer<RedactingContext> =
            create_client(&config, RedactingContext::of(&config), "offset probe")?;
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(Error::kafka(format!("reading metadata of {topic}")))?;
        let mut partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(Error::UnknownTopic {
                topic: topic.to_string(),
            });
        }
        Ok(OffsetProbe {
            consumer,
            topic: topic.to_string(),
            partitions,
        })
    }

    /// The topic's partitions.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Each partition's watermarks and committed offset, now.
    pub fn sample(&self, timeout: Duration) -> Result<Vec<PartitionOffsets>> {
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(Error::kafka(format!(
                "reading committed offsets of {}",
                self.topic
            )))?;
        self.partitions
            .iter()
            .map(|&p| {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, p, timeout)
                    .map_err(Error::kafka(format!(
                        "reading watermarks of {}/{p}",
                        self.topic
                    )))?;
                let committed = match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => Some(o),
                    _ => None,
                };
                Ok(PartitionOffsets {
                    partition: p,
                    low,
                    high,
                    committed,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    #[test]
    fn lag_counts_from_the_commit_or_the_start() {
        let p = |low, high, committed| PartitionOffsets {
            partition: 0,
            low,
            high,
            committed,
        };
        assert_eq!(p(0, 10, None).lag(), 10);
        assert_eq!(p(4, 10, None).lag(), 6);
        assert_eq!(p(0, 10, Some(7)).lag(), 3);
        assert_eq!(p(5, 10, Some(2)).lag(), 5);
        assert_eq!(p(0, 10, Some(12)).lag(), 0);
    }

    #[test]
    fn the_probe_reads_watermarks_and_commits() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 2, 1).unwrap();
        let settings = KafkaSettings {
            brokers: cluster.bootstrap_servers(),
            group_id: "g".into(),
            ..KafkaSettings::default()
        };
        assert!(matches!(
            OffsetProbe::new(&settings, "nope", Duration::from_secs(10)),
            Err(Error::UnknownTopic { .. })
        ));
        crate::test_util::send_bytes(&settings, "t", 1, 5);
        let probe = OffsetProbe::new(&settings, "t", Duration::from_secs(10)).unwrap();
        assert_eq!(probe.partitions(), &[0, 1]);
        let s = probe.sample(Duration::from_secs(10)).unwrap();
        assert_eq!(s[1].high, 5);
        assert_eq!(s[1].committed, None);
        assert_eq!(s[1].lag() + s[0].lag(), 5);
        // A commit by a group member shows.
        let member: BaseConsumer = settings
            .client_config(Role::Consumer)
            .unwrap()
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 1, Offset::Offset(3)).unwrap();
        member
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .unwrap();
        let s = probe.sample(Duration::from_secs(10)).unwrap();
        assert_eq!(s[1].committed, Some(3));
        assert_eq!(s[1].lag(), 2);
    }
}
