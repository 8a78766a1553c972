//! Given/when/then tests of the saga's commands, and scenario tests that drive a saga through
//! its phases with the real `decide` and `apply`.

use std::time::Duration;

use super::*;
use crate::money::eur;
use crate::order::RejectionReason;
use cqrs_es::test::TestFramework;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn policy() -> SagaPolicy {
    SagaPolicy {
        step_deadline: Duration::from_secs(5),
        business_deadline: Duration::from_secs(20),
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
    }
}

fn started(skus: &[&str]) -> SagaEvent {
    SagaEvent::SagaStarted {
        order_id: Uuid::from_u128(1),
        customer_id: Uuid::from_u128(2),
        lines: skus
            .iter()
            .map(|s| OrderLine {
                sku: sku(s),
                quantity: 2,
            })
            .collect(),
        payment_token: Some("tok_ok".into()),
        started_at: t(0),
    }
}

/// A saga driven by the real `decide`/`apply`, for scenario tests.
struct Run(OrderSaga);

impl Run {
    fn new(skus: &[&str]) -> Self {
        let mut saga = OrderSaga::default();
        saga.apply(started(skus));
        Self(saga)
    }

    fn send(&mut self, command: SagaCommand) -> Vec<SagaEvent> {
        let events = self.0.decide(command, &policy()).expect("command accepted");
        for e in events.clone() {
            self.0.apply(e);
        }
        events
    }

    /// Attempts and completes every due step with the given result.
    fn answer(&mut self, now: i64, result: impl Fn(&Step) -> StepResult) -> Vec<Step> {
        let due = self.0.due_steps();
        for step in &due {
            self.send(SagaCommand::Attempt {
                step: step.clone(),
                now: t(now),
                command_id: Uuid::new_v4(),
            });
            self.send(SagaCommand::Complete {
                step: step.clone(),
                result: result(step),
                now: t(now),
                attempt_seed: None,
            });
        }
        due
    }
}

fn ok(step: &Step) -> StepResult {
    match step {
        Step::Reserve(_) => StepResult::Reserved {
            unit_price: eur(250),
        },
        Step::Authorise => StepResult::Authorised,
        _ => StepResult::Done,
    }
}

#[test]
fn the_happy_path_reserves_prices_authorises_finishes_and_confirms() {
    let mut run = Run::new(&["A", "B"]);
    assert_eq!(
        run.answer(0, ok),
        [Step::Reserve(sku("A")), Step::Reserve(sku("B"))]
    );
    assert_eq!(run.0.total(), Some(eur(1000)));
    assert_eq!(run.answer(1, ok), [Step::Price]);
    assert_eq!(run.answer(2, ok), [Step::Authorise]);
    assert_eq!(
        run.answer(3, ok),
        [
            Step::Commit(sku("A")),
            Step::Commit(sku("B")),
            Step::Capture
        ]
    );
    assert_eq!(run.answer(4, ok), [Step::Confirm]);
    assert_eq!(run.0.outcome, Some(SagaOutcome::Confirmed));
    assert!(run.0.due_steps().is_empty());
}

#[test]
fn one_line_out_of_stock_releases_the_others_and_rejects() {
    let mut run = Run::new(&["A", "B", "C"]);
    run.answer(0, |s| match s {
        Step::Reserve(x) if x.as_str() == "B" => StepResult::OutOfStock,
        other => ok(other),
    });
    assert_eq!(
        run.0.compensation,
        Some(CompensationReason::Rejected(RejectionReason::OutOfStock))
    );
    assert_eq!(
        run.answer(1, ok),
        [
            Step::Release(sku("A")),
            Step::Release(sku("C")),
            Step::Reject
        ]
    );
    assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
}

#[test]
fn a_decline_releases_all_stock_and_rejects_without_a_void() {
    let mut run = Run::new(&["A"]);
    run.answer(0, ok);
    run.answer(1, ok);
    run.answer(2, |_| StepResult::Declined {
        reason: "card_declined".into(),
    });
    assert_eq!(run.answer(3, ok), [Step::Release(sku("A")), Step::Reject]);
    assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
}

#[test]
fn a_refused_capture_voids_and_a_refused_commit_releases_what_they_left() {
    let refused = |reason: &str| StepResult::Refused {
        reason: reason.into(),
    };
    // The capture refused: nothing was taken, so the authorisation is voided, not refunded.
    let mut run = Run::new(&["A"]);
    for now in 0..3 {
        run.answer(now, ok);
    }
    run.answer(3, |s| match s {
        Step::Capture => refused("refused"),
        other => ok(other),
    });
    assert_eq!(
        run.answer(4, ok),
        [Step::Restock(sku("A")), Step::Void, Step::Reject]
    );
    assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));

    // A's commit refused while B's and the capture were in flight, the capture refused too:
    // A's reservation is released (never committed), B's commit restocked, and a void.
    let mut run = Run::new(&["A", "B"]);
    for now in 0..3 {
        run.answer(now, ok);
    }
    let due = run.0.due_steps();
    for step in &due {
        run.send(SagaCommand::Attempt {
            step: step.clone(),
            now: t(3),
            command_id: Uuid::new_v4(),
        });
    }
    for (step, result) in [
        (Step::Commit(sku("A")), refused("no_reservation")),
        (Step::Commit(sku("B")), StepResult::Done),
        (Step::Capture, refused("refused")),
    ] {
        run.send(SagaCommand::Complete {
            step,
            result,
            now: t(3),
            attempt_seed: None,
        });
    }
    assert_eq!(
        run.answer(4, ok),
        [
            Step::Release(sku("A")),
            Step::Restock(sku("B")),
            Step::Void,
            Step::Reject
        ]
    );
    assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
}

#[test]
fn a_commit_in_flight_when_the_capture_is_refused_is_waited_for_before_it_is_undone() {
    let mut run = Run::new(&["A"]);
    for now in 0..3 {
        run.answer(now, ok);
    }
    for step in run.0.due_steps() {
        run.send(SagaCommand::Attempt {
            step,
            now: t(3),
            command_id: Uuid::new_v4(),
        });
    }
    // The capture is refused while the commit's answer is still on its way.
    run.send(SagaCommand::Complete {
        step: Step::Capture,
        result: StepResult::Refused {
            reason: "refused".into(),
        },
        now: t(3),
        attempt_seed: None,
    });
    assert_eq!(run.0.status, SagaStatus::Compensating);
    // Neither a release nor a restock yet: the commit decides which.
    assert_eq!(
        run.0.due_steps(),
        [Step::Commit(sku("A")), Step::Void, Step::Reject]
    );
    run.send(SagaCommand::Complete {
        step: Step::Commit(sku("A")),
        result: StepResult::Done,
        now: t(4),
        attempt_seed: None,
    });
    assert_eq!(
        run.answer(5, ok),
        [Step::Restock(sku("A")), Step::Void, Step::Reject]
    );
    assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
}

/// Attempts `step` at `now` and lets it time out; returns the time of the failure.
fn time_out(run: &mut Run, step: &Step, now: i64) -> i64 {
    assert_eq!(
        run.0.readiness(step, t(now)),
        Readiness::Ready,
        "{step} at {now}"
    );
    run.send(SagaCommand::Attempt {
        step: step.clone(),
        now: t(now),
        command_id: Uuid::new_v4(),
    });
    assert_eq!(run.0.readiness(step, t(now + 5)), Readiness::TimedOut);
    run.send(SagaCommand::Fail {
        step: step.clone(),
        reason: "deadline passed".into(),
        now: t(now + 5),
        jitter_permille: 1000,
    });
    now + 5
}

/// When a step that failed at `failed_at` may go again.
fn retry_time(run: &Run, step: &Step, failed_at: i64) -> i64 {
    match run.0.readiness(step, t(failed_at)) {
        Readiness::Waiting(at) => at.timestamp() - 1_700_000_000,
        other => panic!("{step} is not waiting for a retry: {other:?}"),
    }
}

#[test]
fn a_step_that_keeps_timing_out_is_retried_until_the_business_deadline_then_compensated() {
    let mut run = Run::new(&["A"]);
    run.answer(0, ok);
    run.answer(1, ok);
    let mut now = 2;
    let mut attempts = 0;
    while run.0.compensation.is_none() {
        let failed = time_out(&mut run, &Step::Authorise, now);
        attempts += 1;
        if run.0.compensation.is_none() {
            let at = retry_time(&run, &Step::Authorise, failed);
            // Exponential, capped at 8 s: 1, 2, 4, 8, 8...
            assert_eq!(at - failed, (1i64 << (attempts - 1)).min(8));
            now = at;
        }
    }
    // Attempts at 2, 8 and 15; the third fails at 20 s, the business deadline.
    assert_eq!(attempts, 3);
    assert_eq!(
        run.0.compensation,
        Some(CompensationReason::Rejected(RejectionReason::Timeout))
    );
    // The payment may have gone through: it is voided, and the stock released.
    assert_eq!(
        run.answer(now + 100, ok),
        [Step::Release(sku("A")), Step::Void, Step::Reject]
    );
    assert_eq!(run.0.outcome, Some(SagaOutcome::Rejected));
}

#[test]
fn after_the_capture_was_sent_the_saga_only_goes_forward_whatever_the_deadline() {
    let mut run = Run::new(&["A"]);
    run.answer(0, ok);
    run.answer(1, ok);
    run.answer(2, ok);
    // The capture's answer is lost, again and again, long past the business deadline.
    let mut now = 3;
    for _ in 0..10 {
        let failed = time_out(&mut run, &Step::Capture, now);
        now = retry_time(&run, &Step::Capture, failed);
    }
    assert!(now > 60 && run.0.past_pivot());
    assert_eq!(run.0.status, SagaStatus::Running);
    // The retry (same command id) gets the capture's first answer; the confirm's is lost too.
    run.send(SagaCommand::Attempt {
        step: Step::Capture,
        now: t(now),
        command_id: Uuid::new_v4(),
    });
    run.send(SagaCommand::Complete {
        step: Step::Capture,
        result: StepResult::Done,
        now: t(now),
        attempt_seed: None,
    });
    run.answer(now, ok); // the commit
    let failed = time_out(&mut run, &Step::Confirm, now + 1);
    now = retry_time(&run, &Step::Confirm, failed);
    assert_eq!(run.answer(now, ok), [Step::Confirm]);
    assert_eq!(run.0.outcome, Some(SagaOutcome::Confirmed));
}

#[test]
fn a_refusal_after_the_capture_parks_the_saga_and_a_resumption_tries_the_step_anew() {
    let mut run = Run::new(&["A"]);
    for now in 0..4 {
        run.answer(now, ok); // reserved, priced, authorised, committed and captured
    }
    run.answer(4, |_| StepResult::Refused {
        reason: "invalid_transition".into(),
    });
    assert_eq!(run.0.status, SagaStatus::NeedsAttention);
    assert_eq!(run.0.parked_step, Some(Step::Confirm));
    assert!(run.0.due_steps().is_empty(), "nothing is compensated");
    let first_id = run.0.command_id(&Step::Confirm);
    run.send(SagaCommand::Resume {
        reason: "the order was reopened by hand".into(),
        now: t(10),
    });
    assert_eq!(run.0.status, SagaStatus::Running);
    assert_eq!(run.0.due_steps(), [Step::Confirm]);
    run.answer(11, ok);
    assert_ne!(
        run.0.command_id(&Step::Confirm),
        first_id,
        "a new command id"
    );
    assert_eq!(run.0.outcome, Some(SagaOutcome::Confirmed));
}

#[test]
fn a_cancel_mid_saga_compensates_and_ends_cancelled_without_rejecting() {
    let mut run = Run::new(&["A"]);
    run.answer(0, ok);
    run.answer(1, ok);
    run.answer(2, ok);
    run.answer(3, ok); // committed and captured
    run.send(SagaCommand::Cancel { now: t(4) });
    assert_eq!(run.answer(5, ok), [Step::Restock(sku("A")), Step::Refund]);
    assert_eq!(run.0.outcome, Some(SagaOutcome::Cancelled));
}

#[test]
fn a_compensation_is_retried_until_it_succeeds_and_a_refused_one_needs_attention() {
    let mut run = Run::new(&["A"]);
    run.answer(0, ok);
    run.send(SagaCommand::Cancel { now: t(1) });
    // Inventory away for an hour: the release is retried, never given up.
    let mut now = 2;
    while now < 3600 {
        let failed = time_out(&mut run, &Step::Release(sku("A")), now);
        now = retry_time(&run, &Step::Release(sku("A")), failed);
    }
    assert_eq!(run.0.status, SagaStatus::Compensating);
    assert_eq!(run.answer(now, ok), [Step::Release(sku("A"))]);
    assert_eq!(run.0.outcome, Some(SagaOutcome::Cancelled));

    // A refusal is not weather: that saga stops, naming the step and why.
    let mut refused = Run::new(&["A"]);
    refused.answer(0, ok);
    refused.send(SagaCommand::Cancel { now: t(1) });
    refused.answer(2, |_| StepResult::Refused {
        reason: "unknown_reservation".into(),
    });
    assert_eq!(refused.0.status, SagaStatus::NeedsAttention);
    assert_eq!(refused.0.parked_step, Some(Step::Release(sku("A"))));
    assert!(refused
        .0
        .parked_reason
        .as_deref()
        .unwrap()
        .contains("unknown_reservation"));
    // Resumed once the cause is removed, the release goes again and the saga ends.
    refused.send(SagaCommand::Resume {
        reason: "reservation restored".into(),
        now: t(3),
    });
    assert_eq!(refused.0.status, SagaStatus::Compensating);
    assert_eq!(refused.answer(4, ok), [Step::Release(sku("A"))]);
    assert_eq!(refused.0.outcome, Some(SagaOutcome::Cancelled));
}

#[test]
fn the_phases_come_in_their_one_order_and_each_step_belongs_to_its_phase() {
    let mut run = Run::new(&["A", "B"]);
    for (n, phase) in PHASES.iter().enumerate() {
        assert_eq!(run.0.phase(), Some(*phase));
        assert_eq!(run.0.due_steps(), phase.steps(&run.0));
        let answered = run.answer(n as i64, ok);
        assert!(!answered.is_empty());
        assert!(answered
            .iter()
            .all(|s| s.phase() == *phase && !s.is_compensation()));
    }
    assert_eq!(run.0.phase(), None);
    assert_eq!(run.0.outcome, Some(SagaOutcome::Confirmed));

    let mut run = Run::new(&["A", "B"]);
    run.answer(0, ok);
    run.answer(1, ok);
    run.answer(2, ok);
    run.send(SagaCommand::Cancel { now: t(3) });
    assert_eq!(run.0.phase(), Some(Phase::Compensate));
    let undo = run.0.due_steps();
    assert_eq!(
        undo,
        [Step::Release(sku("A")), Step::Release(sku("B")), Step::Void]
    );
    assert!(undo.iter().all(Step::is_compensation));
}

#[test]
fn out_of_stock_skus_are_state_in_line_order_whatever_order_the_answers_come_in() {
    let mut run = Run::new(&["A", "B", "C", "D"]);
    let due = run.0.due_steps();
    for step in &due {
        run.send(SagaCommand::Attempt {
            step: step.clone(),
            now: t(0),
            command_id: Uuid::new_v4(),
        });
    }
    let answer = |run: &mut Run, s: &str, result: StepResult| {
        run.send(SagaCommand::Complete {
            step: Step::Reserve(sku(s)),
            result,
            now: t(1),
            attempt_seed: None,
        })
    };
    answer(&mut run, "D", StepResult::OutOfStock);
    answer(&mut run, "B", ok(&Step::Reserve(sku("B"))));
    answer(&mut run, "A", StepResult::OutOfStock);
    assert_eq!(run.0.out_of_stock, [sku("A"), sku("D")]);
    assert_eq!(run.0.status, SagaStatus::Running);
    let events = answer(&mut run, "C", StepResult::OutOfStock);
    assert_eq!(run.0.out_of_stock, [sku("A"), sku("C"), sku("D")]);
    assert_eq!(
        events[1],
        SagaEvent::CompensationStarted {
            reason: CompensationReason::Rejected(RejectionReason::OutOfStock),
            detail: "out of stock: A, C, D".into(),
            skus: vec![sku("A"), sku("C"), sku("D")],
            at: t(1),
        }
    );
    assert_eq!(run.answer(2, ok), [Step::Release(sku("B")), Step::Reject]);
    assert_eq!(run.0.out_of_stock, [sku("A"), sku("C"), sku("D")]);
}

#[test]
fn a_saga_state_stored_without_out_of_stock_still_reads() {
    let mut saga = OrderSaga::default();
    saga.apply(started(&["A"]));
    let mut json = serde_json::to_value(&saga).unwrap();
    json.as_object_mut().unwrap().remove("out_of_stock");
    assert_eq!(serde_json::from_value::<OrderSaga>(json).unwrap(), saga);
}

#[test]
fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
    let p = policy();
    assert_eq!(p.backoff(1, 0), Duration::from_millis(500));
    assert_eq!(p.backoff(1, 1000), Duration::from_secs(1));
    assert_eq!(p.backoff(3, 1000), Duration::from_secs(4));
    assert_eq!(p.backoff(10, 1000), Duration::from_secs(8));
    assert_eq!(p.backoff(10, 500), Duration::from_secs(6));
}

#[test]
fn steps_round_trip_as_strings() {
    for step in [
        Step::Reserve(sku("A-1")),
        Step::Price,
        Step::Restock(sku("Z")),
        Step::Reject,
    ] {
        assert_eq!(step.to_string().parse::<Step>(), Ok(step.clone()));
    }
    assert!("ship".parse::<Step>().is_err());
}

// Given/when/then for each command's success and rejections.

fn saga_test() -> TestFramework<OrderSaga> {
    TestFramework::with(policy())
}

#[tokio::test]
async fn start_begins_once() {
    let SagaEvent::SagaStarted {
        order_id,
        customer_id,
        lines,
        payment_token,
        ..
    } = started(&["A"])
    else {
        unreachable!()
    };
    let start = SagaCommand::Start {
        order_id,
        customer_id,
        lines,
        payment_token,
        now: t(0),
        attempt_seed: None,
    };
    saga_test()
        .given_no_previous_events()
        .when_async(start.clone())
        .await
        .then_expect_events(vec![started(&["A"])]);
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(start)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn attempt_records_the_deadline_and_refuses_steps_not_due() {
    let step = Step::Reserve(sku("A"));
    let command_id = Uuid::from_u128(7);
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(SagaCommand::Attempt {
            step: step.clone(),
            now: t(1),
            command_id,
        })
        .await
        .then_expect_events(vec![attempted(&step, 1, command_id, 1)]);
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(SagaCommand::Attempt {
            step: Step::Capture,
            now: t(1),
            command_id,
        })
        .await
        .then_expect_error(SagaError::NotDue(Step::Capture));
    saga_test()
        .given_no_previous_events()
        .when_async(SagaCommand::Attempt {
            step,
            now: t(1),
            command_id,
        })
        .await
        .then_expect_error(SagaError::NotFound);
}

/// The `StepAttempted` of `step`'s attempt number `attempt` at `at` (deadline five seconds on).
fn attempted(step: &Step, attempt: u32, command_id: Uuid, at: i64) -> SagaEvent {
    SagaEvent::StepAttempted {
        step: step.clone(),
        attempt,
        command_id,
        at: t(at),
        deadline: t(at + 5),
    }
}

#[tokio::test]
async fn a_retry_carries_the_first_attempts_command_id() {
    let step = Step::Reserve(sku("A"));
    let first = Uuid::from_u128(7);
    let failed = SagaEvent::StepFailed {
        step: step.clone(),
        attempt: 1,
        reason: "unavailable".into(),
        at: t(6),
        retry_at: t(8),
    };
    saga_test()
        .given(vec![started(&["A"]), attempted(&step, 1, first, 1), failed])
        .when_async(SagaCommand::Attempt {
            step: step.clone(),
            now: t(9),
            command_id: Uuid::from_u128(8),
        })
        .await
        .then_expect_events(vec![attempted(&step, 2, first, 9)]);
}

#[tokio::test]
async fn complete_is_recorded_once() {
    let step = Step::Reserve(sku("A"));
    let tried = attempted(&step, 1, Uuid::from_u128(7), 1);
    let done = SagaEvent::StepCompleted {
        step: step.clone(),
        result: StepResult::Reserved { unit_price: eur(1) },
        at: t(2),
    };
    let complete = SagaCommand::Complete {
        step: step.clone(),
        result: StepResult::Reserved { unit_price: eur(1) },
        now: t(2),
        attempt_seed: None,
    };
    saga_test()
        .given(vec![started(&["A"]), tried.clone()])
        .when_async(complete.clone())
        .await
        .then_expect_events(vec![done.clone()]);
    saga_test()
        .given(vec![started(&["A"]), tried, done])
        .when_async(complete)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn start_refuses_an_order_that_cannot_have_been_placed() {
    let lines = |n: usize| {
        (0..n)
            .map(|i| OrderLine {
                sku: sku(&format!("S{i}")),
                quantity: 1,
            })
            .collect::<Vec<_>>()
    };
    for n in [0, crate::order::MAX_LINES + 1, 10_000] {
        saga_test()
            .given_no_previous_events()
            .when_async(SagaCommand::Start {
                order_id: Uuid::from_u128(1),
                customer_id: Uuid::from_u128(2),
                lines: lines(n),
                payment_token: Some("tok_ok".into()),
                now: t(0),
                attempt_seed: None,
            })
            .await
            .then_expect_error(SagaError::ImpossibleOrder(n));
    }
}

#[tokio::test]
async fn a_result_for_a_step_never_attempted_parks_the_saga_as_a_contradiction() {
    // An `OrderConfirmed` the saga never asked for (before any payment) completes nothing:
    // it contradicts the saga, which stops with that reason.
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(SagaCommand::Complete {
            step: Step::Confirm,
            result: StepResult::Done,
            now: t(2),
            attempt_seed: None,
        })
        .await
        .then_expect_events(vec![SagaEvent::SagaNeedsAttention {
            step: Step::Confirm,
            reason: "contradiction: confirm came to done without this saga asking for it, \
                     which contradicts its state"
                .into(),
            at: t(2),
        }]);
}

#[tokio::test]
async fn resume_needs_a_parked_saga_and_a_reason() {
    let parked = SagaEvent::SagaNeedsAttention {
        step: Step::Void,
        reason: "compensation refused: unknown_payment".into(),
        at: t(5),
    };
    let resume = |reason: &str| SagaCommand::Resume {
        reason: reason.into(),
        now: t(9),
    };
    saga_test()
        .given(vec![started(&["A"]), parked.clone()])
        .when_async(resume("payment found"))
        .await
        .then_expect_events(vec![SagaEvent::SagaResumed {
            step: Some(Step::Void),
            compensating: false,
            reason: "payment found".into(),
            at: t(9),
        }]);
    saga_test()
        .given(vec![started(&["A"]), parked])
        .when_async(resume("  "))
        .await
        .then_expect_error(SagaError::NoReason);
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(resume("why not"))
        .await
        .then_expect_error(SagaError::NotParked);
    saga_test()
        .given_no_previous_events()
        .when_async(resume("why not"))
        .await
        .then_expect_error(SagaError::NotFound);
}

#[tokio::test]
async fn fail_schedules_a_retry_and_cancel_starts_compensation() {
    let step = Step::Reserve(sku("A"));
    let attempted = attempted(&step, 1, Uuid::from_u128(7), 5);
    let fail = SagaCommand::Fail {
        step: step.clone(),
        reason: "unavailable".into(),
        now: t(10),
        jitter_permille: 1000,
    };
    saga_test()
        .given(vec![started(&["A"]), attempted])
        .when_async(fail.clone())
        .await
        .then_expect_events(vec![SagaEvent::StepFailed {
            step: step.clone(),
            attempt: 1,
            reason: "unavailable".into(),
            at: t(10),
            retry_at: t(11),
        }]);
    // Nothing in flight: a stale failure changes nothing.
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(fail)
        .await
        .then_expect_events(vec![]);
    saga_test()
        .given(vec![started(&["A"])])
        .when_async(SagaCommand::Cancel { now: t(3) })
        .await
        .then_expect_events(vec![
            SagaEvent::CompensationStarted {
                reason: CompensationReason::Cancelled,
                detail: "cancelled by the customer".into(),
                skus: vec![],
                at: t(3),
            },
            SagaEvent::SagaCompleted {
                outcome: SagaOutcome::Cancelled,
                at: t(3),
            },
        ]);
    saga_test()
        .given_no_previous_events()
        .when_async(SagaCommand::Cancel { now: t(3) })
        .await
        .then_expect_error(SagaError::NotFound);
}

#[tokio::test]
async fn a_result_with_a_seed_attempts_the_steps_it_makes_due_in_the_same_commit() {
    let seed = Uuid::from_u128(42);
    let id = |step: &Step| Uuid::new_v5(&seed, step.to_string().as_bytes());
    let reserved = StepResult::Reserved {
        unit_price: eur(250),
    };
    let reserve = Step::Reserve(sku("A"));
    // The last reservation's result and the price step's attempt: one command, one commit.
    saga_test()
        .given(vec![
            started(&["A"]),
            attempted(&reserve, 1, Uuid::from_u128(7), 0),
        ])
        .when_async(SagaCommand::Complete {
            step: reserve.clone(),
            result: reserved.clone(),
            now: t(1),
            attempt_seed: Some(seed),
        })
        .await
        .then_expect_events(vec![
            SagaEvent::StepCompleted {
                step: reserve.clone(),
                result: reserved,
                at: t(1),
            },
            SagaEvent::StepAttempted {
                command_id: id(&Step::Price),
                step: Step::Price,
                attempt: 1,
                at: t(1),
                deadline: t(6),
            },
        ]);
    // A start attempts every reservation with it.
    saga_test()
        .given_no_previous_events()
        .when_async(SagaCommand::Start {
            order_id: Uuid::from_u128(1),
            customer_id: Uuid::from_u128(2),
            lines: vec![OrderLine {
                sku: sku("A"),
                quantity: 2,
            }],
            payment_token: Some("tok_ok".into()),
            now: t(0),
            attempt_seed: Some(seed),
        })
        .await
        .then_expect_events(vec![
            started(&["A"]),
            SagaEvent::StepAttempted {
                command_id: id(&reserve),
                step: reserve,
                attempt: 1,
                at: t(0),
                deadline: t(5),
            },
        ]);
}
