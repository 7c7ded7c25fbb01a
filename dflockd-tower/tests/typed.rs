//! The typed-error mode with a plain (non-HTTP) tower service, against a real lock server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dflockd_testkit::{TestServer, unique_key};
use dflockd_tower::{BoxError, Error, LockLayer, OnMissingKey, SemaphoreLayer};
use tokio::sync::{Semaphore, mpsc};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A job: the lock key, and whether to wait for the gate.
#[derive(Clone, Debug)]
struct Job {
    key: Option<String>,
    gated: bool,
}

fn client(server: &TestServer) -> dflockd_core::Client {
    dflockd_core::Client::builder()
        .servers([server.addr_string()])
        .build()
        .unwrap()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_typed_errors() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
        let g = gate.clone();
        let svc = ServiceBuilder::new()
            .layer(
                LockLayer::new(client(&server), |job: &Job| job.key.clone())
                    .wait(Duration::ZERO)
                    .typed_errors(),
            )
            .service(service_fn(move |job: Job| {
                let (g, tx) = (g.clone(), entered_tx.clone());
                async move {
                    tx.send(()).unwrap();
                    if job.gated {
                        let _ = g.acquire().await;
                    }
                    Ok::<_, BoxError>("done")
                }
            }));
        let key = unique_key("job");
        let job = |gated| Job {
            key: Some(key.clone()),
            gated,
        };

        let first = tokio::spawn(svc.clone().oneshot(job(true)));
        entered.recv().await.unwrap();
        let busy = svc.clone().oneshot(job(false)).await.unwrap_err();
        let busy = busy.downcast::<Error>().expect("a dflockd_tower::Error");
        assert!(busy.is_busy(), "{busy:?}");
        assert_eq!(busy.key(), Some(key.as_str()));

        // No key: rejected by default, without calling the inner service.
        let free = Job {
            key: None,
            gated: false,
        };
        let err = svc.clone().oneshot(free.clone()).await.unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert!(
            matches!(&*err, Error::MissingKey { layer } if layer.contains("rejections_are_typed_errors")),
            "{err:?}"
        );
        // Passing through is an explicit choice: then it runs, even while the key is busy.
        let lenient = ServiceBuilder::new()
            .layer(
                LockLayer::new(client(&server), |job: &Job| job.key.clone())
                    .on_missing_key(OnMissingKey::PassThrough)
                    .typed_errors(),
            )
            .service(service_fn(|_: Job| async { Ok::<_, BoxError>("unguarded") }));
        assert_eq!(lenient.oneshot(free).await.unwrap(), "unguarded");

        gate.close();
        assert_eq!(first.await.unwrap().unwrap(), "done");
        // Released before the first response was passed on.
        assert_eq!(svc.clone().oneshot(job(false)).await.unwrap(), "done");

        let bad_key = Job {
            key: Some("has space".into()),
            gated: false,
        };
        let err = svc.clone().oneshot(bad_key).await.unwrap_err();
        assert!(err.downcast::<Error>().unwrap().is_client_error());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_not_busy_and_zero_limits_are_config_errors() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        let client = client(&server);
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let inner = service_fn(move |_: Job| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(()) }
        });
        let key_of = |job: &Job| job.key.clone();
        let mut zero = SemaphoreLayer::new(client.clone(), 0, key_of)
            .typed_errors()
            .layer(inner.clone());
        let job = Job {
            key: Some(unique_key("job")),
            gated: false,
        };
        let err = zero
            .ready()
            .await
            .unwrap()
            .call(job.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::Config { .. })),
            "{err:?}"
        );

        server.kill();
        let mut down = LockLayer::new(client, key_of).typed_errors().layer(inner);
        let err = down.ready().await.unwrap().call(job).await.unwrap_err();
        let err = err.downcast::<Error>().unwrap();
        assert!(err.is_unavailable() && !err.is_busy(), "{err:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the inner service ran unguarded"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_without_end_is_fine() {
    bounded(async {
        let server = TestServer::start().await.unwrap();
        for limit in [None, Some(2)] {
            let key_of = |job: &Job| job.key.clone();
            let inner = service_fn(|_: Job| async { Ok::<_, BoxError>("done") });
            let svc = match limit {
                None => LockLayer::new(client(&server), key_of)
                    .wait(Duration::MAX)
                    .typed_errors()
                    .layer(inner)
                    .boxed(),
                Some(limit) => SemaphoreLayer::new(client(&server), limit, key_of)
                    .wait(Duration::MAX)
                    .typed_errors()
                    .layer(inner)
                    .boxed(),
            };
            let job = Job {
                key: Some(unique_key("job")),
                gated: false,
            };
            assert_eq!(svc.oneshot(job).await.unwrap(), "done");
        }
    })
    .await;
}
