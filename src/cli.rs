//! The command language typed at a node's standard input, and the text the `p2p-node`
//! binary prints. A module of the binary, not of the library: the library never prints
//! and hands out data and events; what the lines look like is the binary's business.
//! The C++ `main.cpp` compared whole lines inline and printed the command list for
//! anything else; here parsing is a pure function with typed errors (tested by the
//! table at the bottom), and formatting is kept apart from the node.
//!
//! The output lines are a contract that scripts and the tests rely on; README.md
//! documents them.

use std::fmt;
use std::time::Duration;

use p2p_overlay::{Event, KnownAddr, NodeInfo, PeerInfo};

/// One command line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// `peers`: list live links.
    Peers,
    /// `send <host:port> <text>`: a direct message; the text is kept verbatim.
    Send {
        /// The peer's listen address as typed.
        peer: String,
        /// Everything after the address.
        text: String,
    },
    /// `broadcast <text>`: flood to every node.
    Broadcast {
        /// Everything after the command word.
        text: String,
    },
    /// `connect <host> <port>` or `connect <host:port>`.
    Connect {
        /// `host:port`.
        addr: String,
    },
    /// `disconnect <host:port>`: close one link, sending LEAVE.
    Disconnect {
        /// The peer's listen address as typed.
        peer: String,
    },
    /// `known`: the address book.
    Known,
    /// `forget <host:port>`: remove an address from the address book.
    Forget {
        /// The address as typed.
        addr: String,
    },
    /// `info`: id, addresses, counters.
    Info,
    /// `help`: the command list.
    Help,
    /// `exit` (or `quit`): leave the overlay and stop.
    Exit,
}

/// Why a command line was not understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommandError {
    /// The first word is not a command.
    Unknown(String),
    /// A command is missing an argument.
    Missing {
        /// The command word.
        command: &'static str,
        /// What is missing.
        what: &'static str,
    },
    /// A command that takes no (or fewer) arguments got some.
    Unexpected {
        /// The command word.
        command: &'static str,
        /// The extra text.
        extra: String,
    },
    /// A port that is not a number from 1 to 65535.
    BadPort(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(w) => write!(f, "unknown command {w:?} (type 'help')"),
            CommandError::Missing { command, what } => {
                write!(f, "'{command}' needs {what} (type 'help')")
            }
            CommandError::Unexpected { command, extra } => {
                write!(f, "'{command}' takes no argument {extra:?}")
            }
            CommandError::BadPort(p) => write!(f, "bad port {p:?}: expected 1 to 65535"),
        }
    }
}

impl std::error::Error for CommandError {}

/// The `help` text.
pub(crate) const HELP: &str = "\
commands:
  peers                      list connected peers: address, id, direction, round trip
  send <host:port> <text>    send a direct message (dials the peer if not connected)
  broadcast <text>           send a message to every node of the overlay
  connect <host> <port>      connect to a node (also: connect <host:port>)
  disconnect <host:port>     close the link to a peer (it is told with LEAVE)
  known                      list known addresses and their dial state
  forget <host:port>         remove an address from the known addresses
  info                       show this node's id, addresses and counters
  help                       show this list
  exit                       leave the overlay and stop (also: quit, Ctrl-C)";

/// Parses one line. `Ok(None)` for a blank line. Only the line ending is removed from
/// message text; inner and trailing spaces are kept.
pub(crate) fn parse_command(line: &str) -> Result<Option<Command>, CommandError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let trimmed = line.trim_start();
    if trimmed.trim().is_empty() {
        return Ok(None);
    }
    let (word, rest) = split_word(trimmed);
    let no_args = |command: &'static str, cmd: Command| {
        if rest.trim().is_empty() {
            Ok(Some(cmd))
        } else {
            Err(CommandError::Unexpected {
                command,
                extra: rest.trim().to_string(),
            })
        }
    };
    match word {
        "peers" => no_args("peers", Command::Peers),
        "known" => no_args("known", Command::Known),
        "info" => no_args("info", Command::Info),
        "help" | "?" => no_args("help", Command::Help),
        "exit" | "quit" => no_args("exit", Command::Exit),
        "send" => {
            let (peer, text) = split_word(rest);
            if peer.is_empty() {
                return Err(CommandError::Missing {
                    command: "send",
                    what: "a peer address and a message",
                });
            }
            if text.is_empty() {
                return Err(CommandError::Missing {
                    command: "send",
                    what: "a message after the address",
                });
            }
            Ok(Some(Command::Send {
                peer: peer.to_string(),
                text: text.to_string(),
            }))
        }
        "broadcast" => {
            if rest.is_empty() {
                return Err(CommandError::Missing {
                    command: "broadcast",
                    what: "a message",
                });
            }
            Ok(Some(Command::Broadcast {
                text: rest.to_string(),
            }))
        }
        "connect" => {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (None, _, _) => Err(CommandError::Missing {
                    command: "connect",
                    what: "<host> <port> or <host:port>",
                }),
                (Some(addr), None, _) => {
                    if !addr.contains(':') {
                        return Err(CommandError::Missing {
                            command: "connect",
                            what: "a port",
                        });
                    }
                    Ok(Some(Command::Connect {
                        addr: addr.to_string(),
                    }))
                }
                (Some(host), Some(port), None) => {
                    let port = parse_port(port)?;
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let addr = if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    };
                    Ok(Some(Command::Connect { addr }))
                }
                (Some(_), Some(_), Some(extra)) => Err(CommandError::Unexpected {
                    command: "connect",
                    extra: extra.to_string(),
                }),
            }
        }
        "disconnect" => one_addr("disconnect", rest).map(|peer| Some(Command::Disconnect { peer })),
        "forget" => one_addr("forget", rest).map(|addr| Some(Command::Forget { addr })),
        other => Err(CommandError::Unknown(other.to_string())),
    }
}

/// The single `host:port` argument of `disconnect` and `forget`.
fn one_addr(command: &'static str, rest: &str) -> Result<String, CommandError> {
    let (addr, extra) = split_word(rest);
    if addr.is_empty() {
        return Err(CommandError::Missing {
            command,
            what: "a peer address",
        });
    }
    if !extra.trim().is_empty() {
        return Err(CommandError::Unexpected {
            command,
            extra: extra.trim().to_string(),
        });
    }
    Ok(addr.to_string())
}

/// Splits off the first whitespace-separated word; the rest starts at the next
/// non-space character and is otherwise untouched.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// A port from 1 to 65535 (0 cannot be dialled).
fn parse_port(s: &str) -> Result<u16, CommandError> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(CommandError::BadPort(s.to_string())),
    }
}

fn fmt_rtt(rtt: Option<Duration>) -> String {
    match rtt {
        Some(d) => format!("{:.3}ms", d.as_secs_f64() * 1000.0),
        None => "-".to_string(),
    }
}

/// `peers` output: one line per peer starting with its listen address, or one line
/// saying there are none.
pub(crate) fn format_peers(peers: &[PeerInfo]) -> Vec<String> {
    if peers.is_empty() {
        return vec!["no peers connected".to_string()];
    }
    peers
        .iter()
        .map(|p| {
            format!(
                "{} id={} dir={} rtt={} up={}s",
                p.addr,
                p.node_id,
                p.direction.as_str(),
                fmt_rtt(p.rtt),
                p.connected_for.as_secs()
            )
        })
        .collect()
}

/// The line printed for an event.
pub(crate) fn format_event(ev: &Event) -> String {
    match ev {
        Event::PeerUp(p) => format!(
            "peer up: {} (id {}, {})",
            p.addr,
            p.node_id,
            p.direction.as_str()
        ),
        Event::PeerDown { addr, reason, .. } => format!("peer down: {addr} ({reason})"),
        Event::Message { from, text, .. } => format!("message from {from}: {text}"),
        Event::Broadcast { origin, text, .. } => format!("broadcast from {origin}: {text}"),
    }
}

/// `known` output.
pub(crate) fn format_known(known: &[KnownAddr]) -> Vec<String> {
    if known.is_empty() {
        return vec!["no known addresses".to_string()];
    }
    let now = std::time::SystemTime::now();
    let ago = |t: std::time::SystemTime| {
        now.duration_since(t)
            .map(|d| format!("{}s ago", d.as_secs()))
            .unwrap_or_else(|_| "just now".into())
    };
    known
        .iter()
        .map(|k| {
            let due = k
                .next_attempt
                .saturating_duration_since(std::time::Instant::now());
            format!(
                "{} seen={} success={} failures={} retry_in={}s",
                k.addr,
                ago(k.last_seen),
                k.last_success.map(ago).unwrap_or_else(|| "never".into()),
                k.failures,
                due.as_secs()
            )
        })
        .collect()
}

/// `info` output.
pub(crate) fn format_info(i: &NodeInfo) -> Vec<String> {
    vec![
        format!("id: {}", i.node_id),
        format!("listening: {}", i.local_addr),
        format!("advertised: {}", i.advertised_addr),
        format!("network: {}", i.network),
        format!("links: {} (target {})", i.links, i.target_links),
        format!("connections: {} open, {} dialing", i.connections, i.dialing),
        format!("known addresses: {}", i.known_addrs),
        format!(
            "broadcasts: {} delivered, {} duplicates dropped, {} frames forwarded",
            i.broadcasts_delivered, i.duplicates_dropped, i.frames_forwarded
        ),
        format!(
            "broadcast tree: {} frames sent, {} grafts, {} broadcasts kept",
            i.broadcast_frames_sent, i.grafts_sent, i.stored_broadcasts
        ),
        format!("seen-cache: {} broadcast ids", i.seen_ids),
        format!(
            "handshakes: {} pending, {} failed, {} connections refused, {} links refused",
            i.pending_handshakes, i.handshakes_failed, i.refused_connections, i.refused_links
        ),
        format!(
            "dial failures: {} (see 'known' for each address's backoff)",
            i.dial_failures
        ),
        format!("frames ignored: {}", i.frames_ignored),
        format!(
            "dropped: {} slow peers, {} events",
            i.slow_peers_dropped, i.events_dropped
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Option<Command> {
        parse_command(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn every_command_parses() {
        let cases: Vec<(&str, Option<Command>)> = vec![
            ("", None),
            ("   \n", None),
            ("peers", Some(Command::Peers)),
            ("  peers  \r\n", Some(Command::Peers)),
            ("known", Some(Command::Known)),
            ("info", Some(Command::Info)),
            ("help", Some(Command::Help)),
            ("?", Some(Command::Help)),
            ("exit", Some(Command::Exit)),
            ("quit\n", Some(Command::Exit)),
            (
                "send 127.0.0.1:9000 Hello from Node B!",
                Some(Command::Send {
                    peer: "127.0.0.1:9000".into(),
                    text: "Hello from Node B!".into(),
                }),
            ),
            (
                "send  localhost:9000   two  spaces kept  \n",
                Some(Command::Send {
                    peer: "localhost:9000".into(),
                    text: "two  spaces kept  ".into(),
                }),
            ),
            (
                "broadcast hi all",
                Some(Command::Broadcast {
                    text: "hi all".into(),
                }),
            ),
            (
                "connect 127.0.0.1 9000",
                Some(Command::Connect {
                    addr: "127.0.0.1:9000".into(),
                }),
            ),
            (
                "connect 127.0.0.1:9000",
                Some(Command::Connect {
                    addr: "127.0.0.1:9000".into(),
                }),
            ),
            (
                "connect ::1 9000",
                Some(Command::Connect {
                    addr: "[::1]:9000".into(),
                }),
            ),
            (
                "disconnect 127.0.0.1:9000",
                Some(Command::Disconnect {
                    peer: "127.0.0.1:9000".into(),
                }),
            ),
            (
                "forget 127.0.0.1:9000",
                Some(Command::Forget {
                    addr: "127.0.0.1:9000".into(),
                }),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), want, "{line:?}");
        }
    }

    #[test]
    fn every_mistake_is_a_typed_error() {
        let cases: Vec<(&str, CommandError)> = vec![
            ("hello", CommandError::Unknown("hello".into())),
            ("PEERS", CommandError::Unknown("PEERS".into())),
            (
                "send",
                CommandError::Missing {
                    command: "send",
                    what: "a peer address and a message",
                },
            ),
            (
                "send 127.0.0.1:9000",
                CommandError::Missing {
                    command: "send",
                    what: "a message after the address",
                },
            ),
            (
                "broadcast",
                CommandError::Missing {
                    command: "broadcast",
                    what: "a message",
                },
            ),
            (
                "connect",
                CommandError::Missing {
                    command: "connect",
                    what: "<host> <port> or <host:port>",
                },
            ),
            (
                "connect 127.0.0.1",
                CommandError::Missing {
                    command: "connect",
                    what: "a port",
                },
            ),
            ("connect 127.0.0.1 x", CommandError::BadPort("x".into())),
            ("connect 127.0.0.1 0", CommandError::BadPort("0".into())),
            (
                "connect 127.0.0.1 70000",
                CommandError::BadPort("70000".into()),
            ),
            (
                "connect a 1 b",
                CommandError::Unexpected {
                    command: "connect",
                    extra: "b".into(),
                },
            ),
            (
                "peers now",
                CommandError::Unexpected {
                    command: "peers",
                    extra: "now".into(),
                },
            ),
            (
                "forget",
                CommandError::Missing {
                    command: "forget",
                    what: "a peer address",
                },
            ),
            (
                "disconnect",
                CommandError::Missing {
                    command: "disconnect",
                    what: "a peer address",
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_command(line), Err(want), "{line:?}");
        }
    }

    #[test]
    fn errors_read_clearly() {
        let e = parse_command("frobnicate").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown command \"frobnicate\" (type 'help')"
        );
    }

    #[test]
    fn empty_peer_list_says_so() {
        assert_eq!(format_peers(&[]), vec!["no peers connected".to_string()]);
    }
}
