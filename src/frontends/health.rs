//! The host's health (the daemon's `HostHealth` JSON) as a person reads it:
//! what is fine, what is not, and what to do. Shared by the CLI and the chat;
//! JSON stays for `--json` and the agent.

use serde_json::Value;

/// A short report: a headline, then one line per check (✅ fine, ⚠️ needs
/// attention, with what to do), then what voxnix leaves alone.
pub fn report(v: &Value) -> String {
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let mut fine = Vec::new();
    let mut wrong = Vec::new();
    match v["systemd_version"].as_str() {
        Some(ver) => fine.push(format!("systemd {ver} answers")),
        None => wrong.push(
            "systemd did not say its version: the daemon may not reach it; see `journalctl -u voxnix`"
                .to_string(),
        ),
    }
    if v["machined_reachable"].as_bool() == Some(true) {
        fine.push("systemd-machined answers".into());
    } else {
        wrong.push(
            "systemd-machined does not answer: containers cannot be listed or started; \
             check `systemctl status systemd-machined`"
                .into(),
        );
    }
    let count = v["containers"].as_u64().unwrap_or(0);
    fine.push(format!(
        "{count} container{}",
        if count == 1 { "" } else { "s" }
    ));
    let in_flight = list("in_flight");
    if !in_flight.is_empty() {
        fine.push(format!("in progress: {}", in_flight.join(", ")));
    }
    let group = v["frontend_group"].as_str().unwrap_or("voxnix");
    match v["frontend_group_exists"].as_bool() {
        Some(true) => fine.push(format!("front-end group '{group}' exists")),
        Some(false) => wrong.push(format!(
            "the front-end group '{group}' does not exist: the Telegram bot cannot call voxnix; \
             create it (services.voxnix does on NixOS), then `systemctl reload dbus` so the bus \
             policy applies to it"
        )),
        None => {}
    }
    let sys = &v["systems"];
    if sys.is_object() {
        let c = &sys["cache"];
        let n = |x: &Value| x.as_u64().unwrap_or(0);
        if sys["enabled"] == Value::Bool(false) {
            wrong.push(
                "the system cache is off: the module library could not be read at start; see `journalctl -u voxnix`"
                    .into(),
            );
        } else {
            fine.push(format!(
                "system cache: {} system{} ({} in use), unused ones kept {} day{}, at most {}; {} evaluation{} and {} build{} since the start",
                n(&c["entries"]),
                if n(&c["entries"]) == 1 { "" } else { "s" },
                n(&c["in_use"]),
                n(&c["keep_days"]),
                if n(&c["keep_days"]) == 1 { "" } else { "s" },
                n(&c["max_entries"]),
                n(&sys["evaluations"]),
                if n(&sys["evaluations"]) == 1 { "" } else { "s" },
                n(&sys["builds"]),
                if n(&sys["builds"]) == 1 { "" } else { "s" },
            ));
        }
    }
    for p in list("conf_problems") {
        wrong.push(p);
    }
    for r in list("unreadable_records") {
        wrong.push(format!(
            "unreadable record {r}: voxnix ignores that container until the file is fixed or moved away"
        ));
    }
    let unmanaged = list("unmanaged");

    let mut t = if wrong.is_empty() {
        String::from("Host health: all fine.\n")
    } else {
        format!(
            "Host health: {} thing{} need{} attention.\n",
            wrong.len(),
            if wrong.len() == 1 { "" } else { "s" },
            if wrong.len() == 1 { "s" } else { "" }
        )
    };
    for w in &wrong {
        t.push_str(&format!("⚠️ {w}\n"));
    }
    for f in &fine {
        t.push_str(&format!("✅ {f}\n"));
    }
    if !unmanaged.is_empty() {
        t.push_str(&format!(
            "Not voxnix's, left alone: {}\n",
            unmanaged.join(", ")
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_host_says_so_in_words() {
        let v = serde_json::json!({
            "systemd_version": "252", "machined_reachable": true, "containers": 2,
            "in_flight": [], "unmanaged": [], "unreadable_records": [], "conf_problems": [],
            "frontend_group": "voxnix", "frontend_group_exists": true
        });
        let r = report(&v);
        assert!(r.starts_with("Host health: all fine."), "{r}");
        assert!(r.contains("✅ 2 containers"), "{r}");
        assert!(!r.contains('{') && !r.contains("machined_reachable"), "{r}");
    }

    #[test]
    fn problems_come_first_with_what_to_do() {
        let v = serde_json::json!({
            "machined_reachable": false, "containers": 1,
            "unmanaged": ["conf /etc/nixos-containers/web.conf"],
            "unreadable_records": ["/var/lib/voxnix/containers/x.json: bad"],
            "conf_problems": ["'dev' has no conf file"],
            "frontend_group": "voxnix", "frontend_group_exists": false
        });
        let r = report(&v);
        assert!(
            r.starts_with("Host health: 5 things need attention."),
            "{r}"
        );
        let first_ok = r.find("✅").unwrap_or(r.len());
        for w in [
            "systemd-machined",
            "'dev' has no conf file",
            "x.json",
            "front-end group",
            "version",
        ] {
            let at = r.find(w).unwrap_or_else(|| panic!("{w} missing: {r}"));
            assert!(at < first_ok, "{w} among the problems: {r}");
        }
        assert!(r.contains("systemctl reload dbus"), "{r}");
        assert!(r.contains("Not voxnix's, left alone: conf /etc/nixos-containers/web.conf"));
    }
}
