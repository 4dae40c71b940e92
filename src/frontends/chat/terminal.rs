//! `voxnix chat`: the same commands and agent in a terminal, acting as the
//! local user (`unix:<uid>`). When standard input is not a terminal it reads
//! one message per line and exits at the end of the input, so it can be
//! scripted: `printf '/list\n' | voxnix chat`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::sync::mpsc;

use super::api::{Daemon, DbusDaemon, Owner, Progress};
use super::config::ChatConfig;
use super::llm::Llm;
use super::service::{ChatService, Session, Surface, Ui};

/// Arguments of `voxnix chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// The configuration file; its [llm] table configures the agent.
    #[arg(long, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Slash commands only, even if an LLM is configured.
    #[arg(long)]
    pub no_llm: bool,
}

/// Shows replies on standard output, progress on standard error.
struct TerminalUi;

fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", text.trim_end());
    let _ = o.flush();
}

impl Ui for TerminalUi {
    async fn say(&self, text: &str) {
        out(text);
    }

    async fn progress(&self, _name: &str, step: &Progress) {
        eprintln!("  [{}] {}", step.phase, step.message);
    }

    async fn progress_done(&self, _name: &str, text: &str) -> bool {
        out(text);
        true
    }

    async fn confirm(&self, question: &str, _yes: &str, _no: &str, _token: &str) {
        out(&format!(
            "{question} Type yes to confirm; anything else says no."
        ));
    }
}

/// Standard input's lines, read by a blocking thread (one line ahead at most).
fn stdin_lines() -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let stop = line.is_err();
            if tx.blocking_send(line).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Runs the terminal chat until the end of input.
pub async fn run(bus: Option<String>, args: ChatArgs) -> ExitCode {
    let cfg = match ChatConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("voxnix chat: {e}");
            return ExitCode::from(2);
        }
    };
    let llm = if args.no_llm {
        None
    } else {
        match Llm::from_config(&cfg.llm) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("voxnix chat: no language model ({e}); slash commands only");
                None
            }
        }
    };
    let daemon = match DbusDaemon::connect(bus.as_deref()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("voxnix chat: cannot reach the voxnix daemon: {}", e.message);
            return ExitCode::from(11);
        }
    };
    let uid = nix::unistd::getuid().as_raw();
    let owner = Owner::unix(uid);
    // Root is an administrator; so is a local user the daemon lists in
    // admin_owners, which only the daemon knows: ask it once.
    let admin = uid == 0 || daemon.host_health(&owner).await.is_ok();
    let session = Session {
        owner,
        admin,
        surface: Surface::Terminal,
    };
    let chat = ChatService::new(daemon, llm);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        out(&format!(
            "voxnix chat, acting as {}{}. /help lists the commands; Ctrl-D leaves.",
            session.owner,
            if chat.llm().is_some() {
                ""
            } else {
                " (commands only: no language model configured)"
            }
        ));
    }
    let ui = TerminalUi;
    let mut lines = stdin_lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = match lines.recv().await {
            Some(Ok(l)) => l,
            None => break,
            Some(Err(e)) => {
                eprintln!("voxnix chat: cannot read the input: {e}");
                return ExitCode::from(1);
            }
        };
        let text = line.trim();
        // An open confirmation takes this line as its answer.
        if let Some((token, _)) = chat.pending_destroy(&session) {
            let yes = matches!(text.to_ascii_lowercase().as_str(), "yes" | "y");
            let c = chat.answer_confirmation(&session, &token, yes).await;
            out(c.text());
            if yes || matches!(text.to_ascii_lowercase().as_str(), "" | "no" | "n") {
                continue;
            }
        }
        chat.handle_message(&session, text, &ui).await;
    }
    if interactive {
        out("Bye.");
    }
    ExitCode::SUCCESS
}
