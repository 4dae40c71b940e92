//! The OpenAI-compatible endpoint: chat completions with tools, and audio
//! transcription. Works with any server speaking that API (OpenAI, Ollama,
//! vLLM, llama.cpp's server, OpenRouter ...).

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::InputSource;
use async_openai::types::audio::{AudioInput, AudioResponseFormat, CreateTranscriptionRequest};
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, ChatCompletionTool, ChatCompletionToolChoiceOption,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject,
    ToolChoiceOptions,
};
use thiserror::Error;

use super::config::{ConfigError, LlmConfig};
use super::history::{Msg, ToolCallRecord};
use super::secret::redact;

/// Why the model could not be asked. The text never holds a secret; it goes to
/// the log, and the person gets [`LlmError::summary`].
#[derive(Debug, Error)]
pub enum LlmError {
    #[error("the model did not answer within {0} s")]
    Timeout(u64),
    #[error("the model's server refused the request: {0}")]
    Api(String),
    #[error("the model's server could not be reached: {0}")]
    Network(String),
    #[error("the model's answer could not be understood: {0}")]
    Malformed(String),
    #[error("no transcription model is configured")]
    NoTranscription,
}

impl LlmError {
    /// One plain sentence for the person.
    pub fn summary(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => {
                "The language model took too long to answer. Try again, or use the slash commands (/help)."
            }
            LlmError::Api(_) | LlmError::Network(_) | LlmError::Malformed(_) => {
                "The language model is not available right now. The slash commands still work (/help)."
            }
            LlmError::NoTranscription => {
                "Voice notes are not enabled here; please type your message."
            }
        }
    }
}

impl From<OpenAIError> for LlmError {
    fn from(e: OpenAIError) -> Self {
        match e {
            OpenAIError::Reqwest(r) => LlmError::Network(redact(&r.to_string())),
            OpenAIError::ApiError(a) => LlmError::Api(redact(&a.to_string())),
            OpenAIError::JSONDeserialize(err, content) => {
                let mut c = redact(&content);
                if c.len() > 300 {
                    let mut end = 300;
                    while !c.is_char_boundary(end) {
                        end -= 1;
                    }
                    c.truncate(end);
                }
                LlmError::Malformed(format!("{err}; content: {c}"))
            }
            other => LlmError::Malformed(redact(&other.to_string())),
        }
    }
}

/// What the model answered in one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCallRecord>,
}

/// A configured model.
pub struct Llm {
    client: Client<OpenAIConfig>,
    cfg: LlmConfig,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("base_url", &self.cfg.base_url)
            .field("model", &self.cfg.model)
            .finish_non_exhaustive()
    }
}

impl Llm {
    /// The model of `[llm]`, or None when none is configured. Reads the API
    /// key file.
    pub fn from_config(cfg: &LlmConfig) -> Result<Option<Llm>, ConfigError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let key = cfg.api_key()?;
        install_tls_provider();
        // Always set the key (possibly empty), so OPENAI_API_KEY from the
        // environment is never picked up behind the configuration's back.
        let oc = OpenAIConfig::new()
            .with_api_base(cfg.base_url.trim_end_matches('/'))
            .with_api_key(key.as_ref().map(|k| k.expose()).unwrap_or(""))
            .with_org_id("")
            .with_project_id("");
        Ok(Some(Llm {
            client: Client::with_config(oc),
            cfg: cfg.clone(),
        }))
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    pub fn can_transcribe(&self) -> bool {
        !self.cfg.transcription_model.is_empty()
    }

    /// One step: the system prompt, the messages, the tools. `allow_tools`
    /// false asks for a text answer (the last step).
    pub async fn complete(
        &self,
        system: &str,
        messages: &[Msg],
        tools: &[(&'static str, String, serde_json::Value)],
        allow_tools: bool,
    ) -> Result<Reply, LlmError> {
        let mut req_messages = Vec::with_capacity(messages.len() + 1);
        req_messages.push(ChatCompletionRequestMessage::System(
            ChatCompletionRequestSystemMessage {
                content: system.into(),
                name: None,
            },
        ));
        req_messages.extend(messages.iter().map(to_request));
        let tools: Vec<ChatCompletionTools> = tools
            .iter()
            .map(|(name, description, schema)| {
                ChatCompletionTools::Function(ChatCompletionTool {
                    function: FunctionObject {
                        name: (*name).to_string(),
                        description: Some(description.clone()),
                        parameters: Some(schema.clone()),
                        strict: None,
                    },
                })
            })
            .collect();
        let request = CreateChatCompletionRequest {
            messages: req_messages,
            model: self.cfg.model.clone(),
            tool_choice: Some(ChatCompletionToolChoiceOption::Mode(if allow_tools {
                ToolChoiceOptions::Auto
            } else {
                ToolChoiceOptions::None
            })),
            tools: (!tools.is_empty()).then_some(tools),
            temperature: self.cfg.temperature,
            ..Default::default()
        };
        let response = tokio::time::timeout(
            self.cfg.request_timeout(),
            self.client.chat().create(request),
        )
        .await
        .map_err(|_| LlmError::Timeout(self.cfg.request_timeout_secs))??;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(LlmError::Malformed("no choices in the answer".into()));
        };
        let m = choice.message;
        let tool_calls = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| match c {
                ChatCompletionMessageToolCalls::Function(f) => Some(ToolCallRecord {
                    id: f.id,
                    name: f.function.name,
                    arguments: f.function.arguments,
                }),
                ChatCompletionMessageToolCalls::Custom(_) => None,
            })
            .collect();
        let text = m
            .content
            .filter(|t| !t.trim().is_empty())
            .or(m.refusal.filter(|t| !t.trim().is_empty()));
        Ok(Reply { text, tool_calls })
    }

    /// Transcribes a voice note (`filename` tells the format, e.g. `voice.ogg`).
    pub async fn transcribe(&self, filename: &str, audio: Vec<u8>) -> Result<String, LlmError> {
        if !self.can_transcribe() {
            return Err(LlmError::NoTranscription);
        }
        let request = CreateTranscriptionRequest {
            file: AudioInput {
                source: InputSource::VecU8 {
                    filename: filename.to_string(),
                    vec: audio,
                },
            },
            model: self.cfg.transcription_model.clone(),
            language: (!self.cfg.transcription_language.is_empty())
                .then(|| self.cfg.transcription_language.clone()),
            response_format: Some(AudioResponseFormat::Json),
            ..Default::default()
        };
        let body = tokio::time::timeout(
            self.cfg.request_timeout(),
            self.client.audio().transcription().create_raw(request),
        )
        .await
        .map_err(|_| LlmError::Timeout(self.cfg.request_timeout_secs))??;
        // `{"text": ...}`; servers that ignore response_format send the text.
        let text = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => v["text"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| LlmError::Malformed("the transcription has no text".into()))?,
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        Ok(text.trim().to_string())
    }
}

/// Makes ring the process's TLS provider (async-openai's HTTP client needs
/// one; teloxide's brings its own). Installing twice is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn to_request(m: &Msg) -> ChatCompletionRequestMessage {
    match m {
        Msg::User(t) => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
            content: t.as_str().into(),
            name: None,
        }),
        Msg::Assistant { text, tool_calls } => {
            ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                content: text.as_deref().map(Into::into),
                tool_calls: (!tool_calls.is_empty()).then(|| {
                    tool_calls
                        .iter()
                        .map(|c| {
                            ChatCompletionMessageToolCalls::Function(
                                ChatCompletionMessageToolCall {
                                    id: c.id.clone(),
                                    function: FunctionCall {
                                        name: c.name.clone(),
                                        arguments: c.arguments.clone(),
                                    },
                                },
                            )
                        })
                        .collect()
                }),
                ..Default::default()
            })
        }
        Msg::Tool { call_id, content } => {
            ChatCompletionRequestMessage::Tool(ChatCompletionRequestToolMessage {
                content: content.as_str().into(),
                tool_call_id: call_id.clone(),
            })
        }
    }
}
