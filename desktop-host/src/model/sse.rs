//! The HTTP side of both wire formats: one POST, the status turned into plain words, and the
//! body read as server-sent events (`sse-stream`) and handed to a wire format's [`EventParser`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::{ModelError, ModelEvent, ModelStream, head};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may stay silent mid-answer (a local model on a CPU can take minutes to
/// read a long prompt before its first token; the task's own time limit bounds the rest).
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes of an error body read, and shown (about).
const ERROR_BODY_READ: usize = 16 * 1024;
const ERROR_BODY_SHOWN: usize = 200;

/// A sans-IO parser of one wire format's server-sent events.
pub trait EventParser: Send {
    /// One event: its `event:` name, if any, and its `data:` text. Answers the model events it
    /// completes, or why the stream cannot go on.
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<ModelEvent>, ModelError>;
    /// The body ended: what is still held, or why the answer is incomplete.
    fn finish(&mut self) -> Result<Vec<ModelEvent>, ModelError>;
}

/// What an error names: where, which model, which variable holds the key.
#[derive(Clone, Debug)]
pub struct ErrorContext {
    /// The URL posted to.
    pub url: String,
    /// The model asked for.
    pub model: String,
    /// The variable the key comes from.
    pub api_key_env: Option<String>,
}

/// The HTTP client of the model backends: rustls with ring's provider (installed here once;
/// reqwest is built without a provider of its own, so that aws-lc stays out of the build), no
/// system proxy, bounded connect and read times.
pub fn client() -> Result<reqwest::Client, ModelError> {
    install_crypto();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| ModelError::Unreachable {
            url: String::new(),
            reason: format!("the HTTP client could not be built: {}", chain(&e)),
        })
}

/// Installs ring as rustls' crypto provider, once, for every reqwest client of this host (the
/// model backends' and the MCP connectors' over HTTP): reqwest is built without a provider, so
/// that aws-lc stays out of the build. One installed already (by iroh or a test) is kept: any
/// provider is ring here.
pub fn install_crypto() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A header holding a secret: marked sensitive, so that no debug output of reqwest shows it.
pub fn secret_header(
    name: &'static str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), ModelError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ModelError::Unauthorized {
        status: 0,
        api_key_env: None,
    })?;
    v.set_sensitive(true);
    Ok((HeaderName::from_static(name), v))
}

/// Posts `body` (JSON) to `ctx.url` and answers the model's events as they are parsed.
pub async fn post(
    http: &reqwest::Client,
    ctx: &ErrorContext,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    parser: Box<dyn EventParser>,
) -> Result<ModelStream, ModelError> {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    map.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    for (k, v) in headers {
        map.insert(k, v);
    }
    let response = http
        .post(&ctx.url)
        .headers(map)
        .body(body)
        .send()
        .await
        .map_err(|e| ModelError::Unreachable {
            url: ctx.url.clone(),
            // reqwest's own top line repeats the URL.
            reason: match std::error::Error::source(&e) {
                Some(inner) => chain(inner),
                None => chain(&e),
            },
        })?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !status.is_success() {
        let text = read_bounded(response).await;
        return Err(status_error(status.as_u16(), &text, ctx));
    }
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        let text = read_bounded(response).await;
        if let Some(e) = error_in_json(&text) {
            return Err(e);
        }
        return Err(ModelError::Garbage {
            expected: "a stream of server-sent events".into(),
            sample: sample_of(text.as_bytes()),
        });
    }
    // The first bytes, kept to show what came when it is not what was expected.
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let kept = seen.clone();
    let bytes = response.bytes_stream().inspect_ok(move |chunk| {
        let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
        if k.len() < ERROR_BODY_SHOWN {
            let take = (ERROR_BODY_SHOWN - k.len()).min(chunk.len());
            k.extend_from_slice(&chunk[..take]);
        }
    });
    Ok(events(bytes, parser, seen))
}

/// The model events of a body of server-sent events, parsed by `parser`. `seen` holds the body's
/// first bytes (shown when the body is not what was expected).
pub fn events<S, E>(
    bytes: S,
    parser: Box<dyn EventParser>,
    seen: Arc<Mutex<Vec<u8>>>,
) -> ModelStream
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    struct State<S> {
        sse: S,
        parser: Box<dyn EventParser>,
        pending: VecDeque<ModelEvent>,
        done: bool,
        seen: Arc<Mutex<Vec<u8>>>,
    }
    let sse = sse_stream::SseStream::from_bytes_stream(bytes).boxed();
    let state = State {
        sse,
        parser,
        pending: VecDeque::new(),
        done: false,
        seen,
    };
    let garbage = |seen: &Arc<Mutex<Vec<u8>>>| ModelError::Garbage {
        expected: "a stream of server-sent events".into(),
        sample: sample_of(&seen.lock().unwrap_or_else(|p| p.into_inner())),
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            let step = match st.sse.next().await {
                Some(Ok(sse)) => match sse.data.as_deref() {
                    Some(data) => st.parser.on_event(sse.event.as_deref(), data),
                    None => Ok(Vec::new()),
                },
                Some(Err(sse_stream::Error::Body(e))) => Err(ModelError::Interrupted(chain(&*e))),
                Some(Err(_)) => Err(garbage(&st.seen)),
                None => {
                    st.done = true;
                    st.parser.finish().map_err(|e| match e {
                        ModelError::Garbage { expected, .. } => ModelError::Garbage {
                            expected,
                            sample: sample_of(&st.seen.lock().unwrap_or_else(|p| p.into_inner())),
                        },
                        other => other,
                    })
                }
            };
            match step {
                Ok(evs) => st.pending.extend(evs),
                Err(e) => {
                    st.done = true;
                    st.pending.clear();
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

/// An HTTP error status in plain words.
pub fn status_error(status: u16, body: &str, ctx: &ErrorContext) -> ModelError {
    let detail = detail_of(body);
    if let Some(ModelError::Overloaded) = error_in_json(body) {
        return ModelError::Overloaded;
    }
    match status {
        401 | 403 => ModelError::Unauthorized {
            status,
            api_key_env: ctx.api_key_env.clone(),
        },
        404 => ModelError::ModelNotFound {
            model: ctx.model.clone(),
            detail: format!("{detail} at {}", ctx.url),
        },
        429 => ModelError::RateLimited { detail },
        529 => ModelError::Overloaded,
        _ => ModelError::Status {
            status,
            body: detail,
        },
    }
}

/// The message of a JSON error body (`{"error":{"message":…}}`, `{"error":"…"}`,
/// `{"message":…}`), else the body's first bytes.
fn detail_of(body: &str) -> String {
    let msg = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = v.get("error").unwrap_or(&v);
        e.get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map(str::to_owned)
    });
    match msg {
        Some(m) => head(&m, ERROR_BODY_SHOWN),
        None if body.trim().is_empty() => "(no body)".into(),
        None => sample_of(body.as_bytes()),
    }
}

/// An error a server put in a JSON body or event: Anthropic's
/// `{"type":"error","error":{"type":"overloaded_error","message":…}}`, OpenAI's
/// `{"error":{"message":…,"type":…}}`, Ollama's `{"error":"…"}`.
pub fn error_in_json(text: &str) -> Option<ModelError> {
    let v: Value = serde_json::from_str(text).ok()?;
    let e = v.get("error")?;
    let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind == "overloaded_error" {
        return Some(ModelError::Overloaded);
    }
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .unwrap_or("(no message)");
    Some(ModelError::Stream(head(
        &if kind.is_empty() {
            message.to_owned()
        } else {
            format!("{kind}: {message}")
        },
        ERROR_BODY_SHOWN,
    )))
}

/// The first bytes of a body, as text a person can read (control characters shown escaped).
pub fn sample_of(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(ERROR_BODY_SHOWN)];
    let text = String::from_utf8_lossy(cut);
    let shown: String = text
        .trim()
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let shown = if shown.is_empty() {
        "(an empty answer)".to_owned()
    } else {
        shown
    };
    if bytes.len() > ERROR_BODY_SHOWN {
        format!("{shown}…")
    } else {
        shown
    }
}

async fn read_bounded(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= ERROR_BODY_READ {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// An error and its sources, each said once (`error sending request: client error (Connect):
/// tcp connect error: Connection refused (os error 111)`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The events `parser` makes of `body` delivered in chunks of `chunk` bytes.
    pub(crate) async fn parse_chunked(
        body: &[u8],
        chunk: usize,
        parser: Box<dyn EventParser>,
    ) -> Vec<Result<ModelEvent, ModelError>> {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
            .chunks(chunk.max(1))
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let seen = Arc::new(Mutex::new(body[..body.len().min(200)].to_vec()));
        events(futures_util::stream::iter(chunks), parser, seen)
            .collect()
            .await
    }

    fn ctx() -> ErrorContext {
        ErrorContext {
            url: "http://127.0.0.1:9/v1/messages".into(),
            model: "claude-x".into(),
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
        }
    }

    #[test]
    fn statuses_become_plain_words() {
        let e = status_error(
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            &ctx(),
        );
        assert!(
            matches!(&e, ModelError::Unauthorized { status: 401, api_key_env: Some(v) } if v == "ANTHROPIC_API_KEY")
        );
        let e = status_error(
            404,
            r#"{"error":{"message":"model \"llama9\" not found, try pulling it first"}}"#,
            &ctx(),
        )
        .to_string();
        assert!(
            e.contains("no model \"claude-x\"") && e.contains("try pulling"),
            "{e}"
        );
        assert!(matches!(
            status_error(429, "slow down", &ctx()),
            ModelError::RateLimited { .. }
        ));
        assert_eq!(status_error(529, "", &ctx()), ModelError::Overloaded);
        assert_eq!(
            status_error(
                500,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                &ctx()
            ),
            ModelError::Overloaded
        );
        let long = "x".repeat(5000);
        let e = status_error(502, &long, &ctx()).to_string();
        assert!(e.contains("HTTP 502") && e.len() < 400, "{e}");
        let e = status_error(500, "", &ctx()).to_string();
        assert!(e.contains("(no body)"), "{e}");
    }

    #[test]
    fn samples_are_short_and_escaped() {
        let s = sample_of(b"<html>\x1b[2J\nhi</html>");
        assert!(s.contains("\\u{1b}") && s.contains("\\n"), "{s}");
        assert!(sample_of(&[b'a'; 1000]).ends_with('…'));
    }
}
