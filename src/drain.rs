//! Per-worker graceful-drain state: a flag, an in-flight request count, and
//! wakers for the tasks (the accept loop) that must notice the flag at once.
//!
//! Two kinds of drain: a shutdown (SIGTERM) refuses new requests with 503,
//! and a handover (a new process took the listening sockets over) serves
//! them, closing each connection after its response, because the clients
//! of an upgrade must see no error at all.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Drain {
    draining: Cell<bool>,
    handover: Cell<bool>,
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

    /// Starts a handover drain (see the module note).
    pub fn start_handover(&self) {
        self.handover.set(true);
        self.start();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// A shutdown drain: a request that arrives now gets 503 (PCS.5030).
    pub fn refuses_requests(&self) -> bool {
        self.draining.get() && !self.handover.get()
    }

    pub fn is_handover(&self) -> bool {
        self.draining.get() && self.handover.get()
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

    /// Resolves once a handover drain has started; never for a shutdown.
    pub async fn handover_started(self: &Rc<Self>) {
        self.started().await;
        if !self.handover.get() {
            std::future::pending::<()>().await;
        }
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
