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

/// Everything logged through `tracing` in this test process (by any
/// thread, librdkafka's callbacks included) since [`capture_logs`] first
/// ran: one line per event or span, its fields formatted with `Debug`.
pub(crate) fn captured_logs() -> String {
    match LOGS.lock() {
        Ok(l) => l.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Installs the process-wide subscriber that [`captured_logs`] reads
/// (once; later calls do nothing).
pub(crate) fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Capture);
    });
}

static LOGS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// A minimal subscriber: appends every event and span with all its fields
/// to [`LOGS`].
struct Capture;

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

fn append(line: String) {
    match LOGS.lock() {
        Ok(mut l) => {
            l.push_str(&line);
            l.push('\n');
        }
        Err(p) => p.into_inner().push_str(&line),
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut f = Fields(format!("span {}", span.metadata().name()));
        span.record(&mut f);
        append(f.0);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut f = Fields("span record".into());
        values.record(&mut f);
        append(f.0);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut f);
        append(f.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// A `metrics` recorder that keeps the last value of every gauge, keyed
/// `name{label=value,...}` (install it with `metrics::with_local_recorder`
/// on the thread that polls the client).
#[derive(Default)]
pub(crate) struct Gauges(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>);

impl Gauges {
    /// The last value of gauge `key`.
    pub(crate) fn get(&self, key: &str) -> Option<f64> {
        self.0.lock().ok()?.get(key).copied()
    }
}

struct GaugeCell {
    key: String,
    values: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>,
}

impl metrics::GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        if let Ok(mut v) = self.values.lock() {
            *v.entry(self.key.clone()).or_default() += value;
        }
    }

    fn decrement(&self, value: f64) {
        self.increment(-value);
    }

    fn set(&self, value: f64) {
        if let Ok(mut v) = self.values.lock() {
            v.insert(self.key.clone(), value);
        }
    }
}

impl metrics::Recorder for Gauges {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }

    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        metrics::Gauge::from_arc(std::sync::Arc::new(GaugeCell {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            values: self.0.clone(),
        }))
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}
