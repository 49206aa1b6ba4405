//! One connection's acknowledgements: a counter of its envelopes whose writes completed, and
//! one waker, instead of a channel per envelope.
//!
//! A connection's envelopes complete in the order they were submitted (one room's appends
//! are committed, and their completions run, in queue order), so the answer to each is known
//! from its place in that order: done once the counter passed it, failed if its place is
//! among the failures recorded. Completions run inside `outbox::batched`, which holds the
//! wake-up back until the whole commit group completed: a connection is woken once per
//! commit group, however many of its envelopes the group held.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::store::StoreError;

/// The acknowledgement state of one connection's envelopes.
#[derive(Debug, Default)]
pub(super) struct Acks {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Places handed out: the next envelope submitted gets this one.
    submitted: u64,
    /// Envelopes whose writes completed (stored or failed), counted from the first.
    done: u64,
    /// Completed places whose write failed, until their answer is taken.
    failed: Vec<(u64, StoreError)>,
    /// The tasks awaiting an unanswered envelope (one, the connection's, in the relay).
    wakers: Vec<Waker>,
}

impl Acks {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The place the next envelope submitted gets. The caller holds the room lock, under
    /// which every envelope of this connection is submitted, from here until `submitted`.
    pub(super) fn next(&self) -> u64 {
        self.lock().submitted
    }

    /// The envelope at `place` (from `next`) was queued for storage.
    pub(super) fn submitted(&self, place: u64) {
        let mut st = self.lock();
        debug_assert_eq!(st.submitted, place, "places are handed out in order");
        st.submitted = place + 1;
    }

    /// The write of the envelope at `place` completed; its waiter is woken when the
    /// surrounding `outbox::batched` ends (at once outside of one).
    pub(super) fn complete(&self, place: u64, result: Result<(), StoreError>) {
        let mut st = self.lock();
        debug_assert_eq!(st.done, place, "completions come in submission order");
        st.done = st.done.max(place + 1);
        if let Err(e) = result {
            st.failed.push((place, e));
        }
        // Inside `batched` this only records the wake-up, so it may run under the lock.
        for waker in st.wakers.drain(..) {
            crate::outbox::wake_batched(waker);
        }
    }

    /// Resolves once the write of the envelope at `place` completed.
    pub(super) fn durable(self: &Arc<Self>, place: u64) -> Durable {
        Durable { acks: self.clone(), place }
    }
}

/// The outcome of one envelope's write, once it completed.
#[derive(Debug)]
pub(super) struct Durable {
    acks: Arc<Acks>,
    place: u64,
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.acks.lock();
        if st.done <= self.place {
            if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                st.wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        match st.failed.iter().position(|(place, _)| *place == self.place) {
            Some(at) => Poll::Ready(Err(st.failed.swap_remove(at).1)),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_envelope_is_answered_only_once_its_write_completed_and_a_group_wakes_once() {
        let acks = Arc::new(Acks::default());
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let place = acks.next();
            acks.submitted(place);
            waiting.push(Box::pin(acks.durable(place)));
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(waiting[0].as_mut().poll(&mut cx).is_pending(), "nothing completed yet");

        crate::outbox::batched(|| {
            acks.complete(0, Ok(()));
            acks.complete(1, Err(StoreError::Closed));
            assert_eq!(count.0.load(Ordering::SeqCst), 0, "no wake-up before the group completed");
        });
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up for the group");
        assert!(matches!(waiting[0].as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert!(matches!(waiting[1].as_mut().poll(&mut cx), Poll::Ready(Err(StoreError::Closed))));
        assert!(waiting[2].as_mut().poll(&mut cx).is_pending(), "the third is still being written");
        acks.complete(2, Ok(()));
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "outside a group the waiter is woken at once");
        assert!(matches!(waiting[2].as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        assert!(acks.lock().failed.is_empty(), "a failure is forgotten once answered");
    }
}
