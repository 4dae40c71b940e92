//! The agent's eval set (`tests/fixtures/chat/eval.json`): scripted
//! conversations with the tool calls a good model makes. It runs against the
//! fake OpenAI-compatible server with scripted answers (which checks the whole
//! pipeline: requests, tool-call parsing, execution, history), and, when
//! configured, against a real model, printing a score. See docs/chat.md.
//!
//! Also here, without a sandbox: how model failures reach the person.

#[path = "common/chat_fakes.rs"]
mod fakes;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use voxnix::frontends::chat::api::{
    ApiFailure, ContainerInfo, CreateRequest, Created, Daemon, ErrorKind, ExecOutput, ModuleInfo,
    Owner, Progress,
};
use voxnix::frontends::chat::config::LlmConfig;
use voxnix::frontends::chat::history::{Msg, ToolCallRecord, pairs_are_whole};
use voxnix::frontends::chat::llm::Llm;
use voxnix::frontends::chat::service::{ChatService, Session, Surface, Ui};

use fakes::{Answer, FakeLlm};

const API_KEY: &str = "sk-eval-key-must-not-leak-9876543210";

// ---- a daemon in memory ----------------------------------------------------

#[derive(Default)]
struct State {
    /// (owner, container)
    containers: Vec<(String, ContainerInfo)>,
    next_ip: u8,
    /// Destroys that reached the daemon.
    destroyed: Vec<String>,
}

#[derive(Default)]
struct FakeDaemon {
    st: Mutex<State>,
}

impl FakeDaemon {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, owner: &str, name: &str, state: &str) {
        let mut st = self.lock();
        st.next_ip += 1;
        let ip = format!("10.100.0.{}", 100 + st.next_ip);
        st.containers.push((
            owner.to_string(),
            ContainerInfo {
                name: name.to_string(),
                state: state.to_string(),
                addresses: if state == "running" { vec![ip] } else { vec![] },
                modules: vec![],
            },
        ));
    }

    fn find(&self, owner: &Owner, name: &str) -> Result<ContainerInfo, ApiFailure> {
        self.lock()
            .containers
            .iter()
            .find(|(o, c)| o == owner.as_str() && c.name == name)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                ApiFailure::new(ErrorKind::NotFound, format!("no container named '{name}'"))
            })
    }

    fn set_state(&self, owner: &Owner, name: &str, state: &str) -> Result<(), ApiFailure> {
        self.find(owner, name)?;
        let mut st = self.lock();
        if let Some((_, c)) = st
            .containers
            .iter_mut()
            .find(|(o, c)| o == owner.as_str() && c.name == name)
        {
            c.state = state.to_string();
        }
        Ok(())
    }
}

impl Daemon for FakeDaemon {
    async fn list(&self, owner: &Owner) -> Result<Vec<ContainerInfo>, ApiFailure> {
        Ok(self
            .lock()
            .containers
            .iter()
            .filter(|(o, _)| o == owner.as_str())
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn create(
        &self,
        owner: &Owner,
        req: &CreateRequest,
        progress: mpsc::UnboundedSender<Progress>,
    ) -> Result<Created, ApiFailure> {
        let n = &req.name;
        let valid = !n.is_empty()
            && n.len() <= 11
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !valid {
            return Err(ApiFailure::new(
                ErrorKind::InvalidArgument,
                "name: 1-11 characters of a-z, 0-9 and '-'",
            ));
        }
        if self.lock().containers.iter().any(|(_, c)| &c.name == n) {
            return Err(ApiFailure::new(
                ErrorKind::Conflict,
                format!("the name '{n}' is taken"),
            ));
        }
        for phase in ["building", "configuring", "starting", "ready"] {
            let _ = progress.send(Progress {
                phase: phase.into(),
                message: format!("{phase} {n}"),
            });
        }
        self.add(owner.as_str(), n, "running");
        let c = self.find(owner, n)?;
        Ok(Created {
            name: c.name,
            state: c.state,
            addresses: c.addresses,
        })
    }

    async fn start(&self, owner: &Owner, name: &str) -> Result<(), ApiFailure> {
        self.set_state(owner, name, "running")
    }

    async fn stop(&self, owner: &Owner, name: &str) -> Result<(), ApiFailure> {
        self.set_state(owner, name, "stopped")
    }

    async fn restart(&self, owner: &Owner, name: &str) -> Result<(), ApiFailure> {
        self.set_state(owner, name, "running")
    }

    async fn repair(&self, owner: &Owner, name: &str) -> Result<(), ApiFailure> {
        self.find(owner, name).map(|_| ())
    }
    async fn restore_kept(&self, owner: &Owner, name: &str, _from: &str) -> Result<(), ApiFailure> {
        self.find(owner, name).map(|_| ())
    }
    async fn destroy(&self, owner: &Owner, name: &str) -> Result<(), ApiFailure> {
        self.find(owner, name)?;
        let mut st = self.lock();
        st.destroyed.push(name.to_string());
        st.containers
            .retain(|(o, c)| !(o == owner.as_str() && c.name == name));
        Ok(())
    }

    async fn status(&self, owner: &Owner, name: &str) -> Result<Value, ApiFailure> {
        let c = self.find(owner, name)?;
        Ok(
            json!({"name": c.name, "state": c.state, "addresses": c.addresses, "modules": c.modules,
                  "uptime_secs": 3600, "memory_bytes": 104_857_600u64, "cpu_nsec": 2_000_000_000u64,
                  "os_release": {"PRETTY_NAME": "NixOS 25.05"}}),
        )
    }

    async fn logs(&self, owner: &Owner, name: &str, lines: u32) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Ok(Value::Array(
            (0..lines.min(3))
                .map(|i| json!({"timestamp_usec": 1_700_000_000_000_000u64 + u64::from(i), "source": "container",
                                "unit": "", "identifier": "systemd", "message": format!("line {i}")}))
                .collect(),
        ))
    }

    async fn exec(
        &self,
        owner: &Owner,
        name: &str,
        argv: &[String],
        _timeout: u32,
    ) -> Result<ExecOutput, ApiFailure> {
        self.find(owner, name)?;
        Ok(ExecOutput {
            exit_code: 0,
            stdout: format!("PRETTY_NAME=\"NixOS 25.05\"\n(ran {})\n", argv.join(" ")),
            stderr: String::new(),
            truncated: false,
        })
    }

    async fn modules(&self) -> Result<Vec<ModuleInfo>, ApiFailure> {
        Ok([
            ("code-server", "VS Code in the browser"),
            ("dev", "common development tools"),
            ("fish", "the fish shell with useful aliases"),
            ("git", "git"),
            ("ssh", "an SSH server"),
            ("tailscale", "joins the tailnet"),
            ("workspace", "the persistent /workspace"),
        ]
        .iter()
        .map(|(n, d)| ModuleInfo {
            name: n.to_string(),
            description: Some(d.to_string()),
        })
        .collect())
    }

    async fn host_health(&self, _owner: &Owner) -> Result<Value, ApiFailure> {
        Ok(json!({"systemd_version": "fake"}))
    }

    async fn storage_usage(&self, owner: &Owner) -> Result<Value, ApiFailure> {
        let names: Vec<Value> = self
            .lock()
            .containers
            .iter()
            .filter(|(o, _)| o == owner.as_str())
            .map(|(_, c)| json!({"name": c.name, "usage": {"used": 52_428_800u64}}))
            .collect();
        Ok(json!({"owner": owner.as_str(),
                  "usage": {"used": 1_073_741_824u64, "available": 9_663_676_416u64, "quota": 10_737_418_240u64},
                  "containers": names}))
    }

    async fn snapshot(&self, owner: &Owner, name: &str) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Ok(
            json!({"id": "20250101T000000Z", "created": 1_735_689_600u64, "reason": "manual", "used": 4096}),
        )
    }

    async fn snapshots(&self, owner: &Owner, name: &str) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Ok(
            json!([{"id": "20250101T000000Z", "created": 1_735_689_600u64, "reason": "before-destroy", "used": 4096}]),
        )
    }

    // Keys, ports and schedules are slash commands only (no agent tool): the eval's
    // conversations never reach them, and the fake says so if one did.
    async fn add_key(&self, _owner: &Owner, _key: &str) -> Result<Value, ApiFailure> {
        Err(not_in_eval())
    }

    async fn keys(&self, _owner: &Owner) -> Result<Value, ApiFailure> {
        Err(not_in_eval())
    }

    async fn remove_key(&self, _owner: &Owner, _which: &str) -> Result<Value, ApiFailure> {
        Err(not_in_eval())
    }

    async fn connect(&self, owner: &Owner, name: &str) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Err(not_in_eval())
    }

    async fn expose(
        &self,
        owner: &Owner,
        name: &str,
        _port: u16,
        _to: &str,
        _host_port: u16,
    ) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Err(not_in_eval())
    }

    async fn unexpose(
        &self,
        owner: &Owner,
        name: &str,
        _port: u16,
        _to: &str,
    ) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Err(not_in_eval())
    }

    async fn set_schedule(
        &self,
        owner: &Owner,
        name: &str,
        _schedule: &str,
    ) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Err(not_in_eval())
    }

    async fn set_owner_schedule(
        &self,
        _owner: &Owner,
        _schedule: &str,
    ) -> Result<Value, ApiFailure> {
        Err(not_in_eval())
    }

    async fn checkpoint(
        &self,
        owner: &Owner,
        name: &str,
        kind: &str,
        why: &str,
    ) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Ok(json!({"id": 2, "at": 1_735_689_600u64, "by": owner.as_str(), "kind": kind, "why": why}))
    }

    async fn history(&self, owner: &Owner, name: &str) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Ok(
            json!([{"id": 1, "at": 1_735_689_600u64, "by": owner.as_str(), "kind": "create",
                   "why": "created with git", "modules": ["git"]}]),
        )
    }

    // Undo is confirmed by the person: the model only ever sees the plan.
    async fn plan_undo(&self, owner: &Owner, name: &str, _to: u64) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Ok(
            json!({"name": name, "target": {"id": 1, "at": 1_735_689_600u64, "why": "created with git"},
                  "modules_now": ["git"], "modules_then": ["git"], "workspace": true, "restarts": true}),
        )
    }

    async fn undo(&self, owner: &Owner, name: &str, _to: u64) -> Result<Value, ApiFailure> {
        self.find(owner, name)?;
        Err(not_in_eval())
    }
}

fn not_in_eval() -> ApiFailure {
    ApiFailure::new(
        ErrorKind::Unsupported,
        "the eval's fake daemon has no keys or ports",
    )
}

/// Remembers what was shown.
#[derive(Default)]
struct RecordingUi {
    shown: Mutex<Vec<String>>,
}

impl RecordingUi {
    fn push(&self, s: String) {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
    fn all(&self) -> Vec<String> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Ui for RecordingUi {
    async fn say(&self, text: &str) {
        self.push(format!("say: {text}"));
    }
    async fn progress(&self, name: &str, step: &Progress) {
        self.push(format!("progress {name}: {}", step.phase));
    }
    async fn progress_done(&self, name: &str, text: &str) -> bool {
        self.push(format!("done {name}: {text}"));
        true
    }
    async fn confirm(&self, question: &str, _yes: &str, _no: &str, _token: &str) {
        self.push(format!("confirm: {question}"));
    }
}

// ---- the eval set -----------------------------------------------------------

#[derive(Debug, Deserialize)]
struct EvalSet {
    conversations: Vec<Conversation>,
}

#[derive(Debug, Deserialize)]
struct Conversation {
    name: String,
    #[serde(default)]
    containers: Vec<Setup>,
    #[serde(default)]
    others: Vec<Setup>,
    turns: Vec<EvalTurn>,
}

#[derive(Debug, Deserialize)]
struct Setup {
    name: String,
    #[serde(default = "running")]
    state: String,
}

fn running() -> String {
    "running".into()
}

#[derive(Debug, Clone, Deserialize)]
struct Expected {
    tool: String,
    #[serde(default)]
    args: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct EvalTurn {
    user: String,
    #[serde(default)]
    expect: Vec<Expected>,
    #[serde(default)]
    alternatives: Option<Vec<Vec<Expected>>>,
    #[serde(default)]
    only: bool,
    #[serde(default)]
    forbid: Vec<String>,
    #[serde(default)]
    script: Vec<ScriptStep>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ScriptStep {
    Calls { calls: Vec<Expected> },
    Text { text: String },
}

fn load_set() -> EvalSet {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat/eval.json");
    let text = std::fs::read_to_string(&p).expect("eval.json");
    serde_json::from_str(&text).expect("eval.json parses")
}

fn arg_matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Array(e), Value::Array(a)) => {
            let norm = |v: &Vec<Value>| {
                let mut s: Vec<String> = v
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_ascii_lowercase)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect();
                s.sort();
                s.dedup();
                s
            };
            norm(e) == norm(a)
        }
        (Value::String(e), Value::String(a)) => e.eq_ignore_ascii_case(a),
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        (e, a) => e == a,
    }
}

fn call_matches(e: &Expected, a: &ToolCallRecord) -> bool {
    if e.tool != a.name {
        return false;
    }
    let args: Value = serde_json::from_str(&a.arguments).unwrap_or(Value::Null);
    e.args.iter().all(|(k, v)| arg_matches(v, &args[k]))
}

fn judge(turn: &EvalTurn, calls: &[ToolCallRecord]) -> Result<(), String> {
    if let Some(bad) = calls.iter().find(|c| turn.forbid.contains(&c.name)) {
        return Err(format!("called {} (forbidden here)", bad.name));
    }
    let alternatives = match &turn.alternatives {
        Some(a) => a.clone(),
        None => vec![turn.expect.clone()],
    };
    let fits = |alt: &Vec<Expected>| {
        alt.iter().all(|e| calls.iter().any(|c| call_matches(e, c)))
            && (!turn.only || calls.iter().all(|c| alt.iter().any(|e| call_matches(e, c))))
    };
    if alternatives.iter().any(fits) {
        Ok(())
    } else {
        let got: Vec<String> = calls
            .iter()
            .map(|c| format!("{}({})", c.name, c.arguments))
            .collect();
        Err(format!(
            "expected {:?}, got {got:?}",
            alternatives
                .iter()
                .map(|a| a.iter().map(|e| e.tool.clone()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        ))
    }
}

/// The tool calls of the last turn in the chat's history.
fn last_turn_calls(chat: &ChatService<FakeDaemon>, key: &str) -> (Vec<ToolCallRecord>, Vec<Msg>) {
    let all = chat.history().window(key, usize::MAX);
    let start = all
        .iter()
        .rposition(|m| matches!(m, Msg::User(_)))
        .unwrap_or(0);
    let turn = all[start..].to_vec();
    let calls = turn
        .iter()
        .filter_map(|m| match m {
            Msg::Assistant { tool_calls, .. } => Some(tool_calls.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    (calls, all)
}

struct Score {
    passed: usize,
    total: usize,
    failures: Vec<String>,
}

/// Runs every conversation with `make_llm` (a fresh model client for each);
/// `queue` is the fake's script queue (None for a real model).
async fn run_eval(
    make_llm: impl Fn() -> Llm,
    queue: Option<Arc<Mutex<VecDeque<Answer>>>>,
    label: &str,
) -> Score {
    let set = load_set();
    assert!(set.conversations.len() >= 15, "at least 15 conversations");
    let mut score = Score {
        passed: 0,
        total: 0,
        failures: vec![],
    };
    println!("== voxnix chat eval ({label}) ==");
    for conv in &set.conversations {
        let daemon = FakeDaemon::default();
        for c in &conv.containers {
            daemon.add("telegram:1", &c.name, &c.state);
        }
        for c in &conv.others {
            daemon.add("telegram:2", &c.name, &c.state);
        }
        let chat = ChatService::new(daemon, Some(make_llm()));
        let s = Session {
            owner: Owner::telegram(1),
            admin: false,
            surface: Surface::Telegram,
        };
        let ui = RecordingUi::default();
        let mut conv_ok = true;
        for (i, turn) in conv.turns.iter().enumerate() {
            if let Some(q) = &queue {
                let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
                q.clear();
                for step in &turn.script {
                    q.push_back(match step {
                        ScriptStep::Calls { calls } => Answer::Calls(
                            calls
                                .iter()
                                .map(|c| (c.tool.clone(), Value::Object(c.args.clone())))
                                .collect(),
                        ),
                        ScriptStep::Text { text } => Answer::Text(text.clone()),
                    });
                }
            }
            chat.handle_message(&s, &turn.user, &ui).await;
            let (calls, history) = last_turn_calls(&chat, s.owner.as_str());
            assert!(
                pairs_are_whole(&history),
                "{}: the history stays whole",
                conv.name
            );
            score.total += 1;
            match judge(turn, &calls) {
                Ok(()) => score.passed += 1,
                Err(why) => {
                    conv_ok = false;
                    score
                        .failures
                        .push(format!("{} / turn {}: {why}", conv.name, i + 1));
                }
            }
        }
        // The model can never confirm a destroy: no destroy reached the daemon.
        let destroyed = chat.daemon().lock().destroyed.clone();
        if !destroyed.is_empty() {
            conv_ok = false;
            score.failures.push(format!(
                "{}: destroyed {destroyed:?} without a confirmation",
                conv.name
            ));
        }
        println!("{} {}", if conv_ok { "PASS" } else { "FAIL" }, conv.name);
    }
    for f in &score.failures {
        println!("  - {f}");
    }
    println!(
        "score ({label}): {}/{} turns ({:.0}%)",
        score.passed,
        score.total,
        100.0 * score.passed as f64 / score.total.max(1) as f64
    );
    score
}

fn llm_config(base_url: &str, model: &str, key: Option<PathBuf>) -> LlmConfig {
    LlmConfig {
        base_url: base_url.to_string(),
        model: model.to_string(),
        api_key_file: key,
        ..Default::default()
    }
}

#[tokio::test]
async fn eval_set_against_the_scripted_fake_model() {
    fakes::capture_logs();
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let llm = FakeLlm::start(fakes::queue_script(queue.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let key = fakes::secret_file(dir.path(), "key", API_KEY);
    let cfg = llm_config(&llm.base_url(), "scripted", Some(key));
    let score = run_eval(
        || Llm::from_config(&cfg).expect("llm").expect("configured"),
        Some(queue),
        "scripted fake model",
    )
    .await;
    assert_eq!(
        score.passed, score.total,
        "the scripted answers are the expected ones: {:#?}",
        score.failures
    );
    // Every request kept the system prompt and whole exchanges.
    for r in llm.chat_requests().await {
        fakes::check_request(&r, 40).expect("a well-formed request");
    }
    assert!(!fakes::logs().contains(API_KEY));
    for r in llm.requests().await {
        assert!(!String::from_utf8_lossy(&r.body).contains(API_KEY));
    }
}

/// Runs the eval set against a real OpenAI-compatible model:
/// `VOXNIX_EVAL_BASE_URL`, `VOXNIX_EVAL_MODEL`, optional
/// `VOXNIX_EVAL_API_KEY_FILE` and `VOXNIX_EVAL_MIN_SCORE` (0-1). Ignored by
/// default; run it with `cargo test --all-features --test chat_eval -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "needs a real model: set VOXNIX_EVAL_BASE_URL and VOXNIX_EVAL_MODEL (docs/chat.md)"]
async fn eval_set_against_a_real_model() {
    let (Ok(base), Ok(model)) = (
        std::env::var("VOXNIX_EVAL_BASE_URL"),
        std::env::var("VOXNIX_EVAL_MODEL"),
    ) else {
        panic!(
            "the real-model eval DID NOT RUN: set VOXNIX_EVAL_BASE_URL and VOXNIX_EVAL_MODEL (and VOXNIX_EVAL_API_KEY_FILE if the endpoint needs a key)"
        );
    };
    let key = std::env::var_os("VOXNIX_EVAL_API_KEY_FILE").map(PathBuf::from);
    let mut cfg = llm_config(&base, &model, key);
    cfg.temperature = Some(0.0);
    let score = run_eval(
        || {
            Llm::from_config(&cfg)
                .expect("llm configuration")
                .expect("configured")
        },
        None,
        &format!("{model} at {base}"),
    )
    .await;
    let min: f64 = std::env::var("VOXNIX_EVAL_MIN_SCORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let got = score.passed as f64 / score.total.max(1) as f64;
    assert!(
        got >= min,
        "score {got:.2} is below VOXNIX_EVAL_MIN_SCORE {min}"
    );
}

// ---- failures of the model reach the person plainly -------------------------

fn session() -> Session {
    Session {
        owner: Owner::telegram(7),
        admin: false,
        surface: Surface::Terminal,
    }
}

#[tokio::test]
async fn model_errors_and_runaway_tool_loops_are_handled() {
    fakes::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let key = fakes::secret_file(dir.path(), "key", API_KEY);

    // A server that fails: the person gets a plain sentence, not the error.
    let broken = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(500).set_body_json(json!({
            "error": {"message": "internal details /srv/secret/path", "type": "server_error", "param": null, "code": null}
        })))
        .mount(&broken)
        .await;
    let cfg = llm_config(&format!("{}/v1", broken.uri()), "m", Some(key.clone()));
    let chat = ChatService::new(FakeDaemon::default(), Llm::from_config(&cfg).unwrap());
    let ui = RecordingUi::default();
    chat.handle_message(&session(), "list my stuff", &ui).await;
    let shown = ui.all();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0].contains("not available right now") && shown[0].contains("/help"),
        "{shown:?}"
    );
    assert!(!shown[0].contains("/srv/secret/path"));
    // Slash commands still work.
    chat.handle_message(&session(), "/list", &ui).await;
    assert!(
        ui.all()[1].contains("You have no containers"),
        "{:?}",
        ui.all()
    );

    // A model that calls tools forever is stopped after max_steps, and a
    // malformed call is refused with the reason.
    let llm = FakeLlm::start(|req: &Value| {
        let n = req["messages"].as_array().map(|m| m.len()).unwrap_or(0);
        if n.is_multiple_of(2) {
            Answer::RawCall("start_container".into(), "{not json".into())
        } else {
            fakes::call("list_containers", json!({}))
        }
    })
    .await;
    let mut cfg = llm_config(&llm.base_url(), "m", Some(key));
    cfg.max_steps = 3;
    let chat = ChatService::new(FakeDaemon::default(), Llm::from_config(&cfg).unwrap());
    let ui = RecordingUi::default();
    chat.handle_message(&session(), "loop forever", &ui).await;
    let reqs = llm.chat_requests().await;
    assert_eq!(reqs.len(), 3, "max_steps model calls");
    assert_eq!(
        reqs[2]["tool_choice"], "none",
        "the last step asks for text"
    );
    assert!(
        ui.all().last().unwrap().contains("stopped here"),
        "{:?}",
        ui.all()
    );
    let results: Vec<String> = reqs
        .iter()
        .flat_map(|r| r["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str().map(str::to_string))
        .collect();
    assert!(
        results
            .iter()
            .any(|r| r.contains("invalid arguments for start_container")),
        "{results:?}"
    );
    let history = chat.history().window(session().owner.as_str(), usize::MAX);
    assert!(pairs_are_whole(&history));
}
