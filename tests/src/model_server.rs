//! A scripted model server on loopback: the stand-in for a paid model API, which cannot exist
//! in tests. It speaks the two wire formats the desktop's model agents use, byte for byte as
//! the real servers stream them, quirks included (see `shared/FIELD-NOTES.md`, "Models"):
//!
//! - **Anthropic Messages** (`POST /v1/messages`, `stream: true`): `message_start`,
//!   `content_block_start|delta|stop`, `message_delta`, `message_stop`; `ping` events at any
//!   time; tool input as `input_json_delta.partial_json` fragments; an `error` event such as
//!   `overloaded_error`. The [`Quirk::LlamaCpp`] flavour is llama.cpp's `llama-server`: a
//!   `tool_use` start without `input`, every block stop batched at the end, no `ping`.
//! - **OpenAI chat completions** (`POST /v1/chat/completions`, or any path ending in
//!   `/chat/completions`): `chat.completion.chunk` events with `tool_calls` deltas, a usage chunk
//!   and `data: [DONE]`. [`Quirk::Ollama`] sends each whole call in one chunk with `arguments` as
//!   a JSON object, no `id`/`model`/`created`, and `finish_reason: "stop"` although it made
//!   calls; [`Quirk::IndexZero`] sends several calls all at `index: 0` with different ids.
//!
//! Every request is recorded ([`Recorded`]: path, headers, body, when it arrived and when its
//! answer ended), so a test can check what a model was shown, e.g. that a secret file's content
//! never reached it. What to answer comes from a script: a queue of [`Reply`]s, or a function of
//! the request. With the script exhausted the server answers `500 script exhausted`, so a test
//! that expects fewer requests fails loudly.
//!
//! The server is plain HTTP/1.1 on a tokio listener, one request per connection
//! (`connection: close`), which is all the clients under test need.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which server's habits a streamed turn follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quirk {
    /// The API as its owner serves it: Anthropic with `ping`s and input fragments, OpenAI with
    /// argument fragments and `finish_reason: "tool_calls"`.
    #[default]
    Standard,
    /// llama.cpp's `/v1/messages`: a `tool_use` start without `input`, block stops batched at
    /// the end, no `ping`.
    LlamaCpp,
    /// Ollama's chat completions: a whole call in one chunk, `arguments` as an object, no
    /// `id`/`model`/`created`, `finish_reason: "stop"` with calls.
    Ollama,
    /// Several calls in one turn, all at `index: 0`, told apart only by their ids.
    IndexZero,
}

/// One tool call a scripted turn makes.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The call's id (`toolu_…` or `call_…`).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments.
    pub input: Value,
}

/// One streamed answer of the model.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// The text, in the chunks it is streamed in.
    pub text: Vec<String>,
    /// Tool calls after the text.
    pub calls: Vec<Call>,
    /// Whose habits the stream follows.
    pub quirk: Quirk,
    /// Pause before each text chunk.
    pub chunk_delay: Duration,
    /// `(input_tokens, output_tokens)` reported in the usage.
    pub usage: (u64, u64),
}

impl Turn {
    /// A final answer: `text` streamed in words.
    pub fn text(text: &str) -> Self {
        Self {
            text: split_words(text),
            usage: (100, 20),
            ..Self::default()
        }
    }

    /// One tool call, with no text.
    pub fn call(id: &str, name: &str, input: Value) -> Self {
        Self {
            calls: vec![Call {
                id: id.into(),
                name: name.into(),
                input,
            }],
            usage: (100, 20),
            ..Self::default()
        }
    }

    /// Adds a call after the ones already there.
    pub fn and_call(mut self, id: &str, name: &str, input: Value) -> Self {
        self.calls.push(Call {
            id: id.into(),
            name: name.into(),
            input,
        });
        self
    }

    /// Streams with `quirk`'s habits.
    pub fn quirk(mut self, quirk: Quirk) -> Self {
        self.quirk = quirk;
        self
    }

    /// Waits `delay` before each text chunk.
    pub fn slowly(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Reports this usage.
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Self {
        self.usage = (input_tokens, output_tokens);
        self
    }
}

fn split_words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A streamed answer, in the format the request's path asks for.
    Turn(Turn),
    /// A plain HTTP answer: status and JSON body, as an API's error.
    Status(u16, String),
    /// An Anthropic `error` event after the stream started (`overloaded_error`, `api_error`).
    StreamError(String),
    /// `200 text/event-stream` with exactly these bytes.
    Raw(String),
    /// Reads the request and never answers.
    Hang,
    /// Closes the connection without a word.
    Close,
}

impl Reply {
    /// The body an Anthropic-style API sends with an error status.
    pub fn api_error(status: u16, kind: &str, message: &str) -> Self {
        Self::Status(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string(),
        )
    }
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request path, e.g. `/v1/messages`.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as received.
    pub body: String,
    /// When its last byte arrived.
    pub received_at: Instant,
    /// When the answer's last byte was written, if it was.
    pub answered_at: Option<Instant>,
    /// When the answer's first text chunk was written, in unix microseconds (comparable with
    /// another process's clock on this machine), if it had text.
    pub first_text_at_us: Option<u64>,
}

impl Recorded {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Script = Box<dyn FnMut(&Recorded) -> Reply + Send>;

struct Shared {
    script: Mutex<Script>,
    log: Mutex<Vec<Recorded>>,
}

/// A running scripted model server. Stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelServer {
    /// Serves `replies` in order, one per request, on a fresh loopback port.
    pub async fn start(replies: Vec<Reply>) -> std::io::Result<Self> {
        let mut queue: VecDeque<Reply> = replies.into();
        Self::with(move |_| {
            queue
                .pop_front()
                .unwrap_or_else(|| Reply::Status(500, "script exhausted".into()))
        })
        .await
    }

    /// Answers each request with `script(request)`.
    pub async fn with(
        script: impl FnMut(&Recorded) -> Reply + Send + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(Box::new(script)),
            log: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`: the Anthropic `base_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the OpenAI-compatible `base_url`.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Everything every request carried, bodies and headers, as one text: what a model was
    /// ever shown.
    pub fn everything_sent(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                let headers: Vec<String> =
                    r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                format!(
                    "{} {}\n{}\n\n{}",
                    "POST",
                    r.path,
                    headers.join("\n"),
                    r.body
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some(mut rec) = read_request(&mut stream).await else {
        return;
    };
    let reply = (shared.script.lock().unwrap())(&rec);
    let index = {
        let mut log = shared.log.lock().unwrap();
        log.push(rec.clone());
        log.len() - 1
    };
    let anthropic = !rec.path.ends_with("/chat/completions");
    let first_text = |at: u64| {
        if let Some(r) = shared.log.lock().unwrap().get_mut(index) {
            r.first_text_at_us.get_or_insert(at);
        }
    };
    let done = answer(&mut stream, reply, anthropic, first_text).await;
    if done {
        rec.answered_at = Some(Instant::now());
        if let Some(r) = shared.log.lock().unwrap().get_mut(index) {
            r.answered_at = rec.answered_at;
        }
    }
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Recorded {
        path,
        headers,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
        received_at: Instant::now(),
        answered_at: None,
        first_text_at_us: None,
    })
}

/// Writes the answer; false when the reply was to say nothing.
async fn answer(
    stream: &mut TcpStream,
    reply: Reply,
    anthropic: bool,
    first_text: impl Fn(u64),
) -> bool {
    let head = |status: u16, kind: &str| {
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {kind}\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
            reason(status)
        )
    };
    match reply {
        Reply::Hang => {
            std::future::pending::<()>().await;
            false
        }
        Reply::Close => false,
        Reply::Status(status, body) => {
            let text = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                reason(status),
                body.len()
            );
            stream.write_all(text.as_bytes()).await.is_ok()
        }
        Reply::Raw(bytes) => {
            let text = head(200, "text/event-stream") + &bytes;
            stream.write_all(text.as_bytes()).await.is_ok()
        }
        Reply::StreamError(kind) => {
            let mut out = head(200, "text/event-stream");
            out += &event("message_start", &message_start(1));
            out += &event("ping", &json!({"type": "ping"}));
            out += &event(
                "error",
                &json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}),
            );
            stream.write_all(out.as_bytes()).await.is_ok()
        }
        Reply::Turn(turn) => {
            if stream
                .write_all(head(200, "text/event-stream").as_bytes())
                .await
                .is_err()
            {
                return false;
            }
            let events = if anthropic {
                anthropic_events(&turn)
            } else {
                openai_events(&turn)
            };
            for (is_text, bytes) in events {
                if is_text && !turn.chunk_delay.is_zero() {
                    tokio::time::sleep(turn.chunk_delay).await;
                }
                if stream.write_all(bytes.as_bytes()).await.is_err() {
                    return false;
                }
                let _ = stream.flush().await;
                if is_text {
                    first_text(unix_us());
                }
            }
            true
        }
    }
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn message_start(input_tokens: u64) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "model": "scripted",
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}
    }})
}

/// The events of one Anthropic turn, each flagged whether it carries text.
fn anthropic_events(turn: &Turn) -> Vec<(bool, String)> {
    let llama = turn.quirk == Quirk::LlamaCpp;
    let mut out = vec![(false, event("message_start", &message_start(turn.usage.0)))];
    let mut index = 0;
    let mut stops = Vec::new();
    let mut stop = |out: &mut Vec<(bool, String)>, index: usize| {
        let e = event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        if llama {
            stops.push(e)
        } else {
            out.push((false, e))
        }
    };
    if !turn.text.is_empty() {
        out.push((
            false,
            event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ),
        ));
        if !llama {
            out.push((false, event("ping", &json!({"type": "ping"}))));
        }
        for t in &turn.text {
            out.push((
                true,
                event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": t}}),
                ),
            ));
        }
        stop(&mut out, 0);
        index = 1;
    }
    for call in &turn.calls {
        let mut block = json!({"type": "tool_use", "id": call.id, "name": call.name});
        if !llama {
            block["input"] = json!({});
        }
        out.push((
            false,
            event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": block}),
            ),
        ));
        let args = call.input.to_string();
        // Fragments cut anywhere, even inside a string or an escape.
        for piece in fragments(&args, 7) {
            out.push((
                false,
                event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ),
            ));
        }
        if !llama && index == 1 {
            out.push((false, event("ping", &json!({"type": "ping"}))));
        }
        stop(&mut out, index);
        index += 1;
    }
    out.extend(stops.into_iter().map(|s| (false, s)));
    let reason = if turn.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    out.push((
        false,
        event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": null},
                    "usage": {"output_tokens": turn.usage.1}}),
        ),
    ));
    out.push((
        false,
        event("message_stop", &json!({"type": "message_stop"})),
    ));
    out
}

fn fragments(s: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The events of one OpenAI chat completions turn, each flagged whether it carries text.
fn openai_events(turn: &Turn) -> Vec<(bool, String)> {
    let ollama = turn.quirk == Quirk::Ollama;
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if !ollama {
            c["id"] = json!("chatcmpl-1");
            c["created"] = json!(1_764_000_000);
            c["model"] = json!("scripted");
        }
        format!("data: {c}\n\n")
    };
    let mut out = vec![(
        false,
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
    )];
    for t in &turn.text {
        out.push((true, chunk(json!({"content": t}), Value::Null)));
    }
    for (i, call) in turn.calls.iter().enumerate() {
        let index = if turn.quirk == Quirk::IndexZero { 0 } else { i };
        if ollama {
            // The whole call at once, arguments as an object.
            out.push((
                false,
                chunk(
                    json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": call.input}}]}),
                    Value::Null,
                ),
            ));
            continue;
        }
        out.push((
            false,
            chunk(
                json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": ""}}]}),
                Value::Null,
            ),
        ));
        for piece in fragments(&call.input.to_string(), 9) {
            out.push((
                false,
                chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                ),
            ));
        }
    }
    let finish = if turn.calls.is_empty() || ollama {
        "stop"
    } else {
        "tool_calls"
    };
    out.push((false, chunk(json!({}), json!(finish))));
    let usage = json!({"object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": turn.usage.0, "completion_tokens": turn.usage.1,
                                 "total_tokens": turn.usage.0 + turn.usage.1}});
    out.push((false, format!("data: {usage}\n\n")));
    out.push((false, "data: [DONE]\n\n".into()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one whole answer with a plain socket.
    async fn post(addr: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn data_lines(answer: &str) -> Vec<Value> {
        answer
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn anthropic_fragments_reassemble_to_the_scripted_input() {
        let input = json!({"path": "~/a \"b\"", "n": 3});
        let server = ModelServer::start(vec![Reply::Turn(Turn::text("Looking now").and_call(
            "toolu_1",
            "list",
            input.clone(),
        ))])
        .await
        .unwrap();
        let answer = post(&server.addr.to_string(), "/v1/messages", "{}").await;
        assert!(answer.starts_with("HTTP/1.1 200"));
        assert!(answer.contains("event: ping"));
        let events = data_lines(&answer);
        let json: String = events
            .iter()
            .filter(|e| e["delta"]["type"] == "input_json_delta")
            .map(|e| e["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert!(
            events
                .iter()
                .filter(|e| e["delta"]["type"] == "input_json_delta")
                .count()
                > 1
        );
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), input);
        let text: String = events
            .iter()
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "Looking now");
        let rec = &server.requests()[0];
        assert_eq!(rec.header("x-api-key"), Some("k"));
        assert!(rec.first_text_at_us.is_some() && rec.answered_at.is_some());
    }

    #[tokio::test]
    async fn llama_cpp_batches_block_stops_and_omits_input() {
        let server = ModelServer::start(vec![Reply::Turn(
            Turn::call("a", "list", json!({"path": "~"}))
                .and_call("b", "read", json!({"path": "~/x"}))
                .quirk(Quirk::LlamaCpp),
        )])
        .await
        .unwrap();
        let answer = post(&server.addr.to_string(), "/v1/messages", "{}").await;
        let events = data_lines(&answer);
        assert!(!answer.contains("ping"));
        let starts: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "content_block_start")
            .collect();
        assert!(
            starts
                .iter()
                .all(|s| s["content_block"].get("input").is_none())
        );
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let first_stop = kinds
            .iter()
            .position(|k| *k == "content_block_stop")
            .unwrap();
        let last_delta = kinds
            .iter()
            .rposition(|k| *k == "content_block_delta")
            .unwrap();
        assert!(
            first_stop > last_delta,
            "stops come after every delta: {kinds:?}"
        );
    }

    #[tokio::test]
    async fn openai_quirks() {
        let server = ModelServer::start(vec![
            Reply::Turn(Turn::call("c1", "list", json!({"path": "~"})).quirk(Quirk::Ollama)),
            Reply::Turn(
                Turn::call("c1", "list", json!({"path": "~"}))
                    .and_call("c2", "read", json!({"path": "~/x"}))
                    .quirk(Quirk::IndexZero),
            ),
        ])
        .await
        .unwrap();
        let addr = server.addr.to_string();
        let ollama = data_lines(&post(&addr, "/v1/chat/completions", "{}").await);
        let call = ollama
            .iter()
            .find(|c| c["choices"][0]["delta"].get("tool_calls").is_some())
            .unwrap();
        assert!(call["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].is_object());
        assert!(ollama.iter().all(|c| c.get("id").is_none()));
        assert!(
            ollama
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
        let zero = data_lines(&post(&addr, "/v1/chat/completions", "{}").await);
        let ids: Vec<&str> = zero
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].as_str())
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert!(
            zero.iter()
                .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["index"].as_u64())
                .all(|i| i == 0)
        );
        let exhausted = post(&addr, "/v1/chat/completions", "{}").await;
        assert!(exhausted.starts_with("HTTP/1.1 500"), "{exhausted}");
        assert_eq!(server.requests().len(), 3);
    }
}
