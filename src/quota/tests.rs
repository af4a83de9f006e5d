//! The ledger with injected clocks: windows across midnight, month ends and DST changes;
//! reservations and settlement; overrides; rate and concurrency; blocking; seeding; and a
//! burst of concurrent calls against a small limit.

use std::sync::Barrier;

use governor::clock::FakeRelativeClock;
use jiff::civil::DateTime;

use super::*;

type TestLedger = Ledger<ManualClock, FakeRelativeClock>;

struct Rig {
    ledger: TestLedger,
    clock: ManualClock,
    rate: FakeRelativeClock,
}

/// A ledger in `tz` whose wall clock reads `local` (civil time in `tz`).
fn rig(tz: &str, local: &str, limits: Limits) -> Rig {
    let zone = TimeZone::get(tz).unwrap();
    let clock = ManualClock::new(at(&zone, local));
    let rate = FakeRelativeClock::default();
    Rig {
        ledger: Ledger::with_clocks(limits, zone, clock.clone(), rate.clone()),
        clock,
        rate,
    }
}

impl Rig {
    /// Move the wall clock to `local` (civil time in the ledger's zone).
    fn set(&self, local: &str) {
        self.clock.set(at(self.ledger.timezone(), local));
    }
    fn admit(
        &self,
        user: &Arc<str>,
        tokens: u64,
    ) -> Result<Reservation<FakeRelativeClock>, Denied> {
        self.ledger.admit(user, tokens_only(tokens))
    }
}

fn at(tz: &TimeZone, local: &str) -> Timestamp {
    local
        .parse::<DateTime>()
        .unwrap()
        .to_zoned_datetime(tz.clone())
        .unwrap()
        .timestamp()
}

fn utc(rfc3339: &str) -> Timestamp {
    rfc3339.parse().unwrap()
}

/// Generous defaults: only the token limits given can refuse.
fn limits(daily: u64, monthly: u64) -> Limits {
    Limits {
        daily_tokens: daily,
        monthly_tokens: monthly,
        daily_cost_nano_usd: None,
        monthly_cost_nano_usd: None,
        requests_per_minute: NonZeroU32::new(1_000_000).unwrap(),
        max_concurrent: None,
    }
}

fn user(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn tokens_only(tokens: u64) -> Hold {
    Hold {
        tokens,
        cost_nano_usd: 0,
    }
}

fn hours(status: &WindowStatus) -> i64 {
    (status.reset_at.as_second() - status.start.as_second()) / 3_600
}

// === reservations and settlement ===

#[test]
fn an_admitted_call_reserves_its_hold_until_it_settles_to_the_actual_usage() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(10_000, 100_000));
    let ada = user("ada");
    let call = rig.admit(&ada, 3_000).unwrap();
    assert_eq!(call.hold(), tokens_only(3_000));
    assert_eq!(call.admitted_at(), utc("2025-06-10T12:00:00Z"));
    let status = rig.ledger.status("ada");
    assert_eq!(
        (status.day.used_tokens, status.day.reserved_tokens),
        (0, 3_000)
    );
    assert_eq!(status.day.remaining_tokens, 7_000);
    assert_eq!(status.month.reserved_tokens, 3_000);
    assert_eq!(status.in_flight, 1);

    call.settle(1_234, 5_000);
    let status = rig.ledger.status("ada");
    assert_eq!(
        (status.day.used_tokens, status.day.reserved_tokens),
        (1_234, 0)
    );
    assert_eq!(
        (status.month.used_tokens, status.month.reserved_tokens),
        (1_234, 0)
    );
    assert_eq!(status.day.used_cost_nano_usd, 5_000);
    assert_eq!(status.day.remaining_tokens, 8_766);
    assert_eq!(status.in_flight, 0);
}

#[test]
fn dropping_an_unsettled_reservation_releases_it_as_if_nothing_was_consumed() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(10_000, 100_000));
    let bo = user("bo");
    let first = rig.admit(&bo, 4_000).unwrap();
    let second = rig.admit(&bo, 4_000).unwrap();
    assert_eq!(rig.ledger.status("bo").day.reserved_tokens, 8_000);
    drop(first);
    second.settle(100, 0);
    let status = rig.ledger.status("bo");
    assert_eq!(status.day.reserved_tokens, 0);
    assert_eq!(status.day.used_tokens, 100);
    assert_eq!(status.in_flight, 0);
}

#[test]
fn usage_above_the_hold_is_recorded_as_it_is() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(10_000, 100_000));
    let cy = user("cy");
    rig.admit(&cy, 100).unwrap().settle(2_500, 0);
    let status = rig.ledger.status("cy");
    assert_eq!(status.day.used_tokens, 2_500);
    assert_eq!(status.day.reserved_tokens, 0);
}

#[test]
fn a_reservation_is_send_and_static_so_it_can_live_in_a_response_body() {
    fn body_safe<T: Send + 'static>() {}
    body_safe::<Reservation>();
    body_safe::<Reservation<FakeRelativeClock>>();
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Ledger>();
}

// === the rule: refuse once recorded + reserved has reached a limit ===

#[test]
fn a_call_is_refused_once_recorded_plus_reserved_reaches_the_limit_and_not_before() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000, 100_000));
    let di = user("di");
    rig.admit(&di, 0).unwrap().settle(600, 0);
    // 600 used + 399 reserved = 999 < 1,000: the next call is still admitted, and reserves
    // its whole hold although that takes the user past the limit.
    let held = rig.admit(&di, 399).unwrap();
    let over = rig.admit(&di, 5_000).unwrap();
    assert_eq!(rig.ledger.status("di").day.remaining_tokens, 0);
    // 600 + 5,399 reserved ≥ 1,000: refused.
    let denied = rig.admit(&di, 1).unwrap_err();
    assert!(
        matches!(
            denied,
            Denied::Quota {
                window: Window::Day,
                kind: LimitKind::Tokens,
                limit: 1_000,
                used: 600,
                reserved: 5_399,
                ..
            }
        ),
        "{denied:?}"
    );
    // Releasing the reservations brings the user back under the limit.
    drop(over);
    held.settle(399, 0);
    assert_eq!(rig.ledger.status("di").day.used_tokens, 999);
    rig.admit(&di, 1).unwrap().settle(1, 0);
    let denied = rig.admit(&di, 1).unwrap_err();
    assert!(
        matches!(
            denied,
            Denied::Quota {
                used: 1_000,
                reserved: 0,
                ..
            }
        ),
        "{denied:?}"
    );
}

#[test]
fn exactly_at_the_limit_is_refused_and_one_below_is_admitted() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000, 100_000));
    let ed = user("ed");
    rig.admit(&ed, 0).unwrap().settle(999, 0);
    rig.admit(&ed, 0).unwrap().settle(1, 0);
    let denied = rig.admit(&ed, 0).unwrap_err();
    assert_eq!(denied.code(), "daily_token_limit_reached");
    assert!(!denied.should_retry());
    assert_eq!(
        denied.to_string(),
        "daily token limit of 1000 reached for this user; it resets at 2025-06-11T00:00:00Z"
    );
}

#[test]
fn a_quota_refusal_says_when_the_window_resets() {
    let rig = rig("Europe/Berlin", "2025-06-10T23:00:00", limits(10, 100_000));
    let fay = user("fay");
    rig.admit(&fay, 0).unwrap().settle(10, 0);
    let denied = rig.admit(&fay, 0).unwrap_err();
    let Denied::Quota {
        reset_at,
        retry_after_secs,
        ..
    } = denied
    else {
        panic!("{denied:?}")
    };
    assert_eq!(
        reset_at,
        utc("2025-06-10T22:00:00Z"),
        "Berlin midnight, CEST"
    );
    assert_eq!(retry_after_secs, 3_600);
    assert_eq!(denied.retry_after_secs(), Some(3_600));
}

#[test]
fn the_month_is_named_before_the_day_when_both_are_reached() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000, 1_000));
    let gil = user("gil");
    rig.admit(&gil, 0).unwrap().settle(1_000, 0);
    let denied = rig.admit(&gil, 0).unwrap_err();
    assert!(
        matches!(
            denied,
            Denied::Quota {
                window: Window::Month,
                ..
            }
        ),
        "the day's reset would not help: {denied:?}"
    );
    assert_eq!(denied.code(), "monthly_token_limit_reached");
}

#[test]
fn cost_budgets_refuse_like_token_limits_and_unset_means_none() {
    let mut with_budget = limits(1_000_000, 10_000_000);
    with_budget.daily_cost_nano_usd = Some(2_000_000_000); // $2
    with_budget.monthly_cost_nano_usd = Some(5_000_000_000); // $5
    let rig = rig("UTC", "2025-06-10T12:00:00", with_budget);
    let hal = user("hal");
    let hold = Hold {
        tokens: 10,
        cost_nano_usd: 1_500_000_000,
    };
    let call = rig.ledger.admit(&hal, hold).unwrap();
    assert_eq!(
        rig.ledger.status("hal").day.remaining_cost_nano_usd,
        Some(500_000_000)
    );
    // $1.50 reserved < $2: one more call gets in.
    let second = rig.ledger.admit(&hal, hold).unwrap();
    let denied = rig.ledger.admit(&hal, hold).unwrap_err();
    assert!(
        matches!(
            denied,
            Denied::Quota {
                window: Window::Day,
                kind: LimitKind::Cost,
                limit: 2_000_000_000,
                ..
            }
        ),
        "{denied:?}"
    );
    assert_eq!(denied.code(), "daily_cost_budget_reached");
    assert!(
        denied
            .to_string()
            .starts_with("daily cost budget of $2.00 reached")
    );
    call.settle(10, 1_000_000_000);
    second.settle(10, 1_000_000_000);
    // Next day: the daily budget is fresh, the month has $3 of $5 left.
    rig.set("2025-06-11T08:00:00");
    rig.ledger
        .admit(&hal, hold)
        .unwrap()
        .settle(10, 3_000_000_000);
    let denied = rig.ledger.admit(&hal, hold).unwrap_err();
    assert_eq!(denied.code(), "monthly_cost_budget_reached");

    // Without budgets, cost never refuses.
    let free = rig_no_budget();
    let ivy = user("ivy");
    for _ in 0..5 {
        free.ledger
            .admit(&ivy, hold)
            .unwrap()
            .settle(1, u64::MAX / 4);
    }
    let status = free.ledger.status("ivy");
    assert_eq!(status.day.cost_limit_nano_usd, None);
    assert_eq!(status.day.remaining_cost_nano_usd, None);
    assert_eq!(status.day.used_cost_nano_usd, u64::MAX, "saturates");
}

fn rig_no_budget() -> Rig {
    rig("UTC", "2025-06-10T12:00:00", limits(1_000_000, 10_000_000))
}

// === blocked, concurrency, rate: order and behaviour ===

#[test]
fn a_blocked_user_is_refused_before_any_other_check_and_with_the_reason() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(0, 0));
    let jo = user("jo");
    rig.ledger.apply_controls(
        "jo",
        &UserControls {
            blocked: true,
            blocked_reason: Some("abuse report #12".into()),
            overrides: UserOverrides::default(),
        },
    );
    let denied = rig.admit(&jo, 1).unwrap_err();
    assert_eq!(
        denied,
        Denied::Blocked {
            reason: Some("abuse report #12".into())
        },
        "blocked wins over an exhausted quota"
    );
    assert_eq!(denied.retry_after_secs(), None);
    assert!(!denied.should_retry());
    assert!(
        !denied.to_string().contains("abuse"),
        "the reason is the operator's"
    );
    assert!(rig.ledger.status("jo").blocked);
}

#[test]
fn the_concurrency_cap_refuses_the_call_past_it_until_one_ends() {
    let mut capped = limits(1_000_000, 10_000_000);
    capped.max_concurrent = NonZeroU32::new(2);
    let rig = rig("UTC", "2025-06-10T12:00:00", capped);
    let kim = user("kim");
    let a = rig.admit(&kim, 10).unwrap();
    let b = rig.admit(&kim, 10).unwrap();
    let denied = rig.admit(&kim, 10).unwrap_err();
    assert_eq!(denied, Denied::Concurrency { limit: 2 });
    assert_eq!(denied.retry_after_secs(), Some(1));
    assert!(denied.should_retry());
    a.settle(10, 0);
    let c = rig.admit(&kim, 10).unwrap();
    assert_eq!(rig.ledger.status("kim").in_flight, 2);
    drop((b, c));
    assert_eq!(rig.ledger.status("kim").in_flight, 0);
}

#[test]
fn the_request_rate_follows_the_governor_clock() {
    let mut three = limits(1_000_000, 10_000_000);
    three.requests_per_minute = NonZeroU32::new(3).unwrap();
    let rig = rig("UTC", "2025-06-10T12:00:00", three);
    let lu = user("lu");
    for _ in 0..3 {
        rig.admit(&lu, 1).unwrap().settle(1, 0);
    }
    let denied = rig.admit(&lu, 1).unwrap_err();
    assert_eq!(
        denied,
        Denied::Rate {
            limit_per_minute: 3,
            retry_after_secs: 20
        }
    );
    assert!(denied.should_retry());
    rig.rate.advance(Duration::from_secs(19));
    let denied = rig.admit(&lu, 1).unwrap_err();
    assert_eq!(denied.retry_after_secs(), Some(1));
    rig.rate.advance(Duration::from_secs(1));
    rig.admit(&lu, 1).unwrap().settle(1, 0);
    assert!(
        rig.admit(&lu, 1).is_err(),
        "one call per 20 s after the burst"
    );
    // Another user has a bucket of their own.
    rig.admit(&user("max"), 1).unwrap().settle(1, 0);
}

#[test]
fn refused_calls_do_not_take_a_rate_token() {
    let mut tight = limits(100, 1_000_000);
    tight.requests_per_minute = NonZeroU32::new(2).unwrap();
    tight.max_concurrent = NonZeroU32::new(1);
    let rig = rig("UTC", "2025-06-10T12:00:00", tight);
    let mo = user("mo");
    let held = rig.admit(&mo, 1).unwrap(); // token 1 of 2
    for _ in 0..10 {
        assert_eq!(
            rig.admit(&mo, 1).unwrap_err(),
            Denied::Concurrency { limit: 1 }
        );
    }
    held.settle(100, 0);
    for _ in 0..10 {
        assert_eq!(
            rig.admit(&mo, 1).unwrap_err().code(),
            "daily_token_limit_reached"
        );
    }
    // Raise the daily limit: the second token is still there.
    rig.ledger.apply_controls(
        "mo",
        &UserControls {
            overrides: UserOverrides {
                daily_tokens: Some(1_000),
                ..UserOverrides::default()
            },
            ..UserControls::default()
        },
    );
    rig.admit(&mo, 1).unwrap().settle(1, 0);
    assert_eq!(rig.admit(&mo, 1).unwrap_err().code(), "rate_limited");
}

// === windows ===

#[test]
fn the_day_rolls_over_at_local_midnight_in_berlin() {
    let rig = rig(
        "Europe/Berlin",
        "2025-01-14T23:59:59",
        limits(1_000, 1_000_000),
    );
    let ned = user("ned");
    rig.admit(&ned, 0).unwrap().settle(1_000, 0);
    assert!(rig.admit(&ned, 0).is_err());
    let status = rig.ledger.status("ned");
    assert_eq!(
        status.day.reset_at,
        utc("2025-01-14T23:00:00Z"),
        "CET = UTC+1"
    );
    assert_eq!(status.day.start, utc("2025-01-13T23:00:00Z"));

    rig.set("2025-01-15T00:00:00");
    let status = rig.ledger.status("ned");
    assert_eq!(
        (status.day.used_tokens, status.day.remaining_tokens),
        (0, 1_000)
    );
    assert_eq!(status.month.used_tokens, 1_000, "same month");
    rig.admit(&ned, 0).unwrap().settle(10, 0);
}

#[test]
fn the_day_rolls_over_at_local_midnight_in_los_angeles_not_at_utc_midnight() {
    let rig = rig(
        "America/Los_Angeles",
        "2025-07-01T16:59:59",
        limits(1_000, 1_000_000),
    );
    let ola = user("ola");
    rig.admit(&ola, 0).unwrap().settle(1_000, 0);
    // 17:00 PDT is UTC midnight: still the same local day.
    rig.set("2025-07-01T17:00:00");
    assert_eq!(
        rig.admit(&ola, 0).unwrap_err().code(),
        "daily_token_limit_reached"
    );
    rig.set("2025-07-01T23:59:59");
    assert!(rig.admit(&ola, 0).is_err());
    rig.set("2025-07-02T00:00:00");
    rig.admit(&ola, 0).unwrap().settle(1, 0);
    assert_eq!(
        rig.ledger.status("ola").day.start,
        utc("2025-07-02T07:00:00Z")
    );
}

#[test]
fn the_month_rolls_over_from_31_january_to_1_february() {
    let rig = rig("Europe/Berlin", "2025-01-31T23:59:59", limits(1_000, 5_000));
    let pia = user("pia");
    rig.admit(&pia, 0).unwrap().settle(900, 0);
    let status = rig.ledger.status("pia");
    assert_eq!(status.month.used_tokens, 900);
    assert_eq!(status.month.start, utc("2024-12-31T23:00:00Z"));
    assert_eq!(status.month.reset_at, utc("2025-01-31T23:00:00Z"));

    rig.set("2025-02-01T00:00:00");
    let status = rig.ledger.status("pia");
    assert_eq!(status.month.used_tokens, 0);
    assert_eq!(status.day.used_tokens, 0);
    assert_eq!(status.month.start, utc("2025-01-31T23:00:00Z"));
    assert_eq!(
        status.month.reset_at,
        utc("2025-02-28T23:00:00Z"),
        "28 days"
    );
}

#[test]
fn dst_days_last_23_and_25_hours_in_berlin_and_los_angeles() {
    for (tz, short, long) in [
        (
            "Europe/Berlin",
            "2025-03-30T12:00:00",
            "2025-10-26T12:00:00",
        ),
        (
            "America/Los_Angeles",
            "2025-03-09T12:00:00",
            "2025-11-02T12:00:00",
        ),
    ] {
        let rig = rig(tz, short, limits(1_000, 1_000_000));
        assert_eq!(hours(&rig.ledger.status("x").day), 23, "{tz} spring");
        rig.set(long);
        assert_eq!(hours(&rig.ledger.status("x").day), 25, "{tz} autumn");
        rig.set("2025-11-03T12:00:00");
        assert_eq!(hours(&rig.ledger.status("x").day), 24, "{tz} ordinary");
    }
}

#[test]
fn usage_on_a_25_hour_day_counts_until_the_real_local_midnight() {
    let rig = rig(
        "Europe/Berlin",
        "2025-10-26T00:30:00",
        limits(1_000, 1_000_000),
    );
    let quin = user("quin");
    rig.admit(&quin, 0).unwrap().settle(1_000, 0);
    // 24 hours after 00:30 the clock reads 23:30 the same day (an hour repeated at 03:00).
    rig.clock.advance(Duration::from_secs(24 * 3_600));
    assert_eq!(
        rig.ledger.now(),
        at(rig.ledger.timezone(), "2025-10-26T23:30:00")
    );
    assert!(rig.admit(&quin, 0).is_err(), "still 26 October locally");
    rig.clock.advance(Duration::from_secs(30 * 60));
    rig.admit(&quin, 0).unwrap().settle(1, 0);
}

#[test]
fn a_skipped_midnight_starts_the_day_when_the_gap_ends() {
    // Chile moves its clocks from 00:00 to 01:00 on 8 September 2024: that day has no midnight.
    let rig = rig(
        "America/Santiago",
        "2024-09-07T23:59:59",
        limits(1_000, 1_000_000),
    );
    let status = rig.ledger.status("x");
    assert_eq!(
        status.day.reset_at,
        utc("2024-09-08T04:00:00Z"),
        "01:00 -03"
    );
    rig.set("2024-09-08T12:00:00");
    let status = rig.ledger.status("x");
    assert_eq!(status.day.start, utc("2024-09-08T04:00:00Z"));
    assert_eq!(hours(&status.day), 23);
}

#[test]
fn a_call_admitted_before_midnight_and_settled_after_counts_in_the_old_day() {
    let rig = rig(
        "Europe/Berlin",
        "2025-01-14T23:59:59",
        limits(1_000, 1_000_000),
    );
    let rex = user("rex");
    let late = rig.admit(&rex, 900).unwrap();
    rig.set("2025-01-15T00:00:05");
    // The reservation belongs to the 14th: it does not hold back the 15th.
    let status = rig.ledger.status("rex");
    assert_eq!((status.day.used_tokens, status.day.reserved_tokens), (0, 0));
    assert_eq!(
        status.month.reserved_tokens, 900,
        "same month: still reserved"
    );
    let early = rig.admit(&rex, 100).unwrap();
    late.settle(800, 0);
    let status = rig.ledger.status("rex");
    assert_eq!(status.day.used_tokens, 0, "800 went to the 14th");
    assert_eq!(status.day.reserved_tokens, 100);
    assert_eq!(status.month.used_tokens, 800);
    assert_eq!(status.month.reserved_tokens, 100);
    assert_eq!(status.in_flight, 1);
    early.settle(50, 0);
    let status = rig.ledger.status("rex");
    assert_eq!(status.day.used_tokens, 50);
    assert_eq!(status.month.used_tokens, 850);
    assert_eq!(status.month.reserved_tokens, 0);
    assert_eq!(status.in_flight, 0);
}

#[test]
fn a_call_admitted_on_31_january_and_settled_in_february_counts_in_january() {
    let rig = rig(
        "America/Los_Angeles",
        "2025-01-31T23:59:59",
        limits(1_000, 2_000),
    );
    let sol = user("sol");
    let late = rig.admit(&sol, 500).unwrap();
    rig.set("2025-02-01T00:00:01");
    late.settle(1_900, 0);
    let status = rig.ledger.status("sol");
    assert_eq!(status.month.used_tokens, 0);
    assert_eq!(status.month.reserved_tokens, 0);
    assert_eq!(status.day.used_tokens, 0);
    assert_eq!(status.in_flight, 0);
    rig.admit(&sol, 500).unwrap().settle(10, 0);
}

#[test]
fn a_wall_clock_stepped_back_keeps_the_current_window() {
    let rig = rig("UTC", "2025-06-11T00:00:10", limits(1_000, 1_000_000));
    let tam = user("tam");
    rig.admit(&tam, 0).unwrap().settle(400, 0);
    rig.set("2025-06-10T23:59:50");
    let status = rig.ledger.status("tam");
    assert_eq!(status.day.start, utc("2025-06-11T00:00:00Z"));
    assert_eq!(status.day.used_tokens, 400);
    rig.admit(&tam, 0).unwrap().settle(100, 0);
    rig.set("2025-06-11T00:00:20");
    assert_eq!(rig.ledger.status("tam").day.used_tokens, 500);
}

// === overrides ===

fn with_overrides(overrides: UserOverrides) -> UserControls {
    UserControls {
        overrides,
        ..UserControls::default()
    }
}

#[test]
fn an_override_wins_over_the_default_both_ways_and_clearing_it_restores_the_default() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000, 1_000_000));
    let uma = user("uma");
    rig.admit(&uma, 0).unwrap().settle(1_000, 0);
    assert!(rig.admit(&uma, 0).is_err());

    rig.ledger.apply_controls(
        "uma",
        &with_overrides(UserOverrides {
            daily_tokens: Some(5_000),
            ..UserOverrides::default()
        }),
    );
    let status = rig.ledger.status("uma");
    assert_eq!(status.limits.daily_tokens, 5_000);
    assert_eq!(status.overrides.daily_tokens, Some(5_000));
    assert_eq!(status.limits.monthly_tokens, 1_000_000, "not overridden");
    rig.admit(&uma, 0).unwrap().settle(3_000, 0);

    rig.ledger.apply_controls(
        "uma",
        &with_overrides(UserOverrides {
            daily_tokens: Some(500),
            ..UserOverrides::default()
        }),
    );
    assert!(rig.admit(&uma, 0).is_err(), "a lower override also wins");

    rig.ledger.apply_controls("uma", &UserControls::default());
    let status = rig.ledger.status("uma");
    assert_eq!(status.limits, rig.ledger.defaults());
    assert_eq!(status.day.used_tokens, 4_000, "overrides never touch usage");
}

#[test]
fn an_override_of_zero_refuses_every_call_with_a_quota_refusal() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000, 1_000_000));
    let vic = user("vic");
    rig.ledger.apply_controls(
        "vic",
        &with_overrides(UserOverrides {
            monthly_cost_nano_usd: Some(0),
            ..UserOverrides::default()
        }),
    );
    assert_eq!(
        rig.admit(&vic, 0).unwrap_err().code(),
        "monthly_cost_budget_reached"
    );
    rig.ledger.apply_controls(
        "vic",
        &with_overrides(UserOverrides {
            daily_tokens: Some(0),
            ..UserOverrides::default()
        }),
    );
    assert_eq!(
        rig.admit(&vic, 0).unwrap_err().code(),
        "daily_token_limit_reached"
    );
}

#[test]
fn rate_and_concurrency_overrides_apply_on_the_next_call() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000_000, 10_000_000));
    let wyn = user("wyn");
    rig.ledger.apply_controls(
        "wyn",
        &with_overrides(UserOverrides {
            requests_per_minute: Some(1),
            max_concurrent: Some(1),
            ..UserOverrides::default()
        }),
    );
    let held = rig.admit(&wyn, 1).unwrap();
    assert_eq!(
        rig.admit(&wyn, 1).unwrap_err(),
        Denied::Concurrency { limit: 1 }
    );
    held.settle(1, 0);
    assert_eq!(
        rig.admit(&wyn, 1).unwrap_err(),
        Denied::Rate {
            limit_per_minute: 1,
            retry_after_secs: 60
        }
    );
    rig.ledger.apply_controls("wyn", &UserControls::default());
    for _ in 0..100 {
        drop(rig.admit(&wyn, 1).unwrap());
    }
}

#[test]
fn overrides_that_cannot_work_are_refused_naming_the_key() {
    for (patch, key) in [
        (
            OverridesPatch {
                requests_per_minute: Some(Some(0)),
                ..OverridesPatch::default()
            },
            "requests_per_minute",
        ),
        (
            OverridesPatch {
                max_concurrent: Some(Some(0)),
                ..OverridesPatch::default()
            },
            "max_concurrent",
        ),
        (
            OverridesPatch {
                monthly_tokens: Some(Some(u64::MAX)),
                ..OverridesPatch::default()
            },
            "monthly_tokens",
        ),
    ] {
        let err = validate_patch(&patch).unwrap_err();
        assert!(err.key == key, "{err}");
        assert!(err.to_string().starts_with(&format!("`{key}`: ")), "{err}");
    }
    validate_patch(&OverridesPatch {
        daily_tokens: Some(Some(0)),
        daily_cost_nano_usd: Some(None),
        ..OverridesPatch::default()
    })
    .unwrap();
}

// === status ===

#[test]
fn status_of_a_user_never_seen_shows_the_defaults_and_adds_nobody() {
    let rig = rig("Europe/Berlin", "2025-06-10T12:00:00", limits(1_000, 2_000));
    let status = rig.ledger.status("nobody");
    assert!(!status.blocked);
    assert_eq!(status.limits, limits(1_000, 2_000));
    assert_eq!(status.day.remaining_tokens, 1_000);
    assert_eq!(status.month.remaining_tokens, 2_000);
    assert_eq!(status.day.reset_at, utc("2025-06-10T22:00:00Z"));
    assert_eq!(status.month.reset_at, utc("2025-06-30T22:00:00Z"));
    assert_eq!(rig.ledger.tracked_users(), 0);
    assert_eq!(rig.ledger.controls("nobody"), UserControls::default());
}

#[test]
fn limits_from_config_convert_usd_to_nano_usd_and_keep_unset_as_none() {
    let mut config = LimitsConfig::default();
    assert_eq!(
        Limits::from_config(&config),
        Limits {
            daily_tokens: 100_000,
            monthly_tokens: 1_000_000,
            daily_cost_nano_usd: None,
            monthly_cost_nano_usd: None,
            requests_per_minute: NonZeroU32::new(60).unwrap(),
            max_concurrent: None,
        }
    );
    config.daily_cost_usd = Some(2.5);
    config.monthly_cost_usd = Some(0.000_000_001);
    config.max_concurrent = Some(4);
    let limits = Limits::from_config(&config);
    assert_eq!(limits.daily_cost_nano_usd, Some(2_500_000_000));
    assert_eq!(limits.monthly_cost_nano_usd, Some(1));
    assert_eq!(limits.max_concurrent, NonZeroU32::new(4));
}

#[test]
fn set_defaults_applies_to_every_users_next_call() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(1_000, 1_000_000));
    let xan = user("xan");
    rig.admit(&xan, 0).unwrap().settle(1_000, 0);
    assert!(rig.admit(&xan, 0).is_err());
    rig.ledger.set_defaults(limits(2_000, 1_000_000));
    rig.admit(&xan, 0).unwrap().settle(1, 0);
    assert_eq!(rig.ledger.status("xan").limits.daily_tokens, 2_000);
}

// === many threads at once ===

#[test]
fn a_burst_of_concurrent_calls_spends_at_most_one_call_past_the_limit() {
    const LIMIT: u64 = 5_000;
    const ESTIMATE: u64 = 100;
    for round in 0..5 {
        let rig = rig("UTC", "2025-06-10T12:00:00", limits(LIMIT, 1_000_000));
        let ann = user("ann");
        let barrier = Barrier::new(200);
        let refused = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..200_u64 {
                let (rig, ann, barrier, refused) = (&rig, &ann, &barrier, &refused);
                s.spawn(move || {
                    barrier.wait();
                    for n in 0..40_u64 {
                        match rig.admit(ann, ESTIMATE) {
                            Ok(call) => {
                                std::thread::yield_now();
                                match (t + n + round) % 4 {
                                    0 => drop(call), // nothing forwarded
                                    k => call.settle(ESTIMATE - 10 * k, k),
                                }
                            }
                            Err(Denied::Quota { .. }) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                std::thread::yield_now();
                            }
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                });
            }
        });
        assert!(
            refused.load(Ordering::Relaxed) > 0,
            "the burst met the limit"
        );
        let status = rig.ledger.status("ann");
        assert_eq!(status.in_flight, 0);
        assert_eq!(status.day.reserved_tokens, 0);
        assert_eq!(status.month.reserved_tokens, 0);
        assert_eq!(status.day.reserved_cost_nano_usd, 0);
        assert!(
            status.day.used_tokens <= LIMIT + ESTIMATE,
            "round {round}: recorded {} past {LIMIT} + one call",
            status.day.used_tokens
        );
        // Settled below their estimates, the last calls may leave room; the next call then
        // gets in, and is refused otherwise.
        let next = rig.admit(&ann, ESTIMATE);
        assert_eq!(
            next.is_ok(),
            status.day.used_tokens < LIMIT,
            "round {round}: {}",
            status.day.used_tokens
        );
        assert!(
            status.day.used_tokens > LIMIT / 2,
            "round {round}: the burst stopped early at {}",
            status.day.used_tokens
        );
    }
}

#[test]
fn many_users_on_many_threads_keep_their_own_counts() {
    let rig = rig("UTC", "2025-06-10T12:00:00", limits(u64::MAX, u64::MAX));
    let users: Vec<Arc<str>> = (0..500).map(|u| user(&format!("user-{u}"))).collect();
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (rig, users) = (&rig, &users);
            s.spawn(move || {
                for _ in 0..10 {
                    for (i, u) in users.iter().enumerate() {
                        let call = rig.admit(u, 10).unwrap();
                        call.settle(u64::try_from(i).unwrap() + 1, 0);
                    }
                }
            });
        }
    });
    assert_eq!(rig.ledger.tracked_users(), 500);
    for (i, u) in users.iter().enumerate() {
        let status = rig.ledger.status(u);
        assert_eq!(status.day.used_tokens, 80 * (u64::try_from(i).unwrap() + 1));
        assert_eq!(status.day.reserved_tokens, 0);
    }
}

// === configuration ===

#[test]
fn limits_in_gateway_toml_are_validated_naming_the_key() {
    use crate::config::{Config, RawConfig};
    use figment::Figment;
    use figment::providers::{Format, Toml};

    let load = |limits: &str| {
        let raw =
            RawConfig::from_figment(Figment::from(Toml::string(&format!("[limits]\n{limits}"))))
                .map_err(|e| e.to_string())?;
        Config::from_raw(raw, &|_| Some("s".repeat(32))).map_err(|e| e.to_string())
    };
    let config = load("daily_cost_usd = 5\nmonthly_cost_usd = 12.5\nmax_concurrent = 3").unwrap();
    let limits = Limits::from_config(&config.raw.limits);
    assert_eq!(limits.daily_cost_nano_usd, Some(5_000_000_000));
    assert_eq!(limits.monthly_cost_nano_usd, Some(12_500_000_000));
    assert_eq!(config.raw.limits.default_max_output_tokens, 4_096);
    assert_eq!(config.raw.limits.media_part_tokens, 1_000);
    for (toml, key) in [
        ("requests_per_minute = 0", "`limits.requests_per_minute`"),
        ("max_concurrent = 0", "`limits.max_concurrent`"),
        ("daily_cost_usd = -1.0", "`limits.daily_cost_usd`"),
        ("monthly_cost_usd = nan", "`limits.monthly_cost_usd`"),
        ("monthly_cost_usd = 1e12", "`limits.monthly_cost_usd`"),
    ] {
        let err = load(toml).unwrap_err();
        assert!(err.starts_with(key), "{toml}: {err}");
    }
}

// === limits shared by several gateways ===

/// The store's side of the leases, as `tollgate_lease()` decides it: per budget slot, the rows
/// written and each gateway's lease.
#[derive(Default)]
struct FakeBudget {
    used: [u64; 4],
    leases: HashMap<usize, [u64; 4]>,
}

impl FakeBudget {
    fn grant(&mut self, gateway: usize, ask: &LeaseAsk) -> LeaseGrant {
        let own = self.leases.entry(gateway).or_default();
        for (o, b) in own.iter_mut().zip(ask.back) {
            *o = o.saturating_sub(b);
        }
        let leased: [u64; 4] =
            std::array::from_fn(|i| self.leases.values().map(|l| l[i]).sum::<u64>());
        let room: [i128; 4] = std::array::from_fn(|i| {
            ask.limit[i].map_or(i128::MAX, |l| {
                i128::from(l) - i128::from(self.used[i]) - i128::from(leased[i])
            })
        });
        let fits = (0..4).all(|i| room[i] > 0 && room[i] >= i128::from(ask.hold[i]));
        let open = (0..4).all(|i| room[i] > 0);
        let (verdict, granted): (Verdict, [u64; 4]) = if fits {
            let g = std::array::from_fn(|i| match ask.limit[i] {
                None => 0,
                Some(_) => {
                    let extra = u64::try_from((room[i] - i128::from(ask.hold[i])) / 2).unwrap();
                    ask.hold[i] + ask.want[i].min(extra)
                }
            });
            (Verdict::Fit, g)
        } else if open {
            (
                Verdict::Last,
                std::array::from_fn(|i| ask.limit[i].map_or(0, |_| ask.hold[i])),
            )
        } else {
            let slot = [2, 3, 0, 1].into_iter().find(|&i| room[i] <= 0).unwrap();
            (Verdict::Refused(slot), [0; 4])
        };
        let own = self.leases.get_mut(&gateway).unwrap();
        for (o, g) in own.iter_mut().zip(granted) {
            *o += g;
        }
        LeaseGrant {
            verdict,
            granted,
            used: self.used,
            elsewhere: leased,
        }
    }

    /// A gateway's row is written: its usage moves from the lease to the rows (day and month).
    fn written(&mut self, gateway: usize, tokens: u64) {
        let own = self.leases.entry(gateway).or_default();
        for i in [0, 2] {
            self.used[i] += tokens;
            own[i] = own[i].saturating_sub(tokens);
        }
    }
}

fn shared_rig(daily: u64) -> Rig {
    let r = rig("UTC", "2026-03-10T12:00:00", limits(daily, u64::MAX / 4));
    r.ledger.share(Arc::new(Shared::new(Fence::always())));
    r
}

/// Admit through the fake store, as the proxy does.
fn admit_shared(
    r: &Rig,
    store: &Mutex<FakeBudget>,
    gateway: usize,
    who: &Arc<str>,
    hold: u64,
) -> Result<Reservation<FakeRelativeClock>, Denied> {
    match r.ledger.try_admit(who, tokens_only(hold)) {
        Ok(res) => Ok(res),
        Err(Admission::Denied(d)) => Err(d),
        Err(Admission::Short(ask)) => {
            let grant = store.lock().grant(gateway, &ask);
            match r.ledger.admit_granted(&ask, &grant) {
                Ok(res) => Ok(res),
                Err(Admission::Denied(d)) => Err(d),
                Err(Admission::Short(_)) => panic!("asked twice in one window"),
            }
        }
    }
}

#[test]
fn a_shared_ledger_asks_only_when_its_lease_is_spent_and_returns_what_idle_users_left() {
    let r = shared_rig(10_000);
    let store = Mutex::new(FakeBudget::default());
    let ann = user("ann");
    let mut asks = 0;
    for _ in 0..20 {
        match r.ledger.try_admit(&ann, tokens_only(100)) {
            Ok(res) => drop(res),
            Err(Admission::Short(ask)) => {
                asks += 1;
                // Never sent: what it took out of the lease goes back.
                r.ledger.unask(&ask);
            }
            Err(Admission::Denied(d)) => panic!("{d:?}"),
        }
        let res = admit_shared(&r, &store, 0, &ann, 100).unwrap();
        res.settle(100, 0);
        store.lock().written(0, 100);
    }
    // A sixteenth of the limit or four holds per grant: far fewer asks than calls.
    assert!(asks <= 6, "{asks} asks for 20 calls");
    let lease = store.lock().leases[&0][0];
    assert!(lease > 0, "some lease is left");
    assert!(
        r.ledger.idle_leases(Duration::from_secs(2)).is_empty(),
        "not idle yet"
    );
    r.clock.advance(Duration::from_secs(3));
    let back = r.ledger.idle_leases(Duration::from_secs(2));
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].back[0], lease, "everything unspent goes back");
    assert_eq!(
        (back[0].day.as_str(), back[0].month.as_str()),
        ("2026-03-10", "2026-03-01")
    );
    // Taken out of memory: the next call asks again.
    assert!(matches!(
        r.ledger.try_admit(&ann, tokens_only(100)),
        Err(Admission::Short(_))
    ));
}

#[test]
fn a_grant_the_store_refuses_is_a_quota_refusal_naming_the_window() {
    let r = shared_rig(1_000);
    let store = Mutex::new(FakeBudget::default());
    store.lock().written(1, 1_000);
    let denied = admit_shared(&r, &store, 0, &user("bob"), 10).unwrap_err();
    let Denied::Quota {
        window,
        kind,
        limit,
        used,
        ..
    } = denied
    else {
        panic!("{denied:?}");
    };
    assert_eq!(
        (window, kind, limit, used),
        (Window::Day, LimitKind::Tokens, 1_000, 1_000)
    );
    // The view of the usage followed the store: the next call is refused without asking.
    assert!(matches!(
        r.ledger.try_admit(&user("bob"), tokens_only(10)),
        Err(Admission::Denied(Denied::Quota { .. }))
    ));
}

#[test]
fn without_the_fence_a_covered_call_asks_the_store() {
    let r = rig("UTC", "2026-03-10T12:00:00", limits(10_000, u64::MAX / 4));
    let shared = Arc::new(Shared::new(Fence::new()));
    r.ledger.share(Arc::clone(&shared));
    let store = Mutex::new(FakeBudget::default());
    let ann = user("ann");
    // Never renewed: every call asks (and gets its grant).
    admit_shared(&r, &store, 0, &ann, 10).unwrap().settle(10, 0);
    let Err(Admission::Short(ask)) = r.ledger.try_admit(&ann, tokens_only(10)) else {
        panic!("a lease behind a lapsed fence admitted a call");
    };
    r.ledger.unask(&ask);
    shared
        .fence
        .renew(std::time::Instant::now(), Duration::from_secs(60));
    admit_shared(&r, &store, 0, &ann, 10).unwrap().settle(10, 0);
    assert!(
        r.ledger.try_admit(&ann, tokens_only(10)).is_ok(),
        "covered, fenced in"
    );
    shared.fence.lapse();
    assert!(matches!(
        r.ledger.try_admit(&ann, tokens_only(10)),
        Err(Admission::Short(_))
    ));
}

#[test]
fn three_ledgers_on_one_store_go_past_a_limit_by_at_most_one_call() {
    // Three gateways, eight callers each, random holds and usage (never above the hold), rows
    // written when calls end: the recorded total ends below the limit plus one hold.
    const LIMIT: u64 = 50_000;
    const MAX_HOLD: u64 = 2_000;
    for round in 0..20u64 {
        let rigs: Vec<Rig> = (0..3).map(|_| shared_rig(LIMIT)).collect();
        let store = Mutex::new(FakeBudget::default());
        let who = user("racer");
        let barrier = Barrier::new(24);
        std::thread::scope(|s| {
            for t in 0..24u64 {
                let (rigs, store, who, barrier) = (&rigs, &store, &who, &barrier);
                s.spawn(move || {
                    let gateway = usize::try_from(t % 3).unwrap();
                    let mut seed = round * 1_000 + t + 1;
                    let mut next = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed
                    };
                    barrier.wait();
                    for _ in 0..40 {
                        let hold = 1 + next() % MAX_HOLD;
                        if let Ok(res) = admit_shared(&rigs[gateway], store, gateway, who, hold) {
                            let used = next() % (hold + 1);
                            res.settle(used, 0);
                            store.lock().written(gateway, used);
                        }
                    }
                });
            }
        });
        let used = store.lock().used[0];
        assert!(
            used < LIMIT + MAX_HOLD,
            "round {round}: {used} recorded, past {LIMIT} by more than one call"
        );
        assert!(
            used > LIMIT / 2,
            "round {round}: only {used} of {LIMIT} admitted"
        );
    }
}

#[test]
fn a_limit_changed_under_a_lease_sends_the_next_call_to_the_store() {
    let r = shared_rig(10_000);
    let store = Mutex::new(FakeBudget::default());
    let ann = user("ann");
    admit_shared(&r, &store, 0, &ann, 100)
        .unwrap()
        .settle(100, 0);
    assert!(
        r.ledger.try_admit(&ann, tokens_only(100)).is_ok(),
        "covered by the lease"
    );
    // The operator lowers the default: the lease (granted under 10,000) is not spent.
    r.ledger.set_defaults(limits(150, u64::MAX / 4));
    let Err(Admission::Short(ask)) = r.ledger.try_admit(&ann, tokens_only(100)) else {
        panic!("a lease granted under the old limit was spent");
    };
    assert_eq!(ask.limit[0], Some(150));
    assert!(ask.back[0] > 0, "the lease goes back with the ask");
    r.ledger.unask(&ask);
    // An override does the same for one user.
    r.ledger.set_defaults(limits(10_000, u64::MAX / 4));
    let bob = user("bob");
    admit_shared(&r, &store, 0, &bob, 10).unwrap().settle(10, 0);
    assert!(r.ledger.try_admit(&bob, tokens_only(10)).is_ok());
    let mut controls = r.ledger.controls("bob");
    controls.overrides.daily_tokens = Some(20);
    r.ledger.apply_controls("bob", &controls);
    assert!(matches!(
        r.ledger.try_admit(&bob, tokens_only(10)),
        Err(Admission::Short(_))
    ));
}

// === plans: the basis a call brings ===

fn basis(plan: &str, daily: u64) -> Basis {
    Basis {
        plan: Some(Arc::from(plan)),
        limits: Limits {
            requests_per_minute: NonZeroU32::new(2).unwrap(),
            ..limits(daily, 1_000_000)
        },
    }
}

#[test]
fn a_calls_basis_sets_the_limits_under_the_overrides_and_a_new_one_keeps_the_counters() {
    let rig = rig_no_budget();
    let ann = user("ann");
    let free = basis("free", 100);
    rig.ledger
        .try_admit_on(&ann, tokens_only(60), &free)
        .unwrap()
        .settle(60, 0);
    let status = rig.ledger.status("ann");
    assert_eq!(status.plan.as_deref(), Some("free"));
    assert_eq!(status.limits.daily_tokens, 100);
    assert_eq!(
        status.limits.requests_per_minute.get(),
        2,
        "the plan's rate"
    );
    rig.ledger
        .try_admit_on(&ann, tokens_only(60), &free)
        .unwrap()
        .settle(60, 0);
    // 120 of free's 100: refused; the plan's rate (2 a minute) is spent too.
    assert!(matches!(
        rig.ledger.try_admit_on(&ann, tokens_only(1), &free),
        Err(Admission::Denied(Denied::Quota { limit: 100, .. }))
    ));
    // Another plan from the next call: same day, same usage, its own limits.
    let pro = basis("pro", 1_000);
    let r = rig.ledger.try_admit_on(&ann, tokens_only(1), &pro);
    assert!(
        matches!(r, Err(Admission::Denied(Denied::Rate { .. }))),
        "pro's rate is 2 too, and two calls were admitted this minute: {r:?}"
    );
    rig.rate.advance(Duration::from_secs(60));
    rig.ledger
        .try_admit_on(&ann, tokens_only(1), &pro)
        .unwrap()
        .settle(1, 0);
    let status = rig.ledger.status("ann");
    assert_eq!(
        (
            status.plan.as_deref(),
            status.day.used_tokens,
            status.limits.daily_tokens
        ),
        (Some("pro"), 121, 1_000)
    );
    // An operator's override wins over the plan.
    rig.ledger.apply_controls(
        "ann",
        &UserControls {
            overrides: UserOverrides {
                daily_tokens: Some(50),
                ..UserOverrides::default()
            },
            ..UserControls::default()
        },
    );
    assert!(matches!(
        rig.ledger.try_admit_on(&ann, tokens_only(1), &pro),
        Err(Admission::Denied(Denied::Quota { limit: 50, .. }))
    ));
    // `status_on` answers for another basis without adopting it.
    let asked = rig.ledger.status_on("ann", &free);
    assert_eq!(
        (asked.plan.as_deref(), asked.limits.daily_tokens),
        (Some("free"), 50)
    );
    assert_eq!(rig.ledger.status("ann").plan.as_deref(), Some("pro"));
    // A user never seen gets the basis asked about.
    let new = rig.ledger.status_on("nia", &free);
    assert_eq!(
        (new.plan.as_deref(), new.limits.daily_tokens),
        (Some("free"), 100)
    );
}

#[test]
fn with_shared_limits_a_new_basis_asks_the_store_again() {
    let r = shared_rig(1_000_000);
    let ann = user("ann");
    let on = |plan: &str, daily: u64| Basis {
        plan: Some(Arc::from(plan)),
        limits: limits(daily, u64::MAX / 4),
    };
    let free = on("free", 1_000);
    // No lease yet: short.
    let Err(Admission::Short(ask)) = r.ledger.try_admit_on(&ann, tokens_only(10), &free) else {
        panic!("no lease yet");
    };
    assert_eq!(
        ask.limit[0],
        Some(1_000),
        "the ask carries the plan's limit"
    );
    let grant = LeaseGrant {
        verdict: Verdict::Fit,
        granted: [500, 0, 500, 0],
        used: [0; 4],
        elsewhere: [0; 4],
    };
    r.ledger.admit_granted(&ask, &grant).unwrap().settle(10, 0);
    // The lease covers the next call on the same plan…
    assert!(r.ledger.try_admit_on(&ann, tokens_only(10), &free).is_ok());
    // …not one on another plan: its limits were not the lease's.
    let pro = on("pro", 100_000);
    let Err(Admission::Short(ask)) = r.ledger.try_admit_on(&ann, tokens_only(10), &pro) else {
        panic!("a new basis must ask again");
    };
    assert_eq!(ask.limit[0], Some(100_000));
    assert!(ask.back[0] > 0, "the old lease goes back with the ask");
}

#[test]
fn alternating_two_plans_never_gives_more_than_both_rates_together() {
    let rig = rig_no_budget();
    let eve = user("eve");
    let on = |plan: &str, rpm: u32| Basis {
        plan: Some(Arc::from(plan)),
        limits: Limits {
            requests_per_minute: NonZeroU32::new(rpm).unwrap(),
            ..limits(1_000_000, 10_000_000)
        },
    };
    let (free, basic) = (on("free", 2), on("basic", 3));
    // An old free token and a new basic one, used in turn: each switch must not be a fresh
    // burst.
    let admitted = (0..40)
        .filter(|n| {
            let basis = if n % 2 == 0 { &free } else { &basic };
            match rig.ledger.try_admit_on(&eve, tokens_only(1), basis) {
                Ok(r) => {
                    r.settle(1, 0);
                    true
                }
                Err(Admission::Denied(Denied::Rate { .. })) => false,
                Err(other) => panic!("{other:?}"),
            }
        })
        .count();
    assert_eq!(admitted, 5, "2 a minute on free plus 3 on basic");
    // A minute later each rate has refilled.
    rig.rate.advance(Duration::from_secs(60));
    assert!(rig.ledger.try_admit_on(&eve, tokens_only(1), &free).is_ok());
    assert!(
        rig.ledger
            .try_admit_on(&eve, tokens_only(1), &basic)
            .is_ok()
    );
}
