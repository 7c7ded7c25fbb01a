//! Sharding over several servers.
//!
//! End-to-end, over real sockets. Tests that need only a default-configured server use
//! `TestServers::default_config`, so they run against `DFLOCKD_TEST_SERVERS` when it is set;
//! the others start their own.

mod common;

use common::builder;
use dflockd_testkit::{TestServers, unique_key};

#[tokio::test]
async fn keys_are_routed_by_crc32_across_three_servers() {
    let servers = TestServers::default_config(3).await.unwrap();
    let addrs = servers.addrs();
    let client = builder(&addrs).build().unwrap();
    let mut guards = Vec::new();
    let keys: Vec<String> = (0..12).map(|i| unique_key(&format!("shard{i}"))).collect();
    for key in &keys {
        guards.push(client.lock(key).acquire().await.unwrap());
    }
    let stats = client.stats().await.unwrap();
    for (key, guard) in keys.iter().zip(&guards) {
        let index = (crc32fast::hash(key.as_bytes()) % 3) as usize;
        assert_eq!(client.server_for(key).unwrap(), index);
        assert_eq!(guard.server(), addrs[index]);
        for (i, s) in stats.iter().enumerate() {
            assert_eq!(s.lock(key).is_some(), i == index, "{key} on server {i}");
        }
    }
    // `user:42:profile` lands on server 0 of 3, as with every dflockd client.
    assert_eq!(client.server_for("user:42:profile").unwrap(), 0);
}
