//! A connection's answers and deliveries in one order: the `Ack` of an envelope stored as
//! `seq` M reaches its sender after every delivery of a lower `seq` to the same connection, so
//! a client that places its own envelope at M by the `Ack` has already read everything before
//! it (docs/PROTOCOL.md section 31). Two members send at once, many rounds.

mod common;

use common::{ack_after_lower_deliveries, interleaved, member, Person, TestRelay, TestResult, TestRoom};

#[tokio::test]
async fn an_ack_comes_after_every_delivery_of_a_lower_seq() -> TestResult {
    let dir = tempfile::tempdir()?;
    let relay = TestRelay::start(dir.path(), |c| {
        c.rate_burst = 10_000;
        c.rate_per_sec = 10_000;
    })
    .await?;
    let room = TestRoom::new("order");
    let (mut alice, mut bob) = (Person::new("alice"), Person::new("bob"));
    let (mut a, _) = member(&relay, &alice, &room, true).await?;
    let (mut b, _) = member(&relay, &bob, &room, false).await?;
    for round in 0..5 {
        let seen = interleaved((&mut alice, &mut a), (&mut bob, &mut b), &room, 200).await?;
        assert_eq!(ack_after_lower_deliveries(&seen), None, "round {round}");
        // Bob's answers, to start the next round from a quiet connection.
        for _ in 0..200 {
            b.answer().await?;
        }
    }
    relay.stop().await
}

#[test]
fn the_check_finds_a_delivery_below_an_earlier_ack() {
    use chatroom_crypto::RelayMessage::{Ack, Deliver};
    let deliver = |seq| Deliver { seq, history: false, envelope: vec![1] };
    let ordered = [deliver(1), Ack { counter: 7, seq: 3 }, deliver(2 + 2), Ack { counter: 8, seq: 5 }];
    assert_eq!(ack_after_lower_deliveries(&ordered), None);
    let late = [Ack { counter: 7, seq: 3 }, deliver(2)];
    assert_eq!(ack_after_lower_deliveries(&late), Some((3, 2)));
}
