//! The worker's HTTP listener (`worker.metrics_listen`): Prometheus
//! metrics on `/metrics`, liveness on `/healthz` and readiness on
//! `/readyz` (see [`crate::health`]).
//!
//! It runs on its own thread with a single-threaded tokio runtime, so a
//! busy worker thread never delays a probe, and a stuck worker thread is
//! still reported (as not alive) instead of making the probe time out.
//! Probe answers are `200 ok` or `503` with the reasons as plain text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::health::{ProbeLimits, WorkerHealth};

/// How often histograms and summaries are compacted when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What the listener serves from.
#[derive(Clone)]
pub struct Endpoints {
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The worker's health facts.
    pub health: Arc<WorkerHealth>,
    /// Probe bounds.
    pub limits: ProbeLimits,
}

/// Installs the global Prometheus recorder and serves the endpoints on
/// `addr` from a background thread. Binding happens before this returns,
/// so an address in use is reported as an error of the command.
pub fn serve(
    addr: SocketAddr,
    health: Arc<WorkerHealth>,
    limits: ProbeLimits,
) -> Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
    listener
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    let local = listener.local_addr().context("the listener's address")?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let ep = Endpoints {
        metrics,
        health,
        limits,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the HTTP runtime")?;
    std::thread::Builder::new()
        .name("vigil-http".into())
        .spawn(move || rt.block_on(accept_loop(listener, ep)))
        .context("starting the HTTP thread")?;
    Ok(local)
}

async fn accept_loop(listener: std::net::TcpListener, ep: Endpoints) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP listener cannot be used; no /metrics or probes");
            return;
        }
    };
    let upkeep = ep.metrics.clone();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(UPKEEP_EVERY);
        loop {
            t.tick().await;
            upkeep.run_upkeep();
        }
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ep = ep.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ep = ep.clone();
                async move { Ok::<_, Infallible>(route(&ep, &req, wall_ms())) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request.
fn route(ep: &Endpoints, req: &Request<Incoming>, now_ms: i64) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let probe = || ep.health.probe(now_ms, ep.limits);
    let verdict = |r: Result<(), String>| match r {
        Ok(()) => text(StatusCode::OK, "ok\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    match req.uri().path() {
        "/metrics" => {
            // Readiness as a series, so alerts see a worker that is up but
            // not ready (a Service drops it from its endpoints, not Prometheus).
            let ready = probe().ready().is_ok();
            metrics::gauge!(crate::obs::READY).set(if ready { 1.0 } else { 0.0 });
            let mut r = text(StatusCode::OK, ep.metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        "/healthz" => verdict(probe().alive()),
        "/readyz" => verdict(probe().ready()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}
