//! Raw-protocol throughput of the test server: acquire + release of distinct keys on
//! persistent connections, with 1 and with 16 concurrent connections.
//!
//! ```text
//! cargo run -p dflockd-testkit --release --example server_bench [-- --shards N --secs S | --quick]
//! ```
//!
//! One op is one `l KEY 0` answered `ok TOKEN LEASE` plus one `r KEY TOKEN` answered `ok` (two
//! round trips). Each connection cycles through 1000 keys of its own, so connections never
//! contend. The clients run in this process, on their own runtime, next to the server's.

use std::time::{Duration, Instant};

use dflockd_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KEYS_PER_CONN: usize = 1000;

async fn client(addr: std::net::SocketAddr, id: usize, until: Instant) -> u64 {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut io = BufReader::new(stream);
    let keys: Vec<String> = (0..KEYS_PER_CONN)
        .map(|i| format!("bench-{id}-{i}"))
        .collect();
    let mut line = String::new();
    let mut request = Vec::with_capacity(128);
    let mut ops = 0u64;
    while Instant::now() < until {
        for key in &keys {
            request.clear();
            request.extend_from_slice(b"l\n");
            request.extend_from_slice(key.as_bytes());
            request.extend_from_slice(b"\n0\n");
            io.get_mut().write_all(&request).await.expect("write");
            line.clear();
            io.read_line(&mut line).await.expect("read");
            let token = line
                .strip_prefix("ok ")
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected answer {line:?}"))
                .to_owned();
            request.clear();
            request.extend_from_slice(b"r\n");
            request.extend_from_slice(key.as_bytes());
            request.push(b'\n');
            request.extend_from_slice(token.as_bytes());
            request.push(b'\n');
            io.get_mut().write_all(&request).await.expect("write");
            line.clear();
            io.read_line(&mut line).await.expect("read");
            assert_eq!(line, "ok\n");
            ops += 1;
            if ops % 64 == 0 && Instant::now() >= until {
                break;
            }
        }
    }
    ops
}

async fn run(server: &TestServer, conns: usize, secs: f64) -> f64 {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|id| tokio::spawn(client(server.addr(), id, until)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut shards = 16;
    let mut secs = 3.0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--shards" => shards = args.next().ok_or("--shards N")?.parse()?,
            "--secs" => secs = args.next().ok_or("--secs S")?.parse()?,
            // A short run, as every example takes.
            "--quick" => secs = 0.5,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let server = TestServer::builder()
        .max_locks(16 * KEYS_PER_CONN + 16)
        .shards(shards)
        .start()
        .await?;
    for (conns, name) in [(1, "testkit_ops_1conn"), (16, "testkit_ops_16conn")] {
        let rate = run(&server, conns, secs).await;
        println!("figure {name} {rate:.0} ops/s");
    }
    Ok(())
}
