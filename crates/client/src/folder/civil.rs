//! Calendar dates in UTC from Unix days and back (Howard Hinnant's
//! algorithms), for conflict copy names and the times people type.

/// (year, month, day) of `days` since 1970-01-01.
pub fn from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a date (the inverse of [`from_days`]).
pub fn to_days(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (date, time) of Unix seconds `secs`: `YYYY-MM-DD`, `HH:MM:SS`.
pub fn split(secs: i64) -> ((i64, i64, i64), (i64, i64, i64)) {
    let rest = secs.rem_euclid(86_400);
    (
        from_days(secs.div_euclid(86_400)),
        (rest / 3600, rest % 3600 / 60, rest % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_dates_round_trip() {
        assert_eq!(from_days(0), (1970, 1, 1));
        assert_eq!(from_days(11_016), (2000, 2, 29));
        for days in [-800_000, -1, 0, 59, 365, 11_016, 20_794, 2_000_000] {
            let (y, m, d) = from_days(days);
            assert_eq!(to_days(y, m, d), days);
        }
    }
}
