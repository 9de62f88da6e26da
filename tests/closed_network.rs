//! A closed network run through the binary: `p2p-node ca init` / `ca issue` make the
//! files, three nodes started with `--network-ca --cert --key` form an overlay, and a
//! node whose certificate another CA issued, or an open-network node, is refused with
//! one clear stderr line and never listed. Plus the refusals of the `ca` subcommands
//! and of the flag combinations.
//!
//! Real processes on 127.0.0.1 port 0, state (and every key) in a temporary folder,
//! bounded waits only; every process is killed by its guard.

mod cli_support;

use std::fs;
use std::path::Path;

use cli_support::{ca, run_to_end, Cli};

/// `--network-ca DIR/ca.pem --cert DIR/NAME.pem --key DIR/NAME.key`.
fn closed_flags(dir: &Path, name: &str) -> Vec<String> {
    vec![
        "--network-ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--key".into(),
        dir.join(format!("{name}.key")).display().to_string(),
    ]
}

fn start_closed(name: &str, state: &Path, dir: &Path, via: Option<&Cli>) -> Cli {
    let mut args: Vec<String> = Vec::new();
    if let Some(v) = via {
        args.push("127.0.0.1".into());
        args.push(v.port.to_string());
    }
    args.extend(closed_flags(dir, name));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::start(name, state, 0, &args)
}

/// A stderr line of a refused TLS handshake (src/error.rs `HandshakeError::Tls`).
fn is_tls_refusal(l: &str) -> bool {
    l.contains("TLS handshake refused")
}

fn lists(lines: &[String], node: &Cli) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("{} id={} ", node.addr(), node.id)))
}

#[test]
fn three_closed_nodes_link_and_refuse_a_foreign_ca_and_an_open_node() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    let dir = st.join("netca");
    let dir_s = dir.display().to_string();
    let init = ca(st, &["init", &dir_s]);
    assert!(init.stdout.contains("ca.pem"), "{}", init.stdout);
    let mut ids = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let out = ca(st, &["issue", &dir_s, n]);
        let id = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("issued node {n}: node id ")))
            .unwrap_or_else(|| panic!("no node id in {:?}", out.stdout))
            .to_string();
        ids.push(id);
    }
    let other = st.join("otherca");
    let other_s = other.display().to_string();
    ca(st, &["init", &other_s]);
    ca(st, &["issue", &other_s, "intruder"]);

    let mut a = start_closed("n1", st, &dir, None);
    let mut b = start_closed("n2", st, &dir, Some(&a));
    let mut c = start_closed("n3", st, &dir, Some(&a));
    // The id printed by `ca issue` is the id the node runs with.
    assert_eq!([&a.id, &b.id, &c.id], [&ids[0], &ids[1], &ids[2]]);

    // A full mesh (B and C learn each other from A), every link TLS.
    let (a_addr, b_addr, c_addr) = (a.addr(), b.addr(), c.addr());
    for (node, others) in [
        (&mut a, [&b_addr, &c_addr]),
        (&mut b, [&a_addr, &c_addr]),
        (&mut c, [&a_addr, &b_addr]),
    ] {
        let lines = node.wait_peers("both other nodes", |ls| {
            others
                .iter()
                .all(|o| ls.iter().any(|l| l.starts_with(&format!("{o} "))))
        });
        for l in &lines {
            if !l.ends_with(" enc=tls") {
                node.fail(&format!("peer line without enc=tls: {l:?}"));
            }
        }
    }
    let info = a.info();
    assert!(
        info.iter().any(|l| l == "encryption: tls (closed network)"),
        "{info:?}"
    );
    assert!(
        info.last().is_some_and(|l| l.starts_with("counters: ")),
        "{info:?}"
    );

    a.send_line("broadcast hello closed world");
    a.expect_line("`broadcast sent to 2 peers`", |l| {
        l == "broadcast sent to 2 peers"
    });
    let want = format!("broadcast from {a_addr}: hello closed world");
    for node in [&b, &c] {
        node.expect_line(&format!("{want:?}"), |l| l == want);
    }

    // A node of another CA: refused by A (its certificate chains to no anchor A
    // trusts), and it refuses A's for the same reason.
    let intruder = start_closed("intruder", st, &other, Some(&a));
    // The dialler checks the listener's certificate first, so it is the one that
    // names the cause; the listener sees the alert it sends.
    a.expect_err_line("a TLS refusal of the intruder", is_tls_refusal);
    let own = intruder.expect_err_line("the intruder's `error: ` line", |l| {
        l.starts_with("error: ")
    });
    assert!(
        own.contains("TLS handshake refused: invalid peer certificate: UnknownIssuer"),
        "{own:?}"
    );

    // An open-network node (self-signed certificate, no --network-ca): refused too.
    let before = a.stderr().iter().filter(|l| is_tls_refusal(l)).count();
    let open = Cli::start("open", st, 0, &["127.0.0.1", &a.port.to_string()]);
    let own = open.expect_err_line("the open node's `error: ` line", |l| {
        l.starts_with("error: ")
    });
    assert!(
        own.contains("TLS handshake refused: invalid peer certificate"),
        "{own:?}"
    );
    a.expect_err_line("a TLS refusal of the open node", is_tls_refusal);
    assert!(a.stderr().iter().filter(|l| is_tls_refusal(l)).count() > before);

    // Neither ever appears as a peer, anywhere; every stderr line stays one line of
    // its own (no multi-line dumps).
    for node in [&mut a, &mut b, &mut c] {
        let lines = node.peers();
        assert!(
            !lists(&lines, &intruder) && !lists(&lines, &open),
            "{}: {lines:?}",
            node.name
        );
        for bad in [&intruder, &open] {
            let up = format!("peer up: {} ", bad.addr());
            if node.stdout().iter().any(|l| l.starts_with(&up)) {
                node.fail(&format!("{} came up", bad.name));
            }
        }
    }
    for l in a.stderr() {
        assert!(!l.trim().is_empty() && !l.contains("panicked"), "{l:?}");
    }
    for node in [&mut a, &mut b, &mut c] {
        node.exit();
    }
}

#[test]
fn ca_refuses_to_overwrite_and_refuses_bad_names() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    let dir = st.join("ca");
    let d = dir.display().to_string();
    ca(st, &["init", &d]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
    }
    let key = fs::read(dir.join("ca.key")).expect("ca.key");
    let pem = fs::read(dir.join("ca.pem")).expect("ca.pem");

    let again = run_to_end(st, &["ca", "init", &d]);
    assert_eq!(again.code(), Some(1));
    let line = again.one_stderr_line("second ca init");
    assert!(line.contains("already exists"), "{line:?}");
    assert_eq!(fs::read(dir.join("ca.key")).expect("ca.key"), key);
    assert_eq!(fs::read(dir.join("ca.pem")).expect("ca.pem"), pem);

    ca(st, &["issue", &d, "node-1"]);
    let cert = fs::read(dir.join("node-1.pem")).expect("node-1.pem");
    let again = run_to_end(st, &["ca", "issue", &d, "node-1"]);
    assert_eq!(again.code(), Some(1));
    assert!(again
        .one_stderr_line("second issue")
        .contains("already exists"));
    assert_eq!(fs::read(dir.join("node-1.pem")).expect("pem"), cert);

    let long = "x".repeat(65);
    for bad in ["../evil", ".hidden", "a b", "a/b", "", long.as_str()] {
        let f = run_to_end(st, &["ca", "issue", &d, bad]);
        assert_eq!(f.code(), Some(2), "{bad:?}: {}", f.stderr);
        let line = f.one_stderr_line(bad);
        assert!(line.starts_with("p2p-node: "), "{line:?}");
    }
    assert!(!st.join("evil.key").exists() && !st.join("evil.pem").exists());
    assert!(!dir.join(".hidden.key").exists());

    // No CA in the folder: one line, exit 1, nothing written.
    let empty = st.join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let e = empty.display().to_string();
    let f = run_to_end(st, &["ca", "issue", &e, "n"]);
    assert_eq!(f.code(), Some(1));
    assert!(f.one_stderr_line("no ca.key").contains("ca.key"));
    assert!(!empty.join("n.key").exists());

    // Usage mistakes.
    for args in [&["ca"][..], &["ca", "init"], &["ca", "frobnicate", &d]] {
        let f = run_to_end(st, args);
        assert_eq!(f.code(), Some(2), "{args:?}");
        f.one_stderr_line("usage");
    }
}

#[test]
fn closed_network_flag_combinations_and_file_problems() {
    let state = tempfile::tempdir().expect("state");
    let st = state.path();
    let dir = st.join("ca");
    let d = dir.display().to_string();
    ca(st, &["init", &d]);
    ca(st, &["issue", &d, "n1"]);
    ca(st, &["issue", &d, "n2"]);
    let p = |f: &str| dir.join(f).display().to_string();
    let (ca_pem, n1_pem, n1_key, n2_pem) = (p("ca.pem"), p("n1.pem"), p("n1.key"), p("n2.pem"));

    let exit2: Vec<Vec<&str>> = vec![
        vec!["0", "--cert", &n1_pem, "--key", &n1_key],
        vec!["0", "--cert", &n1_pem],
        vec!["0", "--network-ca", &ca_pem],
        vec!["0", "--network-ca", &ca_pem, "--cert", &n1_pem],
        vec![
            "0",
            "--plaintext",
            "--network-ca",
            &ca_pem,
            "--cert",
            &n1_pem,
            "--key",
            &n1_key,
        ],
        vec![
            "0",
            "--identity",
            &n1_key,
            "--network-ca",
            &ca_pem,
            "--cert",
            &n1_pem,
            "--key",
            &n1_key,
        ],
    ];
    for args in &exit2 {
        let f = run_to_end(st, args);
        assert_eq!(f.code(), Some(2), "{args:?}: {}", f.stderr);
        let line = f.one_stderr_line(&format!("{args:?}"));
        assert!(line.starts_with("p2p-node: "), "{line:?}");
        assert!(f.stdout.is_empty());
    }

    // Files that exist but do not fit: exit 1, one line naming the file.
    let missing = p("nope.pem");
    let exit1: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "0",
                "--network-ca",
                &missing,
                "--cert",
                &n1_pem,
                "--key",
                &n1_key,
            ],
            "nope.pem",
        ),
        (
            vec![
                "0",
                "--network-ca",
                &ca_pem,
                "--cert",
                &n2_pem,
                "--key",
                &n1_key,
            ],
            "n2.pem",
        ),
        (
            vec![
                "0",
                "--network-ca",
                &n1_key,
                "--cert",
                &n1_pem,
                "--key",
                &n1_key,
            ],
            "n1.key",
        ),
    ];
    for (args, names) in &exit1 {
        let f = run_to_end(st, args);
        assert_eq!(f.code(), Some(1), "{args:?}: {}", f.stderr);
        let line = f.one_stderr_line(&format!("{args:?}"));
        assert!(line.contains(names), "{line:?} should name {names}");
    }
}
