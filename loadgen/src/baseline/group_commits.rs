//! The server's group-commit counters (`/metrics`), read before and after the winner
//! measure: their deltas give the mean number of orders one `insert_many` carried, the
//! batch size the raw `insert_many` measure then runs at.

use anyhow::Context;
use serde::Serialize;

/// The server's counters, as `/metrics` names them: group commits (one `insert_many`
/// each) and the orders they carried.
pub const GROUP_COMMITS: &str = "flashsale_order_group_commits_total";
pub const ORDERS_GROUP_COMMITTED: &str = "flashsale_orders_group_committed_total";
/// Most documents one raw `insert_many` gets: the server's own ceiling on a group
/// commit (`order_batch_max`).
pub const MAX_INSERT_MANY_BATCH: usize = 1_000;

/// The two counters at one moment, or their growth over a measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupCommits {
    /// Group commits (one unordered `insert_many` each).
    pub commits: u64,
    /// Orders they wrote.
    pub orders: u64,
}

impl GroupCommits {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            commits: self.commits.saturating_sub(earlier.commits),
            orders: self.orders.saturating_sub(earlier.orders),
        }
    }

    /// Orders per group commit; `None` without a group commit (`order_batch_max` 1 writes
    /// each order on its own, outside the counters).
    pub fn mean_batch(self) -> Option<f64> {
        (self.commits > 0).then(|| self.orders as f64 / self.commits as f64)
    }

    /// The batch size of the raw `insert_many` measure: the mean rounded, at least 1 (an
    /// order written on its own is a batch of one), at most [`MAX_INSERT_MANY_BATCH`].
    pub fn batch_size(self) -> usize {
        let mean = self.mean_batch().unwrap_or(1.0).round();
        // Counters are whole numbers; a mean of orders per commit fits a usize.
        (mean as usize).clamp(1, MAX_INSERT_MANY_BATCH)
    }
}

/// The counters of an OpenMetrics text; `None` when either is missing.
pub fn parse(text: &str) -> Option<GroupCommits> {
    let counter = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            // Counters are whole numbers, far below 2^53.
            .map(|value| value as u64)
    };
    Some(GroupCommits { commits: counter(GROUP_COMMITS)?, orders: counter(ORDERS_GROUP_COMMITTED)? })
}

/// The server's counters now, from its `/metrics`.
pub async fn read(client: &reqwest::Client, base_url: &str) -> anyhow::Result<GroupCommits> {
    let text = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("reading /metrics")?
        .text()
        .await
        .context("reading /metrics")?;
    parse(&text).with_context(|| format!("{GROUP_COMMITS} and {ORDERS_GROUP_COMMITTED} in /metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_are_read_from_openmetrics_text() {
        let text = "# HELP flashsale_order_group_commits Group commits of order writes (one insert_many each).\n\
                    # TYPE flashsale_order_group_commits counter\n\
                    flashsale_order_group_commits_total 120\n\
                    flashsale_order_group_commits_created 1.7e9\n\
                    flashsale_orders_group_committed_total 964\n# EOF\n";
        assert_eq!(parse(text), Some(GroupCommits { commits: 120, orders: 964 }));
        assert_eq!(parse("flashsale_order_group_commits_total 3\n"), None, "orders missing");
        assert_eq!(parse("flashsale_order_group_commits_totally 3\nflashsale_orders_group_committed_total 4\n"), None);
    }

    #[test]
    fn the_batch_size_is_the_rounded_mean_of_the_deltas() {
        let before = GroupCommits { commits: 10, orders: 12 };
        let after = GroupCommits { commits: 410, orders: 3_212 };
        let delta = after.since(before);
        assert_eq!(delta, GroupCommits { commits: 400, orders: 3_200 });
        assert_eq!(delta.mean_batch(), Some(8.0));
        assert_eq!(delta.batch_size(), 8);
        assert_eq!(GroupCommits { commits: 4, orders: 30 }.batch_size(), 8, "7.5 rounds up");
        assert_eq!(GroupCommits { commits: 4, orders: 29 }.batch_size(), 7, "7.25 rounds down");
    }

    #[test]
    fn without_group_commits_the_batch_is_one_and_never_beyond_the_servers_ceiling() {
        let none = GroupCommits { commits: 5, orders: 9 }.since(GroupCommits { commits: 5, orders: 9 });
        assert_eq!(none.mean_batch(), None);
        assert_eq!(none.batch_size(), 1);
        assert_eq!(GroupCommits { commits: 1, orders: 5_000 }.batch_size(), MAX_INSERT_MANY_BATCH);
        assert_eq!(GroupCommits { commits: 3, orders: 1 }.batch_size(), 1, "a mean under one half is still one");
        let reset = GroupCommits { commits: 2, orders: 3 }.since(GroupCommits { commits: 7, orders: 50 });
        assert_eq!(reset, GroupCommits { commits: 0, orders: 0 }, "a restarted server's counters never go negative");
    }
}
