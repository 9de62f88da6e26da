//! Arbitrary bytes as a link's byte stream: `read_frame` frame after frame, each frame
//! through `P2PMessage::decode`, as the reader loop of a link does. Nothing may panic,
//! and whatever decodes must be exactly what `encode` writes for that message (a
//! prefix of it for JOIN, which may carry extension bytes). The same stream read with
//! `read_frame_buffered` through a small `BufReader` (the reader loop's path) must give
//! the same frames and the same end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2p_overlay::p2p_message::{
    read_frame, read_frame_buffered, DecodeError, DEFAULT_MAX_FRAME, LEN_PREFIX, MAX_JOIN_FRAME,
};
use p2p_overlay::P2PMessage;

fn check_decode(frame: &[u8]) {
    match P2PMessage::decode(frame) {
        Ok(msg) => {
            let again = msg.encode();
            assert_eq!(again.len(), msg.encoded_len());
            let body = &again[LEN_PREFIX..];
            match msg {
                P2PMessage::Join(_) => assert!(frame.starts_with(body)),
                _ => assert_eq!(body, frame),
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the frame limit, as a node uses two: 1 KiB before the
    // handshake, `max_frame` after it (here the default, or a small configured one).
    let Some((&pick, stream)) = data.split_first() else {
        return;
    };
    let max = match pick % 3 {
        0 => MAX_JOIN_FRAME,
        1 => DEFAULT_MAX_FRAME,
        _ => 256,
    };
    check_decode(stream);
    let mut r = stream;
    // Buffer sizes from 1 to 64 bytes make frames straddle refills.
    let mut buffered = std::io::BufReader::with_capacity(1 + (pick as usize / 3) % 64, stream);
    loop {
        let got = read_frame(&mut r, max);
        let again = read_frame_buffered(&mut buffered, max);
        assert_eq!(format!("{got:?}"), format!("{again:?}"));
        match got {
            Ok(Some(frame)) => {
                assert!(!frame.is_empty() && frame.len() <= max as usize);
                check_decode(&frame);
            }
            Ok(None) => break,
            Err(DecodeError::Io(e)) => panic!("a slice reader cannot fail: {e}"),
            Err(_) => break,
        }
    }
});
