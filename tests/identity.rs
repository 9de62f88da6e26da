//! The node's identity key file and its encryption mode, through the binary: the id
//! survives restarts and `kill -9` (key file 0600 beside the peer cache), a broken
//! key file stops the node instead of giving it a new identity, `--identity` moves
//! the file, port 0 is a new node each run; and a `--plaintext` node and a TLS node
//! refuse each other at once, each with one clear line, and go on serving peers of
//! their own kind.
//!
//! Real processes on 127.0.0.1, state in temporary folders (`XDG_STATE_HOME` and
//! `HOME`), bounded waits only, every process killed by its guard.

mod cli_support;
mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cli_support::{run_to_end, Cli};

fn key_file(state: &Path, port: u16) -> PathBuf {
    state
        .join("p2p-overlay")
        .join(format!("identity-{port}.key"))
}

fn peers_file(state: &Path, port: u16) -> PathBuf {
    state.join("p2p-overlay").join(format!("peers-{port}.txt"))
}

#[test]
fn the_id_survives_restarts_and_kill_9() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    let port = common::free_port();

    let mut a = Cli::start("A", st, port, &[]);
    let id = a.id.clone();
    let key = key_file(st, port);
    let key_bytes = fs::read(&key).expect("the key file is created on the first start");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode");
    }
    assert!(a
        .info()
        .iter()
        .any(|l| l == "encryption: tls (open network)"));
    // A peer, so the peer cache has something in it.
    let mut b = Cli::start("B", st, 0, &["127.0.0.1", &port.to_string()]);
    b.wait_peers("A", |ls| {
        ls.iter()
            .any(|l| l.starts_with(&format!("127.0.0.1:{port} id={id} ")))
    });
    // A records B once it verified B's listen address (a dial-back, 3.1 of
    // docs/PROTOCOL.md), which may finish after B already lists A.
    let b_addr = b.addr();
    a.wait_peers("B, verified", |ls| {
        ls.iter().any(|l| l.starts_with(&format!("{b_addr} ")))
    });
    a.exit();

    let mut a = Cli::start("A again", st, port, &[]);
    assert_eq!(a.id, id, "same key file, same id");
    a.wait_peers("B, rejoined through the cache", |ls| {
        ls.iter().any(|l| l.starts_with(&format!("{} ", b.addr())))
    });
    let cache = fs::read_to_string(peers_file(st, port)).expect("peer cache");
    assert!(cache.contains(&b.addr()), "{cache:?}");

    a.kill9();
    assert_eq!(fs::read(&key).expect("key after kill -9"), key_bytes);
    let cache_after = fs::read_to_string(peers_file(st, port)).expect("cache after kill -9");
    assert!(cache_after.contains(&b.addr()), "{cache_after:?}");

    let mut a = Cli::start("A after kill -9", st, port, &[]);
    assert_eq!(a.id, id, "same id after kill -9");
    a.exit();
    b.exit();
}

#[test]
fn a_malformed_key_file_is_an_error_never_a_new_identity() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    let port = common::free_port();
    let key = key_file(st, port);
    fs::create_dir_all(key.parent().expect("parent")).expect("mkdir");
    fs::write(&key, "not a key\n").expect("write");

    let f = run_to_end(st, &[&port.to_string(), "--bind", "127.0.0.1"]);
    assert_eq!(f.code(), Some(1), "stderr {:?}", f.stderr);
    let line = f.one_stderr_line("malformed key");
    assert!(line.starts_with("p2p-node: "), "{line:?}");
    assert!(line.contains(&key.display().to_string()), "{line:?}");
    assert!(f.stdout.is_empty(), "{:?}", f.stdout);
    assert_eq!(
        fs::read(&key).expect("read"),
        b"not a key\n",
        "left as it was"
    );

    // The same through --identity, and for a folder where the file should be.
    let other = st.join("other.key");
    fs::write(
        &other,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    for path in [other, st.to_path_buf()] {
        let p = path.display().to_string();
        let f = run_to_end(st, &["0", "--bind", "127.0.0.1", "--identity", &p]);
        assert_eq!(f.code(), Some(1), "{p}: {:?}", f.stderr);
        assert!(f.one_stderr_line(&p).contains(&p));
    }
}

#[test]
fn identity_flag_overrides_the_default_and_port_0_is_new_each_run() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    let own = st.join("keys").join("mine.key");
    let own_s = own.display().to_string();
    let port = common::free_port();

    let mut a = Cli::start("A", st, port, &["--identity", &own_s]);
    let id = a.id.clone();
    a.exit();
    assert!(own.is_file(), "--identity PATH is created");
    assert!(!key_file(st, port).exists(), "the default path is not used");
    // The same file on another port (0 too) is the same node.
    let mut a = Cli::start("A on port 0", st, 0, &["--identity", &own_s]);
    assert_eq!(a.id, id);
    a.exit();

    // Port 0 without --identity: a fresh key each run, none written.
    let mut x = Cli::start("X", st, 0, &[]);
    let mut y = Cli::start("Y", st, 0, &[]);
    assert_ne!(x.id, y.id);
    x.exit();
    y.exit();
    assert!(!key_file(st, 0).exists());
}

/// The error texts of src/error.rs `HandshakeError::PeerPlaintext` / `PeerTls`.
const PEER_PLAINTEXT: &str = "peer speaks plaintext, this node TLS";
const PEER_TLS: &str = "peer speaks TLS, this node runs --plaintext";

#[test]
fn plaintext_and_tls_nodes_refuse_each_other_at_once_and_keep_serving() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    // A handshake timeout far beyond the waits below: a refusal that shows up within
    // them was not a timeout.
    let slow = ["--handshake-timeout-ms", "60000", "--no-auto-dial"];
    let mut tls = Cli::start("TLS", st, 0, &slow);
    let mut plain_args = slow.to_vec();
    plain_args.push("--plaintext");
    let mut plain = Cli::start("PLAIN", st, 0, &plain_args);
    assert!(plain.info().iter().any(|l| l == "encryption: plain"));

    // The plaintext node dials the TLS one.
    plain.send_line(&format!("connect {}", tls.addr()));
    let l = tls.expect_err_line("the TLS node's refusal", |l| l.contains(PEER_PLAINTEXT));
    assert!(l.contains("--plaintext"), "{l:?}");
    plain.expect_err_line("the dialler's `error: ` line", |l| l.starts_with("error: "));

    // The TLS node dials the plaintext one.
    tls.send_line(&format!("connect {}", plain.addr()));
    plain.expect_err_line("the plaintext node's refusal", |l| l.contains(PEER_TLS));
    tls.expect_err_line("the dialler's `error: ` line", |l| l.starts_with("error: "));

    for node in [&mut tls, &mut plain] {
        let lines = node.peers();
        assert_eq!(
            lines,
            vec!["no peers connected".to_string()],
            "{}",
            node.name
        );
    }

    // Both still serve peers of their own kind.
    let tls2 = Cli::start("TLS2", st, 0, &["127.0.0.1", &tls.port.to_string()]);
    let mut plain2_args = vec!["127.0.0.1".to_string(), plain.port.to_string()];
    plain2_args.push("--plaintext".into());
    let plain2_args: Vec<&str> = plain2_args.iter().map(String::as_str).collect();
    let plain2 = Cli::start("PLAIN2", st, 0, &plain2_args);
    let line = tls.wait_peers("TLS2", |ls| {
        ls.iter()
            .any(|l| l.starts_with(&format!("{} ", tls2.addr())))
    });
    assert!(line.iter().all(|l| l.ends_with(" enc=tls")), "{line:?}");
    let line = plain.wait_peers("PLAIN2", |ls| {
        ls.iter()
            .any(|l| l.starts_with(&format!("{} ", plain2.addr())))
    });
    assert!(line.iter().all(|l| l.ends_with(" enc=plain")), "{line:?}");
    tls.exit();
    plain.exit();
}
