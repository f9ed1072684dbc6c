//! Feeds of 64 KiB and more through the real `convenor serve`: sent with `sendfile` from a sealed
//! memfd (the metrics prove the path was taken), byte for byte the feed `convenor ics` prints,
//! read back by the independent Python parser, with HEAD, 304, keep-alive and a slow reader.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpSocket,
};

use crate::{
    daemon::harness::{Daemon, serve_arguments},
    feed::parse_ics,
    perf::generated,
    service::metrics,
    support::{binary, python, repo},
};

/// Meetings enough for a calendar feed (5.2 MB) larger than the kernel's largest socket send
/// buffer, so `sendfile` sends it in pieces and resumes at offsets inside the mapping (a smaller
/// feed fits the loopback send buffer whole, and a wrong offset would go unseen).
const MEETINGS: usize = 5000;

/// The largest TCP send buffer the kernel gives a socket (`tcp_wmem`'s third field).
fn max_send_buffer() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").expect("tcp_wmem");
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("tcp_wmem max")
}

/// The value of an unlabelled sample.
fn value(samples: &[(String, serde_json::Value, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
        .2
}

/// A generated config of `meetings` meetings in `dir` (the repository's templates, the state
/// directory `dir/state`); returns its path.
pub fn generated_config(dir: &std::path::Path, meetings: usize) -> std::path::PathBuf {
    let overrides = generated::Overrides {
        templates_dir: Some(repo().join("templates").display().to_string()),
        state_dir: Some(dir.join("state").display().to_string()),
        ..Default::default()
    };
    let config = dir.join("convenor.toml");
    std::fs::write(&config, generated::config_toml(meetings, &overrides)).expect("config");
    config
}

/// `convenor ics` on the same config and ledger.
fn ics(config: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(binary())
        .arg("--config")
        .arg(config)
        .arg("ics")
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run convenor ics");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sends `requests` on one connection whose receive buffer is small, reads the answers 1 KiB at
/// a time with pauses (the server meets a full socket again and again) until the server closes.
async fn read_slowly(addr: &str, requests: &str) -> Vec<u8> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stream = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    stream
        .write_all(requests.as_bytes())
        .await
        .expect("requests");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() % (16 * 1024) < 1024 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    got
}

/// Splits one HTTP/1.1 response off the front of `bytes`: (head, body, rest).
fn split_response(bytes: &[u8], body_len: usize) -> (String, &[u8], &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let body = &bytes[end..end + body_len];
    (head, body, &bytes[end + body_len..])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_feed_goes_out_with_sendfile_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = generated_config(dir.path(), MEETINGS);
    let mut daemon = Daemon::spawn(&config, &dir.path().join("serve.log"));
    let addr = daemon.wait_ready();
    let url = format!("http://{addr}/calendar.ics");

    let m = metrics(&addr).await;
    assert!(
        value(&m, "convenor_feed_sealed_bodies") >= 1.0,
        "the big feed is not in a sealed memfd:\n{m:?}\n{}",
        daemon.log_text()
    );
    let sent_before = value(&m, "convenor_feed_sendfile_bytes_total");

    // GET: the bytes `convenor ics` renders from the same config and ledger, and a feed the
    // independent parser reads whole.
    let client = reqwest::Client::new();
    let res = client.get(&url).send().await.expect("GET");
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].clone();
    let body = res.bytes().await.expect("body");
    assert!(
        body.len() > max_send_buffer(),
        "a {}-byte feed fits a send buffer of {} bytes whole",
        body.len(),
        max_send_buffer()
    );
    let expected = ics(&config, &[]);
    assert!(
        body[..] == expected[..],
        "served feed differs from `convenor ics`"
    );
    let parsed = parse_ics(std::str::from_utf8(&body).expect("UTF-8"));
    assert_eq!(parsed["events"].as_array().expect("events").len(), MEETINGS);

    // The body went out through sendfile, not writev.
    let sent = value(&metrics(&addr).await, "convenor_feed_sendfile_bytes_total") - sent_before;
    assert!(
        sent >= body.len() as f64,
        "only {sent} bytes through sendfile for a {}-byte feed",
        body.len()
    );

    // HEAD: the length, no body, nothing sent with sendfile.
    let sent_before = value(&metrics(&addr).await, "convenor_feed_sendfile_bytes_total");
    let head = client.head(&url).send().await.expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        body.len().to_string().as_str()
    );
    assert_eq!(head.headers()["etag"], etag);
    assert!(head.bytes().await.expect("head body").is_empty());
    // Conditional GET: 304, empty.
    let again = client
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("conditional GET");
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.expect("304 body").is_empty());
    let m = metrics(&addr).await;
    assert_eq!(value(&m, "convenor_feed_sendfile_bytes_total"), sent_before);

    // A priority feed: its own bytes.
    let priority = client
        .get(format!("http://{addr}/priorities/future-places.ics"))
        .send()
        .await
        .expect("GET priority")
        .bytes()
        .await
        .expect("priority body");
    assert!(priority[..] == ics(&config, &["--priority", "future-places"])[..]);

    // A slow reader with a small receive buffer, two GETs and a HEAD pipelined on one
    // kept-alive connection: whole bodies, and the HEAD between them has none.
    let get = |close: &str| format!("GET /calendar.ics HTTP/1.1\r\nHost: {addr}\r\n{close}\r\n");
    let requests = format!(
        "{}HEAD /calendar.ics HTTP/1.1\r\nHost: {addr}\r\n\r\n{}",
        get(""),
        get("Connection: close\r\n")
    );
    let n = body.len();
    let got = read_slowly(&addr, &requests).await;
    let (h1, b1, rest) = split_response(&got, n);
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(b1 == &body[..], "first body differs");
    let (h2, _, rest) = split_response(rest, 0);
    assert!(h2.starts_with("HTTP/1.1 200") && h2.contains(&format!("content-length: {n}")));
    assert!(
        rest.starts_with(b"HTTP/1.1 200"),
        "the HEAD answer carried a body"
    );
    let (_, b3, rest) = split_response(rest, n);
    assert!(b3 == &body[..], "second body differs");
    assert!(
        rest.is_empty(),
        "{} bytes after the last answer",
        rest.len()
    );

    // The same bytes after all that: the mapping never changed.
    let last = client
        .get(&url)
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert!(last == body);
}

/// Where a stricter seccomp filter than the unit's refuses `memfd_create`, the big feed is served
/// from the heap: the same bytes, one warning in the log, nothing sealed, nothing through
/// `sendfile`. The filter is a real one, installed by tests/tools/deny_syscalls.py before it
/// execs the binary.
#[tokio::test(flavor = "multi_thread")]
async fn without_memfd_a_big_feed_is_served_from_the_heap() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 200 meetings: a feed of about 200 KB, above the sealing threshold.
    let config = generated_config(dir.path(), 200);
    let mut command = std::process::Command::new(python());
    command
        .arg(repo().join("tests/tools/deny_syscalls.py"))
        .arg("memfd_create")
        .arg(binary());
    serve_arguments(&mut command, &config);
    let mut daemon = Daemon::spawn_command(command, &dir.path().join("serve.log"));
    let addr = daemon.wait_ready();

    let body = reqwest::get(format!("http://{addr}/calendar.ics"))
        .await
        .and_then(|r| r.error_for_status())
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert!(body.len() >= 64 * 1024, "{} bytes", body.len());
    assert!(body[..] == ics(&config, &[])[..], "served feed differs");
    let m = metrics(&addr).await;
    assert_eq!(value(&m, "convenor_feed_sealed_bodies"), 0.0, "{m:?}");
    assert_eq!(
        value(&m, "convenor_feed_sendfile_bytes_total"),
        0.0,
        "{m:?}"
    );
    let log = daemon.log_text();
    assert_eq!(
        log.matches("cannot put a feed into a sealed memfd").count(),
        1,
        "one warning:\n{log}"
    );
}
