//! Server commands: PING, ECHO, TIME, SELECT, DBSIZE, FLUSHALL/FLUSHDB, PUBLISH, INFO
//! (with `redis_version:7.0.15` and the run id) and CONFIG GET/SET.

use redis::Value;

use super::commands::{Command, bulk, int, int_arg, is};
use super::core::Core;
use super::error::CommandError;
use super::text::glob_match;

/// The Redis version this emulation follows.
pub(crate) const REDIS_VERSION: &str = "7.0.15";

const POLICIES: [&str; 8] = [
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
];

pub(crate) fn run(core: &mut Core, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    match command {
        Command::Ping => match args {
            [_] => Ok(Value::SimpleString("PONG".to_owned())),
            [_, message] => Ok(bulk(message)),
            _ => Err(CommandError::Arity("ping".to_owned())),
        },
        Command::Echo => Ok(bulk(args[1])),
        Command::Time => {
            let (seconds, ms) = (now.div_euclid(1000), now.rem_euclid(1000));
            Ok(Value::Array(vec![bulk(seconds.to_string().as_bytes()), bulk((ms * 1000).to_string().as_bytes())]))
        }
        Command::Select => match int_arg(args[1])? {
            0 => Ok(Value::Okay),
            _ => Err(CommandError::other("ERR DB index is out of range")),
        },
        Command::DbSize => Ok(int(core.db.len(now))),
        Command::FlushAll | Command::FlushDb => match args.get(1) {
            Some(mode) if args.len() == 2 && (is(mode, "async") || is(mode, "sync")) => flush(core),
            None => flush(core),
            Some(_) => Err(CommandError::Syntax),
        },
        Command::Publish => Ok(int(core.publish(args[1], args[2]))),
        Command::Info => Ok(Value::BulkString(info(core, &args[1..]).into_bytes())),
        Command::Config => config(core, args),
        _ => Err(CommandError::Syntax),
    }
}

fn flush(core: &mut Core) -> Result<Value, CommandError> {
    core.db.clear();
    Ok(Value::Okay)
}

/// The INFO text: `server`, `memory`, `persistence` and `keyspace` sections.
fn info(core: &mut Core, sections: &[&[u8]]) -> String {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|s| is(s, name) || is(s, "all") || is(s, "everything") || is(s, "default"))
    };
    let uptime_s = (core.now_ms - core.started_ms).max(0) / 1000;
    let mut text = String::new();
    if wanted("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\n\
             redis_mode:standalone\r\nos:in-process emulation\r\narch_bits:64\r\nprocess_id:0\r\n\
             run_id:{}\r\ntcp_port:0\r\nuptime_in_seconds:{uptime_s}\r\nuptime_in_days:{}\r\n\
             executable:\r\nconfig_file:\r\n",
            core.run_id,
            uptime_s / 86_400,
        ));
    }
    if wanted("memory") {
        let policy = core.config.get("maxmemory-policy").map(|p| String::from_utf8_lossy(p).into_owned());
        push_section(
            &mut text,
            &format!("# Memory\r\nmaxmemory:0\r\nmaxmemory_policy:{}\r\n", policy.unwrap_or_default()),
        );
    }
    if wanted("persistence") {
        push_section(&mut text, "# Persistence\r\nloading:0\r\naof_enabled:0\r\nrdb_changes_since_last_save:0\r\n");
    }
    if wanted("keyspace") {
        let now = core.now_ms;
        let (mut keys, mut expires) = (0usize, 0usize);
        for (_, entry) in core.db.keys(now) {
            keys += 1;
            expires += usize::from(entry.expires_at.is_some());
        }
        let db = if keys > 0 { format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n") } else { String::new() };
        push_section(&mut text, &format!("# Keyspace\r\n{db}"));
    }
    text
}

fn push_section(text: &mut String, section: &str) {
    if !text.is_empty() {
        text.push_str("\r\n");
    }
    text.push_str(section);
}

fn config(core: &mut Core, args: &[&[u8]]) -> Result<Value, CommandError> {
    let sub = args[1];
    let arity = |name: &str| CommandError::Arity(format!("config|{name}"));
    match () {
        () if is(sub, "get") => {
            if args.len() < 3 {
                return Err(arity("get"));
            }
            let mut reply = Vec::new();
            for (name, value) in &core.config {
                if args[2..].iter().any(|pattern| glob_match(pattern, name.as_bytes(), true)) {
                    reply.push(bulk(name.as_bytes()));
                    reply.push(bulk(value));
                }
            }
            Ok(Value::Array(reply))
        }
        () if is(sub, "set") => {
            if args.len() < 4 || args.len() % 2 != 0 {
                return Err(arity("set"));
            }
            let mut changes = Vec::new();
            for pair in args[2..].chunks_exact(2) {
                let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
                let Some((&known, _)) = core.config.get_key_value(name.as_str()) else {
                    return Err(CommandError::other(format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                    )));
                };
                if known == "maxmemory-policy" && !POLICIES.iter().any(|p| is(pair[1], p)) {
                    return Err(CommandError::other(format!(
                        "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) \
                         must be one of the following: {}",
                        POLICIES.join(", ")
                    )));
                }
                changes.push((known, pair[1].to_ascii_lowercase()));
            }
            core.config.extend(changes);
            Ok(Value::Okay)
        }
        () if is(sub, "resetstat") => Ok(Value::Okay),
        () => Err(CommandError::UnknownSubcommand {
            command: "CONFIG".to_owned(),
            sub: String::from_utf8_lossy(sub).into_owned(),
        }),
    }
}
