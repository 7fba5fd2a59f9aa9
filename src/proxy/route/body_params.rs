//! The bounded body look for `param` routes: read at most `limit` bytes for at most
//! `wait`, parse form, multipart or JSON fields, and keep every frame read so the
//! upstream receives the body byte for byte. A body that is larger or slower is not an
//! error: routing falls back to the query string.

use std::collections::VecDeque;
use std::time::Duration;

use crate::client_body::ClientBody;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use crate::routing::BodyParams;

/// The body types that carry request parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Multipart(String),
    Json,
}

/// The parameter-carrying kind of a request body, if it has one and is non-empty.
pub fn body_kind(headers: &HeaderMap, body: &ClientBody) -> Option<BodyKind> {
    if body.is_end_stream() {
        return None;
    }
    let ct = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next()?.trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else if essence.eq_ignore_ascii_case("multipart/form-data") {
        multer::parse_boundary(ct).ok().map(BodyKind::Multipart)
    } else if essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
    {
        Some(BodyKind::Json)
    } else {
        None
    }
}

/// What the look found.
#[derive(Debug)]
pub struct Look {
    /// Every frame read, to be replayed upstream first.
    pub frames: VecDeque<Frame<Bytes>>,
    pub bytes: u64,
    /// The whole body was read and parsed; `None` = route on the query string.
    pub params: Option<BodyParams>,
}

/// Read up to `limit` bytes of `body` within `wait` and parse them as `kind`.
pub async fn look(
    body: &mut ClientBody,
    kind: &BodyKind,
    limit: usize,
    wait: Duration,
) -> Result<Look, crate::client_body::ClientBodyError> {
    let mut out = Look {
        frames: VecDeque::new(),
        bytes: 0,
        params: None,
    };
    if body.size_hint().lower() > limit as u64 {
        return Ok(out);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let complete = loop {
        if body.is_end_stream() {
            break true;
        }
        // Cancelling `frame()` at the deadline loses nothing: a frame is only taken
        // from the body when the future completes.
        let next = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(next) => next,
            Err(_) => break false,
        };
        match next {
            None => break true,
            Some(f) => {
                let f = f?;
                out.bytes += f.data_ref().map_or(0, |d| d.len() as u64);
                out.frames.push_back(f);
                if out.bytes > limit as u64 {
                    break false;
                }
            }
        }
    };
    if complete {
        let mut all = BytesMut::with_capacity(usize::try_from(out.bytes).unwrap_or(0));
        for d in out.frames.iter().filter_map(|f| f.data_ref()) {
            all.extend_from_slice(d);
        }
        out.params = parse(kind, all.freeze()).await;
    }
    Ok(out)
}

async fn parse(kind: &BodyKind, data: Bytes) -> Option<BodyParams> {
    match kind {
        BodyKind::Form => Some(BodyParams {
            json: false,
            fields: form_urlencoded::parse(&data)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }),
        BodyKind::Json => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&data).ok()?;
            let fields = map
                .into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k, s)),
                    serde_json::Value::Number(n) => Some((k, n.to_string())),
                    serde_json::Value::Bool(b) => Some((k, b.to_string())),
                    _ => None,
                })
                .collect();
            Some(BodyParams { json: true, fields })
        }
        BodyKind::Multipart(boundary) => {
            let stream =
                futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(data) });
            let mut mp = multer::Multipart::new(stream, boundary.as_str());
            let mut fields = Vec::new();
            while let Some(field) = mp.next_field().await.ok()? {
                let name = field.name().map(str::to_owned);
                let is_file = field.file_name().is_some();
                let text = field.text().await.ok()?;
                if let (Some(name), false) = (name, is_file) {
                    fields.push((name, text));
                }
            }
            Some(BodyParams {
                json: false,
                fields,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_each_kind() {
        let form = parse(
            &BodyKind::Form,
            Bytes::from_static(b"a=1&cmd=frappe.desk.query_report.run"),
        )
        .await
        .expect("the test body parses");
        assert_eq!(
            form.fields[1],
            ("cmd".into(), "frappe.desk.query_report.run".into())
        );
        let json = parse(
            &BodyKind::Json,
            Bytes::from_static(br#"{"cmd":"x","n":2,"o":{}}"#),
        )
        .await
        .expect("the test body parses");
        assert!(json.json);
        assert_eq!(
            json.fields,
            vec![("cmd".into(), "x".into()), ("n".into(), "2".into())]
        );
        assert!(
            parse(&BodyKind::Json, Bytes::from_static(b"[1]"))
                .await
                .is_none()
        );
        let mp = "--XX\r\nContent-Disposition: form-data; name=\"cmd\"\r\n\r\nrun\r\n--XX\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nfile\r\n--XX--\r\n";
        let mp = parse(&BodyKind::Multipart("XX".into()), Bytes::from(mp))
            .await
            .expect("the test body parses");
        assert_eq!(mp.fields, vec![("cmd".into(), "run".into())]);
    }
}
