//! Syslog: alert events and security events as RFC 5424 messages, octet-counting framing
//! (RFC 6587 section 3.4.1: `MSG-LEN SP SYSLOG-MSG`, so an event may hold
//! any byte), over TCP or TLS (RFC 5425).
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME vigil - MSGID [vigil@32473 incident="…" fingerprint="…" status="…" severity="…" tenant="…" agent="…"] MSG
//! ```
//!
//! - PRI: facility (default `local0`, see [`Facility`]) × 8 + severity:
//!   `critical` → 2 (crit), `warning` → 4 (warning), `info` → 6
//!   (informational); a `resolved` event is 5 (notice) whatever the rule's
//!   severity, so the end of an incident never pages like its start.
//! - TIMESTAMP: the event time, RFC 3339 UTC with milliseconds.
//! - HOSTNAME: the agent's hostname, else its agent id (printable ASCII,
//!   other characters become `_`, at most 255).
//! - APP-NAME `vigil`, PROCID `-`, MSGID the rule name (at most 32
//!   printable ASCII characters).
//! - STRUCTURED-DATA: one element `vigil@32473` (32473 is the private
//!   enterprise number that RFC 5612 reserves for documentation) with
//!   the incident id, fingerprint, status, severity, tenant and agent.
//! - MSG: the encoded event (JSON, OCSF, CEF or ECS), without a BOM (CEF
//!   and JSON readers do not expect one).
//!
//! A security event fills the same header from its
//! [`super::Envelope`]: severity from its kind (`warning` → 4, `info` →
//! 6), HOSTNAME its agent's, MSGID its kind (`login_failure`, ...), and
//! the structured data its kind, severity, tenant, agent and, when set,
//! user, technician and session.
//!
//! TLS uses the system OpenSSL (the `openssl` crate), the library that
//! librdkafka already links for Kafka TLS: one TLS stack in the binary.
//! The server certificate is verified against `--ca` (else the system's
//! trust store) and the host name or IP address of the destination;
//! `--cert`/`--key` present a client certificate.
//!
//! TCP has no application acknowledgement. A commit therefore ends the
//! connection: Vigil sends TLS close_notify, shuts its side of the socket
//! and waits for the receiver to close its side, which it does after it
//! has read everything (a receiver that dies with unread data resets the
//! connection instead, which fails the commit). The next batch opens a
//! new connection. See [`crate::export`] for the retry and the
//! at-least-once consequence.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use openssl::ssl::{HandshakeError, SslConnector, SslFiletype, SslMethod, SslStream};
use vigil_ops::model::{AlertEvent, AlertStatus, Severity};

use super::{Envelope, ExportSink, SendError};
use crate::time::rfc3339_ms;

/// SD-ID of Vigil's structured-data element.
pub const SD_ID: &str = "vigil@32473";
/// APP-NAME of every message.
pub const APP_NAME: &str = "vigil";

/// A syslog facility (0-23). Parsed from a name (`local0`, `authpriv`,
/// `audit`…) or a number.
///
/// The default is `local0` (16): the local facilities are the ones RFC
/// 5424 leaves to the site, which routes them to its SIEM; `authpriv` (10)
/// is for authentication messages and `log audit` (13) for an OS audit
/// subsystem, which alerts about host telemetry are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Default for Facility {
    fn default() -> Self {
        Facility(16)
    }
}

impl Facility {
    /// The facility's code (0-23).
    pub fn code(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(FACILITIES[self.0 as usize])
    }
}

impl FromStr for Facility {
    type Err = String;

    fn from_str(s: &str) -> Result<Facility, String> {
        if let Some(i) = FACILITIES.iter().position(|f| f.eq_ignore_ascii_case(s)) {
            return Ok(Facility(i as u8));
        }
        match s.parse::<u8>() {
            Ok(n) if n < 24 => Ok(Facility(n)),
            _ => Err(format!(
                "unknown syslog facility {s:?} (a number 0-23 or one of {})",
                FACILITIES.join(", ")
            )),
        }
    }
}

/// The syslog severity (0-7) of an alert event (see the module docs).
pub fn severity(a: &AlertEvent) -> u8 {
    if a.status == AlertStatus::Resolved {
        return 5;
    }
    severity_of(a.severity)
}

/// The syslog severity (0-7) of a Vigil severity: `critical` 2,
/// `warning` 4, `info` 6.
pub fn severity_of(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::Warning => 4,
        Severity::Info => 6,
    }
}

/// Appends `s` as an RFC 5424 header field: printable US-ASCII only
/// (others become `_`), at most `max` characters, `-` when empty.
fn header_field(s: &str, max: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend(s.chars().take(max).map(|c| {
        if ('!'..='~').contains(&c) {
            c as u8
        } else {
            b'_'
        }
    }));
    if out.len() == start {
        out.push(b'-');
    }
}

/// Appends `s` as an SD-PARAM value: `"`, `\` and `]` escaped with `\`.
fn param_value(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push(b'\\');
        }
        let mut b = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
}

/// Appends the RFC 5424 message of the event of `env` with `payload` as
/// MSG (not framed).
pub fn message(env: &Envelope<'_>, payload: &[u8], facility: Facility, out: &mut Vec<u8>) {
    let pri = u16::from(facility.code()) * 8 + u16::from(env.severity);
    out.extend_from_slice(format!("<{pri}>1 {} ", rfc3339_ms(env.event_time_ms)).as_bytes());
    header_field(env.host, 255, out);
    out.extend_from_slice(b" ");
    out.extend_from_slice(APP_NAME.as_bytes());
    out.extend_from_slice(b" - ");
    header_field(env.msgid, 32, out);
    out.extend_from_slice(b" [");
    out.extend_from_slice(SD_ID.as_bytes());
    for &(k, v) in &env.params {
        out.extend_from_slice(format!(" {k}=\"").as_bytes());
        param_value(v, out);
        out.push(b'"');
    }
    out.extend_from_slice(b"] ");
    out.extend_from_slice(payload);
}

/// Appends `msg` with octet-counting framing: its length in bytes, a
/// space, the message.
pub fn frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// TLS options of `syslog+tls://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA certificates (PEM) to verify the receiver with; the system's
    /// trust store when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for receivers that ask for one.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    pub key: Option<PathBuf>,
}

/// Where and how to send syslog messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    /// Receiver host name or IP address.
    pub host: String,
    /// Receiver port.
    pub port: u16,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<TlsOptions>,
    /// Facility of every message.
    pub facility: Facility,
    /// Bound on connecting, each write, and waiting for the receiver to
    /// confirm a batch.
    pub timeout: Duration,
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Conn {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b),
            Conn::Tls(s) => s.write_all(b),
        }
    }
}

/// Alert events to a syslog receiver over TCP or TLS (see the module docs).
pub struct SyslogSink {
    opts: SyslogOptions,
    connector: Option<SslConnector>,
    conn: Option<Conn>,
    msg: Vec<u8>,
    framed: Vec<u8>,
    connections: u64,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("opts", &self.opts)
            .field("connected", &self.conn.is_some())
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    /// A sink for `opts`; loads the TLS files now (a bad file is an error
    /// before anything is sent). Connects on the first send.
    pub fn new(opts: SyslogOptions) -> Result<SyslogSink, SendError> {
        let connector = match &opts.tls {
            None => None,
            Some(t) => Some(connector(t)?),
        };
        Ok(SyslogSink {
            opts,
            connector,
            conn: None,
            msg: Vec::new(),
            framed: Vec::new(),
            connections: 0,
        })
    }

    /// Connections opened so far (one per confirmed batch, plus retries).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    fn target(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "tls"
        } else {
            "tcp"
        };
        format!("syslog+{scheme}://{}:{}", self.opts.host, self.opts.port)
    }

    fn connect(&mut self) -> Result<Conn, SendError> {
        let target = self.target();
        let ctx = || format!("connecting to {target}");
        let addrs: Vec<_> = (self.opts.host.as_str(), self.opts.port)
            .to_socket_addrs()
            .map_err(|e| SendError::transient(ctx(), e))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, self.opts.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(SendError::transient(ctx(), e)),
            (None, None) => return Err(SendError::permanent(ctx(), "the host has no address")),
        };
        let io = |e| SendError::transient(ctx(), e);
        tcp.set_nodelay(true).map_err(io)?;
        tcp.set_write_timeout(Some(self.opts.timeout)).map_err(io)?;
        tcp.set_read_timeout(Some(self.opts.timeout)).map_err(io)?;
        self.connections += 1;
        let Some(connector) = &self.connector else {
            return Ok(Conn::Tcp(tcp));
        };
        let config = connector
            .configure()
            .map_err(|e| SendError::permanent(ctx(), e))?;
        match config.connect(&self.opts.host, tcp) {
            Ok(s) => Ok(Conn::Tls(Box::new(s))),
            Err(HandshakeError::Failure(mid)) => {
                let verify = mid.ssl().verify_result();
                let e = mid.into_error();
                if e.io_error().is_some() {
                    Err(SendError::transient(
                        format!("TLS handshake with {target}"),
                        e,
                    ))
                } else {
                    Err(SendError::permanent(
                        format!("TLS handshake with {target} (certificate check: {verify})"),
                        e,
                    ))
                }
            }
            Err(e) => Err(SendError::permanent(
                format!("TLS handshake with {target}"),
                e.to_string(),
            )),
        }
    }
}

/// Shuts the sending side and waits until the receiver closes its side
/// (see the module docs).
fn confirm(tcp: &mut TcpStream) -> std::io::Result<()> {
    tcp.flush()?;
    tcp.shutdown(Shutdown::Write)?;
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return Ok(()),
            // A receiver says nothing on syslog; a TLS one may send its
            // close_notify.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn connector(t: &TlsOptions) -> Result<SslConnector, SendError> {
    let perm = |what: String| move |e: openssl::error::ErrorStack| SendError::permanent(what, e);
    let mut b =
        SslConnector::builder(SslMethod::tls_client()).map_err(perm("setting up TLS".into()))?;
    if let Some(ca) = &t.ca {
        b.set_ca_file(ca)
            .map_err(perm(format!("loading CA file {}", ca.display())))?;
    }
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            b.set_certificate_chain_file(cert)
                .map_err(perm(format!("loading certificate {}", cert.display())))?;
            b.set_private_key_file(key, SslFiletype::PEM)
                .map_err(perm(format!("loading key {}", key.display())))?;
            b.check_private_key().map_err(perm(format!(
                "key {} does not match certificate {}",
                key.display(),
                cert.display()
            )))?;
        }
        (None, None) => {}
        _ => {
            return Err(SendError::permanent(
                "setting up TLS",
                "a client certificate needs both --cert and --key",
            ))
        }
    }
    Ok(b.build())
}

impl ExportSink for SyslogSink {
    fn kind(&self) -> &'static str {
        "syslog"
    }

    fn send(&mut self, env: &Envelope<'_>, payload: &[u8]) -> Result<(), SendError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        self.msg.clear();
        message(env, payload, self.opts.facility, &mut self.msg);
        self.framed.clear();
        frame(&self.msg, &mut self.framed);
        let target = self.target();
        let conn = self.conn.as_mut().expect("connected above");
        conn.write_all(&self.framed)
            .map_err(|e| SendError::transient(format!("writing to {target}"), e))
    }

    fn commit(&mut self) -> Result<(), SendError> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        let target = self.target();
        let ctx = || format!("waiting for {target} to confirm the batch (close its side)");
        match conn {
            Conn::Tcp(mut s) => confirm(&mut s).map_err(|e| SendError::transient(ctx(), e)),
            Conn::Tls(mut s) => {
                // close_notify; the receiver's reply is read as bytes.
                s.shutdown()
                    .map_err(|e| SendError::transient(ctx(), e.to_string()))?;
                confirm(s.get_mut()).map_err(|e| SendError::transient(ctx(), e))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(Conn::Tcp(s)) = self.conn.take() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn finish(&mut self) -> Result<(), SendError> {
        self.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::{firing, offline, resolved};
    use crate::export::Exportable;

    fn msg(a: &dyn Exportable, payload: &str) -> String {
        let mut out = Vec::new();
        message(
            &a.envelope(),
            payload.as_bytes(),
            Facility::default(),
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_security_event_fills_the_same_header() {
        let rows = crate::encoding::security::testing::every_kind();
        assert_eq!(
            msg(&rows[0], "body"),
            "<132>1 2026-11-03T00:00:01.234Z db-1.acme.example vigil - login_failure \
             [vigil@32473 kind=\"login_failure\" severity=\"warning\" tenant=\"acme\" \
             agent=\"agent-7\" user=\"root\"] body"
        );
        assert!(msg(&rows[2], "b").starts_with(
            "<134>1 2026-11-03T00:00:01.234Z db-1.acme.example vigil - remote_session_start "
        ));
        assert!(msg(&rows[2], "b").contains(r#"technician="tech.ana" session="s-42"]"#));
    }

    #[test]
    fn message_has_every_rfc5424_part() {
        assert_eq!(
            msg(&firing(), "body"),
            "<132>1 2026-11-03T00:00:00.000Z db-1.acme.example vigil - disk_high \
             [vigil@32473 incident=\"0123456789abcdef0123456789abcdef\" \
             fingerprint=\"0123456789abcdef\" status=\"firing\" severity=\"warning\" \
             tenant=\"acme\" agent=\"agent-7\"] body"
        );
        // Resolved: notice, whatever the severity; the resolve time.
        assert!(msg(&resolved(), "b").starts_with("<133>1 2026-11-03T01:00:00.000Z "));
        // No hostname: the agent id; critical is 2.
        assert!(msg(&offline(), "b")
            .starts_with("<130>1 2026-11-03T00:00:00.000Z agent-7 vigil - agent_offline "));
    }

    #[test]
    fn header_fields_and_params_are_escaped() {
        let mut a = firing();
        a.hostname = Some("host with spaces\u{e9}".into());
        a.rule = "r".repeat(40);
        a.tenant = "a\"b]c\\d".into();
        let m = msg(&a, "x");
        assert!(m.contains(" host_with_spaces_ vigil - "), "{m}");
        assert!(m.contains(&format!(" {} [", "r".repeat(32))), "{m}");
        assert!(m.contains(r#"tenant="a\"b\]c\\d""#), "{m}");
        let mut a = firing();
        a.hostname = Some(String::new());
        assert!(msg(&a, "x").contains("Z - vigil - "));
    }

    #[test]
    fn frames_count_octets() {
        let mut out = Vec::new();
        frame("héllo".as_bytes(), &mut out);
        assert_eq!(out, "6 héllo".as_bytes());
    }

    #[test]
    fn facilities_parse_by_name_and_number() {
        assert_eq!(Facility::default().to_string(), "local0");
        assert_eq!("authpriv".parse::<Facility>().unwrap().code(), 10);
        assert_eq!("LOCAL7".parse::<Facility>().unwrap().code(), 23);
        assert_eq!("13".parse::<Facility>().unwrap().to_string(), "audit");
        assert!("24".parse::<Facility>().is_err());
        assert!("local8".parse::<Facility>().is_err());
    }

    #[test]
    fn a_client_certificate_needs_both_files() {
        let e = connector(&TlsOptions {
            ca: None,
            cert: Some("c.pem".into()),
            key: None,
        })
        .unwrap_err();
        assert!(e.source.to_string().contains("--cert and --key"), "{e}");
        let e = connector(&TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        })
        .unwrap_err();
        assert!(!e.transient);
    }

    #[test]
    fn a_refused_connection_is_transient() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = SyslogSink::new(SyslogOptions {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            facility: Facility::default(),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let e = s.send(&firing().envelope(), b"x").unwrap_err();
        assert!(e.transient, "{e}");
    }
}
