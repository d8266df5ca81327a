//! The Anthropic Messages API: `POST {base_url}/v1/messages` with `stream: true`.
//!
//! What a server sends that this survives: `ping` at any time; `error` events
//! (`overloaded_error` becomes [`ModelError::Overloaded`]); tool input as
//! `input_json_delta.partial_json` fragments, parsed when the block stops; llama.cpp's
//! `/v1/messages` (a `tool_use` start without `input`, block stops batched at the end, several
//! `tool_use` blocks). Everything is keyed on the block's `index`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::sse::{self, ErrorContext, EventParser};
use super::{
    BoxFuture, ChatMessage, Endpoint, ModelBackend, ModelError, ModelEvent, ModelRequest,
    ModelStream, ModelToolCall, Usage, alternate,
};

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// A model behind the Anthropic Messages API.
#[derive(Debug)]
pub struct Anthropic {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl Anthropic {
    /// A backend for `endpoint` (base URL without `/v1`, e.g. `https://api.anthropic.com`).
    pub fn new(endpoint: Endpoint) -> Result<Self, ModelError> {
        Ok(Self {
            endpoint,
            http: sse::client()?,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/v1/messages",
            self.endpoint.base_url.trim_end_matches('/')
        )
    }
}

impl ModelBackend for Anthropic {
    fn describe(&self) -> String {
        format!(
            "anthropic {} at {}",
            self.endpoint.model, self.endpoint.base_url
        )
    }

    fn stream<'a>(
        &'a self,
        request: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelStream, ModelError>> {
        Box::pin(async move {
            let ctx = ErrorContext {
                url: self.url(),
                model: self.endpoint.model.clone(),
                api_key_env: self.endpoint.api_key_env.clone(),
            };
            let mut headers = vec![(
                reqwest::header::HeaderName::from_static("anthropic-version"),
                reqwest::header::HeaderValue::from_static(API_VERSION),
            )];
            if let Some(key) = &self.endpoint.api_key {
                headers.push(sse::secret_header("x-api-key", key.expose()).map_err(|_| {
                    ModelError::Unauthorized {
                        status: 0,
                        api_key_env: ctx.api_key_env.clone(),
                    }
                })?);
            }
            let body = request_body(&self.endpoint.model, request);
            let stream = sse::post(
                &self.http,
                &ctx,
                headers,
                body.to_string().into_bytes(),
                Box::new(Parser::default()),
            )
            .await;
            // A server may echo the key in what it says: never into an error.
            let key = self.endpoint.api_key.clone();
            match stream {
                Ok(s) => Ok(Box::pin(futures_util::StreamExt::map(s, move |ev| {
                    ev.map_err(|e| e.without_key(key.as_ref()))
                })) as ModelStream),
                Err(e) => Err(e.without_key(key.as_ref())),
            }
        })
    }
}

/// The JSON body of a streamed Messages API request.
pub fn request_body(model: &str, request: &ModelRequest) -> Value {
    let messages: Vec<Value> = alternate(&request.messages)
        .iter()
        .map(|m| match m {
            ChatMessage::User(text) => json!({"role": "user", "content": text}),
            ChatMessage::Assistant { text, calls } => {
                let mut content = Vec::new();
                if !text.is_empty() || calls.is_empty() {
                    let text = if text.is_empty() { "(no answer)" } else { text };
                    content.push(json!({"type": "text", "text": text}));
                }
                for c in calls {
                    let input = if c.arguments.is_object() {
                        c.arguments.clone()
                    } else {
                        json!({})
                    };
                    content.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                json!({"role": "assistant", "content": content})
            }
            ChatMessage::ToolResults(results) => {
                let content: Vec<Value> = results
                    .iter()
                    .map(|r| {
                        let mut block = json!({
                            "type": "tool_result",
                            "tool_use_id": r.call_id,
                            "content": r.content,
                        });
                        if r.is_error {
                            block["is_error"] = Value::Bool(true);
                        }
                        block
                    })
                    .collect();
                json!({"role": "user", "content": content})
            }
        })
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "messages": messages,
    });
    if !request.system.is_empty() {
        body["system"] = Value::String(request.system.clone());
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
            })
            .collect();
    }
    body
}

/// A `tool_use` block being streamed.
#[derive(Debug, Default)]
struct ToolBlock {
    id: String,
    name: String,
    /// `input` of the block's start when it held something (some servers send it whole).
    input: Option<Value>,
    /// The `partial_json` fragments so far.
    json: String,
}

/// The sans-IO parser of a Messages API stream.
#[derive(Debug, Default)]
pub struct Parser {
    started: bool,
    stopped: bool,
    tools: BTreeMap<u64, ToolBlock>,
    usage: Usage,
    stop_reason: Option<String>,
    calls: usize,
}

impl Parser {
    fn finish_tool(&mut self, block: ToolBlock) -> ModelEvent {
        self.calls += 1;
        let arguments = if !block.json.trim().is_empty() {
            serde_json::from_str(&block.json).unwrap_or(Value::String(block.json))
        } else {
            block.input.unwrap_or_else(|| Value::Object(Map::new()))
        };
        let id = if block.id.is_empty() {
            format!("toolu_deskhand_{}", self.calls)
        } else {
            block.id
        };
        ModelEvent::ToolCall(ModelToolCall {
            id,
            name: block.name,
            arguments,
        })
    }

    fn read_usage(&mut self, u: &Value) -> Option<ModelEvent> {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let mut changed = false;
        let input = [
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ]
        .iter()
        .filter_map(|k| n(k))
        .reduce(|a, b| a.saturating_add(b));
        if let Some(i) = input
            && i > 0
        {
            self.usage.input_tokens = i;
            changed = true;
        }
        if let Some(o) = n("output_tokens") {
            self.usage.output_tokens = o;
            changed = true;
        }
        changed.then_some(ModelEvent::Usage(self.usage))
    }
}

fn index_of(v: &Value) -> u64 {
    v.get("index").and_then(Value::as_u64).unwrap_or(0)
}

impl EventParser for Parser {
    fn on_event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<ModelEvent>, ModelError> {
        if event == Some("ping") && data.trim().is_empty() {
            return Ok(vec![]);
        }
        let v: Value = serde_json::from_str(data).map_err(|_| ModelError::Garbage {
            expected: "JSON in a Messages API event".into(),
            sample: sse::sample_of(data.as_bytes()),
        })?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                self.started = true;
                if let Some(u) = v.pointer("/message/usage")
                    && let Some(e) = self.read_usage(u)
                {
                    out.push(e);
                }
            }
            "content_block_start" => {
                self.started = true;
                let block = v.get("content_block").cloned().unwrap_or(Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") | Some("server_tool_use") => {
                        let input = block
                            .get("input")
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                            .cloned();
                        self.tools.insert(
                            index_of(&v),
                            ToolBlock {
                                id: block["id"].as_str().unwrap_or_default().to_owned(),
                                name: block["name"].as_str().unwrap_or_default().to_owned(),
                                input,
                                json: String::new(),
                            },
                        );
                    }
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            out.push(ModelEvent::Text(t.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").cloned().unwrap_or(Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = delta.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            out.push(ModelEvent::Text(t.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        self.tools
                            .entry(index_of(&v))
                            .or_default()
                            .json
                            .push_str(part);
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(block) = self.tools.remove(&index_of(&v)) {
                    out.push(self.finish_tool(block));
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_owned());
                }
                if let Some(u) = v.get("usage")
                    && let Some(e) = self.read_usage(u)
                {
                    out.push(e);
                }
            }
            "message_stop" => {
                // Blocks whose stop never came are complete now.
                let open = std::mem::take(&mut self.tools);
                for (_, block) in open {
                    out.push(self.finish_tool(block));
                }
                self.stopped = true;
                out.push(ModelEvent::Stop(self.stop_reason.take()));
            }
            "error" => {
                return Err(sse::error_in_json(data)
                    .unwrap_or_else(|| ModelError::Stream(sse::sample_of(data.as_bytes()))));
            }
            // `ping`, and whatever a later API version adds.
            _ => {}
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<ModelEvent>, ModelError> {
        if self.stopped {
            return Ok(vec![]);
        }
        if !self.started {
            return Err(ModelError::Garbage {
                expected: "a Messages API stream".into(),
                sample: String::new(),
            });
        }
        Err(ModelError::Interrupted(
            "the stream ended before `message_stop`".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ToolDef;
    use crate::model::sse::tests::parse_chunked;
    use crate::model::{ToolResult, Usage};

    async fn parse(body: &str) -> Vec<Result<ModelEvent, ModelError>> {
        // Every chunking gives the same events: one byte at a time, a few, all at once.
        let whole = parse_chunked(body.as_bytes(), body.len(), Box::new(Parser::default())).await;
        for chunk in [1, 7, 64] {
            let parts = parse_chunked(body.as_bytes(), chunk, Box::new(Parser::default())).await;
            assert_eq!(parts, whole, "chunks of {chunk}");
        }
        whole
    }

    fn ok(events: Vec<Result<ModelEvent, ModelError>>) -> Vec<ModelEvent> {
        events.into_iter().map(|e| e.expect("an event")).collect()
    }

    fn call(id: &str, name: &str, arguments: Value) -> ModelEvent {
        ModelEvent::ToolCall(ModelToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        })
    }

    /// As Anthropic sends it: pings anywhere, text, then a tool call in fragments.
    const ANTHROPIC_TOOL_USE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"usage\":{\"input_tokens\":472,\"output_tokens\":2}}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" in Downloads.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"list\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pa\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"th\\\": \\\"~/Down\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"loads\\\"}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[tokio::test]
    async fn anthropic_text_and_a_fragmented_tool_call_with_pings() {
        let events = ok(parse(ANTHROPIC_TOOL_USE).await);
        assert_eq!(
            events,
            vec![
                ModelEvent::Usage(Usage {
                    input_tokens: 472,
                    output_tokens: 2
                }),
                ModelEvent::Text("Let me look".into()),
                ModelEvent::Text(" in Downloads.".into()),
                call("toolu_01", "list", json!({"path": "~/Downloads"})),
                ModelEvent::Usage(Usage {
                    input_tokens: 472,
                    output_tokens: 89
                }),
                ModelEvent::Stop(Some("tool_use".into())),
            ]
        );
    }

    /// llama.cpp's `/v1/messages`: no `input` in the `tool_use` start, no ping, the block
    /// stops batched at the end, two tool_use blocks; CRLF line ends.
    #[tokio::test]
    async fn llama_cpp_batched_stops_and_tool_use_without_input() {
        let body = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_x\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"qwen\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_a\",\"name\":\"read\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\\\":\\\"~/a.txt\\\"}\"}}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_b\",\"name\":\"read\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\\\":\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"~/b.txt\\\"}\"}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":1}\r\n\r\n\
event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":120,\"output_tokens\":31}}\r\n\r\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
        let events = ok(parse(body).await);
        let calls: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, ModelEvent::ToolCall(_)))
            .cloned()
            .collect();
        assert_eq!(
            calls,
            vec![
                call("call_a", "read", json!({"path": "~/a.txt"})),
                call("call_b", "read", json!({"path": "~/b.txt"})),
            ]
        );
        assert!(events.contains(&ModelEvent::Usage(Usage {
            input_tokens: 120,
            output_tokens: 31
        })));
        assert_eq!(
            events.last(),
            Some(&ModelEvent::Stop(Some("tool_use".into())))
        );
    }

    /// A tool call whose stop never came is complete at `message_stop`; a tool_use without
    /// arguments is `{}`; a start that holds the whole input keeps it.
    #[tokio::test]
    async fn unstopped_blocks_and_whole_inputs() {
        let body = "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5}}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t0\",\"name\":\"screenshot\",\"input\":{}}}\n\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"list\",\"input\":{\"path\":\"~\"}}}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
        let events = ok(parse(body).await);
        assert_eq!(
            events[1..3],
            [
                call("t0", "screenshot", json!({})),
                call("t1", "list", json!({"path": "~"}))
            ]
        );
    }

    #[tokio::test]
    async fn an_overloaded_error_event_mid_stream() {
        let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"never\"}}\n\n";
        let events = parse(body).await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[2], Err(ModelError::Overloaded));
        assert_eq!(
            ModelError::Overloaded.to_string(),
            "the model server is overloaded; try again in a moment"
        );
        let body = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}\n\n";
        let e = parse(body).await.pop().expect("one").expect_err("an error");
        assert_eq!(
            e.to_string(),
            "the model server reported an error: api_error: Internal"
        );
    }

    #[tokio::test]
    async fn garbage_and_broken_streams_are_named() {
        // Not SSE at all.
        let e = parse("<html><body>Bad gateway</body></html>\n")
            .await
            .pop()
            .expect("one")
            .expect_err("garbage");
        let s = e.to_string();
        assert!(
            s.contains("not a stream of server-sent events") && s.contains("Bad gateway"),
            "{s}"
        );
        // SSE, but not JSON.
        let e = parse("data: hello there\n\n")
            .await
            .pop()
            .expect("one")
            .expect_err("garbage");
        assert!(
            e.to_string().contains("not JSON in a Messages API event"),
            "{e}"
        );
        // Empty.
        let e = parse("").await.pop().expect("one").expect_err("garbage");
        assert!(e.to_string().contains("an empty answer"), "{e}");
        // Cut before message_stop.
        let body = "data: {\"type\":\"message_start\",\"message\":{}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";
        let e = parse(body).await.pop().expect("one").expect_err("cut");
        assert!(matches!(e, ModelError::Interrupted(_)), "{e}");
    }

    #[tokio::test]
    async fn invalid_tool_json_is_kept_as_text_for_the_loop_to_refuse() {
        let body = "data: {\"type\":\"message_start\",\"message\":{}}\n\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"read\"}}\n\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\\\": \"}}\n\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
data: {\"type\":\"message_stop\"}\n\n";
        let events = ok(parse(body).await);
        assert_eq!(events[0], call("t", "read", json!("{\"path\": ")));
    }

    #[test]
    fn the_request_has_system_top_level_tools_and_tool_results() {
        let req = ModelRequest {
            system: "You are Deskhand.".into(),
            messages: vec![
                ChatMessage::User("list ~".into()),
                ChatMessage::Assistant {
                    text: String::new(),
                    calls: vec![ModelToolCall {
                        id: "t1".into(),
                        name: "list".into(),
                        arguments: json!({"path": "~"}),
                    }],
                },
                ChatMessage::ToolResults(vec![ToolResult {
                    call_id: "t1".into(),
                    content: "denied: no".into(),
                    is_error: true,
                }]),
            ],
            tools: vec![ToolDef {
                name: "list".into(),
                description: "List a folder".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 1024,
        };
        let body = request_body("claude-x", &req);
        assert_eq!(body["stream"], true);
        assert_eq!(body["system"], "You are Deskhand.");
        assert_eq!(body["max_tokens"], 1024);
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        let msgs = body["messages"].as_array().expect("messages");
        assert!(msgs.iter().all(|m| m["role"] != "system"));
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type": "tool_use", "id": "t1", "name": "list", "input": {"path": "~"}})
        );
        assert_eq!(
            msgs[2],
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "denied: no", "is_error": true}]})
        );
    }
}
