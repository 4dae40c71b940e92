//! Sizes in specs: bytes as `2G`, `1.5T`, `512M` (binary units, case-insensitive,
//! an optional `B`/`iB`), read by [`parse_size`] and written back by
//! [`format_size`] so that what is written reads back.

use super::show;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = KIB * 1024;
pub(super) const GIB: u64 = MIB * 1024;
pub(super) const TIB: u64 = GIB * 1024;

/// Units accepted by [`parse_size`] and used by [`format_size`], smallest first.
const UNITS: [(char, u64); 6] = [
    ('K', KIB),
    ('M', MIB),
    ('G', GIB),
    ('T', TIB),
    ('P', TIB * 1024),
    ('E', TIB * 1024 * 1024),
];

/// Parses a size in bytes.
///
/// Accepted: ASCII digits, optionally followed by a unit. Units are powers
/// of 1024, as in systemd's `MemoryMax=`: `K`, `M`, `G`, `T`, `P`, `E`, each
/// optionally followed by `B` or `iB` (`2G`, `2GB` and `2GiB` are all 2×1024³
/// bytes); a lone `B` means bytes. Units are case-insensitive. With a unit of
/// `K` or larger the number may have up to 9 decimal places (`1.5G`); the
/// result is rounded down to a whole byte. No signs, no whitespace, no
/// exponents, no thousands separators. Values above `u64::MAX` bytes are
/// rejected.
///
/// The error is a sentence fragment describing what is wrong with `s`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const FRACTION_DIGITS_MAX: usize = 9;
    if s.is_empty() {
        return Err("the size is empty".into());
    }
    let int_end = digit_run(s);
    if int_end == 0 {
        return Err(if s.starts_with('-') {
            "a size cannot be negative".into()
        } else {
            format!("\"{}\" does not start with a number", show(s))
        });
    }
    // Everything before `int_end` is ASCII, so the slices below are on char
    // boundaries.
    let int_part = &s[..int_end];
    let mut rest = &s[int_end..];
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let end = digit_run(after_dot);
        if end == 0 {
            return Err("expected digits after the decimal point".into());
        }
        fraction = &after_dot[..end];
        rest = &after_dot[end..];
    }
    let multiplier = unit_multiplier(rest).ok_or_else(|| {
        format!(
            "unknown unit \"{}\"; use K, M, G, T, P or E (powers of 1024), optionally \
             followed by B or iB, like \"512M\" or \"2GiB\"",
            show(rest)
        )
    })?;
    if !fraction.is_empty() && multiplier == 1 {
        return Err(
            "a byte count must be a whole number; use a unit (like \"1.5G\") for a fraction".into(),
        );
    }
    if fraction.len() > FRACTION_DIGITS_MAX {
        return Err(format!(
            "at most {FRACTION_DIGITS_MAX} decimal places are allowed"
        ));
    }

    let too_large = || "too large: the largest size is 16E (2^64 - 1 bytes)".to_string();
    let significant = int_part.trim_start_matches('0');
    // 20 digits already exceed u64::MAX once multiplied by any unit but "B";
    // anything longer cannot fit at all.
    if significant.len() > 20 {
        return Err(too_large());
    }
    let whole = digits_value(significant).ok_or_else(too_large)?;
    let mult = u128::from(multiplier);
    let mut total = whole.checked_mul(mult).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        // fraction < 10^9 and mult <= 2^60, so this cannot overflow u128.
        let numerator = digits_value(fraction).ok_or_else(too_large)?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| too_large())?);
        total = total
            .checked_add(numerator * mult / denominator)
            .ok_or_else(too_large)?;
    }
    u64::try_from(total).map_err(|_| too_large())
}

/// Formats a byte count for people, the way `du -h` does: below 1024 as
/// bytes (`"1023B"`); otherwise in the largest unit (K, M, G, T, P, E; powers
/// of 1024) that keeps the number at least 1, with one decimal below 10
/// (`"2.0G"`, `"1.5K"`) and none from 10 on (`"512M"`). Rounded to the
/// nearest shown digit, so the result is within 5% of `bytes`; it can be read
/// back with [`parse_size`].
pub fn format_size(bytes: u64) -> String {
    if bytes < KIB {
        return format!("{bytes}B");
    }
    let value = u128::from(bytes);
    let mut index = UNITS.iter().rposition(|&(_, m)| bytes >= m).unwrap_or(0);
    loop {
        let (letter, m) = UNITS[index];
        let m = u128::from(m);
        let tenths = (value * 10 + m / 2) / m;
        if tenths < 100 {
            return format!("{}.{}{letter}", tenths / 10, tenths % 10);
        }
        let whole = (value + m / 2) / m;
        if whole >= 1024 && index + 1 < UNITS.len() {
            // Rounded up to the next unit ("1024M" reads better as "1.0G").
            index += 1;
            continue;
        }
        return format!("{whole}{letter}");
    }
}

/// Length in bytes of the leading run of ASCII digits.
pub(super) fn digit_run(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// The value of a string of ASCII digits (empty is 0), if it fits in u128.
pub(super) fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?
            .checked_add(u128::from(b.checked_sub(b'0')?))
    })
}

/// The multiplier for a unit suffix of [`parse_size`], or None if unknown.
fn unit_multiplier(unit: &str) -> Option<u64> {
    if unit.is_empty() || unit.eq_ignore_ascii_case("b") {
        return Some(1);
    }
    let mut chars = unit.chars();
    let letter = chars.next()?.to_ascii_uppercase();
    let tail = chars.as_str();
    if !(tail.is_empty() || tail.eq_ignore_ascii_case("b") || tail.eq_ignore_ascii_case("ib")) {
        return None;
    }
    UNITS.iter().find(|&&(l, _)| l == letter).map(|&(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- parse_size / format_size --------------------------------------

    #[test]
    fn parse_size_accepts() {
        for (s, n) in [
            ("0", 0),
            ("1048576", MIB),
            ("1023B", 1023),
            ("1b", 1),
            ("1K", KIB),
            ("1k", KIB),
            ("1KB", KIB),
            ("1KiB", KIB),
            ("1kib", KIB),
            ("512M", 512 * MIB),
            ("2G", 2 * GIB),
            ("2GiB", 2 * GIB),
            ("1T", TIB),
            ("1P", TIB * 1024),
            ("15E", 15 * TIB * 1024 * 1024),
            ("1.5K", 1536),
            ("0.5G", GIB / 2),
            ("2.0G", 2 * GIB),
            ("0.001K", 1),
            ("007M", 7 * MIB),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615B", u64::MAX),
            ("0000000000000000000000000001K", KIB),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
    }

    #[test]
    fn parse_size_rejects() {
        for (s, says) in [
            ("", "empty"),
            ("-1", "negative"),
            ("+1", "does not start with a number"),
            (" 1G", "does not start with a number"),
            ("1G ", "unknown unit"),
            ("1 G", "unknown unit"),
            ("1X", "unknown unit"),
            ("1GG", "unknown unit"),
            ("1Gi", "unknown unit"),
            ("1e3", "unknown unit"),
            ("1,000", "unknown unit"),
            ("1.", "digits after the decimal point"),
            (".5G", "does not start with a number"),
            ("1.5", "whole number"),
            ("1.5B", "whole number"),
            ("1.0000000001G", "decimal places"),
            ("16E", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999999999999999999999999999", "too large"),
            ("٣G", "does not start with a number"),
            ("3٣", "unknown unit"),
            ("3G\u{301}", "unknown unit"),
        ] {
            let e = parse_size(s).expect_err(s);
            assert!(e.contains(says), "{s:?}: {e}");
        }
    }

    #[test]
    fn format_size_examples() {
        for (n, s) in [
            (0, "0B"),
            (1023, "1023B"),
            (1024, "1.0K"),
            (1536, "1.5K"),
            (10 * KIB, "10K"),
            (512 * MIB, "512M"),
            (2 * GIB, "2.0G"),
            (3 * GIB / 2, "1.5G"),
            (MIB - 1, "1.0M"),
            (1023 * MIB + MIB / 2, "1.0G"),
            (16 * TIB, "16T"),
            (u64::MAX, "16E"),
        ] {
            assert_eq!(format_size(n), s, "{n}");
        }
    }
}
