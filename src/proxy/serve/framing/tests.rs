//! Unit tests of the framing guard's state machine.

use super::*;

/// Feed `data` in pieces of `step` bytes; return what hyper would see.
fn run(data: &[u8], step: usize) -> (Vec<u8>, State) {
    let mut f = Framer::new(65536);
    let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
    for piece in data.chunks(step) {
        input.extend_from_slice(piece);
        f.feed(&mut input, &mut output);
    }
    (output.to_vec(), f.state)
}

/// Like `Guarded::poll_read`: with nothing buffered, bytes are checked where they
/// lie and only the rest takes the buffered path.
fn run_in_place(data: &[u8], step: usize) -> (Vec<u8>, State) {
    let mut f = Framer::new(65536);
    let (mut input, mut output, mut seen) = (BytesMut::new(), BytesMut::new(), Vec::new());
    for piece in data.chunks(step) {
        if input.is_empty() && output.is_empty() {
            let ok = f.scan(piece);
            seen.extend_from_slice(&piece[..ok]);
            input.extend_from_slice(&piece[ok..]);
        } else {
            input.extend_from_slice(piece);
        }
        f.feed(&mut input, &mut output);
        seen.extend_from_slice(&output.split());
    }
    (seen, f.state)
}

#[test]
fn in_place_checks_match_the_buffered_path() {
    let inputs: [&[u8]; 6] = [
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /ok HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframes",
        b"GET\0 / HTTP/1.1\r\n\r\n",
    ];
    for data in inputs {
        for step in [1, 2, 3, 5, 7, 16, 64, data.len()] {
            assert_eq!(
                run_in_place(data, step),
                run(data, step),
                "step {step}: {data:?}"
            );
        }
    }
}

#[test]
fn clean_pipelined_requests_pass_unchanged_at_any_split() {
    let data: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    for step in [1, 2, 7, 64, data.len()] {
        let (out, state) = run(data, step);
        assert_eq!(out, data, "step {step}");
        assert_eq!(state, State::Head, "step {step}");
    }
}

#[test]
fn smuggling_heads_are_replaced() {
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    ] {
        let (out, state) = run(bad, 3);
        assert!(out.ends_with(REFUSE), "{out:?}");
        assert!(
            !out.ends_with(b"\r\n\r\n\0\r\n\r\n"),
            "head never completed"
        );
        assert!(
            httparse::Request::new(&mut [httparse::EMPTY_HEADER; 16])
                .parse(&out)
                .is_err()
        );
        assert_eq!(state, State::Refused);
    }
    // A bad head after a good one: the good one is released, the bad one is not.
    let mut data = b"GET /ok HTTP/1.1\r\n\r\n".to_vec();
    data.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
    let (out, _) = run(&data, 5);
    assert!(out.starts_with(b"GET /ok HTTP/1.1\r\n\r\n"));
    assert!(out.ends_with(REFUSE));
}

#[test]
fn h2_passes_upgrades_await_their_answer_and_garbage_is_refused() {
    let (_, s) = run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0", 4);
    assert_eq!(s, State::Pass);
    let (out, s) = run(
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframes",
        4,
    );
    assert_eq!(s, State::Switch);
    assert!(
        out.ends_with(b"upgrade\r\n\r\n"),
        "frames wait for the answer"
    );
    let (out, s) = run(b"GET\0 / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n", 4);
    assert_eq!(s, State::Refused);
    assert_eq!(
        out, b"GET\0",
        "hyper judges the bad head; nothing after it is passed"
    );
}

#[test]
fn an_upgrade_passes_through_only_after_a_101() {
    let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let mut f = Framer::new(65536);
    assert_eq!(f.scan(ws), ws.len());
    assert_eq!(f.state, State::Switch);
    f.answered(b"HTTP/1.1 400 Bad Request");
    assert_eq!(
        f.state,
        State::Head,
        "refused: the next bytes are a request head"
    );
    assert_eq!(f.scan(ws), ws.len());
    f.answered(b"HTTP/1.1 101 Switching Protocols");
    assert!(f.is_pass());
}

#[test]
fn a_parking_round_holds_an_upgrade_head_for_a_full_round() {
    let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let mut f = Framer::new(65536);
    f.hold = true;
    assert_eq!(f.scan(ws), 0);
    let (mut input, mut output) = (BytesMut::from(&ws[..]), BytesMut::new());
    f.feed(&mut input, &mut output);
    assert!(output.is_empty() && f.held_upgrade);
    f.hold = false;
    f.feed(&mut input, &mut output);
    assert_eq!((&output[..], f.state), (&ws[..], State::Switch));
}

#[test]
fn ambiguous_framing_is_refused_not_passed() {
    let long_chunk = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(5000)
    );
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(65536));
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\nhello"[..],
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc",
        long_chunk.as_bytes(),
    ] {
        let what = String::from_utf8_lossy(&bad[..bad.len().min(80)]);
        for step in [1, 7, bad.len()] {
            let (out, state) = run(bad, step);
            assert_eq!(state, State::Refused, "step {step}: {what}");
            assert!(out.ends_with(REFUSE), "step {step}: {what}");
        }
    }
    // A head over the limit, whole or in pieces: hyper gets exactly the limit's worth
    // of it, never its end, so its buffer fills and it answers 431; nothing after it
    // passes.
    for step in [big.len(), 4096] {
        let (out, state) = run(big.as_bytes(), step);
        assert_eq!(state, State::Refused, "step {step}");
        assert_eq!(out.len(), 65536, "step {step}");
        assert!(!out.windows(4).any(|w| w == b"\r\n\r\n"), "step {step}");
    }
}

#[test]
fn a_broken_h2_preface_closes_without_an_answer() {
    for bad in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        b"PRI / HTTP/1.1\r\n\r\n",
    ] {
        let (_, state) = run(bad, 3);
        assert_eq!(state, State::Closed, "{}", String::from_utf8_lossy(bad));
    }
    let (_, state) = run(b"PRI * HTTP/2.0\r\n", 3);
    assert_eq!(state, State::Head, "a partial preface waits");
}

#[test]
fn a_target_over_max_uri_is_cut_to_one_byte_too_long_for_the_414() {
    let mut f = Framer::new(65536).with_max_uri(8);
    let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
    input.extend_from_slice(b"GET /abcdefghijklmnopqrstuvwxyz0123456789 HTTP/1.0\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    f.feed(&mut input, &mut output);
    assert_eq!(
        &output[..],
        b"GET /abcdefgh HTTP/1.0\r\nConnection: close\r\n\r\n",
        "hyper gets a request whose target the request path answers 414; nothing after"
    );
    assert_eq!(f.state, State::Refused);
}
