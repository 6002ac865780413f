//! goose's settings that every scenario shares: `users` goose users, all started within
//! one second, on `base_url`; no console output of goose's own (the load generator
//! reports), no telnet or web control; goose's report files and the earlier goose JSON
//! its deltas are against.

use goose::config::GooseConfiguration;

/// The shared settings; the scenario adds how long each user runs (iterations or time).
pub fn configuration(
    base_url: &str,
    users: usize,
    timeout_s: u32,
    reports: Vec<String>,
    baseline: Option<String>,
) -> GooseConfiguration {
    let mut config = GooseConfiguration::default();
    config.host = Some(base_url.to_owned());
    config.users = Some(users);
    config.increase_rate = Some(users.to_string());
    config.quiet = 1;
    config.no_print_metrics = true;
    config.no_telnet = true;
    config.timeout = Some(timeout_s.to_string());
    config.report_file = reports;
    config.baseline_file = baseline;
    config
}
