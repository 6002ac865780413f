//! The history of a run, Jepsen style: every request a virtual buyer makes is one
//! operation, recorded when it completes with the time it was invoked and the time its
//! answer (or the lack of one) arrived, and one of three outcomes:
//!
//! - `ok`: the server answered with an order (201 confirmed, 202 pending);
//! - `fail`: the server definitely did not buy (a 4xx problem, or a connection that was
//!   refused before the request was sent);
//! - `info`: the outcome is unknown (a timeout, a reset connection, a 5xx). An `info`
//!   may or may not have bought: the checker never counts it as a failure, because that
//!   would hide double orders.
//!
//! Faults are recorded on the same clock (milliseconds from the opening of the sale), so
//! the report can draw both on one timeline.

use std::sync::Mutex;
use tokio::time::Instant;

use serde::Serialize;
use uuid::Uuid;

use crate::plan::{Fault, ProductChange};

/// What one operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OpKind {
    /// `POST /api/v1/user/buy/{product}` with an Idempotency-Key.
    Buy { product: usize, key: String },
    /// `GET /api/v1/products/{product}`: the live `remaining`.
    Read { product: usize },
    /// The HTTP register → login → OTP flow.
    Login,
    /// `POST /api/v1/admin/orders/{order}/cancel` by an administrator, for the order of
    /// the buyer's first key (`buyer` is the buyer whose order it is).
    Cancel { product: usize, order_id: Uuid },
    /// `POST /api/v1/products/{product}/restock` by an administrator (`buyer` is
    /// [`ADMIN`]).
    Restock { product: usize, quantity: i64 },
    /// `PUT` or `DELETE /api/v1/products/{product}` by an administrator (`buyer` is
    /// [`ADMIN`]).
    Change { product: usize, change: ProductChange },
}

/// The `buyer` of an operation an administrator sends on no buyer's behalf.
pub const ADMIN: usize = u32::MAX as usize;

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Outcome {
    /// An order: 201 (confirmed) or 202 (pending). `replayed` when the server said so
    /// (`Idempotent-Replayed: true`).
    Ok { status: u16, order_id: Uuid, unit: i64, replayed: bool },
    /// A product read, with the remaining stock it reported.
    Read { remaining: i64 },
    /// The server definitely did not do it: a 4xx problem (its type slug), or a
    /// connection refused before anything was sent (`status` 0).
    Fail { status: u16, problem: String },
    /// Unknown outcome: timeout, reset, 5xx.
    Info { status: u16, reason: String },
    /// The login flow completed.
    LoggedIn,
    /// An administrator's cancellation answered 200: the order is released.
    Cancelled,
    /// A restock answered 200, with the product's new stock total.
    Restocked { stock_total: i64 },
    /// A change answered 200 (an update) or 204 (a delete): applied.
    Changed,
}

impl Outcome {
    pub fn is_info(&self) -> bool {
        matches!(self, Self::Info { .. })
    }

    /// The problem slug of a `fail`, if any.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Self::Fail { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// A short label for tables and the timeline.
    pub fn label(&self) -> String {
        match self {
            Self::Ok { status, replayed: true, .. } => format!("{status} replay"),
            Self::Ok { status, .. } => status.to_string(),
            Self::Read { remaining } => format!("read {remaining}"),
            Self::Fail { status, problem } => format!("{status} {problem}"),
            Self::Info { status: 0, reason } => format!("info {reason}"),
            Self::Info { status, reason } => format!("info {status} {reason}"),
            Self::LoggedIn => "logged in".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Restocked { stock_total } => format!("restocked to {stock_total}"),
            Self::Changed => "changed".into(),
        }
    }
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    /// Order of completion.
    pub seq: u64,
    pub buyer: usize,
    /// The server instance it was sent to.
    pub instance: usize,
    #[serde(flatten)]
    pub kind: OpKind,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: Outcome,
}

/// A fault starting or healing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultEvent {
    /// Index of the fault in the plan.
    pub index: usize,
    pub at_ms: u64,
    pub fault: Fault,
    pub phase: FaultPhase,
    /// What happened, e.g. an error while applying it.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    Start,
    Heal,
    /// Applying or healing it failed.
    Error,
}

/// A stock event the servers published on the sale's channel (`stock_updated` or
/// `sold_out`, with the units left), as the simulator's own subscriber received it: it
/// was published at `at_ms` or earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StockEvent {
    /// Index of the product in the plan.
    pub product: usize,
    pub at_ms: u64,
    pub remaining: i64,
}

/// The recorder shared by every buyer task.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<FaultEvent>>,
    stock_events: Mutex<Vec<StockEvent>>,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
    /// Every stock event received, in the order received.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stock_events: Vec<StockEvent>,
    /// What the instances did out of the buyers' sight (deterministic mode, which runs
    /// them in process, reads their counters; empty in real mode).
    #[serde(skip_serializing_if = "ServerTally::is_empty")]
    pub server: ServerTally,
}

/// Counters read from the instances of a deterministic run, summed over every instance
/// that ran (each read as it was killed or stopped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServerTally {
    /// Reservations the reconcilers persisted.
    pub reconciled_orders: u64,
    /// Sale states rebuilt from MongoDB.
    pub rebuilds: u64,
    /// Kills of an instance while one of its purchases held a reservation whose order
    /// write had not ended.
    pub kills_awaiting_write: u64,
}

impl ServerTally {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl Recorder {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            ops: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            stock_events: Mutex::new(Vec::new()),
        }
    }

    /// Milliseconds since the opening of the sale.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// Records a completed operation; its invocation time was taken by the caller.
    pub fn record(&self, buyer: usize, instance: usize, kind: OpKind, invoke_ms: u64, outcome: Outcome) {
        let complete_ms = self.now_ms();
        let mut ops = self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = ops.len() as u64;
        ops.push(Op { seq, buyer, instance, kind, invoke_ms, complete_ms, outcome });
    }

    pub fn fault(&self, index: usize, fault: Fault, phase: FaultPhase, detail: impl Into<String>) {
        let event = FaultEvent { index, at_ms: self.now_ms(), fault, phase, detail: detail.into() };
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }

    pub fn stock_event(&self, product: usize, remaining: i64) {
        let event = StockEvent { product, at_ms: self.now_ms(), remaining };
        self.stock_events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
    }

    /// Operations recorded so far (for live progress).
    pub fn op_count(&self) -> usize {
        self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Completed buy operations by outcome: (ok, fail, info).
    pub fn counts(&self) -> (usize, usize, usize) {
        let ops = self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counts = (0, 0, 0);
        for op in ops.iter().filter(|op| matches!(op.kind, OpKind::Buy { .. })) {
            match op.outcome {
                Outcome::Ok { .. } => counts.0 += 1,
                Outcome::Fail { .. } => counts.1 += 1,
                Outcome::Info { .. } => counts.2 += 1,
                _ => {}
            }
        }
        counts
    }

    pub fn snapshot(&self) -> History {
        History {
            ops: self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            faults: self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            stock_events: self.stock_events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            server: ServerTally::default(),
        }
    }
}
