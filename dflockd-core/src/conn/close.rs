//! The close signal: tells a connection's two tasks (the read task and the maintenance task)
//! that it is closed. A flag and one waker per task, far cheaper to poll on every read than a
//! general-purpose channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

/// Which task waits: each has its own waker slot.
#[derive(Clone, Copy)]
pub(crate) enum Task {
    Read = 0,
    Maintenance = 1,
}

#[derive(Default)]
pub(crate) struct CloseSignal {
    set: AtomicBool,
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl CloseSignal {
    /// Closes: wakes both tasks.
    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Completes when the connection is closed.
    pub(crate) fn wait(&self, task: Task) -> CloseWait<'_> {
        CloseWait { signal: self, task }
    }
}

/// Completes when the connection is closed.
pub(crate) struct CloseWait<'a> {
    signal: &'a CloseSignal,
    task: Task,
}

impl Future for CloseWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.set.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        {
            let mut wakers = self.signal.wakers.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut wakers[self.task as usize];
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // Set between the first check and storing the waker: do not sleep through it.
        if self.signal.set.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_tasks_learn_of_the_close() {
        let signal = std::sync::Arc::new(CloseSignal::default());
        let waiters: Vec<_> = [Task::Read, Task::Maintenance]
            .into_iter()
            .map(|task| {
                let signal = signal.clone();
                tokio::spawn(async move { signal.wait(task).await })
            })
            .collect();
        tokio::task::yield_now().await;
        signal.set();
        for w in waiters {
            w.await.unwrap();
        }
        // Already closed: completes at once.
        signal.wait(Task::Read).await;
    }
}
