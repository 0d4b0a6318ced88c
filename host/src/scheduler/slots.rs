//! When a schedule fires: pure functions from a [`Trigger`], a time zone
//! (`TZ`) and an instant to the trigger's *slots*, the instants at which it
//! fires. No clock, no I/O: the scheduler asks "what is the latest slot at or
//! before now?" ([`latest_at_or_before`]) and "what comes after this one?"
//! ([`next_after`]), and every instance gets the same answers.
//!
//! # Slots
//!
//! - **`interval_seconds = N`**: the instants whose Unix time is a whole
//!   multiple of `N` seconds (00:00:00 UTC on 1970-01-01, then every `N`
//!   seconds). They are aligned to the epoch, not to start-up, so every
//!   instance computes the same slots without coordinating. The time zone
//!   plays no part: `interval_seconds = 86400` fires at 00:00 UTC, whatever
//!   `TZ` is.
//! - **`daily_at = "HH:MM"`**: every local date in `TZ`, at that wall-clock
//!   time.
//! - **`weekly_days` + `time`**: on the listed weekdays, as they fall in `TZ`
//!   (Monday 08:00 in Asia/Tokyo is Sunday 23:00 UTC).
//! - **`monthly_dates` + `time`**: on the listed days of the month in `TZ`. A
//!   date the month does not have is skipped for that month, not moved: `[31]`
//!   fires in the seven months that have a 31st, `[29]` skips February except
//!   in leap years, and `[30]` never fires in February.
//!
//! # Daylight-saving time
//!
//! A configured wall-clock time fires **at most once per local date**, even
//! when the clock jumps:
//!
//! - **A time that does not exist** (the spring-forward gap) fires once,
//!   interpreted with the UTC offset in force *before* the jump, which lands it
//!   as far past the end of the gap as it was past the start. In
//!   America/New_York the clocks go from 02:00 EST to 03:00 EDT on 2026-03-08,
//!   so `daily_at = "02:30"` fires that day at 07:30 UTC (02:30 EST, shown
//!   afterwards as 03:30 EDT); it fires at 07:30 UTC the day before and at
//!   06:30 UTC (02:30 EDT) the day after.
//! - **A time that occurs twice** (the fall-back overlap) fires once, at the
//!   *earlier* of the two instants. In New York 01:00–02:00 happens twice on
//!   2026-11-01, so `daily_at = "01:30"` fires at 05:30 UTC (01:30 EDT) and
//!   not again at 06:30 UTC (01:30 EST).
//!
//! In the rare zones that skip a whole local day (Pacific/Apia skipped
//! 2011-12-30), the skipped day's slot, read the same way, lands on the next
//! day's slot, and the two fire once together.
//!
//! # Cost
//!
//! Intervals are arithmetic. Calendar triggers look at local dates one at a
//! time, at most about a year of them (a validated trigger always finds a slot
//! within 62 days), and never step through seconds or minutes.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::schedules::Trigger;

/// How many local dates a calendar trigger searches before giving up. Only
/// an invalid trigger (no days, no dates, or dates outside 1..=31) gets that
/// far: with at least one date in 1..=31, some month has it within 62 days.
const SEARCH_DAYS: u32 = 370;

/// The latest slot at or before `now`, or `None` if there is none within the
/// range of dates `chrono` can represent (or the trigger is invalid: zero
/// seconds, no days, no dates). Never `None` for a validated trigger and a
/// present-day `now`. A `now` exactly on a slot returns that slot.
pub fn latest_at_or_before(trigger: &Trigger, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::Interval { seconds } => interval_floor(*seconds, now),
        _ => {
            // A slot belongs to a local date but may fall a little later in
            // the day than its wall time says (a gap); start one date late so
            // no slot at or before `now` is missed.
            let mut date = local_date(tz, now).succ_opt()?;
            for _ in 0..=SEARCH_DAYS {
                if let Some(slot) = slot_on(trigger, tz, date)
                    && slot <= now
                {
                    return Some(slot);
                }
                date = date.pred_opt()?;
            }
            None
        }
    }
}

/// The first slot strictly after `after`, or `None` under the same
/// conditions as [`latest_at_or_before`]. Passing a slot returns the one
/// after it, so walking `next_after` from a slot visits every slot once.
pub fn next_after(trigger: &Trigger, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match trigger {
        Trigger::Interval { seconds } => {
            let floor = interval_floor(*seconds, after)?;
            floor.checked_add_signed(TimeDelta::try_seconds(i64::try_from(*seconds).ok()?)?)
        }
        _ => {
            // Start one date early: a previous date's slot pushed forward by a
            // gap may still be after `after`.
            let mut date = local_date(tz, after).pred_opt()?;
            for _ in 0..=SEARCH_DAYS {
                if let Some(slot) = slot_on(trigger, tz, date)
                    && slot > after
                {
                    return Some(slot);
                }
                date = date.succ_opt()?;
            }
            None
        }
    }
}

/// The largest multiple of `seconds` (as Unix time) at or before `at`.
fn interval_floor(seconds: u64, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if seconds == 0 {
        return None;
    }
    // `timestamp` rounds towards the past (the nanoseconds are never
    // negative), and `div_euclid` too, so instants before 1970 work. i128
    // because `seconds` may exceed i64::MAX.
    let step = i128::from(seconds);
    let floor = i128::from(at.timestamp()).div_euclid(step) * step;
    DateTime::from_timestamp(i64::try_from(floor).ok()?, 0)
}

fn local_date(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The slot of a calendar trigger on local `date`, if it fires that day.
fn slot_on(trigger: &Trigger, tz: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    let at = match trigger {
        Trigger::Interval { .. } => return None,
        Trigger::Daily { at } => at,
        Trigger::Weekly { days, at } => {
            if !days.contains(&date.weekday()) {
                return None;
            }
            at
        }
        // `date` exists, so its day of the month is one the month has: a
        // 31 in `dates` simply never matches a date in April.
        Trigger::Monthly { dates, at } => {
            if !dates.contains(&date.day()) {
                return None;
            }
            at
        }
    };
    resolve(tz, date.and_time(*at))
}

/// The instant of the wall-clock time `local` in `tz`, by the DST rules in
/// the module documentation: the earlier instant when it occurs twice, the
/// pre-transition offset when it does not occur.
fn resolve(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        chrono::LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        chrono::LocalResult::None => {
            // The offset before the gap is the one in force a day earlier
            // than `local` read as UTC: that instant precedes the transition
            // (no UTC offset reaches 24 hours) and zones do not change twice
            // within a day or so.
            let before = local.checked_sub_signed(TimeDelta::days(1))?;
            let offset = tz.offset_from_utc_datetime(&before).fix().local_minus_utc();
            Some(local.checked_sub_signed(TimeDelta::seconds(i64::from(offset)))?.and_utc())
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, Weekday};
    use chrono_tz::{America, Asia, Europe, Pacific};

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}")).with_timezone(&Utc)
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn daily(h: u32, m: u32) -> Trigger {
        Trigger::Daily { at: at(h, m) }
    }

    fn monthly(dates: &[u32], h: u32, m: u32) -> Trigger {
        Trigger::Monthly { dates: dates.to_vec(), at: at(h, m) }
    }

    fn latest(trigger: &Trigger, tz: Tz, now: &str) -> DateTime<Utc> {
        latest_at_or_before(trigger, tz, utc(now)).unwrap()
    }

    fn next(trigger: &Trigger, tz: Tz, after: &str) -> DateTime<Utc> {
        next_after(trigger, tz, utc(after)).unwrap()
    }

    /// The first `n` slots after `from`, by walking `next_after`.
    fn walk(trigger: &Trigger, tz: Tz, from: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::new();
        let mut cursor = utc(from);
        for _ in 0..n {
            cursor = next_after(trigger, tz, cursor).unwrap();
            slots.push(cursor);
        }
        slots
    }

    fn all(texts: &[&str]) -> Vec<DateTime<Utc>> {
        texts.iter().map(|t| utc(t)).collect()
    }

    #[test]
    fn interval_slots_are_multiples_of_the_interval_since_the_epoch() {
        let hourly = Trigger::Interval { seconds: 3600 };
        assert_eq!(latest(&hourly, Tz::UTC, "2026-01-01T10:17:05Z"), utc("2026-01-01T10:00:00Z"));
        assert_eq!(next(&hourly, Tz::UTC, "2026-01-01T10:17:05Z"), utc("2026-01-01T11:00:00Z"));
        // Exactly on a slot: that slot is the latest, and the next is one interval on.
        assert_eq!(latest(&hourly, Tz::UTC, "2026-01-01T10:00:00Z"), utc("2026-01-01T10:00:00Z"));
        assert_eq!(next(&hourly, Tz::UTC, "2026-01-01T10:00:00Z"), utc("2026-01-01T11:00:00Z"));
        // A nanosecond either side of a slot.
        assert_eq!(latest(&hourly, Tz::UTC, "2026-01-01T09:59:59.999999999Z"), utc("2026-01-01T09:00:00Z"));
        assert_eq!(next(&hourly, Tz::UTC, "2026-01-01T09:59:59.999999999Z"), utc("2026-01-01T10:00:00Z"));
        assert_eq!(latest(&hourly, Tz::UTC, "2026-01-01T10:00:00.000000001Z"), utc("2026-01-01T10:00:00Z"));
        assert_eq!(next(&hourly, Tz::UTC, "2026-01-01T10:00:00.000000001Z"), utc("2026-01-01T11:00:00Z"));

        // An interval that does not divide a day: still aligned to the epoch.
        let odd = Trigger::Interval { seconds: 7 };
        let now = utc("2026-04-01T12:34:56.5Z");
        let slot = latest_at_or_before(&odd, Tz::UTC, now).unwrap();
        assert_eq!(slot.timestamp() % 7, 0);
        assert_eq!(slot.timestamp_subsec_nanos(), 0);
        assert!(slot <= now && now < slot + TimeDelta::seconds(7), "{slot} for {now}");
        assert_eq!(next_after(&odd, Tz::UTC, now), Some(slot + TimeDelta::seconds(7)));
        // 1775046896 = 7 * 253578128, so 12:34:56 itself is a slot.
        assert_eq!(slot, utc("2026-04-01T12:34:56Z"));

        // Before 1970 too.
        assert_eq!(latest(&hourly, Tz::UTC, "1969-12-31T23:30:00Z"), utc("1969-12-31T23:00:00Z"));
        assert_eq!(next(&hourly, Tz::UTC, "1969-12-31T23:30:00Z"), utc("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn interval_slots_ignore_the_time_zone() {
        let daily_interval = Trigger::Interval { seconds: 86_400 };
        for tz in [Tz::UTC, Europe::Moscow, Asia::Tokyo, America::New_York] {
            assert_eq!(latest(&daily_interval, tz, "2026-03-08T12:00:00Z"), utc("2026-03-08T00:00:00Z"), "{tz}");
            assert_eq!(next(&daily_interval, tz, "2026-03-08T12:00:00Z"), utc("2026-03-09T00:00:00Z"), "{tz}");
        }
    }

    #[test]
    fn zero_seconds_has_no_slots() {
        let never = Trigger::Interval { seconds: 0 };
        assert_eq!(latest_at_or_before(&never, Tz::UTC, utc("2026-01-01T00:00:00Z")), None);
        assert_eq!(next_after(&never, Tz::UTC, utc("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn a_huge_interval_has_only_the_epoch_in_range() {
        let huge = Trigger::Interval { seconds: u64::MAX };
        assert_eq!(latest(&huge, Tz::UTC, "2026-01-01T00:00:00Z"), utc("1970-01-01T00:00:00Z"));
        assert_eq!(next_after(&huge, Tz::UTC, utc("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn daily_in_utc() {
        let nine = daily(9, 0);
        assert_eq!(latest(&nine, Tz::UTC, "2026-05-10T08:59:59Z"), utc("2026-05-09T09:00:00Z"));
        assert_eq!(next(&nine, Tz::UTC, "2026-05-10T08:59:59Z"), utc("2026-05-10T09:00:00Z"));
        assert_eq!(latest(&nine, Tz::UTC, "2026-05-10T09:00:00Z"), utc("2026-05-10T09:00:00Z"));
        assert_eq!(next(&nine, Tz::UTC, "2026-05-10T09:00:00Z"), utc("2026-05-11T09:00:00Z"));
        // Across a year boundary.
        assert_eq!(next(&nine, Tz::UTC, "2026-12-31T10:00:00Z"), utc("2027-01-01T09:00:00Z"));
        assert_eq!(latest(&nine, Tz::UTC, "2027-01-01T08:00:00Z"), utc("2026-12-31T09:00:00Z"));
    }

    #[test]
    fn daily_in_moscow_is_three_hours_ahead_of_utc() {
        let nine = daily(9, 0);
        assert_eq!(latest(&nine, Europe::Moscow, "2026-05-10T05:00:00Z"), utc("2026-05-09T06:00:00Z"));
        assert_eq!(next(&nine, Europe::Moscow, "2026-05-10T05:00:00Z"), utc("2026-05-10T06:00:00Z"));
        assert_eq!(latest(&nine, Europe::Moscow, "2026-05-10T06:00:00Z"), utc("2026-05-10T06:00:00Z"));
        // 01:00 in Moscow is 22:00 UTC the previous UTC day: `now` at 23:00
        // UTC on the 10th is already 02:00 on the 11th in Moscow.
        let one = daily(1, 0);
        assert_eq!(latest(&one, Europe::Moscow, "2026-05-10T23:00:00Z"), utc("2026-05-10T22:00:00Z"));
        assert_eq!(next(&one, Europe::Moscow, "2026-05-10T23:00:00Z"), utc("2026-05-11T22:00:00Z"));
        assert_eq!(next(&one, Europe::Moscow, "2026-05-10T21:59:59Z"), utc("2026-05-10T22:00:00Z"));
    }

    #[test]
    fn daily_in_tokyo_is_nine_hours_ahead_of_utc() {
        let eight = daily(8, 0);
        assert_eq!(latest(&eight, Asia::Tokyo, "2026-05-10T12:00:00Z"), utc("2026-05-09T23:00:00Z"));
        assert_eq!(next(&eight, Asia::Tokyo, "2026-05-10T12:00:00Z"), utc("2026-05-10T23:00:00Z"));
        let late = daily(23, 30);
        assert_eq!(next(&late, Asia::Tokyo, "2026-05-10T12:00:00Z"), utc("2026-05-10T14:30:00Z"));
        assert_eq!(latest(&late, Asia::Tokyo, "2026-05-10T12:00:00Z"), utc("2026-05-09T14:30:00Z"));
    }

    #[test]
    fn weekly_picks_the_next_listed_weekday_across_the_week_boundary() {
        // 2026-05-08 is a Friday, 2026-05-11 a Monday.
        let mon_fri = Trigger::Weekly { days: vec![Weekday::Mon, Weekday::Fri], at: at(10, 0) };
        // Saturday: the next is Monday, the latest the day before.
        assert_eq!(next(&mon_fri, Tz::UTC, "2026-05-09T12:00:00Z"), utc("2026-05-11T10:00:00Z"));
        assert_eq!(latest(&mon_fri, Tz::UTC, "2026-05-09T12:00:00Z"), utc("2026-05-08T10:00:00Z"));
        // Exactly on Friday's slot.
        assert_eq!(latest(&mon_fri, Tz::UTC, "2026-05-08T10:00:00Z"), utc("2026-05-08T10:00:00Z"));
        assert_eq!(next(&mon_fri, Tz::UTC, "2026-05-08T10:00:00Z"), utc("2026-05-11T10:00:00Z"));
        // Just before Friday's slot: Monday's is the latest, Friday's the next.
        assert_eq!(latest(&mon_fri, Tz::UTC, "2026-05-08T09:59:59Z"), utc("2026-05-04T10:00:00Z"));
        assert_eq!(next(&mon_fri, Tz::UTC, "2026-05-08T09:59:59Z"), utc("2026-05-08T10:00:00Z"));
        // Monday after its slot: Friday next.
        assert_eq!(next(&mon_fri, Tz::UTC, "2026-05-11T10:00:01Z"), utc("2026-05-15T10:00:00Z"));

        // A single day fires once a week.
        let sunday = Trigger::Weekly { days: vec![Weekday::Sun], at: at(0, 0) };
        assert_eq!(
            walk(&sunday, Tz::UTC, "2026-05-10T00:00:00Z", 2),
            all(&["2026-05-17T00:00:00Z", "2026-05-24T00:00:00Z"])
        );
    }

    #[test]
    fn weekly_days_are_local_weekdays() {
        // Monday 08:00 in Tokyo is Sunday 23:00 UTC.
        let monday = Trigger::Weekly { days: vec![Weekday::Mon], at: at(8, 0) };
        assert_eq!(next(&monday, Asia::Tokyo, "2026-05-09T00:00:00Z"), utc("2026-05-10T23:00:00Z"));
        assert_eq!(latest(&monday, Asia::Tokyo, "2026-05-10T23:00:00Z"), utc("2026-05-10T23:00:00Z"));
        assert_eq!(latest(&monday, Asia::Tokyo, "2026-05-10T22:59:59Z"), utc("2026-05-03T23:00:00Z"));
    }

    #[test]
    fn monthly_31_skips_the_months_without_one() {
        let last = monthly(&[31], 0, 0);
        assert_eq!(
            walk(&last, Tz::UTC, "2026-01-01T00:00:00Z", 8),
            all(&[
                "2026-01-31T00:00:00Z",
                "2026-03-31T00:00:00Z",
                "2026-05-31T00:00:00Z",
                "2026-07-31T00:00:00Z",
                "2026-08-31T00:00:00Z",
                "2026-10-31T00:00:00Z",
                "2026-12-31T00:00:00Z",
                "2027-01-31T00:00:00Z",
            ])
        );
        assert_eq!(latest(&last, Tz::UTC, "2026-07-15T00:00:00Z"), utc("2026-05-31T00:00:00Z"));
        assert_eq!(latest(&last, Tz::UTC, "2026-10-30T23:59:59Z"), utc("2026-08-31T00:00:00Z"));
        // Not moved to the 30th or the 1st either.
        assert_eq!(next(&last, Tz::UTC, "2026-04-01T00:00:00Z"), utc("2026-05-31T00:00:00Z"));
    }

    #[test]
    fn monthly_29_fires_in_february_only_in_leap_years() {
        let t = monthly(&[29], 12, 0);
        assert_eq!(next(&t, Tz::UTC, "2028-02-01T00:00:00Z"), utc("2028-02-29T12:00:00Z"));
        assert_eq!(latest(&t, Tz::UTC, "2028-03-10T00:00:00Z"), utc("2028-02-29T12:00:00Z"));
        assert_eq!(next(&t, Tz::UTC, "2027-02-01T00:00:00Z"), utc("2027-03-29T12:00:00Z"));
        assert_eq!(latest(&t, Tz::UTC, "2027-03-10T00:00:00Z"), utc("2027-01-29T12:00:00Z"));
        // 30 never fits February, leap or not.
        let thirtieth = monthly(&[30], 12, 0);
        assert_eq!(next(&thirtieth, Tz::UTC, "2028-02-01T00:00:00Z"), utc("2028-03-30T12:00:00Z"));
    }

    #[test]
    fn monthly_1_and_15() {
        let twice = monthly(&[1, 15], 6, 30);
        assert_eq!(
            walk(&twice, Tz::UTC, "2026-01-15T06:30:00Z", 4),
            all(&["2026-02-01T06:30:00Z", "2026-02-15T06:30:00Z", "2026-03-01T06:30:00Z", "2026-03-15T06:30:00Z"])
        );
        assert_eq!(latest(&twice, Tz::UTC, "2026-02-28T00:00:00Z"), utc("2026-02-15T06:30:00Z"));
        assert_eq!(latest(&twice, Tz::UTC, "2026-03-01T06:29:59Z"), utc("2026-02-15T06:30:00Z"));
        assert_eq!(latest(&twice, Tz::UTC, "2026-03-01T06:30:00Z"), utc("2026-03-01T06:30:00Z"));
        // The 1st at 06:30 in Tokyo is the previous evening in UTC.
        assert_eq!(next(&twice, Asia::Tokyo, "2026-02-20T00:00:00Z"), utc("2026-02-28T21:30:00Z"));
    }

    #[test]
    fn new_york_spring_forward_fires_a_missing_time_once_with_the_old_offset() {
        // 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 does not exist that day.
        let t = daily(2, 30);
        let ny = America::New_York;
        assert_eq!(
            walk(&t, ny, "2026-03-06T12:00:00Z", 3),
            all(&["2026-03-07T07:30:00Z", "2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z"])
        );
        // 02:30 EST is shown as 03:30 EDT.
        let slot = next(&t, ny, "2026-03-07T07:30:00Z");
        assert_eq!(slot.with_timezone(&ny).format("%F %T %Z").to_string(), "2026-03-08 03:30:00 EDT");
        assert_eq!(latest(&t, ny, "2026-03-08T07:29:59Z"), utc("2026-03-07T07:30:00Z"));
        assert_eq!(latest(&t, ny, "2026-03-08T07:30:00Z"), utc("2026-03-08T07:30:00Z"));
        assert_eq!(latest(&t, ny, "2026-03-09T06:29:59Z"), utc("2026-03-08T07:30:00Z"));
    }

    #[test]
    fn new_york_fall_back_fires_a_repeated_time_once_at_the_earlier_instant() {
        // 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens at 05:30 and 06:30 UTC.
        let t = daily(1, 30);
        let ny = America::New_York;
        assert_eq!(
            walk(&t, ny, "2026-10-31T12:00:00Z", 3),
            all(&["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"])
        );
        assert_eq!(latest(&t, ny, "2026-11-01T06:30:00Z"), utc("2026-11-01T05:30:00Z"));
        assert_eq!(latest(&t, ny, "2026-11-01T07:00:00Z"), utc("2026-11-01T05:30:00Z"));
        assert_eq!(next(&t, ny, "2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z"));
        // The day before, still EDT.
        assert_eq!(latest(&t, ny, "2026-11-01T05:29:59Z"), utc("2026-10-31T05:30:00Z"));
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        let berlin = Europe::Berlin;
        let t = daily(2, 30);
        // 2026-03-29 02:00 CET -> 03:00 CEST.
        assert_eq!(
            walk(&t, berlin, "2026-03-27T12:00:00Z", 3),
            all(&["2026-03-28T01:30:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"])
        );
        let slot = utc("2026-03-29T01:30:00Z");
        assert_eq!(slot.with_timezone(&berlin).format("%T %Z").to_string(), "03:30:00 CEST");
        // 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens at 00:30 and 01:30 UTC.
        assert_eq!(
            walk(&t, berlin, "2026-10-23T12:00:00Z", 3),
            all(&["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"])
        );
        assert_eq!(latest(&t, berlin, "2026-10-25T01:30:00Z"), utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn weekly_and_monthly_follow_the_same_dst_rules() {
        let ny = America::New_York;
        let sunday = Trigger::Weekly { days: vec![Weekday::Sun], at: at(2, 30) };
        assert_eq!(next(&sunday, ny, "2026-03-02T00:00:00Z"), utc("2026-03-08T07:30:00Z"));
        let first = monthly(&[1], 1, 30);
        assert_eq!(next(&first, ny, "2026-10-15T00:00:00Z"), utc("2026-11-01T05:30:00Z"));
        assert_eq!(next(&first, ny, "2026-11-01T05:30:00Z"), utc("2026-12-01T06:30:00Z"));
    }

    #[test]
    fn every_local_day_of_a_dst_year_fires_exactly_once() {
        for (h, m) in [(2, 30), (1, 30), (0, 0), (23, 59)] {
            let t = daily(h, m);
            // Just before local midnight starting 2026, through the whole
            // (non-leap) year.
            let slots = walk(&t, America::New_York, "2026-01-01T04:59:59Z", 365);
            let dates: Vec<NaiveDate> =
                slots.iter().map(|s| s.with_timezone(&America::New_York).date_naive()).collect();
            let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
            let expected: Vec<NaiveDate> = first.iter_days().take(365).collect();
            assert_eq!(dates, expected, "daily {h:02}:{m:02}");
        }
    }

    #[test]
    fn a_skipped_local_day_fires_together_with_the_next() {
        // Samoa moved across the date line: 2011-12-29 23:59:59 -10 was
        // followed by 2011-12-31 00:00:00 +14.
        let t = daily(9, 0);
        let apia = Pacific::Apia;
        assert_eq!(
            walk(&t, apia, "2011-12-29T12:00:00Z", 3),
            all(&["2011-12-29T19:00:00Z", "2011-12-30T19:00:00Z", "2011-12-31T19:00:00Z"])
        );
    }

    #[test]
    fn latest_and_next_agree_for_many_instants() {
        let triggers = [
            Trigger::Interval { seconds: 1 },
            Trigger::Interval { seconds: 45 },
            Trigger::Interval { seconds: 3600 },
            Trigger::Interval { seconds: 7 * 86_400 + 13 },
            daily(0, 0),
            daily(1, 30),
            daily(2, 30),
            daily(23, 59),
            Trigger::Weekly { days: vec![Weekday::Tue], at: at(2, 30) },
            Trigger::Weekly { days: vec![Weekday::Mon, Weekday::Sat, Weekday::Sun], at: at(1, 15) },
            monthly(&[31], 2, 30),
            monthly(&[29], 0, 0),
            monthly(&[1, 15, 30], 1, 30),
        ];
        let zones =
            [Tz::UTC, Europe::Moscow, Asia::Tokyo, America::New_York, Europe::Berlin, chrono_tz::Australia::Lord_Howe];
        // A fixed linear congruential sequence over 2020..2036, plus the DST
        // edges, so failures reproduce.
        let start = utc("2020-01-01T00:00:00Z").timestamp();
        let span = utc("2036-01-01T00:00:00Z").timestamp() - start;
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut nows: Vec<DateTime<Utc>> = (0..150)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let offset = i64::try_from((state >> 11) % u64::try_from(span).unwrap()).unwrap();
                DateTime::from_timestamp(start + offset, u32::try_from(state % 1_000_000_000).unwrap()).unwrap()
            })
            .collect();
        nows.extend(all(&[
            "2026-03-08T07:30:00Z",
            "2026-03-08T06:59:59Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-10-25T00:30:00Z",
            "2028-02-29T00:00:00Z",
        ]));
        for trigger in &triggers {
            for tz in zones {
                for &now in &nows {
                    let context = format!("{trigger:?} in {tz} at {now}");
                    let latest = latest_at_or_before(trigger, tz, now).expect(&context);
                    let next = next_after(trigger, tz, now).expect(&context);
                    assert!(latest <= now, "{context}: latest {latest}");
                    assert!(next > now, "{context}: next {next}");
                    // Nothing lies between them: each is the other's neighbour.
                    assert_eq!(next_after(trigger, tz, latest), Some(next), "{context}");
                    assert_eq!(latest_at_or_before(trigger, tz, next), Some(next), "{context}");
                    assert_eq!(latest_at_or_before(trigger, tz, latest), Some(latest), "{context}");
                    let just_before_next = next - TimeDelta::nanoseconds(1);
                    assert_eq!(latest_at_or_before(trigger, tz, just_before_next), Some(latest), "{context}");
                }
            }
        }
    }
}
