//! Typed errors of the emulated commands, printed with Redis 7.0's texts, and the
//! connection-level errors (refused, reset, timed out) the fault switches produce.

use redis::{RedisError, Value};

/// An error reply of one command. `Display` is the exact error line Redis sends
/// (without the leading `-`), error code first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand { name: String, args: String },
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand { command: String, sub: String },
    #[error("ERR hash value is not an integer")]
    HashNotInteger,
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    #[error("ERR min or max is not a float")]
    RangeNotFloat,
    #[error("ERR Invalid stream ID specified as stream command argument")]
    InvalidStreamId,
    #[error("NOSCRIPT No matching script. Please use EVAL.")]
    NoScript,
    #[error("ERR This Redis command is not allowed from script")]
    NotAllowedFromScript,
    #[error("ERR Unknown Redis command called from script")]
    UnknownFromScript,
    #[error("ERR Wrong number of args calling Redis command from script")]
    ArityFromScript,
    /// Any other error, its full text (code first).
    #[error("{0}")]
    Other(String),
}

impl CommandError {
    pub(crate) fn other(text: impl Into<String>) -> Self {
        Self::Other(text.into())
    }

    /// The unknown-command error, quoting the first arguments as Redis 7.0 does.
    pub(crate) fn unknown(args: &[&[u8]]) -> Self {
        let name =
            args.first().map(|n| String::from_utf8_lossy(&n[..n.len().min(128)]).into_owned()).unwrap_or_default();
        let mut quoted = String::new();
        for arg in args.iter().skip(1) {
            if quoted.len() >= 128 {
                break;
            }
            quoted.push('\'');
            quoted.push_str(&String::from_utf8_lossy(&arg[..arg.len().min(128)]));
            quoted.push_str("' ");
        }
        Self::UnknownCommand { name, args: quoted }
    }

    /// The reply value redis-rs would decode from this error line.
    pub(crate) fn to_value(&self) -> Value {
        error_value(&self.to_string())
    }
}

/// The `Value::ServerError` that redis-rs decodes from `-<text>\r\n`. Newlines inside
/// become spaces, as Redis does before it sends an error.
pub(crate) fn error_value(text: &str) -> Value {
    let line: String = text.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    let wire = format!("-{line}\r\n");
    match redis::parse_redis_value(wire.as_bytes()) {
        Ok(value) => value,
        // Unreachable for a well-formed error line; keep the text in some form.
        Err(_) => Value::SimpleString(line),
    }
}

/// The text of an error value, code first (the inverse of [`error_value`]).
pub(crate) fn error_text(error: &redis::ServerError) -> String {
    match error.details() {
        Some(details) => format!("{} {details}", error.code()),
        None => error.code().to_owned(),
    }
}

/// What redis-rs reports when the server refuses the connection.
pub(crate) fn refused() -> RedisError {
    io_error(std::io::ErrorKind::ConnectionRefused, "Connection refused (in-process Redis is down)")
}

/// What redis-rs reports when the connection drops before the reply arrives.
pub(crate) fn reply_lost() -> RedisError {
    io_error(std::io::ErrorKind::ConnectionReset, "Connection reset by peer (in-process Redis lost the reply)")
}

/// What redis-rs reports when the response timeout passes.
pub(crate) fn timed_out() -> RedisError {
    io_error(std::io::ErrorKind::TimedOut, "timed out waiting for the in-process Redis")
}

fn io_error(kind: std::io::ErrorKind, text: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(kind, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_decode_into_the_kinds_redis_rs_knows() {
        let Value::ServerError(error) = CommandError::NoScript.to_value() else { panic!("not an error value") };
        assert_eq!(error.kind(), Some(redis::ServerErrorKind::NoScript));
        assert_eq!(error_text(&error), "NOSCRIPT No matching script. Please use EVAL.");
        let Value::ServerError(error) = CommandError::WrongType.to_value() else { panic!("not an error value") };
        assert_eq!(error.code(), "WRONGTYPE");
    }

    #[test]
    fn fault_errors_look_like_a_dead_connection() {
        assert!(refused().is_io_error() && refused().is_connection_refusal() && refused().is_connection_dropped());
        assert!(reply_lost().is_io_error() && reply_lost().is_connection_dropped());
        assert!(timed_out().is_timeout());
    }

    #[test]
    fn unknown_commands_quote_their_first_arguments() {
        let error = CommandError::unknown(&[b"FOO", b"a", b"b"]);
        assert_eq!(error.to_string(), "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ");
    }
}
