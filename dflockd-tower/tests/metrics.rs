//! The layers' metrics (feature `metrics`): rejections and unguarded requests, by layer and
//! reason, with `metrics-util`'s debugging recorder installed for this binary (one test, so
//! the counts are exact).

use std::collections::HashMap;
use std::time::Duration;

use dflockd_core::metrics::{ACQUIRES_TOTAL, LAYER_REJECTIONS_TOTAL, LAYER_UNGUARDED_TOTAL};
use dflockd_testkit::{TestServer, unique_key};
use dflockd_tower::{BoxError, LockLayer, OnMissingKey, OnUnreachable};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// The counters recorded so far (snapshots hand out what changed since the last one).
struct Counters {
    snapshotter: Snapshotter,
    counts: HashMap<(String, Vec<(String, String)>), u64>,
}

impl Counters {
    fn get(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (_, key) = key.into_parts();
            if let DebugValue::Counter(n) = value {
                let mut labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                *self
                    .counts
                    .entry((key.name().to_owned(), labels))
                    .or_default() += n;
            }
        }
        let mut labels: Vec<_> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.counts
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0)
    }
}

/// The key of a job: the job is its key, if any.
type ByKey = fn(&Option<String>) -> Option<String>;

fn client(addr: &str) -> dflockd_core::Client {
    dflockd_core::Client::builder()
        .servers([addr])
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_and_unguarded_requests_are_counted_by_layer_and_reason() {
    let recorder = DebuggingRecorder::new();
    let mut m = Counters {
        snapshotter: recorder.snapshotter(),
        counts: HashMap::new(),
    };
    recorder.install().unwrap();
    let test = async {
        let server = TestServer::start().await.unwrap();
        let addr = server.addr_string();
        let key = unique_key("job");
        let svc = |layer: LockLayer<ByKey>| {
            ServiceBuilder::new()
                .layer(layer.typed_errors())
                .service(service_fn(|_: Option<String>| async {
                    Ok::<_, BoxError>("done")
                }))
        };
        let by_key: ByKey = Option::clone;

        // Busy: the key is held elsewhere and the layer does not wait.
        let jobs = LockLayer::new(client(&addr), by_key)
            .name("jobs")
            .wait(Duration::ZERO);
        let held = client(&addr).lock(&key).acquire().await.unwrap();
        let busy = svc(jobs.clone()).oneshot(Some(key.clone())).await;
        assert!(busy.is_err());
        let jobs_busy = [("layer", "jobs"), ("reason", "busy")];
        assert_eq!(m.get(LAYER_REJECTIONS_TOTAL, &jobs_busy), 1);
        // The client under the layer counts the acquisition too.
        let lock_busy = [("kind", "lock"), ("outcome", "busy")];
        assert_eq!(m.get(ACQUIRES_TOTAL, &lock_busy), 1);
        held.release().await.unwrap();
        assert_eq!(svc(jobs.clone()).oneshot(Some(key)).await.unwrap(), "done");
        assert_eq!(m.get(LAYER_REJECTIONS_TOTAL, &jobs_busy), 1);

        // No key: rejected, or let through unguarded.
        assert!(svc(jobs).oneshot(None).await.is_err());
        let jobs_missing = [("layer", "jobs"), ("reason", "missing_key")];
        assert_eq!(m.get(LAYER_REJECTIONS_TOTAL, &jobs_missing), 1);
        let lenient = LockLayer::new(client(&addr), by_key)
            .name("lenient")
            .on_missing_key(OnMissingKey::PassThrough);
        for _ in 0..2 {
            assert_eq!(svc(lenient.clone()).oneshot(None).await.unwrap(), "done");
        }
        let passed = [("layer", "lenient"), ("reason", "missing_key")];
        assert_eq!(m.get(LAYER_UNGUARDED_TOTAL, &passed), 2);

        // The lock server unreachable: rejected, or run unguarded when failing open.
        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let closed = LockLayer::new(client(&gone), by_key).name("closed");
        assert!(svc(closed).oneshot(Some("k".into())).await.is_err());
        let unavailable = [("layer", "closed"), ("reason", "unavailable")];
        assert_eq!(m.get(LAYER_REJECTIONS_TOTAL, &unavailable), 1);
        let open = LockLayer::new(client(&gone), by_key)
            .name("open")
            .on_unreachable(OnUnreachable::FailOpen);
        let reply = svc(open).oneshot(Some("k".into())).await.unwrap();
        assert_eq!(reply, "done");
        let failed_open = [("layer", "open"), ("reason", "failed_open")];
        assert_eq!(m.get(LAYER_UNGUARDED_TOTAL, &failed_open), 1);
        assert_eq!(m.get(LAYER_REJECTIONS_TOTAL, &[("layer", "open")]), 0);
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("the test took too long");
}
