//! Helpers shared by the unit tests of this crate (rdkafka mock cluster).

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::config::{KafkaSettings, Role};

/// Sends `n` one-byte records (`0, 1, ..`) to `topic`/`partition` and
/// waits for them to be acknowledged.
pub(crate) fn send_bytes(settings: &KafkaSettings, topic: &str, partition: i32, n: u8) {
    let p: BaseProducer = settings
        .client_config(Role::Producer)
        .unwrap()
        .create()
        .unwrap();
    for i in 0..n {
        let v = [i];
        p.send(
            BaseRecord::<(), _>::to(topic)
                .partition(partition)
                .payload(&v[..]),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}
