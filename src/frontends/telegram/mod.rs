//! `voxnix telegram`: the Telegram bot. It long-polls the Bot API, lets in
//! only the chats of the allowlist (anyone else gets one polite refusal and
//! costs nothing), handles chats concurrently and each chat's messages one at
//! a time, and runs every message through the shared chat
//! ([`ChatService`]) as the owner `telegram:<chat id>`.
//!
//! Also: a typing indicator while working, replies split at Telegram's limit,
//! one progress message edited as a create advances, ✅/❌ buttons for a
//! destroy, the command menu, voice notes (transcribed when configured), and
//! alerts to a container's owner when it stops without being asked.

pub mod split;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use teloxide::Bot;
use teloxide::RequestError;
use teloxide::net::Download;
use teloxide::payloads::{AnswerCallbackQuerySetters, GetUpdatesSetters, SendMessageSetters};
use teloxide::requests::Requester;
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQuery, ChatAction, ChatId, InlineKeyboardButton,
    InlineKeyboardMarkup, Message, MessageEntity, MessageId, Update, UpdateKind, Voice,
};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::frontends::chat::api::{Daemon, DbusDaemon, Owner, Progress};
use crate::frontends::chat::commands::COMMANDS;
use crate::frontends::chat::config::{ChatConfig, ConfigError, TelegramConfig};
use crate::frontends::chat::llm::Llm;
use crate::frontends::chat::secret::redact;
use crate::frontends::chat::service::{
    ChatService, Confirmation, Part, Session, Surface, Ui, plain_text,
};

use split::{TELEGRAM_LIMIT, split_message};

/// What strangers get, once.
pub const REFUSAL: &str = "Sorry, this is a private voxnix server and this chat is not on its list. If you should have access, ask its administrator to add this chat's id:";

/// What a chat gets when its queue is full.
const BUSY: &str = "I'm still busy with your earlier messages; please wait a moment.";
/// How long a chat's worker waits for more messages before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(300);
/// Messages queued per chat at most.
const WORKER_QUEUE: usize = 32;
/// Strangers remembered (each refused once).
const REFUSED_MAX: usize = 10_000;
/// Least time between two edits of a progress message.
const EDIT_INTERVAL: Duration = Duration::from_millis(700);

/// Arguments of `voxnix telegram`.
#[derive(Debug, Clone, clap::Args)]
pub struct TelegramArgs {
    /// The configuration file: [telegram] and [llm] are read from it.
    #[arg(long, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Error)]
pub enum TelegramError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no chat may use the bot: set allowed_chat_ids (or admin_chat_ids) in [telegram]")]
    NoAllowedChats,
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("[telegram] api_url is not a valid URL: {0}")]
    ApiUrl(String),
    #[error("Telegram refused the bot token (is it revoked?)")]
    InvalidToken,
}

/// The bot.
pub struct Telegram<D: Daemon = DbusDaemon> {
    inner: Arc<Inner<D>>,
}

struct Inner<D: Daemon> {
    bot: Bot,
    cfg: TelegramConfig,
    chat: ChatService<D>,
    workers: Mutex<HashMap<i64, mpsc::Sender<Job>>>,
    refused: Mutex<HashSet<i64>>,
}

enum Job {
    Message(Box<Message>),
    Callback(Box<CallbackQuery>),
}

impl<D: Daemon> Telegram<D> {
    /// Builds the bot: reads the token (and the LLM's key) from their files.
    pub fn new(cfg: &ChatConfig, daemon: D) -> Result<Self, TelegramError> {
        if cfg.telegram.allowed_chat_ids.is_empty() && cfg.telegram.admin_chat_ids.is_empty() {
            return Err(TelegramError::NoAllowedChats);
        }
        let token = cfg.telegram.token()?;
        let llm = Llm::from_config(&cfg.llm)?;
        let client = teloxide::net::default_reqwest_settings()
            // Longer than a long poll.
            .timeout(Duration::from_secs(
                u64::from(cfg.telegram.poll_timeout_secs) + 15,
            ))
            .build()
            .map_err(|e| TelegramError::Client(redact(&e.to_string())))?;
        let mut bot = Bot::with_client(token.expose(), client);
        if let Some(url) = &cfg.telegram.api_url {
            bot = match url.parse() {
                Ok(u) => bot.set_api_url(u),
                Err(e) => return Err(TelegramError::ApiUrl(format!("{url}: {e}"))),
            };
        }
        Ok(Telegram {
            inner: Arc::new(Inner {
                bot,
                cfg: cfg.telegram.clone(),
                chat: ChatService::new(daemon, llm),
                workers: Mutex::new(HashMap::new()),
                refused: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The shared chat (for inspection).
    pub fn chat(&self) -> &ChatService<D> {
        &self.inner.chat
    }
}

impl<D: AlertSource> Telegram<D> {
    /// Serves until `shutdown` completes: long polling, per-chat workers, and
    /// alerts from the daemon's `ContainerStateChanged` signals.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), TelegramError> {
        let mut tasks = JoinSet::new();
        let alerts = self.inner.clone();
        tasks.spawn(async move { alerts.alerts().await });
        tokio::pin!(shutdown);
        tokio::select! {
            r = self.inner.clone().serve(&mut tasks) => r,
            () = &mut shutdown => {
                tracing::info!("telegram bot stopping");
                Ok(())
            }
        }
    }
}

impl<D: Daemon> Inner<D> {
    /// The session of the person who sent a message or pressed a button:
    /// the owner is the person (`telegram:<user id>`), also in a group.
    fn session(&self, sender: i64) -> Session {
        Session {
            owner: Owner::telegram(sender),
            admin: self.cfg.is_admin(sender),
            surface: Surface::Telegram,
        }
    }

    async fn serve(self: Arc<Self>, tasks: &mut JoinSet<()>) -> Result<(), TelegramError> {
        let commands: Vec<BotCommand> = COMMANDS
            .iter()
            .map(|(c, _, what)| BotCommand::new(*c, *what))
            .collect();
        if let Err(e) = self.bot.set_my_commands(commands).await {
            tracing::warn!(error = %redact(&e.to_string()), "cannot register the command menu");
        }
        tracing::info!(
            allowed = self.cfg.allowed_chat_ids.len(),
            admins = self.cfg.admin_chat_ids.len(),
            llm = self.chat.llm().is_some(),
            "telegram bot polling"
        );
        let mut offset: i32 = 0;
        let mut backoff = Duration::from_secs(1);
        loop {
            while tasks.try_join_next().is_some() {}
            let r = self
                .bot
                .get_updates()
                .offset(offset)
                .timeout(self.cfg.poll_timeout_secs)
                .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
                .await;
            match r {
                Ok(updates) => {
                    backoff = Duration::from_secs(1);
                    for u in updates {
                        offset = offset.max(i32::try_from(u.id.0).unwrap_or(i32::MAX - 1) + 1);
                        self.dispatch(u, tasks);
                    }
                }
                Err(RequestError::Api(teloxide::ApiError::InvalidToken)) => {
                    return Err(TelegramError::InvalidToken);
                }
                Err(RequestError::RetryAfter(s)) => {
                    tokio::time::sleep(s.duration()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %redact(&e.to_string()), "polling Telegram failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Sends an update to its chat's worker, or refuses a stranger.
    fn dispatch(self: &Arc<Self>, u: Update, tasks: &mut JoinSet<()>) {
        let (chat, sender, job) = match u.kind {
            UpdateKind::Message(m) => {
                // Who sent it: a person (never another bot, never a channel).
                let sender = m
                    .from
                    .as_ref()
                    .filter(|u| !u.is_bot)
                    .and_then(|u| i64::try_from(u.id.0).ok());
                (m.chat.id.0, sender, Job::Message(Box::new(m)))
            }
            UpdateKind::CallbackQuery(q) => match q.message.as_ref().map(|m| m.chat().id.0) {
                Some(c) => {
                    let sender = Some(&q.from)
                        .filter(|u| !u.is_bot)
                        .and_then(|u| i64::try_from(u.id.0).ok());
                    (c, sender, Job::Callback(Box::new(q)))
                }
                None => return,
            },
            _ => return,
        };
        if !sender.is_some_and(|s| self.cfg.allows_sender(chat, s)) {
            // Off the polling loop, so strangers never slow anyone down.
            let me = self.clone();
            tasks.spawn(async move { me.refuse(chat, job).await });
            return;
        }
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let job = match workers.get(&chat) {
            Some(tx) => match tx.try_send(job) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(chat, "too many queued messages; one dropped");
                    let bot = self.bot.clone();
                    tasks.spawn(async move {
                        let _ = bot.send_message(ChatId(chat), BUSY).await;
                    });
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(j)) => j,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        // A fresh channel has room.
        let _ = tx.try_send(job);
        workers.insert(chat, tx);
        drop(workers);
        let me = self.clone();
        tasks.spawn(async move { me.worker(chat, rx).await });
    }

    async fn refuse(&self, chat: i64, job: Job) {
        match job {
            Job::Message(_) => {
                let first = {
                    let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
                    if r.len() >= REFUSED_MAX {
                        r.clear();
                    }
                    r.insert(chat)
                };
                tracing::info!(chat, first, "message from a chat not on the allowlist");
                if first {
                    let text = match &job_sender(&job) {
                        Some(id) => format!("{REFUSAL} {id}"),
                        None => format!("{REFUSAL} {chat}"),
                    };
                    if let Err(e) = self.bot.send_message(ChatId(chat), text).await {
                        tracing::warn!(error = %redact(&e.to_string()), "cannot send the refusal");
                    }
                }
            }
            Job::Callback(q) => {
                let _ = self.bot.answer_callback_query(q.id.clone()).await;
            }
        }
    }

    /// One chat's messages, one at a time.
    async fn worker(self: Arc<Self>, chat: i64, mut rx: mpsc::Receiver<Job>) {
        loop {
            match tokio::time::timeout(WORKER_IDLE, rx.recv()).await {
                Ok(Some(Job::Message(m))) => self.on_message(chat, &m).await,
                Ok(Some(Job::Callback(q))) => self.on_callback(chat, &q).await,
                Ok(None) => return,
                Err(_) => {
                    let mut w = self.workers.lock().unwrap_or_else(|e| e.into_inner());
                    if rx.is_empty() {
                        w.remove(&chat);
                        self.chat.history().sweep();
                        return;
                    }
                }
            }
        }
    }

    async fn on_message(&self, chat: i64, m: &Message) {
        let Some(sender) = m.from.as_ref().and_then(|u| i64::try_from(u.id.0).ok()) else {
            return;
        };
        let s = self.session(sender);
        let ui = TelegramUi::new(self.bot.clone(), ChatId(chat));
        let _typing = Typing::start(self.bot.clone(), ChatId(chat));
        if let Some(text) = m.text() {
            self.chat.handle_message(&s, text, &ui).await;
        } else if let Some(v) = m.voice() {
            self.on_voice(&s, v, &ui).await;
        } else {
            ui.say("I read text messages (and voice notes, when they are enabled).")
                .await;
        }
    }

    async fn on_voice(&self, s: &Session, v: &Voice, ui: &TelegramUi) {
        let Some(llm) = self.chat.llm().filter(|l| l.can_transcribe()) else {
            ui.say("Voice notes are not enabled here; please type your message.")
                .await;
            return;
        };
        if v.file.size > self.cfg.max_voice_bytes {
            ui.say("That voice note is too long for me; please keep it shorter, or type.")
                .await;
            return;
        }
        let audio = match self.download(&v.file.id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %redact(&e), "cannot download a voice note");
                ui.say("I could not fetch that voice note; please try again or type.")
                    .await;
                return;
            }
        };
        let transcript = match llm.transcribe("voice.ogg", audio).await {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => {
                ui.say("I could not make out any words in that voice note.")
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "transcription failed");
                ui.say("I could not transcribe that voice note; please type your message.")
                    .await;
                return;
            }
        };
        ui.say(&format!("🎤 \u{201c}{transcript}\u{201d}")).await;
        self.chat.free_text(s, &transcript, ui).await;
    }

    async fn download(&self, id: &teloxide::types::FileId) -> Result<Vec<u8>, String> {
        let file = self
            .bot
            .get_file(id.clone())
            .await
            .map_err(|e| e.to_string())?;
        let max = self.cfg.max_voice_bytes as usize;
        let mut stream = self.bot.download_file_stream(&file.path);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            if data.len() + chunk.len() > max {
                return Err("the file is larger than max_voice_bytes".into());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    async fn on_callback(&self, chat: i64, q: &CallbackQuery) {
        let parsed = q
            .data
            .as_deref()
            .and_then(|d| d.strip_prefix("vx:d:"))
            .and_then(|d| d.rsplit_once(':'))
            .and_then(|(token, a)| match a {
                "y" => Some((token, true)),
                "n" => Some((token, false)),
                _ => None,
            });
        let Some((token, yes)) = parsed else {
            let _ = self.bot.answer_callback_query(q.id.clone()).await;
            return;
        };
        // The person who pressed it: only the one who was asked can answer
        // (another person's session has no such confirmation).
        let Ok(sender) = i64::try_from(q.from.id.0) else {
            return;
        };
        let s = self.session(sender);
        let outcome = if yes {
            // Destroying takes a moment; stop the button's spinner first.
            let _ = self
                .bot
                .answer_callback_query(q.id.clone())
                .text("Working on it…")
                .await;
            let _typing = Typing::start(self.bot.clone(), ChatId(chat));
            self.chat.answer_confirmation(&s, token, true).await
        } else {
            let o = self.chat.answer_confirmation(&s, token, false).await;
            let _ = self.bot.answer_callback_query(q.id.clone()).await;
            o
        };
        if outcome == Confirmation::Unknown {
            tracing::info!(chat, "answer to an unknown or expired confirmation");
            let _ = self.bot.send_message(ChatId(chat), outcome.text()).await;
            return;
        }
        let text = outcome.text().to_string();
        let edited = match q.message.as_ref() {
            Some(m) => self
                .bot
                .edit_message_text(ChatId(chat), m.id(), &text)
                .await
                .is_ok(),
            None => false,
        };
        if !edited {
            let _ = self.bot.send_message(ChatId(chat), text).await;
        }
    }

    /// Tells owners when their containers stop or fail without being asked.
    async fn alerts(self: Arc<Self>)
    where
        D: AlertSource,
    {
        loop {
            match self.chat.daemon().state_changes().await {
                Ok(mut changes) => {
                    while let Some((name, owner, state, expected)) = changes.next().await {
                        if expected {
                            continue;
                        }
                        let Some(chat) = owner
                            .strip_prefix("telegram:")
                            .and_then(|id| id.parse::<i64>().ok())
                        else {
                            continue;
                        };
                        if !self.cfg.allows(chat) {
                            continue;
                        }
                        tracing::info!(chat, container = %name, state = %state, "alerting the owner");
                        let text = format!(
                            "⚠️ Your container {name} is now {state}, and nobody asked for that through voxnix (it may have crashed or run out of memory). /status {name} shows details; /start {name} starts it again."
                        );
                        if let Err(e) = self.bot.send_message(ChatId(chat), text).await {
                            tracing::warn!(error = %redact(&e.to_string()), "cannot send an alert");
                        }
                    }
                    tracing::warn!("the daemon's state signals ended; subscribing again");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to the daemon's state signals");
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

/// A daemon whose container state changes can be watched.
pub trait AlertSource: Daemon {
    /// A stream of (name, owner, state, expected).
    fn state_changes(
        &self,
    ) -> impl Future<
        Output = Result<
            futures_util::stream::BoxStream<'static, (String, String, String, bool)>,
            String,
        >,
    > + Send;
}

impl AlertSource for DbusDaemon {
    async fn state_changes(
        &self,
    ) -> Result<futures_util::stream::BoxStream<'static, (String, String, String, bool)>, String>
    {
        let s = self
            .proxy()
            .receive_container_state_changed()
            .await
            .map_err(|e| e.to_string())?;
        Ok(s.filter_map(|sig| async move {
            let a = sig.args().ok()?;
            Some((
                a.name.to_string(),
                a.owner.to_string(),
                a.state.to_string(),
                a.expected,
            ))
        })
        .boxed())
    }
}

/// Sends "typing…" every few seconds until dropped.
struct Typing(tokio::task::JoinHandle<()>);

impl Typing {
    fn start(bot: Bot, chat: ChatId) -> Typing {
        Typing(tokio::spawn(async move {
            loop {
                let _ = bot.send_chat_action(chat, ChatAction::Typing).await;
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        }))
    }
}

impl Drop for Typing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ProgressMessage {
    id: MessageId,
    lines: Vec<String>,
    shown: String,
    last_edit: Instant,
}

/// One chat's replies, progress message and confirmations.
struct TelegramUi {
    bot: Bot,
    chat: ChatId,
    progress: tokio::sync::Mutex<Option<ProgressMessage>>,
}

impl TelegramUi {
    fn new(bot: Bot, chat: ChatId) -> Self {
        TelegramUi {
            bot,
            chat,
            progress: tokio::sync::Mutex::new(None),
        }
    }

    async fn send(&self, text: String) -> Option<MessageId> {
        match self.bot.send_message(self.chat, text).await {
            Ok(m) => Some(m.id),
            Err(e) => {
                tracing::warn!(chat = self.chat.0, error = %redact(&e.to_string()), "cannot send a message");
                None
            }
        }
    }

    async fn edit(&self, id: MessageId, text: &str) -> bool {
        match self.bot.edit_message_text(self.chat, id, text).await {
            Ok(_) => true,
            Err(RequestError::Api(teloxide::ApiError::MessageNotModified)) => true,
            Err(e) => {
                tracing::warn!(chat = self.chat.0, error = %redact(&e.to_string()), "cannot edit a message");
                false
            }
        }
    }
}

/// One message of `parts`, code as `pre` entities (Telegram shows them as
/// blocks with a copy button). Entity offsets count UTF-16 units.
fn text_with_blocks(parts: &[Part]) -> (String, Vec<MessageEntity>) {
    let mut text = String::new();
    let mut entities = Vec::new();
    for p in parts {
        if !text.is_empty() {
            text.push('\n');
        }
        match p {
            Part::Text(t) => text.push_str(t.trim_end_matches('\n')),
            Part::Code(c) => {
                let c = c.trim_end_matches('\n');
                let offset = text.encode_utf16().count();
                text.push_str(c);
                let length = c.encode_utf16().count();
                if length > 0 {
                    entities.push(MessageEntity::pre(None, offset, length));
                }
            }
        }
    }
    (text, entities)
}

fn progress_text(name: &str, lines: &[String], end: Option<&str>) -> String {
    let mut t = format!("Creating {name}…\n");
    for (i, l) in lines.iter().enumerate() {
        let mark = if i + 1 < lines.len() || end.is_some() {
            "✓"
        } else {
            "⏳"
        };
        t.push_str(&format!("{mark} {l}\n"));
    }
    if let Some(e) = end {
        t.push_str(e);
    }
    // A progress message is one message: keep its tail.
    let mut text = t;
    while text.encode_utf16().count() > TELEGRAM_LIMIT {
        match text.find('\n') {
            Some(i) => {
                text.drain(..=i);
            }
            None => {
                text = text.chars().take(1000).collect();
            }
        }
    }
    text
}

impl Ui for TelegramUi {
    async fn say(&self, text: &str) {
        for part in split_message(text, TELEGRAM_LIMIT) {
            self.send(part).await;
        }
    }

    async fn say_parts(&self, parts: &[Part]) {
        let (text, entities) = text_with_blocks(parts);
        if text.encode_utf16().count() > TELEGRAM_LIMIT {
            // Too long for one message: plain text, split (blocks cannot
            // span messages).
            return self.say(&plain_text(parts)).await;
        }
        let r = self
            .bot
            .send_message(self.chat, text)
            .entities(entities)
            .await;
        if let Err(e) = r {
            // Said plainly then, rather than not at all.
            tracing::warn!(chat = self.chat.0, error = %redact(&e.to_string()), "cannot send a message with blocks");
            self.say(&plain_text(parts)).await;
        }
    }

    async fn progress(&self, name: &str, step: &Progress) {
        let mut p = self.progress.lock().await;
        let line = format!("{}: {}", step.phase, step.message);
        match p.as_mut() {
            None => {
                let lines = vec![line];
                let text = progress_text(name, &lines, None);
                if let Some(id) = self.send(text.clone()).await {
                    *p = Some(ProgressMessage {
                        id,
                        lines,
                        shown: text,
                        last_edit: Instant::now(),
                    });
                }
            }
            Some(pm) => {
                if pm.lines.last() != Some(&line) {
                    pm.lines.push(line);
                }
                if pm.last_edit.elapsed() >= EDIT_INTERVAL {
                    let text = progress_text(name, &pm.lines, None);
                    if text != pm.shown && self.edit(pm.id, &text).await {
                        pm.shown = text;
                        pm.last_edit = Instant::now();
                    }
                }
            }
        }
    }

    async fn progress_done(&self, name: &str, text: &str) -> bool {
        let mut p = self.progress.lock().await;
        let Some(pm) = p.take() else {
            return false;
        };
        let full = progress_text(name, &pm.lines, Some(text));
        self.edit(pm.id, &full).await
    }

    async fn confirm(&self, question: &str, yes: &str, no: &str, token: &str) {
        let keyboard = InlineKeyboardMarkup::new([[
            InlineKeyboardButton::callback(yes, format!("vx:d:{token}:y")),
            InlineKeyboardButton::callback(no, format!("vx:d:{token}:n")),
        ]]);
        let r = self
            .bot
            .send_message(self.chat, question.to_string())
            .reply_markup(keyboard)
            .await;
        if let Err(e) = r {
            tracing::warn!(chat = self.chat.0, error = %redact(&e.to_string()), "cannot send a confirmation");
        }
    }
}

/// The person behind a job, if the update names one.
fn job_sender(job: &Job) -> Option<i64> {
    match job {
        Job::Message(m) => m.from.as_ref().and_then(|u| i64::try_from(u.id.0).ok()),
        Job::Callback(q) => i64::try_from(q.from.id.0).ok(),
    }
}

/// Runs `voxnix telegram` until SIGTERM or Ctrl-C.
pub async fn run(bus: Option<String>, args: TelegramArgs) -> ExitCode {
    let cfg = match ChatConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("voxnix telegram: {e}");
            return ExitCode::from(2);
        }
    };
    let daemon = match DbusDaemon::connect(bus.as_deref()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "voxnix telegram: cannot reach the voxnix daemon: {}",
                e.message
            );
            return ExitCode::from(11);
        }
    };
    let bot = match Telegram::new(&cfg, daemon) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("voxnix telegram: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    };
    match bot.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("voxnix telegram: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_pre_entities_at_utf16_offsets() {
        let parts = [
            Part::Text("Add 🔑 this:".into()),
            Part::Code("Host a.voxnix\n    User root\n".into()),
            Part::Text("then".into()),
            Part::Code("a.voxnix ssh-ed25519 AAAA".into()),
        ];
        let (text, entities) = text_with_blocks(&parts);
        assert_eq!(
            text,
            "Add 🔑 this:\nHost a.voxnix\n    User root\nthen\na.voxnix ssh-ed25519 AAAA"
        );
        assert_eq!(entities.len(), 2);
        let utf16: Vec<u16> = text.encode_utf16().collect();
        let cut =
            |e: &MessageEntity| String::from_utf16_lossy(&utf16[e.offset..e.offset + e.length]);
        // The emoji is two UTF-16 units: a byte or char count would be off.
        assert_eq!(cut(&entities[0]), "Host a.voxnix\n    User root");
        assert_eq!(cut(&entities[1]), "a.voxnix ssh-ed25519 AAAA");
    }
}
