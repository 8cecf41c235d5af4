//! A broker outage of 60 s under a running worker, on a broker of the
//! test's own (nisshi with its sqlite engine, so topics, records and
//! committed offsets survive the kill; DESIGN.md "Test broker"). The
//! worker must stay up, resume by itself, and not take the broker's
//! silence for the agents': while its partitions cannot be fetched their
//! idle clocks pause, so a window open across the outage is not closed
//! by idleness and takes the points that come after it. The idle timeout
//! (4 s) is set below the outage and below the group session timeout
//! (6 s, until which the member keeps its partitions without a broker),
//! so a worker whose clocks ran on would close every open window and
//! refuse the points after the outage as `late`. After the session
//! timeout the partitions are revoked; they come back through their
//! checkpoints, with the time unowned skipped.

use std::net::TcpStream;

use super::*;

/// A nisshi broker of this test, on its own port and sqlite file (the
/// chaos test's too).
pub(super) struct Broker {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// The nisshi binary scripts/test.sh uses (`VIGIL_TEST_NISSHI`), or
    /// `None` (the test is skipped) outside it.
    pub(super) fn start() -> Option<Broker> {
        let bin = match std::env::var("VIGIL_TEST_NISSHI") {
            Ok(b) if !b.is_empty() => PathBuf::from(b),
            _ => {
                assert!(
                    std::env::var("VIGIL_REQUIRE_BROKER").as_deref() != Ok("1"),
                    "VIGIL_REQUIRE_BROKER=1 but VIGIL_TEST_NISSHI is not set"
                );
                eprintln!("skipped: no nisshi binary; scripts/test.sh sets VIGIL_TEST_NISSHI");
                return None;
            }
        };
        let mut b = Broker {
            bin,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        b.up();
        Some(b)
    }

    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its port and sqlite file; waits until it
    /// listens.
    pub(super) fn up(&mut self) {
        let url = format!("tcp://{}", self.addr());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nisshi.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .current_dir(self.dir.path())
            .args(["broker", "--storage-engine", "sqlite://nisshi.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--group-initial-rebalance-delay", "0s"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "nisshi did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker is gone at once.
    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn kafka_broker_outage_of_60s_pauses_idle_clocks_and_the_worker_resumes() {
    let Some(mut broker) = Broker::start() else {
        return;
    };
    let env = Env::on("outage", broker.addr());
    // Batches 0..60 leave every window from minute 60 half filled: its
    // other half comes with batch 60, after the outage.
    let first = fleet(AGENTS, 0..60);
    let second = fleet(AGENTS, 60..90);
    env.produce(&first);
    let toml = "\"statistics.interval.ms\" = \"1000\"\n";
    let mut w = env.worker_with_config(
        "w",
        toml,
        &[
            ("VIGIL_PIPELINE__IDLE_TIMEOUT", "4s"),
            ("VIGIL_PIPELINE__TICK_INTERVAL", "1s"),
        ],
    );
    env.wait_committed(&[&w]);
    broker.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    assert!(
        w.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the worker exited during the outage:\n{}",
        w.log()
    );
    broker.up();
    eprintln!("broker down for {:.1}s", down.elapsed().as_secs_f64());
    env.produce(&second);
    env.wait_committed(&[&w]);
    let metrics = w.metrics();
    let log = w.stop();
    assert!(log.contains("its idle and offline clocks pause"), "{log}");
    // Either the member kept its partitions and resumed their clocks, or
    // the broker's restart cost it its membership and the partitions came
    // back through their checkpoints (the time unowned skipped as well).
    let after = &log[log.find("its idle and offline clocks pause").unwrap()..];
    assert!(
        after.contains("its clocks resume")
            || after.contains("restored the partition's checkpoint"),
        "{log}"
    );
    // No point refused as late after the outage (the metric is exported
    // at 0 from the start or not at all).
    let late: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("vigil_pipeline_rejected_points_total") && l.contains("\"late\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert_eq!(late, 0.0, "points refused as late:\n{metrics}");
    let paused = metric_value(&metrics, "vigil_worker_clocks_paused_milliseconds_total");
    // Held until the session timeout (6 s here) revoked the partitions;
    // the time after that is skipped at their restore.
    assert!(paused >= 2_000.0, "paused {paused} ms");
    // The windows the watermark closed; the agents' last windows too
    // when the worker stayed up past the idle timeout (4 s) after the
    // last record before it was stopped (a loaded machine).
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_windows_or_idle_closed(&env, &all);
}
