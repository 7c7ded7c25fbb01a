//! TLS with a private certificate authority, from a plain thread: trust exactly the CA that
//! signed the server's certificate.
//!
//! ```text
//! cargo run --example tls_blocking      # (-- --quick is accepted; it is quick anyway)
//! DFLOCKD_SERVERS=host:6388 DFLOCKD_TLS_CA_FILE=/etc/dflockd/ca.pem cargo run --example tls_blocking
//! ```
//!
//! Without `DFLOCKD_SERVERS`, a throwaway CA is made and an embedded server serves TLS with a
//! certificate it issued for 127.0.0.1; then a second one serves a self-signed certificate,
//! which the client pins. With `DFLOCKD_SERVERS`, the client comes from the environment
//! (`DFLOCKD_TLS_CA_FILE`, `DFLOCKD_TLS_PINNED_CERT_FILE` for a self-signed certificate,
//! `DFLOCKD_TLS_SERVER_NAME`, `DFLOCKD_TLS=1` for the system's roots, ...). The async version
//! is `tls`.

mod common;

use dflockd::TlsOptions;
use dflockd::blocking::Client;
use dflockd_testkit::tls::{TestCa, TlsIdentity};

fn main() -> Result<(), common::Report> {
    let ca = TestCa::try_new()?;
    let certificate = ca.issue_server(&["127.0.0.1", "localhost"])?;
    let servers = common::servers_with(1, |server| server.tls(certificate.clone()))?;

    let client = if servers.is_external() {
        let tls_vars = [
            "DFLOCKD_TLS",
            "DFLOCKD_TLS_CA_FILE",
            "DFLOCKD_TLS_PINNED_CERT_FILE",
        ];
        if tls_vars.iter().all(|v| std::env::var_os(v).is_none()) {
            return Err("set DFLOCKD_TLS_CA_FILE, DFLOCKD_TLS_PINNED_CERT_FILE or DFLOCKD_TLS=1 for DFLOCKD_SERVERS".into());
        }
        Client::from_env()?
    } else {
        // From a file: TlsOptions::ca_file("/etc/dflockd/ca.pem")?
        Client::builder()
            .servers(servers.addrs())
            .tls(TlsOptions::ca_pem(ca.cert_pem())?)
            .build()?
    };
    let guard = client.lock("my-key").acquire()?;
    println!(
        "over TLS: acquired {} on {} (fence {})",
        guard.key(),
        guard.server(),
        common::fence(guard.fence())
    );
    guard.release()?;

    if !servers.is_external() {
        // Verification is always on: a client that trusts another CA cannot connect.
        let stranger = Client::builder()
            .servers(servers.addrs())
            .tls(TlsOptions::ca_pem(TestCa::try_new()?.cert_pem())?)
            .build()?;
        match stranger.lock("my-key").acquire() {
            Err(e @ dflockd::Error::Tls { .. }) => println!("trusting another CA: {e}"),
            other => return Err(format!("expected a TLS failure, got {other:?}").into()),
        }

        // A self-signed certificate (what `openssl req -x509` makes), trusted by pinning it:
        // exactly this certificate, which must still name the server.
        // From a file: TlsOptions::pinned_certificate("/etc/dflockd/server.pem")?
        let self_signed = TlsIdentity::self_signed(&["127.0.0.1", "localhost"])?;
        let pinned = common::embedded(1, |server| server.tls(self_signed.clone()))?;
        let client = Client::builder()
            .servers(pinned.addrs())
            .tls(TlsOptions::pinned_certificate_pem(&self_signed.cert_pem)?)
            .build()?;
        let guard = client.lock("my-key").acquire()?;
        println!("pinned self-signed certificate: acquired {}", guard.key());
        guard.release()?;
    }
    Ok(())
}
