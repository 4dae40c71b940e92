//! Names the storage layer derives: owners encoded for dataset and directory
//! names, snapshot ids, the names of kept (retired) workspaces, timestamps and
//! sizes. Everything here is pure, so it is tested without touching a disk.

use crate::model::Owner;

use super::StorageError;

/// Encodes an owner as one dataset-name component and one directory name.
///
/// `<kind>:<id>` becomes `<kind>-<escaped id>`. The kind is 1-16 lowercase
/// letters, so the first `-` always separates it from the id. In the id,
/// ASCII letters, digits, `.` and `-` stay as they are; every other byte
/// (`_`, `@`, and anything else) becomes `_` followed by two lowercase hex
/// digits. `_` only ever starts an escape, so the encoding is injective, and
/// [`decode_owner`] inverts it.
///
/// The result only holds `[A-Za-z0-9._-]`: valid in a ZFS dataset name (which
/// refuses `@`, `#`, `%` and `/` inside a component), never `.` or `..`, free of
/// `:` (the separator of `systemd-nspawn --bind=`), and safe as a file name.
/// `telegram:123` → `telegram-123`, `chat:a_b@c` → `chat-a_5fb_40c`.
pub fn encode_owner(owner: &Owner) -> String {
    let s = owner.as_str();
    let (kind, id) = s.split_once(':').unwrap_or(("", s));
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(kind);
    out.push('-');
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('_');
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// The inverse of [`encode_owner`]; `None` for a string no owner encodes to.
pub fn decode_owner(s: &str) -> Option<Owner> {
    let (kind, rest) = s.split_once('-')?;
    let mut id = Vec::with_capacity(rest.len());
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'_' {
            let hex = rest.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            // Only bytes the encoder escapes may appear escaped, so every
            // owner has exactly one encoding.
            if v.is_ascii_alphanumeric() || v == b'.' || v == b'-' {
                return None;
            }
            id.push(v);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            id.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    let id = String::from_utf8(id).ok()?;
    Owner::parse(&format!("{kind}:{id}")).ok()
}

/// Checks a container name with the engine's rules (which also make it a
/// valid dataset component and directory name).
pub fn check_container_name(name: &str) -> Result<(), StorageError> {
    crate::model::container_name::validate(name)
        .map_err(|e| StorageError::InvalidArgument(format!("container name: {e}")))
}

/// Checks the reason given for a snapshot: 1-32 characters, lowercase letters,
/// digits and `-`, starting with a letter (`manual`, `pre-update`, ...).
pub fn check_reason(reason: &str) -> Result<(), StorageError> {
    let ok = !reason.is_empty()
        && reason.len() <= 32
        && reason.as_bytes()[0].is_ascii_lowercase()
        && reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidArgument(format!(
            "snapshot reason '{}' is not allowed: use 1-32 lowercase letters, digits and '-', \
             starting with a letter, like 'manual' or 'pre-update'",
            reason.escape_default()
        )))
    }
}

/// The latest instant a timestamp can show with a four-digit year.
const MAX_STAMP_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// `2026-11-27T10-00-00Z`: an RFC 3339 UTC time with `-` instead of `:`,
/// so it is valid in dataset names, sorts chronologically and is always 20
/// characters long.
pub fn format_stamp(secs: u64) -> String {
    let secs = secs.min(MAX_STAMP_SECS);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses what [`format_stamp`] writes.
pub fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b'-'
        || b[16] != b'-'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    Some(days as u64 * 86_400 + h * 3600 + mi * 60 + se)
}

/// A snapshot id: `<stamp>-<reason>`, e.g. `2026-11-27T10-00-00Z-manual`.
pub fn snapshot_id(secs: u64, reason: &str) -> String {
    format!("{}-{reason}", format_stamp(secs))
}

/// Splits a snapshot id into its time and reason.
pub fn parse_snapshot_id(id: &str) -> Option<(u64, &str)> {
    let stamp = id.get(..20)?;
    let rest = id.get(20..)?;
    let reason = rest.strip_prefix('-')?;
    let secs = parse_stamp(stamp)?;
    check_reason(reason).ok()?;
    Some((secs, reason))
}

/// Checks an id a caller names (before it goes into a command line or path).
pub fn check_snapshot_id(id: &str) -> Result<(), StorageError> {
    if parse_snapshot_id(id).is_some() {
        Ok(())
    } else {
        Err(StorageError::SnapshotNotFound { id: id.to_string() })
    }
}

/// The name a retired workspace is kept under: `<container>.<stamp>`.
/// Container names never hold `.`, so the split is unambiguous.
pub fn kept_name(container: &str, secs: u64) -> String {
    format!("{container}.{}", format_stamp(secs))
}

/// Splits a kept name into the container's name and the time it was retired.
pub fn parse_kept_name(s: &str) -> Option<(&str, u64)> {
    let (name, stamp) = s.split_once('.')?;
    check_container_name(name).ok()?;
    Some((name, parse_stamp(stamp)?))
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        _ => 28,
    }
}

// Proleptic Gregorian calendar <-> days since 1970-01-01 (the well-known
// era-based conversion; valid for every date this module produces).
/// The UTC civil date (year, month 1-12, day) of a day count since the epoch.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a size as ZFS writes it in a property (`10G`, `512M`, `1.5T`,
/// `100000`, with an optional `B` or `iB`; powers of 1024). `none` and `0`
/// mean "no limit".
pub fn parse_size(s: &str) -> Result<Option<u64>, StorageError> {
    let bad = || {
        StorageError::InvalidArgument(format!(
            "'{}' is not a size: use a number with an optional K, M, G, T, P or E suffix \
             (powers of 1024), like '10G' or '512M', or 'none'",
            s.escape_default()
        ))
    };
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let upper = t.to_ascii_uppercase();
    let body = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (num, shift) = match body.chars().last() {
        Some(c @ ('K' | 'M' | 'G' | 'T' | 'P' | 'E')) => {
            let shift = match c {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                'P' => 50,
                _ => 60,
            };
            (&body[..body.len() - 1], shift)
        }
        _ => (body, 0u32),
    };
    if upper.ends_with("IB") && shift == 0 {
        return Err(bad());
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (num.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    if frac.len() > 9 {
        return Err(bad());
    }
    let int: u128 = int.parse().map_err(|_| bad())?;
    let mult: u128 = 1u128 << shift;
    let mut total = int.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        let f: u128 = frac.parse().map_err(|_| bad())?;
        total += f * mult / 10u128.pow(frac.len() as u32);
    }
    if total > u64::MAX as u128 {
        return Err(bad());
    }
    Ok(if total == 0 { None } else { Some(total as u64) })
}

/// A byte count for people: `0 B`, `512 B`, `1.5 KiB`, `10.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        for secs in [
            0,
            1,
            59,
            86_399,
            86_400,
            951_782_400,
            1_795_773_600,
            MAX_STAMP_SECS,
        ] {
            let s = format_stamp(secs);
            assert_eq!(s.len(), 20, "{s}");
            assert_eq!(parse_stamp(&s), Some(secs), "{s}");
        }
        assert_eq!(format_stamp(1_795_773_600), "2026-11-27T10-00-00Z");
        assert_eq!(format_stamp(u64::MAX), "9999-12-31T23-59-59Z");
        for bad in [
            "2026-02-30T00-00-00Z",
            "2026-13-01T00-00-00Z",
            "2026-11-27T24-00-00Z",
            "2026-11-27T10:00:00Z",
            "2026-11-27T10-00-00",
            "+026-11-27T10-00-00Z",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn snapshot_ids() {
        let id = snapshot_id(1_795_773_600, "pre-update");
        assert_eq!(id, "2026-11-27T10-00-00Z-pre-update");
        assert_eq!(parse_snapshot_id(&id), Some((1_795_773_600, "pre-update")));
        for bad in [
            "",
            "manual",
            "2026-11-27T10-00-00Z",
            "2026-11-27T10-00-00Z-",
            "x/../y",
        ] {
            assert!(parse_snapshot_id(bad).is_none(), "{bad}");
        }
        assert!(check_reason("Manual").is_err());
        assert!(check_reason("pre update").is_err());
        assert!(check_reason("1st").is_err());
    }

    #[test]
    fn kept_names() {
        let k = kept_name("my-dev", 0);
        assert_eq!(k, "my-dev.1970-01-01T00-00-00Z");
        assert_eq!(parse_kept_name(&k), Some(("my-dev", 0)));
        assert_eq!(parse_kept_name("My.1970-01-01T00-00-00Z"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), Some(10 << 30));
        assert_eq!(parse_size("10g").unwrap(), Some(10 << 30));
        assert_eq!(parse_size("1.5K").unwrap(), Some(1536));
        assert_eq!(parse_size("512MiB").unwrap(), Some(512 << 20));
        assert_eq!(parse_size("100").unwrap(), Some(100));
        assert_eq!(parse_size("100B").unwrap(), Some(100));
        assert_eq!(parse_size("none").unwrap(), None);
        assert_eq!(parse_size("0").unwrap(), None);
        assert_eq!(parse_size("15E").unwrap(), Some(15 << 60));
        for bad in ["", "G", "16E", "1.G", "-1G", "10X", "1 0G", "10iB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 << 30), "10.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
