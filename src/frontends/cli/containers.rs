//! The container verbs of the CLI: thin clients of the daemon's D-Bus API.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;

use crate::api::client::{ManagerProxy, error_parts};

use super::exit;

/// Options every container verb takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Act for this owner (e.g. telegram:123). Root may name anyone; front-end
    /// group members must name an owner they are allowed to act for.
    #[arg(long = "as", value_name = "OWNER", global = true, default_value = "")]
    pub owner: String,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// D-Bus address of the bus the daemon is on (default: the system bus).
    #[arg(
        long,
        global = true,
        env = "VOXNIX_BUS_ADDRESS",
        value_name = "ADDRESS",
        hide_short_help = true
    )]
    pub bus: Option<String>,
    /// Log what voxnix does to standard error (-v: info, -vv: debug); also
    /// VOXNIX_LOG or RUST_LOG (e.g. VOXNIX_LOG=debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Container name: lowercase letters, digits and '-', at most 11 characters.
    pub name: String,
    /// Modules from the library (see `voxnix modules`).
    pub modules: Vec<String>,
    /// No persistent /workspace.
    #[arg(long)]
    pub no_workspace: bool,
    /// Memory limit, e.g. 2G.
    #[arg(long, value_name = "SIZE")]
    pub memory_max: Option<String>,
    /// CPU weight, 1-10000 (exclusive with --cpu-quota).
    #[arg(long, value_name = "N")]
    pub cpu_weight: Option<u64>,
    /// CPU quota in percent of one CPU, e.g. 150%.
    #[arg(long, value_name = "PERCENT")]
    pub cpu_quota: Option<String>,
    /// Most tasks (processes and threads) at once.
    #[arg(long, value_name = "N")]
    pub tasks_max: Option<u64>,
}

/// Maps a voxnix D-Bus error to an exit code, so scripts can tell failures apart.
pub fn exit_code_for(kind: &str) -> u8 {
    match kind {
        "InvalidArgument" => exit::USAGE,
        "HostError" => exit::HOST,
        "NotFound" => 4,
        "Conflict" => 5,
        "AccessDenied" => 6,
        "BuildFailed" => 7,
        "QuotaExceeded" => 8,
        "Busy" => 9,
        "Timeout" => 10,
        _ => exit::UNREACHABLE,
    }
}

/// Prints a failed operation's error and gives its exit code; None when it
/// succeeded.
fn operation_failed(outcome: &Value) -> Option<ExitCode> {
    if outcome["ok"] == Value::Bool(true) {
        return None;
    }
    let kind = outcome["error_kind"].as_str().unwrap_or("HostError");
    eprintln!(
        "voxnix: {kind}: {}",
        outcome["error_message"].as_str().unwrap_or("")
    );
    Some(ExitCode::from(exit_code_for(kind)))
}

pub fn fail(e: &zbus::Error) -> ExitCode {
    let (kind, msg) = error_parts(e);
    if kind == "BusError" || kind == "ServiceUnknown" || kind == "NameHasNoOwner" {
        eprintln!("voxnix: cannot reach the voxnix daemon ({kind}): {msg}");
        return ExitCode::from(exit::UNREACHABLE);
    }
    if kind == "NoReply" && msg.contains("disconnected") {
        // The daemon left the bus with this call in hand (it crashed or lost
        // its connection; systemd restarts it).
        eprintln!(
            "voxnix: the voxnix daemon went away before answering (it restarts by itself); the request may or may not have been carried out: check with `voxnix list` or `voxnix status NAME`"
        );
        return ExitCode::from(exit::UNREACHABLE);
    }
    if kind == "AccessDenied" && msg.contains("Rejected send message") {
        eprintln!(
            "voxnix: AccessDenied: the bus refused the call; only root and members of the voxnix group may use voxnix"
        );
        return ExitCode::from(6);
    }
    eprintln!("voxnix: {kind}: {msg}");
    ExitCode::from(exit_code_for(&kind))
}

pub async fn connect(g: &Global) -> Result<ManagerProxy<'static>, ExitCode> {
    let builder = match &g.bus {
        Some(a) => zbus::connection::Builder::address(a.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let conn = match builder.build().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voxnix: cannot connect to the bus: {e}");
            return Err(ExitCode::from(exit::UNREACHABLE));
        }
    };
    ManagerProxy::new(&conn).await.map_err(|e| fail(&e))
}

/// Prints `text` as is with --json, else gives its parsed JSON to `human`.
pub fn print_json_or(g: &Global, text: &str, human: impl FnOnce(&Value)) -> ExitCode {
    if g.json {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    match parse_json(text) {
        Ok(v) => {
            human(&v);
            ExitCode::SUCCESS
        }
        Err(c) => c,
    }
}

fn parse_json(text: &str) -> Result<Value, ExitCode> {
    serde_json::from_str(text).map_err(|e| {
        eprintln!("voxnix: the daemon sent something that is not JSON: {e}");
        ExitCode::from(exit::HOST)
    })
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:w$}", c, w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

pub async fn list(g: &Global) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let text = match m.list(&g.owner).await {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    if g.json {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    let Ok(v) = parse_json(&text) else {
        return ExitCode::from(exit::HOST);
    };
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    vec![
                        s(c, "name"),
                        s(c, "state"),
                        s(c, "owner"),
                        s(c, "addresses"),
                        s(c, "modules"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        println!("No containers.");
    } else {
        print_table(&["NAME", "STATE", "OWNER", "ADDRESSES", "MODULES"], &rows);
    }
    for c in v.as_array().into_iter().flatten() {
        if let Some(note) = conf_note(c) {
            println!("{note}");
        }
    }
    ExitCode::SUCCESS
}

/// What a person reads about a container whose conf file was removed or
/// replaced outside voxnix (`conf` in List and Status), if it was.
fn conf_note(c: &Value) -> Option<String> {
    let name = c["name"].as_str().unwrap_or("?");
    match c["conf"].as_str()? {
        "missing" => Some(format!(
            "{name}: its conf file was removed outside voxnix (e.g. nixos-container destroy); \
             it will not start: `voxnix repair {name}` writes it again, `voxnix destroy {name}` removes it"
        )),
        "foreign" => Some(format!(
            "{name}: its conf file is another tool's (not written by voxnix); it will not \
             start: remove that file or container, then `voxnix repair {name}`; or `voxnix destroy {name}`"
        )),
        _ => None,
    }
}

pub async fn create(g: &Global, a: CreateArgs) -> ExitCode {
    let mut spec = serde_json::json!({ "name": a.name, "modules": a.modules });
    if a.no_workspace {
        spec["workspace"] = Value::Bool(false);
    }
    if let Some(m) = a.memory_max {
        spec["memory_max"] = Value::String(m);
    }
    if let Some(w) = a.cpu_weight {
        spec["cpu_weight"] = Value::from(w);
    }
    if let Some(q) = a.cpu_quota {
        spec["cpu_quota"] = Value::String(q);
    }
    if let Some(t) = a.tasks_max {
        spec["tasks_max"] = Value::from(t);
    }
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    // Subscribe before calling, so no progress or end can be missed.
    let (progress, finished) = tokio::join!(
        m.receive_operation_progress(),
        m.receive_operation_finished()
    );
    let (Ok(progress), Ok(finished)) = (progress, finished) else {
        eprintln!("voxnix: cannot subscribe to the daemon's signals");
        return ExitCode::from(exit::UNREACHABLE);
    };
    let op = match m.create(&spec.to_string(), &g.owner).await {
        Ok(op) => op,
        Err(e) => return fail(&e),
    };
    let outcome = wait_operation(&m, g, &op, progress, finished).await;
    if let Some(code) = operation_failed(&outcome) {
        return code;
    }
    let result = &outcome["result"];
    if g.json {
        println!("{result}");
    } else {
        println!(
            "{} is {} ({})",
            s(result, "name"),
            s(result, "state"),
            s(result, "addresses")
        );
    }
    ExitCode::SUCCESS
}

/// Follows an operation (create, update) until it ends: progress lines on
/// stderr, the end from its signal, with GetOperation as a safety net.
async fn wait_operation(
    m: &ManagerProxy<'_>,
    g: &Global,
    op: &str,
    mut progress: crate::api::client::OperationProgressStream,
    mut finished: crate::api::client::OperationFinishedStream,
) -> Value {
    let show_progress = !g.json;
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            Some(sig) = progress.next() => {
                if let Ok(a) = sig.args()
                    && a.id == op
                    && show_progress
                {
                    eprintln!("  [{}] {}", a.phase, a.message);
                }
            }
            Some(sig) = finished.next() => {
                if let Ok(a) = sig.args()
                    && a.id == op
                {
                    return serde_json::json!({"ok": a.ok, "error_kind": a.error_kind, "error_message": a.error_message,
                        "result": serde_json::from_str::<Value>(a.result).unwrap_or(Value::Null)});
                }
            }
            _ = poll.tick() => {
                match m.get_operation(op, &g.owner).await {
                    Ok(text) => {
                        if let Ok(v) = serde_json::from_str::<Value>(&text)
                            && v["done"] == Value::Bool(true)
                        {
                            return v;
                        }
                    }
                    // A restarted daemon has reconciled (rolled back) the operation.
                    Err(e) if error_parts(&e).0 == "NotFound" => {
                        return serde_json::json!({"ok": false, "error_kind": "HostError",
                            "error_message": "the daemon restarted during the operation and rolled it back; try again"});
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

pub async fn update(g: &Global, name: &str, modules: &[String]) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let (progress, finished) = tokio::join!(
        m.receive_operation_progress(),
        m.receive_operation_finished()
    );
    let (Ok(progress), Ok(finished)) = (progress, finished) else {
        eprintln!("voxnix: cannot subscribe to the daemon's signals");
        return ExitCode::from(exit::UNREACHABLE);
    };
    let mods: Vec<&str> = modules.iter().map(String::as_str).collect();
    let op = match m.update(name, &g.owner, &mods).await {
        Ok(op) => op,
        Err(e) => return fail(&e),
    };
    let outcome = wait_operation(&m, g, &op, progress, finished).await;
    if let Some(code) = operation_failed(&outcome) {
        return code;
    }
    if g.json {
        println!("{}", outcome["result"]);
    } else {
        println!("{name} updated ({})", s(&outcome["result"], "state"));
    }
    ExitCode::SUCCESS
}

pub enum Verb {
    Start,
    Stop,
    Restart,
    Repair,
}

pub async fn simple(g: &Global, verb: Verb, name: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let (r, done) = match verb {
        Verb::Start => (m.start(name, &g.owner).await, "started"),
        Verb::Stop => (m.stop(name, &g.owner).await, "stopped"),
        Verb::Restart => (m.restart(name, &g.owner).await, "restarted"),
        Verb::Repair => (
            m.repair(name, &g.owner).await,
            "repaired: its conf file was written again from voxnix's record; start it when you want",
        ),
    };
    match r {
        Ok(()) => {
            if !g.json {
                println!("{name} {done}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

pub async fn destroy(g: &Global, name: &str, yes: bool, purge: bool) -> ExitCode {
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("voxnix: refusing to destroy '{name}' without confirmation; pass --yes");
            return ExitCode::from(exit::USAGE);
        }
        eprint!("Destroy container '{name}'? This stops it and removes it. [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err()
            || !matches!(answer.trim(), "y" | "Y" | "yes")
        {
            eprintln!("Not destroyed.");
            return ExitCode::from(1);
        }
    }
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    // Whose kept data a purge deletes: the container's owner (root
    // destroying another owner's container purges that owner's, not its own).
    let owner = if g.owner.is_empty() && purge {
        match m.status(name, "").await {
            Ok(t) => serde_json::from_str::<Value>(&t)
                .ok()
                .and_then(|v| v["owner"].as_str().map(str::to_string))
                .unwrap_or_default(),
            Err(e) => return fail(&e),
        }
    } else {
        g.owner.clone()
    };
    if let Err(e) = m.destroy(name, &g.owner).await {
        return fail(&e);
    }
    if purge {
        return match m.purge(name, &owner).await {
            Ok(_) => {
                if !g.json {
                    println!("{name} destroyed, its workspace deleted");
                }
                ExitCode::SUCCESS
            }
            // Created without a workspace: nothing to purge.
            Err(e) if error_parts(&e).0 == "NotFound" => {
                if !g.json {
                    println!("{name} destroyed");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    if !g.json {
        println!("{name} destroyed");
        let kept = m
            .kept(&g.owner)
            .await
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(k) = kept.as_ref().and_then(|v| {
            v.as_array()?
                .iter()
                .rev()
                .find(|k| k["container"] == name)
                .cloned()
        }) {
            println!(
                "its workspace is kept as {} (`voxnix storage kept`); `voxnix storage purge {name}` deletes it",
                k["id"].as_str().unwrap_or("-")
            );
        }
    }
    ExitCode::SUCCESS
}

pub async fn status(g: &Global, name: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let text = match m.status(name, &g.owner).await {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    if g.json {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    let Ok(v) = parse_json(&text) else {
        return ExitCode::from(exit::HOST);
    };
    let os = v["os_release"]["PRETTY_NAME"]
        .as_str()
        .unwrap_or("-")
        .to_string();
    let rows = [
        ("Name", s(&v, "name")),
        ("State", s(&v, "state")),
        ("Owner", s(&v, "owner")),
        (
            "Unit",
            format!(
                "{} ({}/{})",
                s(&v, "unit"),
                s(&v, "unit_state"),
                s(&v, "sub_state")
            ),
        ),
        ("Addresses", s(&v, "addresses")),
        ("Modules", s(&v, "modules")),
        ("Leader", s(&v, "leader")),
        (
            "Uptime",
            v["uptime_secs"]
                .as_u64()
                .map(|u| format!("{u} s"))
                .unwrap_or("-".into()),
        ),
        ("OS", os),
        (
            "Memory",
            v["memory_bytes"]
                .as_u64()
                .map(crate::storage::human_bytes)
                .unwrap_or("-".into()),
        ),
        (
            "CPU time",
            v["cpu_nsec"]
                .as_u64()
                .map(|n| format!("{:.2} s", n as f64 / 1e9))
                .unwrap_or("-".into()),
        ),
        ("Workspace", s(&v, "workspace")),
        (
            "Exposed",
            crate::frontends::format::exposed_ports(&v).unwrap_or("-".into()),
        ),
        ("System", s(&v, "system_path")),
        ("Conf", s(&v, "conf")),
    ];
    for (k, val) in rows {
        println!("{k:>10}: {val}");
    }
    if let Some(note) = conf_note(&v) {
        println!("{note}");
    }
    ExitCode::SUCCESS
}

pub async fn logs(g: &Global, name: &str, lines: u32) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let text = match m.logs(name, &g.owner, lines).await {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    if g.json {
        println!("{text}");
        return ExitCode::SUCCESS;
    }
    let Ok(v) = parse_json(&text) else {
        return ExitCode::from(exit::HOST);
    };
    for line in v.as_array().into_iter().flatten() {
        let usec = line["timestamp_usec"].as_u64().unwrap_or(0);
        let src = line["source"].as_str().unwrap_or("?");
        let ident = line["identifier"].as_str().unwrap_or("-");
        println!(
            "{}.{:06} {src:<9} {ident}: {}",
            usec / 1_000_000,
            usec % 1_000_000,
            line["message"].as_str().unwrap_or("")
        );
    }
    ExitCode::SUCCESS
}

pub async fn exec(g: &Global, name: &str, timeout: u32, argv: &[String]) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    match m.exec(name, &g.owner, &args, timeout).await {
        Ok((code, out, err, truncated)) => {
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"exit_code": code, "stdout": String::from_utf8_lossy(&out),
                        "stderr": String::from_utf8_lossy(&err), "truncated": truncated})
                );
            } else {
                let _ = std::io::stdout().write_all(&out);
                let _ = std::io::stderr().write_all(&err);
                if truncated {
                    eprintln!("voxnix: output was cut at the daemon's limit");
                }
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => fail(&e),
    }
}

/// The host's health: root, or `--as` an owner the daemon lists as an admin.
pub async fn health(g: &Global) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.host_health(&g.owner).await {
        Ok(text) => print_json_or(g, &text, |v| {
            print!("{}", crate::frontends::health::report(v));
        }),
        Err(e) => fail(&e),
    }
}

pub async fn modules(g: &Global) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.modules().await {
        Ok(text) if g.json => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(text) => {
            let Ok(v) = parse_json(&text) else {
                return ExitCode::from(exit::HOST);
            };
            for m in v.as_array().into_iter().flatten() {
                match m {
                    Value::String(n) => println!("{n}"),
                    other => println!("{:<12} {}", s(other, "name"), s(other, "description")),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
