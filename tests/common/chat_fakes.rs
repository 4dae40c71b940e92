//! Fakes for the chat tests, speaking the real wire formats: the Telegram Bot
//! API (getUpdates, sendMessage, editMessageText, sendChatAction,
//! answerCallbackQuery, getFile and the file download, setMyCommands) and an
//! OpenAI-compatible server (chat completions with tool calls, audio
//! transcriptions). Also: captured tracing output, for the no-secret checks.
//!
//! Included by the chat test files with `#[path = "common/chat_fakes.rs"] mod fakes;`
//! (as a test target of its own it has no tests).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

// ---- captured logs ---------------------------------------------------------

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a subscriber that keeps every log line of
/// every level from voxnix, teloxide, async-openai and the HTTP stack.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "trace,zbus=info,zbus_names=info,zvariant=info,hyper=debug,hyper_util=debug,h2=debug,wiremock=info,tokio=info,runtime=info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// Everything logged so far in this test binary.
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

// ---- secrets ----------------------------------------------------------------

/// Writes a secret file (mode 0600) and returns its path.
pub fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

// ---- Telegram -----------------------------------------------------------------

/// One call the bot made.
#[derive(Debug, Clone)]
pub struct TgCall {
    pub method: String,
    /// The message sent (sendMessage) or edited (editMessageText).
    pub message_id: i64,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct TgState {
    updates: Vec<Value>,
    next_update: i64,
    next_message: i64,
    calls: Vec<TgCall>,
}

/// A fake Bot API server.
pub struct FakeTelegram {
    pub server: MockServer,
    state: Arc<Mutex<TgState>>,
}

const METHODS: &[&str] = &[
    "getUpdates",
    "sendMessage",
    "editMessageText",
    "sendChatAction",
    "answerCallbackQuery",
    "getFile",
    "setMyCommands",
    "deleteWebhook",
];

pub const VOICE_BYTES: &[u8] = b"OggS\x00fake opus voice note";

fn user(id: i64, bot: bool) -> Value {
    json!({"id": id, "is_bot": bot, "first_name": if bot { "voxnix" } else { "Tester" }})
}

fn chat(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "group", "title": "Group"})
    } else {
        json!({"id": id, "type": "private", "first_name": "Tester"})
    }
}

/// A message as the Bot API sends it.
pub fn tg_message(chat_id: i64, message_id: i64, from_bot: bool, text: &str) -> Value {
    tg_message_from(
        chat_id,
        if from_bot { 999 } else { chat_id.abs() },
        from_bot,
        message_id,
        text,
    )
}

/// A message of person (or bot) `from` in `chat_id`.
pub fn tg_message_from(
    chat_id: i64,
    from: i64,
    from_bot: bool,
    message_id: i64,
    text: &str,
) -> Value {
    json!({
        "message_id": message_id,
        "date": 1_700_000_000,
        "chat": chat(chat_id),
        "from": user(from, from_bot),
        "text": text,
    })
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(TgState {
            next_update: 1,
            next_message: 100,
            ..Default::default()
        }));
        let st = state.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/bot[^/]+/[A-Za-z]+$"))
            .respond_with(move |req: &Request| Self::respond(&st, req))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/file/bot[^/]+/.+$"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(VOICE_BYTES))
            .mount(&server)
            .await;
        FakeTelegram { server, state }
    }

    fn respond(state: &Mutex<TgState>, req: &Request) -> ResponseTemplate {
        // Method names are case-insensitive in the Bot API (teloxide sends
        // `SendMessage`); the calls are recorded under the documented names.
        let raw = req.url.path().rsplit('/').next().unwrap_or("");
        let name = METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(raw))
            .map(|m| m.to_string())
            .unwrap_or_else(|| raw.to_string());
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if name != "getUpdates" {
            st.calls.push(TgCall {
                method: name.clone(),
                message_id: body["message_id"].as_i64().unwrap_or(0),
                body: body.clone(),
                at: Instant::now(),
            });
        }
        let ok = |result: Value| {
            ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": result}))
        };
        match name.as_str() {
            "getUpdates" => {
                let offset = body["offset"].as_i64().unwrap_or(0);
                let pending: Vec<Value> = st
                    .updates
                    .iter()
                    .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                    .cloned()
                    .collect();
                if pending.is_empty() {
                    // A long poll that ends empty (kept short for the tests).
                    ok(json!([])).set_delay(Duration::from_millis(150))
                } else {
                    ok(Value::Array(pending))
                }
            }
            "sendMessage" => {
                st.next_message += 1;
                let id = st.next_message;
                if let Some(c) = st.calls.last_mut() {
                    c.message_id = id;
                }
                let chat_id = body["chat_id"].as_i64().unwrap_or(0);
                ok(tg_message(chat_id, id, true, body["text"].as_str().unwrap_or("")))
            }
            "editMessageText" => {
                let chat_id = body["chat_id"].as_i64().unwrap_or(0);
                let id = body["message_id"].as_i64().unwrap_or(0);
                ok(tg_message(chat_id, id, true, body["text"].as_str().unwrap_or("")))
            }
            "getFile" => ok(json!({
                "file_id": body["file_id"], "file_unique_id": "uniq",
                "file_size": VOICE_BYTES.len(), "file_path": "voice/file_1.oga"
            })),
            "sendChatAction" | "answerCallbackQuery" | "setMyCommands" | "deleteWebhook" => {
                ok(json!(true))
            }
            other => ResponseTemplate::new(400).set_body_json(json!({
                "ok": false, "error_code": 400, "description": format!("Bad Request: the fake has no {other}")
            })),
        }
    }

    /// The API URL for the bot's configuration.
    pub fn url(&self) -> String {
        self.server.uri()
    }

    fn push(&self, make: impl FnOnce(i64, i64) -> Value) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let uid = st.next_update;
        st.next_update += 1;
        st.next_message += 1;
        let mid = st.next_message;
        let mut u = make(uid, mid);
        u["update_id"] = json!(uid);
        st.updates.push(u);
    }

    /// A person in `chat` sends `text`.
    pub fn send_text(&self, chat_id: i64, text: &str) {
        self.push(|_, mid| json!({"message": tg_message(chat_id, mid, false, text)}));
    }

    /// Person `from` sends `text` in `chat` (a group, when negative).
    pub fn send_text_from(&self, chat_id: i64, from: i64, text: &str) {
        self.push(|_, mid| json!({"message": tg_message_from(chat_id, from, false, mid, text)}));
    }

    /// Person `from` presses a button with `data` in `chat`.
    pub fn press_from(&self, chat_id: i64, from: i64, message_id: i64, data: &str) {
        self.push(|uid, _| {
            json!({"callback_query": {
                "id": format!("cb-{uid}"),
                "from": user(from, false),
                "message": tg_message(chat_id, message_id, true, "Destroy?"),
                "chat_instance": "ci",
                "data": data,
            }})
        });
    }

    /// A person in `chat` sends a voice note.
    pub fn send_voice(&self, chat_id: i64) {
        self.push(|_, mid| {
            let mut m = tg_message(chat_id, mid, false, "");
            m.as_object_mut().map(|o| o.remove("text"));
            m["voice"] = json!({"file_id": "voice-file-1", "file_unique_id": "uniq",
                                "duration": 2, "mime_type": "audio/ogg", "file_size": VOICE_BYTES.len()});
            json!({"message": m})
        });
    }

    /// A person in `chat` presses a button with `data` under message `message_id`.
    pub fn press(&self, chat_id: i64, message_id: i64, data: &str) {
        self.push(|uid, _| {
            json!({"callback_query": {
                "id": format!("cb-{uid}"),
                "from": user(chat_id.abs(), false),
                "message": tg_message(chat_id, message_id, true, "Destroy?"),
                "chat_instance": "ci",
                "data": data,
            }})
        });
    }

    pub fn calls(&self) -> Vec<TgCall> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .calls
            .clone()
    }

    /// Calls of `method` to `chat`.
    pub fn calls_to(&self, method: &str, chat_id: i64) -> Vec<TgCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.body["chat_id"].as_i64() == Some(chat_id))
            .collect()
    }

    /// Texts sent or edited into `chat`, in order.
    pub fn texts_to(&self, chat_id: i64) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| {
                (c.method == "sendMessage" || c.method == "editMessageText")
                    && c.body["chat_id"].as_i64() == Some(chat_id)
            })
            .filter_map(|c| c.body["text"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until `f` finds something in the calls.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        f: impl Fn(&[TgCall]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(&self.calls()) {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a message (sent or edited) to `chat` containing `needle`;
    /// returns the call.
    pub async fn wait_text(&self, chat_id: i64, needle: &str, timeout: Duration) -> Option<TgCall> {
        self.wait_for(timeout, |calls| {
            calls
                .iter()
                .find(|c| {
                    (c.method == "sendMessage" || c.method == "editMessageText")
                        && c.body["chat_id"].as_i64() == Some(chat_id)
                        && c.body["text"].as_str().is_some_and(|t| t.contains(needle))
                })
                .cloned()
        })
        .await
    }

    /// Every request body the fake received, as text.
    pub async fn bodies(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }
}

// ---- the OpenAI-compatible server -------------------------------------------

/// What the scripted model answers: text, or tool calls (name, arguments JSON).
#[derive(Debug, Clone)]
pub enum Answer {
    Text(String),
    Calls(Vec<(String, Value)>),
    /// Raw arguments text (for malformed calls).
    RawCall(String, String),
}

pub fn text(t: &str) -> Answer {
    Answer::Text(t.to_string())
}

pub fn call(name: &str, args: Value) -> Answer {
    Answer::Calls(vec![(name.to_string(), args)])
}

type Script = dyn Fn(&Value) -> Answer + Send + Sync;

/// A fake OpenAI-compatible server: `script` sees each chat completion
/// request and says what the model answers.
pub struct FakeLlm {
    pub server: MockServer,
    pub transcript: Arc<Mutex<String>>,
}

fn completion(answer: Answer, n: u64) -> Value {
    let (message, finish) = match answer {
        Answer::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Answer::Calls(calls) => (
            json!({"role": "assistant", "content": null, "tool_calls": calls.iter().enumerate().map(|(i, (name, args))| json!({
                "id": format!("call_{n}_{i}"), "type": "function",
                "function": {"name": name, "arguments": args.to_string()}
            })).collect::<Vec<_>>()}),
            "tool_calls",
        ),
        Answer::RawCall(name, args) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": format!("call_{n}_0"), "type": "function",
                "function": {"name": name, "arguments": args}
            }]}),
            "tool_calls",
        ),
    };
    json!({
        "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 1_700_000_000,
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
}

impl FakeLlm {
    pub async fn start(script: impl Fn(&Value) -> Answer + Send + Sync + 'static) -> Self {
        let server = MockServer::start().await;
        let script: Arc<Script> = Arc::new(script);
        let counter = Arc::new(Mutex::new(0u64));
        Mock::given(method("POST"))
            .and(path_regex(r"^/v1/chat/completions$"))
            .respond_with(move |req: &Request| {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let n = {
                    let mut c = counter.lock().unwrap_or_else(|e| e.into_inner());
                    *c += 1;
                    *c
                };
                ResponseTemplate::new(200).set_body_json(completion(script(&body), n))
            })
            .mount(&server)
            .await;
        let transcript = Arc::new(Mutex::new(String::from("list my containers")));
        let t = transcript.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/v1/audio/transcriptions$"))
            .respond_with(move |_: &Request| {
                let text = t.lock().unwrap_or_else(|e| e.into_inner()).clone();
                ResponseTemplate::new(200).set_body_json(json!({"text": text}))
            })
            .mount(&server)
            .await;
        FakeLlm { server, transcript }
    }

    /// `base_url` for `[llm]`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    /// The chat completion requests received, as JSON.
    pub async fn chat_requests(&self) -> Vec<Value> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().ends_with("/chat/completions"))
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    /// Every request received (all endpoints).
    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }
}

/// A script built from a queue of answers (for scripted conversations).
pub fn queue_script(q: Arc<Mutex<VecDeque<Answer>>>) -> impl Fn(&Value) -> Answer + Send + Sync {
    move |_| {
        q.lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or_else(|| text("(the script has no more answers)"))
    }
}

/// The last message of a chat completion request.
pub fn last_message(req: &Value) -> &Value {
    req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .unwrap_or(&Value::Null)
}

/// Checks one request: the system prompt first, history within the limit,
/// and every tool call followed by its results (and no result without its call).
pub fn check_request(req: &Value, max_history: usize) -> Result<(), String> {
    let msgs = req["messages"].as_array().ok_or("no messages")?;
    if msgs.first().map(|m| m["role"].clone()) != Some(json!("system")) {
        return Err("the first message is not the system prompt".into());
    }
    if msgs.iter().skip(1).any(|m| m["role"] == "system") {
        return Err("a second system message".into());
    }
    if msgs.len() - 1 > max_history {
        return Err(format!("{} history messages sent", msgs.len() - 1));
    }
    let mut open: Vec<String> = Vec::new();
    for m in &msgs[1..] {
        match m["role"].as_str() {
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or("");
                match open.iter().position(|o| o == id) {
                    Some(i) => {
                        open.remove(i);
                    }
                    None => return Err(format!("a tool result without its call: {id}")),
                }
            }
            Some("assistant") => {
                if !open.is_empty() {
                    return Err(format!("calls without results: {open:?}"));
                }
                open = m["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["id"].as_str().map(str::to_string))
                    .collect();
            }
            Some("user") => {
                if !open.is_empty() {
                    return Err(format!("calls without results: {open:?}"));
                }
            }
            other => return Err(format!("unexpected role {other:?}")),
        }
    }
    if open.is_empty() {
        Ok(())
    } else {
        Err(format!("calls without results at the end: {open:?}"))
    }
}
