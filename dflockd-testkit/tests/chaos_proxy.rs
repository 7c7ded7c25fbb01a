//! The chaos proxy does what it says: latency, blackhole (held, then delivered in order),
//! reset, slicing, bandwidth limit, slow close.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dflockd_testkit::ChaosProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server: returns what it reads, closes when the peer closes.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> (Vec<u8>, Duration, usize) {
    let started = Instant::now();
    stream.write_all(data).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    while got.len() < data.len() {
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        reads += 1;
        got.extend_from_slice(&buf[..n]);
    }
    (got, started.elapsed(), reads)
}

#[tokio::test]
async fn latency_slicing_bandwidth() {
    let proxy = ChaosProxy::start(echo().await).unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let (got, took, _) = round_trip(&mut s, b"hello").await;
    assert_eq!(got, b"hello");
    assert!(took < Duration::from_millis(50), "{took:?}");

    proxy.set_latency(Duration::from_millis(50), Duration::from_millis(10));
    let (got, took, _) = round_trip(&mut s, b"slow").await;
    assert_eq!(got, b"slow");
    // 40-60 ms each way.
    assert!(
        took >= Duration::from_millis(80) && took < Duration::from_millis(400),
        "{took:?}"
    );
    proxy.heal();

    proxy.set_slicing(Some((2, Duration::from_millis(2))));
    let data: Vec<u8> = (0..64u8).collect();
    let (got, _, reads) = round_trip(&mut s, &data).await;
    assert_eq!(got, data, "order kept");
    assert!(reads >= 8, "delivered in pieces ({reads} reads)");
    proxy.heal();

    proxy.set_bandwidth(Some(2000));
    let data = vec![7u8; 400];
    let (got, took, _) = round_trip(&mut s, &data).await;
    assert_eq!(got, data);
    // 400 bytes at 2000 B/s: 0.2 s each way, the two ways overlapping (the echo sends
    // back each piece as it comes).
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert_eq!(proxy.stats().open, 1);
}

#[tokio::test]
async fn blackhole_holds_then_delivers_in_order() {
    let proxy = ChaosProxy::start(echo().await).unwrap();
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"warm").await;
    proxy.set_blackhole(true);
    s.write_all(b"one ").await.unwrap();
    s.write_all(b"two").await.unwrap();
    let mut buf = [0u8; 64];
    let silent = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
    assert!(silent.is_err(), "nothing gets through a blackhole");
    proxy.set_blackhole(false);
    let mut got = Vec::new();
    while got.len() < 7 {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("delivered after the heal")
            .unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"one two");
}

#[tokio::test]
async fn reset_cuts_every_connection_and_new_ones_work() {
    let proxy = ChaosProxy::start(echo().await).unwrap();
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut a, b"a").await;
    round_trip(&mut b, b"b").await;
    let started = Instant::now();
    proxy.reset();
    for s in [&mut a, &mut b] {
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf))
            .await
            .expect("the reset is seen");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut c, b"c").await.0, b"c");
    assert_eq!(proxy.stats().resets, 1);
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.stats().open != 1 {
        assert!(Instant::now() < deadline, "{:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn slow_close_delays_the_fin() {
    let proxy = ChaosProxy::start(echo().await).unwrap();
    proxy.set_slow_close(Duration::from_millis(300));
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut s, b"x").await;
    let started = Instant::now();
    s.shutdown().await.unwrap();
    // The echo server closes only when it sees our close; we see its close after both
    // delays.
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed in the end")
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
}
