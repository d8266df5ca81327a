//! The one tool registry: every tool this desktop offers, defined once.
//!
//! A tool is a [`ToolSpec`]: its name, a description for a model, the JSON Schema of its
//! arguments, its default verdict, what it does with each path argument (capabilities and
//! reach, which the policy judges), and the risk an approval shows. Everything that needs to
//! know the tools reads them here: the policy ([`crate::policy::Policy::judge`],
//! [`crate::policy::Rule::parse`]), the executor's `prepare` and `execute` (which match
//! exhaustively on [`BuiltinTool`]), the tool definitions a model is shown
//! ([`Registry::defs`], behind [`crate::agent::ToolHost::tools`]) and the built-in agent's help.
//!
//! Two kinds of entries:
//! - **built-in tools**, a static table ([`BUILTINS`]), one entry per [`BuiltinTool`];
//! - **connector tools**, registered at run time by the MCP side with
//!   [`Registry::set_connector_tools`], named `mcp__<server>__<tool>`. Their spec follows from
//!   what the server says, judged as hints from a process we do not control
//!   ([`ConnectorTool`]): `allow` by default only for a read-only tool of a trusted server,
//!   risk from the annotations, and arguments that are paths by name ([`CONNECTOR_PATH_ARGS`],
//!   found per call by [`connector_path_args`]) judged against the secret locations and the
//!   roots like any built-in tool's paths.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use deskhand_core::approval::Risk;
use serde_json::{Map, Value, json};

use crate::agent::ToolDef;
use crate::policy::Capability::{Delete, List, Read, Write};
use crate::policy::{Capability, PathArg, Reach};

/// A tool's verdict when no rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// Runs without asking.
    Allow,
    /// Needs approval.
    Ask,
}

/// The type of one argument of a built-in tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A JSON string.
    Text,
    /// A JSON integer (no fraction), at least 0.
    Count,
}

impl ParamKind {
    fn schema_type(self) -> &'static str {
        match self {
            ParamKind::Text => "string",
            ParamKind::Count => "integer",
        }
    }

    /// Whether `v` is of this kind.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            ParamKind::Text => v.is_string(),
            ParamKind::Count => v.as_u64().is_some(),
        }
    }
}

/// One argument of a built-in tool.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    /// Its name in the call's arguments.
    pub name: &'static str,
    /// Its type.
    pub kind: ParamKind,
    /// Whether a call must give it.
    pub required: bool,
    /// What it means, for a model.
    pub description: &'static str,
}

const fn text(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        kind: ParamKind::Text,
        required: true,
        description,
    }
}

const fn count(name: &'static str, required: bool, description: &'static str) -> Param {
    Param {
        name,
        kind: ParamKind::Count,
        required,
        description,
    }
}

/// Declares [`BuiltinTool`] and its list of every variant together, so neither can miss one.
macro_rules! builtin_tools {
    ($($(#[$doc:meta])* $variant:ident),+ $(,)?) => {
        /// A built-in tool. The executor's `prepare` and `execute` match on it exhaustively,
        /// and each has exactly one entry in [`BUILTINS`] (a test checks both ways).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum BuiltinTool { $($(#[$doc])* $variant),+ }

        impl BuiltinTool {
            /// Every built-in tool.
            pub const ALL: &'static [BuiltinTool] = &[$(BuiltinTool::$variant),+];
        }
    };
}

builtin_tools!(
    /// What a folder holds.
    List,
    /// Files whose name matches a pattern.
    Find,
    /// Files whose content holds a text.
    Search,
    /// A text file's content, a page of lines at a time.
    Read,
    /// Sizes, types, newest files, first lines of a folder.
    Summarize,
    /// A picture of the screen.
    Screenshot,
    /// Create or replace a text file.
    Write,
    /// Create a folder (and its missing parents).
    Mkdir,
    /// Copy a file or folder.
    Copy,
    /// Move or rename.
    Move,
    /// Move to the Deskhand trash.
    Trash,
    /// A shell command.
    Run,
    /// Typing on the keyboard.
    Type,
    /// A key combination.
    Key,
    /// A mouse click.
    Click,
    /// Open a file or link with its default app.
    Open,
);

/// One built-in tool, as the static table holds it.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// Which tool.
    pub tool: BuiltinTool,
    /// Its name (and the rule word for it).
    pub name: &'static str,
    /// What it does, for a model.
    pub description: &'static str,
    /// Its arguments.
    pub params: &'static [Param],
    /// Its verdict when no rule matches.
    pub default: Default,
    /// Its path arguments; empty for tools that take text.
    pub paths: &'static [PathArg],
    /// The risk an approval shows (the executor may raise it for a call, e.g. a move into a
    /// persistence location is High).
    pub risk: Risk,
}

const fn path_arg(arg: &'static str, caps: &'static [Capability], reach: Reach) -> PathArg {
    PathArg { arg, caps, reach }
}

const PATH_DOC: &str =
    "A path on the desktop: absolute, or starting with ~ (the home folder), or relative to home.";

/// Every built-in tool: the one table.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        tool: BuiltinTool::List,
        name: "list",
        description: "List what a folder holds: names, sizes, sub-folders (up to 500 entries).",
        params: &[text("path", PATH_DOC)],
        default: Default::Allow,
        paths: &[path_arg("path", &[List], Reach::Path)],
        risk: Risk::Low,
    },
    Builtin {
        tool: BuiltinTool::Find,
        name: "find",
        description: "Find files and folders whose name matches a pattern (* and ? work, case \
                      does not matter) anywhere under a folder; up to 200 matches.",
        params: &[
            text("pattern", "A name pattern, e.g. *.pdf or invoice*."),
            text("path", PATH_DOC),
        ],
        default: Default::Allow,
        paths: &[path_arg("path", &[List], Reach::Walk)],
        risk: Risk::Low,
    },
    Builtin {
        tool: BuiltinTool::Search,
        name: "search",
        description: "Search the text files under a folder (or one file) for lines that contain \
                      a text (case does not matter); answers `path:line: text` lines. Binary \
                      and very large files are skipped; bounded in files, bytes and time.",
        params: &[
            text("path", PATH_DOC),
            text("text", "The text to look for (not a pattern)."),
            count(
                "max_results",
                false,
                "How many matching lines to return at most (default 100, at most 1000).",
            ),
        ],
        default: Default::Allow,
        paths: &[path_arg("path", &[List, Read], Reach::Walk)],
        risk: Risk::Low,
    },
    Builtin {
        tool: BuiltinTool::Read,
        name: "read",
        description: "Read a UTF-8 text file, a page of lines at a time: the answer says which \
                      lines it shows and how many are left.",
        params: &[
            text("path", PATH_DOC),
            count(
                "offset",
                false,
                "The first line to show, counted from 0 (default 0).",
            ),
            count(
                "length",
                false,
                "How many lines to show at most (default 200, at most 2000; a page is also \
                 cut at 64 KB).",
            ),
        ],
        default: Default::Allow,
        paths: &[path_arg("path", &[Read], Reach::Path)],
        risk: Risk::Low,
    },
    Builtin {
        tool: BuiltinTool::Summarize,
        name: "summarize",
        description: "Summarize a folder: counts and sizes by type, the largest and newest \
                      files, the first lines of a few text files.",
        params: &[text("path", PATH_DOC)],
        default: Default::Allow,
        paths: &[path_arg("path", &[List, Read], Reach::Walk)],
        risk: Risk::Low,
    },
    Builtin {
        tool: BuiltinTool::Screenshot,
        name: "screenshot",
        description: "Take a screenshot of the desktop's screen (a PNG shown to the person).",
        params: &[],
        default: Default::Allow,
        paths: &[],
        risk: Risk::Low,
    },
    Builtin {
        tool: BuiltinTool::Write,
        name: "write",
        description: "Create a UTF-8 text file, or replace one (the old file goes to the \
                      Deskhand trash first, so it can be restored). At most 1 MiB of content. \
                      The folder it goes in must exist (see mkdir). Asks the person first.",
        params: &[
            text("path", PATH_DOC),
            text("content", "The whole text of the file."),
        ],
        default: Default::Ask,
        paths: &[path_arg("path", &[Write], Reach::Path)],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Mkdir,
        name: "mkdir",
        description: "Create a folder, and any missing folders above it. Asks the person first.",
        params: &[text("path", PATH_DOC)],
        default: Default::Ask,
        paths: &[path_arg("path", &[Write], Reach::Path)],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Copy,
        name: "copy",
        description: "Copy a file or a folder with everything in it. Never overwrites: into an \
                      existing folder it copies under the same name. Asks the person first.",
        params: &[
            text("from", PATH_DOC),
            text(
                "to",
                "Where the copy goes: a new path, or an existing folder to copy into.",
            ),
        ],
        default: Default::Ask,
        paths: &[
            path_arg("from", &[Read], Reach::Contents),
            path_arg("to", &[Write], Reach::ContentsOf("from")),
        ],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Move,
        name: "move",
        description: "Move or rename a file or folder. Never overwrites: into an existing \
                      folder it moves under the same name. Asks the person first.",
        params: &[
            text("from", PATH_DOC),
            text(
                "to",
                "Where it goes: a new path, or an existing folder to move into.",
            ),
        ],
        default: Default::Ask,
        paths: &[
            path_arg("from", &[Read, Delete], Reach::Contents),
            path_arg("to", &[Write], Reach::ContentsOf("from")),
        ],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Trash,
        name: "trash",
        description: "Move a file or folder to the Deskhand trash (it can be restored on the \
                      desktop). Asks the person first.",
        params: &[text("path", PATH_DOC)],
        default: Default::Ask,
        paths: &[path_arg("path", &[Delete], Reach::Contents)],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Run,
        name: "run",
        description: "Run a shell command in the home folder, in a sandbox, stopped after a \
                      time limit; answers its exit status and output. Asks the person first.",
        params: &[text(
            "command",
            "The command line, as a POSIX shell reads it.",
        )],
        default: Default::Ask,
        paths: &[],
        risk: Risk::High,
    },
    Builtin {
        tool: BuiltinTool::Type,
        name: "type",
        description: "Type text on the desktop's keyboard, exactly as written. Asks the person \
                      first.",
        params: &[text("text", "The text to type.")],
        default: Default::Ask,
        paths: &[],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Key,
        name: "key",
        description: "Press a key combination on the desktop's keyboard, e.g. ctrl+s. Asks the \
                      person first.",
        params: &[text(
            "combo",
            "Keys joined by +, e.g. ctrl+shift+t, alt+f4, enter.",
        )],
        default: Default::Ask,
        paths: &[],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Click,
        name: "click",
        description: "Click the left mouse button at a position on the desktop's screen. Asks \
                      the person first.",
        params: &[
            count("x", true, "Pixels from the left edge of the screen."),
            count("y", true, "Pixels from the top edge of the screen."),
        ],
        default: Default::Ask,
        paths: &[],
        risk: Risk::Medium,
    },
    Builtin {
        tool: BuiltinTool::Open,
        name: "open",
        description: "Open a file with its default app, or an http(s) link in the default \
                      browser. Asks the person first.",
        params: &[text(
            "target",
            "A path (see list) or an http:// or https:// link.",
        )],
        default: Default::Ask,
        paths: &[path_arg("target", &[Read], Reach::Path)],
        risk: Risk::Low,
    },
];

/// The built-in tool called `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

impl BuiltinTool {
    /// Its entry in [`BUILTINS`].
    pub fn spec(self) -> &'static Builtin {
        BUILTINS
            .iter()
            .find(|b| b.tool == self)
            .expect("every built-in tool has an entry in BUILTINS (checked by a test)")
    }
}

impl Builtin {
    /// The JSON Schema object of its arguments: `{"type":"object","properties":…,
    /// "required":[…],"additionalProperties":false}`.
    pub fn input_schema(&self) -> Value {
        let mut props = Map::new();
        for p in self.params {
            let mut prop = json!({ "type": p.kind.schema_type(), "description": p.description });
            if p.kind == ParamKind::Count {
                prop["minimum"] = json!(0);
            }
            props.insert(p.name.into(), prop);
        }
        let required: Vec<&str> = self
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name)
            .collect();
        json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        })
    }

    /// Checks a call's arguments against [`Builtin::params`]: an object (or nothing, for a
    /// tool without arguments), every required argument given, every argument known and of its
    /// type. The error says what is wrong in words a model and a phone can read.
    pub fn check_args(&self, args: &Value) -> Result<(), String> {
        let empty = Map::new();
        let obj = match args {
            Value::Object(o) => o,
            Value::Null => &empty,
            other => {
                return Err(format!(
                    "`{}` takes its arguments as a JSON object, not {}",
                    self.name,
                    json_kind(other)
                ));
            }
        };
        let names = || {
            let n: Vec<&str> = self.params.iter().map(|p| p.name).collect();
            if n.is_empty() {
                "none".to_owned()
            } else {
                n.join(", ")
            }
        };
        for key in obj.keys() {
            if !self.params.iter().any(|p| p.name == key) {
                return Err(format!(
                    "`{}` takes no argument `{}` (it takes: {})",
                    self.name,
                    deskhand_core::schema::clip(key, 40),
                    names()
                ));
            }
        }
        for p in self.params {
            match obj.get(p.name) {
                None | Some(Value::Null) if p.required => {
                    return Err(format!(
                        "`{}` needs {} argument `{}`",
                        self.name,
                        match p.kind {
                            ParamKind::Text => "a text",
                            ParamKind::Count => "a number",
                        },
                        p.name
                    ));
                }
                None | Some(Value::Null) => {}
                Some(v) if !p.kind.accepts(v) => {
                    return Err(format!(
                        "`{}`'s argument `{}` must be {}, not {}",
                        self.name,
                        p.name,
                        match p.kind {
                            ParamKind::Text => "text",
                            ParamKind::Count => "a whole number, 0 or more",
                        },
                        json_kind(v)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "true/false",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Where a tool comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Built into the desktop.
    Builtin(BuiltinTool),
    /// A tool of an MCP server (a connector).
    Connector {
        /// The server's name in the config (`[mcp_servers.<name>]`).
        server: String,
        /// The tool's own name, as the server calls it.
        tool: String,
        /// Whether the server's tool says it only reads (`readOnlyHint`); a hint, but it decides
        /// which capabilities its path arguments are judged with.
        read_only: bool,
    },
}

/// One tool as everything else sees it: built-in or a connector's.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    /// Its name, as calls and rules name it (`read`, `mcp__files__read_file`).
    pub name: Cow<'static, str>,
    /// What it does, for a model.
    pub description: Cow<'static, str>,
    /// The JSON Schema object of its arguments.
    pub input_schema: Value,
    /// Its verdict when no rule matches.
    pub default: Default,
    /// Its path arguments (for a connector tool: every name [`connector_path_args`] may find).
    pub paths: Cow<'static, [PathArg]>,
    /// The risk an approval shows.
    pub risk: Risk,
    /// Where it comes from.
    pub source: Source,
}

impl ToolSpec {
    /// The spec of a built-in tool.
    pub fn builtin(b: &'static Builtin) -> Self {
        ToolSpec {
            name: Cow::Borrowed(b.name),
            description: Cow::Borrowed(b.description),
            input_schema: b.input_schema(),
            default: b.default,
            paths: Cow::Borrowed(b.paths),
            risk: b.risk,
            source: Source::Builtin(b.tool),
        }
    }

    /// The tool as a model is shown it.
    pub fn def(&self) -> ToolDef {
        ToolDef {
            name: self.name.clone().into_owned(),
            description: self.description.clone().into_owned(),
            input_schema: self.input_schema.clone(),
        }
    }
}

/// The argument names of a connector tool that are paths: `path`, `paths` (a list), `source`,
/// `destination`, and `uri` when it is a `file:` URI.
pub const CONNECTOR_PATH_ARGS: [&str; 5] = ["path", "paths", "source", "destination", "uri"];

// A connector may read or change anything inside a folder it is given (and follow links
// there): its paths reach their contents, which the policy walks.
const READ_ONLY_PATHS: &[PathArg] = &[
    path_arg("path", &[Read], Reach::Contents),
    path_arg("paths", &[Read], Reach::Contents),
    path_arg("source", &[Read], Reach::Contents),
    path_arg("destination", &[Read], Reach::Contents),
    path_arg("uri", &[Read], Reach::Contents),
];

const READ_WRITE_PATHS: &[PathArg] = &[
    path_arg("path", &[Read, Write], Reach::Contents),
    path_arg("paths", &[Read, Write], Reach::Contents),
    path_arg("source", &[Read, Write], Reach::Contents),
    path_arg("destination", &[Read, Write], Reach::Contents),
    path_arg("uri", &[Read, Write], Reach::Contents),
];

/// A connector's tool as its MCP server describes it (`tools/list`): what
/// [`Registry::set_connector_tools`] takes.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorTool {
    /// The tool's name on the server (`read_file`).
    pub name: String,
    /// Its description from the server (shown to a model as it is: data, not instructions to
    /// the desktop).
    pub description: String,
    /// Its `inputSchema` (a JSON Schema object).
    pub input_schema: Value,
    /// `annotations.readOnlyHint`, `false` when absent.
    pub read_only: bool,
    /// `annotations.destructiveHint`, `false` when absent.
    pub destructive: bool,
}

/// Longest tool name a model API accepts everywhere (Anthropic and OpenAI: 64 characters of
/// `[A-Za-z0-9_-]`).
pub const MAX_TOOL_NAME: usize = 64;

/// Why a connector's tool was not registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorToolError {
    /// The server's name cannot be part of a tool name.
    #[error("connector name {0:?} must be letters, digits, - and single _ (no __), not empty")]
    BadServer(String),
    /// The tool's name cannot be part of a tool name.
    #[error(
        "connector {server:?}: tool name {tool:?} must be letters, digits, - and _, and \
         mcp__{server}__<name> at most {MAX_TOOL_NAME} characters"
    )]
    BadName {
        /// The server.
        server: String,
        /// The tool's name as given.
        tool: String,
    },
    /// Two tools of one server have the same name.
    #[error("connector {server:?} offers two tools named {tool:?}")]
    Duplicate {
        /// The server.
        server: String,
        /// The name.
        tool: String,
    },
    /// The input schema is not a JSON Schema object of type `object`.
    #[error("connector {server:?}: tool {tool:?} has an input schema that is not an object schema")]
    BadSchema {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
    },
}

pub(crate) fn valid_server(server: &str) -> bool {
    !server.is_empty()
        && !server.contains("__")
        && !server.starts_with('_')
        && !server.ends_with('_')
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The registry name of `tool` of connector `server`: `mcp__<server>__<tool>`.
pub fn connector_name(server: &str, tool: &str) -> String {
    format!("mcp__{server}__{tool}")
}

/// Whether `schema` is a JSON Schema object of type `object` (what every tool's arguments are).
pub fn is_object_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
        && schema.get("properties").is_none_or(Value::is_object)
        && schema
            .get("required")
            .is_none_or(|r| r.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
}

impl ConnectorTool {
    /// Its registry spec, for `server` (trusted or not). Default: `allow` only when the server
    /// is trusted and the tool says it only reads; `ask` otherwise. Risk: High when it says it
    /// is destructive, Low when it says it only reads, Medium otherwise. Path arguments: Read,
    /// and Write too unless it says it only reads.
    pub fn spec(&self, server: &str, trusted: bool) -> Result<ToolSpec, ConnectorToolError> {
        if !valid_server(server) {
            return Err(ConnectorToolError::BadServer(server.to_owned()));
        }
        let name = connector_name(server, &self.name);
        if self.name.is_empty()
            || name.len() > MAX_TOOL_NAME
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConnectorToolError::BadName {
                server: server.to_owned(),
                tool: self.name.clone(),
            });
        }
        if !is_object_schema(&self.input_schema) {
            return Err(ConnectorToolError::BadSchema {
                server: server.to_owned(),
                tool: self.name.clone(),
            });
        }
        let risk = if self.destructive {
            Risk::High
        } else if self.read_only {
            Risk::Low
        } else {
            Risk::Medium
        };
        Ok(ToolSpec {
            name: Cow::Owned(name),
            description: Cow::Owned(self.description.clone()),
            input_schema: self.input_schema.clone(),
            default: if trusted && self.read_only {
                Default::Allow
            } else {
                Default::Ask
            },
            paths: Cow::Borrowed(if self.read_only {
                READ_ONLY_PATHS
            } else {
                READ_WRITE_PATHS
            }),
            risk,
            source: Source::Connector {
                server: server.to_owned(),
                tool: self.name.clone(),
                read_only: self.read_only,
            },
        })
    }
}

/// The arguments of a connector call that are paths, as `(argument name, path text)`, in the
/// order [`CONNECTOR_PATH_ARGS`] lists them (each of a `paths` list in its order). The call's
/// arguments decide, not the tool's schema: an argument named so is judged as a path whether the
/// schema declares it or not (a server may read what its schema does not declare), and one the
/// schema declares but the call does not give is nothing to judge. `path`, `source`, `destination` must be text;
/// `paths` a list of texts; `uri` counts only when it is a `file:` URI (decoded to its path).
/// A path must be absolute or start with `~`: a relative one would be resolved by the server
/// against a folder the desktop cannot know. Every other argument, and what it holds nested,
/// is looked at too: a one-line text that is absolute, `~`, starts with `~/` or is a `file:`
/// URI is a path, listed as `path` after the named ones (a server may read what it calls
/// `file` or `dir`).
///
/// Errors (the call is then refused): a path argument of another type, a relative path, a path
/// with spaces around it, a `file:` URI naming another host or not decodable to UTF-8 without
/// NUL.
pub fn connector_path_args(args: &Value) -> Result<Vec<(&'static str, String)>, String> {
    let mut found = Vec::new();
    for name in CONNECTOR_PATH_ARGS {
        let Some(v) = args.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let texts: Vec<&str> = match (name, v) {
            ("paths", Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| "argument `paths` must be a list of texts".to_owned())
                })
                .collect::<Result<_, _>>()?,
            ("paths", _) => return Err("argument `paths` must be a list of texts".into()),
            (_, Value::String(s)) => vec![s.as_str()],
            (_, _) => {
                return Err(format!(
                    "argument `{name}` must be text, not {}",
                    json_kind(v)
                ));
            }
        };
        for t in texts {
            let path = if name == "uri" {
                match file_uri_path(t)? {
                    Some(p) => p,
                    None => continue,
                }
            } else {
                t.to_owned()
            };
            let p = path.trim();
            if p != path {
                return Err(format!(
                    "argument `{name}` has spaces around its path ({}); a connector would read \
                     it relative to its own folder, not where the desktop checks it",
                    deskhand_core::schema::clip(p, 80)
                ));
            }
            if !(p.starts_with('/') || p == "~" || p.starts_with("~/")) {
                return Err(format!(
                    "argument `{name}` is a relative path ({}); a connector's paths must be \
                     absolute or start with ~, so the desktop can check where they lead",
                    deskhand_core::schema::clip(p, 80)
                ));
            }
            found.push((name, path));
        }
    }
    // A path under any other name, or nested, is judged too (as `path`): the server may read
    // what its schema calls `file` or `dir` as well as `path`.
    if let Value::Object(map) = args {
        for (key, v) in map {
            if !CONNECTOR_PATH_ARGS.contains(&key.as_str()) {
                value_paths(&Value::String(key.clone()), &mut found)?;
                value_paths(v, &mut found)?;
            }
        }
    }
    Ok(found)
}

/// The texts in `v` (itself, or anywhere in it, names in objects too) that are paths by their
/// look: one line, and absolute, `~`, starting with `~/`, or a `file:` URI (decoded). Errors as
/// [`file_uri_path`] does, and for such a path with spaces around it.
fn value_paths(v: &Value, found: &mut Vec<(&'static str, String)>) -> Result<(), String> {
    match v {
        Value::String(s) => {
            if s.contains(['\n', '\r']) {
                return Ok(());
            }
            let t = s.trim();
            let path = if t.starts_with('/') || t == "~" || t.starts_with("~/") {
                s.clone()
            } else {
                match file_uri_path(t)? {
                    Some(p) => p,
                    None => return Ok(()),
                }
            };
            if path.trim() != path {
                return Err(format!(
                    "an argument has spaces around its path ({}); a connector would read it \
                     relative to its own folder, not where the desktop checks it",
                    deskhand_core::schema::clip(t, 80)
                ));
            }
            found.push(("path", path));
        }
        Value::Array(items) => {
            for i in items {
                value_paths(i, found)?;
            }
        }
        Value::Object(map) => {
            // A name in an object can be a path too (`{"files": {"/a/b": true}}`).
            for (k, i) in map {
                value_paths(&Value::String(k.clone()), found)?;
                value_paths(i, found)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The path of a `file:` URI (`file:///a/b%20c`, `file://localhost/a`, `file:/a`), percent-
/// decoded; `None` for any other scheme. Errors: another host, bad escapes, a path that is not
/// UTF-8 or holds NUL.
pub fn file_uri_path(uri: &str) -> Result<Option<String>, String> {
    let t = uri.trim();
    let Some(scheme) = t.get(..5) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("file:") {
        return Ok(None);
    }
    let rest = &t[5..];
    let path = if let Some(after) = rest.strip_prefix("//") {
        let (host, path) = match after.find('/') {
            Some(i) => after.split_at(i),
            None => (after, ""),
        };
        if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
            return Err(format!(
                "`{}` names another computer ({host}); only local file: URIs are accepted",
                deskhand_core::schema::clip(t, 80)
            ));
        }
        path
    } else {
        rest
    };
    // Query and fragment are not part of the path.
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(format!(
            "`{}` is not an absolute file: URI",
            deskhand_core::schema::clip(t, 80)
        ));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "`{}` has a bad % escape",
                        deskhand_core::schema::clip(t, 80)
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| {
        format!(
            "`{}` is not UTF-8 once decoded",
            deskhand_core::schema::clip(t, 80)
        )
    })?;
    if s.contains('\0') {
        return Err(format!(
            "`{}` holds a NUL character",
            deskhand_core::schema::clip(t, 80)
        ));
    }
    Ok(Some(s))
}

/// The registry: built-in tools and the connectors' tools of the moment. Shared (`Arc`) by the
/// policy and everyone who lists or runs tools; connectors' tools are replaced whole per server.
#[derive(Debug)]
pub struct Registry {
    builtins: Vec<Arc<ToolSpec>>,
    /// Per server name, its tools (registry names are unique: `mcp__<server>__` is a prefix no
    /// built-in has and no other server shares, since server names hold no `__`).
    connectors: RwLock<BTreeMap<String, Vec<Arc<ToolSpec>>>>,
}

impl std::default::Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in tools, no connectors.
    pub fn new() -> Self {
        Registry {
            builtins: BUILTINS
                .iter()
                .map(|b| Arc::new(ToolSpec::builtin(b)))
                .collect(),
            connectors: RwLock::new(BTreeMap::new()),
        }
    }

    fn connectors(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Vec<Arc<ToolSpec>>>> {
        // A panic while holding the lock cannot leave the map half-written (it is replaced by
        // single inserts), so a poisoned lock is still consistent.
        self.connectors.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The tool called `name`, built-in or a connector's.
    pub fn get(&self, name: &str) -> Option<Arc<ToolSpec>> {
        if let Some(b) = self.builtins.iter().find(|t| t.name == name) {
            return Some(b.clone());
        }
        let rest = name.strip_prefix("mcp__")?;
        let (server, _) = rest.split_once("__")?;
        self.connectors()
            .get(server)?
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// Every tool: built-ins first (in [`BUILTINS`] order), then connectors' by server name.
    pub fn all(&self) -> Vec<Arc<ToolSpec>> {
        let mut all = self.builtins.clone();
        all.extend(self.connectors().values().flatten().cloned());
        all
    }

    /// Every tool as a model is shown it.
    pub fn defs(&self) -> Vec<ToolDef> {
        self.all().iter().map(|t| t.def()).collect()
    }

    /// Replaces the tools of connector `server` (all of them: a server's list is taken whole,
    /// as `tools/list` gives it). Tools that cannot be registered are left out and returned
    /// with the reason; the others are registered. `trusted` is the server's `trusted` flag
    /// from the config. A bad server name registers nothing.
    pub fn set_connector_tools(
        &self,
        server: &str,
        trusted: bool,
        tools: Vec<ConnectorTool>,
    ) -> Vec<ConnectorToolError> {
        if !valid_server(server) {
            return vec![ConnectorToolError::BadServer(server.to_owned())];
        }
        let mut specs: Vec<Arc<ToolSpec>> = Vec::new();
        let mut refused = Vec::new();
        for t in tools {
            if specs
                .iter()
                .any(|s| matches!(&s.source, Source::Connector { tool, .. } if *tool == t.name))
            {
                refused.push(ConnectorToolError::Duplicate {
                    server: server.to_owned(),
                    tool: t.name.clone(),
                });
                continue;
            }
            match t.spec(server, trusted) {
                Ok(s) => specs.push(Arc::new(s)),
                Err(e) => refused.push(e),
            }
        }
        self.connectors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_owned(), specs);
        refused
    }

    /// Removes every tool of connector `server` (it stopped, or left the config).
    pub fn remove_connector(&self, server: &str) {
        self.connectors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_has_one_entry_and_every_entry_a_variant() {
        for t in BuiltinTool::ALL {
            let n = BUILTINS.iter().filter(|b| b.tool == *t).count();
            assert_eq!(n, 1, "{t:?} has {n} entries in BUILTINS");
        }
        assert_eq!(BUILTINS.len(), BuiltinTool::ALL.len());
        let mut names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), BUILTINS.len(), "tool names are unique");
    }

    #[test]
    fn every_entry_has_a_valid_object_schema() {
        for b in BUILTINS {
            let s = b.input_schema();
            assert!(is_object_schema(&s), "{}: {s}", b.name);
            let props = s["properties"].as_object().expect("properties");
            for r in s["required"].as_array().expect("required") {
                assert!(props.contains_key(r.as_str().expect("name")), "{}", b.name);
            }
            for (name, p) in props {
                assert!(
                    matches!(p["type"].as_str(), Some("string" | "integer")),
                    "{}.{name}",
                    b.name
                );
                assert!(
                    !p["description"].as_str().unwrap_or_default().is_empty(),
                    "{}.{name} has no description",
                    b.name
                );
            }
            assert!(!b.description.is_empty(), "{}", b.name);
            // Every path argument is an argument.
            for pa in b.paths {
                assert!(
                    props.contains_key(pa.arg),
                    "{}: path arg {}",
                    b.name,
                    pa.arg
                );
                if let Reach::ContentsOf(other) = pa.reach {
                    assert!(b.paths.iter().any(|q| q.arg == other), "{}", b.name);
                }
            }
            // Tools that change the machine ask by default.
            if b.paths.iter().any(|p| {
                p.caps.contains(&Capability::Write) || p.caps.contains(&Capability::Delete)
            }) {
                assert_eq!(b.default, Default::Ask, "{}", b.name);
            }
        }
    }

    #[test]
    fn check_args_says_what_is_wrong() {
        let read = builtin("read").expect("read");
        assert!(read.check_args(&json!({"path": "~/a"})).is_ok());
        assert!(
            read.check_args(&json!({"path": "~/a", "offset": 3}))
                .is_ok()
        );
        let e = read
            .check_args(&json!({"path": "a", "offset": -1}))
            .unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = read.check_args(&json!({})).unwrap_err();
        assert_eq!(e, "`read` needs a text argument `path`");
        let e = read.check_args(&json!({"path": 3})).unwrap_err();
        assert!(e.contains("must be text, not a number"), "{e}");
        let click = builtin("click").expect("click");
        let e = click.check_args(&json!({"x": 1, "y": -1})).unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = read
            .check_args(&json!({"path": "a", "mode": "x"}))
            .unwrap_err();
        assert!(e.contains("takes no argument `mode`"), "{e}");
        let e = read.check_args(&json!("x")).unwrap_err();
        assert!(e.contains("JSON object"), "{e}");
        let shot = builtin("screenshot").expect("screenshot");
        assert!(shot.check_args(&Value::Null).is_ok());
        assert!(shot.check_args(&json!({})).is_ok());
    }

    fn ctool(name: &str, ro: bool, destructive: bool) -> ConnectorTool {
        ConnectorTool {
            name: name.into(),
            description: format!("{name} tool"),
            input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            read_only: ro,
            destructive,
        }
    }

    #[test]
    fn connector_specs_follow_the_hints_and_the_trust() {
        let r = Registry::new();
        let refused = r.set_connector_tools(
            "files",
            true,
            vec![
                ctool("read_file", true, false),
                ctool("write_file", false, false),
                ctool("delete_file", false, true),
                ctool("read_file", true, false),
                ctool("bad name", true, false),
                ConnectorTool {
                    input_schema: json!({"type": "string"}),
                    ..ctool("odd", true, false)
                },
            ],
        );
        assert_eq!(refused.len(), 3, "{refused:?}");
        let read = r.get("mcp__files__read_file").expect("registered");
        assert_eq!(read.default, Default::Allow);
        assert_eq!(read.risk, Risk::Low);
        assert_eq!(read.paths[0].caps, &[Capability::Read]);
        let write = r.get("mcp__files__write_file").expect("registered");
        assert_eq!(write.default, Default::Ask);
        assert_eq!(write.risk, Risk::Medium);
        assert_eq!(write.paths[0].caps, &[Capability::Read, Capability::Write]);
        assert_eq!(
            r.get("mcp__files__delete_file").expect("d").risk,
            Risk::High
        );
        // Not trusted: a read-only tool asks.
        r.set_connector_tools("web", false, vec![ctool("fetch", true, false)]);
        assert_eq!(
            r.get("mcp__web__fetch").expect("fetch").default,
            Default::Ask
        );
        assert_eq!(r.all().len(), BUILTINS.len() + 4);
        assert!(r.defs().iter().any(|d| d.name == "mcp__web__fetch"));
        // Replaced whole, and removed.
        r.set_connector_tools("files", true, vec![]);
        assert!(r.get("mcp__files__read_file").is_none());
        r.remove_connector("web");
        assert_eq!(r.all().len(), BUILTINS.len());
        // Names a built-in or a model API could not take.
        assert_eq!(
            r.set_connector_tools("a__b", true, vec![ctool("x", true, false)]),
            vec![ConnectorToolError::BadServer("a__b".into())]
        );
        let long = "x".repeat(MAX_TOOL_NAME);
        assert!(matches!(
            r.set_connector_tools("s", true, vec![ctool(&long, true, false)])[0],
            ConnectorToolError::BadName { .. }
        ));
        assert!(r.get("read").is_some());
    }

    /// Red team (issue 14): a path a connector is given under another name (`file`, `dir`,
    /// `query`), or nested in an object or a list, is judged too: any text that is an absolute
    /// path, starts with `~/`, or is a `file:` URI. A path with spaces around it is refused (the
    /// server would read it relative to its own folder, not where the desktop judged it).
    #[test]
    fn connector_paths_under_other_names_are_found_by_their_value() {
        let found = connector_path_args(&json!({
            "file": "/home/me/.ssh/id_rsa",
            "opts": {"dir": "~/.aws", "deep": [{"target": "file:///etc/shadow"}]},
            "list": ["~", "plain words", "a/relative/name"],
            "query": "/etc/passwd",
            "count": 3,
        }))
        .expect("paths");
        let mut texts: Vec<&str> = found.iter().map(|(_, t)| t.as_str()).collect();
        texts.sort();
        assert_eq!(
            texts,
            vec![
                "/etc/passwd",
                "/etc/shadow",
                "/home/me/.ssh/id_rsa",
                "~",
                "~/.aws"
            ]
        );
        assert!(found.iter().all(|(arg, _)| *arg == "path"), "{found:?}");
        // Text of several lines is not a path (a note's body may start with /).
        assert!(
            connector_path_args(&json!({"body": "/ a heading\nand text"}))
                .expect("body")
                .is_empty()
        );
        assert!(connector_path_args(&json!({"note": "file://other/x"})).is_err());
        let found = connector_path_args(&json!({"files": {"~/.ssh/id_rsa": true}})).expect("k");
        assert_eq!(found, vec![("path", "~/.ssh/id_rsa".to_owned())]);
        let found = connector_path_args(&json!({"/etc/shadow": 1})).expect("top-level name");
        assert_eq!(found, vec![("path", "/etc/shadow".to_owned())]);
        let e = connector_path_args(&json!({"path": " /../.config/x"})).unwrap_err();
        assert!(e.contains("spaces"), "{e}");
    }

    #[test]
    fn connector_path_args_are_found_by_name() {
        let found = connector_path_args(
            &json!({"path": "~/a.txt", "paths": ["/x/1", "~/2"], "query": "docs"}),
        )
        .expect("paths");
        assert_eq!(
            found,
            vec![
                ("path", "~/a.txt".to_owned()),
                ("paths", "/x/1".to_owned()),
                ("paths", "~/2".to_owned()),
            ]
        );
        // A file: URI is a path, percent-decoded; any other URI is not.
        let found =
            connector_path_args(&json!({"uri": "file:///home/me/My%20Notes/a.md"})).expect("uri");
        assert_eq!(found, vec![("uri", "/home/me/My Notes/a.md".to_owned())]);
        assert_eq!(
            connector_path_args(&json!({"uri": "FILE://localhost/etc/x"})).expect("u"),
            vec![("uri", "/etc/x".to_owned())]
        );
        assert!(
            connector_path_args(&json!({"uri": "https://example.org/a"}))
                .expect("https")
                .is_empty()
        );
        assert!(connector_path_args(&json!({"uri": "file://other/etc/x"})).is_err());
        assert!(connector_path_args(&json!({"uri": "file:///a%2"})).is_err());
        assert!(connector_path_args(&json!({"uri": "file:///a%00b"})).is_err());
        // Undeclared but given: still a path (the server may read it).
        let found = connector_path_args(&json!({"source": "/a"})).expect("source");
        assert_eq!(found, vec![("source", "/a".to_owned())]);
        // Wrong types and relative paths are refused, not ignored.
        assert!(connector_path_args(&json!({"paths": "/a"})).is_err());
        assert!(connector_path_args(&json!({"paths": [1]})).is_err());
        assert!(connector_path_args(&json!({"path": {"p": 1}})).is_err());
        let e = connector_path_args(&json!({"destination": ".ssh/id_rsa"})).unwrap_err();
        assert!(e.contains("relative path"), "{e}");
        assert!(connector_path_args(&json!({})).expect("none").is_empty());
    }
}
