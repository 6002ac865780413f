//! One emulated Redis process: the keyspace state plus its Lua interpreter. Runs single
//! commands, EVAL/EVALSHA/SCRIPT, pipelines and MULTI/EXEC transactions; everything it
//! does happens under the caller's lock, so a script or a transaction is atomic.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::Value;

use super::commands::{Command, dispatch, int_arg, is};
use super::core::Core;
use super::error::CommandError;
use super::lua::LuaEngine;
use crate::clock::Clock;

pub(crate) struct Server {
    /// The keyspace, shared with the interpreter's `redis.call` (made once, not per
    /// script). Only this server's methods lock it, one command at a time, and they run
    /// under the caller's lock: it is never contended.
    core: Arc<Mutex<Core>>,
    /// Made on the first script; dropped by SCRIPT FLUSH and restarts.
    lua: Option<LuaEngine>,
}

impl Core {
    /// A command called by a script (`redis.call`): looked up with the script wording
    /// of the errors, and never a scripting or transaction command.
    pub(crate) fn execute_from_script(&mut self, args: &[&[u8]]) -> Result<Value, CommandError> {
        let command = Command::resolve(args, true)?;
        dispatch(self, command, args)
    }
}

impl Server {
    pub(crate) fn new(clock: Arc<dyn Clock>, seed: u64) -> Self {
        Self { core: Arc::new(Mutex::new(Core::new(clock, seed))), lua: None }
    }

    /// The keyspace, for a command.
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one command; an error is an error value, as the reply would carry it.
    pub(crate) fn execute(&mut self, args: &[&[u8]]) -> Value {
        self.core().tick();
        let result = Command::resolve(args, false).and_then(|command| self.run(command, args));
        result.unwrap_or_else(|error| error.to_value())
    }

    fn run(&mut self, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
        match command {
            Command::Eval | Command::EvalRo => self.eval(args, false),
            Command::EvalSha | Command::EvalShaRo => self.eval(args, true),
            Command::Script => self.script(args),
            Command::Multi | Command::Exec | Command::Discard => Err(CommandError::other(
                "ERR the in-process Redis takes MULTI/EXEC only as an atomic pipeline (redis::pipe().atomic())",
            )),
            _ => dispatch(&mut self.core(), command, args),
        }
    }

    /// The replies of a pipeline, as the server would send them: for an atomic one,
    /// MULTI's `OK`, a `QUEUED` per command, then EXEC's array. A command that is
    /// unknown or has the wrong arity aborts the transaction (EXECABORT), nothing runs.
    pub(crate) fn pipeline(&mut self, commands: &[Vec<&[u8]>], atomic: bool) -> Result<Vec<Value>, CommandError> {
        if !atomic {
            return Ok(commands.iter().map(|args| self.execute(args)).collect());
        }
        let queued = commands.iter().all(|args| Command::resolve(args, false).is_ok_and(|c| c != Command::Multi));
        if !queued {
            return Err(CommandError::other("EXECABORT Transaction discarded because of previous errors."));
        }
        let mut replies = Vec::with_capacity(commands.len() + 2);
        replies.push(Value::Okay);
        replies.extend(commands.iter().map(|_| Value::SimpleString("QUEUED".to_owned())));
        let deferring = self.core().defer_messages();
        let results = commands.iter().map(|args| self.execute(args)).collect();
        if deferring {
            self.core().release_messages();
        }
        replies.push(Value::Array(results));
        Ok(replies)
    }

    /// A restart without persistence: keys, scripts and subscribers gone, new run id.
    pub(crate) fn restart(&mut self) {
        self.core().restart();
        self.lua = None;
    }

    /// A restart that loads the keyspace back from disk: see [`Core::restart_from_data`];
    /// the script cache is empty, as in a new process.
    pub(crate) fn restart_from_data(&mut self) {
        self.core().restart_from_data();
        self.lua = None;
    }

    /// SCRIPT FLUSH: a new interpreter with an empty script cache.
    pub(crate) fn flush_scripts(&mut self) {
        self.lua = None;
    }

    fn engine(&mut self) -> Result<&mut LuaEngine, CommandError> {
        if self.lua.is_none() {
            let engine = LuaEngine::new(self.core.clone())
                .map_err(|error| CommandError::other(format!("ERR starting Lua failed: {error}")))?;
            self.lua = Some(engine);
        }
        self.lua.as_mut().ok_or_else(|| CommandError::other("ERR Lua is not available"))
    }

    fn eval(&mut self, args: &[&[u8]], by_sha: bool) -> Result<Value, CommandError> {
        let numkeys = int_arg(args[2])?;
        let numkeys =
            usize::try_from(numkeys).map_err(|_| CommandError::other("ERR Number of keys can't be negative"))?;
        if numkeys > args.len() - 3 {
            return Err(CommandError::other("ERR Number of keys can't be greater than number of args"));
        }
        let (keys, argv) = args[3..].split_at(numkeys);
        let engine = self.engine()?;
        let sha = if by_sha {
            let sha = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
            if !engine.contains(&sha) {
                return Err(CommandError::NoScript);
            }
            sha
        } else {
            engine.load(args[1])?
        };
        let Some(engine) = self.lua.as_ref() else { return Err(CommandError::NoScript) };
        let deferring = self.core().defer_messages();
        let reply = engine.run(&sha, keys, argv);
        if deferring {
            self.core().release_messages();
        }
        Ok(reply)
    }

    fn script(&mut self, args: &[&[u8]]) -> Result<Value, CommandError> {
        let sub = args[1];
        let arity = |name: &str| CommandError::Arity(format!("script|{name}"));
        match () {
            () if is(sub, "load") => {
                if args.len() != 3 {
                    return Err(arity("load"));
                }
                Ok(Value::BulkString(self.engine()?.load(args[2])?.into_bytes()))
            }
            () if is(sub, "exists") => {
                if args.len() < 3 {
                    return Err(arity("exists"));
                }
                let exists = |sha: &&[u8]| {
                    let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                    Value::Int(i64::from(self.lua.as_ref().is_some_and(|engine| engine.contains(&sha))))
                };
                Ok(Value::Array(args[2..].iter().map(exists).collect()))
            }
            () if is(sub, "flush") => match args.get(2) {
                Some(mode) if args.len() == 3 && (is(mode, "async") || is(mode, "sync")) => {
                    self.flush_scripts();
                    Ok(Value::Okay)
                }
                None => {
                    self.flush_scripts();
                    Ok(Value::Okay)
                }
                Some(_) => Err(CommandError::other("ERR SCRIPT FLUSH only support SYNC|ASYNC option")),
            },
            () if is(sub, "kill") => Err(CommandError::other("NOTBUSY No scripts in execution right now.")),
            () => Err(CommandError::UnknownSubcommand {
                command: "SCRIPT".to_owned(),
                sub: String::from_utf8_lossy(sub).into_owned(),
            }),
        }
    }
}
