//! OpenAI-compatible chat completions: `POST {base_url}/chat/completions` with `stream: true`
//! (the base URL includes `/v1`, as in the OpenAI SDKs). This is how Ollama, llama.cpp's
//! `llama-server`, vLLM and LM Studio are reached.
//!
//! What servers send that this survives: a whole tool call in one chunk; several calls all at
//! `index: 0` with different ids (different calls); `arguments` as a JSON object instead of a
//! string; `id`, `model` or `created` missing; `finish_reason: "stop"` although tools were
//! called. Calls are run whenever they accumulated: `finish_reason` is never trusted.

use serde_json::{Map, Value, json};

use super::sse::{self, ErrorContext, EventParser};
use super::{
    BoxFuture, ChatMessage, Endpoint, ModelBackend, ModelError, ModelEvent, ModelRequest,
    ModelStream, ModelToolCall, Usage,
};

/// A model behind an OpenAI-compatible chat completions endpoint.
#[derive(Debug)]
pub struct OpenAi {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl OpenAi {
    /// A backend for `endpoint` (base URL including `/v1`, e.g. `http://127.0.0.1:11434/v1`).
    pub fn new(endpoint: Endpoint) -> Result<Self, ModelError> {
        Ok(Self {
            endpoint,
            http: sse::client()?,
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.endpoint.base_url.trim_end_matches('/')
        )
    }
}

impl ModelBackend for OpenAi {
    fn describe(&self) -> String {
        format!(
            "openai {} at {}",
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
            let mut headers = Vec::new();
            if let Some(key) = &self.endpoint.api_key {
                headers.push(
                    sse::secret_header("authorization", &format!("Bearer {}", key.expose()))
                        .map_err(|_| ModelError::Unauthorized {
                            status: 0,
                            api_key_env: ctx.api_key_env.clone(),
                        })?,
                );
            }
            let mut body = request_body(&self.endpoint.model, request);
            if is_openai_itself(&self.endpoint.base_url) {
                // OpenAI's own API refuses `max_tokens` for its reasoning models and takes
                // `max_completion_tokens` for every model; local servers know only `max_tokens`.
                if let Some(n) = body.as_object_mut().and_then(|b| b.remove("max_tokens")) {
                    body["max_completion_tokens"] = n;
                }
            }
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

/// The JSON body of a streamed chat completions request.
pub fn request_body(model: &str, request: &ModelRequest) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for m in &request.messages {
        match m {
            ChatMessage::User(text) => messages.push(json!({"role": "user", "content": text})),
            ChatMessage::Assistant { text, calls } => {
                // No text beside calls is `null`, as OpenAI sends it (some servers refuse "").
                let content = if text.is_empty() && !calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(text.clone())
                };
                let mut msg = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    msg["tool_calls"] = calls
                        .iter()
                        .map(|c| {
                            let args = if c.arguments.is_object() {
                                c.arguments.to_string()
                            } else {
                                "{}".to_owned()
                            };
                            json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": args}})
                        })
                        .collect();
                }
                messages.push(msg);
            }
            ChatMessage::ToolResults(results) => {
                for r in results {
                    // The format has no error flag: the text says it.
                    let content = if r.is_error {
                        format!("Error: {}", r.content)
                    } else {
                        r.content.clone()
                    };
                    messages.push(
                        json!({"role": "tool", "tool_call_id": r.call_id, "content": content}),
                    );
                }
            }
        }
    }
    let mut body = json!({
        "model": model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": request.max_tokens,
        "messages": messages,
    });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.input_schema}})
            })
            .collect();
    }
    body
}

/// Whether `base_url` is OpenAI's own API (`https://api.openai.com/…`), not a compatible server.
fn is_openai_itself(base_url: &str) -> bool {
    let rest = base_url.trim().to_ascii_lowercase();
    let host = rest
        .strip_prefix("https://")
        .unwrap_or(&rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_owned();
    host == "api.openai.com"
}

/// A tool call being streamed.
#[derive(Debug, Default)]
struct Pending {
    index: u64,
    id: Option<String>,
    name: String,
    /// `arguments` fragments (strings), concatenated.
    args: String,
    /// `arguments` sent as a JSON object (Ollama).
    args_object: Option<Value>,
}

/// The sans-IO parser of a chat completions stream.
#[derive(Debug, Default)]
pub struct Parser {
    chunks: usize,
    calls: Vec<Pending>,
    finish_reason: Option<String>,
    done: bool,
}

impl Parser {
    /// The pending call a fragment belongs to: by id when it has one (a new id is a new call,
    /// even at the same index), else the latest call at its index.
    fn slot(&mut self, index: u64, id: Option<&str>) -> &mut Pending {
        let found = match id {
            Some(id) => self
                .calls
                .iter()
                .position(|c| c.id.as_deref() == Some(id))
                .or_else(|| {
                    // A call whose id had not come yet, at this index.
                    self.calls
                        .iter()
                        .rposition(|c| c.index == index && c.id.is_none())
                }),
            None => self.calls.iter().rposition(|c| c.index == index),
        };
        let at = match found {
            Some(at) => at,
            None => {
                self.calls.push(Pending {
                    index,
                    ..Pending::default()
                });
                self.calls.len() - 1
            }
        };
        let slot = &mut self.calls[at];
        if slot.id.is_none()
            && let Some(id) = id
        {
            slot.id = Some(id.to_owned());
        }
        slot
    }

    /// Every accumulated call, in the order they began, then the stop.
    fn complete(&mut self) -> Vec<ModelEvent> {
        let mut out = Vec::new();
        for (n, c) in std::mem::take(&mut self.calls).into_iter().enumerate() {
            let arguments = match c.args_object {
                Some(obj) if c.args.trim().is_empty() => obj,
                _ if c.args.trim().is_empty() => Value::Object(Map::new()),
                _ => serde_json::from_str(&c.args).unwrap_or(Value::String(c.args)),
            };
            out.push(ModelEvent::ToolCall(ModelToolCall {
                id: c
                    .id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| format!("call_deskhand_{n}")),
                name: c.name,
                arguments,
            }));
        }
        out.push(ModelEvent::Stop(self.finish_reason.take()));
        out
    }
}

impl EventParser for Parser {
    fn on_event(
        &mut self,
        _event: Option<&str>,
        data: &str,
    ) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            return Ok(vec![]);
        }
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(self.complete());
        }
        let v: Value = serde_json::from_str(data).map_err(|_| ModelError::Garbage {
            expected: "JSON in a chat completions chunk".into(),
            sample: sse::sample_of(data.as_bytes()),
        })?;
        if v.get("error").is_some() {
            return Err(sse::error_in_json(data)
                .unwrap_or_else(|| ModelError::Stream(sse::sample_of(data.as_bytes()))));
        }
        self.chunks += 1;
        let mut out = Vec::new();
        for choice in v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let delta = choice.get("delta").or_else(|| choice.get("message"));
            if let Some(text) = delta.and_then(|d| d.get("content")).and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push(ModelEvent::Text(text.to_owned()));
            }
            for tc in delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
                let id = tc
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|i| !i.is_empty());
                let slot = self.slot(index, id);
                let f = tc.get("function");
                if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str)
                    && slot.name.is_empty()
                {
                    slot.name = name.to_owned();
                }
                match f.and_then(|f| f.get("arguments")) {
                    Some(Value::String(s)) => slot.args.push_str(s),
                    Some(obj @ Value::Object(_)) => slot.args_object = Some(obj.clone()),
                    _ => {}
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(r.to_owned());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            out.push(ModelEvent::Usage(Usage {
                input_tokens: n("prompt_tokens"),
                output_tokens: n("completion_tokens"),
            }));
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<ModelEvent>, ModelError> {
        if self.done {
            return Ok(vec![]);
        }
        if self.chunks == 0 {
            return Err(ModelError::Garbage {
                expected: "a chat completions stream".into(),
                sample: String::new(),
            });
        }
        // No `[DONE]` (some servers end the body instead): what accumulated is the answer.
        self.done = true;
        Ok(self.complete())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ToolDef;
    use crate::model::ToolResult;
    use crate::model::sse::tests::parse_chunked;

    async fn parse(body: &str) -> Vec<Result<ModelEvent, ModelError>> {
        let whole = parse_chunked(body.as_bytes(), body.len(), Box::new(Parser::default())).await;
        for chunk in [1, 5, 50] {
            let parts = parse_chunked(body.as_bytes(), chunk, Box::new(Parser::default())).await;
            assert_eq!(parts, whole, "chunks of {chunk}");
        }
        whole
    }

    fn ok(events: Vec<Result<ModelEvent, ModelError>>) -> Vec<ModelEvent> {
        events.into_iter().map(|e| e.expect("an event")).collect()
    }

    fn calls(events: &[ModelEvent]) -> Vec<(String, String, Value)> {
        events
            .iter()
            .filter_map(|e| match e {
                ModelEvent::ToolCall(c) => {
                    Some((c.id.clone(), c.name.clone(), c.arguments.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn data(lines: &[Value]) -> String {
        let mut s: String = lines.iter().map(|l| format!("data: {l}\n\n")).collect();
        s.push_str("data: [DONE]\n\n");
        s
    }

    /// OpenAI itself: text, then two calls streamed by index with arguments in fragments.
    #[tokio::test]
    async fn fragments_by_index_with_usage() {
        let body = data(&[
            json!({"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":"Look"},"finish_reason":null}],"usage":null}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"content":"ing."},"finish_reason":null}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_A","type":"function","function":{"name":"list","arguments":""}}]},"finish_reason":null}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"path\":"}}]},"finish_reason":null}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_B","type":"function","function":{"name":"read","arguments":"{\"path\":\"~/x\"}"}}]},"finish_reason":null}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"~\"}"}}]},"finish_reason":null}]}),
            json!({"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
            json!({"id":"c1","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120}}),
        ]);
        let events = ok(parse(&body).await);
        assert_eq!(events[0], ModelEvent::Text("Look".into()));
        assert_eq!(events[1], ModelEvent::Text("ing.".into()));
        assert_eq!(
            calls(&events),
            vec![
                ("call_A".into(), "list".into(), json!({"path": "~"})),
                ("call_B".into(), "read".into(), json!({"path": "~/x"})),
            ]
        );
        assert!(events.contains(&ModelEvent::Usage(Usage {
            input_tokens: 100,
            output_tokens: 20
        })));
        assert_eq!(
            events.last(),
            Some(&ModelEvent::Stop(Some("tool_calls".into())))
        );
    }

    /// Ollama: each call whole in one chunk, all at index 0 with different ids, `arguments` an
    /// object, no `id`/`model`/`created` on the chunk, and `finish_reason: "stop"`.
    #[tokio::test]
    async fn ollama_whole_calls_at_index_zero_with_object_arguments() {
        let body = data(&[
            json!({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_1","index":0,"type":"function","function":{"name":"list","arguments":{"path":"~/Downloads"}}}]},"finish_reason":null}]}),
            json!({"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_2","index":0,"type":"function","function":{"name":"read","arguments":"{\"path\":\"~/a.txt\"}"}}]},"finish_reason":null}]}),
            json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop"}]}),
            json!({"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":9}}),
        ]);
        let events = ok(parse(&body).await);
        assert_eq!(
            calls(&events),
            vec![
                (
                    "call_1".into(),
                    "list".into(),
                    json!({"path": "~/Downloads"})
                ),
                ("call_2".into(), "read".into(), json!({"path": "~/a.txt"})),
            ]
        );
        assert_eq!(events.last(), Some(&ModelEvent::Stop(Some("stop".into()))));
    }

    /// No ids at all, fragments by index; a body that ends without `[DONE]`.
    #[tokio::test]
    async fn missing_ids_and_no_done() {
        let mut body = String::new();
        for l in [
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"list","arguments":"{\"pa"}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"th\":\"~\"}"}}]}}]}),
            json!({"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"name":"screenshot"}}]}}]}),
        ] {
            body.push_str(&format!("data: {l}\n\n"));
        }
        let events = ok(parse(&body).await);
        assert_eq!(
            calls(&events),
            vec![
                (
                    "call_deskhand_0".into(),
                    "list".into(),
                    json!({"path": "~"})
                ),
                ("call_deskhand_1".into(), "screenshot".into(), json!({})),
            ]
        );
        assert_eq!(events.last(), Some(&ModelEvent::Stop(None)));
    }

    #[tokio::test]
    async fn errors_and_garbage() {
        let e = parse(
            "data: {\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}\n\n",
        )
        .await
        .pop()
        .expect("one")
        .expect_err("an error");
        assert_eq!(
            e.to_string(),
            "the model server reported an error: server_error: out of memory"
        );
        let e = parse("Internal Server Error")
            .await
            .pop()
            .expect("one")
            .expect_err("garbage");
        assert!(e.to_string().contains("Internal Server Error"), "{e}");
        let e = parse("data: {oops\n\n")
            .await
            .pop()
            .expect("one")
            .expect_err("garbage");
        assert!(
            e.to_string()
                .contains("not JSON in a chat completions chunk"),
            "{e}"
        );
    }

    #[test]
    fn the_request_has_stream_options_tools_and_tool_messages() {
        let req = ModelRequest {
            system: "sys".into(),
            messages: vec![
                ChatMessage::User("hi".into()),
                ChatMessage::Assistant {
                    text: "ok".into(),
                    calls: vec![ModelToolCall {
                        id: "c1".into(),
                        name: "read".into(),
                        arguments: json!({"path": "~/a"}),
                    }],
                },
                ChatMessage::ToolResults(vec![ToolResult {
                    call_id: "c1".into(),
                    content: "not approved: denied on phone".into(),
                    is_error: true,
                }]),
            ],
            tools: vec![ToolDef {
                name: "read".into(),
                description: "Read".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 100,
        };
        assert!(is_openai_itself("https://api.openai.com/v1"));
        assert!(is_openai_itself("https://API.openai.com:443/v1/"));
        assert!(!is_openai_itself("http://127.0.0.1:11434/v1"));
        assert!(!is_openai_itself("https://api.openai.com.evil.example/v1"));
        let body = request_body("llama3", &req);
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\"~/a\"}"
        );
        assert_eq!(body["messages"][3]["role"], "tool");
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        assert!(
            body["messages"][3]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("Error: not approved"))
        );
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
    }
}
