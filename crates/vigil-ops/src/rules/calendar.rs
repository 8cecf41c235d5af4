//! Calendar helpers: proleptic Gregorian dates to and from day counts,
//! the UTC minute format of alert summaries, and the local-time pieces of
//! rules files (weekday names, `HH:MM`, IANA time zones through
//! `chrono-tz`) for schedules that follow a tenant's clock.

use chrono::{NaiveDateTime, TimeZone, Weekday};
use chrono_tz::Tz;

/// The weekday names rules files use, Monday first.
pub const WEEKDAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// The weekday named `name` (`mon` .. `sun`).
pub fn weekday_named(name: &str) -> Option<Weekday> {
    WEEKDAYS.iter().find(|(n, _)| *n == name).map(|(_, w)| *w)
}

/// Minutes after midnight of a local time `HH:MM` (00:00 to 24:00).
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// The instant (ms since the epoch) of local time `local` in `tz`. A time
/// that occurs twice (clocks going back) is the first; one that does not
/// occur (clocks going forward) is the instant the gap ends, as a
/// scheduler that fires "at 02:30" on that night would.
pub fn local_instant_ms(tz: Tz, local: NaiveDateTime) -> Option<i64> {
    if let Some(t) = tz.from_local_datetime(&local).earliest() {
        return Some(t.timestamp_millis());
    }
    // In a gap: the first local minute after it that exists.
    (1..=24 * 60).find_map(|m| {
        let later = local + chrono::Duration::minutes(m);
        tz.from_local_datetime(&later)
            .earliest()
            .map(|t| t.timestamp_millis())
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats ms since the epoch as ISO-8601 UTC to the minute,
/// e.g. `2026-03-01T22:05Z`.
pub fn format_utc_minute(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60
    )
}
