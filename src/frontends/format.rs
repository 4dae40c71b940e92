//! Small formatting helpers shared by the front ends.

/// A UTC date (`2026-12-08`) for seconds since the epoch; `until purged`
/// for `u64::MAX` (what storage uses for "no expiry").
pub fn date(secs: u64) -> String {
    if secs == u64::MAX {
        return "until purged".into();
    }
    // Days since the epoch → a civil date (UTC), enough for people to read.
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// An SSH key as `SHA256:... comment`, from the daemon's key JSON.
pub fn key_label(k: &serde_json::Value) -> String {
    format!(
        "{} {}",
        k["fingerprint"].as_str().unwrap_or("-"),
        k["comment"].as_str().unwrap_or("")
    )
    .trim()
    .to_string()
}

/// The strings of the array `v[key]` (none when it is not one).
pub fn strings_at(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// A container's exposed ports as one line (`8080 on host port 20000,
/// 3000 on the tailnet`), from its status JSON; None when none are.
pub fn exposed_ports(status: &serde_json::Value) -> Option<String> {
    let ports = status["exposed"].as_array()?;
    if ports.is_empty() {
        return None;
    }
    let parts: Vec<String> = ports
        .iter()
        .map(|e| {
            let port = e["port"].as_u64().unwrap_or(0);
            let mut t = match e["host_port"].as_u64() {
                Some(h) => format!("{port} on host port {h}"),
                None => format!("{port} on the tailnet"),
            };
            if e["pending_restart"] == serde_json::Value::Bool(true) {
                t.push_str(" (from the next restart)");
            }
            t
        })
        .collect();
    Some(parts.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(1_796_169_600), "2026-12-02");
        assert_eq!(super::date(u64::MAX), "until purged");
    }
}
