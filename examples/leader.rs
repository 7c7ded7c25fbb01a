//! Leader election: three replicas campaign for one group; one leads at a time and runs the
//! singleton work, and another takes over when it goes away.
//!
//! ```text
//! cargo run --example leader              # lease 10 s
//! cargo run --example leader -- --quick   # lease 2 s
//! ```
//!
//! Each replica reaches the server through its own chaos proxy (from `dflockd-testkit`), so
//! the example can break one replica's network the way production does:
//!
//! 1. the leader's connections are cut and it stays unreachable for a moment (a crash, a
//!    killed pod that restarts): the server frees the lock at once and the next replica in
//!    its queue leads;
//! 2. the leader's network goes silent (a frozen process, a partition): it stops leading
//!    before its lease ends at the server, and another replica leads after the lease;
//! 3. the leader resigns (a clean shutdown): the next one leads at once.
//!
//! Every term has a larger number (the grant's fence) on servers that issue fences, so a
//! resource can refuse the writes of a deposed leader. Uses `DFLOCKD_SERVERS` when set, an
//! embedded test server otherwise.

mod common;

use std::time::{Duration, Instant};

use dflockd::{Campaign, Term};
use dflockd_testkit::ChaosProxy;

/// The singleton work: runs while this replica leads, and is dropped when it stops leading.
async fn lead(replica: usize, term: Term) {
    println!(
        "replica {replica} leads (term {})",
        common::fence(term.number())
    );
    let mut ticks = 0_u64;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ticks += 1;
        if !term.is_current() {
            // Not reached: the campaign drops this future when the term ends.
            println!("replica {replica} worked after its term ended ({ticks} ticks)");
        }
    }
}

/// The replica leading now, waiting for one up to `limit`.
async fn leader(campaigns: &[Option<Campaign>], limit: Duration) -> Result<usize, String> {
    let start = Instant::now();
    loop {
        let leading: Vec<usize> = (0..campaigns.len())
            .filter(|&i| campaigns[i].as_ref().is_some_and(Campaign::is_leader))
            .collect();
        match leading.as_slice() {
            [one] => return Ok(*one),
            [] if start.elapsed() < limit => tokio::time::sleep(Duration::from_millis(5)).await,
            [] => return Err(format!("no leader within {limit:?}")),
            many => return Err(format!("two leaders at once: {many:?}")),
        }
    }
}

/// Waits up to `limit` for `campaign`'s replica to stop leading; returns how long after `since` it did.
async fn stepped_down(
    campaign: &Campaign,
    since: Instant,
    limit: Duration,
) -> Result<Duration, common::BoxError> {
    let mut told = campaign.changes();
    let stepped_down = async {
        while told.borrow_and_update().term().is_some() {
            if told.changed().await.is_err() {
                break;
            }
        }
        since.elapsed()
    };
    Ok(tokio::time::timeout(limit, stepped_down).await?)
}

/// Waits for a replica other than `old` to lead; prints and returns it.
async fn handover(
    campaigns: &[Option<Campaign>],
    old: usize,
    since: Instant,
    limit: Duration,
) -> Result<usize, common::BoxError> {
    loop {
        let now = leader(campaigns, limit.saturating_sub(since.elapsed())).await?;
        if now != old {
            println!("  -> replica {now} took over after {:.1?}", since.elapsed());
            return Ok(now);
        }
        if since.elapsed() >= limit {
            return Err(format!("replica {old} still leads after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let servers = common::servers(1)?;
    let lease = common::pick(Duration::from_secs(10), Duration::from_secs(2));
    let upstream = tokio::net::lookup_host(&servers.addrs()[0])
        .await?
        .next()
        .ok_or("the server's address resolves to nothing")?;

    let mut proxies = Vec::new();
    let mut campaigns = Vec::new();
    for replica in 0..3 {
        let proxy = ChaosProxy::start(upstream)?;
        let client = servers
            .client_builder()?
            .servers([proxy.addr_string()])
            .build()?;
        let campaign = client
            .election("leader:report-scheduler")
            .lease_ttl(lease)
            .campaign(move |term| lead(replica, term));
        proxies.push(proxy);
        campaigns.push(Some(campaign));
    }
    let first = leader(&campaigns, Duration::from_secs(10)).await?;

    println!("1. replica {first}'s connections are cut (a crash)");
    let cut = Instant::now();
    // Down until another replica leads, as a killed process is until it restarts (otherwise
    // it might campaign again before the others, and win).
    proxies[first].set_blackhole(true);
    proxies[first].reset();
    // The cut replica learns from the reset at once; the server may grant the next one even
    // sooner, so "one leader at a time" is checked from when the cut one knows.
    let noticed = stepped_down(campaigns[first].as_ref().ok_or("gone")?, cut, lease).await?;
    println!("  replica {first} stopped leading after {noticed:.1?}");
    let second = handover(&campaigns, first, cut, lease).await?;
    proxies[first].set_blackhole(false);

    println!("2. replica {second}'s network goes silent (a partition)");
    let silent = Instant::now();
    proxies[second].set_blackhole(true);
    let down = stepped_down(campaigns[second].as_ref().ok_or("gone")?, silent, lease * 2).await?;
    println!("  replica {second} stopped leading after {down:.1?} (its lease is {lease:?})");
    let third = handover(&campaigns, second, silent, lease * 3).await?;
    proxies[second].set_blackhole(false);

    println!("3. replica {third} resigns (a clean shutdown)");
    let resigning = campaigns[third].take().ok_or("gone")?;
    let resigned = Instant::now();
    resigning.resign().await;
    handover(&campaigns, third, resigned, lease).await?;

    // Shut down without handing over: the waiting candidates first, the leader last (the
    // other way round, the next in the queue would lead for a moment).
    let (leading, waiting): (Vec<Campaign>, Vec<Campaign>) = campaigns
        .into_iter()
        .flatten()
        .partition(Campaign::is_leader);
    for campaign in waiting.into_iter().chain(leading) {
        campaign.resign().await;
    }
    println!("one leader at a time throughout");
    Ok(())
}
