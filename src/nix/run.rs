//! Running one Nix command and telling its failures apart: a non-zero exit
//! carries the useful part of Nix's stderr. Used by the builder and the
//! catalog alike.

use std::process::ExitStatus;
use std::time::Duration;

use super::NixError;
use super::output;
use super::process::{self, CancelToken, CommandOutput, NixCommand, RunError};

/// A Nix command that did not succeed.
pub(crate) enum Failure {
    Error(NixError),
    Exit {
        command: String,
        status: ExitStatus,
        stderr: Vec<String>,
    },
}

impl Failure {
    /// A failed evaluation: the useful part of Nix's message.
    pub(crate) fn into_eval(self) -> NixError {
        match self {
            Failure::Error(e) => e,
            Failure::Exit { stderr, status, .. } => {
                let mut message = output::error_message(&stderr);
                if message.is_empty() {
                    message = format!("nix-instantiate exited with {status}");
                }
                NixError::Eval { message }
            }
        }
    }

    /// Any other failed command.
    pub(crate) fn into_command(self) -> NixError {
        match self {
            Failure::Error(e) => e,
            Failure::Exit {
                command,
                status,
                stderr,
            } => {
                let mut message = output::error_message(&stderr);
                if message.is_empty() {
                    message = format!("exited with {status}");
                }
                NixError::Command { command, message }
            }
        }
    }
}

/// Runs a command; a non-zero exit is a [`Failure::Exit`].
pub(crate) async fn run_checked(
    cmd: &NixCommand,
    timeout: Duration,
    cancel: &CancelToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<CommandOutput, Failure> {
    match process::run(cmd, timeout, cancel, on_line).await {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(Failure::Exit {
            command: cmd.display_name(),
            status: out.status,
            stderr: out.stderr_tail,
        }),
        Err(RunError::Spawn { program, source })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(Failure::Error(NixError::NotInstalled {
                what: program.display().to_string(),
            }))
        }
        Err(RunError::Spawn { program, source }) => Err(Failure::Error(NixError::io(
            format!("cannot run {}", program.display()),
            source,
        ))),
        Err(RunError::Io { program, source }) => Err(Failure::Error(NixError::io(
            format!("reading the output of {program}"),
            source,
        ))),
        Err(RunError::Timeout { program, after, .. }) => Err(Failure::Error(NixError::Timeout {
            what: program,
            after,
        })),
        Err(RunError::Cancelled { .. }) => Err(Failure::Error(NixError::Cancelled)),
    }
}
