//! `voxnix history`, `voxnix checkpoint`, `voxnix undo`: a container's
//! checkpoints and going back to one, through the daemon's API.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use serde_json::Value;

use super::containers::{Global, connect, fail, print_json_or};
use super::exit;
use crate::frontends::format;

pub async fn history(g: &Global, name: &str) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m.history(name, &g.owner).await {
        Ok(text) => print_json_or(g, &text, |v: &Value| {
            let rows = v.as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("{name} has no checkpoints yet.");
            }
            for c in &rows {
                println!("{}", format::checkpoint_line(c));
            }
            if !rows.is_empty() {
                println!(
                    "`voxnix undo {name}` goes back to before the last change; `voxnix undo {name} ID` to one of these."
                );
            }
        }),
        Err(e) => fail(&e),
    }
}

pub async fn checkpoint(g: &Global, name: &str, why: Option<&str>) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    match m
        .checkpoint(name, &g.owner, "manual", why.unwrap_or(""))
        .await
    {
        Ok(text) => print_json_or(g, &text, |v: &Value| {
            println!("checkpoint {} of {name}", v["id"].as_u64().unwrap_or(0));
        }),
        Err(e) => fail(&e),
    }
}

/// Shows what the undo will do and asks (unless `yes`), then undoes.
pub async fn undo(g: &Global, name: &str, to: Option<u64>, yes: bool) -> ExitCode {
    let m = match connect(g).await {
        Ok(m) => m,
        Err(c) => return c,
    };
    let to = to.unwrap_or(0);
    if !yes {
        let plan = match m.plan_undo(name, &g.owner, to).await {
            Ok(p) => serde_json::from_str::<Value>(&p).unwrap_or(Value::Null),
            Err(e) => return fail(&e),
        };
        if !std::io::stdin().is_terminal() {
            eprintln!("voxnix: {}", format::undo_plan(&plan));
            eprintln!("voxnix: refusing to undo without confirmation; pass --yes");
            return ExitCode::from(exit::USAGE);
        }
        eprint!("{} Go ahead? [y/N] ", format::undo_plan(&plan));
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err()
            || !matches!(answer.trim(), "y" | "Y" | "yes")
        {
            eprintln!("Nothing was changed.");
            return ExitCode::from(1);
        }
        // The same checkpoint the person saw, even if another came since.
        let target = plan["target"]["id"].as_u64().unwrap_or(to);
        return run_undo(g, &m, name, target).await;
    }
    run_undo(g, &m, name, to).await
}

async fn run_undo(
    g: &Global,
    m: &crate::api::client::ManagerProxy<'static>,
    name: &str,
    to: u64,
) -> ExitCode {
    match m.undo(name, &g.owner, to).await {
        Ok(text) => print_json_or(g, &text, |v: &Value| {
            println!(
                "{name} is back at checkpoint {}. To undo this: voxnix undo {name} {}",
                v["target"]["id"].as_u64().unwrap_or(0),
                v["safety"].as_u64().unwrap_or(0)
            );
        }),
        Err(e) => fail(&e),
    }
}
