//! `schedules.toml` (spec/configuration.md §3): the jobs the native scheduler
//! starts by itself. This module owns reading and validating the file into
//! [`Schedule`]s, and checking that each names a loaded blueprint; working out
//! the next run time (in `TZ`) and creating the jobs belong to the scheduler.
//!
//! Every mistake is a [`FileError`] naming the file, the section and the
//! field, so a bad schedule stops start-up instead of silently never firing.
//! A field this server does not read is not a mistake of that kind: files
//! written for the Python orchestrator carry some (its loader ignores what it
//! does not know), so it becomes a [`ConfigWarning`], with a "did you mean"
//! when it looks like a typo. `initial_data` (the job API's name for the
//! same thing) is read as `input_data`.
//! Unlike `clients.toml` and `workers.toml`, these fields hold no secrets, so
//! messages may quote the offending time or day name; `input_data` is never
//! quoted, as it is the one place a token could be put.

use std::path::Path;

use chrono::{NaiveTime, Weekday};
use serde_json::{Map, Value};

use super::file::{ConfigWarning, FileError, Section, did_you_mean, read_table, table_to_json};

/// One `[section]` of `schedules.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The section name: the schedule's unique identifier.
    pub name: String,
    pub blueprint: String,
    /// The new job's initial data; empty when the file gives none.
    pub input_data: Map<String, Value>,
    pub trigger: Trigger,
    /// `enabled` (default true): a disabled schedule is checked like any
    /// other and listed, but never creates jobs.
    pub enabled: bool,
}

/// `schedules.toml` as loaded: its schedules, and what in it was ignored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScheduleFile {
    pub schedules: Vec<Schedule>,
    pub warnings: Vec<ConfigWarning>,
}

/// When a schedule fires. Times of day are wall-clock times in `TZ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Interval {
        seconds: u64,
    },
    Daily {
        at: NaiveTime,
    },
    /// `days` is sorted from Monday and has no duplicates.
    Weekly {
        days: Vec<Weekday>,
        at: NaiveTime,
    },
    /// `dates` is sorted and has no duplicates, each in 1..=31; a month
    /// lacking a date is the scheduler's concern, not a file error, since
    /// "31" is a reasonable thing to ask for.
    Monthly {
        dates: Vec<u32>,
        at: NaiveTime,
    },
}

const FIELDS: [&str; 8] =
    ["blueprint", "input_data", "interval_seconds", "daily_at", "weekly_days", "monthly_dates", "time", "enabled"];

/// Another name for `input_data`: the job API's request body calls a job's
/// data `initial_data`, so schedules get written with it (the published
/// example application does). The Python loader silently drops it, leaving
/// the job without its data; reading it is what the file's author meant.
const INPUT_DATA_ALIAS: &str = "initial_data";

/// Fields the Python orchestrator's loader reads and passes to the job it
/// creates, which this server has no equivalent for: ignored, and the warning
/// says so instead of calling them unknown.
const NOT_SUPPORTED: [&str; 4] = ["dispatch_timeout", "result_timeout", "security", "metadata"];

#[derive(Clone, Copy)]
enum Kind {
    Interval,
    Daily,
    Weekly,
    Monthly,
}

// Fixed order rather than the file's: `toml::Table` does not keep it, and a
// conflict must be reported the same way every time.
const TRIGGERS: [(&str, Kind); 4] = [
    ("interval_seconds", Kind::Interval),
    ("daily_at", Kind::Daily),
    ("weekly_days", Kind::Weekly),
    ("monthly_dates", Kind::Monthly),
];

const NO_TRIGGER: &str = "no trigger: set one of interval_seconds, daily_at, weekly_days + time, monthly_dates + time";
const TIME_MISPLACED: &str = "`time` only applies to weekly_days or monthly_dates";

const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];
const DAY_NAMES: &str = "mon, tue, wed, thu, fri, sat, sun";

/// Reads and validates `schedules.toml`.
pub fn load(path: &Path) -> Result<ScheduleFile, FileError> {
    let file = path.display().to_string();
    from_table(&file, &read_table(path)?)
}

/// Validates an already parsed file; `file` names it in errors. Schedules
/// come in the table's iteration order (by section name, unless toml's
/// `preserve_order` feature is enabled somewhere in the build).
pub fn from_table(file: &str, root: &toml::Table) -> Result<ScheduleFile, FileError> {
    let mut loaded = ScheduleFile::default();
    for section in Section::all(file, root)? {
        loaded.schedules.push(schedule(&section, &mut loaded.warnings)?);
    }
    Ok(loaded)
}

/// Fails on the first enabled schedule whose blueprint `is_loaded` does not
/// know. Separate from [`from_table`] because blueprints are loaded
/// independently of this file, and the file alone can be validated without
/// them. Disabled schedules are skipped: switching one off is how an operator
/// keeps it in the file while its blueprint is not deployed.
pub fn check_blueprints(schedules: &[Schedule], file: &str, is_loaded: impl Fn(&str) -> bool) -> Result<(), FileError> {
    match schedules.iter().find(|s| s.enabled && !is_loaded(&s.blueprint)) {
        Some(schedule) => Err(FileError {
            file: file.to_owned(),
            section: Some(schedule.name.clone()),
            field: Some("blueprint".to_owned()),
            position: None,
            problem: format!("no loaded blueprint is named {:?}", schedule.blueprint),
        }),
        None => Ok(()),
    }
}

fn schedule(section: &Section<'_>, warnings: &mut Vec<ConfigWarning>) -> Result<Schedule, FileError> {
    let unknown = unknown_fields(section);
    let blueprint = section.required_str("blueprint")?.to_owned();
    let trigger = trigger(section, &unknown)?;
    let input_data = input_data(section)?;
    let enabled = section.optional_bool("enabled")?.unwrap_or(true);
    warnings.extend(unknown.iter().map(|(field, hint)| section.warning(Some(field), ignored(*hint))));
    if section.table.contains_key(INPUT_DATA_ALIAS) {
        warnings.push(section.warning(
            Some(INPUT_DATA_ALIAS),
            "read as `input_data`, the name this file's specification uses (the Python orchestrator ignores it)",
        ));
    }
    Ok(Schedule { name: section.name.to_owned(), blueprint, input_data, trigger, enabled })
}

/// What an unrecognised field may have been meant as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    /// Close to a field of this file: likely a typo.
    Typo(&'static str),
    /// Read by the Python orchestrator, not by this server.
    NotSupported,
    Nothing,
}

/// The section's fields this server does not read, in the table's order.
fn unknown_fields<'a>(section: &Section<'a>) -> Vec<(&'a str, Hint)> {
    section
        .table
        .keys()
        .map(String::as_str)
        .filter(|field| !FIELDS.contains(field) && *field != INPUT_DATA_ALIAS)
        .map(|field| {
            let hint = if NOT_SUPPORTED.contains(&field) {
                Hint::NotSupported
            } else {
                did_you_mean(field, &FIELDS).map_or(Hint::Nothing, Hint::Typo)
            };
            (field, hint)
        })
        .collect()
}

fn ignored(hint: Hint) -> String {
    match hint {
        Hint::Typo(known) => format!("unknown field, ignored; did you mean `{known}`?"),
        Hint::NotSupported => "read by the Python orchestrator but not supported by this server; ignored".to_owned(),
        Hint::Nothing => format!("unknown field, ignored; the known fields are: {}", FIELDS.join(", ")),
    }
}

/// `input_data`, or its alias `initial_data`; both at once is refused, as
/// either choice would silently drop the other.
fn input_data(section: &Section<'_>) -> Result<Map<String, Value>, FileError> {
    let main = section.optional_table("input_data")?;
    let alias = section.optional_table(INPUT_DATA_ALIAS)?;
    match (main, alias) {
        (Some(_), Some(_)) => Err(section.error(
            Some(INPUT_DATA_ALIAS),
            "conflicts with `input_data`: they are two names for the job's data; keep one",
        )),
        (Some(table), None) | (None, Some(table)) => Ok(table_to_json(table)),
        (None, None) => Ok(Map::new()),
    }
}

fn trigger(section: &Section<'_>, unknown: &[(&str, Hint)]) -> Result<Trigger, FileError> {
    let mut present = TRIGGERS.iter().filter(|(field, _)| section.table.contains_key(*field));
    let has_time = section.table.contains_key("time");
    let Some(&(first, kind)) = present.next() else {
        // A misspelt trigger (`daily-at`) is named as such: "no trigger"
        // alone would send the reader looking in the wrong place.
        let misspelt = unknown.iter().find_map(|&(field, hint)| match hint {
            Hint::Typo(known) if TRIGGERS.iter().any(|(t, _)| *t == known) => Some((field, known)),
            _ => None,
        });
        // A lone `time` most likely means its companion list was forgotten;
        // pointing at `time` says more than "no trigger" alone.
        return Err(match misspelt {
            Some((field, known)) => {
                section.error(Some(field), format!("unknown field; did you mean `{known}`? {NO_TRIGGER}"))
            }
            None if has_time => section.error(Some("time"), format!("{TIME_MISPLACED}; {NO_TRIGGER}")),
            None => section.error(None, NO_TRIGGER),
        });
    };
    if let Some((second, _)) = present.next() {
        return Err(section.error(Some(second), format!("conflicts with `{first}`: set exactly one trigger")));
    }
    match kind {
        Kind::Interval | Kind::Daily if has_time => Err(section.error(Some("time"), TIME_MISPLACED)),
        Kind::Interval => interval(section, first).map(|seconds| Trigger::Interval { seconds }),
        Kind::Daily => hh_mm(section, first).map(|at| Trigger::Daily { at }),
        Kind::Weekly => {
            let days = weekly_days(section, first)?;
            Ok(Trigger::Weekly { days, at: list_time(section, first)? })
        }
        Kind::Monthly => {
            let dates = monthly_dates(section, first)?;
            Ok(Trigger::Monthly { dates, at: list_time(section, first)? })
        }
    }
}

fn interval(section: &Section<'_>, field: &str) -> Result<u64, FileError> {
    match section.optional_int(field)?.map(u64::try_from) {
        Some(Ok(seconds)) if seconds > 0 => Ok(seconds),
        _ => Err(section.error(Some(field), "must be a whole number of seconds greater than 0")),
    }
}

/// The `time` that weekly and monthly triggers need.
fn list_time(section: &Section<'_>, list: &str) -> Result<NaiveTime, FileError> {
    if !section.table.contains_key("time") {
        return Err(section.error(Some("time"), format!("missing mandatory field: `{list}` needs a time (\"HH:MM\")")));
    }
    hh_mm(section, "time")
}

fn hh_mm(section: &Section<'_>, field: &str) -> Result<NaiveTime, FileError> {
    let text = section.required_str(field)?;
    parse_hh_mm(text).ok_or_else(|| {
        section.error(Some(field), format!("expected \"HH:MM\" with two digits each, 00:00 to 23:59; found {text:?}"))
    })
}

// Strict on purpose: "9:00" or "12:00:00" may be accepted by lenient
// parsers, but the spec's format is HH:MM and a schedule that silently
// means something else is worse than one that refuses to load.
fn parse_hh_mm(text: &str) -> Option<NaiveTime> {
    let &[h1, h2, b':', m1, m2] = text.as_bytes() else {
        return None;
    };
    let two = |hi: u8, lo: u8| {
        (hi.is_ascii_digit() && lo.is_ascii_digit()).then(|| u32::from(hi - b'0') * 10 + u32::from(lo - b'0'))
    };
    NaiveTime::from_hms_opt(two(h1, h2)?, two(m1, m2)?, 0)
}

fn non_empty_array<'a>(section: &Section<'a>, field: &str) -> Result<&'a Vec<toml::Value>, FileError> {
    match section.optional_array(field)? {
        Some(entries) if !entries.is_empty() => Ok(entries),
        Some(_) => Err(section.error(Some(field), "must not be empty")),
        None => Err(section.error(Some(field), "missing mandatory field")),
    }
}

// Entries are numbered from 1 in messages: they are read by people counting
// items in a TOML list.
fn weekly_days(section: &Section<'_>, field: &str) -> Result<Vec<Weekday>, FileError> {
    let mut days = non_empty_array(section, field)?
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let day = entry.as_str().and_then(|name| DAYS.iter().find(|(known, _)| *known == name));
            day.map(|&(_, day)| day).ok_or_else(|| {
                let n = i + 1;
                section.error(
                    Some(field),
                    match entry {
                        toml::Value::String(s) => {
                            format!("entry {n} ({s:?}) is not a day name; expected one of: {DAY_NAMES}")
                        }
                        other => format!(
                            "entry {n} is {}, expected a day name, one of: {DAY_NAMES}",
                            article(other.type_str())
                        ),
                    },
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    days.sort_by_key(Weekday::num_days_from_monday);
    days.dedup();
    Ok(days)
}

fn monthly_dates(section: &Section<'_>, field: &str) -> Result<Vec<u32>, FileError> {
    let mut dates = non_empty_array(section, field)?
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let n = i + 1;
            match entry {
                toml::Value::Integer(date) => {
                    u32::try_from(*date).ok().filter(|date| (1..=31).contains(date)).ok_or_else(|| {
                        section.error(Some(field), format!("entry {n} ({date}) is not a date from 1 to 31"))
                    })
                }
                other => Err(section.error(
                    Some(field),
                    format!("entry {n} is {}, expected an integer from 1 to 31", article(other.type_str())),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    dates.sort_unstable();
    dates.dedup();
    Ok(dates)
}

fn article(type_name: &str) -> String {
    if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {type_name}") } else { format!("a {type_name}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::parse_table;

    const FILE: &str = "schedules.toml";

    fn parse(text: &str) -> Result<Vec<Schedule>, FileError> {
        parse_with_warnings(text).map(|file| file.schedules)
    }

    fn parse_with_warnings(text: &str) -> Result<ScheduleFile, FileError> {
        from_table(FILE, &parse_table(FILE, text).unwrap())
    }

    fn one(text: &str) -> Schedule {
        let mut schedules = parse(text).unwrap();
        assert_eq!(schedules.len(), 1);
        schedules.remove(0)
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    /// `body` goes under `[job]`; the error must name this file, that
    /// section, `field`, and contain `problem`.
    #[track_caller]
    fn rejected(body: &str, field: Option<&str>, problem: &str) -> FileError {
        let err = parse(&format!("[job]\n{body}\n")).unwrap_err();
        assert_eq!(err.file, FILE, "{err}");
        assert_eq!(err.section.as_deref(), Some("job"), "{err}");
        assert_eq!(err.field.as_deref(), field, "{err}");
        assert!(err.problem.contains(problem), "{err:?} should contain {problem:?}");
        let shown = err.to_string();
        assert!(shown.starts_with("schedules.toml: section [job]"), "{shown}");
        if let Some(field) = field {
            assert!(shown.contains(&format!("field `{field}`")), "{shown}");
        }
        err
    }

    #[test]
    fn the_spec_example_parses() {
        let text = r#"
[cleanup_job]
blueprint = "system_cleanup"
interval_seconds = 3600
input_data = { target = "temp_files" }

[daily_report]
blueprint = "generate_report"
daily_at = "09:00" # Runs at 09:00 TZ time
input_data = { type = "full_daily" }

[weekly_backup]
blueprint = "full_backup"
weekly_days = ["fri"]
time = "23:00"
input_data = { compression = "max" }
"#;
        let schedules = parse(text).unwrap();
        let find = |name: &str| schedules.iter().find(|s| s.name == name).unwrap();
        assert_eq!(schedules.len(), 3);

        let cleanup = find("cleanup_job");
        assert_eq!(cleanup.blueprint, "system_cleanup");
        assert_eq!(cleanup.trigger, Trigger::Interval { seconds: 3600 });
        assert_eq!(Value::Object(cleanup.input_data.clone()), serde_json::json!({"target": "temp_files"}));

        let report = find("daily_report");
        assert_eq!(report.blueprint, "generate_report");
        assert_eq!(report.trigger, Trigger::Daily { at: at(9, 0) });
        assert_eq!(Value::Object(report.input_data.clone()), serde_json::json!({"type": "full_daily"}));

        let backup = find("weekly_backup");
        assert_eq!(backup.blueprint, "full_backup");
        assert_eq!(backup.trigger, Trigger::Weekly { days: vec![Weekday::Fri], at: at(23, 0) });
        assert_eq!(Value::Object(backup.input_data.clone()), serde_json::json!({"compression": "max"}));
    }

    #[test]
    fn an_empty_file_has_no_schedules() {
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn monthly_accepts_the_31st_and_sorts_and_deduplicates() {
        let s = one("[m]\nblueprint = \"b\"\nmonthly_dates = [31, 1, 15, 1, 31]\ntime = \"00:00\"\n");
        assert_eq!(s.trigger, Trigger::Monthly { dates: vec![1, 15, 31], at: at(0, 0) });
        assert!(s.input_data.is_empty());
    }

    #[test]
    fn weekly_days_are_sorted_from_monday_and_deduplicated() {
        let s = one("[w]\nblueprint = \"b\"\nweekly_days = [\"sun\", \"mon\", \"sun\", \"wed\"]\ntime = \"23:59\"\n");
        assert_eq!(s.trigger, Trigger::Weekly { days: vec![Weekday::Mon, Weekday::Wed, Weekday::Sun], at: at(23, 59) });
    }

    #[test]
    fn input_data_may_be_a_sub_table() {
        let s = one(
            "[j]\nblueprint = \"b\"\ndaily_at = \"00:00\"\n[j.input_data]\nn = 1\n[j.input_data.deep]\nx = [true]\n",
        );
        assert_eq!(Value::Object(s.input_data), serde_json::json!({"n": 1, "deep": {"x": [true]}}));
        assert_eq!(s.trigger, Trigger::Daily { at: at(0, 0) });
    }

    #[test]
    fn blueprint_is_a_mandatory_non_empty_string() {
        rejected("interval_seconds = 5", Some("blueprint"), "missing mandatory field");
        rejected("blueprint = \"\"\ninterval_seconds = 5", Some("blueprint"), "must not be empty");
        rejected("blueprint = 3\ninterval_seconds = 5", Some("blueprint"), "expected a string");
    }

    #[test]
    fn exactly_one_trigger() {
        rejected("blueprint = \"b\"", None, NO_TRIGGER);
        rejected("blueprint = \"b\"\ninput_data = {}", None, "no trigger");
        let err =
            rejected("blueprint = \"b\"\ninterval_seconds = 5\ndaily_at = \"10:00\"", Some("daily_at"), "conflicts");
        assert!(err.problem.contains("interval_seconds"));
        rejected(
            "blueprint = \"b\"\nweekly_days = [\"mon\"]\nmonthly_dates = [1]\ntime = \"10:00\"",
            Some("monthly_dates"),
            "conflicts with `weekly_days`",
        );
        rejected(
            "blueprint = \"b\"\ndaily_at = \"10:00\"\nmonthly_dates = [1]\ntime = \"10:00\"",
            Some("monthly_dates"),
            "conflicts with `daily_at`",
        );
    }

    #[test]
    fn interval_is_a_positive_integer() {
        rejected("blueprint = \"b\"\ninterval_seconds = 0", Some("interval_seconds"), "greater than 0");
        rejected("blueprint = \"b\"\ninterval_seconds = -5", Some("interval_seconds"), "greater than 0");
        rejected("blueprint = \"b\"\ninterval_seconds = \"60\"", Some("interval_seconds"), "expected an integer");
        rejected("blueprint = \"b\"\ninterval_seconds = 1.5", Some("interval_seconds"), "expected an integer");
        assert_eq!(one("[j]\nblueprint = \"b\"\ninterval_seconds = 1\n").trigger, Trigger::Interval { seconds: 1 });
    }

    #[test]
    fn times_are_strict_hh_mm() {
        for bad in ["9:00", "24:00", "12:60", "12:00:00", "", "ab:cd", "12-00", " 9:00", "+1:00", "１2:00"] {
            let body = format!("blueprint = \"b\"\ndaily_at = {bad:?}");
            let problem = if bad.is_empty() { "must not be empty" } else { "HH:MM" };
            rejected(&body, Some("daily_at"), problem);
            let body = format!("blueprint = \"b\"\nweekly_days = [\"mon\"]\ntime = {bad:?}");
            rejected(&body, Some("time"), problem);
        }
        rejected("blueprint = \"b\"\ndaily_at = 900", Some("daily_at"), "expected a string");
        rejected("blueprint = \"b\"\nmonthly_dates = [1]\ntime = 09:00:00", Some("time"), "expected a string");
        assert_eq!(one("[j]\nblueprint = \"b\"\ndaily_at = \"07:05\"\n").trigger, Trigger::Daily { at: at(7, 5) });
    }

    #[test]
    fn time_belongs_only_with_weekly_or_monthly() {
        rejected("blueprint = \"b\"\nweekly_days = [\"mon\"]", Some("time"), "missing mandatory field");
        rejected("blueprint = \"b\"\nmonthly_dates = [1]", Some("time"), "missing mandatory field");
        rejected("blueprint = \"b\"\ndaily_at = \"10:00\"\ntime = \"10:00\"", Some("time"), TIME_MISPLACED);
        rejected("blueprint = \"b\"\ninterval_seconds = 5\ntime = \"10:00\"", Some("time"), TIME_MISPLACED);
        let err = rejected("blueprint = \"b\"\ntime = \"10:00\"", Some("time"), TIME_MISPLACED);
        assert!(err.problem.contains("no trigger"));
    }

    #[test]
    fn weekly_days_are_lowercase_short_names() {
        let field = Some("weekly_days");
        rejected("blueprint = \"b\"\nweekly_days = []\ntime = \"10:00\"", field, "must not be empty");
        rejected("blueprint = \"b\"\nweekly_days = \"mon\"\ntime = \"10:00\"", field, "expected an array");
        for bad in ["Mon", "monday", "MON", "", "mo"] {
            let body = format!("blueprint = \"b\"\nweekly_days = [\"tue\", {bad:?}]\ntime = \"10:00\"");
            let err = rejected(&body, field, &format!("entry 2 ({bad:?}) is not a day name"));
            assert!(err.problem.contains(DAY_NAMES), "{err}");
        }
        let err = rejected("blueprint = \"b\"\nweekly_days = [1]\ntime = \"10:00\"", field, "entry 1 is an integer");
        assert!(err.problem.contains(DAY_NAMES), "{err}");
    }

    #[test]
    fn monthly_dates_are_integers_from_1_to_31() {
        let field = Some("monthly_dates");
        rejected("blueprint = \"b\"\nmonthly_dates = []\ntime = \"10:00\"", field, "must not be empty");
        rejected("blueprint = \"b\"\nmonthly_dates = 1\ntime = \"10:00\"", field, "expected an array");
        rejected("blueprint = \"b\"\nmonthly_dates = [1, 0]\ntime = \"10:00\"", field, "entry 2 (0) is not a date");
        rejected("blueprint = \"b\"\nmonthly_dates = [32]\ntime = \"10:00\"", field, "entry 1 (32) is not a date");
        rejected("blueprint = \"b\"\nmonthly_dates = [-1]\ntime = \"10:00\"", field, "from 1 to 31");
        rejected("blueprint = \"b\"\nmonthly_dates = [5000000000]\ntime = \"10:00\"", field, "from 1 to 31");
        rejected("blueprint = \"b\"\nmonthly_dates = [\"1\"]\ntime = \"10:00\"", field, "entry 1 is a string");
    }

    #[test]
    fn input_data_must_be_a_table() {
        rejected("blueprint = \"b\"\ninterval_seconds = 5\ninput_data = \"x\"", Some("input_data"), "expected a table");
        rejected("blueprint = \"b\"\ninterval_seconds = 5\ninput_data = [1]", Some("input_data"), "expected a table");
    }

    /// The warnings of a one-section file under `[job]`, as (field, message).
    fn warnings(body: &str) -> Vec<(String, String)> {
        let file = parse_with_warnings(&format!("[job]\n{body}\n")).unwrap();
        file.warnings
            .into_iter()
            .map(|w| {
                assert_eq!((w.file.as_str(), w.section.as_deref()), (FILE, Some("job")), "{w}");
                (w.field.unwrap_or_default(), w.message)
            })
            .collect()
    }

    #[test]
    fn unknown_fields_are_warned_about_and_ignored() {
        let found = warnings("blueprint = \"b\"\ninterval_seconds = 5\ncron = \"* * * * *\"");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "cron");
        assert!(found[0].1.contains("unknown field, ignored") && found[0].1.contains("input_data"), "{found:?}");

        let found = warnings("blueprint = \"b\"\ninterval_seconds = 5\ninput_dat = { a = 1 }");
        assert_eq!(found, vec![("input_dat".into(), "unknown field, ignored; did you mean `input_data`?".into())]);

        let found = warnings("blueprint = \"b\"\ninterval_seconds = 5\nresult_timeout = 30");
        assert!(found[0].1.contains("not supported by this server"), "{found:?}");

        assert_eq!(warnings("blueprint = \"b\"\ninterval_seconds = 5\ninput_data = {}"), vec![]);
    }

    #[test]
    fn a_misspelt_trigger_is_named_rather_than_no_trigger() {
        let err = rejected("blueprint = \"b\"\ndaily-at = \"10:00\"", Some("daily-at"), "did you mean `daily_at`?");
        assert!(err.problem.contains("no trigger"), "{err}");
        // Misspelt but another trigger is present: only a warning.
        let found = warnings("blueprint = \"b\"\ninterval_seconds = 5\nmonthly_date = [1]");
        assert_eq!(found[0].0, "monthly_date");
        assert!(found[0].1.contains("did you mean `monthly_dates`?"), "{found:?}");
    }

    /// The published example application's `schedules.toml`, unchanged.
    #[test]
    fn the_example_applications_schedule_loads_with_initial_data_as_input_data() {
        let text = r#"
# Example Schedule Configuration for Avtomatika Native Scheduler

[maintenance_task]
blueprint = "periodic_maintenance"
interval_seconds = 60
enabled = true

[maintenance_task.initial_data]
source = "scheduler"
task_type = "cleanup"
"#;
        let file = parse_with_warnings(text).unwrap();
        let [task] = file.schedules.as_slice() else { panic!("{file:?}") };
        assert_eq!(task.name, "maintenance_task");
        assert!(task.enabled);
        assert_eq!(task.trigger, Trigger::Interval { seconds: 60 });
        assert_eq!(
            Value::Object(task.input_data.clone()),
            serde_json::json!({"source": "scheduler", "task_type": "cleanup"})
        );
        let [warning] = file.warnings.as_slice() else { panic!("{file:?}") };
        assert_eq!(warning.field.as_deref(), Some("initial_data"));
        assert!(warning.message.contains("read as `input_data`"), "{warning}");
        assert!(warning.to_string().starts_with("schedules.toml: section [maintenance_task], field `initial_data`"));
    }

    #[test]
    fn input_data_and_its_alias_together_are_refused() {
        rejected(
            "blueprint = \"b\"\ninterval_seconds = 5\ninput_data = {}\ninitial_data = {}",
            Some("initial_data"),
            "conflicts with `input_data`",
        );
        rejected("blueprint = \"b\"\ninterval_seconds = 5\ninitial_data = 1", Some("initial_data"), "expected a table");
    }

    #[test]
    fn enabled_is_an_optional_boolean() {
        assert!(one("[j]\nblueprint = \"b\"\ninterval_seconds = 5\n").enabled);
        assert!(!one("[j]\nblueprint = \"b\"\ninterval_seconds = 5\nenabled = false\n").enabled);
        rejected("blueprint = \"b\"\ninterval_seconds = 5\nenabled = \"no\"", Some("enabled"), "expected a boolean");
        // A disabled schedule is still checked in full.
        rejected("blueprint = \"b\"\nenabled = false", None, NO_TRIGGER);
    }

    #[test]
    fn top_level_values_are_rejected() {
        let err = parse("stray = 1\n[job]\nblueprint = \"b\"\ninterval_seconds = 5\n").unwrap_err();
        assert_eq!((err.file.as_str(), err.section.as_deref(), err.field.as_deref()), (FILE, None, Some("stray")));
        assert!(err.problem.contains("expected a [section]"), "{err}");
    }

    #[test]
    fn check_blueprints_names_the_section_with_an_unknown_blueprint() {
        let schedules = parse(
            "[a]\nblueprint = \"known\"\ninterval_seconds = 5\n[b]\nblueprint = \"missing\"\ndaily_at = \"01:00\"\n",
        )
        .unwrap();
        assert_eq!(check_blueprints(&schedules, FILE, |_| true), Ok(()));
        let err = check_blueprints(&schedules, FILE, |name| name == "known").unwrap_err();
        assert_eq!(err.file, FILE);
        assert_eq!(err.section.as_deref(), Some("b"));
        assert_eq!(err.field.as_deref(), Some("blueprint"));
        assert!(err.problem.contains("no loaded blueprint is named \"missing\""), "{err}");
        assert_eq!(check_blueprints(&[], FILE, |_| false), Ok(()));
        let disabled = parse("[b]\nblueprint = \"missing\"\ndaily_at = \"01:00\"\nenabled = false\n").unwrap();
        assert_eq!(
            check_blueprints(&disabled, FILE, |_| false),
            Ok(()),
            "a disabled schedule may name an absent blueprint"
        );
    }

    #[test]
    fn load_reads_the_file_and_reports_syntax_errors_with_a_position() {
        let dir = std::env::temp_dir().join(format!("avtomatika-schedules-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("good.toml");
        std::fs::write(&good, "[j]\nblueprint = \"b\"\ninterval_seconds = 60\n").unwrap();
        let schedules = load(&good).unwrap().schedules;
        assert_eq!(schedules[0].trigger, Trigger::Interval { seconds: 60 });

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[j]\nblueprint = \"b\"\ninterval_seconds = \n").unwrap();
        let err = load(&bad).unwrap_err();
        assert_eq!(err.file, bad.display().to_string());
        assert_eq!(err.position.map(|(line, _)| line), Some(3), "{err}");
        assert!(err.problem.starts_with("TOML syntax error"), "{err}");

        let missing = load(&dir.join("absent.toml")).unwrap_err();
        assert!(missing.problem.contains("cannot read the file"), "{missing}");

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
