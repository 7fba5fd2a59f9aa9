//! An HTTP/3 test client (quinn + h3, the independent client of the wire columns is
//! aioquic): one connection, requests with optional bodies, answers read whole.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};

use super::tlsclient::Record;

/// One HTTP/3 connection to the proxy.
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    driver: tokio::task::JoinHandle<()>,
    pub conn: quinn::Connection,
    endpoint: quinn::Endpoint,
    /// The certificate the server presented (DER).
    pub served: Vec<u8>,
}

/// A whole answer: head, body, trailers.
#[derive(Debug)]
pub struct Answer {
    pub head: Response<()>,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl H3Client {
    /// Connect to `addr` with SNI `sni` (any certificate is accepted).
    pub async fn connect(addr: SocketAddr, sni: &str) -> Result<H3Client, String> {
        let record = Arc::new(Record::default());
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(record.clone())
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(addr, sni)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let served = record.0.lock().unwrap().clone().unwrap_or_default();
        Ok(H3Client {
            send,
            driver,
            conn,
            endpoint,
            served,
        })
    }

    /// Send `req` with `body` (sent in `chunks` DATA frames; none for an empty body)
    /// and read the whole answer.
    pub async fn request(
        &mut self,
        req: Request<()>,
        body: &[u8],
        chunks: usize,
    ) -> Result<Answer, String> {
        let mut stream = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        if !body.is_empty() {
            let size = body.len().div_ceil(chunks.max(1));
            for c in body.chunks(size) {
                stream
                    .send_data(Bytes::copy_from_slice(c))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        stream.finish().await.map_err(|e| e.to_string())?;
        let head = stream.recv_response().await.map_err(|e| e.to_string())?;
        let mut got = BytesMut::new();
        while let Some(mut d) = stream.recv_data().await.map_err(|e| e.to_string())? {
            got.extend_from_slice(&d.copy_to_bytes(d.remaining()));
        }
        let trailers = stream.recv_trailers().await.map_err(|e| e.to_string())?;
        Ok(Answer {
            head,
            body: got.freeze(),
            trailers,
        })
    }

    /// Send `req` and cancel it at once (STOP_SENDING and RESET_STREAM), as a client
    /// that gives up on a request does.
    pub async fn cancel(&mut self, req: Request<()>) -> Result<(), String> {
        let mut stream = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
        stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        Ok(())
    }

    /// Open a request stream for `req` and send its head, within `wait`; `false` when
    /// the server's stream limit kept it from opening in time. The stream is dropped.
    pub async fn opens_within(&mut self, req: Request<()>, wait: std::time::Duration) -> bool {
        let mut send = self.send.clone();
        tokio::time::timeout(wait, async move { send.send_request(req).await.is_ok() })
            .await
            .unwrap_or(false)
    }

    /// A handle to send requests on this connection from another task.
    pub fn sender(&self) -> h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> {
        self.send.clone()
    }

    /// GET `url` (an `https://host:port/path` URL).
    pub async fn get(&mut self, url: &str) -> Result<Answer, String> {
        let req = Request::get(url).body(()).unwrap();
        self.request(req, b"", 0).await
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"");
        self.driver.abort();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
    }
}
