//! Time formats of the encodings: RFC 3339 UTC strings from milliseconds
//! since the epoch, by chrono (the calendar is a solved problem).

use chrono::{DateTime, SecondsFormat};

/// RFC 3339 UTC with milliseconds (`2026-11-02T10:15:00.000Z`) of a time
/// in ms since the epoch. Outside chrono's range (about ±262,000 years,
/// never a timestamp the pipeline accepts) the number itself.
pub fn rfc3339_ms(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_793_664_000_000), "2026-11-03T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }
}
