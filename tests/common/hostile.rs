//! A hostile ComfyUI (issue 13): the recorded ComfyUI of `comfy_server.rs` with one
//! misbehaviour layered over its routes ([`Hostile`]), a server on another origin (another
//! port) that counts every request reaching it ([`Elsewhere`]), and a TLS front for `https://`/`wss://`
//! ([`TlsFront`]). Whatever it sends is made while it is sent: a 2 GiB body is never held in
//! the test's memory.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;

use super::comfy_server::{Config, Server};

/// What the hostile server does wrong.
#[derive(Debug, Clone)]
pub enum Hostile {
    /// `/history/<id>` answers 200 with a JSON body of this many bytes, chunked (no length).
    HugeHistory(u64),
    /// `/view` sends the header of a 64x48 PNG and then bytes without end.
    EndlessView,
    /// `/view` sends a valid PNG of this width and height (1-bit grey, all black).
    BigFrame(u32, u32),
    /// The `n`-th `/view` (from 1) sends its PNG with the pixel data corrupted after the header.
    CorruptFrame(u64),
    /// Requests whose method and path start like one of these answer `307` to the same path
    /// and query on `to` (another origin's URL, or a path prefix such as `/api`: the same
    /// origin).
    Redirect {
        routes: Vec<(&'static str, &'static str)>,
        to: String,
    },
}

/// Starts the recorded ComfyUI with `how` layered over it.
pub fn start(cfg: Config, how: Hostile) -> Server {
    let how = Arc::new(how);
    let views = Arc::new(AtomicU64::new(0));
    Server::start_wrapped(cfg, move |router: Router| {
        router.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let (how, views) = (Arc::clone(&how), Arc::clone(&views));
                async move { misbehave(&how, &views, req, next).await }
            },
        ))
    })
}

async fn misbehave(how: &Hostile, views: &AtomicU64, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let view = path == "/view";
    match how {
        Hostile::HugeHistory(bytes) if path.starts_with("/history/") => {
            let id = path.trim_start_matches("/history/").to_string();
            huge_history(&id, *bytes)
        }
        Hostile::EndlessView if view => endless_png(),
        Hostile::BigFrame(w, h) if view => {
            ([(header::CONTENT_TYPE, "image/png")], big_png(*w, *h)).into_response()
        }
        Hostile::CorruptFrame(n) if view && views.fetch_add(1, Ordering::SeqCst) + 1 == *n => {
            let resp = next.run(req).await;
            let mut png = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec();
            // Past the signature and IHDR (33 bytes): the data no longer matches its CRC.
            for b in png.iter_mut().skip(41).take(64) {
                *b ^= 0x5a;
            }
            ([(header::CONTENT_TYPE, "image/png")], png).into_response()
        }
        Hostile::Redirect { routes, to }
            if routes
                .iter()
                .any(|(m, p)| req.method().as_str() == *m && path.starts_with(p)) =>
        {
            let pq = req
                .uri()
                .path_and_query()
                .map_or(path.clone(), |p| p.to_string());
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("{to}{pq}"))],
            )
                .into_response()
        }
        _ => next.run(req).await,
    }
}

/// `{"<id>": {"outputs": {"9": {"images": [{…}, {…}, …]}}}}` of exactly `bytes` bytes (at
/// least the frame of it), made 64 KiB at a time from one shared chunk.
fn huge_history(id: &str, bytes: u64) -> Response {
    let head = format!(r#"{{"{id}": {{"outputs": {{"9": {{"images": ["#);
    let tail = r#"{}]}}}}"#;
    let item = r#"{"filename": "vidax_wav2lip_00001_.png", "subfolder": "", "type": "output"}, "#;
    let chunk = Bytes::from(item.repeat((64 << 10) / item.len()));
    let fill = bytes.saturating_sub((head.len() + tail.len()) as u64);
    let (full, rest) = (
        fill / chunk.len() as u64,
        (fill % chunk.len() as u64) as usize,
    );
    let pad = Bytes::from(" ".repeat(rest));
    let parts = std::iter::once(Bytes::from(head))
        .chain(std::iter::repeat_n(chunk, full as usize))
        .chain([pad, Bytes::from(tail)]);
    let stream = futures_util::stream::iter(parts.map(Ok::<_, std::io::Error>));
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A 64x48 PNG's signature and header, then an IDAT that never ends.
fn endless_png() -> Response {
    let mut png = Vec::new();
    image::RgbImage::new(64, 48)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut head = png[..33].to_vec();
    head.extend_from_slice(&u32::MAX.to_be_bytes()[..]);
    head.extend_from_slice(b"IDAT");
    let zeros = Bytes::from(vec![0u8; 64 << 10]);
    let stream = futures_util::stream::iter(
        std::iter::once(Bytes::from(head)).chain(std::iter::repeat(zeros)),
    )
    .map(Ok::<_, std::io::Error>);
    (
        [(header::CONTENT_TYPE, "image/png")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A valid all-black 1-bit greyscale PNG of `w`×`h` (20000² compresses to some 60 kB).
pub fn big_png(w: u32, h: u32) -> Bytes {
    static CACHE: std::sync::Mutex<Vec<((u32, u32), Bytes)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, b)) = cache.iter().find(|(k, _)| *k == (w, h)) {
        return b.clone();
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        let mut writer = enc.write_header().unwrap();
        let row = vec![0u8; w.div_ceil(8) as usize];
        let mut stream = writer.stream_writer().unwrap();
        for _ in 0..h {
            std::io::Write::write_all(&mut stream, &row).unwrap();
        }
        stream.finish().unwrap();
    }
    let b = Bytes::from(out);
    cache.push(((w, h), b.clone()));
    b
}

/// A server on another origin (another port) that answers every request `200 {}` and
/// counts them: the recorded server's thread with a router of its own.
pub struct Elsewhere {
    pub url: String,
    pub hits: Arc<AtomicU64>,
}

impl Elsewhere {
    pub fn start() -> Elsewhere {
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        let server = Server::start_wrapped(Config::default(), move |_recorded| {
            Router::new().fallback(move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({}))
                }
            })
        });
        Elsewhere {
            url: server.url,
            hits,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A TLS front on `localhost` for a plain server: each TLS connection is decrypted and its
/// bytes copied to and from `backend` (websockets included). The certificate is made by the
/// `openssl` command line (tests may use system tools); `cert_pem` is the CA a client must
/// trust (`SSL_CERT_FILE`).
pub struct TlsFront {
    pub url: String,
    pub cert_pem: std::path::PathBuf,
}

impl TlsFront {
    pub fn start(backend: &str, dir: &Path) -> TlsFront {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        // A CA the client trusts, and a certificate for localhost signed by it (webpki takes
        // no self-signed CA certificate as a server's own).
        let file = |name: &str| dir.join(name);
        let (ca_pem, cert_pem, key_pem) = (file("ca.pem"), file("cert.pem"), file("key.pem"));
        std::fs::write(
            file("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<std::ffi::OsString>; 3] = [
            ["req", "-x509", "-days", "2", "-subj", "/CN=vidax test CA"]
                .iter()
                .chain(&ec)
                .map(|s| s.into())
                .chain([
                    "-keyout".into(),
                    file("ca.key").into(),
                    "-out".into(),
                    ca_pem.clone().into(),
                ])
                .collect(),
            ["req", "-subj", "/CN=localhost"]
                .iter()
                .chain(&ec)
                .map(|s| s.into())
                .chain([
                    "-keyout".into(),
                    key_pem.clone().into(),
                    "-out".into(),
                    file("leaf.csr").into(),
                ])
                .collect(),
            ["x509", "-req", "-days", "2", "-CAcreateserial"]
                .iter()
                .map(|s| s.into())
                .chain([
                    "-in".into(),
                    file("leaf.csr").into(),
                    "-CA".into(),
                    ca_pem.clone().into(),
                    "-CAkey".into(),
                    file("ca.key").into(),
                    "-extfile".into(),
                    file("leaf.ext").into(),
                    "-out".into(),
                    cert_pem.clone().into(),
                ])
                .collect(),
        ];
        for args in steps {
            let out = std::process::Command::new("openssl")
                .args(&args)
                .output()
                .expect("openssl (the tests' certificate maker) must be installed");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(&cert_pem)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key_pem).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let backend: SocketAddr = backend
            .trim_start_matches("http://")
            .parse()
            .expect("backend host:port");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        super::comfy_server::in_thread(move || async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront {
            url: format!("https://localhost:{port}"),
            cert_pem: ca_pem,
        }
    }
}
