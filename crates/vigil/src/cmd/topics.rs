//! `vigil topics create`: create the telemetry, alert (every route's) and
//! dead-letter topics named in the config.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use vigil_kafka::admin::{create_topics, TopicOutcome};
use vigil_kafka::KafkaSettings;
use vigil_sink::route::AlertSettings;

use crate::settings::Settings;

/// Arguments of `vigil topics`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `vigil topics` actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create the configured topics that do not exist yet.
    Create {
        /// Partitions of each new topic (default: `kafka.partitions`).
        #[arg(long)]
        partitions: Option<i32>,
        /// Bootstrap servers (default: `kafka.brokers`).
        #[arg(long, env = "VIGIL_KAFKA__BROKERS")]
        brokers: Option<String>,
    },
}

/// Creates the telemetry, alert (`kafka.alert_topic` and every alert
/// route's) and (when set) dead-letter topics; prints what happened to
/// each.
pub fn create_all(kafka: &KafkaSettings, alerts: &AlertSettings, partitions: i32) -> Result<()> {
    let mut topics = vec![
        (kafka.telemetry_topic.as_str(), partitions),
        (kafka.alert_topic.as_str(), partitions),
    ];
    for t in alerts.topics(&kafka.alert_topic) {
        if !topics.iter().any(|(x, _)| *x == t) {
            topics.push((t, partitions));
        }
    }
    if !kafka.dlq_topic.is_empty() {
        topics.push((kafka.dlq_topic.as_str(), partitions));
    }
    let out = create_topics(kafka, &topics, Duration::from_secs(30))
        .with_context(|| format!("creating topics on {}", kafka.brokers))?;
    for (t, o) in out {
        match o {
            TopicOutcome::Created(n) => eprintln!("created topic {t} ({n} partitions)"),
            TopicOutcome::Existed => eprintln!("topic {t} already exists"),
        }
    }
    Ok(())
}

/// Runs `vigil topics`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let mut settings = Settings::load(config)?;
    match a.action {
        Action::Create {
            partitions,
            brokers,
        } => {
            if let Some(b) = brokers {
                settings.kafka.brokers = b;
            }
            let n = partitions.unwrap_or(settings.kafka.partitions);
            anyhow::ensure!(n >= 1, "--partitions must be at least 1");
            create_all(&settings.kafka, &settings.alerts, n)
        }
    }
}
