//! The given/when/then steps every aggregate's tests share: the events so far, a command, and
//! the events it must record or the error it must be refused with.

use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

/// `when`, after `given`, records exactly `then`.
pub async fn expect<A: Aggregate>(
    services: A::Services,
    given: Vec<A::Event>,
    when: A::Command,
    then: Vec<A::Event>,
) {
    TestFramework::<A>::with(services)
        .given(given)
        .when_async(when)
        .await
        .then_expect_events(then);
}

/// `when`, after `given`, is refused with `error` and records nothing.
pub async fn refuse<A: Aggregate>(
    services: A::Services,
    given: Vec<A::Event>,
    when: A::Command,
    error: A::Error,
) where
    A::Error: PartialEq,
{
    TestFramework::<A>::with(services)
        .given(given)
        .when_async(when)
        .await
        .then_expect_error(error);
}
