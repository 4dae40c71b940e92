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
    let none = Vec::new();
    let ports = status["exposed"].as_array().unwrap_or(&none);
    let lingering = status["forwarded_until_restart"]
        .as_array()
        .unwrap_or(&none);
    if ports.is_empty() && lingering.is_empty() {
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
        .chain(lingering.iter().map(|e| {
            format!(
                "host port {} no longer exposed (forwarded to {} until the next restart)",
                e["host_port"].as_u64().unwrap_or(0),
                e["port"].as_u64().unwrap_or(0)
            )
        }))
        .collect();
    Some(parts.join(", "))
}

/// A UTC date and time to the minute (`2026-12-08 14:05 UTC`).
pub fn date_time(secs: u64) -> String {
    if secs == u64::MAX {
        return date(secs);
    }
    let in_day = secs % 86_400;
    format!(
        "{} {:02}:{:02} UTC",
        date(secs),
        in_day / 3600,
        (in_day % 3600) / 60
    )
}

/// One checkpoint as a line: `3  2026-12-02 18:04 UTC  unix:1000  before
/// update: git → git, fish`.
pub fn checkpoint_line(c: &serde_json::Value) -> String {
    format!(
        "{:>3}  {}  {}  {}",
        c["id"].as_u64().unwrap_or(0),
        date_time(c["at"].as_u64().unwrap_or(0)),
        c["by"].as_str().unwrap_or("-"),
        c["why"].as_str().unwrap_or("-"),
    )
}

/// What an undo will do (from the daemon's plan), in words.
pub fn undo_plan(plan: &serde_json::Value) -> String {
    let t = &plan["target"];
    let name = plan["name"].as_str().unwrap_or("-");
    let mut out = format!(
        "{name} goes back to checkpoint {} ({}, {}).",
        t["id"].as_u64().unwrap_or(0),
        date_time(t["at"].as_u64().unwrap_or(0)),
        t["why"].as_str().unwrap_or("-")
    );
    let (now, then) = (
        strings_at(plan, "modules_now"),
        strings_at(plan, "modules_then"),
    );
    let words = |m: &[String]| {
        if m.is_empty() {
            "no modules".to_string()
        } else {
            m.join(", ")
        }
    };
    if now == then {
        out.push_str(&format!(" Modules stay: {}.", words(&now)));
    } else {
        out.push_str(&format!(
            " Modules: {} → {} (its system switches back).",
            words(&now),
            words(&then)
        ));
    }
    if plan["workspace"] == serde_json::Value::Bool(true) {
        out.push_str(" Its /workspace goes back to how it was then.");
    }
    if plan["restarts"] == serde_json::Value::Bool(true) {
        out.push_str(" It is stopped for this and started again.");
    }
    out.push_str(" What it is now is kept as a checkpoint first, so this can be undone too.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_796_169_600), "2026-12-02");
        assert_eq!(date(u64::MAX), "until purged");
        assert_eq!(
            date_time(1_796_169_600 + 13 * 3600 + 5 * 60 + 59),
            "2026-12-02 13:05 UTC"
        );
    }

    #[test]
    fn an_undo_plan_says_what_changes() {
        let plan = serde_json::json!({
            "name": "dev",
            "target": {"id": 2, "at": 86_400 + 3_660, "why": "before update: git → git, fish"},
            "modules_now": ["git", "fish"],
            "modules_then": ["git"],
            "workspace": true,
            "restarts": true,
        });
        let t = undo_plan(&plan);
        assert!(t.starts_with("dev goes back to checkpoint 2 (1970-01-02 01:01 UTC, before update: git → git, fish)."), "{t}");
        assert!(t.contains("Modules: git, fish → git"), "{t}");
        assert!(t.contains("/workspace goes back"), "{t}");
        assert!(t.contains("stopped for this"), "{t}");
        let same = serde_json::json!({
            "name": "dev", "target": {"id": 1, "at": 0, "why": "x"},
            "modules_now": [], "modules_then": [], "workspace": false, "restarts": false,
        });
        let t = undo_plan(&same);
        assert!(t.contains("Modules stay: no modules."), "{t}");
        assert!(!t.contains("workspace") && !t.contains("stopped"), "{t}");
    }
}
