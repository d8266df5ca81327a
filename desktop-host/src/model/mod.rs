//! Model backends: one request to an LLM server in, a stream of [`ModelEvent`]s out.
//!
//! Two wire formats, each a sans-IO parser of server-sent events ([`anthropic::Parser`],
//! [`openai::Parser`]) behind one HTTP client ([`sse`]): the Anthropic Messages API and any
//! OpenAI-compatible chat completions server (Ollama, llama.cpp's `llama-server`, vLLM, LM
//! Studio). The loop that turns events into tool calls and tool results into the next request
//! is [`agent::ModelAgent`], shared by both.

use std::fmt;
use std::pin::Pin;

use futures_util::Stream;
use serde_json::Value;

use crate::agent::{BoxFuture, ToolDef};

pub mod agent;
pub mod anthropic;
pub mod openai;
pub mod sse;

pub use agent::{Limits, ModelAgent, Routed};

/// One message of the conversation sent to a model.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatMessage {
    /// What the person said (a request, or an earlier one from the history).
    User(String),
    /// What the model said: its text and the tools it called.
    Assistant {
        /// Its text (may be empty).
        text: String,
        /// The calls it made, in order.
        calls: Vec<ModelToolCall>,
    },
    /// The results of the calls of the assistant message before, in the same order.
    ToolResults(Vec<ToolResult>),
}

/// A tool call the model made, complete.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelToolCall {
    /// The call's id, as the server named it (made up when a server sent none).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments: a JSON object (an object the model could not write as JSON is a string).
    pub arguments: Value,
}

/// The result of one call, sent back to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    /// The [`ModelToolCall::id`] it answers.
    pub call_id: String,
    /// What the tool gave back, or why it did not run (already bounded in size).
    pub content: String,
    /// The call was refused, not approved or failed.
    pub is_error: bool,
}

/// One request to a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRequest {
    /// The system prompt (sent top-level for Anthropic, as the first `system` message for
    /// OpenAI-compatible servers).
    pub system: String,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// The tools the model may call.
    pub tools: Vec<ToolDef>,
    /// The most tokens the model may write in its answer.
    pub max_tokens: u32,
}

/// Tokens a response used, as the server counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the request (prompt), including cached ones where the server says.
    pub input_tokens: u64,
    /// Tokens of the answer.
    pub output_tokens: u64,
}

impl Usage {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// What a model's streamed answer is made of.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelEvent {
    /// A piece of its text.
    Text(String),
    /// A tool call, complete (arguments parsed).
    ToolCall(ModelToolCall),
    /// Tokens used so far by this response (the last one a stream sends is the total).
    Usage(Usage),
    /// The server said the answer is over, and why (`end_turn`, `tool_use`, `stop`, …).
    Stop(Option<String>),
}

/// A stream of a model's answer. It ends after the last event; an `Err` ends it.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send>>;

/// A model server speaking one wire format.
pub trait ModelBackend: Send + Sync {
    /// One line for people: `anthropic claude-sonnet-4-5 at https://api.anthropic.com`.
    fn describe(&self) -> String;
    /// Sends `request` and answers the stream of the model's answer, or why it could not start.
    fn stream<'a>(
        &'a self,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelStream, ModelError>>;
}

/// Why a model request failed, in words a person can act on. Never holds the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// No connection (refused, unknown host, unreachable, TLS failure, timeout).
    #[error("the model server at {url} cannot be reached: {reason}")]
    Unreachable {
        /// Where it was sought.
        url: String,
        /// What the network said.
        reason: String,
    },
    /// 401 or 403: the key is wrong or missing.
    #[error("the model server refused the key (HTTP {status}): {}", key_hint(.api_key_env))]
    Unauthorized {
        /// The HTTP status.
        status: u16,
        /// The variable the key comes from, if any (its name, never its value).
        api_key_env: Option<String>,
    },
    /// 404: no such model (or no such endpoint at this base URL).
    #[error(
        "the model server has no model \"{model}\" (HTTP 404: {detail}); check `name` (and `base_url`) in [model]"
    )]
    ModelNotFound {
        /// The model asked for.
        model: String,
        /// The start of what the server said.
        detail: String,
    },
    /// 429.
    #[error("the model server is rate limiting this key (HTTP 429): {detail}")]
    RateLimited {
        /// The start of what the server said.
        detail: String,
    },
    /// Anthropic's `overloaded_error` (HTTP 529 or an `error` event in the stream).
    #[error("the model server is overloaded; try again in a moment")]
    Overloaded,
    /// Another HTTP error status.
    #[error("the model server answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// About the first 200 bytes of its body.
        body: String,
    },
    /// An `error` event in the stream (other than overloaded).
    #[error("the model server reported an error: {0}")]
    Stream(String),
    /// What came back is not the wire format.
    #[error("the model server answered something that is not {expected}: {sample}")]
    Garbage {
        /// What was expected (`a stream of server-sent events`, `JSON`).
        expected: String,
        /// The start of what came instead.
        sample: String,
    },
    /// The connection broke, or the stream ended before the answer did.
    #[error("the model server's answer broke off: {0}")]
    Interrupted(String),
}

fn key_hint(env: &Option<String>) -> String {
    match env {
        Some(var) => format!(
            "the key in the environment variable {var} (`api_key_env` in [model]) is wrong, expired or has no access"
        ),
        None => "this server wants a key: set `api_key_env` in [model] to the name of the \
                 environment variable that holds it"
            .into(),
    }
}

impl ModelError {
    /// The same error with `key` taken out of every text a server put in it (a body, an
    /// event, a sample): see [`redact`]. `None` leaves it as is.
    pub fn without_key(self, key: Option<&ApiKey>) -> Self {
        let Some(key) = key else { return self };
        let r = |t: String| redact(&t, key.expose());
        match self {
            ModelError::Unreachable { url, reason } => ModelError::Unreachable {
                url: r(url),
                reason: r(reason),
            },
            ModelError::ModelNotFound { model, detail } => ModelError::ModelNotFound {
                model,
                detail: r(detail),
            },
            ModelError::RateLimited { detail } => ModelError::RateLimited { detail: r(detail) },
            ModelError::Status { status, body } => ModelError::Status {
                status,
                body: r(body),
            },
            ModelError::Stream(t) => ModelError::Stream(r(t)),
            ModelError::Garbage { expected, sample } => ModelError::Garbage {
                expected,
                sample: r(sample),
            },
            ModelError::Interrupted(t) => ModelError::Interrupted(r(t)),
            e => e,
        }
    }
}

/// Shortest run of a key's first characters that [`redact`] takes out where it stands alone
/// (what is left of a key that a shown text cut).
const KEY_PREFIX_REDACTED: usize = 8;

/// `text` with `key` replaced by `<redacted>` wherever it stands, and so is any run of the
/// key's first [`KEY_PREFIX_REDACTED`] or more characters (a key cut short). A key shorter than
/// that is replaced only whole; an empty one changes nothing.
pub fn redact(text: &str, key: &str) -> String {
    if key.is_empty() {
        return text.to_owned();
    }
    if key.len() < KEY_PREFIX_REDACTED || !key.is_char_boundary(KEY_PREFIX_REDACTED) {
        return text.replace(key, "<redacted>");
    }
    let start = &key[..KEY_PREFIX_REDACTED];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(start) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let same = tail
            .bytes()
            .zip(key.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        // `same` bytes equal to the key's, which starts on a character: cut on a boundary
        // of the key's, so of `tail` as far as they agree; step back to one if needed.
        let mut cut = same;
        while !tail.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str("<redacted>");
        rest = &tail[cut..];
    }
    out.push_str(rest);
    out
}

/// An API key, read from the environment. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where and how to reach one model server.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The base URL, without a trailing `/` (`https://api.anthropic.com`,
    /// `http://127.0.0.1:11434/v1`).
    pub base_url: String,
    /// The model's name.
    pub model: String,
    /// The key, if the server needs one.
    pub api_key: Option<ApiKey>,
    /// The variable the key came from (named in errors).
    pub api_key_env: Option<String>,
}

/// Why a model backend could not be set up from `[model]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// `api_key_env` names a variable that is not set.
    #[error(
        "[model] api_key_env names the environment variable {var}, but it is not set (or empty) \
         for this process: set it to the key, or remove `api_key_env` for a server that needs none"
    )]
    MissingKey {
        /// The variable's name.
        var: String,
    },
    /// The key holds characters no HTTP header can carry (a newline, a non-ASCII character).
    #[error(
        "[model] the key in the environment variable {var} holds characters an HTTP header \
         cannot carry (a line break, a quote, a non-ASCII character): copy it again"
    )]
    InvalidKey {
        /// The variable's name.
        var: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(ModelError),
}

/// The backend `[model]` describes; the key is read from `api_key_env` in `env` (the process
/// environment: `|v| std::env::var(v).ok()`).
pub fn backend(
    config: &crate::config::ModelConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<std::sync::Arc<dyn ModelBackend>, SetupError> {
    let api_key = match &config.api_key_env {
        Some(var) => match env(var).filter(|k| !k.trim().is_empty()) {
            Some(k) if k.trim().chars().all(|c| c.is_ascii_graphic()) => {
                Some(ApiKey::new(k.trim()))
            }
            Some(_) => return Err(SetupError::InvalidKey { var: var.clone() }),
            None => return Err(SetupError::MissingKey { var: var.clone() }),
        },
        None => None,
    };
    let endpoint = Endpoint {
        base_url: config.base_url(),
        model: config.name.clone(),
        api_key,
        api_key_env: config.api_key_env.clone(),
    };
    Ok(match config.provider {
        crate::config::Provider::Anthropic => {
            std::sync::Arc::new(anthropic::Anthropic::new(endpoint).map_err(SetupError::Client)?)
        }
        crate::config::Provider::Openai => {
            std::sync::Arc::new(openai::OpenAi::new(endpoint).map_err(SetupError::Client)?)
        }
    })
}

/// The limits of a task under `[model]`.
pub fn limits(config: &crate::config::ModelConfig) -> Limits {
    Limits {
        max_steps: config.max_steps,
        max_task_time: std::time::Duration::from_secs(config.max_task_secs),
        max_task_tokens: config.max_task_tokens,
        max_output_tokens: config.max_output_tokens,
        ..Limits::default()
    }
}

/// One small request (`ping`, one token at most, no tools) read to its end, within `timeout`:
/// answers how long the server took, or what is wrong.
pub async fn check(
    backend: &dyn ModelBackend,
    timeout: std::time::Duration,
) -> Result<std::time::Duration, ModelError> {
    use futures_util::StreamExt;
    let request = ModelRequest {
        system: String::new(),
        messages: vec![ChatMessage::User("ping".into())],
        tools: vec![],
        max_tokens: 1,
    };
    let start = std::time::Instant::now();
    let run = async {
        let mut stream = backend.stream(&request).await?;
        while let Some(ev) = stream.next().await {
            ev?;
        }
        Ok(start.elapsed())
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(ModelError::Interrupted(format!(
            "no complete answer within {} s",
            timeout.as_secs()
        ))),
    }
}

/// `text` cut to about `max` bytes at a character boundary, with `…` when cut.
pub(crate) fn head(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Merges neighbouring messages of the same side, so the conversation alternates user /
/// assistant as the Anthropic API wants (earlier turns may hold two replies in a row), and
/// starts with the person.
pub(crate) fn alternate(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for m in messages {
        match (out.last_mut(), m) {
            (Some(ChatMessage::User(a)), ChatMessage::User(b)) => {
                a.push_str("\n\n");
                a.push_str(b);
            }
            (
                Some(ChatMessage::Assistant { text, calls }),
                ChatMessage::Assistant {
                    text: more,
                    calls: more_calls,
                },
            ) if calls.is_empty() => {
                if !text.is_empty() && !more.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(more);
                calls.extend(more_calls.iter().cloned());
            }
            (None, ChatMessage::Assistant { .. }) => {
                // A conversation starts with the person: an earlier reply with no request
                // before it (cut by the budget) is left out.
            }
            _ => out.push(m.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_shows_in_debug_or_display() {
        let key = ApiKey::new("sk-ant-secret-123");
        let ep = Endpoint {
            base_url: "https://x".into(),
            model: "m".into(),
            api_key: Some(key.clone()),
            api_key_env: Some("K".into()),
        };
        for shown in [format!("{key:?}"), format!("{key}"), format!("{ep:?}")] {
            assert!(!shown.contains("secret-123"), "{shown}");
        }
        let e = ModelError::Unauthorized {
            status: 401,
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
        }
        .to_string();
        assert!(e.contains("ANTHROPIC_API_KEY") && e.contains("401"), "{e}");
    }

    /// Red team (issue 14): a server that echoes the key in an error body (any status, a JSON
    /// error, garbage, an error event) — whole or cut where the shown text is cut — never gets
    /// it into an error, which a task's document and the log show.
    #[tokio::test]
    async fn a_key_echoed_by_the_server_never_shows_in_an_error() {
        use deskhand_tests::model_server::{ModelServer, Reply};
        let key = "sk-red-0123456789abcdefghijklmnopqrstuvwxyz";
        let padded = format!("{}{key}", "x".repeat(190));
        for provider in [
            crate::config::Provider::Anthropic,
            crate::config::Provider::Openai,
        ] {
            let server = ModelServer::start(vec![
                Reply::Status(
                    500,
                    format!("{{\"error\":{{\"message\":\"bad key {key}\"}}}}"),
                ),
                Reply::Status(429, format!("slow down, {key}")),
                Reply::Status(400, padded.clone()),
                Reply::Raw(format!("<html>{key}</html>\n")),
                Reply::StreamError(format!("api_error {key}")),
            ])
            .await
            .expect("server");
            let config = crate::config::ModelConfig {
                provider,
                name: "m".into(),
                base_url: Some(match provider {
                    crate::config::Provider::Openai => server.openai_url(),
                    _ => server.url(),
                }),
                api_key_env: Some("K".into()),
                max_steps: 4,
                max_task_secs: 10,
                max_task_tokens: 1000,
                max_output_tokens: 10,
            };
            let b = backend(&config, |_| Some(key.to_owned())).expect("backend");
            for i in 0..5 {
                let e = check(&*b, std::time::Duration::from_secs(10))
                    .await
                    .expect_err("fails");
                let shown = format!("{e} {e:?}");
                assert!(
                    !shown.contains(&key[..12]),
                    "{provider:?} reply {i}: {shown}"
                );
            }
        }
    }

    #[test]
    fn a_backend_needs_its_key_variable_set_and_sane() {
        let config = crate::config::ModelConfig {
            provider: crate::config::Provider::Anthropic,
            name: "claude-x".into(),
            base_url: Some("http://127.0.0.1:9".into()),
            api_key_env: Some("MY_KEY".into()),
            max_steps: 40,
            max_task_secs: 60,
            max_task_tokens: 1000,
            max_output_tokens: 100,
        };
        let err = |v: Option<&str>| backend(&config, |_| v.map(str::to_owned)).err();
        assert_eq!(
            err(None),
            Some(SetupError::MissingKey {
                var: "MY_KEY".into()
            })
        );
        assert_eq!(
            err(Some("  ")),
            Some(SetupError::MissingKey {
                var: "MY_KEY".into()
            })
        );
        let e = err(Some("sk-a\nb")).expect("refused");
        assert!(!e.to_string().contains("sk-a"), "{e}");
        assert!(matches!(e, SetupError::InvalidKey { .. }));
        assert_eq!(err(Some(" sk-ant-1 \n")), None);
        let b = backend(
            &crate::config::ModelConfig {
                api_key_env: None,
                ..config.clone()
            },
            |_| None,
        )
        .expect("no key needed");
        assert_eq!(b.describe(), "anthropic claude-x at http://127.0.0.1:9");
    }

    #[test]
    fn turns_alternate_and_start_with_the_person() {
        let a = |t: &str| ChatMessage::Assistant {
            text: t.into(),
            calls: vec![],
        };
        let u = |t: &str| ChatMessage::User(t.into());
        let merged = alternate(&[a("x"), u("1"), u("2"), a("r1"), a("r2"), u("3")]);
        assert_eq!(merged, vec![u("1\n\n2"), a("r1\n\nr2"), u("3")]);
    }

    #[test]
    fn head_cuts_at_a_character_boundary() {
        assert_eq!(head("ab", 10), "ab");
        assert_eq!(head("ééé", 3), "é…");
    }
}
