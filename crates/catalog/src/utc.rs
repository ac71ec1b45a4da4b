//! UTC calendar arithmetic on Unix milliseconds, without a date library:
//! the schedule needs day boundaries and ISO 8601 text, nothing more.

pub const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March, so the leap day ends a year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day number from [`days_from_civil`].
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Midnight UTC at or before `ms`.
pub fn day_start(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY) * MS_PER_DAY
}

/// `2026-11-29`.
pub fn format_date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `2026-11-29T20:41:07Z` (whole seconds).
pub fn format_time(ms: i64) -> String {
    let in_day = ms.rem_euclid(MS_PER_DAY) / 1000;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        format_date(ms),
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM[:SS]Z` (a space
/// may replace the `T`; the `Z` is required, other offsets are refused so
/// no time is silently read in local time).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a UTC time like 2026-12-01 or 2026-12-01T06:00:00Z");
    let t = text.trim();
    let (date, time) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let number = |s: &str, digits: usize| -> Result<u32, String> {
        if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (year, month, day) = (number(y, 4)?, number(m, 2)?, number(d, 2)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day == 0 || day > days_in_month {
        return Err(bad());
    }
    let mut ms = days_from_civil(i64::from(year), month, day) * MS_PER_DAY;
    if let Some(time) = time {
        let time = time.strip_suffix('Z').ok_or_else(bad)?;
        let fields: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&fields.len()) {
            return Err(bad());
        }
        let h = number(fields[0], 2)?;
        let min = number(fields[1], 2)?;
        let s = fields.get(2).map(|s| number(s, 2)).transpose()?.unwrap_or(0);
        if h > 23 || min > 59 || s > 59 {
            return Err(bad());
        }
        ms += (i64::from(h) * 3600 + i64::from(min) * 60 + i64::from(s)) * 1000;
    }
    Ok(ms)
}

/// The last millisecond that `text` ([`parse_time`]'s forms) names, for
/// the end of an inclusive window: a date means the whole day, a minute
/// the whole minute, a second the whole second.
pub fn parse_time_end(text: &str) -> Result<i64, String> {
    let start = parse_time(text)?;
    let t = text.trim();
    let span = match t.find(['T', ' ']) {
        None => MS_PER_DAY,
        Some(i) if t[i + 1..].split(':').count() == 2 => 60_000,
        Some(_) => 1_000,
    };
    Ok(start + span - 1)
}

/// Whether `text` names a time of day, not just a date.
pub fn has_time_of_day(text: &str) -> bool {
    text.trim().contains(['T', ' '])
}

/// Parses a duration like `90d`, `12h`, `30m` or `45s` into milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration like 90d, 12h, 30m or 45s");
    let unit = t.chars().last().ok_or_else(bad)?;
    let per = match unit {
        'd' => MS_PER_DAY,
        'h' => 3_600_000,
        'm' => 60_000,
        's' => 1000,
        _ => return Err(bad()),
    };
    let n: i64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(per).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_dates_across_eras_and_leap_days() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        // 2026-11-29T20:41:07Z, checked with `date -u -d @1795984867`.
        assert_eq!(format_time(1_795_984_867_000), "2026-11-29T20:41:07Z");
    }

    #[test]
    fn the_end_of_a_window_is_the_last_millisecond_its_text_names() {
        let day = parse_time("2026-11-30").unwrap();
        assert_eq!(parse_time_end("2026-11-30").unwrap(), day + MS_PER_DAY - 1);
        assert_eq!(parse_time_end("2026-11-30T23:59Z").unwrap(), day + MS_PER_DAY - 1);
        assert_eq!(
            parse_time_end("2026-11-30 23:59:59Z").unwrap(),
            day + MS_PER_DAY - 1
        );
        assert_eq!(
            parse_time_end("2026-11-30T08:00:00Z").unwrap(),
            day + 8 * 3_600_000 + 999
        );
        assert!(parse_time_end("2026-11-30T24:00Z").is_err());
        assert!(has_time_of_day("2026-11-30T08:00Z") && !has_time_of_day(" 2026-11-30 "));
    }

    #[test]
    fn parses_utc_times_and_refuses_the_rest() {
        assert_eq!(parse_time("2026-11-29T20:41:07Z"), Ok(1_795_984_867_000));
        assert_eq!(parse_time("2026-11-29 20:41Z"), Ok(1_795_984_860_000));
        assert_eq!(parse_time("2026-11-29"), Ok(day_start(1_795_984_867_000)));
        for bad in [
            "2026-11-29T20:41:07",
            "2026-11-29T20:41:07+01:00",
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "yesterday",
            "",
            "2026-11-29T24:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90d"), Ok(90 * MS_PER_DAY));
        assert_eq!(parse_duration("5s"), Ok(5000));
        for bad in ["", "d", "0d", "-1h", "5w", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
