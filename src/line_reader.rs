//! Reading standard input in bounded lines: a module of the `p2p-node` binary.
//!
//! The C++ `main.cpp` read commands with `std::getline` and the first Rust version with
//! `BufRead::lines()`; both keep a line in memory however long it is, so a 50 MB line
//! without a newline cost 103 MiB (and was echoed back on stderr), and `lines()` turns
//! one byte of invalid UTF-8 into an error that ended the stdin thread, so the node
//! ignored every later command, `exit` included.
//!
//! [`LineReader`] keeps at most `max` bytes of a line in memory. The rest of a
//! longer line is skipped straight out of the reader's own buffer (`fill_buf` and
//! `consume`) up to the next line feed, without being copied anywhere, and the line
//! comes back once as [`Line::TooLong`] with its length. A line that is not UTF-8
//! comes back as [`Line::BadUtf8`]. Both are values, not errors: the caller reports
//! them and goes on with the next line. Only a real I/O error is an `Err`.
//!
//! The limit is [`max_line`]: the frame limit plus 4 KiB, so that the longest message a
//! frame can carry still fits on a `send <host:port> <text>` line (see its doc).

use std::io::{self, BufRead};

/// Bytes a line may have on top of the frame limit: the command word, the address
/// (a DNS name is at most 253 bytes, so `host:port` at most 260) and the spaces, with
/// room to spare.
pub(crate) const LINE_SLACK: usize = 4096;

/// The longest line, in bytes before the line feed (a carriage return counts), for a
/// node whose frame limit is `max_frame`: `max_frame + 4096`.
///
/// Why relative to the frame limit and not a fixed size: the largest `send` or
/// `broadcast` text is just under `max_frame` bytes (a DATA frame is one type byte plus
/// the text), and `--max-frame` can be raised, so a fixed 1 MiB limit would make the
/// largest messages impossible to type. The slack covers `send <host:port> `. The
/// memory this allows is what the operator already allows a single peer frame.
pub(crate) fn max_line(max_frame: u32) -> usize {
    usize::try_from(max_frame)
        .unwrap_or(usize::MAX)
        .saturating_add(LINE_SLACK)
}

/// One line of input, without its line feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line of valid UTF-8, at most the limit long. A carriage return before the
    /// line feed is kept (the command parser removes it).
    Text(String),
    /// A line longer than the limit; only its length was kept.
    TooLong {
        /// Bytes before the line feed (or the end of input).
        len: u64,
    },
    /// A line within the limit that is not UTF-8.
    BadUtf8 {
        /// Offset of the first byte that is not part of a UTF-8 character.
        offset: usize,
        /// The valid text before it, for the error line (which quotes only its
        /// start).
        prefix: String,
    },
}

/// Reads lines from `inner`, keeping at most `max` bytes of a line in memory.
pub(crate) struct LineReader<R> {
    /// Where the lines come from (stdin's own 8 KiB buffer in the binary).
    inner: R,
    /// The longest line kept, in bytes before the line feed.
    max: usize,
    /// The largest capacity a line buffer has had: how much memory a line has cost at
    /// most, beyond `inner`'s buffer. Never more than `max`.
    peak: usize,
}

impl<R: BufRead> LineReader<R> {
    /// Lines of `inner`, at most `max` bytes each (see [`max_line`]).
    pub(crate) fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader {
            inner,
            max,
            peak: 0,
        }
    }

    /// The largest line buffer so far, in bytes of capacity: at most the limit.
    #[cfg(test)]
    pub(crate) fn peak_capacity(&self) -> usize {
        self.peak
    }

    /// The underlying reader.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads the next line. Returns `Ok(None)` at the end of input. A last line
    /// without a line feed is still a line. A line longer than the limit (before the
    /// line feed) is read to its line feed and dropped as it arrives, so memory stays
    /// at the limit plus the reader's own buffer however long the line is; it is
    /// returned as [`Line::TooLong`]. `Interrupted` reads are retried; any other I/O
    /// error is returned, and the caller should stop reading.
    pub(crate) fn read_line(&mut self) -> io::Result<Option<Line>> {
        let mut buf: Vec<u8> = Vec::new();
        // Bytes of this line seen so far, kept or not.
        let mut len: u64 = 0;
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            read_any = true;
            let (chunk, used, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            len += chunk.len() as u64;
            if !too_long {
                if buf.len() + chunk.len() <= self.max {
                    grow_within(&mut buf, chunk.len(), self.max);
                    self.peak = self.peak.max(buf.capacity());
                    buf.extend_from_slice(chunk);
                } else {
                    too_long = true;
                    buf = Vec::new(); // give the memory back now, not at the line feed
                }
            }
            self.inner.consume(used);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(Some(Line::TooLong { len }));
        }
        Ok(Some(match String::from_utf8(buf) {
            Ok(s) => Line::Text(s),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(offset);
                // The bytes up to `valid_up_to` are valid UTF-8 by definition.
                let prefix = String::from_utf8(bytes).unwrap_or_default();
                Line::BadUtf8 { offset, prefix }
            }
        }))
    }
}

/// Makes room in `buf` for `more` bytes, doubling as `Vec` does but never past `max`
/// (the caller checked that `len + more <= max`): plain `extend_from_slice` could
/// double a 0.6 MiB buffer to 1.2 MiB for a 1 MiB limit.
fn grow_within(buf: &mut Vec<u8>, more: usize, max: usize) {
    let need = buf.len() + more;
    if need <= buf.capacity() {
        return;
    }
    let want = (buf.capacity() * 2).max(64).min(max).max(need);
    buf.reserve_exact(want - buf.len());
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Cursor, Read};

    use super::*;

    /// Every line of `input` read with limit `max`, until the end of input.
    fn all_lines(input: &[u8], max: usize) -> Vec<Line> {
        // A tiny buffer, so that lines span several `fill_buf` calls.
        let mut r = LineReader::new(BufReader::with_capacity(4, Cursor::new(input)), max);
        let mut out = Vec::new();
        while let Some(l) = r.read_line().expect("no I/O error") {
            out.push(l);
        }
        assert!(r.peak_capacity() <= max, "{input:?}: {}", r.peak_capacity());
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    fn bad(offset: usize, prefix: &str) -> Line {
        Line::BadUtf8 {
            offset,
            prefix: prefix.to_string(),
        }
    }

    #[test]
    fn lines_at_and_around_the_limit() {
        // (what, input, limit, lines)
        let cases: Vec<(&str, &[u8], usize, Vec<Line>)> = vec![
            ("empty input", b"", 8, vec![]),
            ("one empty line", b"\n", 8, vec![text("")]),
            (
                "two lines",
                b"peers\nexit\n",
                8,
                vec![text("peers"), text("exit")],
            ),
            (
                "no line feed at the end",
                b"peers\nexit",
                8,
                vec![text("peers"), text("exit")],
            ),
            (
                "CRLF keeps the CR",
                b"peers\r\nexit\r\n",
                8,
                vec![text("peers\r"), text("exit\r")],
            ),
            (
                "exactly at the limit",
                b"12345678\nx\n",
                8,
                vec![text("12345678"), text("x")],
            ),
            (
                "one over the limit",
                b"123456789\nx\n",
                8,
                vec![Line::TooLong { len: 9 }, text("x")],
            ),
            (
                "the CR counts",
                b"1234567\r\n1234567\n",
                7,
                vec![Line::TooLong { len: 8 }, text("1234567")],
            ),
            (
                "too long at the end of input",
                b"x\n1234567890",
                8,
                vec![text("x"), Line::TooLong { len: 10 }],
            ),
            (
                "two long lines in a row",
                b"123456789\n1234567890\n",
                8,
                vec![Line::TooLong { len: 9 }, Line::TooLong { len: 10 }],
            ),
            (
                "invalid UTF-8 in the middle",
                b"peers\nab\xffcd\nexit\n",
                8,
                vec![text("peers"), bad(2, "ab"), text("exit")],
            ),
            (
                "a cut character",
                b"\xc3\nok\n",
                8,
                vec![bad(0, ""), text("ok")],
            ),
            ("a lone continuation byte", b"x\x80\n", 8, vec![bad(1, "x")]),
            (
                "UTF-8 is fine",
                "Grüße 😀\n".as_bytes(),
                16,
                vec![text("Grüße 😀")],
            ),
            (
                "too long wins over bad UTF-8",
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\nok\n",
                8,
                vec![Line::TooLong { len: 9 }, text("ok")],
            ),
            (
                "limit 0",
                b"\nx\n",
                0,
                vec![text(""), Line::TooLong { len: 1 }],
            ),
        ];
        for (what, input, max, want) in cases {
            assert_eq!(all_lines(input, max), want, "{what}");
        }
    }

    /// Yields `left` bytes of `b'a'`, then `tail`, made up as they are read: the long
    /// line itself never exists in memory.
    struct Lazy {
        left: u64,
        tail: Cursor<Vec<u8>>,
    }

    impl Lazy {
        fn new(left: u64, tail: &[u8]) -> Lazy {
            Lazy {
                left,
                tail: Cursor::new(tail.to_vec()),
            }
        }
    }

    impl Read for Lazy {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return self.tail.read(out);
            }
            let n = out
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            out[..n].fill(b'a');
            self.left -= n as u64;
            Ok(n)
        }
    }

    /// A 10 MB line read through an 8 KiB buffer: no line buffer ever grows past the
    /// limit (a plain `read_line` would end at 16 MiB), the reader's buffer stays
    /// 8 KiB, and the next line is read normally.
    #[test]
    fn a_10_mb_line_costs_at_most_the_limit() {
        let max = 64 * 1024;
        let mut r = LineReader::new(
            BufReader::with_capacity(8192, Lazy::new(10_000_000, b"\npeers\n")),
            max,
        );
        assert_eq!(
            r.read_line().expect("read"),
            Some(Line::TooLong { len: 10_000_000 })
        );
        assert!(r.peak_capacity() <= max, "peak {}", r.peak_capacity());
        assert_eq!(r.get_ref().capacity(), 8192);
        assert_eq!(r.read_line().expect("read"), Some(text("peers")));
        assert_eq!(r.read_line().expect("read"), None);
    }

    /// A line just within the limit, fed in 8 KiB pieces, never makes the buffer grow
    /// past the limit (doubling from 8 KiB would overshoot 1,000,000 to 1 MiB).
    #[test]
    fn a_line_at_the_limit_allocates_no_more_than_the_limit() {
        let max = 1_000_000;
        let mut r = LineReader::new(
            BufReader::with_capacity(8192, Lazy::new(max as u64, b"\n")),
            max,
        );
        match r.read_line().expect("read") {
            Some(Line::Text(s)) => {
                assert_eq!(s.len(), max);
                assert!(s.capacity() <= max, "capacity {}", s.capacity());
            }
            other => panic!("expected the line, got {other:?}"),
        }
        assert!(r.peak_capacity() <= max, "peak {}", r.peak_capacity());
    }

    #[test]
    fn the_limit_leaves_room_for_a_maximum_message() {
        let max_frame: u32 = 1 << 20;
        // The largest text is max_frame - 1 bytes (one type byte in a DATA frame); the
        // longest host:port is 260 bytes; both spaces may be doubled.
        let longest = "send  ".len() + 260 + "  ".len() + (max_frame as usize - 1);
        assert!(longest <= max_line(max_frame));
        assert_eq!(max_line(max_frame), (1 << 20) + 4096);
        assert!(max_line(u32::MAX) >= u32::MAX as usize);
    }

    /// An `Interrupted` read is retried, another error is returned.
    #[test]
    fn io_errors() {
        struct Flaky(u8);
        impl Read for Flaky {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                match self.0 {
                    1 => Err(io::ErrorKind::Interrupted.into()),
                    2 => {
                        out[..3].copy_from_slice(b"ok\n");
                        Ok(3)
                    }
                    _ => Err(io::Error::other("broken")),
                }
            }
        }
        let mut r = LineReader::new(BufReader::new(Flaky(0)), 8);
        assert_eq!(r.read_line().expect("retried"), Some(text("ok")));
        assert!(r.read_line().is_err());
    }
}
