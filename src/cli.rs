//! The command language typed at a node's standard input, and the text the `p2p-node`
//! binary prints. A module of the binary, not of the library: the library never prints
//! and hands out data and events; what the lines look like is the binary's business.
//! The C++ `main.cpp` compared whole lines inline and printed the command list for
//! anything else; here parsing is a pure function with typed errors (tested by the
//! table at the bottom), and formatting is kept apart from the node.
//!
//! # Stdout is a contract
//!
//! The output lines are a contract that scripts and the tests rely on (README.md,
//! "Output contract"): they read stdout line by line and act on prefixes such as
//! `peer up: ` and `peer down: `. Message and broadcast texts come from peers, possibly
//! several hops away, and the library delivers them verbatim. Printed raw, a text with
//! a newline would add a forged `peer up:` line of its own, a carriage return would
//! overwrite the start of its line, and ESC or a C1 control would drive the terminal
//! (clear it, set its title, write the clipboard with OSC 52). So [`format_event`]
//! passes every event line through [`escape_line`]: one event is always one line,
//! with no character that moves the cursor, drives the terminal, or reorders or hides
//! text. The escapes are reversible (`\` is doubled), so a script can still recover
//! the exact text.
//!
//! # Error lines quote little
//!
//! A command error on stderr names what was typed, but through [`quote_input`]: at
//! most [`QUOTE_MAX_CHARS`] characters, escaped, with the length of the rest; and an
//! address longer than any `host:port` ([`MAX_ADDR_LEN`]) is refused by the parser
//! before the library could resolve (and quote) it. So a 1 MiB command word costs one
//! short line, not 1 MiB of stderr. How long a line may be at all is decided where it
//! is read (`line_reader`).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::Duration;

use p2p_overlay::{Encryption, Event, KnownAddr, NodeInfo, PeerInfo};

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
    /// An address longer than any `host:port` can be ([`MAX_ADDR_LEN`]); refused
    /// before any name lookup.
    AddressTooLong(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(w) => {
                write!(f, "unknown command {} (type 'help')", quote_input(w))
            }
            CommandError::Missing { command, what } => {
                write!(f, "'{command}' needs {what} (type 'help')")
            }
            CommandError::Unexpected { command, extra } => {
                write!(f, "'{command}' takes no argument {}", quote_input(extra))
            }
            CommandError::BadPort(p) => {
                write!(f, "bad port {}: expected 1 to 65535", quote_input(p))
            }
            CommandError::AddressTooLong(a) => write!(
                f,
                "bad peer address {}: longer than any host:port ({MAX_ADDR_LEN} bytes)",
                quote_input(a)
            ),
        }
    }
}

impl std::error::Error for CommandError {}

/// The longest `host:port` a command accepts, in bytes: a DNS name has at most 253
/// (254 with the final dot), then `:` and five digits; a bracketed IPv6 address with
/// a zone is shorter. Longer is refused by the parser, so no name lookup is made for
/// it and the library's resolve errors, which quote the address whole, stay short.
pub(crate) const MAX_ADDR_LEN: usize = 260;

/// How many characters of typed input an error line quotes at most.
pub(crate) const QUOTE_MAX_CHARS: usize = 64;

/// `s` as an error line quotes it: in double quotes and escaped as `{:?}` escapes
/// (control, bidi and invisible characters become `\u{..}`, so the error stays one
/// line and cannot drive the terminal), cut after [`QUOTE_MAX_CHARS`] characters.
/// A cut quote is followed by `...` and the whole length in bytes, so a 1 MiB word
/// costs a line of about a hundred bytes, not 1 MiB on stderr.
pub(crate) fn quote_input(s: &str) -> String {
    match s.char_indices().nth(QUOTE_MAX_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
    }
}

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
            check_addr_len(peer)?;
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
                    check_addr_len(addr)?;
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
                    check_addr_len(&addr)?;
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
    check_addr_len(addr)?;
    Ok(addr.to_string())
}

/// Refuses an address longer than [`MAX_ADDR_LEN`].
fn check_addr_len(addr: &str) -> Result<(), CommandError> {
    if addr.len() > MAX_ADDR_LEN {
        return Err(CommandError::AddressTooLong(addr.to_string()));
    }
    Ok(())
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
                "{} id={} dir={} rtt={} up={}s enc={}",
                p.addr,
                p.node_id,
                p.direction.as_str(),
                fmt_rtt(p.rtt),
                p.connected_for.as_secs(),
                p.encryption.as_str()
            )
        })
        .collect()
}

/// The line printed for an event: always exactly one line, because the whole line
/// (peer text, and the reason, which might one day carry peer text too) goes through
/// [`escape_line`]. No second allocation when nothing needs escaping.
pub(crate) fn format_event(ev: &Event) -> String {
    let line = match ev {
        Event::PeerUp(p) => format!(
            "peer up: {} (id {}, {})",
            p.addr,
            p.node_id,
            p.direction.as_str()
        ),
        Event::PeerDown { addr, reason, .. } => format!("peer down: {addr} ({reason})"),
        Event::Message { from, text, .. } => format!("message from {from}: {text}"),
        Event::Broadcast { origin, text, .. } => format!("broadcast from {origin}: {text}"),
        // `Event` is non_exhaustive: a kind this binary does not know yet.
        other => format!("event: {other:?}"),
    };
    let escaped = match escape_line(&line) {
        Cow::Borrowed(_) => None,
        Cow::Owned(escaped) => Some(escaped),
    };
    escaped.unwrap_or(line)
}

/// `line` made safe to print as one line of the output contract:
///
/// - `\` becomes `\\`, so the form is unambiguous and can be undone;
/// - line feed, carriage return and tab become `\n`, `\r`, `\t`;
/// - every other control character (Unicode category Cc: U+0000 to U+001F, U+007F,
///   U+0080 to U+009F, so ESC and the C1 CSI U+009B too), the bidi controls U+061C,
///   U+200E, U+200F, U+202A to U+202E and U+2066 to U+2069, the line and paragraph
///   separators U+2028 and U+2029, and the invisible U+200B to U+200D, U+2060 and
///   U+FEFF become `\u{XXXX}`: the code point in uppercase hex, at least 4 digits
///   (ESC is `\u{001B}`).
///
/// Everything else prints as is, non-ASCII letters and emoji included; an emoji
/// sequence held together by the zero-width joiner shows it as `\u{200D}`. Borrows
/// `line` when nothing needs escaping, the usual case, so printing allocates nothing
/// more then.
pub(crate) fn escape_line(line: &str) -> Cow<'_, str> {
    let Some(first) = line.find(needs_escape) else {
        return Cow::Borrowed(line);
    };
    let mut out = String::with_capacity(line.len() + 16);
    out.push_str(&line[..first]);
    for c in line[first..].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{{{:04X}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether [`escape_line`] replaces `c`.
fn needs_escape(c: char) -> bool {
    // `is_control` is exactly category Cc: U+0000-U+001F and U+007F-U+009F.
    c == '\\'
        || c.is_control()
        || matches!(
            c,
            // Arabic letter mark; bidi marks, embeddings, overrides and isolates.
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                // Line and paragraph separators: a new line to some terminals and editors.
                | '\u{2028}'
                | '\u{2029}'
                // Zero-width space, non-joiner, joiner; word joiner; zero-width no-break
                // space (byte order mark): invisible, so they can hide or split text.
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'
                | '\u{FEFF}'
        )
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

/// `info` output: identity and gauges, one per line, then every counter of
/// [`Counters::list`](p2p_overlay::Counters::list) as `name=value` on one last line
/// (`counters: ...`), so a new counter shows up here without a change.
/// The node's own mode, as `info` prints it: `tls (open network)`, `tls (closed
/// network)` or `plain`.
pub(crate) fn format_encryption(enc: Encryption, closed: bool) -> String {
    match (enc, closed) {
        (Encryption::Tls, false) => "tls (open network)".to_string(),
        (Encryption::Tls, true) => "tls (closed network)".to_string(),
        (e, _) => e.as_str().to_string(),
    }
}

pub(crate) fn format_info(i: &NodeInfo) -> Vec<String> {
    let counters: Vec<String> = i
        .counters
        .list()
        .iter()
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    vec![
        format!("id: {}", i.node_id),
        format!("listening: {}", i.local_addr),
        format!("advertised: {}", i.advertised_addr),
        format!("network: {}", i.network),
        format!(
            "encryption: {}",
            format_encryption(i.encryption, i.closed_network)
        ),
        format!("links: {} (target {})", i.links, i.target_links),
        format!(
            "connections: {} open (at most {}), {} dialing, {} pending handshakes",
            i.connections, i.max_connections, i.dialing, i.pending_handshakes
        ),
        format!(
            "known addresses: {} (see 'known' for each address's backoff)",
            i.known_addrs
        ),
        format!("seen-cache: {} broadcast ids", i.seen_ids),
        format!("broadcast store: {} broadcasts kept", i.stored_broadcasts),
        format!("counters: {}", counters.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    /// What error lines quote of typed input: (what, input, quoted).
    #[test]
    fn quotes_are_short_and_escaped() {
        let a64 = "a".repeat(64);
        let a65 = "a".repeat(65);
        let e64 = "é".repeat(64);
        let e65 = "é".repeat(65);
        let cases: Vec<(&str, &str, String)> = vec![
            ("empty", "", r#""""#.into()),
            ("short", "frobnicate", r#""frobnicate""#.into()),
            ("64 characters: whole", &a64, format!("\"{a64}\"")),
            (
                "65 characters: cut",
                &a65,
                format!("\"{a64}\"... (65 bytes)"),
            ),
            ("64 two-byte characters: whole", &e64, format!("\"{e64}\"")),
            (
                "65 two-byte characters: cut at a character, length in bytes",
                &e65,
                format!("\"{e64}\"... (130 bytes)"),
            ),
            ("quote and backslash", r#"a"b\c"#, r#""a\"b\\c""#.into()),
            (
                "ESC and BEL",
                "\x1b]0;owned\x07",
                r#""\u{1b}]0;owned\u{7}""#.into(),
            ),
            ("line feed and CR", "a\nb\r", r#""a\nb\r""#.into()),
            ("C1 CSI", "\u{9b}31m", r#""\u{9b}31m""#.into()),
            (
                "right-to-left override",
                "a\u{202e}b",
                r#""a\u{202e}b""#.into(),
            ),
            ("line separator", "a\u{2028}b", r#""a\u{2028}b""#.into()),
            (
                "zero-width joiner, BOM",
                "\u{200d}\u{feff}",
                r#""\u{200d}\u{feff}""#.into(),
            ),
        ];
        for (what, input, quoted) in cases {
            assert_eq!(quote_input(input), quoted, "{what}");
        }
    }

    /// A 1 MiB word, argument or address is quoted in a short error line.
    #[test]
    fn errors_about_a_huge_input_stay_short() {
        let huge = "x".repeat(1 << 20);
        let lines = [
            huge.clone(),
            format!("peers {huge}"),
            format!("connect 127.0.0.1 {huge}"),
            format!("connect 127.0.0.1 1 {huge}"),
            format!("disconnect 127.0.0.1:1 {huge}"),
            format!("send {huge}:1 hi"),
            format!("connect {huge}:1"),
            format!("connect {huge} 1"),
            format!("forget {huge}:1"),
            format!("disconnect {huge}:1"),
        ];
        for line in &lines {
            let e = parse_command(line).expect_err("an error");
            let text = e.to_string();
            assert!(text.len() < 200, "{} bytes: {text}", text.len());
            assert!(text.contains("... (1048"), "{text}");
        }
    }

    #[test]
    fn addresses_longer_than_any_host_port_are_refused() {
        let name = "a".repeat(MAX_ADDR_LEN - ":65535".len());
        let longest = format!("{name}:65535");
        assert_eq!(
            ok(&format!("connect {longest}")),
            Some(Command::Connect {
                addr: longest.clone()
            })
        );
        let too_long = format!("a{longest}");
        for line in [
            format!("connect {too_long}"),
            format!("connect a{name} 65535"),
            format!("send {too_long} hi"),
            format!("forget {too_long}"),
            format!("disconnect {too_long}"),
        ] {
            match parse_command(&line) {
                Err(CommandError::AddressTooLong(a)) => assert_eq!(a.len(), MAX_ADDR_LEN + 1),
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_peer_list_says_so() {
        assert_eq!(format_peers(&[]), vec!["no peers connected".to_string()]);
    }

    #[test]
    fn peer_lines_end_with_the_link_encryption() {
        let peer = |port: u16, encryption, rtt| PeerInfo {
            node_id: p2p_overlay::NodeId(0xab),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            direction: p2p_overlay::Direction::Inbound,
            rtt,
            connected_for: Duration::from_secs(7),
            encryption,
            addr_verified: true,
        };
        assert_eq!(
            format_peers(&[
                peer(9001, Encryption::Tls, Some(Duration::from_micros(1500))),
                peer(9002, Encryption::Plain, None),
            ]),
            vec![
                "127.0.0.1:9001 id=00000000000000ab dir=in rtt=1.500ms up=7s enc=tls",
                "127.0.0.1:9002 id=00000000000000ab dir=in rtt=- up=7s enc=plain",
            ]
        );
    }

    #[test]
    fn the_own_encryption_mode_reads_as_documented() {
        assert_eq!(
            format_encryption(Encryption::Tls, false),
            "tls (open network)"
        );
        assert_eq!(
            format_encryption(Encryption::Tls, true),
            "tls (closed network)"
        );
        assert_eq!(format_encryption(Encryption::Plain, false), "plain");
    }

    /// The escape table of README.md's output contract, class by class: (what, text,
    /// printed).
    const ESCAPES: &[(&str, &str, &str)] = &[
        ("empty", "", ""),
        (
            "README.md's example",
            "hi\npeer up: x\x1b[2J",
            r"hi\npeer up: x\u{001B}[2J",
        ),
        (
            "plain ASCII",
            "Hello, Node B! 1+1=2 ~#$%&*()[]{}",
            "Hello, Node B! 1+1=2 ~#$%&*()[]{}",
        ),
        (
            "non-ASCII letters",
            "Grüße, Ελλάδα, Привет, 東京, عربى",
            "Grüße, Ελλάδα, Привет, 東京, عربى",
        ),
        ("emoji", "hi 😀🎉 ✓", "hi 😀🎉 ✓"),
        ("backslash", "C:\\dir\\", r"C:\\dir\\"),
        (
            "a text that looks escaped",
            "\\n \\u{001B}",
            r"\\n \\u{001B}",
        ),
        ("LF", "hi\npeer up: x", r"hi\npeer up: x"),
        ("CR", "ok\rforged", r"ok\rforged"),
        ("CRLF", "a\r\n", r"a\r\n"),
        ("TAB", "a\tb", r"a\tb"),
        ("NUL", "a\0b", r"a\u{0000}b"),
        ("BEL", "\x07", r"\u{0007}"),
        ("ESC[2J clears the screen", "\x1b[2J", r"\u{001B}[2J"),
        (
            "OSC 52 writes the clipboard",
            "\x1b]52;c;aGk=\x07",
            r"\u{001B}]52;c;aGk=\u{0007}",
        ),
        (
            "OSC 0 sets the window title",
            "\x1b]0;owned\x07",
            r"\u{001B}]0;owned\u{0007}",
        ),
        ("unit separator", "\x1f", r"\u{001F}"),
        ("DEL", "\x7f", r"\u{007F}"),
        ("C1 NEL", "\u{85}", r"\u{0085}"),
        ("C1 CSI", "\u{9b}31m", r"\u{009B}31m"),
        ("last C1", "\u{9f}", r"\u{009F}"),
        (
            "right-to-left override",
            "abc\u{202e}fed",
            r"abc\u{202E}fed",
        ),
        (
            "bidi marks and embeddings",
            "\u{61c}\u{200e}\u{200f}\u{202a}\u{202b}\u{202c}\u{202d}",
            r"\u{061C}\u{200E}\u{200F}\u{202A}\u{202B}\u{202C}\u{202D}",
        ),
        (
            "bidi isolates",
            "\u{2066}\u{2067}\u{2068}\u{2069}",
            r"\u{2066}\u{2067}\u{2068}\u{2069}",
        ),
        ("line separator", "a\u{2028}b", r"a\u{2028}b"),
        ("paragraph separator", "a\u{2029}b", r"a\u{2029}b"),
        ("byte order mark", "\u{feff}x", r"\u{FEFF}x"),
        (
            "zero-width characters",
            "\u{200b}\u{200c}\u{200d}\u{2060}",
            r"\u{200B}\u{200C}\u{200D}\u{2060}",
        ),
        ("emoji joined by ZWJ", "👩\u{200d}💻", r"👩\u{200D}💻"),
        (
            "neighbours of the escaped ranges print as is",
            "\u{a0}\u{200a}\u{2027}\u{202f}",
            "\u{a0}\u{200a}\u{2027}\u{202f}",
        ),
    ];

    #[test]
    fn escape_table() {
        for (what, text, printed) in ESCAPES {
            assert_eq!(escape_line(text), *printed, "{what}: {text:?}");
        }
    }

    #[test]
    fn nothing_to_escape_is_borrowed() {
        for line in [
            "",
            "message from 127.0.0.1:9000: Hello from Node B!",
            "broadcast from [::1]:9000: Grüße 😀",
        ] {
            match escape_line(line) {
                Cow::Borrowed(b) => assert!(std::ptr::eq(b, line), "{line:?}"),
                Cow::Owned(o) => panic!("{line:?} was copied to {o:?}"),
            }
        }
    }

    /// Undoes [`escape_line`]; `None` for anything it never produces (a lone `\`, an
    /// unknown escape, lowercase or short hex).
    fn unescape(s: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    if chars.next()? != '{' {
                        return None;
                    }
                    let mut hex = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            h if h.is_ascii_digit() || ('A'..='F').contains(&h) => hex.push(h),
                            _ => return None,
                        }
                    }
                    if hex.len() < 4 {
                        return None;
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            }
        }
        Some(out)
    }

    #[test]
    fn unescape_inverts_the_table() {
        for (what, text, printed) in ESCAPES {
            assert_eq!(unescape(printed).as_deref(), Some(*text), "{what}");
        }
    }

    /// Characters that stress the escaping: every class it handles, its boundaries,
    /// and the characters an escape is made of.
    const TRICKY: &[char] = &[
        '\\', 'u', '{', '}', 'n', 'r', 't', '0', 'B', 'F', '\0', '\t', '\n', '\r', '\x07', '\x1b',
        '\x1f', ' ', '~', '\x7f', '\u{80}', '\u{85}', '\u{9b}', '\u{9f}', '\u{a0}', '\u{61c}',
        '\u{200a}', '\u{200b}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{2027}', '\u{2028}',
        '\u{2029}', '\u{202a}', '\u{202e}', '\u{202f}', '\u{2060}', '\u{2066}', '\u{2069}',
        '\u{feff}', 'é', '東', '😀',
    ];

    /// Up to 40 characters, about half of them from `TRICKY`.
    fn tricky_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![any::<char>(), proptest::sample::select(TRICKY)],
            0..40,
        )
        .prop_map(String::from_iter)
    }

    proptest! {
        /// Escaping can be undone, leaves no control character at all, and copies only
        /// when there is something to escape.
        #[test]
        fn escaping_round_trips_and_leaves_no_control_character(text in tricky_text()) {
            let escaped = escape_line(&text);
            prop_assert_eq!(unescape(&escaped), Some(text.clone()));
            for c in escaped.chars() {
                let n = u32::from(c);
                prop_assert!(n >= 0x20 && !(0x7F..=0x9F).contains(&n), "{:?}", escaped);
                prop_assert!(c == '\\' || !needs_escape(c), "{:?}", escaped);
            }
            let has_escapable = text.chars().any(needs_escape);
            prop_assert_eq!(matches!(escaped, Cow::Owned(_)), has_escapable);
        }
    }

    #[test]
    fn every_event_is_one_line_with_peer_text_escaped() {
        let addr: std::net::SocketAddr = "127.0.0.1:9001".parse().expect("addr");
        let id = p2p_overlay::NodeId(0xab);
        let forged = "hi\npeer up: 127.0.0.1:1 (id 1, in)\r\x1b[2J";
        let cases = [
            (
                Event::PeerUp(PeerInfo {
                    node_id: id,
                    addr,
                    direction: p2p_overlay::Direction::Outbound,
                    rtt: None,
                    connected_for: Duration::ZERO,
                    encryption: Encryption::Tls,
                    addr_verified: true,
                }),
                "peer up: 127.0.0.1:9001 (id 00000000000000ab, out)",
            ),
            (
                Event::PeerDown {
                    node_id: id,
                    addr,
                    reason: p2p_overlay::DownReason::Left,
                },
                "peer down: 127.0.0.1:9001 (left)",
            ),
            (
                Event::PeerDown {
                    node_id: id,
                    addr,
                    reason: p2p_overlay::DownReason::BadFrame(forged.into()),
                },
                r"peer down: 127.0.0.1:9001 (hi\npeer up: 127.0.0.1:1 (id 1, in)\r\u{001B}[2J)",
            ),
            (
                Event::Message {
                    from_id: id,
                    from: addr,
                    text: "Hello from Node B!".into(),
                },
                "message from 127.0.0.1:9001: Hello from Node B!",
            ),
            (
                Event::Message {
                    from_id: id,
                    from: addr,
                    text: forged.into(),
                },
                r"message from 127.0.0.1:9001: hi\npeer up: 127.0.0.1:1 (id 1, in)\r\u{001B}[2J",
            ),
            (
                Event::Broadcast {
                    origin_id: id,
                    origin: addr,
                    hops: 2,
                    text: forged.into(),
                },
                r"broadcast from 127.0.0.1:9001: hi\npeer up: 127.0.0.1:1 (id 1, in)\r\u{001B}[2J",
            ),
        ];
        for (ev, line) in cases {
            assert_eq!(format_event(&ev), line, "{ev:?}");
        }
    }
}
