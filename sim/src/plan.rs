//! The plan of one simulation run: a pure function of the seed and the options. The
//! seed drives a ChaCha stream (`rand_chacha`, pinned to an exact version so a seed
//! plans the same on every machine) that picks the products, every buyer's behaviour
//! and start time, and the schedule of faults. The plan's hash shows at a glance that
//! two runs planned the same.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Largest number of buyers one run may plan.
pub const MAX_BUYERS: usize = 100_000;
/// Largest number of products one run may plan.
pub const MAX_PRODUCTS: usize = 64;
/// Largest number of server instances one run may start.
pub const MAX_INSTANCES: usize = 8;
/// Share of buyers (in percent) that go through the full HTTP register → login → OTP flow.
pub const HTTP_LOGIN_PERCENT: u32 = 2;

/// Where Redis runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// One redis-server.
    Single,
    /// A local Redis Cluster of three masters.
    Cluster,
}

/// Which faults the plan may schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FaultMix {
    /// No faults: load and retries only.
    None,
    /// Proxy faults, pauses and restarts of Redis and FerretDB, an instance killed.
    Default,
}

/// Everything a plan depends on besides the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanOptions {
    pub seed: u64,
    pub buyers: usize,
    pub products: usize,
    pub stock_per_product: i64,
    pub instances: usize,
    pub topology: Topology,
    pub fault_mix: FaultMix,
    pub duration_ms: u64,
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
        if self.duration_ms < 1_000 {
            return Err("duration must be at least 1 s".into());
        }
        Ok(())
    }
}

/// How one buyer behaves (the mix is drawn from the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductPlan {
    pub index: usize,
    pub stock: i64,
    pub one_per_user: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// One fault at a planned moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Fault {
    /// Added latency on the TCP proxy in front of Redis or MongoDB.
    ProxyLatency { target: Backend, latency_ms: u64 },
    /// Connections through the proxy are reset.
    ProxyReset { target: Backend },
    /// The proxy accepts but never answers.
    ProxyBlackhole { target: Backend },
    /// SIGSTOP, then SIGCONT after the fault's duration.
    Pause { target: Backend },
    /// SIGKILL and restart; for Redis, with or without persistence.
    KillRestart { target: Backend, persistent: bool },
    /// One server instance killed mid-purchase (and started again).
    KillInstance { instance: usize },
    /// `CLIENT PAUSE WRITE` on Redis.
    ClientPauseWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Redis,
    Mongo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultPlan {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

/// The whole plan of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        let products = (0..options.products)
            .map(|index| ProductPlan { index, stock: options.stock_per_product, one_per_user: rng.random_bool(0.85) })
            .collect();
        let buyers = (0..options.buyers).map(|index| plan_buyer(&mut rng, &options, index)).collect();
        let faults = plan_faults(&mut rng, &options);
        Ok(Self { options, products, buyers, faults })
    }

    /// SHA-256 of the plan's canonical JSON, first 16 hex digits.
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

fn plan_buyer(rng: &mut ChaCha8Rng, options: &PlanOptions, index: usize) -> BuyerPlan {
    let behaviour = Behaviour::draw(rng);
    // Most buyers arrive in the first tenth of the run (the flash); late buyers after
    // the middle, when the stock should be gone.
    let rush_ms = (options.duration_ms / 10).max(1);
    let start_at_ms = match behaviour {
        Behaviour::LateBuyer => options.duration_ms / 2 + rng.random_range(0..options.duration_ms / 4),
        _ => rng.random_range(0..rush_ms),
    };
    BuyerPlan {
        index,
        behaviour,
        product: rng.random_range(0..options.products),
        start_at_ms,
        via_http_login: rng.random_range(0..100) < HTTP_LOGIN_PERCENT,
        instance: rng.random_range(0..options.instances),
    }
}

fn plan_faults(rng: &mut ChaCha8Rng, options: &PlanOptions) -> Vec<FaultPlan> {
    if options.fault_mix == FaultMix::None {
        return Vec::new();
    }
    let backend = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { Backend::Redis } else { Backend::Mongo };
    let mut candidates = vec![
        Fault::ProxyLatency { target: backend(rng), latency_ms: rng.random_range(5..200) },
        Fault::ProxyReset { target: backend(rng) },
        Fault::ProxyBlackhole { target: backend(rng) },
        Fault::Pause { target: backend(rng) },
        Fault::KillRestart { target: Backend::Redis, persistent: rng.random_bool(0.5) },
        Fault::KillRestart { target: Backend::Mongo, persistent: true },
        Fault::ClientPauseWrite,
    ];
    if options.instances > 1 {
        candidates.push(Fault::KillInstance { instance: rng.random_range(0..options.instances) });
    }
    // Faults land in the first 60% of the run, so that healing and draining fit after.
    let window = (options.duration_ms * 6 / 10).max(1);
    let mut faults: Vec<FaultPlan> = candidates
        .into_iter()
        .map(|fault| FaultPlan {
            at_ms: rng.random_range(0..window),
            duration_ms: rng.random_range(200..(options.duration_ms / 10).max(201)),
            fault,
        })
        .collect();
    faults.sort_by_key(|f| f.at_ms);
    faults
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
        assert!(plan.buyers.iter().filter(|b| b.via_http_login).count() > 0);
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
