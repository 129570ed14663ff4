//! Synced folders, the local part: reading a folder's tree from disk,
//! what this device last synced of it, deciding a pass, and writing into
//! the folder safely. The registers every device writes are in
//! `crate::crdt::folder`; running a pass against the relays is in
//! `crate::client::folders`.

pub mod civil;
pub mod disk;
pub mod index;
pub mod plan;
pub mod scan;

/// The name a conflict copy of `path` takes: `NAME.conflict-DEVICE-DATE.EXT`
/// beside it (`DATE` in UTC, from `mtime`, nanoseconds since the epoch),
/// with `-2`, `-3`… added while `taken` says the name is in use.
pub fn conflict_name(path: &str, device: &str, mtime: i64, taken: &dyn Fn(&str) -> bool) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, path),
    };
    // A leading dot is part of the name, not an extension (".bashrc").
    let (stem, ext) = match file.rfind('.') {
        Some(at) if at > 0 => (&file[..at], &file[at..]),
        _ => (file, ""),
    };
    let device: String = device
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let date = format_utc(mtime.div_euclid(1_000_000_000));
    let mut n = 1;
    loop {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let name = format!("{stem}.conflict-{device}-{date}{suffix}{ext}");
        let candidate = match dir {
            Some(dir) => format!("{dir}/{name}"),
            None => name,
        };
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// `YYYYMMDD-HHMMSS` in UTC for Unix seconds `secs`.
fn format_utc(secs: i64) -> String {
    let ((year, month, day), (h, m, s)) = civil::split(secs);
    format!("{year:04}{month:02}{day:02}-{h:02}{m:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension_and_never_clash() {
        let at = 1_796_601_600 * 1_000_000_000; // 2026-12-07 00:00:00 UTC
        let free = |_: &str| false;
        assert_eq!(
            conflict_name("docs/report.txt", "my laptop", at, &free),
            "docs/report.conflict-my_laptop-20261207-000000.txt"
        );
        assert_eq!(
            conflict_name(".bashrc", "phone", at, &free),
            ".bashrc.conflict-phone-20261207-000000"
        );
        let first = "a.conflict-phone-20261207-000000.tar";
        assert_eq!(
            conflict_name("a.tar", "phone", at, &|name| name == first),
            "a.conflict-phone-20261207-000000-2.tar"
        );
        assert_eq!(format_utc(0), "19700101-000000");
        assert_eq!(format_utc(951_782_400), "20000229-000000");
    }
}
