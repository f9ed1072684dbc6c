//! The real server on 127.0.0.1:0 with a real HTTP client: feeds, conditional GET, HEAD, 404,
//! 405, the feed token, reloads, TCP_NODELAY on accepted sockets, and the subscribe page in
//! headless Chromium.

use std::{collections::BTreeMap, net::SocketAddr, process::Command};

use convenor::{
    feed::{self, Selection},
    http::{self, FeedState},
    model::Config,
};
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use crate::{
    feed::{config_from, parse_ics},
    support::{example_config_text, run_tool},
};

const TOKEN: &str = "s3cret-token-0123456789";

/// A running server; dropping it stops the server.
struct Server {
    addr: SocketAddr,
    state: FeedState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The example config with `base_url` on `addr` and an optional token.
fn config_for(addr: SocketAddr, token: Option<&str>, extra: &str) -> Config {
    let mut text = example_config_text().replace(
        "base_url = \"http://127.0.0.1:8080\"",
        &format!("base_url = \"http://{addr}\""),
    );
    if let Some(t) = token {
        text = text.replace(
            "# feed_token = \"a-long-random-string\"",
            &format!("feed_token = \"{t}\""),
        );
    }
    text.push_str(extra);
    config_from(&text)
}

async fn spawn(token: Option<&str>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = std::sync::Arc::new(config_for(addr, token, ""));
    let state = FeedState::new(&config, &BTreeMap::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = state.clone();
    tokio::spawn(async move {
        http::serve(listener, served, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    Server {
        addr,
        state,
        _stop: stop,
    }
}

fn client() -> reqwest::Client {
    crate::support::no_redirect_client()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_answer_with_validators_and_conditional_get() {
    let server = spawn(None).await;
    let c = client();
    for path in ["/calendar.ics", "/priorities/future-places.ics"] {
        let res = c
            .get(server.url(path))
            .header(header::ACCEPT_ENCODING, "gzip, br")
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers().clone();
        assert_eq!(h[header::CONTENT_TYPE], "text/calendar; charset=utf-8");
        assert!(h.get(header::CONTENT_ENCODING).is_none(), "no compression");
        assert_eq!(h[header::CACHE_CONTROL], "max-age=3600, no-transform");
        let etag = h[header::ETAG].to_str().expect("etag").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
        let last_modified = h[header::LAST_MODIFIED].to_str().expect("lm").to_owned();
        assert_eq!(last_modified, "Thu, 01 Jan 1970 00:00:00 GMT");
        let body = res.text().await.expect("body");
        parse_ics(&body);

        // HEAD: GET's headers, no body.
        let head = c.head(server.url(path)).send().await.expect("head");
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()[header::ETAG], etag.as_str());
        assert_eq!(
            head.headers()[header::CONTENT_TYPE],
            "text/calendar; charset=utf-8"
        );
        assert_eq!(
            head.headers()[header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
        assert!(head.bytes().await.expect("head body").is_empty());

        // 304 on each validator; If-None-Match wins over If-Modified-Since.
        let inm = c
            .get(server.url(path))
            .header(header::IF_NONE_MATCH, format!("\"x\", W/{etag}"))
            .send()
            .await
            .expect("inm");
        assert_eq!(inm.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(inm.headers()[header::ETAG], etag.as_str());
        let ims = c
            .get(server.url(path))
            .header(header::IF_MODIFIED_SINCE, &last_modified)
            .send()
            .await
            .expect("ims");
        assert_eq!(ims.status(), StatusCode::NOT_MODIFIED);
        // If-None-Match on several field lines is one list (RFC 9110 5.3).
        let lines = c
            .get(server.url(path))
            .header(header::IF_NONE_MATCH, "\"x\"")
            .header(header::IF_NONE_MATCH, etag.as_str())
            .send()
            .await
            .expect("two lines");
        assert_eq!(lines.status(), StatusCode::NOT_MODIFIED, "{path}");
        // A repeated If-Modified-Since is ignored (RFC 9110 13.1.3).
        let twice = c
            .get(server.url(path))
            .header(header::IF_MODIFIED_SINCE, &last_modified)
            .header(header::IF_MODIFIED_SINCE, &last_modified)
            .send()
            .await
            .expect("twice");
        assert_eq!(twice.status(), StatusCode::OK, "{path}");
        // A HEAD's 304 says the length a 200 would, never 0 (RFC 9110 8.6).
        let head_304 = c
            .head(server.url(path))
            .header(header::IF_NONE_MATCH, etag.as_str())
            .send()
            .await
            .expect("head 304");
        assert_eq!(head_304.status(), StatusCode::NOT_MODIFIED);
        if let Some(length) = head_304.headers().get(header::CONTENT_LENGTH) {
            assert_eq!(length, body.len().to_string().as_str(), "{path}");
        }
        let stale = c
            .get(server.url(path))
            .header(header::IF_NONE_MATCH, "\"other\"")
            .header(header::IF_MODIFIED_SINCE, &last_modified)
            .send()
            .await
            .expect("stale");
        assert_eq!(stale.status(), StatusCode::OK);
        let older = c
            .get(server.url(path))
            .header(header::IF_MODIFIED_SINCE, "Wed, 31 Dec 1969 23:59:59 GMT")
            .send()
            .await
            .expect("older");
        assert_eq!(older.status(), StatusCode::OK);
        // The bytes are the pure renderer's.
        let config = server.state.current().config.clone();
        let selection = match path.strip_prefix("/priorities/") {
            Some(rest) => Selection::Priority(
                config
                    .priorities
                    .iter()
                    .find(|p| format!("{}.ics", p.id) == rest)
                    .expect("p"),
            ),
            None => Selection::All,
        };
        assert_eq!(
            body,
            feed::render_calendar(&config, &BTreeMap::new(), selection)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_404_and_other_methods_405() {
    let server = spawn(None).await;
    let c = client();
    for path in [
        "/priorities/nope.ics",
        "/nope",
        "/calendar.ics/x",
        "/priorities/.ics",
        "/calendar",
    ] {
        let res = c.get(server.url(path)).send().await.expect("get");
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let res = c
            .request(method.clone(), server.url("/calendar.ics"))
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
    }
    let page = c.get(server.url("/")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_token_hides_the_public_paths() {
    let server = spawn(Some(TOKEN)).await;
    let c = client();
    let status = |path: String| {
        let c = c.clone();
        async move { c.get(path).send().await.expect("get").status() }
    };
    for path in ["/calendar.ics", "/priorities/future-places.ics", "/"] {
        assert_eq!(
            status(server.url(path)).await,
            StatusCode::NOT_FOUND,
            "public {path}"
        );
        assert_eq!(
            status(server.url(&format!("/{TOKEN}{path}"))).await,
            StatusCode::OK,
            "token {path}"
        );
        let wrong = format!("/{}x{path}", &TOKEN[..TOKEN.len() - 1]);
        assert_eq!(
            status(server.url(&wrong)).await,
            StatusCode::NOT_FOUND,
            "wrong {path}"
        );
        let short = format!("/{}{path}", &TOKEN[..8]);
        assert_eq!(
            status(server.url(&short)).await,
            StatusCode::NOT_FOUND,
            "prefix {path}"
        );
    }
    // A wrong token with another method still says nothing about the path.
    let res = c
        .post(server.url("/wrong-token-000000000/calendar.ics"))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // The feed's URL property and the page's links carry the token.
    let body = c
        .get(server.url(&format!("/{TOKEN}/calendar.ics")))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let v = parse_ics(&body);
    assert_eq!(
        v["calendar"]["URL"],
        server.url(&format!("/{TOKEN}/")).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_feeds_and_last_modified_never_goes_back() {
    let server = spawn(None).await;
    let c = client();
    let get = |path: &'static str| {
        let c = c.clone();
        let url = server.url(path);
        async move { c.get(url).send().await.expect("get") }
    };
    let first = get("/calendar.ics").await;
    let etag0 = first.headers()[header::ETAG].clone();
    let lm0 = first.headers()[header::LAST_MODIFIED].clone();

    // Cancel a meeting without a new revision: the bytes change, so Last-Modified must move
    // forward even though no meeting's stored change is later.
    let config = std::sync::Arc::new(config_for(server.addr, None, ""));
    let text_config = std::sync::Arc::new({
        let mut c2 = (*config).clone();
        let m = c2
            .meetings
            .iter_mut()
            .find(|m| m.id.as_str() == "2023-06-07")
            .expect("m");
        m.status = convenor::model::MeetingStatus::Cancelled;
        c2
    });
    let now: jiff::Timestamp = "2024-05-01T10:00:00Z".parse().expect("now");
    server.state.replace_at(&text_config, &BTreeMap::new(), now);
    let second = get("/calendar.ics").await;
    assert_ne!(second.headers()[header::ETAG], etag0);
    assert_eq!(
        second.headers()[header::LAST_MODIFIED],
        "Wed, 01 May 2024 10:00:00 GMT"
    );
    let v = parse_ics(&second.text().await.expect("text"));
    assert_eq!(
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["uid"] == "2023-06-07@lednet.convenor")
            .expect("e")["status"],
        "CANCELLED"
    );
    // An old validator no longer matches.
    let res = c
        .get(server.url("/calendar.ics"))
        .header(header::IF_MODIFIED_SINCE, lm0)
        .send()
        .await
        .expect("ims");
    assert_eq!(res.status(), StatusCode::OK);

    // Going back to the old config with an earlier clock: Last-Modified still moves forward.
    let earlier: jiff::Timestamp = "2020-01-01T00:00:00Z".parse().expect("earlier");
    server.state.replace_at(&config, &BTreeMap::new(), earlier);
    let third = get("/calendar.ics").await;
    assert_eq!(third.headers()[header::ETAG], etag0);
    assert_eq!(
        third.headers()[header::LAST_MODIFIED],
        "Wed, 01 May 2024 10:00:01 GMT"
    );
    // The same data again: nothing moves, nothing is rendered (the very same feeds stay).
    let before = server.state.current();
    assert!(!server.state.replace_at(&config, &BTreeMap::new(), now));
    assert!(std::sync::Arc::ptr_eq(&before, &server.state.current()));
    let fourth = get("/calendar.ics").await;
    assert_eq!(
        fourth.headers()[header::LAST_MODIFIED],
        "Wed, 01 May 2024 10:00:01 GMT"
    );
}

/// Percent-encodes like a form value, written independently of the server's code.
fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium must be installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscribe_page_in_chromium_has_working_links_for_every_client() {
    for token in [None, Some(TOKEN)] {
        let server = spawn(token).await;
        let prefix = token.map(|t| format!("/{t}")).unwrap_or_default();
        let page_url = server.url(&format!("{prefix}/"));
        let dom = tokio::task::spawn_blocking(move || chromium_dom(&page_url))
            .await
            .expect("join");
        let v: Value =
            serde_json::from_slice(&run_tool("page_links.py", &[], dom.as_bytes()).stdout)
                .expect("json");
        assert_eq!(v["lang"], "en-GB");
        assert!(v["title"].as_str().expect("title").contains("LEDNet"));
        let config = server.state.current().config.clone();
        let mut expected = vec![(
            format!("{prefix}/calendar.ics"),
            "LEDNet meetings".to_owned(),
        )];
        for p in &config.priorities {
            expected.push((
                format!("{prefix}/priorities/{}.ics", p.id),
                format!("LEDNet: {}", p.name),
            ));
            let heading = v["headings"]
                .as_array()
                .expect("headings")
                .iter()
                .any(|h| h == p.name.as_str());
            assert!(heading, "a heading for {}", p.name);
        }
        let feeds = v["feeds"].as_array().expect("feeds");
        assert_eq!(feeds.len(), expected.len(), "one block per feed");
        for (f, (path, name)) in feeds.iter().zip(&expected) {
            let https = server.url(path);
            let webcal = format!("webcal://{}{path}", server.addr);
            let links = &f["links"];
            assert_eq!(f["url"], https.as_str());
            assert_eq!(
                links["outlook-com"],
                format!(
                    "https://outlook.live.com/calendar/0/addfromweb?url={}&name={}",
                    encoded(&https),
                    encoded(name)
                )
                .as_str()
            );
            assert_eq!(
                links["microsoft-365"],
                format!(
                    "https://outlook.office.com/calendar/0/addfromweb?url={}&name={}",
                    encoded(&https),
                    encoded(name)
                )
                .as_str()
            );
            assert_eq!(
                links["google"],
                format!(
                    "https://calendar.google.com/calendar/r?cid={}",
                    encoded(&webcal)
                )
                .as_str()
            );
            assert_eq!(links["apple"], webcal.as_str());
            assert_eq!(links["outlook-classic"], webcal.as_str());
            let d = &f["decoded"];
            assert_eq!(d["outlook-com"]["url"], https.as_str());
            assert_eq!(d["outlook-com"]["name"], name.as_str());
            assert_eq!(d["microsoft-365"]["url"], https.as_str());
            assert_eq!(d["google"]["url"], webcal.as_str());
            // The URL each link carries serves the feed.
            let res = client().get(&https).send().await.expect("get feed");
            assert_eq!(res.status(), StatusCode::OK, "{https}");
        }
        // The page names the upcoming meetings (none: 2023 is past) and the refresh times.
        assert!(dom.contains("No upcoming meetings") || dom.contains("LEDNet meeting"));
        assert!(dom.contains("every 8 to 24 hours"), "refresh note");
        assert!(
            dom.contains("every 4 hours"),
            "classic Outlook follows X-PUBLISHED-TTL"
        );
    }
}

/// The inode of the TCP socket on 127.0.0.1 with local address `local` and peer `peer` (port 0
/// for a listening socket), from /proc/net/tcp.
fn tcp_socket_inode(local: SocketAddr, peer: Option<SocketAddr>) -> Option<u64> {
    let hex = |a: Option<SocketAddr>| match a {
        Some(SocketAddr::V4(a)) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(a.ip().octets()),
            a.port()
        ),
        _ => "00000000:0000".to_owned(),
    };
    let (local, peer) = (hex(Some(local)), hex(peer));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&peer.as_str()))
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

/// Whether the socket with `inode`, open in this process (the server runs in it), has
/// TCP_NODELAY: its descriptor is found in /proc/self/fd and duplicated with pidfd_getfd.
fn nodelay_of_socket(inode: u64) -> bool {
    let target = format!("socket:[{inode}]");
    let fd = std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .flatten()
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == target))
        .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .expect("the socket's descriptor");
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("pidfd_open");
    let socket = rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty())
        .expect("pidfd_getfd");
    rustix::net::sockopt::tcp_nodelay(&socket).expect("getsockopt")
}

/// Accepted connections get TCP_NODELAY (nginx's `tcp_nodelay on`: without it, the last short
/// segment of a big feed waited ~40 ms for the client's delayed ACK). Read from the server's own
/// socket; the listening socket, which the server does not set, reads false.
#[tokio::test]
async fn accepted_connections_have_tcp_nodelay() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = spawn(None).await;
    let mut client = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    client
        .write_all(b"GET /calendar.ics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut head = [0; 12];
    client.read_exact(&mut head).await.expect("response");
    assert_eq!(&head, b"HTTP/1.1 200");
    let accepted = tcp_socket_inode(server.addr, Some(client.local_addr().expect("addr")))
        .expect("the server's end of the connection");
    assert!(
        nodelay_of_socket(accepted),
        "accepted socket without TCP_NODELAY"
    );
    let listening = tcp_socket_inode(server.addr, None).expect("the listening socket");
    assert!(!nodelay_of_socket(listening));
}
