//! The chat front ends' shared part: an LLM agent whose tools are the
//! daemon's API scoped to one owner, slash commands that need no LLM, history,
//! destroy confirmations only the person can give, and `voxnix chat` (the
//! terminal). The Telegram bot (`super::telegram`) uses the same
//! [`service::ChatService`]. See `docs/chat.md`.
//!
//! - [`config`]: the `[telegram]` and `[llm]` tables of the configuration file.
//! - [`secret`]: secrets from files, and scrubbing them from text.
//! - [`api`]: the daemon's API as the chat uses it ([`api::Daemon`]), the owner.
//! - [`tools`]: the agent's tools (schemas, strict parsing).
//! - [`history`]: per-chat history, trimmed in whole turns.
//! - [`prompt`]: the system prompt, rebuilt for every request.
//! - [`llm`]: the OpenAI-compatible client (chat completions, transcription).
//! - [`commands`]: slash commands.
//! - [`service`]: the chat loop itself.
//! - [`terminal`]: `voxnix chat`.

pub mod api;
pub mod commands;
pub mod config;
pub mod history;
pub mod llm;
pub mod prompt;
pub mod secret;
pub mod service;
pub mod terminal;
pub mod tools;
