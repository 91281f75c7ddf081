//! Per-worker graceful-drain state: a flag, an in-flight request count, and
//! wakers for the tasks (the accept loop) that must notice the flag at once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    in_flight: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
}

impl Drain {
    pub fn start(&self) {
        self.draining.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Counts a request as in flight until the guard drops.
    pub fn enter(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    /// Resolves once `start` has been called.
    pub fn started(self: &Rc<Self>) -> Started {
        Started(self.clone())
    }
}

pub struct InFlight(Rc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

pub struct Started(Rc<Drain>);

impl Future for Started {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.draining.get() {
            return Poll::Ready(());
        }
        self.0.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}
