//! Open-loop load driver (fixed arrival rate, immune to coordinated omission) and a simple
//! closed-loop helper for capacity and baselines.
//!
//! Open loop: request `i` is planned at `start + i / rate`, a fixed schedule that does not depend
//! on how fast earlier requests complete. The requests are dealt round-robin to a fixed set of
//! lanes (as `wrk2` deals them to its connections); each lane waits for each of its planned times
//! and sends one request at a time. Latency is measured from the *planned* send time, so a stall
//! of the server (or of the driver itself) shows up in the latency of every request planned
//! behind it instead of silently lowering the offered rate. Lanes rather than a task per request:
//! a spawned task, a semaphore permit and a channel message per request cost the driver more CPU
//! than the server's cheapest answer, on the cores the two share.
//!
//! Timing conventions, shared by both drivers: `duration` is the whole run, the first `warmup` of
//! it included. A request belongs to the measurement when it was planned (open loop) or started
//! (closed loop) at or after the end of the warmup, so nothing that completes during the warmup is
//! ever recorded. Both drivers wait for the requests they started before returning: give the
//! requests their own timeouts.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::{Instant, sleep_until};

/// What one request returned, as the caller classifies it (e.g. "201", "sold-out", "replay",
/// "error:timeout").
pub type Outcome = String;

/// Outcome recorded for a request whose future panicked (the panic is caught: the run goes on).
pub const OUTCOME_PANIC: &str = "error:panic";
/// Outcome recorded for a request whose task was cancelled (e.g. the runtime shut down).
pub const OUTCOME_CANCELLED: &str = "error:cancelled";

/// Lowest latency the histograms can tell apart, in microseconds.
pub const LATENCY_LOW_US: u64 = 1;
/// Highest latency the histograms track, in microseconds (60 s); longer ones are clamped to it.
pub const LATENCY_HIGH_US: u64 = 60_000_000;
/// Significant digits of the latency histograms.
pub const LATENCY_SIGFIG: u8 = 3;
/// Most lanes an open-loop run may have.
pub const MAX_LANES: usize = 4_096;
/// Significant digits of the per-second histograms behind the timeline (1% is plenty there and
/// keeps long runs small).
const TIMELINE_SIGFIG: u8 = 2;

/// A latency histogram in microseconds: 1 µs .. 60 s, 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    histogram_with_sigfig(LATENCY_SIGFIG)
}

fn histogram_with_sigfig(sigfig: u8) -> Histogram<u64> {
    match Histogram::new_with_bounds(LATENCY_LOW_US, LATENCY_HIGH_US, sigfig) {
        Ok(histogram) => histogram,
        // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5): this arm cannot be reached.
        Err(error) => unreachable!("constant histogram bounds rejected: {error:?}"),
    }
}

/// Awaits one request, turning a panic (of `make_request` itself, called inside `request`, or of the
/// future it returned) into the [`OUTCOME_PANIC`] outcome.
async fn outcome_of<Fut: Future<Output = Outcome>>(request: Fut) -> Outcome {
    AssertUnwindSafe(request).catch_unwind().await.unwrap_or_else(|_| OUTCOME_PANIC.to_owned())
}

/// The instant `offset` after `start`, or `None` when that is past what the clock can represent.
fn after(start: Instant, offset: Duration) -> Option<Instant> {
    start.checked_add(offset)
}

/// The instant `offset` after `start`, absurdly long offsets (centuries) cut to 30 years.
fn deadline(start: Instant, offset: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    after(start, offset).or_else(|| after(start, FAR)).unwrap_or(start)
}

/// Saturating conversion of a duration to whole microseconds.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Configuration of an open-loop run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoopConfig {
    /// Planned arrival rate, requests per second (must be finite and > 0, else nothing is sent).
    pub rate_per_s: f64,
    /// Length of the whole run, warmup included: requests are planned at `i / rate` for every
    /// `i` with `i / rate < duration`.
    pub duration: Duration,
    /// Lanes sending the requests, each one request at a time (with a kept-alive client, about one
    /// connection each): the most requests in flight at once. Clamped to `1..=MAX_LANES`.
    pub lanes: usize,
    /// How late a lane may send a request: one it reaches later than this after its planned time is
    /// not sent and counts as dropped (so an overloaded run ends about `max_lag` after `duration`).
    pub max_lag: Duration,
    /// Leading part of `duration` whose requests (by planned time) are sent but not recorded.
    pub warmup: Duration,
}

/// One second of a run's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the end of the warmup, by completion time.
    pub second: u64,
    /// Requests that completed during that second.
    pub completed: u64,
    /// p99 latency (from planned send time) of the requests that completed during that second, µs;
    /// 0 for a second in which nothing completed.
    pub p99_us: u64,
}

/// What an open-loop run measured. Only requests planned after the warmup are counted, and
/// `planned == completed + dropped`.
#[derive(Debug, Clone)]
pub struct OpenLoopResult {
    /// Latency from the PLANNED send time to completion, per outcome label, in microseconds
    /// (1 µs .. 60 s, 3 significant digits).
    pub by_outcome: BTreeMap<String, Histogram<u64>>,
    /// All outcomes together.
    pub all: Histogram<u64>,
    /// Per-second series, by completion time, from second 0 to the last completion, without gaps.
    pub timeline: Vec<TimelinePoint>,
    /// Requests planned in the measured window.
    pub planned: u64,
    /// Requests that were sent and completed (whatever their outcome).
    pub completed: u64,
    /// Requests not sent because their lane reached them more than `max_lag` late. They are
    /// counted here only: no latency is recorded for them.
    pub dropped: u64,
    /// Completed requests per second of the measured window; the window is stretched to the last
    /// actual send when the driver itself fell behind its schedule.
    pub achieved_rate_per_s: f64,
    /// Worst lateness of a sent request: how long after its planned time a measured request was
    /// actually sent, µs (its lane was busy with earlier requests, or the driver fell behind; the
    /// latencies still count from the planned time).
    pub max_send_lag_us: u64,
}

/// Accumulates completions into histograms and the per-second timeline.
struct Collector {
    measure_start: Instant,
    by_outcome: BTreeMap<String, Histogram<u64>>,
    all: Histogram<u64>,
    seconds: Vec<(u64, Histogram<u64>)>,
    completed: u64,
}

impl Collector {
    fn new(measure_start: Instant) -> Self {
        Self {
            measure_start,
            by_outcome: BTreeMap::new(),
            all: new_latency_histogram(),
            seconds: Vec::new(),
            completed: 0,
        }
    }

    fn record(&mut self, planned_at: Instant, done_at: Instant, outcome: Outcome) {
        let latency_us = micros(done_at.saturating_duration_since(planned_at));
        self.completed += 1;
        self.all.saturating_record(latency_us);
        self.by_outcome.entry(outcome).or_insert_with(new_latency_histogram).saturating_record(latency_us);
        let second = done_at.saturating_duration_since(self.measure_start).as_secs();
        let index = usize::try_from(second).unwrap_or(usize::MAX);
        if index >= self.seconds.len() {
            self.seconds.resize_with(index.saturating_add(1), || (0, histogram_with_sigfig(TIMELINE_SIGFIG)));
        }
        if let Some((count, histogram)) = self.seconds.get_mut(index) {
            *count += 1;
            histogram.saturating_record(latency_us);
        }
    }

    /// Adds another collector's tallies (same bounds on both sides: `add` can only fail on a
    /// count overflow).
    fn merge(&mut self, other: Collector) {
        self.completed += other.completed;
        let _ = self.all.add(&other.all);
        for (outcome, histogram) in other.by_outcome {
            let _ = self.by_outcome.entry(outcome).or_insert_with(new_latency_histogram).add(&histogram);
        }
        if other.seconds.len() > self.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), || (0, histogram_with_sigfig(TIMELINE_SIGFIG)));
        }
        for ((count, histogram), (other_count, other_histogram)) in self.seconds.iter_mut().zip(other.seconds) {
            *count += other_count;
            let _ = histogram.add(&other_histogram);
        }
    }

    fn timeline(&self) -> Vec<TimelinePoint> {
        (0_u64..)
            .zip(&self.seconds)
            .map(|(second, (completed, histogram))| TimelinePoint {
                second,
                completed: *completed,
                p99_us: if *completed == 0 { 0 } else { histogram.value_at_quantile(0.99) },
            })
            .collect()
    }
}

/// What one lane saw: its own tallies, merged at the end.
struct LaneStats {
    collector: Collector,
    planned: u64,
    dropped: u64,
    max_send_lag: Duration,
    last_send: Option<Instant>,
}

/// Runs an open-loop load: request `i` is planned at `start + i / rate_per_s` and sent by lane
/// `i % lanes` at that time, whatever the state of other requests. Each lane sends its requests in
/// order, one at a time (as one connection of `wrk2` does): a lane still busy at a planned time
/// sends that request as soon as it is free, and its latency still counts from the planned time; a
/// request the lane reaches more than `max_lag` late is not sent and counts as dropped. Returns once
/// every lane has finished.
pub async fn run<F, Fut>(config: &OpenLoopConfig, make_request: F) -> OpenLoopResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let rate = config.rate_per_s;
    let start = Instant::now();
    let measure_start = deadline(start, config.warmup);
    let make_request = Arc::new(make_request);
    let lanes = if rate.is_finite() && rate > 0.0 { config.lanes.clamp(1, MAX_LANES) } else { 0 };
    let lane_count = u64::try_from(lanes).unwrap_or(1);
    let (duration, warmup, max_lag) = (config.duration, config.warmup, config.max_lag);

    let tasks: Vec<_> = (0..lane_count)
        .map(|lane| {
            let make_request = Arc::clone(&make_request);
            tokio::spawn(async move {
                let mut stats = LaneStats {
                    collector: Collector::new(measure_start),
                    planned: 0,
                    dropped: 0,
                    max_send_lag: Duration::ZERO,
                    last_send: None,
                };
                let mut index = lane;
                // `index as f64` is exact up to 2^53 requests, far beyond any run.
                while let Ok(offset) = Duration::try_from_secs_f64(index as f64 / rate) {
                    if offset >= duration {
                        break;
                    }
                    let Some(planned_at) = after(start, offset) else { break };
                    let measured = offset >= warmup;
                    let mut now = Instant::now();
                    if now < planned_at {
                        sleep_until(planned_at).await;
                        now = Instant::now();
                    }
                    let lag = now.saturating_duration_since(planned_at);
                    if measured {
                        stats.planned += 1;
                    }
                    if lag > max_lag {
                        if measured {
                            stats.dropped += 1;
                        }
                    } else {
                        let outcome = outcome_of(async { make_request(index).await }).await;
                        if measured {
                            stats.max_send_lag = stats.max_send_lag.max(lag);
                            stats.last_send = Some(now);
                            stats.collector.record(planned_at, Instant::now(), outcome);
                        }
                    }
                    // A request that completes at once never yields: let other tasks run too.
                    tokio::task::coop::consume_budget().await;
                    let Some(next) = index.checked_add(lane_count) else { break };
                    index = next;
                }
                stats
            })
        })
        .collect();

    let mut collector = Collector::new(measure_start);
    let (mut planned, mut dropped, mut max_send_lag, mut last_send) = (0, 0, Duration::ZERO, None::<Instant>);
    for task in tasks {
        match task.await {
            Ok(lane) => {
                collector.merge(lane.collector);
                planned += lane.planned;
                dropped += lane.dropped;
                max_send_lag = max_send_lag.max(lane.max_send_lag);
                last_send = last_send.max(lane.last_send);
            }
            // A lane whose task was cancelled (the runtime is shutting down) lost its tallies:
            // say so rather than report a quiet lane.
            Err(_) => collector.record(measure_start, measure_start, OUTCOME_CANCELLED.to_owned()),
        }
    }

    let window = duration.saturating_sub(warmup);
    let send_span = last_send.map_or(Duration::ZERO, |last| last.saturating_duration_since(measure_start));
    let elapsed = window.max(send_span).as_secs_f64();
    let achieved_rate_per_s = if elapsed > 0.0 { collector.completed as f64 / elapsed } else { 0.0 };
    OpenLoopResult {
        timeline: collector.timeline(),
        by_outcome: collector.by_outcome,
        all: collector.all,
        planned,
        completed: collector.completed,
        dropped,
        achieved_rate_per_s,
        max_send_lag_us: micros(max_send_lag),
    }
}

/// What a closed-loop run measured (requests started after the warmup).
#[derive(Debug, Clone)]
pub struct ClosedLoopResult {
    /// Requests completed (whatever their outcome).
    pub completed: u64,
    /// Completed requests per second, from the end of the warmup until the last worker finished.
    pub rate_per_s: f64,
    /// Completed requests per outcome label (a request whose future panicked counts as
    /// [`OUTCOME_PANIC`]; a worker task that was cancelled counts once as [`OUTCOME_CANCELLED`], its
    /// own tallies lost).
    pub by_outcome: BTreeMap<String, u64>,
    /// Latency from send to completion, µs (1 µs .. 60 s, 3 significant digits).
    pub latency: Histogram<u64>,
}

/// One closed-loop worker's own tallies, merged at the end.
struct WorkerTally {
    completed: u64,
    by_outcome: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

/// Runs a closed loop: each of `concurrency` workers sends a request, waits for it, records it,
/// and starts the next one, until `duration` (warmup included) has passed. Requests started during
/// the warmup are not recorded. For capacity and baselines; latencies measured this way hide
/// stalls (coordinated omission): use [`run`] for latency.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    make_request: F,
) -> ClosedLoopResult
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let start = Instant::now();
    let measure_start = deadline(start, warmup);
    let end = deadline(start, duration);
    let make_request = Arc::new(make_request);
    let next_index = Arc::new(AtomicU64::new(0));

    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let make_request = Arc::clone(&make_request);
            let next_index = Arc::clone(&next_index);
            tokio::spawn(async move {
                let mut tally =
                    WorkerTally { completed: 0, by_outcome: BTreeMap::new(), latency: new_latency_histogram() };
                loop {
                    let sent_at = Instant::now();
                    if sent_at >= end {
                        break;
                    }
                    let index = next_index.fetch_add(1, Ordering::Relaxed);
                    let outcome = outcome_of(async { make_request(index).await }).await;
                    let done_at = Instant::now();
                    if sent_at >= measure_start {
                        tally.completed += 1;
                        tally.latency.saturating_record(micros(done_at.saturating_duration_since(sent_at)));
                        *tally.by_outcome.entry(outcome).or_default() += 1;
                    }
                    // A request that completes at once never yields: let other tasks run too.
                    tokio::task::coop::consume_budget().await;
                }
                tally
            })
        })
        .collect();

    let mut result = ClosedLoopResult {
        completed: 0,
        rate_per_s: 0.0,
        by_outcome: BTreeMap::new(),
        latency: new_latency_histogram(),
    };
    for worker in workers {
        match worker.await {
            Ok(tally) => {
                result.completed += tally.completed;
                for (outcome, count) in tally.by_outcome {
                    *result.by_outcome.entry(outcome).or_default() += count;
                }
                // Same bounds on both sides: `add` can only fail on a count overflow.
                let _ = result.latency.add(&tally.latency);
            }
            Err(_) => *result.by_outcome.entry(OUTCOME_CANCELLED.to_owned()).or_default() += 1,
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_start).as_secs_f64();
    result.rate_per_s = if elapsed > 0.0 { result.completed as f64 / elapsed } else { 0.0 };
    result
}

#[cfg(test)]
/// The tests run on tokio's paused clock where they can: time moves only when every task
/// waits, so the schedules and latencies they check are exact whatever the machine's load.
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;

    fn ok() -> Outcome {
        "ok".to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn achieved_rate_is_close_to_the_planned_rate_and_warmup_is_excluded() {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let seen_in_requests = Arc::clone(&seen);
        let config = OpenLoopConfig {
            rate_per_s: 500.0,
            duration: Duration::from_millis(600),
            lanes: 64,
            max_lag: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
        };
        let result = run(&config, move |index| {
            seen_in_requests.lock().expect("lock").insert(index);
            async { ok() }
        })
        .await;

        // 300 requests planned in 600 ms, the first 100 of them during the warmup.
        let seen = seen.lock().expect("lock");
        assert!((299..=301).contains(&seen.len()), "sent {}", seen.len());
        assert_eq!(seen.iter().copied().collect::<Vec<_>>(), (0..seen.len() as u64).collect::<Vec<_>>());
        assert!((199..=201).contains(&result.planned), "planned {}", result.planned);
        assert_eq!(result.dropped, 0);
        assert_eq!(result.completed, result.planned);
        assert_eq!(result.all.len(), result.completed);
        assert_eq!(result.by_outcome.keys().collect::<Vec<_>>(), ["ok"]);
        assert!(
            (250.0..=550.0).contains(&result.achieved_rate_per_s),
            "achieved {} req/s for 500 planned",
            result.achieved_rate_per_s
        );
        let timeline_total: u64 = result.timeline.iter().map(|point| point.completed).sum();
        assert_eq!(timeline_total, result.completed);
        assert_eq!(result.timeline.first().map(|point| point.second), Some(0));
    }

    /// A server that serves one request at a time (20 ms each) offered 100 req/s: requests queue
    /// up behind each other. Timed from their planned send times, the queueing shows (p99 far above
    /// the 20 ms service time); a closed loop on the same server only ever sees the 20 ms.
    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_the_planned_time_so_queueing_is_not_omitted() {
        let server = Arc::new(tokio::sync::Mutex::new(()));
        let serve = move |_index: u64| {
            let server = Arc::clone(&server);
            async move {
                let _busy = server.lock().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                ok()
            }
        };

        let config = OpenLoopConfig {
            rate_per_s: 100.0,
            duration: Duration::from_millis(400),
            lanes: 1_000,
            max_lag: Duration::from_secs(10),
            warmup: Duration::ZERO,
        };
        let open = run(&config, serve.clone()).await;
        assert_eq!(open.planned, 40);
        assert_eq!(open.completed, 40);
        assert_eq!(open.dropped, 0);
        // Request k is planned at 10k ms and served at the earliest at 20(k + 1) ms: the last ones
        // wait ~400 ms.
        let p99_ms = open.all.value_at_quantile(0.99) / 1000;
        assert!(p99_ms >= 300, "open-loop p99 {p99_ms} ms should include the queueing");
        assert!(open.all.min() >= 19_000, "min {} µs below the service time", open.all.min());

        let closed = closed_loop(1, Duration::from_millis(300), Duration::ZERO, serve).await;
        assert!(closed.completed >= 3, "closed loop completed {}", closed.completed);
        assert_eq!(closed.latency.len(), closed.completed);
        assert_eq!(closed.by_outcome.get("ok"), Some(&closed.completed));
        let closed_p50_ms = closed.latency.value_at_quantile(0.5) / 1000;
        assert!(closed_p50_ms < 150, "closed-loop p50 {closed_p50_ms} ms");
        assert!(closed.rate_per_s > 0.0 && closed.rate_per_s <= 55.0, "closed-loop rate {}", closed.rate_per_s);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_a_lane_reaches_too_late_are_dropped_and_accounted_for() {
        let config = OpenLoopConfig {
            rate_per_s: 100.0,
            duration: Duration::from_millis(500),
            lanes: 2,
            max_lag: Duration::from_millis(100),
            warmup: Duration::ZERO,
        };
        let result = run(&config, |index| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if index % 2 == 0 { "even".to_owned() } else { "odd".to_owned() }
        })
        .await;

        assert_eq!(result.planned, 50);
        assert_eq!(result.completed + result.dropped, result.planned);
        // Two lanes of 50 ms each serve at most ~2 per 50 ms: most of the 100 req/s is dropped.
        assert!(result.dropped >= 20, "dropped {}", result.dropped);
        assert!(result.completed >= 4, "completed {}", result.completed);
        assert_eq!(result.all.len(), result.completed);
        let per_outcome: u64 = result.by_outcome.values().map(Histogram::len).sum();
        assert_eq!(per_outcome, result.completed);
        let timeline_total: u64 = result.timeline.iter().map(|point| point.completed).sum();
        assert_eq!(timeline_total, result.completed);
        // Every sent request took its 50 ms, and none was sent more than `max_lag` late.
        assert!(result.all.min() >= 49_000, "min {} µs", result.all.min());
        assert!(result.max_send_lag_us <= 100_000, "sent {} µs late", result.max_send_lag_us);
        assert!(result.all.max() < 400_000, "max {} µs", result.all.max());
        assert!(result.achieved_rate_per_s < 70.0, "achieved {}", result.achieved_rate_per_s);
    }

    /// One slow request holds up its own lane only: the requests planned behind it on that lane
    /// wait (and their latency shows it), the other lanes keep the schedule.
    #[tokio::test(start_paused = true)]
    async fn a_slow_request_delays_its_own_lane_only() {
        let config = OpenLoopConfig {
            rate_per_s: 200.0,
            duration: Duration::from_millis(400),
            lanes: 4,
            max_lag: Duration::from_secs(5),
            warmup: Duration::ZERO,
        };
        let result = run(&config, |index| async move {
            if index == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ok()
        })
        .await;
        assert_eq!((result.planned, result.completed, result.dropped), (80, 80, 0));
        // Lane 0 has 20 requests, 10 of them planned during the 200 ms stall: 10 + 1 of 80 are slow.
        let p80_ms = result.all.value_at_quantile(0.8) / 1000;
        assert!(p80_ms < 20, "p80 {p80_ms} ms: the other lanes were held up too");
        assert!(result.all.max() >= 199_000, "max {} µs", result.all.max());
        assert!(result.max_send_lag_us >= 150_000, "send lag {} µs", result.max_send_lag_us);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_request_is_recorded_not_lost() {
        let config = OpenLoopConfig {
            rate_per_s: 1000.0,
            duration: Duration::from_millis(20),
            lanes: 8,
            max_lag: Duration::from_secs(1),
            warmup: Duration::ZERO,
        };
        let result = run(&config, |index| async move {
            assert!(index != 3, "request 3 fails");
            ok()
        })
        .await;
        assert_eq!(result.planned, 20);
        assert_eq!(result.completed, 20);
        assert_eq!(result.by_outcome.get(OUTCOME_PANIC).map(Histogram::len), Some(1));
        assert_eq!(result.by_outcome.get("ok").map(Histogram::len), Some(19));
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_rate_sends_nothing() {
        let config = OpenLoopConfig {
            rate_per_s: 0.0,
            duration: Duration::from_secs(1),
            lanes: 1,
            max_lag: Duration::from_secs(1),
            warmup: Duration::ZERO,
        };
        let result = run(&config, |_| async { ok() }).await;
        assert_eq!((result.planned, result.completed, result.dropped), (0, 0, 0));
        assert!(result.timeline.is_empty());

        // A vanishing rate plans request 0 only: the next one is centuries away.
        let config = OpenLoopConfig { rate_per_s: 1e-300, ..config };
        let result = run(&config, |_| async { ok() }).await;
        assert_eq!((result.planned, result.completed, result.dropped), (1, 1, 0));
    }

    #[tokio::test]
    async fn closed_loop_with_instant_requests_does_not_starve_the_runtime() {
        let result = closed_loop(4, Duration::from_millis(100), Duration::from_millis(20), |index| async move {
            if index % 3 == 0 { "a".to_owned() } else { "b".to_owned() }
        })
        .await;
        // Real time, and no count of completions (it depends on the machine's load): the
        // failure this guards against is a worker that never yields, and then this run
        // never returns.
        assert_eq!(result.by_outcome.values().sum::<u64>(), result.completed);
    }

    #[test]
    fn latencies_beyond_the_histogram_range_are_clamped() {
        let mut histogram = new_latency_histogram();
        histogram.saturating_record(u64::MAX);
        assert!(histogram.max() >= LATENCY_HIGH_US);
        assert_eq!(micros(Duration::MAX), u64::MAX);
    }
}
