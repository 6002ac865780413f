//! Streams: XADD (`*` ids from the injected clock, explicit ids, MAXLEN/MINID with `=`
//! or `~`), XRANGE, XREVRANGE (with COUNT), XLEN and XTRIM. `~` trims whole nodes of
//! `stream-node-max-entries` entries, as Redis does (Redis also closes a node at
//! `stream-node-max-bytes`, which is not modelled, so its XLEN after `~` can differ).

use std::collections::VecDeque;

use redis::Value;

use super::commands::{Command, int, int_arg, is};
use super::core::Core;
use super::error::CommandError;
use super::strtod::string2ull;
use super::text::parse_i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    const MAX: Self = Self { ms: u64::MAX, seq: u64::MAX };

    fn render(self) -> Vec<u8> {
        format!("{}-{}", self.ms, self.seq).into_bytes()
    }

    /// `ms` or `ms-seq`; a missing `seq` is `missing_seq`.
    fn parse(text: &[u8], missing_seq: u64) -> Option<Self> {
        match parse_id(text)? {
            (ms, Some(Seq::Given(seq))) => Some(Self { ms, seq }),
            (ms, None) => Some(Self { ms, seq: missing_seq }),
            (_, Some(Seq::Auto)) => None,
        }
    }

    /// A range end: `-`, `+`, `(id` (exclusive) or an id; `None` if it excludes all.
    fn bound(text: &[u8], start: bool) -> Result<Option<Self>, CommandError> {
        match text {
            b"-" => return Ok(Some(Self::default())),
            b"+" => return Ok(Some(Self::MAX)),
            _ => {}
        }
        let (exclusive, id) = match text.split_first() {
            Some((b'(', rest)) => (true, rest),
            _ => (false, text),
        };
        let id = Self::parse(id, if start { 0 } else { u64::MAX }).ok_or(CommandError::InvalidStreamId)?;
        if !exclusive {
            return Ok(Some(id));
        }
        Ok(if start { id.next() } else { id.previous() })
    }

    fn next(self) -> Option<Self> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(Self { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| Self { ms, seq: 0 }),
        }
    }

    fn previous(self) -> Option<Self> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(Self { ms: self.ms, seq }),
            None => self.ms.checked_sub(1).map(|ms| Self { ms, seq: u64::MAX }),
        }
    }
}

/// A stream: entries in id order, and the sizes of the radix-tree nodes holding them.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    entries: VecDeque<(StreamId, Vec<Vec<u8>>)>,
    nodes: VecDeque<usize>,
    last_id: StreamId,
}

impl Stream {
    fn push(&mut self, id: StreamId, fields: Vec<Vec<u8>>, node_capacity: usize) {
        match self.nodes.back_mut() {
            Some(last) if *last < node_capacity => *last += 1,
            _ => self.nodes.push_back(1),
        }
        self.entries.push_back((id, fields));
        self.last_id = id;
    }

    fn pop_front(&mut self) {
        self.entries.pop_front();
        if let Some(first) = self.nodes.front_mut() {
            *first -= 1;
            if *first == 0 {
                self.nodes.pop_front();
            }
        }
    }

    /// Trims by length or by lowest id; `approx` removes whole nodes only. How many
    /// entries went.
    fn trim(&mut self, strategy: Trim, approx: bool) -> usize {
        let before = self.entries.len();
        if approx {
            while let Some(&node) = self.nodes.front() {
                let removable = match strategy {
                    Trim::MaxLen(max) => self.entries.len().saturating_sub(node) >= max,
                    Trim::MinId(min) => self.entries.get(node.saturating_sub(1)).is_some_and(|(id, _)| *id < min),
                };
                if !removable {
                    break;
                }
                for _ in 0..node {
                    self.pop_front();
                }
            }
        } else {
            loop {
                let removable = match strategy {
                    Trim::MaxLen(max) => self.entries.len() > max,
                    Trim::MinId(min) => self.entries.front().is_some_and(|(id, _)| *id < min),
                };
                if !removable {
                    break;
                }
                self.pop_front();
            }
        }
        before - self.entries.len()
    }
}

#[derive(Clone, Copy)]
enum Trim {
    MaxLen(usize),
    MinId(StreamId),
}

pub(crate) fn run(core: &mut Core, command: Command, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    match command {
        Command::XAdd => xadd(core, args),
        Command::XLen => Ok(int(core.db.stream(args[1], now)?.map_or(0, |s| s.entries.len()))),
        Command::XRange | Command::XRevRange => {
            let rev = command == Command::XRevRange;
            let (start, end) = if rev { (args[3], args[2]) } else { (args[2], args[3]) };
            let (start, end) = (StreamId::bound(start, true)?, StreamId::bound(end, false)?);
            let count = match args.get(4..) {
                Some([word, n]) if is(word, "count") => Some(usize::try_from(int_arg(n)?).unwrap_or(0)),
                Some([]) | None => None,
                Some(_) => return Err(CommandError::Syntax),
            };
            let (Some(start), Some(end)) = (start, end) else { return Ok(Value::Array(Vec::new())) };
            let Some(stream) = core.db.stream(args[1], now)? else { return Ok(Value::Array(Vec::new())) };
            let from = stream.entries.partition_point(|(id, _)| *id < start);
            let to = stream.entries.partition_point(|(id, _)| *id <= end).max(from);
            let render = |(id, fields): &(StreamId, Vec<Vec<u8>>)| {
                let fields = fields.iter().map(|f| Value::BulkString(f.clone())).collect();
                Value::Array(vec![Value::BulkString(id.render()), Value::Array(fields)])
            };
            let range = stream.entries.range(from..to);
            let limit = count.unwrap_or(usize::MAX);
            let items = if rev {
                range.rev().take(limit).map(render).collect()
            } else {
                range.take(limit).map(render).collect()
            };
            Ok(Value::Array(items))
        }
        Command::XTrim => {
            let (strategy, approx, rest) = parse_trim(&args[2..])?;
            if !rest.is_empty() {
                return Err(CommandError::Syntax);
            }
            let Some(stream) = core.db.stream(args[1], now)? else { return Ok(Value::Int(0)) };
            Ok(int(stream.trim(strategy, approx)))
        }
        _ => Err(CommandError::Syntax),
    }
}

/// `MAXLEN|MINID [=|~] threshold [LIMIT n]`; the arguments after it.
fn parse_trim<'a, 'b>(args: &'a [&'b [u8]]) -> Result<(Trim, bool, &'a [&'b [u8]]), CommandError> {
    let by_len = match args.first() {
        Some(word) if is(word, "maxlen") => true,
        Some(word) if is(word, "minid") => false,
        _ => return Err(CommandError::Syntax),
    };
    let mut i = 1;
    let approx = match args.get(i) {
        Some(&b"~") => true,
        Some(&b"=") => false,
        _ => {
            i -= 1;
            false
        }
    };
    i += 1;
    let threshold = args.get(i).ok_or(CommandError::Syntax)?;
    let strategy = if by_len {
        let max = parse_i64(threshold).ok_or(CommandError::NotInteger)?;
        let max = usize::try_from(max).map_err(|_| CommandError::other("ERR The MAXLEN argument must be >= 0."))?;
        Trim::MaxLen(max)
    } else {
        Trim::MinId(StreamId::parse(threshold, 0).ok_or(CommandError::InvalidStreamId)?)
    };
    i += 1;
    if args.get(i).is_some_and(|word| is(word, "limit")) {
        if !approx {
            return Err(CommandError::other("ERR syntax error, LIMIT cannot be used without the special ~ option"));
        }
        int_arg(args.get(i + 1).ok_or(CommandError::Syntax)?)?;
        i += 2;
    }
    Ok((strategy, approx, &args[i..]))
}

fn xadd(core: &mut Core, args: &[&[u8]]) -> Result<Value, CommandError> {
    let now = core.now_ms;
    let mut rest = &args[2..];
    let mut no_create = false;
    if rest.first().is_some_and(|word| is(word, "nomkstream")) {
        no_create = true;
        rest = &rest[1..];
    }
    let mut trim = None;
    if rest.first().is_some_and(|word| is(word, "maxlen") || is(word, "minid")) {
        let (strategy, approx, after) = parse_trim(rest)?;
        trim = Some((strategy, approx));
        rest = after;
    }
    let (id_arg, fields) = rest.split_first().ok_or(CommandError::Syntax)?;
    if fields.is_empty() || fields.len() % 2 != 0 {
        return Err(CommandError::Arity("xadd".to_owned()));
    }
    let node_capacity = core
        .config
        .get("stream-node-max-entries")
        .and_then(|value| parse_i64(value))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(100);
    // The id is read, and 0-0 refused, before the stream is looked up: a refused id
    // leaves no key behind.
    let wanted = if *id_arg == b"*" {
        None
    } else {
        match parse_id(id_arg).ok_or(CommandError::InvalidStreamId)? {
            (ms, Some(Seq::Auto)) => Some((ms, None)),
            (ms, Some(Seq::Given(seq))) => Some((ms, Some(seq))),
            (ms, None) => Some((ms, Some(0))),
        }
    };
    if wanted == Some((0, Some(0))) {
        return Err(CommandError::other("ERR The ID specified in XADD must be greater than 0-0"));
    }
    let existed = core.db.stream(args[1], now)?.is_some();
    if no_create && !existed {
        return Ok(Value::Nil);
    }
    let stream = core.db.stream_or_create(args[1], now)?;
    let last = stream.last_id;
    let id = match wanted {
        _ if last == StreamId::MAX => Err(id_exhausted()),
        None => {
            let ms = u64::try_from(now).unwrap_or(0);
            if ms > last.ms { Ok(StreamId { ms, seq: 0 }) } else { last.next().ok_or_else(id_exhausted) }
        }
        // Redis fails here without setting errno, so it answers with the other message.
        Some((ms, None)) if ms == last.ms => last
            .next()
            .filter(|id| id.ms == ms)
            .ok_or_else(|| CommandError::other("ERR Elements are too large to be stored")),
        Some((ms, None)) => Ok(StreamId { ms, seq: 0 }),
        Some((ms, Some(seq))) => Ok(StreamId { ms, seq }),
    };
    let id = id.and_then(|id| if id <= last { Err(too_small()) } else { Ok(id) });
    let id = match id {
        Ok(id) => id,
        Err(error) => {
            if !existed {
                core.db.drop_if_empty(args[1]);
            }
            return Err(error);
        }
    };
    stream.push(id, fields.iter().map(|f| f.to_vec()).collect(), node_capacity);
    if let Some((strategy, approx)) = trim {
        stream.trim(strategy, approx);
    }
    Ok(Value::BulkString(id.render()))
}

/// The sequence part of an id: given, or `*` (XADD's `ms-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seq {
    Given(u64),
    Auto,
}

/// An id as `streamGenericParseIDOrReply` reads it (strict: `-` and `+` are not ids):
/// `ms`, `ms-seq` or `ms-*`, each number as `string2ull` reads it, at most 127 bytes.
fn parse_id(text: &[u8]) -> Option<(u64, Option<Seq>)> {
    if text.len() > 127 || text == b"-" || text == b"+" {
        return None;
    }
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    match text.iter().position(|&b| b == b'-') {
        Some(dash) => {
            let ms = string2ull(&text[..dash])?;
            let seq = match &text[dash + 1..] {
                b"*" => Seq::Auto,
                seq => Seq::Given(string2ull(seq)?),
            };
            Some((ms, Some(seq)))
        }
        None => Some((string2ull(text)?, None)),
    }
}

fn too_small() -> CommandError {
    CommandError::other("ERR The ID specified in XADD is equal or smaller than the target stream top item")
}

fn id_exhausted() -> CommandError {
    CommandError::other("ERR The stream has exhausted the last possible ID, unable to add more items")
}
