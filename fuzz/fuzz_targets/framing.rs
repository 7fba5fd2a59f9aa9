//! The framing guard on arbitrary bytes in arbitrary pieces: it never panics, and what
//! it passes on is always a prefix of its input, followed only by the invalid bytes it
//! puts in place of a refused head. `tests/framing_diff.rs` checks it against hyper.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::proxy::serve::framing::Framer;

const REFUSE: &[u8] = b"\0\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut f = Framer::new(4096);
    let (mut held, mut out) = (BytesMut::new(), BytesMut::new());
    for piece in input.chunks(step) {
        held.extend_from_slice(piece);
        f.feed(&mut held, &mut out);
    }
    let passed = out.strip_suffix(REFUSE).unwrap_or(&out);
    assert!(input.starts_with(passed), "the guard passed bytes that were not sent");
});
