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
//!
//! Once MongoDB has answered, the turn passes on and the leader confirms the stored
//! orders' reservations in Redis, one `confirm.lua` call per product for the whole batch
//! (which also publishes each order's completion), before it tells the members. A member
//! learns whether its order was confirmed with it ([`Stored`]); if the confirmation
//! failed, or the leader stopped before it was told, the order is stored and unconfirmed,
//! and the reconciler confirms it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::db::{DbError, DbResult};
use crate::events::{EventType, SaleEvent};
use crate::redis::scripts;
use crate::sale::orders::OrderDoc;
use crate::state::App;

/// A stored order, and whether the group commit also ran its confirmation in Redis
/// (`confirm.lua`: its reservation confirmed, if Redis still holds one, and its completion
/// published). When not (Redis failed, or the leader stopped first), the caller confirms
/// it or leaves it to the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub confirmed: bool,
}

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
    Done(DbResult<Stored>),
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

    /// Inserts `order`, in a group commit with others when they arrive together, and
    /// confirms its reservation; its outcome as [`crate::db::Db::insert_order`] would give it.
    pub async fn insert(&self, app: &App, order: &OrderDoc) -> DbResult<Stored> {
        if self.batch_max == 1 {
            app.db.insert_order(order).await?;
            let confirmed = confirm_stored(app, std::slice::from_ref(order), &[true]).await;
            return Ok(Stored { confirmed: confirmed.first().copied().unwrap_or(false) });
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
            return self.lead(app, order.clone()).await;
        };
        let mut waiting = Waiting { receiver, writes: self };
        let turn = (&mut waiting.receiver).await;
        drop(waiting);
        match turn {
            Ok(Turn::Done(outcome)) => outcome,
            // Polled at once: its turn is held from the first poll on.
            Ok(Turn::Lead(order)) => self.lead(app, *order).await,
            Err(_) => Err(DbError::Unavailable(Box::new(GroupCommitError::Abandoned))),
        }
    }

    /// Writes `own` and up to `batch_max - 1` queued orders in one `insert_many`, passes
    /// the turn on, confirms the stored ones in Redis, tells each member its outcome and
    /// returns `own`'s.
    async fn lead(&self, app: &App, own: OrderDoc) -> DbResult<Stored> {
        let turn = HeldTurn { writes: self };
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
        app.metrics.order_group_commits.inc();
        app.metrics.orders_group_committed.inc_by(documents.len() as u64);
        let written = app.db.insert_orders(&documents).await;
        // MongoDB has answered: the next group commit need not wait for the confirmations.
        drop(turn);
        let outcomes = match written {
            Ok(outcomes) if outcomes.len() == documents.len() => outcomes,
            Ok(outcomes) => {
                let err = format!("{} outcomes for {} documents", outcomes.len(), documents.len());
                tell_failed(members, &err);
                return Err(DbError::Other(Box::new(GroupCommitError::Failed(err))));
            }
            Err(err) => {
                #[cfg(feature = "broken")]
                if self.broken == Some(crate::broken::Broken::GroupCommitAcksFailures) {
                    for member in members {
                        let _ = member.reply.send(Turn::Done(Ok(Stored { confirmed: false })));
                    }
                    return Err(err);
                }
                tell_failed(members, &err.to_string());
                return Err(err);
            }
        };
        let mut outcomes = outcomes.into_iter();
        let own = outcomes.next().unwrap_or(Ok(()));
        #[allow(unused_mut)]
        let mut members: Vec<(Queued, DbResult<()>)> = members.into_iter().zip(outcomes).collect();
        #[cfg(feature = "broken")]
        for (_, outcome) in &mut members {
            *outcome = crate::broken::group_commit_outcome(self.broken, std::mem::replace(outcome, Ok(())));
        }
        // Should this request stop during the confirmations, its members still hear their
        // orders' outcomes, unconfirmed.
        let mut unanswered = Unanswered(members);
        let stored: Vec<bool> =
            std::iter::once(own.is_ok()).chain(unanswered.0.iter().map(|(_, outcome)| outcome.is_ok())).collect();
        let confirmed = confirm_stored(app, &documents, &stored).await;
        let mut confirmed = confirmed.into_iter();
        let own_confirmed = confirmed.next().unwrap_or(false);
        for ((member, outcome), confirmed) in std::mem::take(&mut unanswered.0).into_iter().zip(confirmed) {
            // A member whose request gave up meanwhile no longer listens; its order stands.
            let _ = member.reply.send(Turn::Done(outcome.map(|()| Stored { confirmed })));
        }
        own.map(|()| Stored { confirmed: own_confirmed })
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

/// Confirms in Redis the reservations of the `documents` that were `stored`, one
/// call per product, publishing each one's completion; per document, whether its call
/// ran (never for one not stored, nor when Redis failed: the reconciler confirms it).
async fn confirm_stored(app: &App, documents: &[OrderDoc], stored: &[bool]) -> Vec<bool> {
    let mut confirmed = vec![false; documents.len()];
    let mut by_product: BTreeMap<Uuid, Vec<(usize, Uuid)>> = BTreeMap::new();
    for (index, (document, stored)) in documents.iter().zip(stored).enumerate() {
        let ids = (Uuid::parse_str(&document.product_id), Uuid::parse_str(&document.id));
        if let (true, Ok(product_id), Ok(order_id)) = (*stored, ids.0, ids.1) {
            by_product.entry(product_id).or_default().push((index, order_id));
        }
    }
    let channel = app.keys.events_channel();
    for (product_id, orders) in by_product {
        let calls: Vec<(Uuid, Option<String>)> = orders
            .iter()
            .map(|(_, order_id)| {
                let event = SaleEvent {
                    event_type: EventType::PurchaseCompleted,
                    product_id,
                    remaining: None,
                    order_id: Some(*order_id),
                };
                (*order_id, serde_json::to_string(&event).ok())
            })
            .collect();
        let mut conn = app.redis.clone();
        match scripts::confirm_many(&mut conn, &app.keys.sale(product_id), &channel, &calls).await {
            // Ran for each of them: a reservation Redis no longer holds (released, or lost
            // with Redis's data) has nothing to confirm, and confirming again would not help.
            Ok(_) => {
                for (index, _) in &orders {
                    confirmed[*index] = true;
                }
            }
            // MongoDB has the orders; the reconciler confirms them in Redis later.
            Err(err) => tracing::warn!(error = %err, %product_id, "confirming a group commit in Redis failed"),
        }
    }
    confirmed
}

/// Members of a group commit not yet told their outcome: told it, unconfirmed, if the
/// leader stops before telling them.
struct Unanswered(Vec<(Queued, DbResult<()>)>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        for (member, outcome) in self.0.drain(..) {
            let _ = member.reply.send(Turn::Done(outcome.map(|()| Stored { confirmed: false })));
        }
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
    use std::time::Duration;

    use super::*;
    use crate::clock::Ids;
    use crate::config::Config;
    use crate::db::Db;
    use crate::db::memory::MemoryDb;
    use crate::db::records::{OrderStatus, UnitField};
    use crate::state::AppState;

    /// Product of every order here.
    const PRODUCT: Uuid = Uuid::from_u128(0x5a1e);

    fn order_id(id: &str) -> Uuid {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, id.as_bytes())
    }

    /// The stored ids `ids` name, as [`Fixture::stored`] lists them.
    fn ids(ids: &[&str]) -> Vec<String> {
        let mut ids: Vec<String> = ids.iter().map(|id| order_id(id).to_string()).collect();
        ids.sort();
        ids
    }

    fn order(id: &str, unit: i64) -> OrderDoc {
        OrderDoc {
            id: order_id(id).to_string(),
            product_id: PRODUCT.to_string(),
            user_id: format!("u-{id}"),
            unit: UnitField::Unit(unit),
            buyer_slot: format!("u-{id}"),
            status: OrderStatus::Confirmed,
            created_at_ms: 1,
        }
    }

    struct Fixture {
        app: AppState,
        model: MemoryDb,
    }

    /// An instance on stores of its own, its group commits at most `batch_max` orders,
    /// at most `in_flight` at once.
    async fn fixture(batch_max: u32, in_flight: u32) -> Fixture {
        let url = format!("memory://order-writes-{}", Uuid::new_v4().simple());
        let mut config = Config::for_local(&url, &url, "db", "p");
        config.order_batch_max = batch_max;
        config.order_batches_in_flight = in_flight;
        let app = crate::startup::build_state(config, Ids::system()).await.expect("an instance on memory stores");
        let Db::Memory(model) = &app.db else { panic!("a memory:// store is the model") };
        let model = model.clone();
        Fixture { app, model }
    }

    /// Far longer, in the paused clock's time, than any write here takes: a write still
    /// waiting then waits for a turn nobody will pass (lost), and its test fails instead of
    /// hanging (with no timer left, a paused clock never advances).
    const STUCK: Duration = Duration::from_secs(600);

    async fn write(app: &App, order: &OrderDoc) -> DbResult<Stored> {
        tokio::time::timeout(STUCK, app.order_writes.insert(app, order))
            .await
            .unwrap_or_else(|_| panic!("the write of {} never ended: a group-commit turn was lost", order.id))
    }

    impl Fixture {
        fn spawn(&self, order: OrderDoc) -> tokio::task::JoinHandle<DbResult<Stored>> {
            let app = self.app.clone();
            tokio::spawn(async move { write(&app, &order).await })
        }

        async fn insert(&self, order: &OrderDoc) -> DbResult<Stored> {
            write(&self.app, order).await
        }

        async fn stored(&self) -> Vec<String> {
            let mut ids: Vec<String> =
                self.model.dump().await.expect("dump").orders.into_iter().map(|o| o.id).collect();
            ids.sort();
            ids
        }

        fn commits(&self) -> (u64, u64) {
            (self.app.metrics.order_group_commits.get(), self.app.metrics.orders_group_committed.get())
        }

        fn idle(&self) -> bool {
            let queue = self.app.order_writes.lock();
            queue.in_flight == 0 && queue.waiting.is_empty()
        }

        /// Holds a pending reservation in Redis for `order`, as the purchase script makes it.
        async fn reserve(&self, order: &OrderDoc) {
            let keys = self.app.keys.sale(PRODUCT);
            let unit = order.unit_number().unwrap_or(0);
            let mut conn = self.app.redis.clone();
            let _: () = redis::pipe()
                .cmd("HSET")
                .arg(&keys.orders)
                .arg(&order.id)
                .arg(format!("{}|{unit}|1|R", order.user_id))
                .ignore()
                .cmd("ZADD")
                .arg(&keys.pending)
                .arg(1)
                .arg(&order.id)
                .ignore()
                .query_async(&mut conn)
                .await
                .expect("reservation written");
        }

        /// The reservation's state letter in Redis, and whether it is still pending.
        async fn reservation(&self, order: &OrderDoc) -> (Option<String>, bool) {
            let keys = self.app.keys.sale(PRODUCT);
            let mut conn = self.app.redis.clone();
            let record: Option<String> =
                redis::cmd("HGET").arg(&keys.orders).arg(&order.id).query_async(&mut conn).await.expect("HGET");
            let pending: Option<f64> =
                redis::cmd("ZSCORE").arg(&keys.pending).arg(&order.id).query_async(&mut conn).await.expect("ZSCORE");
            (record.and_then(|r| r.rsplit('|').next().map(str::to_owned)), pending.is_some())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_on_an_idle_store_is_written_at_once_alone() {
        let f = fixture(64, 4).await;
        let started = tokio::time::Instant::now();
        f.insert(&order("o1", 1)).await.expect("stored");
        assert_eq!(started.elapsed(), Duration::ZERO, "no added wait on an idle store");
        assert_eq!(f.commits(), (1, 1));
        assert_eq!(f.stored().await, ids(&["o1"]));
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn orders_arriving_while_the_store_is_busy_share_one_insert_and_each_gets_its_outcome() {
        let f = fixture(64, 1).await;
        f.insert(&order("taken", 5)).await.expect("stored");
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
        f.insert(&order("o9", 9)).await.expect("stored once healed");
        assert_eq!(f.stored().await, ids(&["o9"]));
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
        assert_eq!(f.stored().await, ids(&["o1", "o2"]), "the aborted write never reached the store");
        assert!(f.idle(), "the turn was passed on and given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_whose_request_gave_up_while_queued_is_left_out_and_no_turn_is_lost() {
        let f = fixture(64, 1).await;
        f.model.make_slow(Duration::from_millis(100));
        let leader = f.spawn(order("o0", 0));
        tokio::task::yield_now().await;
        // Queued behind the leader: o1, which leads the next group commit, and o2, whose
        // request gives up while it waits.
        let next = f.spawn(order("o1", 1));
        tokio::task::yield_now().await;
        let gave_up = f.spawn(order("o2", 2));
        tokio::task::yield_now().await;
        gave_up.abort();
        assert!(gave_up.await.is_err(), "aborted");
        assert!(leader.await.expect("task").is_ok());
        assert!(next.await.expect("task").is_ok());
        assert!(f.idle(), "nobody waits, nothing is in flight");
        f.insert(&order("o3", 3)).await.expect("stored");
        assert_eq!(f.stored().await, ids(&["o0", "o1", "o3"]), "the abandoned order is the reconciler's");
        assert_eq!(f.commits(), (3, 3), "o1's group commit left o2 out");
    }

    /// The turn to lead can reach a queued order just as its request stops (sent, not
    /// yet read): the request's wait then passes it on, or no group commit would ever
    /// start again on this instance.
    #[tokio::test(start_paused = true)]
    async fn a_turn_sent_to_a_request_that_stops_before_reading_it_is_passed_on() {
        let f = fixture(64, 1).await;
        let writes = &f.app.order_writes;
        let (reply, receiver) = oneshot::channel();
        {
            let mut queue = writes.lock();
            queue.in_flight = 1;
            queue.waiting.push_back(Queued { order: order("o1", 1), reply });
        }
        let waiting = Waiting { receiver, writes };
        // The group commit in flight ends and hands its turn to o1...
        writes.pass_turn();
        assert!(!f.idle(), "o1 holds the turn");
        // ...whose request stops before reading it.
        drop(waiting);
        assert!(f.idle(), "the turn was given back");
        f.insert(&order("o2", 2)).await.expect("the next order is written");
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_commit_confirms_its_stored_reservations_in_one_call_and_not_the_others() {
        let f = fixture(64, 1).await;
        let taken = order("taken", 5);
        f.insert(&taken).await.expect("stored");
        f.model.make_slow(Duration::from_millis(50));
        let orders: Vec<OrderDoc> = (0..6).map(|i| order(&format!("o{i}"), i)).collect();
        // o0..o3 hold reservations; o4 has none in Redis (lost); o5 takes unit 5, already sold.
        for held in &orders[..4] {
            f.reserve(held).await;
        }
        f.reserve(&orders[5]).await;
        let first = f.spawn(orders[0].clone());
        tokio::task::yield_now().await;
        let rest: Vec<_> = orders[1..].iter().map(|o| f.spawn(o.clone())).collect();
        assert_eq!(first.await.expect("task").expect("stored"), Stored { confirmed: true });
        let mut outcomes = Vec::new();
        for task in rest {
            outcomes.push(task.await.expect("task"));
        }
        for outcome in &outcomes[..3] {
            assert_eq!(outcome.as_ref().expect("stored"), &Stored { confirmed: true });
        }
        assert_eq!(outcomes[3].as_ref().expect("stored"), &Stored { confirmed: true }, "its confirmation ran");
        assert_eq!(f.reservation(&orders[4]).await, (None, false), "and found no reservation to confirm");
        assert!(matches!(outcomes[4], Err(DbError::DuplicateKey { .. })), "{:?}", outcomes[4]);
        for held in &orders[..4] {
            assert_eq!(f.reservation(held).await, (Some("C".to_owned()), false), "confirmed, no longer pending");
        }
        assert_eq!(f.reservation(&orders[5]).await, (Some("R".to_owned()), true), "its insert failed: untouched");
        assert_eq!(f.commits(), (3, 7));
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_own_insert_failed_leaves_its_reservation_unconfirmed() {
        let f = fixture(64, 1).await;
        f.insert(&order("taken", 5)).await.expect("stored");
        f.model.make_slow(Duration::from_millis(50));
        // The leader takes unit 5, already sold; its member's order is new.
        let (doomed, fine) = (order("o5", 5), order("o1", 1));
        f.reserve(&doomed).await;
        f.reserve(&fine).await;
        let leader = f.spawn(doomed.clone());
        tokio::task::yield_now().await;
        let member = f.spawn(fine.clone());
        let led = leader.await.expect("task");
        assert!(matches!(led, Err(DbError::DuplicateKey { .. })), "{led:?}");
        assert_eq!(member.await.expect("task").expect("stored"), Stored { confirmed: true });
        assert_eq!(f.reservation(&doomed).await, (Some("R".to_owned()), true), "its insert failed: untouched");
        assert_eq!(f.reservation(&fine).await, (Some("C".to_owned()), false), "confirmed, no longer pending");
        assert!(f.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_commit_carries_at_most_batch_max_orders() {
        let f = fixture(3, 1).await;
        f.model.make_slow(Duration::from_millis(50));
        let leader = f.spawn(order("o0", 0));
        tokio::task::yield_now().await;
        // Seven queue behind the first: they go three, three and one.
        let rest: Vec<_> = (1..8).map(|i| f.spawn(order(&format!("o{i}"), i))).collect();
        leader.await.expect("task").expect("stored");
        for task in rest {
            task.await.expect("task").expect("stored");
        }
        assert_eq!(f.commits(), (4, 8), "1, then 3, 3 and 1: never more than batch_max");
        assert!(f.idle());
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
