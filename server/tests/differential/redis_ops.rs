//! The steps of the Redis differential test and how one side runs them: raw commands
//! (every one the server sends, and every one its scripts call), pipelines and
//! transactions, the project's scripts through `redis::Script` (EVALSHA, falling back
//! to loading), and raw EVAL / EVALSHA / SCRIPT LOAD / SCRIPT FLUSH.

use std::fmt;

use flashsale::redis::RedisConn;
use redis::{RedisResult, Value};

use crate::redis_normal::{self, Normal, Shape};
use crate::redis_sides::Side;

/// One argument of a command or a script.
#[derive(Clone, PartialEq, Eq)]
pub enum Arg {
    Text(String),
    /// A lock's value as lock.lua makes it: `<run_id of this side>:<token>`.
    Fence(&'static str),
}

impl Arg {
    fn resolve(&self, run_id: &str) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Fence(token) => format!("{run_id}:{token}"),
        }
    }
}

impl From<&str> for Arg {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<usize> for Arg {
    fn from(n: usize) -> Self {
        Self::Text(n.to_string())
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => write!(f, "{text:?}"),
            Self::Fence(token) => write!(f, "fence({token:?})"),
        }
    }
}

/// A command: its name, then its arguments.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    pub name: &'static str,
    pub args: Vec<Arg>,
}

impl Command {
    pub fn new(name: &'static str) -> Self {
        Self { name, args: Vec::new() }
    }

    pub fn arg(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<A: Into<Arg>>(mut self, args: impl IntoIterator<Item = A>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn to_cmd(&self, run_id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd(self.name);
        for arg in &self.args {
            cmd.arg(arg.resolve(run_id));
        }
        cmd
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)?;
        for arg in &self.args {
            write!(f, " {arg:?}")?;
        }
        Ok(())
    }
}

/// A script of `lua/`, by file name and source.
#[derive(Debug, PartialEq, Eq)]
pub struct LuaFile {
    pub name: &'static str,
    pub source: &'static str,
}

/// One step of a sequence.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    Command(Command),
    /// `redis::pipe()`, atomic (MULTI/EXEC) or not, errors kept per command.
    Pipeline {
        atomic: bool,
        commands: Vec<Command>,
    },
    /// A project script as the server runs it: `redis::Script::invoke_async`.
    Script {
        file: &'static LuaFile,
        keys: Vec<Arg>,
        args: Vec<Arg>,
    },
    /// `EVAL body`.
    Eval {
        body: &'static str,
        keys: Vec<Arg>,
        args: Vec<Arg>,
    },
    /// `EVALSHA sha1(body)`: NOSCRIPT unless loaded (or evaluated) before.
    EvalSha {
        body: &'static str,
        keys: Vec<Arg>,
        args: Vec<Arg>,
    },
    ScriptLoad(&'static str),
    ScriptFlush,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(command) => write!(f, "{command:?}"),
            Self::Pipeline { atomic: true, commands } => write!(f, "MULTI {commands:?} EXEC"),
            Self::Pipeline { atomic: false, commands } => write!(f, "pipeline {commands:?}"),
            Self::Script { file, keys, args } => write!(f, "script {} KEYS {keys:?} ARGV {args:?}", file.name),
            Self::Eval { body, keys, args } => write!(f, "EVAL {body:?} KEYS {keys:?} ARGV {args:?}"),
            Self::EvalSha { body, keys, args } => write!(f, "EVALSHA sha1({body:?}) KEYS {keys:?} ARGV {args:?}"),
            Self::ScriptLoad(body) => write!(f, "SCRIPT LOAD {body:?}"),
            Self::ScriptFlush => f.write_str("SCRIPT FLUSH"),
        }
    }
}

impl Step {
    /// Shorthand for a raw command step.
    pub fn command<A: Into<Arg>>(name: &'static str, args: impl IntoIterator<Item = A>) -> Self {
        Self::Command(Command::new(name).args(args))
    }

    /// Shorthand for `EVAL body` with string keys and arguments.
    pub fn eval(body: &'static str, keys: &[&str], args: &[&str]) -> Self {
        Self::Eval { body, keys: texts(keys), args: texts(args) }
    }

    /// The shape of this step's reply.
    fn shape(&self) -> Shape {
        match self {
            Self::Command(command) => redis_normal::shape_of_command(command.name),
            Self::Script { file, .. } if file.name == "idempotency_begin.lua" => Shape::IdempotencyBegin,
            _ => Shape::Plain,
        }
    }

    /// Runs this step on `side`; its reply, normalised.
    pub async fn run(&self, side: &mut Side) -> Normal {
        let run_id = side.run_id.clone();
        let conn = &mut side.conn;
        let reply: RedisResult<Value> = match self {
            Self::Command(command) => command.to_cmd(&run_id).query_async(conn).await,
            Self::Pipeline { atomic, commands } => run_pipeline(conn, *atomic, commands, &run_id).await,
            Self::Script { file, keys, args } => {
                let script = redis::Script::new(file.source);
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key.resolve(&run_id));
                }
                for arg in args {
                    invocation.arg(arg.resolve(&run_id));
                }
                invocation.invoke_async(conn).await
            }
            Self::Eval { body, keys, args } => eval_cmd("EVAL", body, keys, args, &run_id).query_async(conn).await,
            Self::EvalSha { body, keys, args } => {
                let sha = redis::Script::new(body).get_hash().to_owned();
                eval_cmd("EVALSHA", &sha, keys, args, &run_id).query_async(conn).await
            }
            Self::ScriptLoad(body) => redis::cmd("SCRIPT").arg("LOAD").arg(*body).query_async(conn).await,
            Self::ScriptFlush => redis::cmd("SCRIPT").arg("FLUSH").query_async(conn).await,
        };
        redis_normal::normalise(self.shape(), reply, &run_id)
    }
}

pub fn texts(items: &[&str]) -> Vec<Arg> {
    items.iter().map(|&item| Arg::from(item)).collect()
}

fn eval_cmd(name: &str, body_or_sha: &str, keys: &[Arg], args: &[Arg], run_id: &str) -> redis::Cmd {
    let mut cmd = redis::cmd(name);
    cmd.arg(body_or_sha).arg(keys.len());
    for arg in keys.iter().chain(args) {
        cmd.arg(arg.resolve(run_id));
    }
    cmd
}

async fn run_pipeline(conn: &mut RedisConn, atomic: bool, commands: &[Command], run_id: &str) -> RedisResult<Value> {
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    for command in commands {
        pipe.add_command(command.to_cmd(run_id));
    }
    pipe.ignore_errors();
    pipe.query_async(conn).await
}
