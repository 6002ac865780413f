//! What a report's figures are made of, from recorded histories (no server): the window
//! the rates are counted over, the replay check, and the pause before a buyer's retry.

use std::time::{Duration, Instant};

use flashsale_loadgen::check::{ReplayCount, check_replays};
use flashsale_loadgen::record::{Outcome, Recorder};
use flashsale_loadgen::report::ScenarioReport;
use flashsale_loadgen::sale::{MAX_RETRY_AFTER, MAX_RETRY_PAUSE, RETRY_PAUSE, ROUTE_BUY, retry_pause};
use uuid::Uuid;

const SOLD_OUT: &str = "409 https://flashsale.dev/problems/sold-out";

/// Three buyers told an order each (keys `sale-0` to `sale-2`, units 1 to 3).
fn three_acknowledged(recorder: &Recorder) -> Vec<(Uuid, &'static str, Uuid, i64)> {
    let keys = [
        (Uuid::new_v4(), "sale-0", Uuid::new_v4(), 1),
        (Uuid::new_v4(), "sale-1", Uuid::new_v4(), 2),
        (Uuid::new_v4(), "sale-2", Uuid::new_v4(), 3),
    ];
    for (user, key, order, unit) in keys {
        recorder.acknowledge(user, key, order, unit);
    }
    keys.to_vec()
}

#[test]
fn the_replay_check_fails_when_one_replay_names_no_order_though_the_others_match() {
    let recorder = Recorder::new();
    let keys = three_acknowledged(&recorder);
    let (first, second) = (keys[0], keys[1]);
    recorder.replayed(first.0, first.1, Some((first.2, first.3)), "201");
    recorder.replayed(second.0, second.1, Some((second.2, second.3)), "201");
    // The first key again: a replay told sold-out instead of its order.
    recorder.replayed(first.0, first.1, None, SOLD_OUT);

    let (check, count) = check_replays(&recorder.acknowledged());

    assert!(!check.passed, "{check:?}");
    assert_eq!(
        count,
        ReplayCount { acknowledged_keys: 3, replayed_keys: 2, not_replayed_keys: 1, differing_keys: 1, replays: 3 }
    );
    assert!(check.detail.contains(SOLD_OUT) && check.detail.contains("sale-0"), "{}", check.detail);
    assert!(check.detail.contains("1 of 3 acknowledged keys were not replayed"), "{}", check.detail);
}

#[test]
fn the_replay_check_fails_when_one_replay_names_another_order_though_the_others_match() {
    let recorder = Recorder::new();
    let keys = three_acknowledged(&recorder);
    for (user, key, order, unit) in &keys {
        recorder.replayed(*user, key, Some((*order, *unit)), "201");
    }
    let (user, key, _, unit) = keys[2];
    recorder.replayed(user, key, Some((Uuid::new_v4(), unit)), "201");

    let (check, count) = check_replays(&recorder.acknowledged());

    assert!(!check.passed, "{check:?}");
    assert_eq!((count.differing_keys, count.not_replayed_keys, count.replays), (1, 0, 4), "{count:?}");
    assert!(check.detail.contains("0 of 3 acknowledged keys were not replayed"), "{}", check.detail);
}

#[test]
fn the_replay_check_passes_when_every_replay_names_its_order_and_says_how_many_keys_were_not_replayed() {
    let recorder = Recorder::new();
    let keys = three_acknowledged(&recorder);
    for (user, key, order, unit) in &keys[..2] {
        recorder.replayed(*user, key, Some((*order, *unit)), "201");
        recorder.replayed(*user, key, Some((*order, *unit)), "201");
    }
    // A replay of a key nobody was told an order for has nothing to be compared with.
    recorder.replayed(Uuid::new_v4(), "sale-9", None, SOLD_OUT);

    let (check, count) = check_replays(&recorder.acknowledged());

    assert!(check.passed, "{check:?}");
    assert_eq!(
        count,
        ReplayCount { acknowledged_keys: 3, replayed_keys: 2, not_replayed_keys: 1, differing_keys: 0, replays: 4 }
    );
    assert!(check.detail.contains("1 of 3 acknowledged keys were not replayed"), "{}", check.detail);
}

#[test]
fn the_rate_window_starts_at_the_first_request_sent_not_at_the_load_drivers_start() {
    let start = Instant::now();
    let recorder = Recorder::starting_at(start);
    // goose starts its users for 16 s before the first one sends anything.
    let first_send = start + Duration::from_secs(16);
    recorder.record_between(ROUTE_BUY, Outcome::Won, first_send, first_send + Duration::from_millis(500), None);
    let later = first_send + Duration::from_secs(1);
    recorder.record_between(ROUTE_BUY, Outcome::SoldOut, later, later + Duration::from_secs(2), None);

    assert_eq!(recorder.active(), Duration::from_secs(3), "from the first send to the last answer");
    assert_eq!(recorder.start_up(), Some(Duration::from_secs(16)));
    let rows = ScenarioReport::rows(&recorder.series(), recorder.active().as_secs_f64());
    for row in &rows {
        assert!((row.per_second - 1.0 / 3.0).abs() < 1e-9, "one answer in 3 s: {row:?}");
    }
    let timeline = recorder.timeline();
    assert_eq!(
        timeline.iter().map(|p| (p.second, p.completed)).collect::<Vec<_>>(),
        vec![(0, 1), (1, 0), (2, 0), (3, 1)]
    );
}

#[test]
fn a_retry_waits_as_retry_after_says_within_its_cap_and_never_less_than_the_backoff() {
    assert_eq!(retry_pause(1, None), RETRY_PAUSE);
    assert_eq!(retry_pause(3, None), RETRY_PAUSE * 3);
    assert_eq!(retry_pause(20, None), MAX_RETRY_PAUSE, "the backoff is capped");
    assert_eq!(retry_pause(1, Some(Duration::from_secs(1))), Duration::from_secs(1), "the server's Retry-After");
    assert_eq!(retry_pause(4, Some(Duration::ZERO)), RETRY_PAUSE * 4, "never below the backoff");
    assert_eq!(retry_pause(1, Some(Duration::from_secs(3_600))), MAX_RETRY_AFTER, "an hour is cut to the cap");
}
