//! The plan of one simulation run: a pure function of the seed and the options. The
//! seed drives a ChaCha stream (`rand_chacha`, pinned to an exact version so a seed
//! plans the same on every machine) that picks the products, every buyer's behaviour
//! and start time, and the schedule of faults. The plan's hash shows at a glance that
//! two runs planned the same.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest number of buyers one run may plan.
pub const MAX_BUYERS: usize = 100_000;
/// Largest number of products one run may plan.
pub const MAX_PRODUCTS: usize = 64;
/// Largest number of server instances one run may start.
pub const MAX_INSTANCES: usize = 8;
/// Shortest run.
pub const MIN_DURATION_MS: u64 = 1_000;
/// Shortest run with faults: each fault needs a slot of its own in the fault window.
pub const MIN_FAULTED_DURATION_MS: u64 = 10_000;
/// Share of buyers (in percent) that go through the full HTTP register → login → OTP flow.
pub const HTTP_LOGIN_PERCENT: u32 = 2;

/// Where Redis runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// One redis-server.
    Single,
    /// A local Redis Cluster of three masters.
    Cluster,
}

/// Which faults the plan may schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FaultMix {
    /// No faults: load and retries only.
    None,
    /// Proxy faults, pauses and restarts of Redis and FerretDB, an instance killed,
    /// `CLIENT PAUSE WRITE`: one of each, in a seeded order, one at a time.
    Default,
    /// MongoDB unreachable (blackholed) across every product's opening: purchases
    /// answer 202 pending and the reconciler must finish them.
    MongoOutage,
    /// Swarm testing, for deterministic mode: each seed chooses which fault kinds are on
    /// (at least three) and how many of each (one to three), at random moments of the
    /// fault window, overlapping each other. In half the seeds Redis data loss stays
    /// before the first MongoDB fault; in the others it may meet one (the protocol's
    /// documented limit: a 202 is as durable as Redis).
    Swarm,
}

/// Everything a plan depends on besides the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    pub seed: u64,
    pub buyers: usize,
    pub products: usize,
    pub stock_per_product: i64,
    pub instances: usize,
    pub topology: Topology,
    pub fault_mix: FaultMix,
    pub duration_ms: u64,
    /// One network partition of Redis or MongoDB added to the default faults
    /// (`--partition`). Not serialised when off, so plans without it hash as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partition: bool,
}

impl PlanOptions {
    /// Refuses options outside the named bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.buyers == 0 || self.buyers > MAX_BUYERS {
            return Err(format!("buyers must be 1..={MAX_BUYERS}"));
        }
        if self.products == 0 || self.products > MAX_PRODUCTS {
            return Err(format!("products must be 1..={MAX_PRODUCTS}"));
        }
        if self.stock_per_product < 1 {
            return Err("stock per product must be at least 1".into());
        }
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return Err(format!("instances must be 1..={MAX_INSTANCES}"));
        }
        if self.duration_ms < MIN_DURATION_MS {
            return Err(format!("duration must be at least {MIN_DURATION_MS} ms"));
        }
        if self.partition && self.fault_mix != FaultMix::Default {
            return Err("a partition is added to the default faults: use it with `--faults default`".into());
        }
        if self.fault_mix != FaultMix::None && self.duration_ms < MIN_FAULTED_DURATION_MS {
            return Err(format!("a run with faults must last at least {MIN_FAULTED_DURATION_MS} ms"));
        }
        Ok(())
    }
}

/// How one buyer behaves (the mix is drawn from the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// One key; retries with the same key on a timeout or a 5xx.
    WellBehaved,
    /// Two concurrent requests with the same key.
    DoubleClicker,
    /// A storm of retries with the same key.
    Impatient,
    /// A new key for every retry: the one-per-user rule must still hold.
    Careless,
    /// Buys one product, then uses the same key on another: expects 422.
    KeyReuser,
    /// Hammers the purchase route: expects 429s, never an extra unit.
    Bot,
    /// Arrives after the sell-out.
    LateBuyer,
}

/// Relative weights of the behaviours, in the order of [`Behaviour::ALL`].
const BEHAVIOUR_WEIGHTS: [u32; 7] = [40, 15, 10, 10, 8, 5, 12];

impl Behaviour {
    pub const ALL: [Behaviour; 7] = [
        Self::WellBehaved,
        Self::DoubleClicker,
        Self::Impatient,
        Self::Careless,
        Self::KeyReuser,
        Self::Bot,
        Self::LateBuyer,
    ];

    /// Whether the buyer's order, if any, is the one of its first key.
    pub fn buys_with_first_key(self) -> bool {
        matches!(self, Self::WellBehaved | Self::DoubleClicker | Self::Impatient | Self::KeyReuser)
    }

    fn draw(rng: &mut ChaCha8Rng) -> Self {
        let total: u32 = BEHAVIOUR_WEIGHTS.iter().sum();
        let mut pick = rng.random_range(0..total);
        for (behaviour, weight) in Self::ALL.iter().zip(BEHAVIOUR_WEIGHTS) {
            if pick < weight {
                return *behaviour;
            }
            pick -= weight;
        }
        Self::WellBehaved
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPlan {
    pub index: usize,
    pub stock: i64,
    pub one_per_user: bool,
    /// When its sale opens, from the start of the run. Openings are staggered over the
    /// fault window, so faults meet sales at their busiest.
    pub opens_at_ms: u64,
    /// Units an administrator adds during the sale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restocks: Vec<RestockPlan>,
    /// Changes an administrator makes to the product during the sale, in time order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ChangePlan>,
}

/// One change to a product by an administrator (`PUT` or `DELETE
/// /api/v1/products/{id}`). Each is idempotent, so it is sent again after an unknown
/// outcome, as an administrator's console would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePlan {
    /// When it is sent, from the start of the run.
    pub at_ms: u64,
    pub change: ProductChange,
}

/// What a change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProductChange {
    /// Turns the one-per-user rule on or off.
    OnePerUser { on: bool },
    /// Ends the sale: its end set to the administrator's clock when first sent.
    Close,
    /// Clears the end of the sale.
    Reopen,
    /// Deletes the product.
    Delete,
}

/// One restock by an administrator (`POST /api/v1/products/{id}/restock`), sent once:
/// a restock is not idempotent, so an unknown outcome is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockPlan {
    /// When it is sent, from the start of the run.
    pub at_ms: u64,
    /// Units added.
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyerPlan {
    pub index: usize,
    pub behaviour: Behaviour,
    /// The product it wants (index into the plan's products).
    pub product: usize,
    /// When it starts, from the opening of the sale.
    pub start_at_ms: u64,
    /// Registers, logs in and verifies its code over HTTP (else its session is made
    /// through the server's own code).
    pub via_http_login: bool,
    /// The instance it talks to first.
    pub instance: usize,
    /// Names its Idempotency-Keys `k1`, `k2`, ... as a client with a per-install counter
    /// does, so other buyers send the same key strings (else `b<index>-k<n>`): an answer
    /// stored for one user must never be replayed to another.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_keys: bool,
    /// An administrator cancels the order of this buyer's first key (a refund) this
    /// long after the buyer starts; the buyer then asks again with that key from a
    /// second device, buys again with a new key, and later retries the old key once
    /// more. Only for buyers whose first key is the one they buy with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_after_ms: Option<u64>,
}

/// One fault at a planned moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Added latency on the TCP proxy in front of Redis or MongoDB.
    ProxyLatency { target: Backend, latency_ms: u64 },
    /// Connections through the proxy are reset.
    ProxyReset { target: Backend },
    /// The proxy delays closing one side after the other closed.
    ProxySlowClose { target: Backend, delay_ms: u64 },
    /// The proxy accepts but never answers.
    ProxyBlackhole { target: Backend },
    /// The store cut off the network and connected again: on the containers backend its
    /// container is disconnected from its network (connections die without a FIN or a
    /// RST, new ones find no route); on local processes, which have no network of their
    /// own, the proxies swallow the traffic as a blackhole does.
    Partition { target: Backend },
    /// SIGSTOP, then SIGCONT after the fault's duration.
    Pause { target: Backend },
    /// SIGKILL and restart; for Redis, with or without persistence.
    KillRestart { target: Backend, persistent: bool },
    /// One server instance killed mid-purchase (and started again).
    KillInstance { instance: usize },
    /// One instance's network path to Redis is slow (a proxy in front of that instance
    /// alone): its commands arrive `latency_ms` late, in order, whether or not it still
    /// waits for them, while the other instances' arrive at once. A write it gave up on
    /// can land after a newer one another instance made.
    SlowLink { instance: usize, latency_ms: u64 },
    /// `CLIENT PAUSE WRITE` on Redis.
    ClientPauseWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Redis,
    Mongo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

/// The whole plan of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub options: PlanOptions,
    pub products: Vec<ProductPlan>,
    pub buyers: Vec<BuyerPlan>,
    pub faults: Vec<FaultPlan>,
}

impl Plan {
    /// Expands the seed into a plan. Pure: the same options always give the same plan.
    pub fn generate(options: PlanOptions) -> Result<Self, String> {
        options.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let mut products: Vec<ProductPlan> = (0..options.products)
            .map(|index| ProductPlan {
                index,
                stock: options.stock_per_product,
                one_per_user: rng.random_bool(0.85),
                opens_at_ms: opening_ms(&options, index),
                restocks: Vec::new(),
                changes: Vec::new(),
            })
            .collect();
        let mut buyers: Vec<BuyerPlan> =
            (0..options.buyers).map(|index| plan_buyer(&mut rng, &options, &products, index)).collect();
        let faults = plan_faults(&mut rng, &options, &products);
        plan_cancellations(&options, &mut buyers);
        plan_restocks(&options, &mut products);
        plan_changes(&options, &mut products);
        Ok(Self { options, products, buyers, faults })
    }

    /// SHA-256 of the plan's canonical JSON, first 16 hex digits.
    /// Reads a plan from a JSON file (the shrinker's output, or an engineer's scenario).
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).map_err(|err| anyhow::anyhow!("reading {}: {err}", path.display()))?;
        let plan: Self = serde_json::from_slice(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        plan.check_references()?;
        Ok(plan)
    }

    /// A plan written by hand may name what does not exist: refuse it before running.
    pub fn check_references(&self) -> anyhow::Result<()> {
        for (position, buyer) in self.buyers.iter().enumerate() {
            anyhow::ensure!(
                buyer.index == position,
                "buyer {position} has index {}: buyers are numbered 0, 1, 2, ...",
                buyer.index
            );
            anyhow::ensure!(
                buyer.product < self.products.len(),
                "buyer {position} wants product {}, which the plan lacks",
                buyer.product
            );
            anyhow::ensure!(
                buyer.cancelled_after_ms.is_none() || buyer.behaviour.buys_with_first_key(),
                "buyer {position} has its order cancelled, but a {:?} buyer does not buy with its first key",
                buyer.behaviour
            );
            anyhow::ensure!(
                buyer.instance < self.options.instances.max(1),
                "buyer {position} talks to instance {}, which the plan lacks",
                buyer.instance
            );
        }
        for (position, product) in self.products.iter().enumerate() {
            anyhow::ensure!(product.index == position, "product {position} has index {}", product.index);
            anyhow::ensure!(
                product.restocks.iter().all(|restock| restock.quantity >= 1),
                "product {position} has a restock of fewer than one unit"
            );
            anyhow::ensure!(
                product.changes.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms),
                "product {position} has changes out of time order"
            );
        }
        for fault in &self.faults {
            if let Some(instance) = fault.fault.instance() {
                anyhow::ensure!(
                    instance < self.options.instances,
                    "a fault acts on instance {instance}, which the plan lacks"
                );
            }
        }
        anyhow::ensure!(
            self.options.buyers == self.buyers.len(),
            "options.buyers is {} but the plan has {} buyers",
            self.options.buyers,
            self.buyers.len()
        );
        Ok(())
    }

    /// Whether two of the plan's faults are on at once (a swarm plan's may be; a shrunk
    /// one's often are not, and then real mode can play it too).
    pub fn faults_overlap(&self) -> bool {
        let mut spans: Vec<(u64, u64)> = self.faults.iter().map(|f| (f.at_ms, f.at_ms + f.duration_ms)).collect();
        spans.sort_unstable();
        spans.windows(2).any(|pair| pair[1].0 < pair[0].1)
    }

    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Buyers per behaviour, in a stable order.
    pub fn behaviour_counts(&self) -> Vec<(Behaviour, usize)> {
        Behaviour::ALL
            .iter()
            .map(|behaviour| (*behaviour, self.buyers.iter().filter(|b| b.behaviour == *behaviour).count()))
            .collect()
    }
}

/// Share of the run over which product openings and faults are spread; the rest lets
/// late buyers arrive and retries settle.
const FAULT_WINDOW_PERCENT: u64 = 60;

fn opening_ms(options: &PlanOptions, index: usize) -> u64 {
    let window = options.duration_ms * FAULT_WINDOW_PERCENT / 100;
    window * index as u64 / options.products as u64
}

fn plan_buyer(rng: &mut ChaCha8Rng, options: &PlanOptions, products: &[ProductPlan], index: usize) -> BuyerPlan {
    let behaviour = Behaviour::draw(rng);
    let product = rng.random_range(0..options.products);
    let opens = products.get(product).map_or(0, |p| p.opens_at_ms);
    // Two in five buyers are there at the opening (some clicking up to 300 ms early, to
    // be told the sale has not started); the rest trickle in over a fifth of the run;
    // late buyers come after the fault window, when the stock should be gone.
    let start_at_ms = match behaviour {
        Behaviour::LateBuyer => {
            options.duration_ms * 70 / 100 + rng.random_range(0..(options.duration_ms * 15 / 100).max(1))
        }
        _ if rng.random_bool(0.4) => opens.saturating_sub(rng.random_range(0..300)),
        _ => opens + rng.random_range(0..(options.duration_ms / 5).max(1)),
    };
    BuyerPlan {
        index,
        behaviour,
        product,
        start_at_ms,
        via_http_login: rng.random_range(0..100) < HTTP_LOGIN_PERCENT,
        instance: rng.random_range(0..options.instances),
        shared_keys: index % SHARED_KEYS_EVERY == SHARED_KEYS_EVERY - 1,
        cancelled_after_ms: None,
    }
}

/// Percent of the buyers who buy with their first key whose order an administrator
/// cancels during the sale; a swarm plan draws one of [`SWARM_CANCELLED_PERCENTS`].
pub const CANCELLED_PERCENT: u32 = 5;
/// The shares of cancelled orders a swarm seed chooses from.
pub const SWARM_CANCELLED_PERCENTS: [u32; 4] = [0, 5, 20, 50];
/// Earliest and latest cancellation, from the buyer's start.
const CANCEL_AFTER_MS: std::ops::Range<u64> = 100..6_000;

/// Picks the buyers whose orders are cancelled, from a stream of its own (seeded by the
/// seed), so the buyers and faults a seed plans are the same with or without them.
fn plan_cancellations(options: &PlanOptions, buyers: &mut [BuyerPlan]) {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x0CA7_CE11_ED00_0000);
    let percent = match options.fault_mix {
        FaultMix::Swarm => SWARM_CANCELLED_PERCENTS[rng.random_range(0..SWARM_CANCELLED_PERCENTS.len())],
        _ => CANCELLED_PERCENT,
    };
    for buyer in buyers.iter_mut().filter(|b| b.behaviour.buys_with_first_key()) {
        if rng.random_range(0..100) < percent {
            buyer.cancelled_after_ms = Some(rng.random_range(CANCEL_AFTER_MS));
        }
    }
}

/// Percent of the products an administrator restocks during the sale; a swarm plan
/// draws one of [`SWARM_RESTOCKED_PERCENTS`].
pub const RESTOCKED_PERCENT: u32 = 25;
/// The shares of restocked products a swarm seed chooses from.
pub const SWARM_RESTOCKED_PERCENTS: [u32; 3] = [0, 25, 100];
/// Earliest restock, from the product's opening; the latest is the end of the fault
/// window, so late buyers find the units.
const RESTOCK_AFTER_OPENING_MS: u64 = 300;

/// Picks the products an administrator restocks (once each, by up to a quarter of the
/// stock), from a stream of its own, so the buyers and faults a seed plans are the same
/// with or without them.
fn plan_restocks(options: &PlanOptions, products: &mut [ProductPlan]) {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x8E57_0C4B_0000_0000);
    let percent = match options.fault_mix {
        FaultMix::Swarm => SWARM_RESTOCKED_PERCENTS[rng.random_range(0..SWARM_RESTOCKED_PERCENTS.len())],
        _ => RESTOCKED_PERCENT,
    };
    let window_end = options.duration_ms * FAULT_WINDOW_PERCENT / 100;
    for product in products.iter_mut() {
        if rng.random_range(0..100) < percent {
            let earliest = product.opens_at_ms + RESTOCK_AFTER_OPENING_MS;
            let at_ms = rng.random_range(earliest..=window_end.max(earliest));
            let quantity = rng.random_range(1..=(product.stock / 4).max(1));
            product.restocks.push(RestockPlan { at_ms, quantity });
        }
    }
}

/// Percent of the products an administrator changes during the sale; a swarm plan draws
/// one of [`SWARM_CHANGED_PERCENTS`].
pub const CHANGED_PERCENT: u32 = 25;
/// The shares of changed products a swarm seed chooses from.
pub const SWARM_CHANGED_PERCENTS: [u32; 3] = [0, 25, 100];
/// How long after the first change of a product its reversal may come (one-per-user
/// turned back, the sale reopened).
const CHANGE_REVERSED_AFTER_MS: std::ops::Range<u64> = 300..3_000;

/// Picks the products an administrator changes, from a stream of its own (the buyers,
/// faults and restocks a seed plans stay the same): one-per-user turned over (and in
/// half of them back again), the sale closed (and in half of them reopened), or the
/// product deleted, during the fault window. The first product is never closed nor
/// deleted, so every run has a sale that can sell out.
fn plan_changes(options: &PlanOptions, products: &mut [ProductPlan]) {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0xC4A6_9E00_0000_0000);
    let percent = match options.fault_mix {
        FaultMix::Swarm => SWARM_CHANGED_PERCENTS[rng.random_range(0..SWARM_CHANGED_PERCENTS.len())],
        _ => CHANGED_PERCENT,
    };
    let window_end = options.duration_ms * FAULT_WINDOW_PERCENT / 100;
    for product in products.iter_mut() {
        if rng.random_range(0..100) >= percent {
            continue;
        }
        let earliest = product.opens_at_ms + RESTOCK_AFTER_OPENING_MS;
        let at_ms = rng.random_range(earliest..=window_end.max(earliest));
        let later = at_ms + rng.random_range(CHANGE_REVERSED_AFTER_MS);
        let reversed = rng.random_bool(0.5);
        let kinds = if product.index == 0 { 1 } else { 3 };
        let (first, second) = match rng.random_range(0..kinds) {
            0 => (
                ProductChange::OnePerUser { on: !product.one_per_user },
                ProductChange::OnePerUser { on: product.one_per_user },
            ),
            1 => (ProductChange::Close, ProductChange::Reopen),
            _ => (ProductChange::Delete, ProductChange::Delete),
        };
        product.changes.push(ChangePlan { at_ms, change: first });
        if reversed && first != ProductChange::Delete {
            product.changes.push(ChangePlan { at_ms: later, change: second });
        }
    }
}

/// One buyer in this many names its keys as every other such buyer does (`shared_keys`).
const SHARED_KEYS_EVERY: usize = 3;

fn plan_faults(rng: &mut ChaCha8Rng, options: &PlanOptions, products: &[ProductPlan]) -> Vec<FaultPlan> {
    let window = (options.duration_ms * FAULT_WINDOW_PERCENT / 100).max(1);
    match options.fault_mix {
        FaultMix::None => Vec::new(),
        FaultMix::MongoOutage => products
            .iter()
            .map(|p| FaultPlan {
                at_ms: p.opens_at_ms.saturating_sub(200),
                duration_ms: (window / options.products as u64).clamp(500, 2_500),
                fault: Fault::ProxyBlackhole { target: Backend::Mongo },
            })
            .collect(),
        FaultMix::Default => default_faults(rng, options, window),
        FaultMix::Swarm => swarm_faults(rng, options, window),
    }
}

/// Fault kinds a swarm plan draws from (each kind with its target and parameters drawn
/// per fault).
const SWARM_KINDS: usize = 10;

/// A swarm plan's faults: a seeded subset of the kinds, each one to three times, at
/// random moments; faults may overlap. Sorted by start.
fn swarm_faults(rng: &mut ChaCha8Rng, options: &PlanOptions, window: u64) -> Vec<FaultPlan> {
    let mut enabled: Vec<usize> = (0..SWARM_KINDS).filter(|_| rng.random_bool(0.5)).collect();
    while enabled.len() < 3 {
        let kind = rng.random_range(0..SWARM_KINDS);
        if !enabled.contains(&kind) {
            enabled.push(kind);
        }
    }
    enabled.sort_unstable();
    let mut faults = Vec::new();
    for kind in enabled {
        for _ in 0..rng.random_range(1..=3) {
            let fault = swarm_fault(rng, options, kind);
            let duration_ms = rng.random_range(100..(window / 4).clamp(101, 3_000));
            let at_ms = rng.random_range(0..window.saturating_sub(duration_ms).max(1));
            faults.push(FaultPlan { at_ms, duration_ms, fault });
        }
    }
    // In half the seeds (drawn from a stream of their own, so the other half plan as
    // before), Redis data loss comes before any MongoDB fault, ending before the first
    // one starts. In the other half it may come anywhere, during a MongoDB fault too:
    // a 202 answered then is lost with Redis's data (the protocol's documented limit,
    // which the checker allows only for a 202 answered before the loss began).
    let loss_anywhere = ChaCha8Rng::seed_from_u64(options.seed ^ 0x1055_A11D_0E5E_0000).random_bool(0.5);
    let first_mongo = faults.iter().filter(|f| f.fault.target() == Some(Backend::Mongo)).map(|f| f.at_ms).min();
    if let Some(first_mongo) = first_mongo.filter(|_| !loss_anywhere) {
        faults.retain(|f| {
            !matches!(f.fault, Fault::KillRestart { target: Backend::Redis, persistent: false })
                || f.at_ms + f.duration_ms < first_mongo
        });
    }
    faults.extend(slow_links(options, window));
    faults.sort_by_key(|f| (f.at_ms, f.duration_ms));
    faults
}

/// A swarm plan's slow links: in half the seeds, one or two, each on one instance's path
/// to Redis, 200 ms to 2.5 s late (past the server's Redis timeout, so the instance
/// gives up on writes that land later). Drawn from a stream of their own, so a seed's
/// other faults plan as before.
fn slow_links(options: &PlanOptions, window: u64) -> Vec<FaultPlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5107_11AC_0000_0000);
    if options.instances < 2 || !rng.random_bool(0.5) {
        return Vec::new();
    }
    (0..rng.random_range(1..=2))
        .map(|_| {
            let fault = Fault::SlowLink {
                instance: rng.random_range(0..options.instances),
                latency_ms: rng.random_range(200..2_500),
            };
            let duration_ms = rng.random_range(100..(window / 4).clamp(101, 3_000));
            let at_ms = rng.random_range(0..window.saturating_sub(duration_ms).max(1));
            FaultPlan { at_ms, duration_ms, fault }
        })
        .collect()
}

fn swarm_fault(rng: &mut ChaCha8Rng, options: &PlanOptions, kind: usize) -> Fault {
    let backend = if rng.random_bool(0.5) { Backend::Redis } else { Backend::Mongo };
    match kind {
        0 => Fault::ProxyLatency { target: backend, latency_ms: rng.random_range(5..400) },
        1 => Fault::ProxyReset { target: backend },
        2 => Fault::ProxyBlackhole { target: backend },
        3 => Fault::ProxySlowClose { target: backend, delay_ms: rng.random_range(100..1_000) },
        4 => Fault::Pause { target: backend },
        5 => Fault::KillRestart { target: Backend::Redis, persistent: true },
        6 => Fault::KillRestart { target: Backend::Mongo, persistent: true },
        7 => Fault::ClientPauseWrite,
        8 if options.instances > 1 => Fault::KillInstance { instance: rng.random_range(0..options.instances) },
        _ => Fault::KillRestart { target: Backend::Redis, persistent: false },
    }
}

/// One fault of each kind, in a seeded order, one at a time across the fault window
/// (overlapping faults would make the timeline unreadable and a heal ambiguous).
fn default_faults(rng: &mut ChaCha8Rng, options: &PlanOptions, window: u64) -> Vec<FaultPlan> {
    let backend = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { Backend::Redis } else { Backend::Mongo };
    let mut kinds = vec![
        Fault::ProxyLatency { target: backend(rng), latency_ms: rng.random_range(5..200) },
        Fault::ProxyReset { target: backend(rng) },
        Fault::ProxyBlackhole { target: backend(rng) },
        Fault::ProxySlowClose { target: backend(rng), delay_ms: rng.random_range(100..1_000) },
        Fault::Pause { target: backend(rng) },
        Fault::KillRestart { target: Backend::Redis, persistent: true },
        Fault::KillRestart { target: Backend::Mongo, persistent: true },
        Fault::ClientPauseWrite,
    ];
    if options.instances > 1 {
        kinds.push(Fault::KillInstance { instance: rng.random_range(0..options.instances) });
    }
    if options.partition {
        kinds.push(Fault::Partition { target: backend(rng) });
    }
    // Fisher-Yates with the plan's stream (not `SliceRandom`, whose algorithm may change).
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.random_range(0..=i));
    }
    // Redis data loss (a restart without persistence) goes before every MongoDB fault: a
    // 202 pending answer is as durable as Redis, and losing both at once is the
    // documented limit of the protocol, not something the checker should flag.
    let first_mongo = kinds.iter().position(|f| f.target() == Some(Backend::Mongo)).unwrap_or(kinds.len());
    kinds.insert(rng.random_range(0..=first_mongo), Fault::KillRestart { target: Backend::Redis, persistent: false });

    let slot = window / kinds.len() as u64;
    let mut at = 0;
    kinds
        .into_iter()
        .map(|fault| {
            let duration_ms = rng.random_range(300..(slot * 2 / 3).clamp(301, 3_000));
            let start = at + rng.random_range(0..(slot - duration_ms.min(slot)).max(1));
            at += slot;
            FaultPlan { at_ms: start, duration_ms, fault }
        })
        .collect()
}

impl Fault {
    /// The backend it acts on, if any.
    pub fn target(&self) -> Option<Backend> {
        match self {
            Self::ProxyLatency { target, .. }
            | Self::ProxyReset { target }
            | Self::ProxySlowClose { target, .. }
            | Self::ProxyBlackhole { target }
            | Self::Partition { target }
            | Self::Pause { target }
            | Self::KillRestart { target, .. } => Some(*target),
            Self::ClientPauseWrite | Self::SlowLink { .. } => Some(Backend::Redis),
            Self::KillInstance { .. } => None,
        }
    }

    /// The server instance it acts on, if it acts on one.
    pub fn instance(&self) -> Option<usize> {
        match self {
            Self::KillInstance { instance } | Self::SlowLink { instance, .. } => Some(*instance),
            _ => None,
        }
    }

    /// Whether it can lose Redis data.
    pub fn loses_redis_data(&self) -> bool {
        matches!(self, Self::KillRestart { target: Backend::Redis, persistent: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64) -> PlanOptions {
        PlanOptions {
            seed,
            buyers: 5_000,
            products: 3,
            stock_per_product: 100,
            instances: 2,
            topology: Topology::Single,
            fault_mix: FaultMix::Default,
            duration_ms: 60_000,
            partition: false,
        }
    }

    #[test]
    fn the_same_seed_plans_the_same_run() {
        let first = Plan::generate(options(1)).expect("plan");
        let second = Plan::generate(options(1)).expect("plan");
        assert_eq!(first, second);
        assert_eq!(first.hash(), second.hash());
    }

    #[test]
    fn different_seeds_plan_different_runs() {
        let hashes: std::collections::HashSet<String> =
            (1..=20).map(|seed| Plan::generate(options(seed)).expect("plan").hash()).collect();
        assert_eq!(hashes.len(), 20);
    }

    #[test]
    fn a_large_plan_mixes_every_behaviour_and_schedules_every_fault_kind() {
        let plan = Plan::generate(options(7)).expect("plan");
        for (behaviour, count) in plan.behaviour_counts() {
            assert!(count > 0, "{behaviour:?} never planned");
        }
        assert!(plan.faults.iter().any(|f| matches!(f.fault, Fault::KillInstance { .. })));
        assert!(plan.faults.iter().all(|f| f.at_ms < plan.options.duration_ms));
        assert!(plan.faults.windows(2).all(|w| w[0].at_ms + w[0].duration_ms <= w[1].at_ms), "faults overlap");
        let loss = plan.faults.iter().position(|f| f.fault.loses_redis_data()).expect("a Redis data loss");
        let mongo = plan.faults.iter().position(|f| f.fault.target() == Some(Backend::Mongo)).expect("a Mongo fault");
        assert!(loss < mongo, "Redis data loss is planned after a MongoDB fault");
        assert!(plan.buyers.iter().filter(|b| b.via_http_login).count() > 0);
    }

    #[test]
    fn a_partition_is_one_more_default_fault_and_leaves_plans_without_it_as_they_were() {
        let without = Plan::generate(options(3)).expect("plan");
        let json = serde_json::to_string(&without).expect("json");
        assert!(!json.contains("partition"), "a plan without a partition names one: {json}");
        let with = Plan::generate(PlanOptions { partition: true, ..options(3) }).expect("plan");
        let partitions = with.faults.iter().filter(|f| matches!(f.fault, Fault::Partition { .. })).count();
        assert_eq!(partitions, 1);
        assert_eq!(with.faults.len(), without.faults.len() + 1);
        assert!(with.faults.windows(2).all(|w| w[0].at_ms + w[0].duration_ms <= w[1].at_ms), "faults overlap");
        let back: Plan = serde_json::from_str(&serde_json::to_string(&with).expect("json")).expect("parse");
        assert_eq!(back, with);
        assert!(
            Plan::generate(PlanOptions { partition: true, fault_mix: FaultMix::Swarm, ..options(3) }).is_err(),
            "a partition outside the default faults is accepted"
        );
    }

    #[test]
    fn cancellations_fall_on_buyers_of_their_first_key_and_change_nothing_else() {
        let plan = Plan::generate(options(7)).expect("plan");
        let cancelled: Vec<&BuyerPlan> = plan.buyers.iter().filter(|b| b.cancelled_after_ms.is_some()).collect();
        let eligible = plan.buyers.iter().filter(|b| b.behaviour.buys_with_first_key()).count();
        assert!(cancelled.iter().all(|b| b.behaviour.buys_with_first_key()));
        assert!(cancelled.iter().all(|b| b.cancelled_after_ms.is_some_and(|at| CANCEL_AFTER_MS.contains(&at))));
        // About CANCELLED_PERCENT of the eligible buyers.
        let expected = eligible * CANCELLED_PERCENT as usize / 100;
        assert!(cancelled.len() > expected / 2 && cancelled.len() < expected * 2, "{} of {eligible}", cancelled.len());
        // The buyers and faults are those the seed planned before cancellations existed.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let products: Vec<ProductPlan> = plan.products.clone();
        for _ in &products {
            rng.random_bool(0.85);
        }
        let first = plan_buyer(&mut rng, &plan.options, &products, 0);
        assert_eq!(BuyerPlan { cancelled_after_ms: None, ..plan.buyers[0].clone() }, first);
        // A plan file with a cancelled buyer of another behaviour is refused.
        let mut wrong = plan.clone();
        let careless = wrong.buyers.iter().position(|b| !b.behaviour.buys_with_first_key()).expect("one");
        wrong.buyers[careless].cancelled_after_ms = Some(500);
        assert!(wrong.check_references().is_err());
    }

    #[test]
    fn options_out_of_bounds_are_refused() {
        let mut bad = options(1);
        bad.buyers = 0;
        assert!(Plan::generate(bad).is_err());
        let mut bad = options(1);
        bad.instances = MAX_INSTANCES + 1;
        assert!(Plan::generate(bad).is_err());
    }
}
