//! `voxnix keys ...`, `voxnix connect`, `voxnix expose`, `voxnix unexpose`:
//! getting into a container and sharing its ports, through the daemon's API.

use std::io::Read;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use super::containers::{Global, connect, fail, print_json_or};
use super::exit;

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Register an SSH public key: a .pub file, `-` for standard input, or
    /// the key itself ('ssh-ed25519 AAAA... you@laptop').
    Add { key: String },
    /// The keys you registered.
    List,
    /// Remove a key: its number in `keys list`, its fingerprint or its comment.
    Remove { which: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExposeTo {
    /// A port of the host, from the administrator's range.
    Host,
    /// The container's tailnet address only (Tailscale Serve).
    Tailnet,
}

impl ExposeTo {
    fn as_str(self) -> &'static str {
        match self {
            ExposeTo::Host => "host",
            ExposeTo::Tailnet => "tailnet",
        }
    }
}

/// The key text `voxnix keys add` was given: the key itself, or read from
/// the file it names (`-`: standard input). The person's own file, read
/// with their own rights.
fn key_text(arg: &str) -> Result<String, String> {
    let looks_like_key = ["ssh-", "ecdsa-", "sk-"].iter().any(|p| arg.starts_with(p));
    if looks_like_key {
        return Ok(arg.to_string());
    }
    let mut text = String::new();
    if arg == "-" {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("reading standard input: {e}"))?;
    } else {
        let path = std::path::Path::new(arg);
        if !arg.ends_with(".pub") && path.with_extension("pub").exists() {
            return Err(format!(
                "{arg} looks like a private key; give its public half, {arg}.pub"
            ));
        }
        let file = std::fs::File::open(path).map_err(|e| format!("{arg}: {e}"))?;
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| format!("{arg}: {e}"))?;
    }
    Ok(text)
}

pub async fn keys(g: &Global, cmd: KeysCommand) -> ExitCode {
    let text = match &cmd {
        KeysCommand::Add { key } => match key_text(key) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("voxnix: {e}");
                return ExitCode::from(exit::USAGE);
            }
        },
        _ => None,
    };
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match cmd {
        KeysCommand::Add { .. } => {
            let text = text.unwrap_or_default();
            match m.add_key(&text, &g.owner).await {
                Ok(out) => {
                    print_json_or(g, &out, |v| print_change(v, "Added", "already registered"))
                }
                Err(e) => fail(&e),
            }
        }
        KeysCommand::List => match m.keys(&g.owner).await {
            Ok(out) => print_json_or(g, &out, |v| {
                let keys = v.as_array().cloned().unwrap_or_default();
                if keys.is_empty() {
                    println!("No keys yet: voxnix keys add ~/.ssh/id_ed25519.pub");
                }
                for (i, k) in keys.iter().enumerate() {
                    println!(
                        "{:>2}  {}  {}  {}",
                        i + 1,
                        k["fingerprint"].as_str().unwrap_or("-"),
                        k["algorithm"].as_str().unwrap_or("-"),
                        k["comment"].as_str().unwrap_or("")
                    );
                }
            }),
            Err(e) => fail(&e),
        },
        KeysCommand::Remove { which } => match m.remove_key(&which, &g.owner).await {
            Ok(out) => print_json_or(g, &out, |v| print_change(v, "Removed", "")),
            Err(e) => fail(&e),
        },
    }
}

fn print_change(v: &Value, verb: &str, unchanged: &str) {
    for k in v["keys"].as_array().into_iter().flatten() {
        let what = crate::frontends::format::key_label(k);
        if v["changed"] == Value::Bool(true) {
            println!("{verb} {}", what);
        } else {
            println!("{} is {unchanged}", what);
        }
    }
    let names = |key: &str| crate::frontends::format::strings_at(v, key);
    let now = names("applied_to");
    if !now.is_empty() {
        println!("Running containers updated now: {}", now.join(", "));
    }
    let later = names("at_next_start");
    if !later.is_empty() {
        println!("Taken at their next start: {}", later.join(", "));
    }
}

/// What `voxnix connect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectPart {
    /// Both, each under a comment saying where it goes.
    Both,
    /// Only the block: valid ssh_config, to append as is.
    SshConfig,
    /// Only the known_hosts line.
    KnownHosts,
}

pub async fn connect_cmd(g: &Global, name: &str, part: ConnectPart) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.connect(name, &g.owner).await {
        Ok(out) if part != ConnectPart::Both && !g.json => print_json_or(g, &out, |v| {
            if part == ConnectPart::SshConfig {
                print!("{}", v["ssh_config"].as_str().unwrap_or(""));
            } else {
                println!("{}", v["known_hosts"].as_str().unwrap_or(""));
            }
            if let Some(w) = v["warning"].as_str() {
                eprintln!("voxnix: note: {w}");
            }
        }),
        Ok(out) => print_json_or(g, &out, |v| {
            println!("# Add to ~/.ssh/config:");
            print!("{}", v["ssh_config"].as_str().unwrap_or(""));
            println!();
            println!("# Add to ~/.ssh/known_hosts (the container's host key, pinned):");
            println!("{}", v["known_hosts"].as_str().unwrap_or(""));
            println!();
            println!("# Then: ssh {}", v["alias"].as_str().unwrap_or(name));
            if let Some(w) = v["warning"].as_str() {
                eprintln!("voxnix: note: {w}");
            }
        }),
        Err(e) => fail(&e),
    }
}

pub async fn expose(
    g: &Global,
    name: &str,
    port: u16,
    to: ExposeTo,
    host_port: Option<u16>,
) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let r = m
        .expose(
            name,
            &g.owner,
            u32::from(port),
            to.as_str(),
            u32::from(host_port.unwrap_or(0)),
        )
        .await;
    match r {
        Ok(out) => print_json_or(g, &out, |v| {
            let e = &v["exposure"];
            match e["host_port"].as_u64() {
                Some(h) => println!("{name}:{port} is on host port {h}"),
                None => println!("{name}:{port} is on its tailnet address, port {port}"),
            }
            if v["pending_restart"] == Value::Bool(true) {
                println!("It is forwarded from {name}'s next start: voxnix restart {name}");
            }
        }),
        Err(e) => fail(&e),
    }
}

pub async fn unexpose(g: &Global, name: &str, port: u16, to: Option<ExposeTo>) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let to = to.map(ExposeTo::as_str).unwrap_or("");
    match m.unexpose(name, &g.owner, u32::from(port), to).await {
        Ok(out) => print_json_or(g, &out, |v| {
            println!("{name}:{port} is no longer exposed");
            if v["pending_restart"] == Value::Bool(true) {
                println!("The host forwards it until {name}'s next start: voxnix restart {name}");
            }
        }),
        Err(e) => fail(&e),
    }
}
