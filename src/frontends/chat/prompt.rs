//! The system prompt, rebuilt for every request from fresh facts.

use std::fmt::Write;

use super::api::{ApiFailure, ContainerInfo, ModuleInfo};

/// What is true right now, fetched before each turn.
#[derive(Debug, Clone)]
pub struct Facts {
    pub containers: Result<Vec<ContainerInfo>, ApiFailure>,
    pub modules: Result<Vec<ModuleInfo>, ApiFailure>,
    /// Storage use, when the daemon reports it.
    pub storage: Option<String>,
    pub admin: bool,
    /// Where the conversation happens: "Telegram" or "the terminal".
    pub surface: &'static str,
    /// How the person confirms a destroy there.
    pub confirm_how: &'static str,
}

/// The prompt for one request.
pub fn system_prompt(f: &Facts) -> String {
    let mut p = String::with_capacity(2048);
    p.push_str(
        "You are voxnix, the assistant of a small self-hosted server that runs personal NixOS containers. \
         You help one person manage their own containers, using the tools. You talk with them in ",
    );
    p.push_str(f.surface);
    p.push_str(
        ".\n\nFacts right now (refreshed for every message; trust these over older messages):\n",
    );
    let _ = writeln!(
        p,
        "- Time: {} seconds since the Unix epoch.",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    match &f.containers {
        Ok(list) if list.is_empty() => p.push_str("- Their containers: none yet.\n"),
        Ok(list) => {
            p.push_str("- Their containers:\n");
            for c in list {
                let addr = if c.addresses.is_empty() {
                    "no address".to_string()
                } else {
                    c.addresses.join(", ")
                };
                let mods = if c.modules.is_empty() {
                    "no modules".to_string()
                } else {
                    c.modules.join(", ")
                };
                let _ = writeln!(p, "  - {}: {}, {}; modules: {}", c.name, c.state, addr, mods);
            }
        }
        Err(_) => p.push_str("- Their containers: unknown right now (the service did not answer); use list_containers.\n"),
    }
    match &f.modules {
        Ok(m) if m.is_empty() => p.push_str("- Modules: none are available.\n"),
        Ok(m) => {
            p.push_str("- Modules a container can be built from:\n");
            for m in m {
                match &m.description {
                    Some(d) => {
                        let _ = writeln!(p, "  - {}: {}", m.name, d);
                    }
                    None => {
                        let _ = writeln!(p, "  - {}", m.name);
                    }
                }
            }
        }
        Err(_) => p.push_str("- Modules: unknown right now; use list_modules.\n"),
    }
    match &f.storage {
        Some(s) => {
            let _ = writeln!(p, "- Storage: {s}");
        }
        None => p.push_str("- Storage: this server does not report storage use yet.\n"),
    }
    if f.admin {
        p.push_str("- This person is an administrator of the server: host_health is available.\n");
    }
    p.push_str(
        "\nRules:\n\
         - Act only through the tools. Never say something happened unless a tool result says so.\n\
         - You can see and manage only this person's containers; the server enforces it. A container that is not found does not exist among theirs.\n\
         - Container names: 1-11 characters, lowercase letters, digits and '-', starting and ending with a letter or digit. If they give no name, pick a short fitting one.\n\
         - Use only module names from the list above.\n\
         - To destroy, call destroy_container. That only shows them a confirmation; ",
    );
    p.push_str(f.confirm_how);
    p.push_str(
        " Never claim a container is destroyed before a later message or the facts show it.\n\
         - When a change went wrong (an update, a command that broke something), list_checkpoints shows what voxnix recorded before each change, and undo_changes asks the person to go back to one; like a destroy, only they can confirm it.\n\
         - When a tool fails, tell them in one or two plain sentences what failed and what they can do. You may retry once if the error says exactly what to fix.\n\
         - After a create, tell the container's name, state and address.\n\
         - Be brief. Plain text only: no Markdown, no asterisks, no backticks, no headings; lists with \"- \".\n\
         - Commands that always work without you: /list, /create NAME [MODULE...], /start, /stop, /restart, /destroy, /status, /logs NAME [N], /history NAME, /undo NAME [ID], /modules, /storage, /reset, /help.\n",
    );
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontends::chat::api::ErrorKind;

    #[test]
    fn facts_are_in_the_prompt() {
        let f = Facts {
            containers: Ok(vec![ContainerInfo {
                name: "dev".into(),
                state: "running".into(),
                addresses: vec!["10.100.0.150".into()],
                modules: vec!["git".into()],
            }]),
            modules: Ok(vec![ModuleInfo {
                name: "fish".into(),
                description: Some("the fish shell".into()),
            }]),
            storage: None,
            admin: false,
            surface: "Telegram",
            confirm_how: "only they can confirm, by pressing its button.",
        };
        let p = system_prompt(&f);
        assert!(
            p.contains("dev: running, 10.100.0.150; modules: git"),
            "{p}"
        );
        assert!(p.contains("fish: the fish shell"));
        assert!(!p.contains("host_health"));
        let f = Facts {
            containers: Err(ApiFailure::new(ErrorKind::Unreachable, "x")),
            admin: true,
            ..f
        };
        let p = system_prompt(&f);
        assert!(p.contains("unknown right now") && p.contains("host_health"));
    }
}
