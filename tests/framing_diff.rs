//! Differential test of the framing guard against hyper's HTTP/1 parser: seeded,
//! bounded streams (valid pipelines, smuggling shapes, random mutations) go through
//! the guard (`Framer`, in random pieces), and what it lets through goes to a real
//! hyper server over an in-memory pipe. Every request hyper serves must be one a strict
//! RFC 9112 reading of the original bytes also finds, in the same place with the same
//! body: otherwise the guard let through a request whose framing hyper reads
//! differently. `fuzz/` has a cargo-fuzz target for longer runs.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard::proxy::serve::framing::Framer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: usize = 5000;
const MAX_HEAD: usize = 8192;

type Req = (String, String, Vec<u8>);

/// The guard's output for `input`, fed in random pieces.
fn guard(input: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut f = Framer::new(MAX_HEAD);
    let (mut held, mut out) = (BytesMut::new(), BytesMut::new());
    let mut at = 0;
    while at < input.len() {
        let n = rng.usize(1..=input.len() - at);
        held.extend_from_slice(&input[at..at + n]);
        f.feed(&mut held, &mut out);
        at += n;
    }
    out.to_vec()
}

/// What hyper's server reads from `bytes`: each request's method, target and body.
async fn hyper_reads(bytes: Vec<u8>) -> Vec<Req> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let s = s.clone();
        async move {
            let (m, t) = (req.method().to_string(), req.uri().to_string());
            if let Ok(b) = req.into_body().collect().await {
                s.lock().unwrap().push((m, t, b.to_bytes().to_vec()));
            }
            Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
        }
    });
    let conn = tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(server), svc)
            .with_upgrades()
            .await;
    });
    let _ = client.write_all(&bytes).await;
    let _ = client.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut sink)).await;
    conn.abort();
    seen.lock().unwrap().clone()
}

/// A strict RFC 9112 reading of `input`: requests until the first one whose framing is
/// not clean (or that is cut off or upgrades).
fn strict(input: &[u8]) -> Vec<Req> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some((req, used, more)) = one(rest) {
        out.push(req);
        rest = &rest[used..];
        if !more {
            break;
        }
    }
    out
}

fn one(data: &[u8]) -> Option<(Req, usize, bool)> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut hs);
    let len = match r.parse(data) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        _ => return None,
    };
    let (method, target) = (r.method?.to_owned(), r.path?.to_owned());
    if method == "CONNECT" || method == "PRI" {
        return None;
    }
    let named = |n: &str| -> Vec<&[u8]> {
        r.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| h.value)
            .collect()
    };
    let (cl, te, up) = (
        named("content-length"),
        named("transfer-encoding"),
        named("upgrade"),
    );
    if (!cl.is_empty() && !te.is_empty()) || cl.len() > 1 || te.len() > 1 {
        return None;
    }
    let body_at = &data[len..];
    let (body, used) = if let Some(v) = cl.first() {
        let v = std::str::from_utf8(v).ok()?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: usize = v.parse().ok()?;
        (body_at.get(..n)?.to_vec(), n)
    } else if let Some(v) = te.first() {
        if !v.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return None;
        }
        chunked(body_at)?
    } else {
        (Vec::new(), 0)
    };
    if !up.is_empty() && used > 0 {
        return None;
    }
    Some(((method, target, body), len + used, up.is_empty()))
}

fn chunked(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (mut body, mut at) = (Vec::new(), 0);
    loop {
        let end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&data[at..end]).ok()?;
        let size = line.split(';').next()?.trim_end();
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let n = usize::from_str_radix(size, 16).ok()?;
        at = end + 2;
        if n == 0 {
            loop {
                let end = at + data[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        let end = at.checked_add(n)?;
        body.extend_from_slice(data.get(at..end)?);
        if data.get(end..end + 2)? != b"\r\n" {
            return None;
        }
        at = end + 2;
    }
}

/// One request: valid, or with one of the smuggling shapes.
fn request(rng: &mut fastrand::Rng) -> Vec<u8> {
    let body = b"hello world";
    let shapes: [&dyn Fn() -> String; 18] = [
        &|| "GET /a HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        &|| "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".into(),
        &|| {
            "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n".into()
        },
        &|| {
            "POST /d HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .into()
        },
        &|| {
            "POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
                .into()
        },
        &|| "POST /f HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".into(),
        &|| "POST /g HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc".into(),
        &|| "POST /h HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".into(),
        &|| "POST /i HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".into(),
        &|| "POST /j HTTP/1.1\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n".into(),
        &|| "POST /k HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc".into(),
        &|| {
            "POST /l HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n".into()
        },
        &|| "POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n".into(),
        &|| "POST /n HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n".into(),
        &|| "GET /o HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n".into(),
        &|| "POST /p HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc".into(),
        &|| {
            "POST /q HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into()
        },
        &|| {
            format!(
                "PUT /r HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                String::from_utf8_lossy(body)
            )
        },
    ];
    shapes[rng.usize(..shapes.len())]().into_bytes()
}

/// Bytes a mutation writes: the ones framing turns on.
const PICK: &[u8] = b"\r\n :;0aZ\t,-";

fn stream(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut s = Vec::new();
    for _ in 0..rng.usize(1..=4) {
        s.extend(request(rng));
    }
    for _ in 0..rng.usize(0..=3) {
        if s.is_empty() {
            break;
        }
        let i = rng.usize(..s.len());
        match rng.u8(..3) {
            0 => s[i] = PICK[rng.usize(..PICK.len())],
            1 => s.insert(i, PICK[rng.usize(..PICK.len())]),
            _ => {
                s.remove(i);
            }
        }
    }
    s
}

#[tokio::test]
async fn what_the_guard_lets_through_hyper_reads_as_a_strict_parser_does() {
    let mut rng = fastrand::Rng::with_seed(0x5eed_f4a3);
    let started = std::time::Instant::now();
    let (mut served, mut strict_total) = (0, 0);
    for case in 0..CASES {
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
        let input = stream(&mut rng);
        let through = guard(&input, &mut rng);
        let got = hyper_reads(through).await;
        let want = strict(&input);
        served += got.len();
        strict_total += want.len();
        let ok = got.len() <= want.len() && got.iter().zip(&want).all(|(g, w)| g == w);
        assert!(
            ok,
            "case {case}: hyper read {got:?}\nstrict reading {want:?}\ninput {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    eprintln!(
        "hyper served {served} requests the guard let through; a strict reading finds {strict_total}"
    );
    assert!(
        served > CASES / 4,
        "the streams exercise real pipelines ({served} served)"
    );
}

/// The property can fail: without the guard, hyper reads smuggling shapes a strict
/// parser refuses.
#[tokio::test]
async fn without_the_guard_hyper_reads_what_a_strict_parser_refuses() {
    let input =
        b"POST /d HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let got = hyper_reads(input.to_vec()).await;
    assert_eq!(got.len(), 1, "hyper accepts CL+TE");
    assert!(strict(input).is_empty());
    let mut rng = fastrand::Rng::with_seed(1);
    assert!(hyper_reads(guard(input, &mut rng)).await.is_empty());
}
