//! Agents turn a task's prompt into tool calls. They never judge or run a call themselves: every
//! call goes through a [`ToolHost`], which applies the policy, asks for approval and executes.
//!
//! The built-in agent ([`Builtin`]) needs no model: it understands a small command language a
//! person can type on a phone. An LLM agent (Anthropic Messages API, OpenAI-compatible servers)
//! fits the same trait: it loops model → tool calls → [`ToolHost::call`] → results → model.

use std::future::Future;
use std::pin::Pin;

use deskhand_core::schema::BlobRef;
use serde_json::{Value, json};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call of a tool, with its arguments as JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// Tool name (see [`crate::policy::TOOLS`]).
    pub tool: String,
    /// Arguments.
    pub args: Value,
}

/// What a tool gave back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolOutput {
    /// Text for the person (and for a model).
    pub text: String,
    /// Blobs it produced.
    pub blobs: Vec<BlobRef>,
}

/// Why a call did not run or did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The policy refused it.
    #[error("denied: {0}")]
    Denied(String),
    /// A phone denied it, or the request expired.
    #[error("not approved: {0}")]
    NotApproved(String),
    /// It ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The task was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// What an agent works through: policy, approvals and the tools themselves.
pub trait ToolHost: Send + Sync {
    /// Judges, maybe asks, and runs one call.
    fn call(&self, call: ToolCall) -> BoxFuture<'_, Result<ToolOutput, CallError>>;
    /// Reports progress on the task.
    fn progress<'a>(&'a self, text: &'a str) -> BoxFuture<'a, ()>;
}

/// How a task ended, from the agent's side.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentOutcome {
    /// Whether it did what was asked.
    pub ok: bool,
    /// The reply shown in the conversation.
    pub summary: String,
    /// Blobs to attach to the result.
    pub blobs: Vec<BlobRef>,
}

/// Turns a prompt into tool calls.
pub trait Agent: Send + Sync {
    /// Name shown in the task's events.
    fn name(&self) -> &str;
    /// Carries out `prompt` through `host`.
    fn run<'a>(&'a self, prompt: &'a str, host: &'a dyn ToolHost) -> BoxFuture<'a, AgentOutcome>;
}

/// The command language of the built-in agent, as `help` prints it.
pub const HELP: &str = "\
Commands (~ is your home folder):
  list PATH              what a folder holds
  find PATTERN [in PATH] files whose name matches (* and ? work)
  read PATH              the beginning of a text file
  summarize PATH         sizes, types, newest files, first lines
  screenshot             a picture of the screen
  open PATH|URL          open with the default app (asks first)
  type TEXT              type on the keyboard (asks first)
  key COMBO              press keys, e.g. key ctrl+s (asks first)
  click X Y              click at a screen position (asks first)
  move FROM TO           move or rename (asks first)
  trash PATH             move to the Deskhand trash (asks first; deskhand trash restore undoes it)
  run COMMAND            run a shell command (asks first)
  help                   this list";

/// The built-in agent: one command per task, no model.
#[derive(Clone, Copy, Debug, Default)]
pub struct Builtin;

/// A parsed command: a tool call, or a direct answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed {
    /// Run this call.
    Call(ToolCall),
    /// Answer this (help, or a hint for input that is not a command).
    Answer(String),
}

/// Parses one line of the command language.
pub fn parse(prompt: &str) -> Parsed {
    let text = prompt.trim();
    let (verb, rest) = match text.split_once(char::is_whitespace) {
        Some((v, r)) => (v, r.trim()),
        None => (text, ""),
    };
    let verb_lc = verb.to_lowercase();
    let call = |tool: &str, args: Value| {
        Parsed::Call(ToolCall {
            tool: tool.into(),
            args,
        })
    };
    let needs = |what: &str, example: &str| {
        Parsed::Answer(format!("`{verb_lc}` needs {what}, for example: {example}"))
    };
    match verb_lc.as_str() {
        "" | "help" | "?" | "commands" => Parsed::Answer(HELP.into()),
        "list" | "ls" => call("list", json!({ "path": or_home(rest) })),
        "find" | "search" => {
            if rest.is_empty() {
                return needs("a name pattern", "find *.pdf in ~/Documents");
            }
            let (pattern, path) = match rest.rsplit_once(" in ") {
                Some((p, d)) if !p.trim().is_empty() => (p.trim(), d.trim()),
                _ => (rest, "~"),
            };
            call("find", json!({ "pattern": pattern, "path": path }))
        }
        "read" | "cat" | "show" => {
            if rest.is_empty() {
                return needs("a file", "read ~/notes.txt");
            }
            call("read", json!({ "path": rest }))
        }
        "summarize" | "summarise" | "summary" => {
            call("summarize", json!({ "path": or_home(rest) }))
        }
        "screenshot" | "screen" => call("screenshot", json!({})),
        "open" => {
            if rest.is_empty() {
                return needs("a file or a link", "open https://example.org");
            }
            call("open", json!({ "target": rest }))
        }
        "type" => {
            if rest.is_empty() {
                return needs("some text", "type Hello");
            }
            call("type", json!({ "text": rest }))
        }
        "key" | "press" => {
            if rest.is_empty() {
                return needs("a key combination", "key ctrl+s");
            }
            call("key", json!({ "combo": rest }))
        }
        "click" => {
            let nums: Vec<i64> = rest
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .filter_map(|s| s.parse().ok())
                .collect();
            match nums.as_slice() {
                [x, y] if *x >= 0 && *y >= 0 => call("click", json!({ "x": x, "y": y })),
                _ => needs("two screen coordinates", "click 640 400"),
            }
        }
        "move" | "mv" | "rename" => match split_two_paths(rest) {
            Some((from, to)) => call("move", json!({ "from": from, "to": to })),
            None => needs(
                "a source and a destination",
                "move ~/Downloads/report.pdf ~/Documents",
            ),
        },
        "trash" | "delete" | "rm" | "remove" => {
            if rest.is_empty() {
                return needs("a file or folder", "trash ~/Downloads/old.zip");
            }
            call("trash", json!({ "path": rest }))
        }
        "run" | "sh" | "shell" | "$" => {
            if rest.is_empty() {
                return needs("a command", "run df -h");
            }
            call("run", json!({ "command": rest }))
        }
        // The request is never echoed back in full: it is already in the conversation.
        _ => Parsed::Answer(format!(
            "I don't know \"{}\". The built-in agent understands a few commands; \
             configure an LLM agent for free-form requests.\n\n{HELP}",
            deskhand_core::schema::clip(verb, 40)
        )),
    }
}

fn or_home(rest: &str) -> &str {
    if rest.is_empty() { "~" } else { rest }
}

/// `FROM TO`, where either may be quoted to hold spaces.
fn split_two_paths(rest: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = rest.chars().peekable();
    while parts.len() < 2 {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let quote = match chars.peek() {
            Some('"') | Some('\'') => chars.next(),
            Some(_) => None,
            None => break,
        };
        let mut s = String::new();
        for c in chars.by_ref() {
            match quote {
                Some(q) if c == q => break,
                None if c.is_whitespace() => break,
                _ => s.push(c),
            }
        }
        parts.push(s);
    }
    let tail: String = chars.collect();
    if parts.len() == 2 && tail.trim().is_empty() && !parts[0].is_empty() && !parts[1].is_empty() {
        Some((parts.remove(0), parts.remove(0)))
    } else {
        None
    }
}

impl Agent for Builtin {
    fn name(&self) -> &str {
        "builtin"
    }

    fn run<'a>(&'a self, prompt: &'a str, host: &'a dyn ToolHost) -> BoxFuture<'a, AgentOutcome> {
        Box::pin(async move {
            match parse(prompt) {
                Parsed::Answer(text) => AgentOutcome {
                    ok: true,
                    summary: text,
                    blobs: vec![],
                },
                Parsed::Call(call) => match host.call(call).await {
                    Ok(out) => AgentOutcome {
                        ok: true,
                        summary: out.text,
                        blobs: out.blobs,
                    },
                    Err(e) => AgentOutcome {
                        ok: false,
                        summary: e.to_string(),
                        blobs: vec![],
                    },
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(p: Parsed) -> (String, Value) {
        match p {
            Parsed::Call(c) => (c.tool, c.args),
            Parsed::Answer(a) => panic!("expected a call, got {a}"),
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            tool(parse("list ~/docs")),
            ("list".into(), json!({"path": "~/docs"}))
        );
        assert_eq!(tool(parse("list")), ("list".into(), json!({"path": "~"})));
        assert_eq!(
            tool(parse("find *.pdf in ~/Documents")),
            (
                "find".into(),
                json!({"pattern": "*.pdf", "path": "~/Documents"})
            )
        );
        assert_eq!(
            tool(parse("find report")),
            ("find".into(), json!({"pattern": "report", "path": "~"}))
        );
        assert_eq!(tool(parse("key ctrl+s")).1, json!({"combo": "ctrl+s"}));
        assert_eq!(tool(parse("click 10 20")).1, json!({"x": 10, "y": 20}));
        assert_eq!(
            tool(parse("move \"~/a b.txt\" ~/c")).1,
            json!({"from": "~/a b.txt", "to": "~/c"})
        );
        assert_eq!(
            tool(parse("run ls -la | wc -l")).1,
            json!({"command": "ls -la | wc -l"})
        );
        assert_eq!(tool(parse("screenshot")).0, "screenshot");
    }

    #[test]
    fn unknown_input_gets_a_helpful_answer() {
        let Parsed::Answer(a) = parse("please tidy my desktop") else {
            panic!()
        };
        assert!(a.contains("I don't know \"please\"") && a.contains("list PATH"));
        // A long request is not echoed back (red team 7: it was stored once more per echo).
        let Parsed::Answer(a) = parse(&"x".repeat(30_000)) else {
            panic!()
        };
        assert!(a.len() < HELP.len() + 300, "{}", a.len());
        let Parsed::Answer(a) = parse("click here") else {
            panic!()
        };
        assert!(a.contains("click 640 400"));
        let Parsed::Answer(a) = parse("move onlyone") else {
            panic!()
        };
        assert!(a.contains("source and a destination"));
    }
}
