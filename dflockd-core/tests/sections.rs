//! Scoped critical sections (`run`), async and blocking: output, release, cancellation on
//! lease loss, the lease-loss policy, minimum hold time, reentrancy, `current_lock`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{LIMIT, bounded, default_client};
use dflockd_core::{Error, LossReason, OnLeaseLoss, current_lock};
use dflockd_testkit::unique_key;

/// Sets its flag when dropped: tells whether a future was dropped (cancelled).
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn run_returns_the_output_and_releases() {
    let (_servers, client) = default_client().await;
    let key = unique_key("run");
    let out = client
        .lock(&key)
        .run(|held| async move {
            assert!(held.is_held());
            assert_eq!(current_lock().unwrap().token(), held.token());
            7
        })
        .await
        .unwrap();
    assert_eq!(out, 7);
    assert!(current_lock().is_none());
    // Released: free at once.
    assert!(client.lock(&key).try_acquire().await.unwrap().is_some());
    let slots = client
        .semaphore(unique_key("run-sem"), 2)
        .run(|held| async move { held.limit() })
        .await
        .unwrap();
    assert_eq!(slots, 2);
}

#[tokio::test]
async fn a_lost_lease_cancels_the_work_with_the_fence_it_held() {
    let (_servers, proxy, builder) = common::behind_proxy().await;
    let client = builder.build().unwrap();
    let key = unique_key("run-lost");
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let proxy = Arc::new(proxy);
    let cut = proxy.clone();
    let result = bounded(
        LIMIT,
        client.lock(&key).run(|held| async move {
            let _d = Dropped(flag);
            let fence = held.fence();
            cut.reset();
            // Never ends by itself: only the loss can stop it.
            std::future::pending::<()>().await;
            fence
        }),
    )
    .await;
    match result {
        Err(Error::LeaseLost { reason, fence, .. }) => {
            assert_eq!(reason, LossReason::ConnectionLost);
            if common::server_version().issues_fences() {
                assert!(fence.is_some());
            } else {
                assert_eq!(fence, None);
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(dropped.load(Ordering::SeqCst), "the work was dropped");
}

#[tokio::test]
async fn finish_lets_the_work_end_after_a_loss() {
    let (_servers, proxy, builder) = common::behind_proxy().await;
    let client = builder.build().unwrap();
    let proxy = Arc::new(proxy);
    let cut = proxy.clone();
    let out = bounded(
        LIMIT,
        client
            .lock(unique_key("run-finish"))
            .on_lease_loss(OnLeaseLoss::Finish)
            .run(|held| async move {
                cut.reset();
                held.lost().await;
                "finished"
            }),
    )
    .await
    .unwrap();
    assert_eq!(out, "finished");
}

#[tokio::test]
async fn a_section_never_waits_for_itself() {
    let (_servers, client) = default_client().await;
    let key = unique_key("reentrant");
    let other = unique_key("other");
    let inner = client.clone();
    let (k, o) = (key.clone(), other.clone());
    client
        .lock(&key)
        .acquire_timeout(Duration::from_secs(20))
        .run(|outer| async move {
            let started = Instant::now();
            let err = inner
                .lock(&k)
                .acquire_timeout(Duration::from_secs(20))
                .run(|_| async {})
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Reentrant { .. }), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(1), "failed at once");
            // Another key nests; the innermost is the current lock.
            inner
                .lock(&o)
                .run(|held| async move {
                    assert_eq!(current_lock().unwrap().key(), held.key());
                })
                .await
                .unwrap();
            assert_eq!(current_lock().unwrap().key(), outer.key());
            // A semaphore of the same name is another resource since v1.14.
            let sem = inner.semaphore(&k, 2).try_acquire().await;
            if common::server_version().separate_namespaces() {
                assert!(sem.unwrap().is_some());
            }
        })
        .await
        .unwrap();
    // A task of its own is not the section's task: it waits like anyone else.
    let holder = client.lock(&key).acquire().await.unwrap();
    let spawned = {
        let client = client.clone();
        let key = key.clone();
        tokio::spawn(async move { client.lock(&key).run(|_| async {}).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.release().await.unwrap();
    bounded(LIMIT, spawned).await.unwrap().unwrap();
}

#[tokio::test]
async fn hold_at_least_keeps_the_lock_after_a_quick_job() {
    let (_servers, client) = default_client().await;
    let key = unique_key("hold");
    client
        .lock(&key)
        .hold_at_least(Duration::from_millis(1500))
        .run(|_| async {})
        .await
        .unwrap();
    assert!(client.lock(&key).try_acquire().await.unwrap().is_none());
    let _free = bounded(LIMIT, async {
        loop {
            if let Some(g) = client.lock(&key).try_acquire().await.unwrap() {
                break g;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_run_gives_a_cancel_flag_and_refuses_reentry() {
    use common::proxy::Proxy;
    use dflockd_core::blocking;
    use dflockd_testkit::TestServer;
    let server = TestServer::builder()
        .lease_sweep_interval(Duration::from_millis(50))
        .start_blocking()
        .unwrap();
    let proxy = {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let proxy = rt.block_on(Proxy::start(server.addr()));
        (rt, proxy)
    };
    let client = blocking::Client::builder()
        .servers([proxy.1.addr.to_string()])
        .server_version(common::server_version())
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let key = unique_key("blocking-run");
    let out = client
        .lock(&key)
        .run(|flag| {
            assert!(!flag.is_cancelled());
            assert_eq!(current_lock().unwrap().key(), flag.held().key());
            let err = client.lock(flag.held().key()).run(|_| ()).unwrap_err();
            assert!(matches!(err, Error::Reentrant { .. }), "{err:?}");
            5
        })
        .unwrap();
    assert_eq!(out, 5);
    assert!(current_lock().is_none());
    // The lease is lost while the work runs: the flag turns on, run returns LeaseLost.
    let result = client.lock(&key).run(|flag| {
        proxy.1.reset();
        let reason = flag.wait(Duration::from_secs(10));
        assert_eq!(reason, Some(LossReason::ConnectionLost));
        assert!(flag.is_cancelled());
    });
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
}
