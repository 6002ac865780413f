//! Group commit of order writes: the winning purchases that reach MongoDB at about the
//! same time share one unordered `insert_many`, each getting its own document's outcome.
//!
//! No timer and no background task. An order arriving while fewer than
//! `order_batches_in_flight` group commits are in flight is written at once, alone or
//! with whatever is queued (an idle store adds no wait). Otherwise it queues. When a
//! group commit ends, however it ends (answered, failed, or its request stopped mid-write),
//! its turn passes to the oldest queued order's request, which writes that order with up
//! to `order_batch_max - 1` queued behind it. So batches grow exactly as fast as MongoDB
//! falls behind, and the longest an order waits in the queue is bounded by the purchase
//! path's `order_write_timeout_ms`, past which it answers 202 pending as a slow insert does.
//!
//! Outcomes are those of a single insert: stored; a duplicate key on that document alone
//! (resolved by the caller, `orders::persist`, as before); or unknown, when the
//! `insert_many` failed as a whole or its leader's request stopped before the answer
//! (every member then answers 202 pending and the reconciler finishes them). An order
//! whose request gave up while still queued is left out (that request answered 202
//! pending; the reconciler persists its reservation, as for a request that died before
//! its insert); one whose request gives up during the write is written all the same, as
//! a single insert abandoned in flight may be.
//!
//! With `order_batch_max` 1 there is no group commit: each order is its own insert.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::db::{Db, DbError, DbResult};
use crate::metrics::Metrics;
use crate::sale::orders::OrderDoc;

/// Why a queued order has no outcome of its own.
#[derive(Debug, thiserror::Error)]
pub enum GroupCommitError {
    /// The group commit's `insert_many` failed as a whole: every member may or may not be stored.
    #[error("the group commit failed as a whole: {0}")]
    Failed(String),
    /// The request that was writing the group commit stopped before MongoDB answered
    /// (its write timed out, or its instance stopped).
    #[error("the group commit was abandoned before MongoDB answered")]
    Abandoned,
}

/// What a queued order's request is told.
enum Turn {
    /// Its document's outcome.
    Done(DbResult<()>),
    /// It writes the next group commit, starting with its own order (handed back).
    Lead(Box<OrderDoc>),
}

/// An order waiting for a group commit.
struct Queued {
    order: OrderDoc,
    reply: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Queued>,
    in_flight: u32,
}

/// The group commits of one server instance.
pub struct OrderWrites {
    queue: Mutex<Queue>,
    batch_max: usize,
    in_flight_max: u32,
    /// The deliberately broken variant this instance runs (simulator builds only).
    #[cfg(feature = "broken")]
    broken: Option<crate::broken::Broken>,
}

impl std::fmt::Debug for OrderWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.lock();
        f.debug_struct("OrderWrites")
            .field("waiting", &queue.waiting.len())
            .field("in_flight", &queue.in_flight)
            .field("batch_max", &self.batch_max)
            .field("in_flight_max", &self.in_flight_max)
            .finish()
    }
}

impl OrderWrites {
    /// The group commits `config` asks for: at most `order_batch_max` orders each, at
    /// most `order_batches_in_flight` at once.
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            queue: Mutex::default(),
            batch_max: usize::try_from(config.order_batch_max.max(1)).unwrap_or(usize::MAX),
            in_flight_max: config.order_batches_in_flight.max(1),
            #[cfg(feature = "broken")]
            broken: config.broken,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Inserts `order`, in a group commit with others when they arrive together; its
    /// outcome as [`Db::insert_order`] would give it.
    pub async fn insert(&self, db: &Db, metrics: &Metrics, order: &OrderDoc) -> DbResult<()> {
        if self.batch_max == 1 {
            return db.insert_order(order).await;
        }
        let receiver = {
            let mut queue = self.lock();
            if queue.in_flight < self.in_flight_max {
                queue.in_flight += 1;
                None
            } else {
                let (reply, receiver) = oneshot::channel();
                queue.waiting.push_back(Queued { order: order.clone(), reply });
                Some(receiver)
            }
        };
        let Some(receiver) = receiver else {
            return self.lead(db, metrics, order.clone()).await;
        };
        let mut waiting = Waiting { receiver, writes: self };
        let turn = (&mut waiting.receiver).await;
        drop(waiting);
        match turn {
            Ok(Turn::Done(outcome)) => outcome,
            // Polled at once: its turn is held from the first poll on.
            Ok(Turn::Lead(order)) => self.lead(db, metrics, *order).await,
            Err(_) => Err(DbError::Unavailable(Box::new(GroupCommitError::Abandoned))),
        }
    }

    /// Writes `own` and up to `batch_max - 1` queued orders in one `insert_many`, tells
    /// each member its outcome and returns `own`'s. Holds one turn, passed on when it ends.
    async fn lead(&self, db: &Db, metrics: &Metrics, own: OrderDoc) -> DbResult<()> {
        let _turn = HeldTurn { writes: self };
        let members: Vec<Queued> = {
            let mut queue = self.lock();
            // Orders whose request gave up while queued are not written here: each
            // answered 202 pending, and the reconciler persists its reservation.
            queue.waiting.retain(|queued| !queued.reply.is_closed());
            let take = queue.waiting.len().min(self.batch_max - 1);
            queue.waiting.drain(..take).collect()
        };
        let mut documents = Vec::with_capacity(members.len() + 1);
        documents.push(own);
        documents.extend(members.iter().map(|member| member.order.clone()));
        metrics.order_group_commits.inc();
        metrics.orders_group_committed.inc_by(documents.len() as u64);
        match db.insert_orders(&documents).await {
            Ok(outcomes) if outcomes.len() == documents.len() => {
                let mut outcomes = outcomes.into_iter();
                let own = outcomes.next().unwrap_or(Ok(()));
                for (member, outcome) in members.into_iter().zip(outcomes) {
                    #[cfg(feature = "broken")]
                    let outcome = crate::broken::group_commit_outcome(self.broken, outcome);
                    // A member whose request gave up meanwhile no longer listens; its order stands.
                    let _ = member.reply.send(Turn::Done(outcome));
                }
                own
            }
            Ok(outcomes) => {
                let err = format!("{} outcomes for {} documents", outcomes.len(), documents.len());
                tell_failed(members, &err);
                Err(DbError::Other(Box::new(GroupCommitError::Failed(err))))
            }
            Err(err) => {
                #[cfg(feature = "broken")]
                if self.broken == Some(crate::broken::Broken::GroupCommitAcksFailures) {
                    for member in members {
                        let _ = member.reply.send(Turn::Done(Ok(())));
                    }
                    return Err(err);
                }
                tell_failed(members, &err.to_string());
                Err(err)
            }
        }
    }

    /// Ends a turn: the oldest queued order whose request still waits leads next, or
    /// the turn goes back.
    fn pass_turn(&self) {
        let mut queue = self.lock();
        while let Some(next) = queue.waiting.pop_front() {
            if next.reply.send(Turn::Lead(Box::new(next.order))).is_ok() {
                return;
            }
        }
        queue.in_flight = queue.in_flight.saturating_sub(1);
    }
}

/// Failure of the whole group commit, told to every member (each answers 202 pending).
fn tell_failed(members: Vec<Queued>, err: &str) {
    for member in members {
        let cause = GroupCommitError::Failed(err.to_owned());
        let _ = member.reply.send(Turn::Done(Err(DbError::Unavailable(Box::new(cause)))));
    }
}

/// A queued order's wait. If its request gives up just as its turn to lead was sent,
/// the turn is passed on rather than lost.
struct Waiting<'a> {
    receiver: oneshot::Receiver<Turn>,
    writes: &'a OrderWrites,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.receiver.close();
        if let Ok(Turn::Lead(_)) = self.receiver.try_recv() {
            self.writes.pass_turn();
        }
    }
}

/// One turn of writing a group commit; passed on when dropped, also when the request
/// holding it stops mid-write (its members then hear nothing and answer 202 pending).
struct HeldTurn<'a> {
    writes: &'a OrderWrites,
}

impl Drop for HeldTurn<'_> {
    fn drop(&mut self) {
        self.writes.pass_turn();
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::db::memory::MemoryDb;
    use crate::db::records::{OrderStatus, UnitField};

    fn order(id: &str, unit: i64) -> OrderDoc {
        OrderDoc {
            id: id.to_owned(),
            product_id: "p".to_owned(),
            user_id: format!("u-{id}"),
            unit: UnitField::Unit(unit),
            buyer_slot: format!("u-{id}"),
            status: OrderStatus::Confirmed,
            created_at_ms: 1,
        }
    }

    struct Fixture {
        writes: Arc<OrderWrites>,
        db: Arc<Db>,
        model: MemoryDb,
        metrics: Arc<Metrics>,
    }

    async fn fixture(batch_max: u32, in_flight: u32) -> Fixture {
        let mut config = Config::for_local("redis://r", "mongodb://m", "db", "p");
        config.order_batch_max = batch_max;
        config.order_batches_in_flight = in_flight;
        let model = MemoryDb::new();
        model.ensure_indexes().await.expect("indexes");
        Fixture {
            writes: Arc::new(OrderWrites::new(&config)),
            db: Arc::new(Db::Memory(model.clone())),
            model,
            metrics: Arc::new(Metrics::new()),
        }
    }

    impl Fixture {
        fn spawn(&self, order: OrderDoc) -> tokio::task::JoinHandle<DbResult<()>> {
            let (writes, db, metrics) = (self.writes.clone(), self.db.clone(), self.metrics.clone());
            tokio::spawn(async move { writes.insert(&db, &metrics, &order).await })
        }

        async fn stored(&self) -> Vec<String> {
            self.model.dump().await.expect("dump").orders.into_iter().map(|o| o.id).collect()
        }

        fn commits(&self) -> (u64, u64) {
            (self.metrics.order_group_commits.get(), self.metrics.orders_group_committed.get())
        }

        fn idle(&self) -> bool {
            let queue = self.writes.lock();
            queue.in_flight == 0 && queue.waiting.is_empty()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_on_an_idle_store_is_written_at_once_alone() {
        let f = fixture(64, 4).await;
        let started = tokio::time::Instant::now();
        f.writes.insert(&f.db, &f.metrics, &order("o1", 1)).await.expect("stored");
        assert_eq!(started.elapsed(), Duration::ZERO, "no added wait on an idle store");
        assert_eq!(f.commits(), (1, 1));
        assert_eq!(f.stored().await, ["o1"]);
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn orders_arriving_while_the_store_is_busy_share_one_insert_and_each_gets_its_outcome() {
        let f = fixture(64, 1).await;
        f.writes.insert(&f.db, &f.metrics, &order("taken", 5)).await.expect("stored");
        f.model.make_slow(Duration::from_millis(50));
        // The first leads alone; the nine behind it queue and go in the next insert,
        // one of them on a unit already taken.
        let first = f.spawn(order("o0", 0));
        tokio::task::yield_now().await;
        let rest: Vec<_> = (1..10).map(|i| f.spawn(order(&format!("o{i}"), i))).collect();
        assert!(first.await.expect("task").is_ok());
        let mut outcomes = Vec::new();
        for task in rest {
            outcomes.push(task.await.expect("task"));
        }
        for (i, outcome) in outcomes.iter().enumerate() {
            let unit = i + 1;
            if unit == 5 {
                assert!(matches!(outcome, Err(DbError::DuplicateKey { .. })), "unit 5: {outcome:?}");
            } else {
                assert!(outcome.is_ok(), "unit {unit}: {outcome:?}");
            }
        }
        assert_eq!(f.commits(), (3, 11), "one alone, then nine together");
        assert_eq!(f.stored().await.len(), 10);
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_fails_as_a_whole_fails_every_member_and_the_next_one_goes_through() {
        let f = fixture(64, 1).await;
        f.model.make_slow(Duration::from_millis(50));
        let first = f.spawn(order("o0", 0));
        tokio::task::yield_now().await;
        let rest: Vec<_> = (1..4).map(|i| f.spawn(order(&format!("o{i}"), i))).collect();
        tokio::task::yield_now().await;
        f.model.make_unavailable();
        assert!(first.await.expect("task").is_err(), "its store failed");
        for task in rest {
            let outcome = task.await.expect("task");
            assert!(matches!(outcome, Err(DbError::Unavailable(_))), "{outcome:?}");
        }
        f.model.heal();
        f.writes.insert(&f.db, &f.metrics, &order("o9", 9)).await.expect("stored once healed");
        assert_eq!(f.stored().await, ["o9"]);
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_stops_mid_write_leaves_its_members_unknown_and_passes_its_turn() {
        let f = fixture(64, 1).await;
        f.model.make_slow(Duration::from_millis(500));
        let leader = f.spawn(order("o0", 0));
        tokio::task::yield_now().await;
        let member = f.spawn(order("o1", 1));
        tokio::task::yield_now().await;
        let behind = f.spawn(order("o2", 2));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The leader is writing o0 alone; o1 and o2 queue. It stops mid-write: o1 leads next
        // (with o2), and both are stored.
        leader.abort();
        assert!(leader.await.is_err(), "aborted");
        f.model.heal();
        assert!(member.await.expect("task").is_ok());
        assert!(behind.await.expect("task").is_ok());
        assert_eq!(f.stored().await, ["o1", "o2"], "the aborted write never reached the store");
        assert!(f.idle(), "the turn was passed on and given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_whose_request_gave_up_while_queued_is_left_out_and_no_turn_is_lost() {
        let f = fixture(64, 1).await;
        f.model.make_slow(Duration::from_millis(100));
        let leader = f.spawn(order("o0", 0));
        tokio::task::yield_now().await;
        let gave_up = f.spawn(order("o1", 1));
        tokio::task::yield_now().await;
        gave_up.abort();
        assert!(gave_up.await.is_err(), "aborted");
        assert!(leader.await.expect("task").is_ok());
        assert!(f.idle(), "nobody waits, nothing is in flight");
        f.writes.insert(&f.db, &f.metrics, &order("o2", 2)).await.expect("stored");
        assert_eq!(f.stored().await, ["o0", "o2"], "the abandoned order is the reconciler's");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_max_of_one_writes_each_order_on_its_own() {
        let f = fixture(1, 1).await;
        f.model.make_slow(Duration::from_millis(50));
        let tasks: Vec<_> = (0..5).map(|i| f.spawn(order(&format!("o{i}"), i))).collect();
        let started = tokio::time::Instant::now();
        for task in tasks {
            task.await.expect("task").expect("stored");
        }
        assert_eq!(started.elapsed(), Duration::from_millis(50), "five single inserts at once, none queued");
        assert_eq!(f.commits(), (0, 0));
    }
}
