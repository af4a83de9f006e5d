//! Calendar days and months in `limits.timezone`: the windows the limits count in, the `day` of
//! a rollup, and "today" as the admin API means it.
//!
//! A day is `[local midnight, next local midnight)`, so a day across a DST change lasts 23 or
//! 25 hours, and where midnight itself is skipped the day starts at the first instant that
//! exists. Days are written `YYYY-MM-DD`, months by their first day `YYYY-MM-01`.
//!
//! Pure computation on unix milliseconds and a [`TimeZone`]: no clock is read here except by
//! [`Today::now`], and nothing is stored.

use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The day and month windows holding an instant, `[start, end)` in unix ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub day_start: i64,
    pub day_end: i64,
    pub month_start: i64,
    pub month_end: i64,
}

impl Windows {
    /// The windows holding `now_ms` in `tz`. Out of jiff's range (±9999 years) — not a real
    /// clock — one window covers all time.
    pub fn at(now_ms: i64, tz: &TimeZone) -> Windows {
        Windows::try_at(now_ms, tz).unwrap_or(Windows {
            day_start: i64::MIN,
            day_end: i64::MAX,
            month_start: i64::MIN,
            month_end: i64::MAX,
        })
    }

    fn try_at(now_ms: i64, tz: &TimeZone) -> Option<Windows> {
        let mut date = Timestamp::from_millisecond(now_ms)
            .ok()?
            .to_zoned_datetime(tz.clone())
            .date();
        // Where midnight repeats (a DST change at 24:00), the instant can lie past the start
        // of the next date's first midnight: take the window that holds it.
        for _ in 0..2 {
            let next = date.tomorrow().ok()?;
            if midnight(next, tz)? <= now_ms {
                date = next;
            }
        }
        let first = date.first_of_month();
        Some(Windows {
            day_start: midnight(date, tz)?,
            day_end: midnight(date.tomorrow().ok()?, tz)?,
            month_start: midnight(first, tz)?,
            month_end: midnight(date.last_of_month().tomorrow().ok()?, tz)?,
        })
    }
}

/// Unix ms of the local midnight that starts `date` in `tz`. Compatible disambiguation: a
/// skipped midnight starts the day when the gap ends.
pub fn midnight(date: Date, tz: &TimeZone) -> Option<i64> {
    Some(
        date.to_zoned_datetime(tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

/// `ms` as a timestamp, clamped to jiff's range.
pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Whole seconds from `now_ms` to `until_ms`, rounded up, at least 1.
pub fn secs_until(now_ms: i64, until_ms: i64) -> u64 {
    let ms = u64::try_from(until_ms.saturating_sub(now_ms)).unwrap_or(0);
    ms.div_ceil(1_000).max(1)
}

/// The calendar day (`YYYY-MM-DD`) of a unix-ms timestamp in `tz`. A timestamp outside ±9999
/// years is clamped to the nearest representable one.
pub fn local_day(ts_ms: i64, tz: &TimeZone) -> String {
    timestamp(ts_ms)
        .to_zoned_datetime(tz.clone())
        .date()
        .to_string()
}

/// The first day of the month of `day` (`YYYY-MM-DD` → `YYYY-MM-01`).
pub fn month_start(day: &str) -> String {
    match day.get(..8) {
        Some(prefix) => format!("{prefix}01"),
        None => day.to_string(),
    }
}

/// The day of a timestamp in one zone, remembering the last day's bounds so that a batch of
/// timestamps (nearly always one day) converts each with two comparisons.
#[derive(Debug)]
pub struct DayCache {
    tz: TimeZone,
    /// `[start_ms, end_ms)` of `day`.
    start_ms: i64,
    end_ms: i64,
    day: Arc<str>,
}

impl DayCache {
    pub fn new(tz: TimeZone) -> Self {
        DayCache {
            tz,
            start_ms: 0,
            end_ms: 0,
            day: Arc::from(""),
        }
    }

    /// The day of `ts_ms`, `YYYY-MM-DD`.
    pub fn day(&mut self, ts_ms: i64) -> Arc<str> {
        if !(self.start_ms..self.end_ms).contains(&ts_ms) {
            match day_bounds(ts_ms, &self.tz) {
                Some((day, start_ms, end_ms)) => {
                    self.day = Arc::from(day);
                    self.start_ms = start_ms;
                    self.end_ms = end_ms;
                }
                // Out of jiff's range (year ±9999): not a real call; give it a day anyway.
                None => return Arc::from(local_day(ts_ms, &self.tz)),
            }
        }
        Arc::clone(&self.day)
    }
}

fn day_bounds(ts_ms: i64, tz: &TimeZone) -> Option<(String, i64, i64)> {
    let zoned = Timestamp::from_millisecond(ts_ms)
        .ok()?
        .to_zoned_datetime(tz.clone());
    let start = zoned.start_of_day().ok()?;
    let end = zoned
        .date()
        .tomorrow()
        .ok()?
        .to_zoned_datetime(tz.clone())
        .ok()?;
    Some((
        zoned.date().to_string(),
        start.timestamp().as_millisecond(),
        end.timestamp().as_millisecond(),
    ))
}

/// "Today" in one zone at one instant, with the day arithmetic the admin API needs.
#[derive(Clone, Debug)]
pub struct Today {
    pub now_ms: i64,
    pub tz: TimeZone,
    pub date: Date,
}

impl Today {
    /// Today at `now_ms` in `tz`.
    pub fn at(now_ms: i64, tz: TimeZone) -> Today {
        let date = timestamp(now_ms).to_zoned_datetime(tz.clone()).date();
        Today { now_ms, tz, date }
    }

    /// Today now, by the system clock.
    pub fn now(tz: TimeZone) -> Today {
        Today::at(Timestamp::now().as_millisecond(), tz)
    }

    /// `YYYY-MM-DD`.
    pub fn day(&self) -> String {
        self.date.to_string()
    }

    /// The first of this month, `YYYY-MM-01`.
    pub fn month_start(&self) -> String {
        self.date.first_of_month().to_string()
    }

    /// The first of the last `n` days (today included), `YYYY-MM-DD`.
    pub fn since(&self, n: u32) -> String {
        self.days_back(n.saturating_sub(1)).to_string()
    }

    /// The date `n` days before today (today when out of range).
    pub fn days_back(&self, n: u32) -> Date {
        self.date
            .checked_sub(i64::from(n).days())
            .unwrap_or(self.date)
    }

    /// Unix ms of local midnight starting `date` (0 when it cannot be represented).
    pub fn start_ms(&self, date: Date) -> i64 {
        midnight(date, &self.tz).unwrap_or(0)
    }

    /// The zone's IANA name (`UTC` when it has none).
    pub fn zone_name(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn local_day_follows_the_zone_not_utc() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(local_day(ms("2026-03-28T22:59:59.999Z"), &tz), "2026-03-28");
        assert_eq!(local_day(ms("2026-03-28T23:00:00Z"), &tz), "2026-03-29");
        assert_eq!(
            local_day(ms("2026-03-28T23:00:00Z"), &TimeZone::UTC),
            "2026-03-28"
        );
        let mut cache = DayCache::new(tz.clone());
        for t in [
            "2026-03-28T22:59:59.999Z",
            "2026-03-28T23:00:00Z",
            "2026-03-29T21:59:59.999Z",
            "2026-03-29T22:00:00Z",
            "2026-03-28T12:00:00Z",
        ] {
            assert_eq!(&*cache.day(ms(t)), local_day(ms(t), &tz), "{t}");
        }
        assert_eq!(month_start("2026-03-29"), "2026-03-01");
    }

    #[test]
    fn today_counts_days_back_and_midnights() {
        let tz = TimeZone::get("America/Los_Angeles").unwrap();
        let today = Today::at(ms("2026-03-09T06:30:00Z"), tz);
        assert_eq!(today.day(), "2026-03-08");
        assert_eq!(today.month_start(), "2026-03-01");
        assert_eq!(today.since(1), "2026-03-08");
        assert_eq!(today.since(7), "2026-03-02");
        // 2026-03-08 is the day clocks spring forward: 23 hours long.
        let day = today.start_ms(today.date);
        let next = today.start_ms(today.date.tomorrow().unwrap());
        assert_eq!(next - day, 23 * 3_600_000);
        assert_eq!(today.zone_name(), "America/Los_Angeles");
    }

    #[test]
    fn windows_hold_the_instant() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let w = Windows::at(ms("2026-01-31T23:30:00Z"), &tz);
        assert_eq!(w.day_start, ms("2026-01-31T23:00:00Z"));
        assert_eq!(w.month_start, ms("2026-01-31T23:00:00Z"));
        assert_eq!(w.month_end, ms("2026-02-28T23:00:00Z"));
        assert_eq!(secs_until(0, 1), 1);
        assert_eq!(secs_until(0, 1_001), 2);
        assert_eq!(secs_until(5, 0), 1);
    }
}
