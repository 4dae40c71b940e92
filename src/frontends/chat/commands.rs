//! Slash commands: they work with no LLM configured, and never call one.

/// Default log lines of `/logs`.
pub const LOGS_DEFAULT: u32 = 30;

/// A parsed slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/start` without a name: Telegram's first contact.
    Welcome,
    Help,
    List,
    Create {
        name: String,
        modules: Vec<String>,
    },
    Start(String),
    Stop(String),
    Restart(String),
    Destroy(String),
    Repair(String),
    /// `/recover NAME [OLD]`: the kept workspace of OLD (default NAME).
    Recover {
        name: String,
        from: String,
    },
    Status(String),
    Logs {
        name: String,
        lines: u32,
    },
    /// `/keys`: the owner's registered SSH keys.
    Keys,
    /// `/keys add KEY`: the key line as pasted.
    AddKey(PastedKey),
    /// `/keys remove WHICH`: a number, fingerprint or comment.
    RemoveKey(String),
    /// `/connect NAME`: the ssh_config block and known_hosts line.
    Connect(String),
    /// `/expose NAME PORT [host|tailnet]`.
    Expose {
        name: String,
        port: u16,
        to: &'static str,
    },
    /// `/unexpose NAME PORT [host|tailnet]` (`to` empty: whichever it is).
    Unexpose {
        name: String,
        port: u16,
        to: &'static str,
    },
    /// `/schedule NAME TIERS|off|default`.
    Schedule {
        name: String,
        schedule: String,
    },
    /// `/schedule * TIERS|off|default`: for all the owner's containers.
    OwnerSchedule(String),
    /// `/history NAME`: its checkpoints.
    History(String),
    /// `/undo NAME [ID]` (`to` 0: before the last change); asks first.
    Undo {
        name: String,
        to: u64,
    },
    Modules,
    Storage,
    Reset,
    Health,
    /// A known command used wrongly: the usage line to show.
    Usage(&'static str),
    /// Not a command this bot knows.
    Unknown(String),
}

/// What a person pasted after `/keys add`. Its `Debug` (the command log)
/// shows only its length: a person who pastes their private key by mistake
/// must not find it in the host's log as well.
#[derive(Clone, PartialEq, Eq)]
pub struct PastedKey(pub String);

impl std::fmt::Debug for PastedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PastedKey(<{} chars>)", self.0.chars().count())
    }
}

const EXPOSE_USAGE: &str = "/expose NAME PORT [host|tailnet]  e.g. /expose dev 8080 (host: a port of the host; tailnet: its Tailscale address only)";
const UNEXPOSE_USAGE: &str = "/unexpose NAME PORT [host|tailnet]";

/// `NAME PORT [host|tailnet]` of /expose and /unexpose.
fn port_args(args: &[String], default_to: &'static str) -> Option<(String, u16, &'static str)> {
    let (name, port, to) = match args {
        [name, port] => (name, port, default_to),
        [name, port, to] => (
            name,
            port,
            match to.to_ascii_lowercase().as_str() {
                "host" => "host",
                "tailnet" => "tailnet",
                _ => return None,
            },
        ),
        _ => return None,
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    Some((name.clone(), port, to))
}

/// The commands, for `/help` and Telegram's command menu: (command, arguments, what it does).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("list", "", "list your containers"),
    ("create", "NAME [MODULE...]", "create and start a container"),
    ("start", "NAME", "start a stopped container"),
    ("stop", "NAME", "stop a container"),
    ("restart", "NAME", "restart a container"),
    ("destroy", "NAME", "destroy a container (asks first)"),
    (
        "recover",
        "NAME [OLD]",
        "put the kept workspace of a destroyed NAME (or OLD) into NAME",
    ),
    (
        "repair",
        "NAME",
        "write a container's conf again after it was removed outside voxnix",
    ),
    ("status", "NAME", "details of a container"),
    ("logs", "NAME [N]", "last log lines of a container"),
    (
        "keys",
        "[add KEY | remove WHICH]",
        "your SSH public keys, for all your ssh containers",
    ),
    ("connect", "NAME", "the ssh config to get into a container"),
    (
        "expose",
        "NAME PORT [host|tailnet]",
        "share a port of a container on a host port or your tailnet",
    ),
    (
        "unexpose",
        "NAME PORT [host|tailnet]",
        "stop sharing a port",
    ),
    (
        "schedule",
        "NAME|* hourly=24,daily=7|off|default",
        "a container's own snapshot schedule (* for all your containers)",
    ),
    (
        "history",
        "NAME",
        "a container's checkpoints (before each change voxnix made)",
    ),
    (
        "undo",
        "NAME [ID]",
        "put a container back to before its last change, or to checkpoint ID (asks first)",
    ),
    ("modules", "", "modules a container can be built from"),
    ("storage", "", "your storage use"),
    ("reset", "", "forget our conversation"),
    ("help", "", "what I can do"),
];

/// Parses a message that starts with `/`; None for anything else.
/// `/cmd@botname args` is accepted (Telegram groups add the bot's name).
pub fn parse(text: &str) -> Option<Command> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let mut words = rest.split_whitespace();
    let head = words.next().unwrap_or("");
    let cmd = head.split('@').next().unwrap_or("").to_ascii_lowercase();
    let args: Vec<String> = words.map(str::to_string).collect();
    let one = |usage: &'static str, f: fn(String) -> Command| match args.as_slice() {
        [name] => f(name.clone()),
        _ => Command::Usage(usage),
    };
    Some(match cmd.as_str() {
        "start" if args.is_empty() => Command::Welcome,
        "help" => Command::Help,
        "list" | "ls" => Command::List,
        "create" => match args.split_first() {
            Some((name, modules)) => Command::Create {
                name: name.clone(),
                modules: modules.to_vec(),
            },
            None => Command::Usage("/create NAME [MODULE...]  e.g. /create dev git fish"),
        },
        "start" => one("/start NAME", Command::Start),
        "stop" => one("/stop NAME", Command::Stop),
        "restart" => one("/restart NAME", Command::Restart),
        "destroy" => one("/destroy NAME", Command::Destroy),
        "repair" => one("/repair NAME", Command::Repair),
        "recover" => match args.as_slice() {
            [name] => Command::Recover {
                name: name.clone(),
                from: name.clone(),
            },
            [name, from] => Command::Recover {
                name: name.clone(),
                from: from.clone(),
            },
            _ => Command::Usage("/recover NAME [OLD]  (OLD: the destroyed container, if not NAME)"),
        },
        "status" => one("/status NAME", Command::Status),
        "logs" => match args.as_slice() {
            [name] => Command::Logs {
                name: name.clone(),
                lines: LOGS_DEFAULT,
            },
            [name, n] => match n.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => Command::Logs {
                    name: name.clone(),
                    lines: n,
                },
                _ => Command::Usage("/logs NAME [N]  (N from 1 to 1000)"),
            },
            _ => Command::Usage("/logs NAME [N]  (N from 1 to 1000)"),
        },
        "keys" | "key" => match args.split_first() {
            None => Command::Keys,
            Some((verb, rest)) => match verb.to_ascii_lowercase().as_str() {
                "list" if rest.is_empty() => Command::Keys,
                "add" if !rest.is_empty() => Command::AddKey(PastedKey(rest.join(" "))),
                "remove" | "rm" | "delete" if !rest.is_empty() => {
                    Command::RemoveKey(rest.join(" "))
                }
                _ => Command::Usage(
                    "/keys, /keys add ssh-ed25519 AAAA... you@laptop, /keys remove NUMBER|COMMENT",
                ),
            },
        },
        "connect" | "ssh" => one("/connect NAME", Command::Connect),
        "expose" => match port_args(&args, "host") {
            Some((name, port, to)) => Command::Expose { name, port, to },
            None => Command::Usage(EXPOSE_USAGE),
        },
        "unexpose" => match port_args(&args, "") {
            Some((name, port, to)) => Command::Unexpose { name, port, to },
            None => Command::Usage(UNEXPOSE_USAGE),
        },
        "schedule" => match args.as_slice() {
            [all, schedule] if all == "*" => Command::OwnerSchedule(schedule.clone()),
            [name, schedule] => Command::Schedule {
                name: name.clone(),
                schedule: schedule.clone(),
            },
            _ => Command::Usage(
                "/schedule NAME hourly=24,daily=7,weekly=4,monthly=6  (or off, or default); NAME * for all your containers",
            ),
        },
        "history" => one("/history NAME", Command::History),
        "undo" => match args.as_slice() {
            [name] => Command::Undo {
                name: name.clone(),
                to: 0,
            },
            [name, id] => match id.trim_start_matches('#').parse::<u64>() {
                Ok(to) if to > 0 => Command::Undo {
                    name: name.clone(),
                    to,
                },
                _ => Command::Usage("/undo NAME [ID]  (ID: a number from /history NAME)"),
            },
            _ => Command::Usage("/undo NAME [ID]  (ID: a number from /history NAME)"),
        },
        "modules" => Command::Modules,
        "storage" => Command::Storage,
        "reset" | "clear" => Command::Reset,
        "health" => Command::Health,
        _ => Command::Unknown(head.chars().take(40).collect()),
    })
}

/// The `/help` text.
pub fn help(llm: bool, admin: bool) -> String {
    let mut s = String::from("I manage your voxnix containers.\n\n");
    if llm {
        s.push_str(
            "Tell me what you want in plain words, e.g. \"create a dev container with git and fish\", or use a command:\n",
        );
    } else {
        s.push_str("Commands:\n");
    }
    for (c, a, what) in COMMANDS {
        if a.is_empty() {
            s.push_str(&format!("/{c} - {what}\n"));
        } else {
            s.push_str(&format!("/{c} {a} - {what}\n"));
        }
    }
    if admin {
        s.push_str("/health - the host's health (administrators)\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("/start"), Some(Command::Welcome));
        assert_eq!(parse("/start dev"), Some(Command::Start("dev".into())));
        assert_eq!(parse("/list@voxnix_bot"), Some(Command::List));
        assert_eq!(
            parse("/create dev git fish"),
            Some(Command::Create {
                name: "dev".into(),
                modules: vec!["git".into(), "fish".into()]
            })
        );
        assert!(matches!(parse("/create"), Some(Command::Usage(_))));
        assert!(matches!(parse("/stop a b"), Some(Command::Usage(_))));
        assert_eq!(
            parse("/logs dev 5"),
            Some(Command::Logs {
                name: "dev".into(),
                lines: 5
            })
        );
        assert!(matches!(parse("/logs dev 0"), Some(Command::Usage(_))));
        assert_eq!(
            parse("/frobnicate"),
            Some(Command::Unknown("frobnicate".into()))
        );
        assert_eq!(parse("/reset"), Some(Command::Reset));
    }

    #[test]
    fn keys_connect_and_ports_parse() {
        assert_eq!(parse("/keys"), Some(Command::Keys));
        assert_eq!(parse("/keys list"), Some(Command::Keys));
        // A pasted key keeps its words; a line break after `add` is fine.
        assert_eq!(
            parse("/keys add\nssh-ed25519 AAAAC3 me@laptop"),
            Some(Command::AddKey(PastedKey(
                "ssh-ed25519 AAAAC3 me@laptop".into()
            )))
        );
        assert!(matches!(parse("/keys add"), Some(Command::Usage(_))));
        assert!(matches!(parse("/keys frob"), Some(Command::Usage(_))));
        assert_eq!(
            parse("/keys remove 2"),
            Some(Command::RemoveKey("2".into()))
        );
        assert_eq!(parse("/connect dev"), Some(Command::Connect("dev".into())));
        assert!(matches!(parse("/connect"), Some(Command::Usage(_))));
        assert_eq!(
            parse("/expose dev 8080"),
            Some(Command::Expose {
                name: "dev".into(),
                port: 8080,
                to: "host"
            })
        );
        assert_eq!(
            parse("/expose dev 3000 Tailnet"),
            Some(Command::Expose {
                name: "dev".into(),
                port: 3000,
                to: "tailnet"
            })
        );
        for bad in [
            "/expose dev",
            "/expose dev 0",
            "/expose dev 70000",
            "/expose dev 80 moon",
        ] {
            assert!(matches!(parse(bad), Some(Command::Usage(_))), "{bad}");
        }
        assert_eq!(
            parse("/unexpose dev 8080"),
            Some(Command::Unexpose {
                name: "dev".into(),
                port: 8080,
                to: ""
            })
        );
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(
            parse("/schedule dev hourly=24,daily=7"),
            Some(Command::Schedule {
                name: "dev".into(),
                schedule: "hourly=24,daily=7".into()
            })
        );
        assert!(matches!(parse("/schedule dev"), Some(Command::Usage(_))));
        assert_eq!(
            parse("/schedule * daily=7"),
            Some(Command::OwnerSchedule("daily=7".into()))
        );
    }

    #[test]
    fn history_and_undo_parse() {
        assert_eq!(parse("/history dev"), Some(Command::History("dev".into())));
        assert_eq!(
            parse("/undo dev"),
            Some(Command::Undo {
                name: "dev".into(),
                to: 0
            })
        );
        assert_eq!(
            parse("/undo dev #4"),
            Some(Command::Undo {
                name: "dev".into(),
                to: 4
            })
        );
        for bad in [
            "/undo",
            "/undo dev 0",
            "/undo dev x",
            "/undo dev 1 2",
            "/history",
        ] {
            assert!(matches!(parse(bad), Some(Command::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn a_pasted_key_is_not_in_the_command_log() {
        let secret = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA";
        let cmd = parse(&format!("/keys add {secret}")).expect("a command");
        let logged = format!("{cmd:?}");
        assert!(!logged.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{logged}");
        assert!(logged.contains("chars"), "{logged}");
    }

    #[test]
    fn help_lists_every_command() {
        let h = help(false, true);
        for (c, _, _) in COMMANDS {
            assert!(h.contains(&format!("/{c}")), "{c}");
        }
        assert!(h.contains("/health"));
        assert!(!help(false, false).contains("/health"));
    }
}
