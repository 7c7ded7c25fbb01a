//! One running incarnation of a server: its listener, connections, timers and lock table.
//! `kill` and `restart` throw an instance away and make a new one on the same address.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::shared::Shared;

/// A request from the [`TestServer`](crate::TestServer) handle to its instance.
pub(crate) enum Command {
    /// Drop everything at once; the callback runs once every socket is closed.
    Kill(Box<dyn FnOnce() + Send>),
    /// Drain gracefully; the callback runs when the instance is gone.
    Shutdown(Box<dyn FnOnce() + Send>),
}

/// Runs the instance until it is killed or shut down.
pub(crate) async fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(%err, "cannot register the listener");
            while let Some(cmd) = commands.recv().await {
                match cmd {
                    Command::Kill(done) | Command::Shutdown(done) => done(),
                }
            }
            return;
        }
    };
    let mut timers = JoinSet::new();
    timers.spawn(sweep_loop(shared.clone()));
    timers.spawn(gc_loop(shared.clone()));
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                drop(timers);
                match cmd {
                    Some(Command::Shutdown(done)) => {
                        // Draining before the listener closes: a refused connect means
                        // every open connection already refuses new work.
                        shared.control.send_modify(|c| c.draining = true);
                        drop(listener);
                        let others = drain(&shared, conns, &mut commands).await;
                        done();
                        others.into_iter().for_each(|f| f());
                    }
                    Some(Command::Kill(done)) => {
                        drop(listener);
                        abort_all(conns).await;
                        done();
                    }
                    None => {
                        drop(listener);
                        abort_all(conns).await;
                    }
                }
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // A refused socket is closed without a byte and takes no connection id.
                    let Some(slot) = shared.admit(peer.ip()) else {
                        drop(socket);
                        continue;
                    };
                    next_id += 1;
                    tracing::debug!(%peer, conn = next_id, "connection accepted");
                    conns.spawn(crate::conn::serve(socket, next_id, slot));
                }
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn abort_all(mut conns: JoinSet<()>) {
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Graceful drain: refuse new work, wake blocked waits, wait for connections to end (up to the
/// shutdown timeout, 0 = forever), then close the rest without an answer. Returns the callbacks
/// of further `shutdown` calls that arrived meanwhile.
async fn drain(
    shared: &Shared,
    mut conns: JoinSet<()>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Vec<Box<dyn FnOnce() + Send>> {
    let mut waiting = Vec::new();
    let timeout = shared.cfg.shutdown_timeout;
    let deadline = async {
        if timeout.is_zero() {
            std::future::pending::<()>().await;
        } else {
            tokio::time::sleep(timeout).await;
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = conns.join_next() => if joined.is_none() { return waiting },
            () = &mut deadline => break,
            cmd = commands.recv() => match cmd {
                Some(Command::Shutdown(done)) => waiting.push(done),
                Some(Command::Kill(done)) => {
                    waiting.push(done);
                    break;
                }
                None => break,
            },
        }
    }
    abort_all(conns).await;
    waiting
}

async fn sweep_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.cfg.lease_sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.table.sweep(Instant::now());
    }
}

async fn gc_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.cfg.gc_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        shared.table.gc(Instant::now());
    }
}
