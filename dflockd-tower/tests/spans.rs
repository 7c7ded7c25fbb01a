//! The `dflockd_guard` span carries the key, the wait and the outcome.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dflockd_testkit::{TestServer, unique_key};
use dflockd_tower::{BoxError, LockLayer};
use tower::{Layer, ServiceExt, service_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn spans_record_key_wait_and_outcome() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let run = async {
        let server = TestServer::start().await.unwrap();
        let client = dflockd_core::Client::builder()
            .servers([server.addr_string()])
            .build()
            .unwrap();
        let key = unique_key("span");
        let layer = LockLayer::new(client.clone(), |k: &String| Some(k.clone()))
            .wait(Duration::ZERO)
            .typed_errors();
        let svc = layer.layer(service_fn(|_: String| async { Ok::<_, BoxError>(()) }));
        svc.clone().oneshot(key.clone()).await.unwrap();

        let holder = client.lock(&key).acquire().await.unwrap();
        svc.oneshot(key.clone()).await.unwrap_err();
        holder.release().await.unwrap();
        key
    };
    let key = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let closes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("dflockd_guard") && l.contains("close"))
        .collect();
    assert_eq!(closes.len(), 2, "{text}");
    for line in &closes {
        assert!(line.contains(&format!("key={key}")), "{line}");
        assert!(line.contains("wait_ms="), "{line}");
    }
    assert!(closes[0].contains("outcome=\"completed\""), "{text}");
    assert!(closes[1].contains("outcome=\"busy\""), "{text}");
}
