//! Mutation fuzzing of the decoder and the operator chain: records of a
//! simulated fleet (Vigil batches, and the same batches as OTLP requests)
//! are mutated at random (bit flips, random bytes, inserts, deletes,
//! truncation, splices of two records, extreme varints) and fed to
//! `Pipeline::process` / `Pipeline::process_otlp`, with pure random bytes
//! among them. No input may panic, and every record must be accounted
//! for: accepted, a duplicate, or refused with a reason.
//!
//! Why mutation fuzzing from valid seeds rather than `cargo fuzz`: the
//! build machines have a stable toolchain only (libFuzzer's sanitizer
//! coverage needs nightly), and random bytes alone almost never get past
//! the protobuf envelope; mutated real records reach validation, dedup,
//! windows and detectors. The run is deterministic for a seed.
//!
//! The same mutated records, and mutated posture-lab records carrying
//! status reports and security events, also go to the buffer-reusing
//! decoder ([`vigil_ops::decode::BatchDecoder`], one value reused over the
//! whole run) and to prost: both must refuse the same records and decode
//! the others to equal values.
//!
//! `VIGIL_FUZZ_EXECS` sets the number of executions (default 20,000 per
//! format, the short run of the test suite); `VIGIL_FUZZ_SEED` the seed.
//! The long run (10 M executions) is in BENCHMARKS.md "Fuzzing".

use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_ops::config::PipelineConfig;
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::rules::RuleSet;
use vigil_ops::Position;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Valid records to mutate: a small fleet's batches, with every scenario
/// the simulator has (duplicates, late, malformed, reboots, ...).
fn seeds() -> Vec<Vec<u8>> {
    use vigil_sim::{Fleet, FleetConfig, HOUR_MS};
    Fleet::new(FleetConfig {
        agents: 20,
        tenants: 3,
        duration_ms: HOUR_MS,
        seed: 7,
        ..FleetConfig::default()
    })
    .map(|r| r.payload)
    .collect()
}

/// One random mutation of `b`, using `other` for splices.
fn mutate(rng: &mut ChaCha8Rng, b: &mut Vec<u8>, other: &[u8]) {
    let n = b.len();
    match rng.random_range(0..8) {
        0 if n > 0 => {
            let i = rng.random_range(0..n);
            b[i] ^= 1 << rng.random_range(0..8);
        }
        1 if n > 0 => {
            let i = rng.random_range(0..n);
            b[i] = rng.random();
        }
        2 => {
            let i = rng.random_range(0..=n);
            let k = rng.random_range(1..16);
            let mut ins = vec![0u8; k];
            rng.fill_bytes(&mut ins);
            b.splice(i..i, ins);
        }
        3 if n > 0 => {
            let i = rng.random_range(0..n);
            let k = rng.random_range(1..=(n - i).min(32));
            b.drain(i..i + k);
        }
        4 if n > 0 => b.truncate(rng.random_range(0..n)),
        5 if !other.is_empty() => {
            // Splice: a prefix of this record, a suffix of another.
            let i = rng.random_range(0..=n);
            let j = rng.random_range(0..other.len());
            b.truncate(i);
            b.extend_from_slice(&other[j..]);
        }
        6 if n > 0 => {
            // An extreme varint (a length, a seq, a count) at a random place.
            let i = rng.random_range(0..n);
            let v: u64 = match rng.random_range(0..4) {
                0 => u64::MAX,
                1 => 1 << 31,
                2 => i64::MAX as u64,
                _ => rng.random(),
            };
            let mut enc = Vec::new();
            prost::encoding::encode_varint(v, &mut enc);
            let end = (i + enc.len()).min(n);
            b.splice(i..end, enc);
        }
        _ if n > 1 => {
            // Repeat a slice (nested or repeated fields).
            let i = rng.random_range(0..n - 1);
            let k = rng.random_range(1..=(n - i).min(64));
            let s = b[i..i + k].to_vec();
            b.splice(i..i, s);
        }
        _ => b.push(rng.random()),
    }
}

/// Runs `execs` mutated inputs through a pipeline with the default
/// configuration and rules; returns how many were valid whole (taken,
/// or dropped as a resend).
fn run(execs: u64, seed: u64, otlp: bool) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut inputs = seeds();
    if otlp {
        let mut enc = vigil_sim::otlp::OtlpEncoder::new();
        inputs = inputs.iter().map(|p| enc.encode(p)).collect();
    }
    let rules = Arc::new(RuleSet::default_rules());
    let fresh = || Pipeline::new(PipelineConfig::default(), rules.clone()).unwrap();
    let mut p = fresh();
    let mut out = Outputs::default();
    let mut now = 1_793_577_600_000i64;
    let mut accepted = 0;
    let mut done = 0u64;
    for i in 0..execs {
        let mut b = if rng.random_ratio(1, 50) {
            let mut r = vec![0u8; rng.random_range(0..256)];
            rng.fill_bytes(&mut r);
            r
        } else {
            inputs[rng.random_range(0..inputs.len())].clone()
        };
        let other = &inputs[rng.random_range(0..inputs.len())];
        for _ in 0..rng.random_range(0..5) {
            mutate(&mut rng, &mut b, other);
        }
        now += rng.random_range(0..2_000);
        let pos = Position {
            partition: 0,
            offset: i as i64,
        };
        let before = p.stats().clone();
        if otlp {
            p.process_otlp(pos, &b, now, &mut out);
        } else {
            p.process(pos, &b, now, &mut out);
        }
        let st = p.stats();
        assert_eq!(st.records, before.records + 1, "input {i}: {b:?}");
        if !otlp {
            // One verdict per Vigil record.
            let verdicts = |s: &vigil_ops::pipeline::PipelineStats| {
                s.batches_accepted + s.duplicates + s.rejected_records.iter().sum::<u64>()
            };
            assert_eq!(verdicts(st), verdicts(&before) + 1, "input {i}: {b:?}");
        }
        // Valid whole: taken, or dropped as a resend of a taken one (the
        // seeds recur, so many valid inputs are resends).
        if st.rejected_records == before.rejected_records {
            accepted += 1;
        }
        out.clear();
        done += 1;
        // Bounded memory over a long run: a fresh chain now and then
        // (closing what is open first, as at the end of a replay).
        if done.is_multiple_of(200_000) {
            p.finish(&mut out);
            out.clear();
            p = fresh();
        }
    }
    p.finish(&mut out);
    accepted
}

#[test]
fn mutated_vigil_records_never_panic_and_each_gets_one_verdict() {
    let execs = env_u64("VIGIL_FUZZ_EXECS", 20_000);
    let accepted = run(execs, env_u64("VIGIL_FUZZ_SEED", 1), false);
    eprintln!("vigil: {execs} executions, {accepted} valid whole");
    // The mutations must leave some records valid, or only the envelope
    // decoder would be exercised.
    assert!(accepted * 10 >= execs, "{accepted} of {execs}");
    assert!(accepted * 10 <= execs * 9, "{accepted} of {execs}");
}

/// Records carrying status reports or security events (fields 10 and
/// 11): the batches of a small posture lab that hold any.
fn report_seeds() -> Vec<Vec<u8>> {
    use prost::Message;
    use vigil_proto::v1::TelemetryBatch;
    use vigil_sim::posture::{generate, PostureConfig};
    generate(&PostureConfig {
        agents: 30,
        days: 5,
        ..PostureConfig::default()
    })
    .records
    .into_iter()
    .map(|r| r.payload)
    .filter(|p| {
        let b = TelemetryBatch::decode(p.as_slice()).expect("lab records decode");
        !b.status.is_empty() || !b.security_events.is_empty()
    })
    .collect()
}

/// Differential run of the two decoders over mutated records (metric
/// batches of a fleet and posture-lab batches with status reports and
/// security events, half each); returns how many both decoded, and how
/// many of those carried reports or events.
fn differential(execs: u64, seed: u64) -> (u64, u64) {
    use prost::Message;
    use vigil_proto::v1::TelemetryBatch;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let metrics = seeds();
    let reports = report_seeds();
    assert!(!reports.is_empty(), "the lab sends reports and events");
    let mut dec = vigil_ops::decode::BatchDecoder::default();
    let mut reused = TelemetryBatch::default();
    let (mut decoded, mut with_reports) = (0, 0);
    for i in 0..execs {
        let pick = |rng: &mut ChaCha8Rng| {
            let inputs = if rng.random() { &metrics } else { &reports };
            &inputs[rng.random_range(0..inputs.len())]
        };
        let mut b = pick(&mut rng).clone();
        let other = pick(&mut rng);
        for _ in 0..rng.random_range(0..5) {
            mutate(&mut rng, &mut b, other);
        }
        let ours = dec.decode(&b, &mut reused);
        match TelemetryBatch::decode(b.as_slice()) {
            Ok(theirs) => {
                assert_eq!(ours, Ok(()), "input {i}: prost decodes {b:?}");
                // Compared as encodings: values bit for bit (NaN too).
                assert_eq!(
                    reused.encode_to_vec(),
                    theirs.encode_to_vec(),
                    "input {i}: {b:?}"
                );
                decoded += 1;
                if !theirs.status.is_empty() || !theirs.security_events.is_empty() {
                    with_reports += 1;
                }
            }
            Err(e) => assert!(ours.is_err(), "input {i}: prost refuses ({e}) {b:?}"),
        }
    }
    (decoded, with_reports)
}

#[test]
fn buffer_reusing_decoder_agrees_with_prost() {
    let execs = env_u64("VIGIL_FUZZ_EXECS", 20_000);
    let (decoded, with_reports) = differential(execs, env_u64("VIGIL_FUZZ_SEED", 3));
    eprintln!(
        "decoders: {execs} executions, {decoded} decoded by both, \
         {with_reports} of them with status reports or security events"
    );
    assert!(decoded * 10 >= execs, "{decoded} of {execs}");
    assert!(decoded * 10 <= execs * 9, "{decoded} of {execs}");
    // Reports and events must be decoded (not only refused) often enough
    // for the comparison to cover their fields.
    assert!(with_reports * 10 >= decoded, "{with_reports} of {decoded}");
}

#[test]
fn mutated_otlp_requests_never_panic() {
    let execs = env_u64("VIGIL_FUZZ_EXECS", 20_000);
    let accepted = run(execs, env_u64("VIGIL_FUZZ_SEED", 2), true);
    eprintln!("otlp: {execs} executions, {accepted} valid whole");
    assert!(accepted * 10 >= execs, "{accepted} of {execs}");
}
