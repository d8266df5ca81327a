//! How `run(PATTERN)` rules match a shell command: on the parsed command, never on its text.
//!
//! The command is parsed twice with `brush-parser`, as bash and as POSIX `sh` (dash reads
//! `a &>f b` as `a &` then `>f b`; bash as one command with a redirection), and both readings
//! count.
//!
//! A pattern is a command line of plain words, optionally joined by `;`, `&&`, `||`, `|`, `&` or
//! newlines (`run(git status*)`, `run(cargo test* && cargo clippy*)`). In a pattern word, an
//! unquoted `*` matches any run of characters except `/`, `**` any run, `?` one character;
//! quoted characters match themselves. When the last word of a pattern's command ends in an
//! unquoted `*`, that word also swallows every word after it: `git status*` matches `git status`,
//! `git status -s` and `git statuses`; `git *` matches `git` with any arguments or none.
//! Words are compared after quote removal (`"git" 'status'` is `git status`).
//!
//! - **allow** matches only when, under both readings, the command is nothing but simple
//!   commands whose words are all literal — no command or process substitution, no parameter
//!   or arithmetic expansion, no glob or brace pattern, no assignment, no redirection, no
//!   subshell, group, function, loop or test — joined only by operators the pattern itself
//!   uses, and every one of those simple commands matches one of the pattern's commands.
//!   A command that does not parse is never allowed by a rule.
//! - **deny** and **ask** match when every command of the pattern is matched by some simple
//!   command *anywhere* in the command: inside substitutions, subshells, functions, loops,
//!   here-documents, `sh -c`/`bash -c`/`eval`/`trap`/`alias` strings, and after common launchers (`env`, `sudo`,
//!   `xargs`, `find -exec`, `nice`, `timeout`, …), under either reading. A word whose value is
//!   known only when the command runs (`$CMD`, `$(which rm)`, `r*`) matches any pattern word,
//!   and a command name given as a path matches by its last component (`/bin/rm` is `rm`). A
//!   command that cannot be parsed, or holds a part that cannot be (`sh -c "$X"`), matches
//!   every deny and ask rule.
//!
//! These rules decide whether a phone is asked; what a command can reach is decided by the OS
//! sandbox the shell runs in ([`crate::tools::sandbox`]), whatever the rules say.

use std::collections::BTreeSet;

use brush_parser::ast;
use brush_parser::word::{WordPiece, WordPieceWithSource};
use brush_parser::{Parser, ParserOptions, SourceInfo};

/// Longest command text that is parsed at all; a longer one counts as unparseable.
const MAX_TEXT: usize = 64 * 1024;
/// Deepest bracket nesting that is parsed; the parser recurses on nesting, so deeper input
/// counts as unparseable instead of risking the stack.
const MAX_NESTING: usize = 64;
/// Deepest nesting of substitutions, `sh -c` strings and launchers that is followed.
const MAX_DEPTH: usize = 16;
/// Most nested parses (substitutions, shell strings) followed in one command.
const MAX_PARSES: usize = 256;
/// Most words of a launcher command (`env`, `sudo`, …) whose tails are followed.
const MAX_LAUNCHED_WORDS: usize = 64;
/// Stack of the thread that parses (the parser recurses; tokio's workers have 2 MiB).
const PARSE_STACK: usize = 16 * 1024 * 1024;

/// Programs and builtins whose arguments are shell code (`sh -c '…'`, `eval …`, `trap '…' EXIT`,
/// `su -c '…'`, `watch '…'`); for `alias`, the value after `=`.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "eval", "trap", "su", "watch", "alias",
];
/// Programs that run the rest of their arguments as a command (after their own options).
const LAUNCHERS: &[&str] = &[
    "busybox", "builtin", "chroot", "command", "doas", "env", "exec", "find", "flock", "ionice",
    "nice", "nohup", "setsid", "stdbuf", "strace", "sudo", "taskset", "time", "timeout", "unshare",
    "watch", "xargs",
];

/// An operator joining simple commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    /// `;` or a newline.
    Sequence,
    /// `&&`.
    And,
    /// `||`.
    Or,
    /// `|`.
    Pipe,
    /// `&` (run in the background).
    Background,
}

/// One word of a command as far as it is known before the command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Arg {
    /// Its value after quote removal.
    Literal(String),
    /// Its value depends on an expansion, a substitution or a glob.
    Unknown,
}

/// A command line made only of literal simple commands and operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Plain {
    commands: Vec<Vec<String>>,
    operators: BTreeSet<Operator>,
}

/// One reading (bash or sh) of a command.
#[derive(Debug, Default)]
struct Reading {
    /// The command as a plain command line, if it is one.
    plain: Option<Plain>,
    /// Every simple command anywhere in it, nested ones included.
    everywhere: Vec<Vec<Arg>>,
    /// Some part could not be parsed or followed.
    opaque: bool,
}

/// A shell command, parsed once and matched against any number of rules.
#[derive(Debug)]
pub struct ParsedCommand {
    /// The readings that parsed; empty when neither did.
    readings: Vec<Reading>,
    /// Whether both readings parsed.
    complete: bool,
}

impl ParsedCommand {
    /// Parses `text` as bash and as POSIX sh. Never fails: what cannot be parsed is recorded as
    /// such, and then no allow rule matches and every deny and ask rule does.
    pub fn parse(text: &str) -> Self {
        let mut readings = Vec::new();
        for mode in [Mode::Bash, Mode::Sh] {
            if let Some(program) = parse_program(text, mode) {
                let mut reading = Reading {
                    plain: plain(&program),
                    ..Reading::default()
                };
                let mut walk = Walk {
                    mode,
                    depth: 0,
                    parses: 0,
                    out: &mut reading,
                };
                walk.program(&program);
                readings.push(reading);
            }
        }
        ParsedCommand {
            complete: readings.len() == 2,
            readings,
        }
    }

    /// True when the command could not be parsed, or holds a part that could not.
    pub fn is_opaque(&self) -> bool {
        self.readings.is_empty() || self.readings.iter().any(|r| r.opaque)
    }
}

/// The pattern of a `run(…)` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPattern {
    commands: Vec<Vec<PatternWord>>,
    operators: BTreeSet<Operator>,
}

impl RunPattern {
    /// Parses the text between the parentheses of `run(…)`.
    ///
    /// Errors (as a sentence naming the problem) when it does not parse as a command line, or
    /// holds anything but words and the operators `;`, `&&`, `||`, `|`, `&`: a rule has to say
    /// exactly which commands it covers.
    pub fn parse(text: &str) -> Result<Self, String> {
        let program = parse_program(text, Mode::Bash)
            .ok_or_else(|| format!("run pattern {text:?} is not a shell command line"))?;
        let mut commands = Vec::new();
        let mut operators = BTreeSet::new();
        let mut err = None;
        let plain_structure = structure(
            &program,
            &mut operators,
            &mut |sc: &ast::SimpleCommand| -> bool {
                let Some(words) = simple_words(sc) else {
                    err = Some(
                        "it may hold only words and the operators ; && || | & \
                         (no redirections, assignments or groups)"
                            .to_string(),
                    );
                    return false;
                };
                let mut pattern = Vec::new();
                for w in words {
                    match pattern_word(&w.value) {
                        Ok(p) => pattern.push(p),
                        Err(e) => {
                            err = Some(e);
                            return false;
                        }
                    }
                }
                commands.push(pattern);
                true
            },
        );
        if let Some(e) = err {
            return Err(format!("run pattern {text:?}: {e}"));
        }
        if !plain_structure {
            return Err(format!(
                "run pattern {text:?}: it may hold only words and the operators ; && || | & \
                 (no groups, subshells, functions, loops or `!`)"
            ));
        }
        if commands.is_empty() {
            return Err(format!("run pattern {text:?} names no command"));
        }
        Ok(RunPattern {
            commands,
            operators,
        })
    }

    /// Whether an `allow` rule with this pattern lets `command` run without asking.
    pub fn allows(&self, command: &ParsedCommand) -> bool {
        command.complete
            && command.readings.iter().all(|r| {
                r.plain.as_ref().is_some_and(|plain| {
                    !plain.commands.is_empty()
                        && plain.operators.is_subset(&self.operators)
                        && plain.commands.iter().all(|words| {
                            let args: Vec<Arg> = words.iter().cloned().map(Arg::Literal).collect();
                            self.commands.iter().any(|p| words_match(p, &args, false))
                        })
                })
            })
    }

    /// Whether a `deny` or `ask` rule with this pattern applies to `command`.
    pub fn catches(&self, command: &ParsedCommand) -> bool {
        if command.is_opaque() {
            return true;
        }
        command.readings.iter().any(|r| {
            self.commands
                .iter()
                .all(|p| r.everywhere.iter().any(|args| words_match(p, args, true)))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bash,
    Sh,
}

impl Mode {
    fn options(self) -> ParserOptions {
        match self {
            Mode::Bash => ParserOptions::default(),
            Mode::Sh => ParserOptions {
                enable_extended_globbing: false,
                posix_mode: true,
                sh_mode: true,
                tilde_expansion: true,
            },
        }
    }
}

/// Parses on a thread with a large stack (the parser recurses), after bounding size and
/// nesting; a panic in the parser counts as "does not parse".
fn parse_program(text: &str, mode: Mode) -> Option<ast::Program> {
    if text.len() > MAX_TEXT || nesting(text) > MAX_NESTING {
        return None;
    }
    let text = text.to_owned();
    let worker = std::thread::Builder::new()
        .name("run-rule-parse".into())
        .stack_size(PARSE_STACK)
        .spawn(move || {
            let mut parser = Parser::new(
                std::io::Cursor::new(text.as_bytes()),
                &mode.options(),
                &SourceInfo::default(),
            );
            parser.parse_program().ok()
        })
        .ok()?;
    worker.join().ok().flatten()
}

/// Bracket nesting, counted without regard to quoting (an over-estimate is fine).
fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' | '{' | '[' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | '}' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The words of a simple command made only of words (no prefix, redirection or assignment).
fn simple_words(sc: &ast::SimpleCommand) -> Option<Vec<&ast::Word>> {
    if sc.prefix.as_ref().is_some_and(|p| !p.0.is_empty()) {
        return None;
    }
    let mut words = vec![sc.word_or_name.as_ref()?];
    if let Some(suffix) = &sc.suffix {
        for item in &suffix.0 {
            match item {
                ast::CommandPrefixOrSuffixItem::Word(w) => words.push(w),
                _ => return None,
            }
        }
    }
    Some(words)
}

/// Walks the top-level structure of a command line that is only simple commands joined by
/// operators, collecting the operators and handing each simple command to `each`. Returns
/// false (and stops) at anything else, or when `each` does.
fn structure(
    program: &ast::Program,
    operators: &mut BTreeSet<Operator>,
    each: &mut dyn FnMut(&ast::SimpleCommand) -> bool,
) -> bool {
    let mut pipeline = |p: &ast::Pipeline, operators: &mut BTreeSet<Operator>| -> bool {
        if p.bang || p.timed.is_some() {
            return false;
        }
        if p.seq.len() > 1 {
            operators.insert(Operator::Pipe);
        }
        p.seq.iter().all(|c| match c {
            ast::Command::Simple(sc) => each(sc),
            _ => false,
        })
    };
    for (ci, list) in program.complete_commands.iter().enumerate() {
        if ci > 0 {
            operators.insert(Operator::Sequence);
        }
        let items = &list.0;
        for (ii, ast::CompoundListItem(and_or, sep)) in items.iter().enumerate() {
            match sep {
                ast::SeparatorOperator::Async => {
                    operators.insert(Operator::Background);
                }
                // A `;` at the very end joins nothing.
                ast::SeparatorOperator::Sequence if ii + 1 < items.len() => {
                    operators.insert(Operator::Sequence);
                }
                ast::SeparatorOperator::Sequence => {}
            }
            if !pipeline(&and_or.first, operators) {
                return false;
            }
            for next in &and_or.additional {
                let (op, p) = match next {
                    ast::AndOr::And(p) => (Operator::And, p),
                    ast::AndOr::Or(p) => (Operator::Or, p),
                };
                operators.insert(op);
                if !pipeline(p, operators) {
                    return false;
                }
            }
        }
    }
    true
}

/// The command as a plain command line: literal simple commands and operators only.
fn plain(program: &ast::Program) -> Option<Plain> {
    let mut out = Plain::default();
    let mut commands = Vec::new();
    let ok = structure(program, &mut out.operators, &mut |sc| {
        let Some(words) = simple_words(sc) else {
            return false;
        };
        let literal: Option<Vec<String>> = words.iter().map(|w| literal(&w.value)).collect();
        match literal {
            Some(l) => {
                commands.push(l);
                true
            }
            None => false,
        }
    });
    out.commands = commands;
    ok.then_some(out)
}

fn word_pieces(word: &str) -> Option<Vec<WordPieceWithSource>> {
    brush_parser::word::parse(word, &ParserOptions::default()).ok()
}

/// Characters that make an unquoted word a glob, a brace expansion or an extended glob.
fn has_pattern_chars(text: &str) -> bool {
    text.contains(['*', '?', '[', ']', '{', '}', '(', ')'])
}

/// A word's value after quote removal, if it holds no expansion of any kind.
fn literal(word: &str) -> Option<String> {
    let mut out = String::new();
    for p in word_pieces(word)? {
        match p.piece {
            WordPiece::Text(t) if !has_pattern_chars(&t) => out.push_str(&t),
            WordPiece::SingleQuotedText(t) => out.push_str(&t),
            WordPiece::EscapeSequence(e) => out.push_str(unescape(&e, false)),
            WordPiece::TildePrefix(user) => {
                out.push('~');
                out.push_str(&user);
            }
            WordPiece::DoubleQuotedSequence(inner) => {
                for q in inner {
                    match q.piece {
                        WordPiece::Text(t) => out.push_str(&t),
                        WordPiece::EscapeSequence(e) => out.push_str(unescape(&e, true)),
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// What a backslash escape stands for: outside double quotes the escaped character; inside,
/// only `$`, `` ` ``, `"` and `\` lose their backslash. A backslash-newline is nothing.
fn unescape(e: &str, in_double_quotes: bool) -> &str {
    let rest = e.strip_prefix('\\').unwrap_or(e);
    if rest == "\n" {
        ""
    } else if !in_double_quotes || matches!(rest, "$" | "`" | "\"" | "\\") {
        rest
    } else {
        e
    }
}

/// Collects every simple command of a program, nested ones included.
struct Walk<'a> {
    mode: Mode,
    depth: usize,
    /// Nested parses so far (each costs a thread and a parse).
    parses: usize,
    out: &'a mut Reading,
}

impl Walk<'_> {
    /// Parses `text` as nested shell code and walks it.
    fn nested(&mut self, text: &str) {
        if self.depth >= MAX_DEPTH || self.parses >= MAX_PARSES {
            self.out.opaque = true;
            return;
        }
        match parse_program(text, self.mode) {
            Some(program) => {
                self.parses += 1;
                self.depth += 1;
                self.program(&program);
                self.depth -= 1;
            }
            None => self.out.opaque = true,
        }
    }

    fn program(&mut self, program: &ast::Program) {
        for list in &program.complete_commands {
            self.list(list);
        }
    }

    fn list(&mut self, list: &ast::CompoundList) {
        for ast::CompoundListItem(and_or, _) in &list.0 {
            self.pipeline(&and_or.first);
            for next in &and_or.additional {
                match next {
                    ast::AndOr::And(p) | ast::AndOr::Or(p) => self.pipeline(p),
                }
            }
        }
    }

    fn pipeline(&mut self, p: &ast::Pipeline) {
        for c in &p.seq {
            self.command(c);
        }
    }

    fn command(&mut self, c: &ast::Command) {
        match c {
            ast::Command::Simple(sc) => self.simple(sc),
            ast::Command::Compound(cc, redirects) => {
                self.compound(cc);
                if let Some(r) = redirects {
                    for io in &r.0 {
                        self.redirect(io);
                    }
                }
            }
            ast::Command::Function(f) => {
                self.compound(&f.body.0);
                if let Some(r) = &f.body.1 {
                    for io in &r.0 {
                        self.redirect(io);
                    }
                }
            }
            ast::Command::ExtendedTest(t) => self.test(&t.expr),
        }
    }

    fn compound(&mut self, cc: &ast::CompoundCommand) {
        use ast::CompoundCommand as C;
        match cc {
            C::Arithmetic(a) => self.code_in(&a.expr.value),
            C::ArithmeticForClause(f) => {
                for e in [&f.initializer, &f.condition, &f.updater]
                    .into_iter()
                    .flatten()
                {
                    self.code_in(&e.value);
                }
                self.list(&f.body.list);
            }
            C::BraceGroup(g) => self.list(&g.list),
            C::Subshell(s) => self.list(&s.list),
            C::ForClause(f) => {
                for w in f.values.iter().flatten() {
                    self.word(&w.value);
                }
                self.list(&f.body.list);
            }
            C::CaseClause(c) => {
                self.word(&c.value.value);
                for item in &c.cases {
                    for p in &item.patterns {
                        self.word(&p.value);
                    }
                    if let Some(l) = &item.cmd {
                        self.list(l);
                    }
                }
            }
            C::IfClause(i) => {
                self.list(&i.condition);
                self.list(&i.then);
                for e in i.elses.iter().flatten() {
                    if let Some(c) = &e.condition {
                        self.list(c);
                    }
                    self.list(&e.body);
                }
            }
            C::WhileClause(w) | C::UntilClause(w) => {
                self.list(&w.0);
                self.list(&w.1.list);
            }
        }
    }

    fn test(&mut self, t: &ast::ExtendedTestExpr) {
        use ast::ExtendedTestExpr as T;
        match t {
            T::And(a, b) | T::Or(a, b) => {
                self.test(a);
                self.test(b);
            }
            T::Not(a) | T::Parenthesized(a) => self.test(a),
            T::UnaryTest(_, w) => self.word(&w.value),
            T::BinaryTest(_, a, b) => {
                self.word(&a.value);
                self.word(&b.value);
            }
        }
    }

    fn redirect(&mut self, io: &ast::IoRedirect) {
        match io {
            ast::IoRedirect::File(_, _, target) => match target {
                ast::IoFileRedirectTarget::Filename(w)
                | ast::IoFileRedirectTarget::Duplicate(w) => self.word(&w.value),
                ast::IoFileRedirectTarget::Fd(_) => {}
                ast::IoFileRedirectTarget::ProcessSubstitution(_, s) => self.list(&s.list),
            },
            ast::IoRedirect::HereDocument(_, doc) => {
                // Quotes mean nothing in a here-document, so its text cannot be read as a
                // word: any substitution in an expanding one makes the command opaque.
                if doc.requires_expansion && doc.doc.value.contains(['`', '$']) {
                    self.out.opaque = true;
                }
            }
            ast::IoRedirect::HereString(_, w) | ast::IoRedirect::OutputAndError(w, _) => {
                self.word(&w.value)
            }
        }
    }

    fn simple(&mut self, sc: &ast::SimpleCommand) {
        let mut args = Vec::new();
        if let Some(name) = &sc.word_or_name {
            self.word(&name.value);
            args.push(arg(&name.value));
        }
        let prefix = sc
            .prefix
            .iter()
            .flat_map(|p| p.0.iter())
            .map(|i| (i, false));
        let suffix = sc.suffix.iter().flat_map(|s| s.0.iter()).map(|i| (i, true));
        for (item, is_argument) in prefix.chain(suffix) {
            match item {
                ast::CommandPrefixOrSuffixItem::IoRedirect(io) => self.redirect(io),
                ast::CommandPrefixOrSuffixItem::Word(w) => {
                    self.word(&w.value);
                    args.push(arg(&w.value));
                }
                ast::CommandPrefixOrSuffixItem::AssignmentWord(a, w) => {
                    match &a.value {
                        ast::AssignmentValue::Scalar(v) => self.word(&v.value),
                        ast::AssignmentValue::Array(items) => {
                            for (k, v) in items {
                                if let Some(k) = k {
                                    self.word(&k.value);
                                }
                                self.word(&v.value);
                            }
                        }
                    }
                    self.word(&w.value);
                    // After the name (`export A=1`, `alias ls='…'`) it is an argument; before
                    // it (`A=1 cmd`) it only sets the command's environment.
                    if is_argument {
                        args.push(arg(&w.value));
                    }
                }
                ast::CommandPrefixOrSuffixItem::ProcessSubstitution(_, s) => self.list(&s.list),
            }
        }
        self.args(args);
    }

    /// Records one simple command, and what it runs in turn: the code of `sh -c '…'` and
    /// `eval`, and after a launcher (`sudo`, `env`, `xargs`, …) every tail of its words, so
    /// `nice -n 5 rm x` also counts as `rm x`.
    fn args(&mut self, args: Vec<Arg>) {
        let Some(first) = args.first() else {
            return;
        };
        let launcher = matches!(first, Arg::Literal(f) if LAUNCHERS.contains(&basename(f)));
        if launcher && args.len() > MAX_LAUNCHED_WORDS {
            self.out.opaque = true;
        }
        let tails = if launcher {
            args.len().min(MAX_LAUNCHED_WORDS)
        } else {
            1
        };
        for start in 0..tails {
            let tail = &args[start..];
            self.shell_code(tail);
            self.out.everywhere.push(tail.to_vec());
        }
    }

    /// Walks the code a shell or `eval` is given as arguments.
    fn shell_code(&mut self, args: &[Arg]) {
        let Some(Arg::Literal(first)) = args.first() else {
            return;
        };
        let name = basename(first);
        if !SHELLS.contains(&name) {
            return;
        }
        let mut code = Vec::new();
        for a in &args[1..] {
            match a {
                Arg::Literal(s) => code.push(s.as_str()),
                // Code known only when it runs.
                Arg::Unknown => {
                    self.out.opaque = true;
                    return;
                }
            }
        }
        if name == "eval" {
            self.nested(&code.join(" "));
        } else if name == "alias" {
            for c in code {
                if let Some((_, value)) = c.split_once('=') {
                    self.nested(value);
                }
            }
        } else {
            for c in code {
                self.nested(c);
            }
        }
    }

    /// Walks the code nested in a word: substitutions, and the insides of parameter and
    /// arithmetic expansions (`${x:-$(…)}`, `$(( $(…) ))`).
    fn word(&mut self, word: &str) {
        match word_pieces(word) {
            Some(pieces) => self.pieces(word, &pieces),
            None => self.out.opaque = true,
        }
    }

    fn pieces(&mut self, word: &str, pieces: &[WordPieceWithSource]) {
        for p in pieces {
            match &p.piece {
                WordPiece::CommandSubstitution(code)
                | WordPiece::BackquotedCommandSubstitution(code) => self.nested(code),
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => self.pieces(word, inner),
                WordPiece::ParameterExpansion(_) | WordPiece::ArithmeticExpression(_) => {
                    let source = word.get(p.start_index..p.end_index).unwrap_or_default();
                    let inside = source
                        .strip_prefix("$((")
                        .and_then(|s| s.strip_suffix("))"))
                        .or_else(|| source.strip_prefix("${").and_then(|s| s.strip_suffix('}')));
                    if let Some(inside) = inside {
                        self.code_in(inside);
                    }
                }
                WordPiece::Text(_)
                | WordPiece::SingleQuotedText(_)
                | WordPiece::AnsiCQuotedText(_)
                | WordPiece::TildePrefix(_)
                | WordPiece::EscapeSequence(_) => {}
            }
        }
    }

    /// Text that is expanded like a word (arithmetic, the operands of `${…}`).
    fn code_in(&mut self, text: &str) {
        if !text.contains(['$', '`']) {
            return;
        }
        if self.depth >= MAX_DEPTH {
            self.out.opaque = true;
            return;
        }
        self.depth += 1;
        self.word(text);
        self.depth -= 1;
    }
}

fn arg(word: &str) -> Arg {
    literal(word).map_or(Arg::Unknown, Arg::Literal)
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// One word of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PatternWord {
    tokens: Vec<Token>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters.
    AnyRun,
    /// `?`: one character.
    One,
}

impl PatternWord {
    /// Whether the word ends in an unquoted `*`, which makes it swallow the words after it.
    fn trailing_star(&self) -> bool {
        matches!(self.tokens.last(), Some(Token::Star | Token::AnyRun))
    }

    /// Whether the word is a bare `*` (or `**`): it may then match no word at all.
    fn bare_star(&self) -> bool {
        matches!(self.tokens.as_slice(), [Token::Star] | [Token::AnyRun])
    }

    fn has_slash(&self) -> bool {
        self.tokens.contains(&Token::Char('/'))
    }

    fn matches(&self, text: &str) -> bool {
        fn go(p: &[Token], t: &[char]) -> bool {
            match p {
                [] => t.is_empty(),
                [Token::AnyRun, rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
                [Token::Star, rest @ ..] => (0..=t.len())
                    .take_while(|&i| i == 0 || t[i - 1] != '/')
                    .any(|i| go(rest, &t[i..])),
                [Token::One, rest @ ..] => !t.is_empty() && go(rest, &t[1..]),
                [Token::Char(c), rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
            }
        }
        let t: Vec<char> = text.chars().collect();
        go(&self.tokens, &t)
    }
}

/// Parses one pattern word: unquoted `*`, `**`, `?` are wildcards, everything else literal.
fn pattern_word(word: &str) -> Result<PatternWord, String> {
    let pieces = word_pieces(word).ok_or_else(|| format!("cannot read the word {word:?}"))?;
    let mut tokens = Vec::new();
    let lit = |s: &str, tokens: &mut Vec<Token>| tokens.extend(s.chars().map(Token::Char));
    for p in pieces {
        match p.piece {
            WordPiece::Text(t) => {
                let mut chars = t.chars().peekable();
                while let Some(c) = chars.next() {
                    match c {
                        '*' if chars.peek() == Some(&'*') => {
                            chars.next();
                            tokens.push(Token::AnyRun);
                        }
                        '*' => tokens.push(Token::Star),
                        '?' => tokens.push(Token::One),
                        '[' | ']' | '{' | '}' | '(' | ')' => {
                            return Err(format!(
                                "{c:?} in {word:?} is not a wildcard here (only * ** ? are); \
                                 quote it to match it literally"
                            ));
                        }
                        c => tokens.push(Token::Char(c)),
                    }
                }
            }
            WordPiece::SingleQuotedText(t) => lit(&t, &mut tokens),
            WordPiece::EscapeSequence(e) => lit(unescape(&e, false), &mut tokens),
            WordPiece::TildePrefix(user) => {
                tokens.push(Token::Char('~'));
                lit(&user, &mut tokens);
            }
            WordPiece::DoubleQuotedSequence(inner) => {
                for q in inner {
                    match q.piece {
                        WordPiece::Text(t) => lit(&t, &mut tokens),
                        WordPiece::EscapeSequence(e) => lit(unescape(&e, true), &mut tokens),
                        _ => {
                            return Err(format!(
                                "{word:?} holds an expansion; patterns are plain words"
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(format!(
                    "{word:?} holds an expansion or substitution; patterns are plain words"
                ));
            }
        }
    }
    Ok(PatternWord { tokens })
}

/// Whether the words of one simple command match one command of a pattern. `by_name` lets a
/// command name given as a path match by its last component (deny and ask only).
fn words_match(pattern: &[PatternWord], args: &[Arg], by_name: bool) -> bool {
    let word_ok = |i: usize, p: &PatternWord| match &args[i] {
        Arg::Unknown => true,
        Arg::Literal(s) => {
            p.matches(s) || (by_name && i == 0 && !p.has_slash() && p.matches(basename(s)))
        }
    };
    for (i, p) in pattern.iter().enumerate() {
        let last = i + 1 == pattern.len();
        if last && p.bare_star() {
            return true;
        }
        if i >= args.len() || !word_ok(i, p) {
            return false;
        }
        if last && p.trailing_star() {
            return true;
        }
    }
    args.len() == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(pattern: &str, command: &str) -> bool {
        RunPattern::parse(pattern)
            .unwrap()
            .allows(&ParsedCommand::parse(command))
    }

    fn catch(pattern: &str, command: &str) -> bool {
        RunPattern::parse(pattern)
            .unwrap()
            .catches(&ParsedCommand::parse(command))
    }

    #[test]
    fn the_readme_allow_rule_covers_only_git_status() {
        let p = "git status*";
        for ok in [
            "git status",
            "git status -s",
            "git status --porcelain -- docs",
            "  git   status  ",
            "'git' \"status\" -s",
            "git status;",
            "git statuses",
        ] {
            assert!(allow(p, ok), "{ok:?} should be allowed");
        }
        for no in [
            "git status; cd .ssh; cat id_ed25519",
            "git status && rm -rf ~",
            "git status || rm -rf ~",
            "git status | sh",
            "git status & rm x",
            "git status\nrm x",
            "git status $(cat ~/.ssh/id_ed25519)",
            "git status `cat ~/.ssh/id_ed25519`",
            "git status \"$(cat x)\"",
            "git status <(cat ~/.ssh/id_ed25519)",
            "git status ${HOME}",
            "git status $HOME",
            "git status $((1+2))",
            "git status > ~/.bashrc",
            "git status >> x",
            "git status 2>&1",
            "git status &> x",
            "git status <<< x",
            "git status *",
            "git status {a,b}",
            "GIT_DIR=/x git status",
            "LD_PRELOAD=/tmp/x.so git status",
            "(git status)",
            "{ git status; }",
            "! git status",
            "time git status",
            "f() { git status; }",
            "if git status; then :; fi",
            "git log",
            "git",
            "echo git status",
            "git status 'unterminated",
            "",
        ] {
            assert!(!allow(p, no), "{no:?} must not be allowed");
        }
    }

    #[test]
    fn patterns_with_operators_allow_only_those_operators() {
        let p = "cargo test* && cargo clippy*";
        assert!(allow(p, "cargo test -p x && cargo clippy"));
        assert!(allow(p, "cargo clippy"));
        assert!(!allow(p, "cargo test; cargo clippy"));
        assert!(!allow(p, "cargo test && rm -rf x"));
        assert!(allow("ls * | wc*", "ls -la | wc -l"));
        assert!(!allow("ls * | wc*", "ls -la | wc -l | sh"));
    }

    #[test]
    fn words_and_wildcards() {
        assert!(allow("cat notes/*.txt", "cat notes/a.txt"));
        assert!(!allow("cat notes/*.txt", "cat notes/../../etc/x.txt"));
        assert!(allow("cat notes/**", "cat notes/a/b/c"));
        assert!(!allow("cat notes/*.txt", "cat notes/a.txt more"));
        assert!(allow("ls *", "ls"));
        assert!(allow("ls *", "ls -la /"));
        assert!(!allow("ls ?", "ls ab"));
        assert!(allow("ls ?", "ls a"));
        // Quoted wildcards in a pattern are literal.
        assert!(allow("echo '*'", "echo '*'"));
        assert!(!allow("echo '*'", "echo x"));
        // A glob in the command is not a literal word, even where the pattern has a `*`.
        assert!(!allow("cat *", "cat *.txt"));
        assert!(allow("echo 'a b'", "echo a\\ b"));
        assert!(allow("ls ~/docs", "ls ~/docs"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for (p, why) in [
            ("git status > x", "redirections"),
            ("X=1 git", "assignments"),
            ("echo $HOME", "expansion"),
            ("ls [ab]", "not a wildcard"),
            ("(ls)", "groups"),
            ("'unterminated", "not a shell command line"),
            ("", "names no command"),
        ] {
            let e = RunPattern::parse(p).unwrap_err();
            assert!(e.contains(why), "{p:?}: {e}");
        }
    }

    #[test]
    fn deny_and_ask_look_everywhere() {
        let p = "rm *";
        for hit in [
            "rm -rf x",
            "echo hi; rm -rf x",
            "echo hi && rm -rf x",
            "true || /bin/rm -rf x",
            "echo $(rm -rf x)",
            "echo `rm -rf x`",
            "echo \"a $(rm x) b\"",
            "echo ${X:-$(rm x)}",
            "echo $(( $(rm x) ))",
            "(rm x)",
            "{ rm x; }",
            "f() { rm x; }",
            "for f in a; do rm $f; done",
            "if true; then rm x; fi",
            "cat <(rm x)",
            "sh -c 'rm -rf x'",
            "bash -lc \"rm -rf x\"",
            "eval rm -rf x",
            "sudo rm -rf x",
            "env FOO=1 rm -rf x",
            "nice -n 5 rm -rf x",
            "find . -name x -exec rm {} \\;",
            "ls | xargs rm",
            "r\"m\" -rf x",
            "$CMD -rf x",
            "\"$(which rm)\" x",
            "echo hi &>x rm -rf y",
            "sh -c \"$X\"",
            "alias ls='rm -rf x'\nls",
            "trap 'rm -rf x' EXIT",
            "watch 'rm -rf x'",
            "cat <<EOF\n$(rm x)\nEOF",
            "echo 'unterminated",
        ] {
            assert!(catch(p, hit), "{hit:?} should be caught by {p:?}");
        }
        for miss in [
            "echo rm",
            "ls -la",
            "git commit -m 'rm old files'",
            "cat <<'EOF'\n$(rm x)\nEOF",
            "echo $HOME",
        ] {
            assert!(!catch(p, miss), "{miss:?} is not caught by {p:?}");
        }
        // A rule of two commands needs both.
        assert!(catch("curl * | sh*", "curl -s x | sh"));
        assert!(catch("curl * | sh*", "sh -c 'curl x' ; sh y"));
        assert!(!catch("curl * | sh*", "sh y"));
        assert!(catch("git push*", "cd x && git push -f"));
        assert!(!catch("git push*", "git pull"));
    }

    #[test]
    fn unparseable_and_hostile_input_is_opaque_not_a_crash() {
        let deep = format!("{}x{}", "$(".repeat(5000), ")".repeat(5000));
        assert!(ParsedCommand::parse(&deep).is_opaque());
        assert!(catch("rm *", &deep));
        assert!(!allow("echo *", &deep));
        let long = format!("echo {}", "a".repeat(MAX_TEXT));
        assert!(ParsedCommand::parse(&long).is_opaque());
        assert!(!ParsedCommand::parse("echo hi").is_opaque());
    }
}
