//! What the load generator saw, per route and outcome: latency histograms (µs, from
//! send to the end of the response body), a per-second timeline, error causes, the
//! buyers' retries by cause, and every acknowledged order with what its replays said
//! (for the correctness check). Rates are taken over the window from the first request
//! sent to the last answer ([`Recorder::active`]), not from when the recorder was made:
//! goose's start-up, before any user sends, is not part of the load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use uuid::Uuid;

use crate::openloop::{TimelinePoint, new_latency_histogram};

/// What an answer was, as the report names it (purchases, and reads for `browse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 201: this buyer got a unit, order confirmed.
    Won,
    /// 202: a unit reserved, the order still being written.
    Pending,
    /// 409 sold-out (expected: the sale has fewer units than buyers).
    SoldOut,
    /// 409 already-purchased (a second attempt of a buyer who has a unit).
    AlreadyPurchased,
    /// 201 with `Idempotent-Replayed: true`: the stored answer of an earlier attempt.
    Replay,
    /// 429.
    RateLimited,
    /// 503 (sale paused, backend unavailable).
    Unavailable,
    /// 409 idempotency-in-flight (a retry while the first attempt still runs).
    InFlight,
    /// 200: a read answered.
    Ok,
    /// Any other answer, or no answer.
    Error,
}

impl Outcome {
    pub const ALL: [Self; 10] = [
        Self::Won,
        Self::Pending,
        Self::SoldOut,
        Self::AlreadyPurchased,
        Self::Replay,
        Self::RateLimited,
        Self::Unavailable,
        Self::InFlight,
        Self::Ok,
        Self::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Won => "won",
            Self::Pending => "pending",
            Self::SoldOut => "sold_out",
            Self::AlreadyPurchased => "already_purchased",
            Self::Replay => "replay",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::InFlight => "in_flight",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }

    /// Whether the answer is one the sale expects (goose counts it a success).
    pub fn expected(self) -> bool {
        matches!(self, Self::Won | Self::Pending | Self::SoldOut | Self::AlreadyPurchased | Self::Replay | Self::Ok)
    }

    /// Classifies an answer from its status, problem type and replay header.
    pub fn classify(status: u16, problem: Option<&str>, replayed: bool) -> Self {
        match (status, problem) {
            (200, _) => Self::Ok,
            (201, _) if replayed => Self::Replay,
            (201, _) => Self::Won,
            (202, _) => Self::Pending,
            (409, Some(p)) if p.ends_with("sold-out") => Self::SoldOut,
            (409, Some(p)) if p.ends_with("already-purchased") => Self::AlreadyPurchased,
            (409, Some(p)) if p.ends_with("idempotency-in-flight") => Self::InFlight,
            (429, _) => Self::RateLimited,
            (503, _) => Self::Unavailable,
            _ => Self::Error,
        }
    }
}

/// Why a buyer tried its key again (the answers worth a retry with the same key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryCause {
    /// 503 (a backend unavailable, the sale paused).
    Unavailable,
    /// 429.
    RateLimited,
    /// 409 idempotency-in-flight (an earlier attempt of the key still holds it).
    InFlight,
    /// No answer: the request timed out or its connection failed (the outcome is unknown,
    /// which is what the key is for).
    NoAnswer,
}

impl RetryCause {
    pub const ALL: [Self; 4] = [Self::Unavailable, Self::RateLimited, Self::InFlight, Self::NoAnswer];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::InFlight => "in_flight",
            Self::NoAnswer => "no_answer",
        }
    }

    /// The answer, as the report shows it.
    pub fn answer(self) -> &'static str {
        match self {
            Self::Unavailable => "503",
            Self::RateLimited => "429",
            Self::InFlight => "409 idempotency-in-flight",
            Self::NoAnswer => "none (timeout or connection error)",
        }
    }

    /// The cause of an answer that is worth a retry of its key, if it is one.
    pub fn of(outcome: Outcome) -> Option<Self> {
        match outcome {
            Outcome::Unavailable => Some(Self::Unavailable),
            Outcome::RateLimited => Some(Self::RateLimited),
            Outcome::InFlight => Some(Self::InFlight),
            _ => None,
        }
    }
}

/// The retries of a run: how many, by cause, and how many keys ran out of attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retries {
    /// Retries (attempts after a key's first), by the answer that caused them.
    pub by_cause: BTreeMap<RetryCause, u64>,
    pub total: u64,
    /// Keys whose last allowed attempt still got an answer worth a retry.
    pub gave_up: u64,
}

/// An order a buyer was told about (201 or 202), and what its replays said.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Acknowledged {
    pub user_id: Uuid,
    pub key: String,
    pub order_id: Uuid,
    pub unit: i64,
    /// Replays of the same key that named another order or unit, or no order at all
    /// (must stay empty).
    pub inconsistent_replays: Vec<String>,
    /// Replays of the key that got an answer (not one worth a retry).
    pub replays: u32,
}

/// Latency and counts of one route and outcome.
#[derive(Debug, Clone)]
pub struct Series {
    pub latency: Histogram<u64>,
    /// Error causes (for outcomes that are errors), with counts.
    pub causes: BTreeMap<String, u64>,
}

/// Everything recorded during a run, shared by every goose user.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
    /// Becomes true at the first answer recorded.
    answered: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    series: BTreeMap<(String, Outcome), Series>,
    /// Per second since the recorder was made: completions and their latency.
    seconds: Vec<Histogram<u64>>,
    acknowledged: HashMap<(Uuid, String), Acknowledged>,
    retries: Retries,
    /// Since the recorder was made: the earliest send of a recorded request.
    first_send: Option<Duration>,
    last_completion: Duration,
}

impl Recorder {
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A recorder whose clock starts at `started` (a load driver's start).
    pub fn starting_at(started: Instant) -> Self {
        Self { started, inner: Mutex::new(Inner::default()), answered: tokio::sync::watch::Sender::new(false) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one answer of `route` that took `latency`, ending now (so sent `latency` ago).
    pub fn record(&self, route: &str, outcome: Outcome, latency: Duration, cause: Option<&str>) {
        let answered = Instant::now();
        let sent = answered.checked_sub(latency).unwrap_or(answered);
        self.record_between(route, outcome, sent, answered, cause);
    }

    /// Records one answer of `route`, sent at `sent` and answered at `answered`.
    pub fn record_between(&self, route: &str, outcome: Outcome, sent: Instant, answered: Instant, cause: Option<&str>) {
        let latency = answered.saturating_duration_since(sent);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let since = answered.saturating_duration_since(self.started);
        let sent_since = sent.saturating_duration_since(self.started);
        let second = usize::try_from(since.as_secs()).unwrap_or(usize::MAX);
        let mut inner = self.lock();
        let series = inner
            .series
            .entry((route.to_owned(), outcome))
            .or_insert_with(|| Series { latency: new_latency_histogram(), causes: BTreeMap::new() });
        series.latency.saturating_record(micros);
        if let Some(cause) = cause {
            *series.causes.entry(cause.to_owned()).or_default() += 1;
        }
        if second < 24 * 3600 {
            while inner.seconds.len() <= second {
                inner.seconds.push(new_latency_histogram());
            }
            inner.seconds[second].saturating_record(micros);
        }
        inner.last_completion = inner.last_completion.max(since);
        inner.first_send = Some(inner.first_send.map_or(sent_since, |first| first.min(sent_since)));
        drop(inner);
        if !*self.answered.borrow() {
            self.answered.send_replace(true);
        }
    }

    /// Waits for the first answer to be recorded (at once if one was).
    pub async fn first_answer(&self) {
        let mut answered = self.answered.subscribe();
        // The sender lives as long as `self`: the wait ends only with an answer.
        let _ = answered.wait_for(|answered| *answered).await;
    }

    /// Notes an order a buyer was told about: the first answer of its key naming an order
    /// (201 or 202; a replayed 201 when the key's earlier answers were lost). A later
    /// acknowledgement of the same key that names another order is kept as inconsistent.
    pub fn acknowledge(&self, user_id: Uuid, key: &str, order_id: Uuid, unit: i64) {
        let mut inner = self.lock();
        let entry = inner.acknowledged.entry((user_id, key.to_owned())).or_insert_with(|| Acknowledged {
            user_id,
            key: key.to_owned(),
            order_id,
            unit,
            inconsistent_replays: Vec::new(),
            replays: 0,
        });
        if entry.order_id != order_id || entry.unit != unit {
            let seen = format!("order {order_id} unit {unit} (first: order {} unit {})", entry.order_id, entry.unit);
            entry.inconsistent_replays.push(seen);
        }
    }

    /// Notes what a replay of a key answered: the order and unit it named, if any, and
    /// `answer` (status and problem type) for the report. A replay of an acknowledged key
    /// must name its order and unit; any other answer is kept as inconsistent. A replay of a
    /// key nobody was told an order for acknowledges the order it names (there was nothing
    /// to compare with), and one naming none is not a replay of an acknowledged key.
    pub fn replayed(&self, user_id: Uuid, key: &str, order: Option<(Uuid, i64)>, answer: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.acknowledged.get_mut(&(user_id, key.to_owned())) else {
            drop(inner);
            if let Some((order_id, unit)) = order {
                self.acknowledge(user_id, key, order_id, unit);
            }
            return;
        };
        entry.replays += 1;
        let first = format!("(first: order {} unit {})", entry.order_id, entry.unit);
        match order {
            Some((order_id, unit)) if (order_id, unit) == (entry.order_id, entry.unit) => {}
            Some((order_id, unit)) => entry.inconsistent_replays.push(format!("order {order_id} unit {unit} {first}")),
            None => entry.inconsistent_replays.push(format!("{answer}, no order {first}")),
        }
    }

    /// Notes a retry of a key, caused by `cause`.
    pub fn retried(&self, cause: RetryCause) {
        let mut inner = self.lock();
        *inner.retries.by_cause.entry(cause).or_default() += 1;
        inner.retries.total += 1;
    }

    /// Notes a key whose attempts ran out on an answer worth a retry.
    pub fn gave_up(&self) {
        self.lock().retries.gave_up += 1;
    }

    /// The retries so far.
    pub fn retries(&self) -> Retries {
        self.lock().retries.clone()
    }

    /// Per route and outcome, in order.
    pub fn series(&self) -> BTreeMap<(String, Outcome), Series> {
        self.lock().series.clone()
    }

    /// Every acknowledged order.
    pub fn acknowledged(&self) -> Vec<Acknowledged> {
        let mut all: Vec<Acknowledged> = self.lock().acknowledged.values().cloned().collect();
        all.sort_by_key(|a| a.order_id);
        all
    }

    /// All routes and outcomes together.
    pub fn all_latency(&self) -> Histogram<u64> {
        let mut all = new_latency_histogram();
        for series in self.lock().series.values() {
            let _ = all.add(&series.latency);
        }
        all
    }

    /// Completions and p99 per second, from the second of the first send to the last
    /// completion (second 0 holds the first send).
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        let inner = self.lock();
        let skipped = inner.first_send.map_or(0, |first| usize::try_from(first.as_secs()).unwrap_or(usize::MAX));
        inner
            .seconds
            .iter()
            .skip(skipped)
            .enumerate()
            .map(|(second, histogram)| TimelinePoint {
                second: u64::try_from(second).unwrap_or(u64::MAX),
                completed: histogram.len(),
                p99_us: if histogram.is_empty() { 0 } else { histogram.value_at_quantile(0.99) },
            })
            .collect()
    }

    /// The load's window: from the first request sent to the last answer (zero before
    /// any answer). Rates are counted over it.
    pub fn active(&self) -> Duration {
        let inner = self.lock();
        inner.first_send.map_or(Duration::ZERO, |first| inner.last_completion.saturating_sub(first))
    }

    /// From the recorder's start (the load driver's) to the first request sent: the
    /// driver's start-up, outside the window ([`Self::active`]).
    pub fn start_up(&self) -> Option<Duration> {
        self.lock().first_send
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_status_problem_and_replay() {
        assert_eq!(Outcome::classify(201, None, false), Outcome::Won);
        assert_eq!(Outcome::classify(201, None, true), Outcome::Replay);
        assert_eq!(Outcome::classify(202, None, false), Outcome::Pending);
        assert_eq!(Outcome::classify(409, Some("https://flashsale.dev/problems/sold-out"), false), Outcome::SoldOut);
        assert_eq!(Outcome::classify(409, Some("/problems/already-purchased"), false), Outcome::AlreadyPurchased);
        assert_eq!(Outcome::classify(409, Some("/problems/idempotency-in-flight"), false), Outcome::InFlight);
        assert_eq!(Outcome::classify(409, Some("/problems/order-released"), false), Outcome::Error);
        assert_eq!(Outcome::classify(429, None, false), Outcome::RateLimited);
        assert_eq!(Outcome::classify(503, None, false), Outcome::Unavailable);
        assert_eq!(Outcome::classify(500, None, false), Outcome::Error);
        assert_eq!(Outcome::classify(200, None, false), Outcome::Ok);
        assert_eq!(Outcome::classify(404, Some("/problems/not-found"), false), Outcome::Error);
        assert!(Outcome::SoldOut.expected() && !Outcome::Unavailable.expected());
    }

    #[test]
    fn a_replay_naming_another_order_is_kept_as_inconsistent() {
        let recorder = Recorder::new();
        let (user, order, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        recorder.acknowledge(user, "k", order, 3);
        recorder.replayed(user, "k", Some((order, 3)), "201");
        recorder.replayed(user, "k", Some((other, 3)), "201");
        let acknowledged = recorder.acknowledged();
        assert_eq!(acknowledged.len(), 1);
        assert_eq!(acknowledged[0].replays, 2);
        assert_eq!(acknowledged[0].inconsistent_replays.len(), 1, "{:?}", acknowledged[0]);
    }

    #[test]
    fn the_timeline_counts_completions_per_second() {
        let recorder = Recorder::new();
        for _ in 0..5 {
            recorder.record("buy", Outcome::Won, Duration::from_millis(2), None);
        }
        recorder.record("buy", Outcome::Error, Duration::from_millis(9), Some("connection refused"));
        let timeline = recorder.timeline();
        assert_eq!(timeline.iter().map(|p| p.completed).sum::<u64>(), 6);
        let series = recorder.series();
        assert_eq!(series[&("buy".to_owned(), Outcome::Won)].latency.len(), 5);
        assert_eq!(series[&("buy".to_owned(), Outcome::Error)].causes["connection refused"], 1);
        assert_eq!(recorder.all_latency().len(), 6);
    }
}
