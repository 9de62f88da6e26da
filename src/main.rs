//! `p2p-node`: run one overlay node and drive it from standard input (the C++
//! `main.cpp`).
//!
//! Kept thin: parse and check the arguments, start a [`Node`], then one loop that waits
//! on three things at once: a command line from the stdin thread, an event from the
//! node, and the shutdown signal (Ctrl-C or SIGTERM). `exit` and the signals end in the
//! same place: `Node::stop` sends LEAVE, closes links, joins threads; then exit 0.
//!
//! Differences from the C++: bad arguments print one line and exit 2 instead of
//! throwing from `std::stoi`; end of input stops reading commands but not the node (so
//! it runs under a service manager or with `< /dev/null`); output is line-oriented
//! and documented in README.md, and an event is always exactly one line: peer text
//! is printed with its control characters escaped (`cli::escape_line`), where the C++
//! printed whatever bytes arrived.
//!
//! Standard input is read in bounded lines (`line_reader`): a line longer than the
//! frame limit plus 4 KiB, or one that is not UTF-8, is refused with one `error: `
//! line and skipped, and the next line is read as usual. Error lines quote at most a
//! short, escaped prefix of what was typed (`cli::quote_input`), so neither memory nor
//! stderr grows with the length of a line.

mod ca;
mod cli;
mod line_reader;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use crossbeam_channel::{bounded, never, select, Receiver};

use p2p_overlay::Node;
use p2p_overlay::{
    identity, peer_cache, resolve_peer_addr, Config, Encryption, Identity, NetworkCa,
};

use crate::cli::Command;
use crate::line_reader::{Line, LineReader};

const AFTER_HELP: &str = "\
Commands are read from standard input, one per line (type 'help' once running).
Output: one line per event or command result on stdout; diagnostics on stderr,
filtered by RUST_LOG (default: warn).

Known addresses are saved to a peer cache file (see --peers-file), so a node
restarted on the same port rejoins its overlay without a bootstrap address. Its
key, which its node id is derived from, is kept beside it (see --identity).

Links are TLS 1.3. A closed network admits only nodes with a certificate from its
CA: make one with 'p2p-node ca init DIR', a node's key and certificate with
'p2p-node ca issue DIR NAME', then start each node with --network-ca DIR/ca.pem
--cert DIR/NAME.pem --key DIR/NAME.key.

Examples:
  p2p-node 9000                      start a new overlay on port 9000
  p2p-node 9001 127.0.0.1 9000       join it through the node on port 9000
  p2p-node 9001                      later: rejoin through the cached peers
  p2p-node ca init ca                make a closed network's CA in ./ca
  p2p-node ca issue ca node1         issue ca/node1.pem and ca/node1.key";

/// A decentralized peer-to-peer overlay node.
#[derive(Parser, Debug)]
#[command(name = "p2p-node", version, about, after_help = AFTER_HELP)]
struct Args {
    /// TCP port to listen on (0 picks a free port)
    port: u16,

    /// Host of a node to join through (name or IP)
    #[arg(requires = "peer_port")]
    peer_host: Option<String>,

    /// Port of the node to join through
    peer_port: Option<u16>,

    /// IP address to listen on
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    bind: IpAddr,

    /// Address to announce to peers instead of the one they see (IP or IP:PORT)
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,

    /// Overlay name; nodes with different names refuse each other
    #[arg(long, value_name = "NAME", default_value = "p2p-overlay")]
    network: String,

    /// Number of links to dial towards
    #[arg(long, value_name = "N", default_value_t = 8)]
    target_links: usize,

    /// Most links of both directions
    #[arg(long, value_name = "N", default_value_t = 128)]
    max_links: usize,

    /// Most links dialled by the peer (the rest is kept for our own dials)
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_inbound: usize,

    /// Most accepted connections still in their handshake; more are closed at once
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_pending: usize,

    /// Most open connections of both directions in any state (each costs a thread
    /// and a descriptor); more accepted sockets are closed at once, more dials wait
    #[arg(long, value_name = "N", default_value_t = 192)]
    max_connections: usize,

    /// Do not dial addresses learned from peers (only the bootstrap and 'connect')
    #[arg(long)]
    no_auto_dial: bool,

    /// Milliseconds between heartbeats on each link
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    heartbeat_ms: u64,

    /// Milliseconds of silence after which a peer is dropped
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    timeout_ms: u64,

    /// Milliseconds a new connection has to complete the JOIN handshake
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    handshake_timeout_ms: u64,

    /// Largest frame accepted or sent, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_frame: u32,

    /// Peer cache file [default: $XDG_STATE_HOME/p2p-overlay/peers-<port>.txt, else
    /// ~/.local/state/p2p-overlay/peers-<port>.txt; none when the port is 0]
    #[arg(long, value_name = "PATH", conflicts_with = "no_peers_file")]
    peers_file: Option<PathBuf>,

    /// Do not read or write a peer cache file
    #[arg(long)]
    no_peers_file: bool,

    /// Milliseconds between rewrites of the peer cache (it is also written at exit)
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    peers_file_interval_ms: u64,

    /// Identity key file (Ed25519, PKCS#8 PEM), created when missing; the node id is
    /// derived from it [default: $XDG_STATE_HOME/p2p-overlay/identity-<port>.key, else
    /// ~/.local/state/p2p-overlay/identity-<port>.key; a fresh key each run when the
    /// port is 0]
    #[arg(long, value_name = "PATH", conflicts_with = "network_ca")]
    identity: Option<PathBuf>,

    /// Unencrypted links (debugging and comparison only); such a node and a TLS node
    /// refuse each other
    #[arg(long, conflicts_with = "network_ca")]
    plaintext: bool,

    /// Closed network: accept only peers whose certificate this CA issued (a PEM file,
    /// made by 'p2p-node ca init'); needs --cert and --key
    #[arg(long, value_name = "CA.pem", requires_all = ["cert", "key"])]
    network_ca: Option<PathBuf>,

    /// This node's certificate from the network CA ('p2p-node ca issue'); needs
    /// --network-ca and --key
    #[arg(long, value_name = "NODE.pem", requires_all = ["network_ca", "key"])]
    cert: Option<PathBuf>,

    /// The key of the --cert certificate (it is this node's identity); needs
    /// --network-ca and --cert
    #[arg(long, value_name = "NODE.key", requires_all = ["network_ca", "cert"])]
    key: Option<PathBuf>,
}

impl Args {
    /// Checks what clap cannot and builds the node's config.
    fn to_config(&self) -> Result<Config, String> {
        let advertise = match &self.advertise {
            None => None,
            Some(s) => Some(parse_advertise(s, self.port)?),
        };
        if self.peer_port == Some(0) {
            return Err("peer port must be from 1 to 65535".into());
        }
        let peers_file = if self.no_peers_file {
            None
        } else {
            self.peers_file
                .clone()
                .or_else(|| peer_cache::default_path(self.port))
        };
        // The byte budgets must hold one maximum frame (Config::validate): a larger
        // --max-frame raises them to it rather than making the flag an error.
        let defaults = Config::default();
        let frame = self.max_frame as usize;
        let config = Config {
            queue_bytes: defaults.queue_bytes.max(frame),
            max_pending_event_bytes: defaults.max_pending_event_bytes.max(frame),
            bind: self.bind,
            port: self.port,
            advertise,
            network: self.network.clone(),
            target_links: self.target_links,
            max_links: self.max_links,
            max_inbound_links: self.max_inbound,
            max_pending_handshakes: self.max_pending,
            max_connections: self.max_connections,
            auto_dial: !self.no_auto_dial,
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms),
            peer_timeout: Duration::from_millis(self.timeout_ms),
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            max_frame: self.max_frame,
            peers_file,
            peers_file_interval: Duration::from_millis(self.peers_file_interval_ms),
            encryption: if self.plaintext {
                Encryption::Plain
            } else {
                Encryption::Tls
            },
            ..defaults
        };
        // The identity and CA come from files, loaded after this check (a file
        // problem is exit 1, a bad argument exit 2); `Node::start` checks the
        // closed-network part once `load_identity` has filled it in.
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The node's identity and, in a closed network, its CA, read from their files.
    /// Every problem is one line naming the file; a key file that exists but cannot
    /// be read or parsed is never replaced by a new identity.
    fn load_identity(&self) -> Result<(Identity, Option<NetworkCa>), String> {
        if let (Some(ca), Some(cert), Some(key)) = (&self.network_ca, &self.cert, &self.key) {
            let id = Identity::load(key)
                .and_then(|i| i.with_certificate_file(cert))
                .map_err(|e| e.to_string())?;
            let ca = NetworkCa::load(ca).map_err(|e| e.to_string())?;
            return Ok((id, Some(ca)));
        }
        let path = match &self.identity {
            Some(p) => p.clone(),
            None if self.port == 0 => return Ok((Identity::generate(), None)),
            None => match identity::default_path(self.port) {
                Some(p) => p,
                None => {
                    log::warn!(
                        "neither XDG_STATE_HOME nor HOME is set: a new identity for this \
                         run only (use --identity PATH to keep one)"
                    );
                    return Ok((Identity::generate(), None));
                }
            },
        };
        let (id, created) = Identity::load_or_create(&path).map_err(|e| e.to_string())?;
        if created {
            log::info!(
                "created identity key {} (node id {})",
                path.display(),
                id.node_id()
            );
        }
        Ok((id, None))
    }
}

/// `IP` (the listen port is announced) or `IP:PORT`.
fn parse_advertise(s: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    match s.parse::<IpAddr>() {
        Ok(ip) if port != 0 => Ok(SocketAddr::new(ip, port)),
        Ok(_) => Err("--advertise without a port needs a fixed listen port, not 0".into()),
        Err(_) => Err(format!(
            "--advertise {} is not an IP or IP:PORT",
            cli::quote_input(s)
        )),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    // `p2p-node ca ...` before the node's own parser: "ca" is never a port, so
    // `p2p-node 9000 ...` parses exactly as without this.
    let mut raw = std::env::args_os().skip(1);
    if raw.next().is_some_and(|a| a == "ca") {
        return run_ca(raw.collect());
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message spans several lines: what is wrong, sometimes the
            // arguments it is about on the next lines, then a blank line and usage.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("p2p-node: {what} (see --help)");
            return ExitCode::from(2);
        }
    };
    let mut config = match args.to_config() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("p2p-node: {msg} (see --help)");
            return ExitCode::from(2);
        }
    };
    match args.load_identity() {
        Ok((id, ca)) => {
            config.identity = Some(id);
            config.network_ca = ca;
        }
        Err(msg) => {
            eprintln!("p2p-node: {msg}");
            return ExitCode::from(1);
        }
    }
    match run(config, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("p2p-node: {msg}");
            ExitCode::from(1)
        }
    }
}

/// `p2p-node ca init DIR` / `p2p-node ca issue DIR NAME` (see `ca.rs`): a usage
/// mistake is exit 2, a file problem exit 1, one line on stderr either way.
fn run_ca(words: Vec<std::ffi::OsString>) -> ExitCode {
    let mut args = Vec::with_capacity(words.len());
    for w in words {
        match w.into_string() {
            Ok(s) => args.push(s),
            Err(_) => {
                eprintln!("p2p-node: ca: arguments must be valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    if matches!(
        args.first().map(String::as_str),
        Some("-h" | "--help" | "help")
    ) {
        println!("{}", ca::USAGE);
        return ExitCode::SUCCESS;
    }
    let cmd = match ca::parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("p2p-node: ca: {msg}");
            return ExitCode::from(2);
        }
    };
    match ca::run(&cmd) {
        Ok(lines) => {
            lines.iter().for_each(|l| println!("{l}"));
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("p2p-node: ca: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Config, args: &Args) -> Result<(), String> {
    // Installed before the first line is printed: a supervisor that signals as soon as
    // the node says it is listening must get a clean shutdown, not the default kill.
    let (shutdown_tx, shutdown_rx) = bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = shutdown_tx.try_send(());
    }) {
        log::warn!("cannot install the Ctrl-C/SIGTERM handler: {e}");
    }

    let node = Node::start(config).map_err(|e| e.to_string())?;
    println!("node {} listening on {}", node.id(), node.local_addr());

    if let (Some(host), Some(port)) = (&args.peer_host, args.peer_port) {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        connect(&node, &target);
    }

    let mut commands = spawn_stdin_reader(line_reader::max_line(args.max_frame));
    let events = node.events();
    loop {
        select! {
            recv(shutdown_rx) -> _ => break,
            recv(events) -> ev => match ev {
                Ok(ev) => println!("{}", cli::format_event(&ev)),
                Err(_) => break,
            },
            recv(commands) -> line => match line {
                Ok(Line::Text(line)) => {
                    if !run_line(&node, &line) {
                        break;
                    }
                }
                Ok(Line::TooLong { len }) => eprintln!(
                    "error: line too long ({len} bytes, the limit is {} bytes); ignored",
                    line_reader::max_line(args.max_frame)
                ),
                Ok(Line::BadUtf8 { offset, prefix }) => {
                    let after = if prefix.is_empty() {
                        String::new()
                    } else {
                        format!(", after {}", cli::quote_input(&prefix))
                    };
                    eprintln!("error: line is not valid UTF-8 (at byte {offset}{after}); ignored");
                }
                // End of input: keep serving until a signal (see the module doc).
                Err(_) => commands = never(),
            },
        }
    }
    println!("shutting down");
    node.stop();
    Ok(())
}

/// Lines read but not yet run: the stdin thread waits when the main loop is busy (a
/// `connect` can take seconds), so queued lines cost at most this many times the line
/// limit instead of whatever a pipe delivers meanwhile.
const QUEUED_LINES: usize = 4;

/// Reads stdin on its own thread, in lines of at most `max_line` bytes (see
/// `line_reader`); an over-long or non-UTF-8 line is passed on as such for the main
/// loop to report, and reading goes on. Only a real read error (not bad bytes) ends
/// it. It is the one thread not joined: a blocking read of stdin cannot be
/// interrupted portably, and the process exits right after `stop`.
fn spawn_stdin_reader(max_line: usize) -> Receiver<Line> {
    let (tx, rx) = bounded(QUEUED_LINES);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut lines = LineReader::new(io::stdin().lock(), max_line);
            loop {
                match lines.read_line() {
                    Ok(Some(line)) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("cannot read standard input: {e}");
                        break;
                    }
                }
            }
        });
    match spawned {
        Ok(_) => rx,
        Err(e) => {
            log::warn!("cannot start the stdin thread, commands are disabled: {e}");
            never()
        }
    }
}

fn connect(node: &Node, target: &str) {
    match resolve_peer_addr(target).and_then(|a| node.connect_to_peer(a)) {
        Ok(p) => println!("connected to {} (id {})", p.addr, p.node_id),
        Err(e) => eprintln!("error: {e}"),
    }
}

/// Runs one command line; `false` means exit.
fn run_line(node: &Node, line: &str) -> bool {
    let cmd = match cli::parse_command(line) {
        Ok(Some(c)) => c,
        Ok(None) => return true,
        Err(e) => {
            eprintln!("error: {e}");
            return true;
        }
    };
    match cmd {
        Command::Peers => cli::format_peers(&node.peers())
            .iter()
            .for_each(|l| println!("{l}")),
        Command::Known => cli::format_known(&node.known_addrs())
            .iter()
            .for_each(|l| println!("{l}")),
        Command::Info => cli::format_info(&node.info())
            .iter()
            .for_each(|l| println!("{l}")),
        Command::Help => println!("{}", cli::HELP),
        Command::Exit => return false,
        Command::Connect { addr } => connect(node, &addr),
        // The resolved address is quoted, not the typed one: `peer` is raw input.
        Command::Send { peer, text } => match resolve_peer_addr(&peer) {
            Ok(a) => match node.send_data_to_peer(a, &text) {
                Ok(()) => println!("sent to {a}"),
                Err(e) => eprintln!("error: send to {a} failed: {e}"),
            },
            Err(e) => eprintln!("error: send failed: {e}"),
        },
        Command::Broadcast { text } => match node.broadcast_data(&text) {
            Ok(0) => eprintln!("error: broadcast reached no one: no peers connected"),
            Ok(n) => println!("broadcast sent to {n} peers"),
            Err(e) => eprintln!("error: broadcast failed: {e}"),
        },
        Command::Forget { addr } => match resolve_peer_addr(&addr) {
            Ok(a) if node.forget_addr(a) => println!("forgot {a}"),
            Ok(a) => eprintln!("error: {a} is not a known address"),
            Err(e) => eprintln!("error: {e}"),
        },
        Command::Disconnect { peer } => match resolve_peer_addr(&peer) {
            Ok(a) if node.remove_peer(a) => println!("disconnected from {a}"),
            Ok(a) => eprintln!("error: no peer {a} connected"),
            Err(e) => eprintln!("error: {e}"),
        },
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_max_frame_above_the_byte_budgets_raises_them_to_it() {
        let args = Args::try_parse_from(["p2p-node", "0", "--max-frame", "8388608"])
            .expect("arguments parse");
        let config = args.to_config().expect("a valid config");
        assert_eq!(config.max_frame, 8 << 20);
        assert_eq!(config.queue_bytes, 8 << 20);
        assert_eq!(config.max_pending_event_bytes, 16 << 20);
        let args = Args::try_parse_from(["p2p-node", "0"]).expect("arguments parse");
        let config = args.to_config().expect("a valid config");
        assert_eq!(config.queue_bytes, Config::default().queue_bytes);
    }
}
