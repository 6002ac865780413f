//! The invariant checker: linear-time checks written for this domain (no generic
//! linearizability search), run on the history of a run and the final state of Redis
//! and MongoDB read after every fault healed and the reconciler drained.
//!
//! Each invariant of `architecture.md` gives one [`Verdict`]: held or violated, how many
//! items it checked, and every violation with the buyers and product it concerns. The
//! self-checks ([`SelfCheck`]) fail a run that did not do what it claims (never sold
//! out, never retried after a timeout, never replayed a key, a planned fault that never
//! fired, a reconciler that did not drain).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use uuid::Uuid;

use crate::history::{FaultPhase, History, Op, OpKind, Outcome};
use crate::plan::{Backend, Fault, FaultMix, Plan, ProductChange};

/// The invariants of `architecture.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// 1. Live orders per product never exceed the stock made available.
    NoOversell,
    /// 2. Stock never negative, in Redis or wherever it is reported.
    NonNegativeStock,
    /// 3. No user holds two live orders of a one-per-user product, and `already-purchased`
    ///    refuses only a buyer who may hold an order of it.
    OnePerUser,
    /// 4. Every success for one (user, key) names the same, derived order; a key reused
    ///    on another product never buys; a retry of a key that bought gets its order back.
    Idempotency,
    /// 5. Every 201, and every 202 once reconciled, has its MongoDB document.
    NoLostOrder,
    /// 6. Every order in MongoDB was requested by some buyer, and not only refused.
    NoPhantom,
    /// 7. Free units + live orders = stock; no sold-out answer while units were left.
    Conservation,
    /// 8. Every `remaining` a buyer saw is one the history allows: no more than the stock
    ///    less the orders confirmed before the read began, no less than the stock less
    ///    every key that may hold a unit by the time it ended.
    StockSeen,
    /// 9. An order an administrator released stays released: no live document at the
    ///    end, and no request of its key after the release answered a fresh order or
    ///    `already-purchased` (a stored answer replayed is the key's old answer).
    ReleasedStaysReleased,
    /// 10. The sale's window and the administrator's changes hold: no order before the
    ///     sale opened and no `sale-not-started` after; from a change's answer on, no
    ///     order taken while the sale was closed or after the product was deleted, no
    ///     `sale-ended` while it was open, and a deleted product's sale state gone at the
    ///     end.
    SaleRules,
}

impl Invariant {
    pub const ALL: [Invariant; 10] = [
        Self::NoOversell,
        Self::NonNegativeStock,
        Self::OnePerUser,
        Self::Idempotency,
        Self::NoLostOrder,
        Self::NoPhantom,
        Self::Conservation,
        Self::StockSeen,
        Self::ReleasedStaysReleased,
        Self::SaleRules,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NoOversell => "no oversell",
            Self::NonNegativeStock => "stock never negative",
            Self::OnePerUser => "one per user",
            Self::Idempotency => "idempotency",
            Self::NoLostOrder => "no lost acknowledged order",
            Self::NoPhantom => "no phantom order",
            Self::Conservation => "conservation",
            Self::StockSeen => "stock seen is possible",
            Self::ReleasedStaysReleased => "a released order stays released",
            Self::SaleRules => "window and changes hold",
        }
    }
}

/// What the run must have exercised to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SelfCheck {
    /// Some product sold out (a sold-out answer was given).
    SoldOut,
    /// Some buyer retried a key after an unknown (`info`) outcome.
    RetriedAfterTimeout,
    /// Some key was replayed (the server answered `Idempotent-Replayed`).
    KeyReplayed,
    /// Every planned fault started and healed.
    FaultsFired,
    /// The reconciler emptied every pending set within the bound.
    Drained,
}

impl SelfCheck {
    pub fn name(self) -> &'static str {
        match self {
            Self::SoldOut => "reached sold-out",
            Self::RetriedAfterTimeout => "retried after an unknown outcome",
            Self::KeyReplayed => "replayed a key",
            Self::FaultsFired => "fired every planned fault",
            Self::Drained => "reconciler drained",
        }
    }
}

/// One order document, as MongoDB holds it at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredOrder {
    pub order_id: String,
    pub user_id: String,
    /// None for a tombstone (released order).
    pub unit: Option<i64>,
    pub live: bool,
}

/// A product's sale state in Redis at the end (None: not loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedisSale {
    pub stock_total: i64,
    pub next_unit: i64,
    pub free_count: i64,
    pub pending: i64,
    pub orders_held: i64,
}

impl RedisSale {
    /// Units not taken, without clamping: negative means more units were issued than
    /// the stock.
    pub fn raw_remaining(&self) -> i64 {
        self.stock_total - (self.next_unit - 1) + self.free_count
    }
}

/// One product at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct FinalProduct {
    pub product_id: Uuid,
    pub orders: Vec<StoredOrder>,
    pub redis: Option<RedisSale>,
    /// The stock total MongoDB's product document records (the published copy of the
    /// product's highest revision).
    pub recorded_stock: Option<i64>,
    /// The stock total of the product's highest revision (a write answered 503 may have
    /// recorded a revision without publishing it; the next write or a rebuild does).
    pub revised_stock: Option<i64>,
    /// MongoDB's product document says the product is deleted.
    #[serde(default)]
    pub deleted: bool,
}

/// The final state read after healing and draining.
#[derive(Debug, Clone, Serialize)]
pub struct FinalState {
    pub products: Vec<FinalProduct>,
    /// Whether every pending set emptied within the bound.
    pub drained: bool,
    pub drain_ms: u64,
}

/// The identities the run created: product and user ids by plan index.
#[derive(Debug, Clone, Serialize)]
pub struct Identities {
    pub product_ids: Vec<Uuid>,
    pub user_ids: Vec<Uuid>,
}

/// One violation, with what it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub message: String,
    pub product: Option<usize>,
    pub buyers: Vec<usize>,
    /// When it was observed (ms from the opening of the sale), if it is tied to a moment.
    pub at_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub invariant: Invariant,
    pub held: bool,
    /// Items checked (orders, responses, products...).
    pub checked: u64,
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelfCheckResult {
    pub check: SelfCheck,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    pub self_checks: Vec<SelfCheckResult>,
}

impl Report {
    pub fn all_held(&self) -> bool {
        self.verdicts.iter().all(|v| v.held)
    }

    pub fn vacuous(&self) -> bool {
        self.self_checks.iter().any(|c| !c.passed)
    }

    pub fn passed(&self) -> bool {
        self.all_held() && !self.vacuous()
    }

    pub fn verdict(&self, invariant: Invariant) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.invariant == invariant)
    }

    /// This report with `earlier`'s verdicts folded in (a check of the same run at an
    /// earlier point): an invariant holds only if it held in both, and keeps the
    /// violations of both.
    pub fn with_earlier(mut self, earlier: Report) -> Report {
        for verdict in &mut self.verdicts {
            let Some(before) = earlier.verdicts.iter().find(|v| v.invariant == verdict.invariant) else { continue };
            verdict.held &= before.held;
            for violation in &before.violations {
                if !verdict.violations.contains(violation) {
                    verdict.violations.push(violation.clone());
                }
            }
        }
        self
    }

    /// Buyers named by any violation, in order.
    pub fn offending_buyers(&self) -> BTreeSet<usize> {
        self.verdicts.iter().flat_map(|v| v.violations.iter()).flat_map(|v| v.buyers.iter().copied()).collect()
    }
}

/// Largest number of violations kept per invariant (the count is exact regardless).
pub const MAX_VIOLATIONS_KEPT: usize = 50;

struct Collector {
    invariant: Invariant,
    checked: u64,
    violations: Vec<Violation>,
    total: u64,
}

impl Collector {
    fn new(invariant: Invariant) -> Self {
        Self { invariant, checked: 0, violations: Vec::new(), total: 0 }
    }

    fn check(&mut self) {
        self.checked += 1;
    }

    fn violate(&mut self, message: String, product: Option<usize>, buyers: Vec<usize>, at_ms: Option<u64>) {
        self.total += 1;
        if self.violations.len() < MAX_VIOLATIONS_KEPT {
            self.violations.push(Violation { message, product, buyers, at_ms });
        }
    }

    fn finish(self) -> Verdict {
        let mut violations = self.violations;
        if self.total > violations.len() as u64 {
            let more = self.total - violations.len() as u64;
            violations.push(Violation {
                message: format!("... and {more} more"),
                product: None,
                buyers: vec![],
                at_ms: None,
            });
        }
        Verdict { invariant: self.invariant, held: self.total == 0, checked: self.checked, violations }
    }
}

/// What the checker learns about each requested order id.
#[derive(Debug, Clone, Copy)]
struct Requested {
    buyer: usize,
    product: usize,
}

/// Checks every invariant and self-check.
pub fn check(plan: &Plan, ids: &Identities, history: &History, state: &FinalState) -> Report {
    let user_buyer: HashMap<String, usize> =
        ids.user_ids.iter().enumerate().map(|(i, id)| (id.to_string(), i)).collect();

    // Every order id some buyer asked for, derived the way the server must derive it,
    // with every (buyer, product) it was asked for (a key may be sent for two products).
    let mut requested: HashMap<Uuid, Vec<Requested>> = HashMap::new();
    for op in &history.ops {
        if let OpKind::Buy { product, key } = &op.kind {
            let Some(user) = ids.user_ids.get(op.buyer) else { continue };
            let asked = requested.entry(flashsale::clock::derive_order_id(*user, key)).or_default();
            let request = Requested { buyer: op.buyer, product: *product };
            if !asked.iter().any(|r| r.buyer == request.buyer && r.product == request.product) {
                asked.push(request);
            }
        }
    }

    // Order ids some request may have bought: an ok or an unknown outcome. An order whose
    // every request was definitely refused was bought behind the buyer's back.
    let mut maybe_bought: HashSet<Uuid> = HashSet::new();
    for op in &history.ops {
        if let (OpKind::Buy { key, .. }, Outcome::Ok { .. } | Outcome::Info { .. }) = (&op.kind, &op.outcome) {
            if let Some(user) = ids.user_ids.get(op.buyer) {
                maybe_bought.insert(flashsale::clock::derive_order_id(*user, key));
            }
        }
    }

    let cancels = Cancels::of(history);
    let reservations = Reservations::of(ids, history);
    let verdicts = vec![
        no_oversell(plan, history, state),
        non_negative(history, state),
        one_per_user(plan, ids, history, state, &user_buyer, &reservations, &cancels),
        idempotency(ids, history, &cancels),
        no_lost_order(ids, history, state, &cancels),
        no_phantom(state, &requested, &maybe_bought, &user_buyer),
        conservation(plan, history, state),
        stock_seen(plan, ids, history, state),
        released_stays_released(ids, history, state, &cancels),
        sale_rules(plan, history, state, &reservations),
    ];
    let self_checks = self_checks(plan, history, state);
    Report { verdicts, self_checks }
}

/// The administrators' cancellations in a history, per order id.
struct Cancels {
    /// When each order's first cancellation that may have released it (200, or an
    /// unknown outcome) was sent.
    maybe: HashMap<Uuid, u64>,
    /// When each order's first cancellation answered 200 (released for sure from then on).
    released: HashMap<Uuid, u64>,
}

impl Cancels {
    fn of(history: &History) -> Self {
        let (mut maybe, mut released) = (HashMap::new(), HashMap::new());
        for op in &history.ops {
            let OpKind::Cancel { order_id, .. } = &op.kind else { continue };
            match op.outcome {
                Outcome::Cancelled => {
                    let at = released.entry(*order_id).or_insert(op.complete_ms);
                    *at = (*at).min(op.complete_ms);
                }
                Outcome::Info { .. } => {}
                _ => continue,
            }
            let at = maybe.entry(*order_id).or_insert(op.invoke_ms);
            *at = (*at).min(op.invoke_ms);
        }
        Self { maybe, released }
    }

    /// Whether a cancellation that may have released the order was sent before `at_ms`.
    fn maybe_before(&self, order_id: Uuid, at_ms: u64) -> bool {
        self.maybe.get(&order_id).is_some_and(|sent| *sent < at_ms)
    }
}

fn live_orders(product: &FinalProduct) -> impl Iterator<Item = &StoredOrder> {
    product.orders.iter().filter(|o| o.live)
}

fn no_oversell(plan: &Plan, history: &History, state: &FinalState) -> Verdict {
    let mut c = Collector::new(Invariant::NoOversell);
    for (index, product) in state.products.iter().enumerate() {
        let stock = StockBounds::of(plan, history, index).most();
        let mut units = HashSet::new();
        let mut live = 0i64;
        for order in live_orders(product) {
            c.check();
            live += 1;
            match order.unit {
                Some(unit) if unit < 1 || unit > stock => c.violate(
                    format!("order {} holds unit {unit}, outside 1..={stock}", order.order_id),
                    Some(index),
                    vec![],
                    None,
                ),
                Some(unit) if !units.insert(unit) => {
                    c.violate(format!("unit {unit} is held by two orders"), Some(index), vec![], None)
                }
                _ => {}
            }
        }
        if live > stock {
            c.violate(format!("{live} live orders for a stock of {stock}"), Some(index), vec![], None);
        }
    }
    c.finish()
}

fn non_negative(history: &History, state: &FinalState) -> Verdict {
    let mut c = Collector::new(Invariant::NonNegativeStock);
    for op in &history.ops {
        if let (OpKind::Read { product }, Outcome::Read { remaining }) = (&op.kind, &op.outcome) {
            c.check();
            if *remaining < 0 {
                c.violate(
                    format!("product detail reported remaining {remaining}"),
                    Some(*product),
                    vec![op.buyer],
                    Some(op.complete_ms),
                );
            }
        }
    }
    for event in &history.stock_events {
        c.check();
        if event.remaining < 0 {
            c.violate(
                format!("a stock event reported remaining {}", event.remaining),
                Some(event.product),
                vec![],
                Some(event.at_ms),
            );
        }
    }
    for (index, product) in state.products.iter().enumerate() {
        if let Some(sale) = product.redis {
            c.check();
            if sale.raw_remaining() < 0 || sale.free_count < 0 {
                c.violate(
                    format!(
                        "Redis holds {} units left (stock {}, next unit {}, {} returned)",
                        sale.raw_remaining(),
                        sale.stock_total,
                        sale.next_unit,
                        sale.free_count
                    ),
                    Some(index),
                    vec![],
                    None,
                );
            }
        }
    }
    c.finish()
}

/// When each order may have been reserved, per (order, product): from the first request
/// of its key for that product that may have bought (an order or an unknown outcome) to
/// the last such request's end. A reservation lost with Redis's data may be taken again
/// by a later request of its key, so the end is the last request's, not the first
/// answer's.
struct Reservations(HashMap<(Uuid, usize), (u64, u64)>);

impl Reservations {
    fn of(ids: &Identities, history: &History) -> Self {
        let mut spans: HashMap<(Uuid, usize), (u64, u64)> = HashMap::new();
        for op in &history.ops {
            let OpKind::Buy { product, key } = &op.kind else { continue };
            if !matches!(op.outcome, Outcome::Ok { .. } | Outcome::Info { .. }) {
                continue;
            }
            let Some(user) = ids.user_ids.get(op.buyer) else { continue };
            let order = flashsale::clock::derive_order_id(*user, key);
            let span = spans.entry((order, *product)).or_insert((op.invoke_ms, op.complete_ms));
            *span = (span.0.min(op.invoke_ms), span.1.max(op.complete_ms));
        }
        Self(spans)
    }

    fn of_order(&self, order_id: &str, product: usize) -> Option<(u64, u64)> {
        let id = Uuid::parse_str(order_id).ok()?;
        self.0.get(&(id, product)).copied()
    }
}

/// One planned change of a product as the history shows it: its attempts, in a row.
#[derive(Debug, Clone, Copy)]
struct SentChange {
    change: ProductChange,
    /// When its first attempt was sent (a close names the administrator's clock then).
    sent_ms: u64,
    /// When an attempt answered 200 or 204: applied from then on.
    applied_ms: Option<u64>,
    /// Some attempt may have applied it (answered so, or without a definite answer).
    maybe: bool,
}

/// The administrator's changes of product `index`, in the order they were sent.
fn sent_changes(history: &History, index: usize) -> Vec<SentChange> {
    let mut ops: Vec<_> = history
        .ops
        .iter()
        .filter(|op| matches!(&op.kind, OpKind::Change { product, .. } if *product == index))
        .collect();
    ops.sort_by_key(|op| (op.invoke_ms, op.seq));
    let mut changes: Vec<SentChange> = Vec::new();
    for op in ops {
        let OpKind::Change { change, .. } = op.kind else { continue };
        let applied = matches!(op.outcome, Outcome::Changed).then_some(op.complete_ms);
        let maybe = applied.is_some() || op.outcome.is_info();
        match changes.last_mut() {
            // Another attempt of the same change (sent again until an answer settles it).
            Some(last) if last.change == change && last.applied_ms.is_none() => {
                last.applied_ms = applied;
                last.maybe |= maybe;
            }
            _ => changes.push(SentChange { change, sent_ms: op.invoke_ms, applied_ms: applied, maybe }),
        }
    }
    changes
}

/// How far an instance's clock may be from the administrator's: a close names the
/// administrator's clock as the sale's end, and each instance compares that with its
/// own (deterministic mode offsets each instance's clock by up to this much; real
/// mode's processes share one clock).
pub const CLOCK_SKEW_MS: u64 = 250;

/// When a two-valued setting of a product (one-per-user on, the sale closed) surely
/// held each value: from the answer of a change that set it (or the start, for the
/// planned value) until the next change that may have set the other was sent.
#[derive(Debug, Default)]
struct Toggle {
    /// Spans `[from, until)`, for `false` and for `true`.
    spans: [Vec<(u64, u64)>; 2],
}

impl Toggle {
    fn of<'a>(initial: bool, changes: impl Iterator<Item = (bool, &'a SentChange)>) -> Self {
        let mut toggle = Self::default();
        let mut known = Some((initial, 0u64));
        for (value, change) in changes.filter(|(_, change)| change.maybe) {
            if let Some((current, since)) = known.filter(|(current, _)| *current != value) {
                toggle.spans[usize::from(current)].push((since, change.sent_ms));
                known = None;
            }
            if let (None, Some(at)) = (known, change.applied_ms) {
                known = Some((value, at));
            }
        }
        if let Some((current, since)) = known {
            toggle.spans[usize::from(current)].push((since, u64::MAX));
        }
        toggle
    }

    /// Whether it surely was `value` from `from` to `until`, more than `early` ms after
    /// that span began and `late` ms before it ended. Strictly: the history counts whole
    /// milliseconds, and a request sent in the millisecond a change was answered may have
    /// run before it. The planned value holds from the start.
    fn surely(&self, value: bool, from: u64, until: u64, early: u64, late: u64) -> bool {
        self.spans[usize::from(value)].iter().any(|&(begins, ends)| {
            let after = if begins == 0 && early == 0 { true } else { begins.saturating_add(early) < from };
            after && until.saturating_add(late) < ends
        })
    }
}

/// Invariant 3. For a product whose rule never changed, no user holds two live orders
/// at the end. For one whose rule an administrator turned over: no user got a second
/// live order while the rule surely was on (of two orders, whichever may have been
/// reserved later was reserved while it was on; not across a Redis data loss, which
/// may forget a pending reservation), and no `already-purchased` was answered while it
/// surely was off. Whatever the rule, `already-purchased` refuses only a buyer who may
/// hold an order of the product ([`refusals_have_an_order`]).
fn one_per_user(
    plan: &Plan,
    ids: &Identities,
    history: &History,
    state: &FinalState,
    user_buyer: &HashMap<String, usize>,
    reservations: &Reservations,
    cancels: &Cancels,
) -> Verdict {
    let mut c = Collector::new(Invariant::OnePerUser);
    refusals_have_an_order(&mut c, ids, history, cancels);
    let loss_starts = redis_data_loss_starts(history);
    for (index, product) in state.products.iter().enumerate() {
        let planned = plan.products.get(index).is_some_and(|p| p.one_per_user);
        let changes = sent_changes(history, index);
        let switches: Vec<(bool, &SentChange)> = changes
            .iter()
            .filter_map(|change| match change.change {
                ProductChange::OnePerUser { on } if change.maybe => Some((on, change)),
                _ => None,
            })
            .collect();
        if switches.is_empty() && !planned {
            continue;
        }
        let rule = Toggle::of(planned, switches.iter().copied());
        let mut per_user: HashMap<&str, Vec<&StoredOrder>> = HashMap::new();
        for order in live_orders(product) {
            per_user.entry(&order.user_id).or_default().push(order);
        }
        let mut users: Vec<_> = per_user.into_iter().collect();
        users.sort_by_key(|(user, _)| *user);
        for (user, orders) in users {
            c.check();
            let buyers: Vec<usize> = user_buyer.get(user).copied().into_iter().collect();
            if switches.is_empty() {
                if orders.len() > 1 {
                    let ids: Vec<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
                    c.violate(
                        format!("user {user} holds {} live orders: {}", orders.len(), ids.join(", ")),
                        Some(index),
                        buyers,
                        None,
                    );
                }
                continue;
            }
            let spans: Vec<(&str, (u64, u64))> = orders
                .iter()
                .filter_map(|o| reservations.of_order(&o.order_id, index).map(|span| (o.order_id.as_str(), span)))
                .collect();
            let second = spans.iter().enumerate().find_map(|(i, a)| {
                spans[i + 1..]
                    .iter()
                    .find(|b| {
                        let (from, until) = (a.1.0.min(b.1.0), a.1.1.max(b.1.1));
                        let lost = loss_starts.iter().any(|start| (from..=until).contains(start));
                        // Each of the two that may have been reserved after the other was
                        // reserved while the rule surely was on.
                        let on = |x: &(&str, (u64, u64)), y: &(&str, (u64, u64))| {
                            x.1.1 < y.1.0 || rule.surely(true, x.1.0, x.1.1, 0, 0)
                        };
                        !lost && on(a, b) && on(b, a)
                    })
                    .map(|b| (a, b))
            });
            if let Some((a, b)) = second {
                c.violate(
                    format!(
                        "user {user} holds orders {} (reserved {}..{} ms) and {} ({}..{} ms), one taken while one-per-user was on",
                        a.0, a.1.0, a.1.1, b.0, b.1.0, b.1.1
                    ),
                    Some(index),
                    buyers,
                    Some(a.1.1.max(b.1.1)),
                );
            }
        }
        if switches.is_empty() {
            continue;
        }
        for op in &history.ops {
            if !matches!(&op.kind, OpKind::Buy { product, .. } if *product == index)
                || op.outcome.problem() != Some("already-purchased")
            {
                continue;
            }
            c.check();
            if rule.surely(false, op.invoke_ms, op.complete_ms, 0, 0) {
                c.violate(
                    "answered already-purchased while one-per-user was off".to_owned(),
                    Some(index),
                    vec![op.buyer],
                    Some(op.complete_ms),
                );
            }
        }
    }
    c.finish()
}

/// Every `already-purchased` went to a buyer who may have held an order of that product
/// while the request ran: another request of theirs on it (or an earlier one of the same
/// key), sent by the time this one was answered, may have reserved a unit (an order or
/// an unknown outcome, or an answer that may follow a reservation MongoDB refused), and
/// its order was not surely released (a cancellation answered 200) before this request
/// was sent. A buyer whose order was cancelled is free to buy again.
fn refusals_have_an_order(c: &mut Collector, ids: &Identities, history: &History, cancels: &Cancels) {
    /// A request that may have reserved: when it was sent, its place in the history, its order.
    struct MayHold {
        sent: u64,
        index: usize,
        order_id: Uuid,
    }
    // Per (buyer, product).
    let mut holding: HashMap<(usize, usize), Vec<MayHold>> = HashMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        let OpKind::Buy { product, key } = &op.kind else { continue };
        let Some(user) = ids.user_ids.get(op.buyer) else { continue };
        let may_hold = matches!(op.outcome, Outcome::Ok { .. } | Outcome::Info { .. })
            || matches!(op.outcome.problem(), Some("order-released" | "idempotency-key-reused" | "already-purchased"));
        if may_hold {
            let order_id = flashsale::clock::derive_order_id(*user, key);
            holding.entry((op.buyer, *product)).or_default().push(MayHold { sent: op.invoke_ms, index, order_id });
        }
    }
    for (index, op) in history.ops.iter().enumerate() {
        let OpKind::Buy { product, key } = &op.kind else { continue };
        if op.outcome.problem() != Some("already-purchased") {
            continue;
        }
        c.check();
        let held = holding.get(&(op.buyer, *product)).is_some_and(|requests| {
            requests.iter().any(|other| {
                other.index != index
                    && other.sent <= op.complete_ms
                    && cancels.released.get(&other.order_id).is_none_or(|released| *released >= op.invoke_ms)
            })
        });
        if !held {
            c.violate(
                format!("key {key:?} was answered already-purchased, but its buyer could hold no order of the product"),
                Some(*product),
                vec![op.buyer],
                Some(op.complete_ms),
            );
        }
    }
}

/// Invariant 10. The sale's window holds: no order was answered (201 or 202, which
/// means its unit was reserved by then) before the sale surely opened, and no
/// `sale-not-started` to a request sent once it surely had (the opening is the
/// administrator's clock, each instance compares it with its own: [`CLOCK_SKEW_MS`] either
/// way; no change moves it). The administrator's changes hold from their answers on: no
/// order (live or released since) was reserved while the sale surely was closed (a close
/// names the administrator's clock, so from its answer plus [`CLOCK_SKEW_MS`] until a
/// reopen was sent) or after a delete answered 204; no `sale-ended` was answered while
/// the sale surely was open (until [`CLOCK_SKEW_MS`] before a close was sent); and a
/// deleted product's sale state is gone at the end.
fn sale_rules(plan: &Plan, history: &History, state: &FinalState, reservations: &Reservations) -> Verdict {
    let mut c = Collector::new(Invariant::SaleRules);
    for (index, product) in state.products.iter().enumerate() {
        let opens_ms = plan.products.get(index).map_or(0, |p| p.opens_at_ms);
        for op in &history.ops {
            let OpKind::Buy { product, .. } = &op.kind else { continue };
            if *product != index {
                continue;
            }
            match &op.outcome {
                Outcome::Ok { order_id, .. } => {
                    c.check();
                    if op.complete_ms.saturating_add(CLOCK_SKEW_MS) < opens_ms {
                        c.violate(
                            format!(
                                "order {order_id} was answered at {} ms, before the sale opened at {opens_ms} ms",
                                op.complete_ms
                            ),
                            Some(index),
                            vec![op.buyer],
                            Some(op.complete_ms),
                        );
                    }
                }
                Outcome::Fail { problem, .. } if problem == "sale-not-started" => {
                    c.check();
                    if op.invoke_ms > opens_ms.saturating_add(CLOCK_SKEW_MS) {
                        c.violate(
                            format!(
                                "answered sale-not-started to a request sent at {} ms, after the sale opened at \
                                 {opens_ms} ms",
                                op.invoke_ms
                            ),
                            Some(index),
                            vec![op.buyer],
                            Some(op.complete_ms),
                        );
                    }
                }
                _ => {}
            }
        }
        let changes = sent_changes(history, index);
        let closed = Toggle::of(
            false,
            changes.iter().filter_map(|change| match change.change {
                ProductChange::Close => Some((true, change)),
                ProductChange::Reopen => Some((false, change)),
                _ => None,
            }),
        );
        let deleted_at = changes.iter().filter(|c| c.change == ProductChange::Delete).find_map(|c| c.applied_ms);
        for order in &product.orders {
            let Some((from, until)) = reservations.of_order(&order.order_id, index) else { continue };
            c.check();
            if closed.surely(true, from, until, CLOCK_SKEW_MS, 0) {
                c.violate(
                    format!(
                        "order {} was reserved between {from} and {until} ms, while the sale was closed",
                        order.order_id
                    ),
                    Some(index),
                    vec![],
                    Some(until),
                );
            }
            if let Some(at) = deleted_at.filter(|at| from > *at) {
                c.violate(
                    format!(
                        "order {} was reserved after {from} ms, but the product was deleted at {at} ms",
                        order.order_id
                    ),
                    Some(index),
                    vec![],
                    Some(from),
                );
            }
        }
        for op in &history.ops {
            if !matches!(&op.kind, OpKind::Buy { product, .. } if *product == index)
                || op.outcome.problem() != Some("sale-ended")
            {
                continue;
            }
            c.check();
            if closed.surely(false, op.invoke_ms, op.complete_ms, 0, CLOCK_SKEW_MS) {
                c.violate(
                    "answered sale-ended while the sale was open".to_owned(),
                    Some(index),
                    vec![op.buyer],
                    Some(op.complete_ms),
                );
            }
        }
        if deleted_at.is_some() || product.deleted {
            c.check();
            if deleted_at.is_some() && !product.deleted {
                c.violate(
                    "a delete answered 204 but the product document is not deleted".into(),
                    Some(index),
                    vec![],
                    None,
                );
            }
            if product.deleted && product.redis.is_some() {
                c.violate(
                    "the product is deleted but its sale state is still loaded".into(),
                    Some(index),
                    vec![],
                    None,
                );
            }
        }
    }
    c.finish()
}

fn idempotency(ids: &Identities, history: &History, cancels: &Cancels) -> Verdict {
    let mut c = Collector::new(Invariant::Idempotency);
    // Operations per (buyer, key), in invocation order.
    let mut by_key: HashMap<(usize, &str), Vec<usize>> = HashMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let OpKind::Buy { key, .. } = &op.kind {
            by_key.entry((op.buyer, key.as_str())).or_default().push(i);
        }
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by_key(|((buyer, key), _)| (*buyer, key.to_string()));
    // A key answered only 202s may have lost its reservation with Redis's data if a loss
    // began after its first 202 and before this request: it holds nothing then.
    let loss_starts = redis_data_loss_starts(history);
    let lost_202 = |last_ok_ms: Option<u64>, confirmed: bool, invoke_ms: u64| {
        !confirmed
            && last_ok_ms.is_some_and(|at| {
                loss_starts.iter().any(|start| start + LOSS_ANSWER_SLACK_MS >= at && *start < invoke_ms)
            })
    };
    for ((buyer, key), mut indices) in keys {
        c.check();
        indices.sort_by_key(|i| (history.ops[*i].invoke_ms, history.ops[*i].seq));
        in_flight_refusals(&mut c, history, buyer, key, &indices);
        let derived = ids.user_ids.get(buyer).map(|user| flashsale::clock::derive_order_id(*user, key));
        let mut named: Option<Uuid> = None;
        // The product the key first bought, and when that answer came.
        let mut bought: Option<(usize, u64)> = None;
        // Whether a 201 answered it (a 202 alone may be lost with Redis's data), and when
        // its last order answer came.
        let mut confirmed = false;
        let mut last_ok_ms: Option<u64> = None;
        for i in &indices {
            let op = &history.ops[*i];
            let OpKind::Buy { product, .. } = &op.kind else { continue };
            if lost_202(last_ok_ms, confirmed, op.invoke_ms) {
                // Its 202s may have been lost with Redis's data since: the key holds
                // nothing now, and may buy again, even another product.
                (bought, last_ok_ms) = (None, None);
            }
            match &op.outcome {
                Outcome::Ok { order_id, status, .. } => {
                    // A key that bought one product never buys another. (A key whose
                    // first use was refused, e.g. sold out by the in-process shortcut,
                    // claimed nothing and may still buy: it names one order either way.)
                    if let Some((other, _)) = bought.filter(|(other, _)| *other != *product) {
                        c.violate(
                            format!("key {key:?} bought product {other}, then product {product} too"),
                            Some(*product),
                            vec![buyer],
                            Some(op.complete_ms),
                        );
                    }
                    if derived.is_some_and(|d| d != *order_id) {
                        c.violate(
                            format!("key {key:?} answered order {order_id}, not the order derived from the key"),
                            Some(*product),
                            vec![buyer],
                            Some(op.complete_ms),
                        );
                    }
                    match named {
                        Some(previous) if previous != *order_id => c.violate(
                            format!("key {key:?} answered two orders: {previous} and {order_id}"),
                            Some(*product),
                            vec![buyer],
                            Some(op.complete_ms),
                        ),
                        _ => named = Some(*order_id),
                    }
                    if bought.is_none() {
                        bought = Some((*product, op.complete_ms));
                    }
                    confirmed |= *status == 201;
                    last_ok_ms = Some(op.complete_ms);
                }
                // After a cancellation of its order the key holds nothing: whether it may be
                // refused so is for `released_stays_released` to say.
                Outcome::Fail { problem, .. }
                    if (problem == "sold-out" || problem == "already-purchased")
                        && bought.is_some_and(|(first, at)| first == *product && op.invoke_ms > at)
                        && !derived.is_some_and(|order| cancels.maybe_before(order, op.complete_ms)) =>
                {
                    c.violate(
                        format!(
                            "a retry of key {key:?}, which had bought, was answered {problem} instead of its order"
                        ),
                        Some(*product),
                        vec![buyer],
                        Some(op.complete_ms),
                    );
                }
                _ => {}
            }
        }
    }
    c.finish()
}

/// How long an idempotency claim holds its key: the server's `idempotency_lease_ms`,
/// which neither mode changes (a unit test holds the two together).
pub const IDEMPOTENCY_LEASE_MS: u64 = 5_000;

/// How long after its client gave up a request may still claim its key: in real mode
/// the server may run a request on after the client's timeout closed the connection
/// (det mode drops it there), its claim delayed by the steps before it.
pub const CLAIM_AFTER_CLIENT_MS: u64 = 3_000;

fn is_in_flight_refusal(op: &Op) -> bool {
    matches!(&op.outcome, Outcome::Fail { problem, .. } if problem == "idempotency-in-flight")
}

/// Every `idempotency-in-flight` refusal of a key is explained by another attempt of the
/// same key that may still have held it: begun before the refusal's answer, and
/// answered (or given up) no longer before the refusal was sent than a claim's lease,
/// the instances' clock skew and a claim made after its client gave up. A key refused
/// as in flight after every attempt of it is long over is stuck: a lease never running
/// out, or one measured in the wrong unit, leaves a buyer who lost an answer unable to
/// learn it (a retry evaluates again once the lease has run out).
fn in_flight_refusals(c: &mut Collector, history: &History, buyer: usize, key: &str, indices: &[usize]) {
    let window_ms = IDEMPOTENCY_LEASE_MS + 2 * CLOCK_SKEW_MS + CLAIM_AFTER_CLIENT_MS;
    for &i in indices {
        let refusal = &history.ops[i];
        if !is_in_flight_refusal(refusal) {
            continue;
        }
        let held = indices.iter().any(|&j| {
            let holder = &history.ops[j];
            j != i
                && !is_in_flight_refusal(holder)
                && holder.invoke_ms <= refusal.complete_ms
                && refusal.invoke_ms <= holder.complete_ms + window_ms
        });
        if !held {
            let OpKind::Buy { product, .. } = &refusal.kind else { continue };
            c.violate(
                format!(
                    "key {key:?} was refused as in flight at {} ms, though no attempt of it could still hold it \
                     (each was answered more than {window_ms} ms before)",
                    refusal.invoke_ms
                ),
                Some(*product),
                vec![buyer],
                Some(refusal.complete_ms),
            );
        }
    }
}

fn no_lost_order(ids: &Identities, history: &History, state: &FinalState, cancels: &Cancels) -> Verdict {
    let mut c = Collector::new(Invariant::NoLostOrder);
    let mut stored: HashMap<&str, (usize, &StoredOrder)> = HashMap::new();
    let mut tombstones: HashSet<&str> = HashSet::new();
    for (index, product) in state.products.iter().enumerate() {
        for order in live_orders(product) {
            stored.insert(&order.order_id, (index, order));
        }
        tombstones.extend(product.orders.iter().filter(|o| !o.live).map(|o| o.order_id.as_str()));
    }
    let loss_starts = redis_data_loss_starts(history);
    let lost_with_redis =
        |answered_ms: u64| loss_starts.iter().any(|start| start + LOSS_ANSWER_SLACK_MS >= answered_ms);
    // Every answer is judged (an exemption holds for one answer, not for its order);
    // each order is counted, and reported, once.
    let (mut counted, mut reported) = (HashSet::new(), HashSet::new());
    for op in &history.ops {
        let (OpKind::Buy { product, .. }, Outcome::Ok { status, order_id, .. }) = (&op.kind, &op.outcome) else {
            continue;
        };
        if counted.insert(*order_id) {
            c.check();
        }
        let user = ids.user_ids.get(op.buyer).map(Uuid::to_string).unwrap_or_default();
        let id = order_id.to_string();
        let problem = match stored.get(id.as_str()) {
            Some((index, order)) if *index == *product && order.user_id == user => None,
            // A 202 lost with Redis's data leaves its key free: the same user's key may
            // then have bought another product.
            Some((_, order)) if order.user_id == user && *status == 202 && lost_with_redis(op.complete_ms) => None,
            Some((index, order)) => {
                Some(format!("{status} order {order_id} is stored for product {index} and user {}", order.user_id))
            }
            // Released by an administrator: its tombstone is its document.
            None if tombstones.contains(id.as_str()) && cancels.maybe.contains_key(order_id) => None,
            // A 202 is as durable as Redis (the protocol's documented limit): one answered
            // before a Redis data loss began may be lost with it. Not one answered after:
            // the server checked that Redis still held its reservation.
            None if *status == 202 && lost_with_redis(op.complete_ms) => None,
            None => Some(format!("{status} order {order_id} has no live MongoDB document")),
        };
        if let Some(problem) = problem.filter(|_| reported.insert(*order_id)) {
            c.violate(problem, Some(*product), vec![op.buyer], Some(op.complete_ms));
        }
    }
    c.finish()
}

fn no_phantom(
    state: &FinalState,
    requested: &HashMap<Uuid, Vec<Requested>>,
    maybe_bought: &HashSet<Uuid>,
    user_buyer: &HashMap<String, usize>,
) -> Verdict {
    let mut c = Collector::new(Invariant::NoPhantom);
    for (index, product) in state.products.iter().enumerate() {
        for order in &product.orders {
            c.check();
            let owner = user_buyer.get(&order.user_id).copied();
            let asked = Uuid::parse_str(&order.order_id).ok().and_then(|id| requested.get(&id));
            let id = Uuid::parse_str(&order.order_id).ok();
            match asked {
                Some(requests)
                    if order.live
                        && requests.iter().any(|r| r.product == index && Some(r.buyer) == owner)
                        && !id.is_some_and(|id| maybe_bought.contains(&id)) =>
                {
                    c.violate(
                        format!("order {} exists although every request for it was refused", order.order_id),
                        Some(index),
                        requests.iter().map(|r| r.buyer).collect(),
                        None,
                    )
                }
                Some(requests) if requests.iter().any(|r| r.product == index && Some(r.buyer) == owner) => {}
                Some(requests) => c.violate(
                    format!(
                        "order {} was requested by buyer {} for product {}, but is stored for user {} on product {index}",
                        order.order_id, requests[0].buyer, requests[0].product, order.user_id
                    ),
                    Some(index),
                    requests.iter().map(|r| r.buyer).collect(),
                    None,
                ),
                None => c.violate(
                    format!("order {} of user {} was never requested by any buyer", order.order_id, order.user_id),
                    Some(index),
                    owner.into_iter().collect(),
                    None,
                ),
            }
        }
    }
    c.finish()
}

/// How long before a Redis data loss began a 202 may have been answered and still be
/// lost with it: the server checks that Redis holds the reservation just before it
/// answers, and in real mode the answer reaches the buyer a little after that check.
pub const LOSS_ANSWER_SLACK_MS: u64 = 100;

/// How long after a cancellation's 200 the instances may still answer `sold-out` from
/// their sold-out shortcut: until the release's stock event reaches them.
pub const RELEASE_EVENT_SLACK_MS: u64 = 200;
/// How long after a cancellation without a definite answer its release may still be
/// applied: the server may go on with it after the client stopped waiting (a rebuild
/// wait of 2 s, store timeouts), and its event may be late as above.
pub const UNANSWERED_RELEASE_SLACK_MS: u64 = 5_000;

/// What a product's stock total may be: its planned stock, and the restocks sent.
struct StockBounds {
    planned: i64,
    /// Each restock that was not refused.
    restocks: Vec<SentRestock>,
}

struct SentRestock {
    sent_ms: u64,
    answered_ms: u64,
    quantity: i64,
    /// Answered 200 (else its outcome is unknown).
    applied: bool,
}

impl StockBounds {
    fn of(plan: &Plan, history: &History, index: usize) -> Self {
        let planned = plan.products.get(index).map_or(0, |p| p.stock);
        let restocks = history
            .ops
            .iter()
            .filter_map(|op| match (&op.kind, &op.outcome) {
                (OpKind::Restock { product, .. }, _) if *product != index => None,
                (OpKind::Restock { .. }, Outcome::Fail { .. }) => None,
                (OpKind::Restock { quantity, .. }, outcome) => Some(SentRestock {
                    sent_ms: op.invoke_ms,
                    answered_ms: op.complete_ms,
                    quantity: *quantity,
                    applied: matches!(outcome, Outcome::Restocked { .. }),
                }),
                _ => None,
            })
            .collect();
        Self { planned, restocks }
    }

    /// The most the stock may be at the end: every restock not refused applied.
    fn most(&self) -> i64 {
        self.planned + self.restocks.iter().map(|r| r.quantity).sum::<i64>()
    }

    /// The least the stock may be at the end: the restocks answered 200.
    fn least(&self) -> i64 {
        self.planned + self.restocks.iter().filter(|r| r.applied).map(|r| r.quantity).sum::<i64>()
    }

    /// The most the stock may be by `at_ms`: the restocks sent by then.
    fn most_by(&self, at_ms: u64) -> i64 {
        self.planned + self.restocks.iter().filter(|r| r.sent_ms <= at_ms).map(|r| r.quantity).sum::<i64>()
    }

    /// From when every restock's units were in the live stock and known to every
    /// instance's sold-out shortcut: its answer, or the heal of the last fault that may
    /// have kept its live step from applying, plus [`RESTOCK_SETTLE_SLACK_MS`]; plus
    /// [`RECONCILER_TAKEOVER_MS`] if an instance was killed after it was sent (the
    /// instance retrying it may be the one killed, and the reconciler lock it held).
    fn settled_by(&self, history: &History) -> Option<u64> {
        self.restocks
            .iter()
            .map(|&SentRestock { sent_ms: sent, answered_ms: answered, .. }| {
                let healed = history
                    .faults
                    .iter()
                    .filter(|f| f.phase == FaultPhase::Heal && f.at_ms >= sent)
                    .map(|f| f.at_ms)
                    .max()
                    .unwrap_or(0);
                let killed = history.faults.iter().any(|f| {
                    f.phase == FaultPhase::Start && f.at_ms >= sent && matches!(f.fault, Fault::KillInstance { .. })
                });
                answered.max(healed) + RESTOCK_SETTLE_SLACK_MS + if killed { RECONCILER_TAKEOVER_MS } else { 0 }
            })
            .max()
    }
}

/// How long after a restock's answer (or the heal of the faults after it) its units may
/// still be missing from the live stock or from an instance's sold-out shortcut: a
/// restock whose live step failed (Redis down) is applied again by its instance, with
/// pauses of up to 2 s, and an answer without a definite outcome may come late.
pub const RESTOCK_SETTLE_SLACK_MS: u64 = 3_000;
/// Added when an instance was killed after a restock was sent: the reconciler raises a
/// live stock left behind, once the lease of a lock the killed instance held (10 s) ran
/// out, on its next pass.
pub const RECONCILER_TAKEOVER_MS: u64 = 12_000;

/// The latest moment a cancellation of an order of product `index` may have freed a
/// unit and the instances not yet known it: after a 200 plus the event's slack, after
/// any other answer but a definite refusal plus the slack of an unanswered release. An
/// order's product is the one MongoDB stores it under (a key reuser's first key may
/// have bought another product than the one its buyer wanted).
fn last_release_bound_ms(history: &History, state: &FinalState, index: usize) -> Option<u64> {
    let stored_under: HashMap<&str, usize> = state
        .products
        .iter()
        .enumerate()
        .flat_map(|(product, stored)| stored.orders.iter().map(move |order| (order.order_id.as_str(), product)))
        .collect();
    history
        .ops
        .iter()
        .filter_map(|op| {
            let OpKind::Cancel { product, order_id } = &op.kind else { return None };
            let product = stored_under.get(order_id.to_string().as_str()).copied().unwrap_or(*product);
            match &op.outcome {
                _ if product != index => None,
                Outcome::Cancelled => Some(op.complete_ms + RELEASE_EVENT_SLACK_MS),
                Outcome::Fail { status: 404, .. } => None,
                _ => Some(op.complete_ms + UNANSWERED_RELEASE_SLACK_MS),
            }
        })
        .max()
}

/// When each fault that loses Redis data (a restart without persistence) began.
fn redis_data_loss_starts(history: &History) -> Vec<u64> {
    history
        .faults
        .iter()
        .filter(|f| matches!(f.fault, Fault::KillRestart { target: Backend::Redis, persistent: false }))
        .filter(|f| f.phase == FaultPhase::Start)
        .map(|f| f.at_ms)
        .collect()
}

/// The end of the last fault that may lose Redis data (a restart without persistence).
fn last_redis_data_loss_ms(history: &History) -> Option<u64> {
    history
        .faults
        .iter()
        .filter(|f| matches!(f.fault, Fault::KillRestart { target: Backend::Redis, persistent: false }))
        .filter(|f| f.phase == FaultPhase::Heal)
        .map(|f| f.at_ms)
        .max()
}

/// Invariant 8. A unit is taken at its reservation and stays taken while its order lives:
/// a read that began after an order's 201 (the order in MongoDB, so counted by any
/// rebuild) cannot show that unit free; a read cannot show fewer units than the stock
/// less every key of that product that may have reserved one by the time it ended (an
/// order, an unknown outcome, or `order-released`: the key's order existed and was
/// cancelled while the request was still on its way; a key reserves at most one unit).
/// A key whose order a cancellation answered 200 before the read began holds no unit
/// (its unit went back to the free set, and invariant 9 keeps it from reserving again),
/// unless Redis restarted between the cancellation's request and the read's end (a
/// restart may come back with data from before the release, until a rebuild).
/// The stock is the
/// most the restocks sent by the read's end allow for the first check, and the planned
/// stock for the second (a read may show a restock late: the live stock catches up
/// with MongoDB when a product read or a rebuild sees the difference).
fn stock_seen(plan: &Plan, ids: &Identities, history: &History, state: &FinalState) -> Verdict {
    let mut c = Collector::new(Invariant::StockSeen);
    let products = plan.products.len();
    // Per product: when each still-live order was first confirmed, and when each key
    // first had a request that may have reserved, both sorted.
    let mut confirmed: Vec<HashMap<Uuid, u64>> = vec![HashMap::new(); products];
    let mut reserving: Vec<HashMap<(usize, &str), u64>> = vec![HashMap::new(); products];
    for op in &history.ops {
        let OpKind::Buy { product, key } = &op.kind else { continue };
        if *product >= products {
            continue;
        }
        if let Outcome::Ok { status: 201, order_id, .. } = &op.outcome {
            let at = confirmed[*product].entry(*order_id).or_insert(op.complete_ms);
            *at = (*at).min(op.complete_ms);
        }
        // A request answered one of these may have held a unit for a while: it reserved
        // before MongoDB refused its order (the order id taken, or the buyer's slot), and
        // the unit comes back with the release or the rebuild that follows.
        let held_for_a_while =
            matches!(op.outcome.problem(), Some("order-released" | "idempotency-key-reused" | "already-purchased"));
        if held_for_a_while || matches!(op.outcome, Outcome::Ok { .. } | Outcome::Info { .. }) {
            let at = reserving[*product].entry((op.buyer, key.as_str())).or_insert(op.invoke_ms);
            *at = (*at).min(op.invoke_ms);
        }
    }
    // Per product: each order a cancellation released for sure, with when that
    // cancellation was sent and answered, if its key is one that may have reserved.
    let mut given_back: Vec<HashMap<Uuid, (u64, u64)>> = vec![HashMap::new(); products];
    for op in &history.ops {
        if let (OpKind::Cancel { product, order_id }, Outcome::Cancelled) = (&op.kind, &op.outcome)
            && *product < products
        {
            let span = given_back[*product].entry(*order_id).or_insert((op.invoke_ms, op.complete_ms));
            if op.complete_ms < span.1 {
                *span = (op.invoke_ms, op.complete_ms);
            }
        }
    }
    let given_back: Vec<Vec<(u64, u64)>> = given_back
        .into_iter()
        .zip(&reserving)
        .map(|(released, keys)| {
            keys.keys()
                .filter_map(|(buyer, key)| {
                    let user = ids.user_ids.get(*buyer)?;
                    released.get(&flashsale::clock::derive_order_id(*user, key)).copied()
                })
                .collect()
        })
        .collect();
    let restarts: Vec<u64> = history
        .faults
        .iter()
        .filter(|f| matches!(f.fault, Fault::KillRestart { target: Backend::Redis, .. }))
        .filter(|f| f.phase == FaultPhase::Start)
        .map(|f| f.at_ms)
        .collect();
    let live: HashSet<Uuid> =
        state.products.iter().flat_map(live_orders).filter_map(|order| order.order_id.parse().ok()).collect();
    let sorted = |times: Vec<u64>| {
        let mut times = times;
        times.sort_unstable();
        times
    };
    let confirmed: Vec<Vec<u64>> = confirmed
        .into_iter()
        .map(|orders| sorted(orders.into_iter().filter(|(id, _)| live.contains(id)).map(|(_, at)| at).collect()))
        .collect();
    let reserving: Vec<Vec<u64>> = reserving.into_iter().map(|keys| sorted(keys.into_values().collect())).collect();
    let bounds: Vec<StockBounds> = (0..products).map(|index| StockBounds::of(plan, history, index)).collect();
    for op in &history.ops {
        let (OpKind::Read { product }, Outcome::Read { remaining }) = (&op.kind, &op.outcome) else { continue };
        let Some(planned) = plan.products.get(*product).map(|p| p.stock) else { continue };
        let stock = bounds[*product].most_by(op.complete_ms);
        c.check();
        // Orders confirmed strictly before the read began; keys reserving no later than it ended.
        let taken = confirmed[*product].partition_point(|at| *at < op.invoke_ms) as i64;
        let released = given_back[*product]
            .iter()
            .filter(|(sent, answered)| {
                *answered < op.invoke_ms && !restarts.iter().any(|at| (*sent..=op.complete_ms).contains(at))
            })
            .count() as i64;
        let may_hold = reserving[*product].partition_point(|at| *at <= op.complete_ms) as i64 - released;
        if *remaining > stock - taken {
            c.violate(
                format!("a read showed {remaining} left, but {taken} of {stock} units were confirmed before it began"),
                Some(*product),
                vec![op.buyer],
                Some(op.complete_ms),
            );
        } else if *remaining < planned - may_hold {
            c.violate(
                format!(
                    "a read showed {remaining} left, but at most {may_hold} of {planned} units could be reserved by its end"
                ),
                Some(*product),
                vec![op.buyer],
                Some(op.complete_ms),
            );
        }
    }
    // A stock event was published when it was received or earlier, perhaps long before
    // (a subscriber may lag): the same bounds as a read that began at the opening and
    // ended when the event was received.
    for event in &history.stock_events {
        let Some(planned) = plan.products.get(event.product).map(|p| p.stock) else { continue };
        let stock = bounds[event.product].most_by(event.at_ms);
        let may_hold = reserving[event.product].partition_point(|at| *at <= event.at_ms) as i64;
        c.check();
        if event.remaining > stock {
            c.violate(
                format!("a stock event reported {} left of a stock of at most {stock}", event.remaining),
                Some(event.product),
                vec![],
                Some(event.at_ms),
            );
        } else if event.remaining < planned - may_hold {
            c.violate(
                format!(
                    "a stock event reported {} left, but at most {may_hold} of {planned} units could be reserved by \
                     its receipt",
                    event.remaining
                ),
                Some(event.product),
                vec![],
                Some(event.at_ms),
            );
        }
    }
    c.finish()
}

/// Invariant 9. Once a cancellation answered 200, the order is released for good: its
/// document is not live at the end, and no request of its key sent after that answer
/// got a fresh order (201 or 202 not replayed) or `already-purchased` (which only a
/// live order of the key's own can justify, and it has none). `order-released`, a
/// replayed answer, and `sold-out` are what such a request may get.
fn released_stays_released(ids: &Identities, history: &History, state: &FinalState, cancels: &Cancels) -> Verdict {
    let mut c = Collector::new(Invariant::ReleasedStaysReleased);
    let mut released: Vec<(&Uuid, &u64)> = cancels.released.iter().collect();
    released.sort();
    let live: HashMap<&str, usize> = state
        .products
        .iter()
        .enumerate()
        .flat_map(|(index, product)| live_orders(product).map(move |order| (order.order_id.as_str(), index)))
        .collect();
    for (order_id, at) in &released {
        c.check();
        if let Some(index) = live.get(order_id.to_string().as_str()) {
            c.violate(
                format!("order {order_id}, released at {at} ms, is live in MongoDB at the end"),
                Some(*index),
                vec![],
                Some(**at),
            );
        }
    }
    for op in &history.ops {
        let OpKind::Buy { product, key } = &op.kind else { continue };
        let Some(user) = ids.user_ids.get(op.buyer) else { continue };
        let order_id = flashsale::clock::derive_order_id(*user, key);
        let Some(at) = cancels.released.get(&order_id).filter(|at| op.invoke_ms > **at) else { continue };
        c.check();
        let wrong = match &op.outcome {
            Outcome::Ok { status, replayed: false, .. } => Some(format!("a fresh {status}")),
            Outcome::Fail { problem, .. } if problem == "already-purchased" => Some(problem.clone()),
            _ => None,
        };
        if let Some(wrong) = wrong {
            c.violate(
                format!("key {key:?} was answered {wrong} after its order {order_id} was released (at {at} ms)"),
                Some(*product),
                vec![op.buyer],
                Some(op.complete_ms),
            );
        }
    }
    c.finish()
}

fn conservation(plan: &Plan, history: &History, state: &FinalState) -> Verdict {
    let mut c = Collector::new(Invariant::Conservation);
    let loss_ms = last_redis_data_loss_ms(history);
    for (index, product) in state.products.iter().enumerate() {
        c.check();
        let bounds = StockBounds::of(plan, history, index);
        let live = live_orders(product).count() as i64;
        let released = product.orders.iter().any(|o| !o.live);
        if product.deleted {
            // No sale state to hold the stock: whether it is gone is invariant 10's.
            continue;
        }
        let Some(sale) = product.redis else {
            c.violate("the sale state is missing from Redis after healing".into(), Some(index), vec![], None);
            continue;
        };
        let stock = sale.stock_total;
        if let Some(recorded) = product.recorded_stock.filter(|recorded| stock < *recorded) {
            c.violate(
                format!("Redis says stock {stock} but MongoDB's product document records {recorded}"),
                Some(index),
                vec![],
                None,
            );
        }
        if let Some(revised) = product.revised_stock.filter(|revised| stock > *revised) {
            c.violate(
                format!("Redis says stock {stock} but no revision of the product records more than {revised}"),
                Some(index),
                vec![],
                None,
            );
        }
        if stock < bounds.least() || stock > bounds.most() {
            c.violate(
                format!(
                    "Redis says stock {stock} but the restocks sent allow {}..={} units",
                    bounds.least(),
                    bounds.most()
                ),
                Some(index),
                vec![],
                None,
            );
        }
        let free = sale.raw_remaining();
        if free + live != stock {
            c.violate(
                format!("{free} free units + {live} live orders = {} ≠ stock {stock} (stock leak)", free + live),
                Some(index),
                vec![],
                None,
            );
        }
        if sale.orders_held != live {
            c.violate(
                format!("Redis holds {} orders but MongoDB {live} live orders", sale.orders_held),
                Some(index),
                vec![],
                None,
            );
        }
        // A sold-out answer is legal only if the stock was really gone: with units left
        // at the end, any sold-out given after the last Redis data loss (which
        // legitimately frees in-flight reservations) and after the product's last
        // cancellation could have freed a unit was premature. (A released document with
        // no cancellation of this product in the history: no such bound, no check.)
        let release_bound = last_release_bound_ms(history, state, index);
        if free > 0 && (release_bound.is_some() || !released) {
            let since = loss_ms.max(release_bound).max(bounds.settled_by(history));
            let premature: Vec<_> = history
                .ops
                .iter()
                .filter(|op| matches!(&op.kind, OpKind::Buy { product, .. } if *product == index))
                .filter(|op| op.outcome.problem() == Some("sold-out"))
                .filter(|op| since.is_none_or(|since| op.invoke_ms > since))
                .collect();
            if let Some(first) = premature.first() {
                c.violate(
                    format!("{} sold-out answers while {free} units were never sold", premature.len()),
                    Some(index),
                    premature.iter().take(10).map(|op| op.buyer).collect(),
                    Some(first.complete_ms),
                );
            }
        }
    }
    c.finish()
}

fn self_checks(plan: &Plan, history: &History, state: &FinalState) -> Vec<SelfCheckResult> {
    let sold_out = history.ops.iter().filter(|op| op.outcome.problem() == Some("sold-out")).count();
    // A replay: the server answered a key that had already bought (from the idempotency
    // record, which says `Idempotent-Replayed`, or from the sale state's order record).
    let mut bought: HashSet<(usize, &str)> = HashSet::new();
    let mut replayed = 0;
    let mut by_completion: Vec<_> = history.ops.iter().collect();
    by_completion.sort_by_key(|op| (op.complete_ms, op.seq));
    for op in by_completion {
        if let (OpKind::Buy { key, .. }, Outcome::Ok { replayed: flagged, .. }) = (&op.kind, &op.outcome) {
            if !bought.insert((op.buyer, key.as_str())) || *flagged {
                replayed += 1;
            }
        }
    }

    // A retry after an unknown outcome: an info followed by a later request with the same
    // key. A MongoDB outage alone makes no unknown outcome (the server answers 202
    // pending in bounded time), so under that mix the retry must follow a 202 instead.
    let retry_after = |outcome: &Outcome| match plan.options.fault_mix {
        FaultMix::MongoOutage => matches!(outcome, Outcome::Ok { status: 202, .. }),
        _ => outcome.is_info(),
    };
    let mut uncertain: HashMap<(usize, &str), u64> = HashMap::new();
    for op in &history.ops {
        if let (OpKind::Buy { key, .. }, true) = (&op.kind, retry_after(&op.outcome)) {
            let entry = uncertain.entry((op.buyer, key.as_str())).or_insert(op.complete_ms);
            *entry = (*entry).min(op.complete_ms);
        }
    }
    let retried = history
        .ops
        .iter()
        .filter(|op| match &op.kind {
            OpKind::Buy { key, .. } => uncertain.get(&(op.buyer, key.as_str())).is_some_and(|at| op.invoke_ms >= *at),
            _ => false,
        })
        .count();
    let retried_what = match plan.options.fault_mix {
        FaultMix::MongoOutage => "a 202 pending answer",
        _ => "an unknown outcome",
    };

    let started: HashSet<usize> =
        history.faults.iter().filter(|f| f.phase == FaultPhase::Start).map(|f| f.index).collect();
    let healed: HashSet<usize> =
        history.faults.iter().filter(|f| f.phase == FaultPhase::Heal).map(|f| f.index).collect();
    let missing: Vec<usize> = (0..plan.faults.len()).filter(|i| !started.contains(i) || !healed.contains(i)).collect();

    vec![
        SelfCheckResult {
            check: SelfCheck::SoldOut,
            passed: sold_out > 0,
            detail: format!("{sold_out} sold-out answers"),
        },
        SelfCheckResult {
            check: SelfCheck::RetriedAfterTimeout,
            // Without faults a run may see no unknown outcome at all; with faults it must.
            passed: retried > 0 || plan.faults.is_empty(),
            detail: format!("{retried} requests retried a key after {retried_what}"),
        },
        SelfCheckResult { check: SelfCheck::KeyReplayed, passed: replayed > 0, detail: format!("{replayed} replays") },
        SelfCheckResult {
            check: SelfCheck::FaultsFired,
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                format!("{} of {} faults started and healed", plan.faults.len(), plan.faults.len())
            } else {
                format!("faults {missing:?} did not both start and heal")
            },
        },
        SelfCheckResult {
            check: SelfCheck::Drained,
            passed: state.drained,
            detail: format!(
                "pending sets {} in {} ms",
                if state.drained { "empty, live stock caught up" } else { "NOT empty or live stock behind" },
                state.drain_ms
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, OpKind, Outcome};
    use crate::plan::{FaultMix, PlanOptions, Topology};
    use flashsale::clock::derive_order_id;

    fn plan() -> Plan {
        let mut plan = Plan::generate(PlanOptions {
            seed: 1,
            buyers: 3,
            products: 1,
            stock_per_product: 2,
            instances: 1,
            topology: Topology::Single,
            fault_mix: FaultMix::None,
            duration_ms: 5_000,
            partition: false,
        })
        .expect("plan");
        plan.products[0].one_per_user = true;
        plan
    }

    fn ids() -> Identities {
        Identities { product_ids: vec![Uuid::from_u128(100)], user_ids: (1..=3).map(Uuid::from_u128).collect() }
    }

    fn buy(seq: u64, buyer: usize, key: &str, at: u64, outcome: Outcome) -> Op {
        Op {
            seq,
            buyer,
            instance: 0,
            kind: OpKind::Buy { product: 0, key: key.into() },
            invoke_ms: at,
            complete_ms: at + 5,
            outcome,
        }
    }

    fn ok(buyer: usize, key: &str, unit: i64, replayed: bool) -> Outcome {
        Outcome::Ok { status: 201, order_id: derive_order_id(ids().user_ids[buyer], key), unit, replayed }
    }

    fn sold_out() -> Outcome {
        Outcome::Fail { status: 409, problem: "sold-out".into() }
    }

    fn stored(buyer: usize, key: &str, unit: i64) -> StoredOrder {
        StoredOrder {
            order_id: derive_order_id(ids().user_ids[buyer], key).to_string(),
            user_id: ids().user_ids[buyer].to_string(),
            unit: Some(unit),
            live: true,
        }
    }

    fn state(orders: Vec<StoredOrder>, next_unit: i64) -> FinalState {
        FinalState {
            products: vec![FinalProduct {
                product_id: Uuid::from_u128(100),
                redis: Some(RedisSale {
                    stock_total: 2,
                    next_unit,
                    free_count: 0,
                    pending: 0,
                    orders_held: orders.len() as i64,
                }),
                orders,
                recorded_stock: Some(2),
                revised_stock: Some(2),
                deleted: false,
            }],
            drained: true,
            drain_ms: 0,
        }
    }

    fn violated(report: &Report) -> Vec<Invariant> {
        report.verdicts.iter().filter(|v| !v.held).map(|v| v.invariant).collect()
    }

    /// Two buyers buy the two units (one retry replayed), the third is sold out.
    fn good_history() -> History {
        History {
            ops: vec![
                buy(0, 0, "a", 0, ok(0, "a", 1, false)),
                buy(1, 1, "b", 1, Outcome::Info { status: 0, reason: "timeout".into() }),
                buy(2, 1, "b", 20, ok(1, "b", 2, true)),
                buy(3, 2, "c", 30, sold_out()),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_correct_history_holds_every_invariant() {
        let report = check(&plan(), &ids(), &good_history(), &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        assert!(report.passed(), "{:#?}", report.self_checks);
    }

    #[test]
    fn a_third_order_on_two_units_is_an_oversell_and_negative_stock() {
        let mut history = good_history();
        history.ops[3] = buy(3, 2, "c", 30, ok(2, "c", 3, false));
        let report =
            check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2), stored(2, "c", 3)], 4));
        let violated = violated(&report);
        assert!(violated.contains(&Invariant::NoOversell));
        assert!(violated.contains(&Invariant::NonNegativeStock));
    }

    fn in_flight() -> Outcome {
        Outcome::Fail { status: 409, problem: "idempotency-in-flight".into() }
    }

    #[test]
    fn an_in_flight_refusal_needs_an_attempt_of_the_key_that_may_still_hold_it() {
        let state = state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3);
        // Refused while the first attempt ran, and once more within its lease after the
        // client gave up on it: both explained.
        let mut history = good_history();
        history.ops[1] = buy(1, 1, "b", 1, Outcome::Info { status: 0, reason: "timeout".into() });
        history.ops.insert(2, buy(4, 1, "b", 3, in_flight()));
        history.ops.insert(3, buy(5, 1, "b", 4_000, in_flight()));
        let report = check(&plan(), &ids(), &history, &state);
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);

        // Refused long after every attempt of the key was over: the key is stuck.
        history.ops.insert(4, buy(6, 1, "b", 10_000, in_flight()));
        let report = check(&plan(), &ids(), &history, &state);
        assert_eq!(violated(&report), vec![Invariant::Idempotency], "{:#?}", report.verdicts);
        // Another in-flight refusal explains nothing: it claimed nothing.
        history.ops[1] = buy(1, 1, "b", 1, in_flight());
        history.ops[4] = buy(6, 1, "b", 25, in_flight());
        let report = check(&plan(), &ids(), &history, &state);
        assert_eq!(violated(&report), vec![Invariant::Idempotency], "{:#?}", report.verdicts);
    }

    #[test]
    fn the_checkers_lease_is_the_servers() {
        let config = flashsale::config::Config::for_local("redis://x", "mongodb://x", "db", "fs");
        assert_eq!(config.idempotency_lease_ms, IDEMPOTENCY_LEASE_MS);
    }

    fn read(seq: u64, buyer: usize, at: u64, remaining: i64) -> Op {
        Op {
            seq,
            buyer,
            instance: 0,
            kind: OpKind::Read { product: 0 },
            invoke_ms: at,
            complete_ms: at + 1,
            outcome: Outcome::Read { remaining },
        }
    }

    fn stock_seen_held(reads: Vec<Op>) -> bool {
        let mut history = good_history();
        history.ops.extend(reads);
        let report = check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        !violated(&report).contains(&Invariant::StockSeen)
    }

    #[test]
    fn every_remaining_seen_lies_between_the_confirmed_orders_and_the_keys_that_may_hold_a_unit() {
        // Before any request: the whole stock. While "b" is unknown: 1 or 2 (not 0: only
        // two keys could hold a unit, "c" was refused). After both 201s: none.
        assert!(stock_seen_held(vec![read(10, 2, 0, 2), read(11, 2, 10, 1), read(12, 2, 40, 0)]));
        assert!(!stock_seen_held(vec![read(10, 2, 40, 1)]), "a unit shown free after both were confirmed");
        assert!(!stock_seen_held(vec![read(10, 2, 0, 3)]), "more than the stock");
        // A read that ended at 0: only key "a" (sent at 0) could hold a unit by then.
        let early = Op { complete_ms: 0, ..read(10, 2, 0, 0) };
        assert!(!stock_seen_held(vec![early]), "two units gone when one key could hold one");
        // A read begun at the very moment of a 201 need not see it.
        assert!(stock_seen_held(vec![read(10, 2, 5, 2)]));
        // A key whose request reserved, and whose order was cancelled before that request
        // answered (`order-released`), held a unit all the same.
        let early = Op { complete_ms: 0, ..read(10, 2, 0, 0) };
        let released = |problem: &str| Op {
            seq: 11,
            buyer: 2,
            instance: 0,
            kind: OpKind::Buy { product: 0, key: "z".into() },
            invoke_ms: 0,
            complete_ms: 30,
            outcome: Outcome::Fail { status: 409, problem: problem.into() },
        };
        assert!(stock_seen_held(vec![early.clone(), released("order-released")]));
        assert!(!stock_seen_held(vec![early, released("sold-out")]), "a refused key held nothing");
    }

    #[test]
    fn a_unit_a_cancellation_gave_back_is_seen_free_by_a_read_begun_after_its_answer() {
        // Order "a" released at 100..105; "b" holds the other unit.
        let run = |read_at: u64, remaining: i64, restart_at: Option<u64>| {
            let mut history = good_history();
            history.ops.push(cancel(4, 0, "a", 100, Outcome::Cancelled));
            history.ops.push(read(5, 2, read_at, remaining));
            if let Some(at) = restart_at {
                history.faults.push(crate::history::FaultEvent {
                    index: 0,
                    at_ms: at,
                    fault: Fault::KillRestart { target: Backend::Redis, persistent: true },
                    phase: FaultPhase::Start,
                    detail: String::new(),
                });
            }
            let state = state_after_a_is_released();
            !violated(&check(&plan(), &ids(), &history, &state)).contains(&Invariant::StockSeen)
        };
        assert!(run(200, 1, None));
        assert!(!run(200, 0, None), "the released unit shown taken");
        assert!(run(102, 0, None), "a read sent before the cancellation's answer may miss it");
        assert!(run(200, 0, Some(150)), "a Redis restart since may have brought back the state before the release");
    }

    /// The final state once buyer 0's order "a" is released: its tombstone in MongoDB,
    /// its unit free in Redis, "b" holding the other.
    fn state_after_a_is_released() -> FinalState {
        let tombstone = StoredOrder { unit: None, live: false, ..stored(0, "a", 1) };
        let mut state = state(vec![tombstone, stored(1, "b", 2)], 3);
        if let Some(redis) = state.products[0].redis.as_mut() {
            redis.free_count = 1;
            redis.orders_held = 1;
        }
        state
    }

    fn cancel(seq: u64, buyer: usize, key: &str, at: u64, outcome: Outcome) -> Op {
        let order_id = derive_order_id(ids().user_ids[buyer], key);
        Op {
            seq,
            buyer,
            instance: 0,
            kind: OpKind::Cancel { product: 0, order_id },
            invoke_ms: at,
            complete_ms: at + 5,
            outcome,
        }
    }

    /// Buyer 0's order "a" cancelled at 100 (its tombstone in MongoDB, its unit back in
    /// Redis), then `after` answered to its key at 200.
    fn released_then(after: Outcome) -> Report {
        let mut history = good_history();
        history.ops.push(cancel(4, 0, "a", 100, Outcome::Cancelled));
        history.ops.push(buy(5, 0, "a", 200, after));
        let state = state_after_a_is_released();
        check(&plan(), &ids(), &history, &state)
    }

    #[test]
    fn a_restocked_unit_may_be_sold_and_must_be_in_the_live_stock() {
        // Buyer 2 buys a third unit after the administrator added one.
        let run = |restocked: bool, live_stock: i64| {
            let mut history = good_history();
            if restocked {
                history.ops.push(Op {
                    seq: 4,
                    buyer: crate::history::ADMIN,
                    instance: 0,
                    kind: OpKind::Restock { product: 0, quantity: 1 },
                    invoke_ms: 50,
                    complete_ms: 55,
                    outcome: Outcome::Restocked { stock_total: 3 },
                });
            }
            history.ops.push(buy(5, 2, "c2", 60, ok(2, "c2", 3, false)));
            let mut state = state(vec![stored(0, "a", 1), stored(1, "b", 2), stored(2, "c2", 3)], 4);
            if let Some(redis) = state.products[0].redis.as_mut() {
                redis.stock_total = live_stock;
            }
            state.products[0].recorded_stock = Some(2 + i64::from(restocked));
            state.products[0].revised_stock = Some(2 + i64::from(restocked));
            violated(&check(&plan(), &ids(), &history, &state))
        };
        assert_eq!(run(true, 3), vec![]);
        assert!(run(false, 3).contains(&Invariant::NoOversell), "a third unit without a restock");
        assert!(run(true, 2).contains(&Invariant::Conservation), "the live stock missed the restock");
    }

    #[test]
    fn a_sold_out_after_a_release_had_time_to_reach_every_instance_is_premature() {
        // Order "a" released at 105 (answer), its unit free at the end: another buyer's
        // sold-out is legal until the release's event may have reached every instance.
        let sold_out_at = |at: u64| {
            let mut history = good_history();
            history.ops.push(cancel(4, 0, "a", 100, Outcome::Cancelled));
            history.ops.push(Op { buyer: 2, ..buy(5, 2, "c2", at, sold_out()) });
            let state = state_after_a_is_released();
            violated(&check(&plan(), &ids(), &history, &state))
        };
        assert_eq!(sold_out_at(105 + RELEASE_EVENT_SLACK_MS - 1), vec![]);
        assert_eq!(sold_out_at(105 + RELEASE_EVENT_SLACK_MS + 1), vec![Invariant::Conservation]);
    }

    #[test]
    fn a_released_order_answers_its_key_released_or_replayed_but_never_a_fresh_order() {
        let released = Outcome::Fail { status: 409, problem: "order-released".into() };
        for (after, allowed) in [
            (released, true),
            (ok(0, "a", 1, true), true),
            (sold_out(), true),
            (ok(0, "a", 1, false), false),
            (Outcome::Fail { status: 409, problem: "already-purchased".into() }, false),
        ] {
            let report = released_then(after.clone());
            let broken = violated(&report);
            assert_eq!(broken.is_empty(), allowed, "{after:?}: {broken:?}");
            if !allowed {
                // An already-purchased after the release is also a refusal with no order
                // behind it (invariant 3).
                assert!(broken.contains(&Invariant::ReleasedStaysReleased), "{after:?}: {broken:?}");
            }
        }
    }

    #[test]
    fn a_released_order_live_again_at_the_end_is_caught() {
        let mut history = good_history();
        history.ops.push(cancel(4, 0, "a", 100, Outcome::Cancelled));
        let report = check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert!(violated(&report).contains(&Invariant::ReleasedStaysReleased));
    }

    /// Buyer 0's key "a" answered 202 at 105 and never stored; Redis lost its data at `loss_at`.
    fn lost_202(loss_at: u64) -> Report {
        let mut history = good_history();
        history.ops[0] = buy(
            0,
            0,
            "a",
            100,
            Outcome::Ok { status: 202, order_id: derive_order_id(ids().user_ids[0], "a"), unit: 1, replayed: false },
        );
        let fault = Fault::KillRestart { target: Backend::Redis, persistent: false };
        history.faults = vec![
            crate::history::FaultEvent {
                index: 0,
                at_ms: loss_at,
                fault,
                phase: FaultPhase::Start,
                detail: String::new(),
            },
            crate::history::FaultEvent {
                index: 0,
                at_ms: loss_at + 1,
                fault,
                phase: FaultPhase::Heal,
                detail: String::new(),
            },
        ];
        let mut state = state(vec![stored(1, "b", 2)], 3);
        if let Some(redis) = state.products[0].redis.as_mut() {
            redis.free_count = 1;
        }
        check(&plan(), &ids(), &history, &state)
    }

    #[test]
    fn a_202_may_be_lost_with_a_redis_data_loss_after_it_but_not_with_one_before_it() {
        assert!(!violated(&lost_202(500)).contains(&Invariant::NoLostOrder), "answered before the loss");
        let before = 105 - LOSS_ANSWER_SLACK_MS - 1;
        assert!(violated(&lost_202(before)).contains(&Invariant::NoLostOrder), "answered after the loss began");
    }

    #[test]
    fn a_201_without_its_document_is_a_lost_order_and_a_leak() {
        let report = check(&plan(), &ids(), &good_history(), &state(vec![stored(0, "a", 1)], 3));
        let violated = violated(&report);
        assert!(violated.contains(&Invariant::NoLostOrder));
        assert!(violated.contains(&Invariant::Conservation));
    }

    #[test]
    fn an_order_nobody_requested_is_a_phantom() {
        let mut phantom = stored(0, "a", 1);
        phantom.order_id = Uuid::from_u128(999).to_string();
        let report = check(&plan(), &ids(), &good_history(), &state(vec![phantom, stored(1, "b", 2)], 3));
        assert!(violated(&report).contains(&Invariant::NoPhantom));
    }

    #[test]
    fn an_order_whose_every_request_was_refused_is_a_phantom() {
        let mut history = good_history();
        history.ops[0] = buy(0, 0, "a", 0, Outcome::Fail { status: 409, problem: "sold-out".into() });
        let report = check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert!(violated(&report).contains(&Invariant::NoPhantom));
    }

    #[test]
    fn two_orders_for_one_key_or_a_hidden_replay_break_idempotency() {
        let mut history = good_history();
        history.ops.push(buy(
            4,
            0,
            "a",
            40,
            Outcome::Ok { status: 201, order_id: Uuid::from_u128(7), unit: 2, replayed: false },
        ));
        assert!(
            violated(&check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3)))
                .contains(&Invariant::Idempotency)
        );

        let mut history = good_history();
        history.ops.push(buy(4, 0, "a", 40, sold_out()));
        assert!(
            violated(&check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3)))
                .contains(&Invariant::Idempotency)
        );
    }

    #[test]
    fn two_live_orders_of_one_user_break_one_per_user() {
        let mut history = good_history();
        history.ops[2] = buy(2, 0, "a2", 20, ok(0, "a2", 2, false));
        let report = check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(0, "a2", 2)], 3));
        assert_eq!(violated(&report), vec![Invariant::OnePerUser]);
    }

    #[test]
    fn a_sold_out_answer_with_a_unit_left_is_premature() {
        let mut history = good_history();
        history.ops[2] = buy(2, 1, "b", 20, sold_out());
        let report = check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1)], 2));
        assert_eq!(violated(&report), vec![Invariant::Conservation]);
    }

    #[test]
    fn already_purchased_refuses_only_a_buyer_who_may_hold_an_order_of_the_product() {
        let already = || Outcome::Fail { status: 409, problem: "already-purchased".into() };
        let run = |extra: Vec<Op>| {
            let mut history = good_history();
            history.ops.extend(extra);
            let state = state_after_a_is_released();
            violated(&check(&plan(), &ids(), &history, &state))
        };
        // Buyer 0's order "a" cancelled at 100..105; a new key sent at 200 is refused.
        assert_eq!(
            run(vec![cancel(4, 0, "a", 100, Outcome::Cancelled), buy(5, 0, "a2", 200, already())]),
            vec![Invariant::OnePerUser]
        );
        // Sent before the cancellation was answered: "a" may still have held its unit.
        assert_eq!(run(vec![cancel(4, 0, "a", 100, Outcome::Cancelled), buy(5, 0, "a2", 102, already())]), vec![]);
        // A buyer who never had a request that may have reserved: refused for nothing.
        assert_eq!(
            run(vec![cancel(4, 0, "a", 100, Outcome::Cancelled), buy(5, 2, "c", 200, already())]),
            vec![Invariant::OnePerUser]
        );
        // Another key of buyer 2 sent meanwhile, its answer unknown, justifies the refusal.
        let unknown = Outcome::Info { status: 0, reason: "timeout".into() };
        assert_eq!(
            run(vec![
                cancel(4, 0, "a", 100, Outcome::Cancelled),
                buy(5, 2, "c1", 150, unknown),
                buy(6, 2, "c", 200, already())
            ]),
            vec![]
        );
    }

    #[test]
    fn a_run_that_never_sold_out_or_replayed_is_vacuous() {
        let history = History { ops: vec![buy(0, 0, "a", 0, ok(0, "a", 1, false))], ..Default::default() };
        let mut final_state = state(vec![stored(0, "a", 1)], 2);
        if let Some(sale) = final_state.products[0].redis.as_mut() {
            sale.next_unit = 2;
        }
        let report = check(&plan(), &ids(), &history, &final_state);
        assert!(report.all_held(), "{:#?}", report.verdicts);
        assert!(report.vacuous());
        let failed: Vec<_> = report.self_checks.iter().filter(|c| !c.passed).map(|c| c.check).collect();
        assert_eq!(failed, vec![SelfCheck::SoldOut, SelfCheck::KeyReplayed]);
    }

    fn change(seq: u64, change: ProductChange, sent: u64, answered: u64, outcome: Outcome) -> Op {
        Op {
            seq,
            buyer: crate::history::ADMIN,
            instance: 0,
            kind: OpKind::Change { product: 0, change },
            invoke_ms: sent,
            complete_ms: answered,
            outcome,
        }
    }

    /// Buyer 0 buys with key "a" at 0, then with key "a2" at `second_at`, both stored.
    fn second_order_by_one_user(changes: Vec<Op>, second_at: u64) -> Report {
        let mut history = good_history();
        history.ops[2] = buy(2, 0, "a2", second_at, ok(0, "a2", 2, false));
        history.ops.extend(changes);
        check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(0, "a2", 2)], 3))
    }

    #[test]
    fn one_per_user_holds_from_the_answer_that_turned_it_on_until_one_turning_it_off_is_sent() {
        let off = |seq, sent, answered, outcome| {
            change(seq, ProductChange::OnePerUser { on: false }, sent, answered, outcome)
        };
        let on =
            |seq, sent, answered, outcome| change(seq, ProductChange::OnePerUser { on: true }, sent, answered, outcome);
        // Turned off at 10..12: a second order at 20 is allowed.
        assert!(violated(&second_order_by_one_user(vec![off(10, 10, 12, Outcome::Changed)], 20)).is_empty());
        // A second order while the rule was off, then turned on again: still allowed.
        let report =
            second_order_by_one_user(vec![off(10, 10, 12, Outcome::Changed), on(11, 100, 105, Outcome::Changed)], 20);
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        // Turned on again at 100..105, the second order at 200: broken.
        let report =
            second_order_by_one_user(vec![off(10, 10, 12, Outcome::Changed), on(11, 100, 105, Outcome::Changed)], 200);
        assert_eq!(violated(&report), vec![Invariant::OnePerUser]);
        // Turning it off got no answer: it may have been off, so no verdict either way.
        let unknown = Outcome::Info { status: 0, reason: "timeout".into() };
        assert!(violated(&second_order_by_one_user(vec![off(10, 10, 12, unknown)], 20)).is_empty());
        // A refusal changed nothing: the rule stayed on.
        let refused = Outcome::Fail { status: 409, problem: "conflict".into() };
        let report = second_order_by_one_user(vec![off(10, 10, 12, refused)], 20);
        assert_eq!(violated(&report), vec![Invariant::OnePerUser]);
        // already-purchased while the rule surely was off.
        let mut history = good_history();
        history.ops.push(off(10, 10, 12, Outcome::Changed));
        history.ops.push(buy(11, 0, "a3", 40, Outcome::Fail { status: 409, problem: "already-purchased".into() }));
        let report = check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert_eq!(violated(&report), vec![Invariant::OnePerUser]);
    }

    #[test]
    fn no_order_is_reserved_while_the_sale_is_closed_nor_sale_ended_answered_while_it_is_open() {
        let close = |sent, answered| change(10, ProductChange::Close, sent, answered, Outcome::Changed);
        let reopen = |sent, answered| change(11, ProductChange::Reopen, sent, answered, Outcome::Changed);
        let run = |ops: Vec<Op>| {
            let mut history = good_history();
            history.ops.extend(ops);
            check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3))
        };
        // Key "b" (sent at 1 and 20) was reserved by 25: a close sent at 10 and answered
        // at 12 came too late to matter, whatever the clocks.
        assert!(violated(&run(vec![close(10, 12)])).is_empty());
        // Closed well before "b" was first sent: broken.
        let mut early = good_history();
        early.ops[1].invoke_ms = 1_000;
        early.ops[2].invoke_ms = 1_020;
        early.ops[2].complete_ms = 1_025;
        early.ops.push(close(10, 12));
        let report = check(&plan(), &ids(), &early, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert_eq!(violated(&report), vec![Invariant::SaleRules]);
        // Within the clocks' skew of the close's answer: no verdict.
        let mut skewed = early.clone();
        skewed.ops[1].invoke_ms = 12 + CLOCK_SKEW_MS - 1;
        let report = check(&plan(), &ids(), &skewed, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        // Reopened before "b" was sent: allowed.
        early.ops.push(reopen(500, 510));
        let report = check(&plan(), &ids(), &early, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3));
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        // sale-ended before any close was sent (and outside the skew): broken.
        let ended = Outcome::Fail { status: 409, problem: "sale-ended".into() };
        let report = run(vec![buy(10, 2, "d", 40, ended.clone()), close(1_000, 1_010)]);
        assert_eq!(violated(&report), vec![Invariant::SaleRules]);
        let report = run(vec![buy(10, 2, "d", 40, ended.clone()), close(40 + 5 + CLOCK_SKEW_MS, 1_000)]);
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
    }

    #[test]
    fn every_stock_event_lies_between_the_stock_and_the_keys_that_may_hold_a_unit() {
        let with_events = |events: &[(u64, i64)]| {
            let mut history = good_history();
            history.stock_events = events
                .iter()
                .map(|&(at_ms, remaining)| crate::history::StockEvent { product: 0, at_ms, remaining })
                .collect();
            violated(&check(&plan(), &ids(), &history, &state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3)))
        };
        assert!(with_events(&[(3, 1), (25, 0), (40, 0)]).is_empty());
        // At 0 ms only key "a" had been sent: one unit at most was taken.
        assert_eq!(with_events(&[(0, 0)]), vec![Invariant::StockSeen]);
        // More than the stock.
        assert_eq!(with_events(&[(40, 3)]), vec![Invariant::StockSeen]);
        assert_eq!(with_events(&[(40, -1)]), vec![Invariant::NonNegativeStock, Invariant::StockSeen]);
    }

    #[test]
    fn no_order_is_answered_before_the_sale_opens_and_no_sale_not_started_after() {
        let stored_state = || state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3);
        let opening_at = |opens_ms| {
            let mut plan = plan();
            plan.products[0].opens_at_ms = opens_ms;
            plan
        };
        // The first order of the good history was answered at 5 ms: within the clocks'
        // skew of an opening at 5 + CLOCK_SKEW_MS, surely before one a millisecond later.
        let report = check(&opening_at(5 + CLOCK_SKEW_MS), &ids(), &good_history(), &stored_state());
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        let report = check(&opening_at(5 + CLOCK_SKEW_MS + 1), &ids(), &good_history(), &stored_state());
        assert_eq!(violated(&report), vec![Invariant::SaleRules]);
        // sale-not-started to a request sent more than the skew after the opening: broken.
        let not_started = Outcome::Fail { status: 409, problem: "sale-not-started".into() };
        let mut history = good_history();
        history.ops.push(buy(4, 2, "d", 40 + CLOCK_SKEW_MS, not_started.clone()));
        let report = check(&opening_at(40), &ids(), &history, &stored_state());
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        history.ops.push(buy(5, 2, "d", 41 + CLOCK_SKEW_MS, not_started));
        let report = check(&opening_at(40), &ids(), &history, &stored_state());
        assert_eq!(violated(&report), vec![Invariant::SaleRules]);
    }

    #[test]
    fn a_deleted_product_takes_no_order_after_its_delete_and_keeps_no_sale_state() {
        let delete = |outcome| change(10, ProductChange::Delete, 10, 12, outcome);
        let mut gone = state(vec![stored(0, "a", 1), stored(1, "b", 2)], 3);
        gone.products[0].deleted = true;
        gone.products[0].redis = None;
        let report = check(
            &plan(),
            &ids(),
            &{
                let mut history = good_history();
                history.ops.push(delete(Outcome::Changed));
                history
            },
            &gone,
        );
        assert!(violated(&report).is_empty(), "{:#?}", report.verdicts);
        // Its sale state still loaded at the end.
        let mut loaded = gone.clone();
        loaded.products[0].redis = state(vec![], 3).products[0].redis;
        let mut history = good_history();
        history.ops.push(delete(Outcome::Changed));
        assert_eq!(violated(&check(&plan(), &ids(), &history, &loaded)), vec![Invariant::SaleRules]);
        // An order first asked for after the delete's answer.
        let mut late = good_history();
        late.ops[1].invoke_ms = 100;
        late.ops[2].invoke_ms = 120;
        late.ops.push(delete(Outcome::Changed));
        assert_eq!(violated(&check(&plan(), &ids(), &late, &gone)), vec![Invariant::SaleRules]);
    }
}
