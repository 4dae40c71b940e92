//! `voxnix storage ...`, `voxnix snapshot`, `voxnix snapshots`, `voxnix restore`:
//! the persistent workspaces, through the daemon's API.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::containers::{Global, connect, fail, print_json_or};

#[derive(Debug, Clone, Subcommand)]
pub enum StorageCommand {
    /// Storage used, in total and per container.
    Usage,
    /// Workspaces kept from destroyed containers.
    Kept,
    /// Delete the kept workspace of a destroyed container, for good.
    Purge { name: String },
    /// Put the kept workspace of an earlier container of this name into the container.
    RestoreKept {
        name: String,
        /// The destroyed container whose kept workspace to take, when it is
        /// not NAME (e.g. someone else has that name now).
        #[arg(long, value_name = "OLD_NAME")]
        from: Option<String>,
    },
}

pub async fn storage(g: &Global, cmd: StorageCommand) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match cmd {
        StorageCommand::Usage => match m.storage_usage(&g.owner).await {
            Ok(text) => print_json_or(g, &text, |v| {
                println!(
                    "{}: {}",
                    v["owner"].as_str().unwrap_or("-"),
                    v["human"].as_str().unwrap_or("-")
                );
                for c in v["containers"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<12} {}",
                        c["name"].as_str().unwrap_or("-"),
                        c["human"].as_str().unwrap_or("-")
                    );
                    if let Some(why) = c["schedule_failed"].as_str() {
                        println!("  {:<12} scheduled snapshot not taken: {why}", "");
                    }
                }
                if let Some(s) = v["snapshot_schedule"].as_str().filter(|s| *s != "off") {
                    println!("Scheduled snapshots: {s}");
                }
            }),
            Err(e) => fail(&e),
        },
        StorageCommand::Kept => match m.kept(&g.owner).await {
            Ok(text) => print_json_or(g, &text, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("Nothing is kept.");
                }
                for k in rows {
                    let expires = k["expires"].as_u64().unwrap_or(0);
                    let until = if expires == u64::MAX {
                        "until purged".to_string()
                    } else {
                        format!("until {}", crate::frontends::format::date(expires))
                    };
                    println!(
                        "{:<12} {}  kept {until}",
                        k["container"].as_str().unwrap_or("-"),
                        k["id"].as_str().unwrap_or("-")
                    );
                }
            }),
            Err(e) => fail(&e),
        },
        StorageCommand::Purge { name } => match m.purge(&name, &g.owner).await {
            Ok(_) => {
                println!("kept workspace of {name} deleted");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        StorageCommand::RestoreKept { name, from } => match match &from {
            Some(f) => m.restore_kept_from(&name, f, &g.owner).await,
            None => m.restore_kept(&name, &g.owner).await,
        } {
            Ok(()) => {
                match &from {
                    Some(f) => println!("{name}: the kept workspace of {f} restored into it"),
                    None => println!("{name}: kept workspace restored"),
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

pub async fn snapshot(g: &Global, name: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.snapshot(name, &g.owner).await {
        Ok(text) => print_json_or(g, &text, |v| {
            println!("snapshot {} of {name}", v["id"].as_str().unwrap_or("-"))
        }),
        Err(e) => fail(&e),
    }
}

pub async fn snapshots(g: &Global, name: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.snapshots(name, &g.owner).await {
        Ok(text) => print_json_or(g, &text, |v: &Value| {
            for s in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {}",
                    s["id"].as_str().unwrap_or("-"),
                    s["reason"].as_str().unwrap_or("-")
                );
            }
        }),
        Err(e) => fail(&e),
    }
}

/// `voxnix schedule NAME [TIERS|off|default]`.
pub async fn schedule(g: &Global, name: &str, set: Option<&str>) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let shown = |v: &Value| {
        let s = v["schedule"].as_str().unwrap_or("off");
        let whose = match v["whose"].as_str().or(v["whose_schedule"].as_str()) {
            Some("container") => "its own",
            Some("owner") => "yours, for all your containers",
            _ => "the host's default",
        };
        println!("{name}: scheduled snapshots {s} ({whose})");
    };
    match set {
        Some(text) => match m.set_schedule(name, &g.owner, text).await {
            Ok(out) => print_json_or(g, &out, shown),
            Err(e) => fail(&e),
        },
        None => match m.storage_usage(&g.owner).await {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let Some(c) = v["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["name"] == name)
                else {
                    eprintln!("voxnix: NotFound: no container '{name}' with a workspace of yours");
                    return ExitCode::from(super::containers::exit_code_for("NotFound"));
                };
                print_json_or(g, &c.to_string(), shown)
            }
            Err(e) => fail(&e),
        },
    }
}

/// `voxnix schedule --all [TIERS|off|default]`: the acting owner's.
pub async fn owner_schedule(g: &Global, set: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let shown = |v: &Value| {
        let s = v["schedule"].as_str().unwrap_or("off");
        let whose = if v["own"] == Value::Bool(true) {
            "yours"
        } else {
            "the host's default"
        };
        println!(
            "your containers without a schedule of their own: scheduled snapshots {s} ({whose})"
        );
    };
    if set.is_empty() {
        return match m.storage_usage(&g.owner).await {
            Ok(text) => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                print_json_or(g, &v["owner_schedule"].to_string(), shown)
            }
            Err(e) => fail(&e),
        };
    }
    match m.set_owner_schedule(&g.owner, set).await {
        Ok(out) => print_json_or(g, &out, shown),
        Err(e) => fail(&e),
    }
}

pub async fn restore_path(
    g: &Global,
    name: &str,
    id: &str,
    path: &str,
    to: Option<&str>,
) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m
        .restore_path(name, &g.owner, id, path, to.unwrap_or(""))
        .await
    {
        Ok(out) => print_json_or(g, &out, |v| {
            println!(
                "{name}: {} is back from {id} as {} ({} files, {} bytes); nothing else changed",
                v["path"].as_str().unwrap_or(path),
                v["to"].as_str().unwrap_or(path),
                v["files"].as_u64().unwrap_or(0),
                v["bytes"].as_u64().unwrap_or(0),
            );
        }),
        Err(e) => fail(&e),
    }
}

pub async fn restore(g: &Global, name: &str, id: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.restore_snapshot(name, &g.owner, id).await {
        Ok(()) => {
            println!("{name}: workspace restored from {id}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
