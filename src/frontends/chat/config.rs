//! The chat front ends' configuration: the `[telegram]` and `[llm]` tables of
//! the same TOML file the daemon reads (`/etc/voxnix/config.toml`).
//!
//! Only those two tables are read here; the rest of the file belongs to the
//! daemon. Each table rejects unknown keys, and every key has a default, so a
//! file without them means "no Telegram settings, no LLM" (slash commands
//! only). Secrets are never values in this file, only paths to files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::secret::{Secret, SecretError, credential_path};

/// The systemd credential names looked up when no file is configured.
pub const TELEGRAM_TOKEN_CREDENTIAL: &str = "telegram-token";
pub const LLM_API_KEY_CREDENTIAL: &str = "llm-api-key";

/// `[telegram]`: the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// File holding the bot token. Default: `$CREDENTIALS_DIRECTORY/telegram-token`.
    pub token_file: Option<PathBuf>,
    /// Chat ids allowed to use the bot (a person's id, or a group's negative id).
    pub allowed_chat_ids: Vec<i64>,
    /// Chat ids with admin rights (host health); they are allowed too.
    pub admin_chat_ids: Vec<i64>,
    /// The Bot API server. Default: Telegram's. A self-hosted Bot API server
    /// (or a test's fake) goes here.
    pub api_url: Option<String>,
    /// Seconds one long poll waits for updates (1-50).
    pub poll_timeout_secs: u32,
    /// Largest voice note transcribed, in bytes.
    pub max_voice_bytes: u32,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            token_file: None,
            allowed_chat_ids: Vec::new(),
            admin_chat_ids: Vec::new(),
            api_url: None,
            poll_timeout_secs: 25,
            max_voice_bytes: 10 * 1024 * 1024,
        }
    }
}

/// `[llm]`: the OpenAI-compatible endpoint of the agent. Without `base_url`
/// and `model` there is no agent: slash commands work, free text gets a hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Base URL of the API, with its version path: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` (Ollama), `http://127.0.0.1:8080/v1` (llama.cpp) ...
    pub base_url: String,
    /// The chat model, e.g. `gpt-4o-mini`, `qwen2.5:7b`.
    pub model: String,
    /// File holding the API key. Default: `$CREDENTIALS_DIRECTORY/llm-api-key`
    /// if it exists, else no key (local servers).
    pub api_key_file: Option<PathBuf>,
    /// Model for voice notes (`/audio/transcriptions`), e.g. `whisper-1`.
    /// Empty: voice notes are declined politely.
    pub transcription_model: String,
    /// Language hint for transcription (ISO 639-1, e.g. `en`); empty: detect.
    pub transcription_language: String,
    /// Model calls per message at most (each may run tools).
    pub max_steps: u32,
    /// Tool calls run from one model answer at most.
    pub max_tool_calls_per_step: u32,
    /// Seconds one model request may take.
    pub request_timeout_secs: u64,
    /// Sampling temperature; unset: the server's default.
    pub temperature: Option<f32>,
    /// A conversation is forgotten after this many seconds without a message.
    pub history_idle_secs: u64,
    /// Messages kept per conversation (whole turns are dropped, oldest first).
    pub history_max_kept: usize,
    /// Messages of history sent with a request (whole turns, newest first),
    /// besides the system prompt.
    pub history_max_sent: usize,
    /// Programs the agent's `run_command` may run without asking the person
    /// first (matched on the command's first word, which must be one of
    /// these exactly). Anything else waits for the person's confirmation:
    /// the model reads text others can write (logs, files, banners).
    pub read_only_commands: Vec<String>,
}

/// Programs that only look: no shells, interpreters, package managers,
/// `find` (-delete, -exec), `git` (hooks and config run programs).
pub const DEFAULT_READ_ONLY_COMMANDS: &[&str] = &[
    "ls", "cat", "head", "tail", "wc", "df", "du", "ps", "uname", "id", "whoami", "uptime", "free",
    "date", "pwd", "stat", "ss",
];

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            model: String::new(),
            api_key_file: None,
            transcription_model: String::new(),
            transcription_language: String::new(),
            max_steps: 8,
            max_tool_calls_per_step: 6,
            request_timeout_secs: 120,
            temperature: None,
            history_idle_secs: 30 * 60,
            history_max_kept: 200,
            history_max_sent: 40,
            read_only_commands: DEFAULT_READ_ONLY_COMMANDS
                .iter()
                .map(|c| c.to_string())
                .collect(),
        }
    }
}

impl LlmConfig {
    /// Whether an agent is configured.
    pub fn enabled(&self) -> bool {
        !self.base_url.is_empty() && !self.model.is_empty()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Reads the API key (None: the endpoint takes none).
    pub fn api_key(&self) -> Result<Option<Secret>, ConfigError> {
        match credential_path(self.api_key_file.as_deref(), LLM_API_KEY_CREDENTIAL) {
            Some(p) => Ok(Some(Secret::from_file(&p)?)),
            None => Ok(None),
        }
    }
}

impl TelegramConfig {
    /// Reads the bot token.
    pub fn token(&self) -> Result<Secret, ConfigError> {
        let path = credential_path(self.token_file.as_deref(), TELEGRAM_TOKEN_CREDENTIAL)
            .ok_or(ConfigError::NoToken)?;
        let token = Secret::from_file(&path)?;
        // `<bot id>:<secret>`; anything else would also break the API's URLs.
        let ok = token.expose().split_once(':').is_some_and(|(id, rest)| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !ok {
            return Err(ConfigError::Invalid {
                section: "telegram",
                message: format!(
                    "the token in {} does not look like a bot token (digits, ':', then letters, digits, '_' or '-')",
                    path.display()
                ),
            });
        }
        Ok(token)
    }

    /// Whether `chat` may use the bot.
    pub fn allows(&self, chat: i64) -> bool {
        self.allowed_chat_ids.contains(&chat) || self.admin_chat_ids.contains(&chat)
    }

    /// Whether `sender` (a person's id) may use the bot in `chat`: the
    /// person is on a list (a private chat's id is its person's), and the
    /// chat is their private chat or a group on a list. In a group every
    /// person acts as themselves, never as the group.
    pub fn allows_sender(&self, chat: i64, sender: i64) -> bool {
        self.allows(sender) && (chat == sender || self.allows(chat))
    }

    pub fn is_admin(&self, chat: i64) -> bool {
        self.admin_chat_ids.contains(&chat)
    }
}

/// Both tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatConfig {
    pub telegram: TelegramConfig,
    pub llm: LlmConfig,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration is not valid TOML: {0}")]
    Toml(String),
    /// The access file (see [`crate::access_file`]): unreadable, readable
    /// by everyone, or holding something else.
    #[error("{0}")]
    Access(String),
    #[error("[{section}]: {message}")]
    Invalid {
        section: &'static str,
        message: String,
    },
    #[error(
        "no Telegram bot token: set token_file in [telegram], or pass the credential 'telegram-token' (systemd LoadCredential=)"
    )]
    NoToken,
    #[error(transparent)]
    Secret(#[from] SecretError),
}

impl ChatConfig {
    /// Reads `[telegram]` and `[llm]` from the file; a missing file at the
    /// default path means "all defaults".
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(crate::config::DEFAULT_PATH) =>
            {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(&text)
    }

    /// Parses the whole file's text and takes the two tables.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut table = crate::access_file::merged(text).map_err(|e| {
            if e.contains("access_file") {
                ConfigError::Access(e)
            } else {
                ConfigError::Toml(e)
            }
        })?;
        let telegram: TelegramConfig = section(&mut table, "telegram")?;
        let llm: LlmConfig = section(&mut table, "llm")?;
        let cfg = ChatConfig { telegram, llm };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let llm = |message: String| ConfigError::Invalid {
            section: "llm",
            message,
        };
        let l = &self.llm;
        if l.base_url.is_empty() != l.model.is_empty() {
            return Err(llm(
                "base_url and model go together: set both to use an LLM, or neither".into(),
            ));
        }
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !l.base_url.is_empty() && !http(&l.base_url) {
            return Err(llm(format!(
                "base_url '{}' must start with http:// or https://",
                l.base_url
            )));
        }
        if !l.transcription_model.is_empty() && !l.enabled() {
            return Err(llm(
                "transcription_model needs base_url and model (the same endpoint)".into(),
            ));
        }
        if !(1..=50).contains(&l.max_steps) {
            return Err(llm("max_steps must be 1-50".into()));
        }
        if !(1..=32).contains(&l.max_tool_calls_per_step) {
            return Err(llm("max_tool_calls_per_step must be 1-32".into()));
        }
        if l.request_timeout_secs == 0 {
            return Err(llm("request_timeout_secs must be at least 1".into()));
        }
        if l.history_max_sent == 0 || l.history_max_kept < l.history_max_sent {
            return Err(llm(
                "history_max_sent must be at least 1 and at most history_max_kept".into(),
            ));
        }
        if let Some(t) = l.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(llm("temperature must be 0-2".into()));
        }
        if let Some(bad) = l
            .read_only_commands
            .iter()
            .find(|c| c.is_empty() || c.contains('/') || c.chars().any(char::is_whitespace))
        {
            return Err(llm(format!(
                "read_only_commands: {bad:?} is not a program name (no paths, no spaces)"
            )));
        }
        let t = &self.telegram;
        if !(1..=50).contains(&t.poll_timeout_secs) {
            return Err(ConfigError::Invalid {
                section: "telegram",
                message: "poll_timeout_secs must be 1-50".into(),
            });
        }
        if let Some(url) = &t.api_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                section: "telegram",
                message: format!("api_url '{url}' must start with http:// or https://"),
            });
        }
        Ok(())
    }
}

fn section<T: serde::de::DeserializeOwned + Default>(
    table: &mut toml::Table,
    name: &'static str,
) -> Result<T, ConfigError> {
    match table.remove(name) {
        None => Ok(T::default()),
        Some(toml::Value::Table(t)) => {
            t.try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    section: name,
                    message: e.message().to_string(),
                })
        }
        Some(_) => Err(ConfigError::Invalid {
            section: name,
            message: "must be a table".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_tables_and_daemon_keys_ignored() {
        let c = ChatConfig::parse("builder = \"nix\"\nmodules = [\"git\"]\n").unwrap();
        assert_eq!(c, ChatConfig::default());
        assert!(!c.llm.enabled());
        assert_eq!(c.llm.history_max_sent, 40);
        assert_eq!(c.llm.history_max_kept, 200);
        assert_eq!(c.llm.history_idle_secs, 1800);
    }

    #[test]
    fn tables_parse_and_unknown_keys_are_named() {
        let c = ChatConfig::parse(
            "[telegram]\nallowed_chat_ids = [1, -100]\nadmin_chat_ids = [7]\n[llm]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n",
        )
        .unwrap();
        assert!(c.telegram.allows(-100) && c.telegram.allows(7) && !c.telegram.allows(2));
        assert!(c.telegram.is_admin(7) && !c.telegram.is_admin(1));
        assert!(c.llm.enabled());
        let e = ChatConfig::parse("[llm]\nmodle = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("modle") && e.contains("[llm]"), "{e}");
        let e = ChatConfig::parse("[telegram]\ntoken = \"123:abc\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("token"), "{e}");
        assert!(!e.contains("123:abc"), "{e}");
    }

    #[test]
    fn inconsistent_values_are_refused() {
        assert!(ChatConfig::parse("[llm]\nmodel = \"m\"\n").is_err());
        assert!(ChatConfig::parse("[llm]\nbase_url = \"ftp://x\"\nmodel = \"m\"\n").is_err());
        assert!(ChatConfig::parse("[llm]\ntranscription_model = \"whisper-1\"\n").is_err());
        assert!(ChatConfig::parse("[telegram]\npoll_timeout_secs = 0\n").is_err());
    }
}
