//! The agenda pages in process, behind the real HTTP server and a real client (reqwest), under
//! configs the daemon tests do not use: a feed token, base URLs with capitals, a default port or
//! a path (convenor behind a proxy), the proposal form's POST/redirect/GET, and lead links
//! issued in the past (expired ones).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use convenor::{
    agenda::{AgendaStore, token},
    http::{self, FeedState, agenda_pages::AgendaPages, server::Limits},
    model::LeadLinkLifetime,
};
use jiff::{SignedDuration, Timestamp};
use reqwest::{StatusCode, header};

use super::web::{csrf, far, good, text, zone};
use crate::feed::config_from;

const TOKEN: &str = "feed-secret-0123456789abcdef";

/// The agenda pages and feeds served on a loopback port; dropping it stops the server.
struct Served {
    /// `http://127.0.0.1:<port>`: where requests go (as a proxy would send them, its path
    /// stripped).
    addr: String,
    store: Arc<Mutex<AgendaStore>>,
    /// The served config's `[agenda] lead_link_lifetime`.
    lifetime: LeadLinkLifetime,
    /// The served config.
    config: Arc<convenor::model::Config>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    fn proposals(&self) -> Vec<convenor::agenda::Proposal> {
        self.store
            .lock()
            .expect("store lock")
            .proposals(None)
            .expect("proposals")
    }

    /// A lead link's token for priority p1.
    fn lead_token(&self) -> String {
        self.lead_token_issued_at(Timestamp::now())
    }

    /// A lead link's token for priority p1, issued at `issued` with the served lifetime.
    fn lead_token_issued_at(&self, issued: Timestamp) -> String {
        self.lead_token_with(self.lifetime, issued).raw
    }

    /// A lead link's token for priority p1, issued at `issued` with `lifetime` (as an earlier
    /// config may have said).
    fn lead_token_with(
        &self,
        lifetime: LeadLinkLifetime,
        issued: Timestamp,
    ) -> convenor::agenda::store::IssuedToken {
        self.store
            .lock()
            .expect("store lock")
            .issue_token("p1", "lead1@example.org", "test", lifetime, issued)
            .expect("token")
    }

    /// The CSRF token a lead page of `lead_token` would give proposal `n`'s forms.
    fn csrf_for(&self, lead_token: &str, n: i64) -> String {
        let secret = self
            .store
            .lock()
            .expect("store lock")
            .csrf_secret()
            .expect("secret");
        token::csrf(&secret, &token::hash(lead_token), n)
    }

    /// The actions recorded on proposal `n`.
    fn actions(&self, n: i64) -> Vec<String> {
        self.store
            .lock()
            .expect("store lock")
            .decisions(n)
            .expect("decisions")
            .into_iter()
            .map(|d| d.action)
            .collect()
    }
}

/// Serves the agenda test config (meeting `m1` open for proposals, `m2` cancelled) with
/// `base_url` and, when given, `feed_token`.
async fn serve(base_url: &str, feed_token: Option<&str>) -> Served {
    let zone = zone();
    let (d, s, e) = far(zone);
    let mut config_text = text(zone, 1, 1, (&d, &s, &e), "").replace(
        "base_url = \"http://127.0.0.1:1\"",
        &format!("base_url = \"{base_url}\""),
    );
    if let Some(t) = feed_token {
        config_text = config_text.replace("[http]\n", &format!("[http]\nfeed_token = \"{t}\"\n"));
    }
    let config = Arc::new(config_from(&config_text));
    assert_eq!(config.network.base_url.as_str(), base_url);
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(Mutex::new(
        AgendaStore::open_in(dir.path()).expect("agenda store"),
    ));
    let feeds = FeedState::new(&config, &BTreeMap::new());
    let pages = AgendaPages::new(feeds.clone(), Arc::clone(&store), Arc::new(|| {}), None);
    let app = http::router_with_agenda(feeds, pages);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits::from_settings(&config.http);
    tokio::spawn(async move {
        http::server::serve(listener, app, limits, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    Served {
        addr: format!("http://{addr}"),
        store,
        lifetime: config.agenda_settings.lead_link_lifetime,
        config: Arc::clone(&config),
        _dir: dir,
        _stop: stop,
    }
}

fn client() -> reqwest::Client {
    crate::support::no_redirect_client()
}

/// The body of a GET of `url`, as text.
async fn get_text(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    c.get(url)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("body")
}

/// A response's status, headers and body, as text.
async fn read(res: reqwest::Response) -> (StatusCode, header::HeaderMap, String) {
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

fn location(headers: &header::HeaderMap) -> String {
    headers
        .get(header::LOCATION)
        .expect("a Location")
        .to_str()
        .expect("ascii Location")
        .to_owned()
}

/// Every `action="…"` of a page, its slashes unescaped (the template escapes what it fills in).
fn actions(html: &str) -> Vec<String> {
    html.split("action=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("closing quote")].replace("&#x2f;", "/"))
        .collect()
}

/// With a feed token no public page, answer or header of the agenda pages shows it; without one
/// the meeting page links to the subscribe page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_agenda_pages_never_show_the_feed_token() {
    let base = "https://convenor.example.org";
    let served = serve(base, Some(TOKEN)).await;
    let c = client();
    let form = |title: &str, email: &str| good(title, "p1", email);
    let mut honeypot = form("Spam", "bot@example.org");
    honeypot.retain(|(k, _)| *k != "website");
    honeypot.push(("website", "http://spam.example".into()));
    let proposals = served.url("/meetings/m1/proposals");
    let mut answers = Vec::new();
    for req in [
        c.get(served.url("/meetings/m1")),
        c.get(served.url("/meetings/m2")),
        c.get(served.url("/meetings/nope")),
        c.post(&proposals)
            .form(&form("Bus lanes", "ada@camden.example")),
        c.post(&proposals).form(&form("X", "not-an-address")),
        c.post(&proposals).form(&honeypot),
        c.post(&proposals)
            .header(header::ORIGIN, "https://evil.example")
            .form(&form("X", "x@example.org")),
        c.post(&proposals)
            .header(header::CONTENT_TYPE, "application/json")
            .body("{}"),
        c.post(served.url("/meetings/m2/proposals"))
            .form(&form("X", "x@example.org")),
        c.post(served.url("/meetings/nope/proposals"))
            .form(&form("X", "x@example.org")),
        c.get(served.url("/meetings/m1?proposed=1")),
        c.get(served.url(&format!("/leads/{}/", "ab".repeat(32)))),
        c.get(served.url("/leads/short/")),
    ] {
        answers.push(read(req.send().await.expect("request")).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| s.as_u16()).collect();
    assert_eq!(
        statuses,
        [
            200, 200, 404, 303, 422, 400, 403, 415, 409, 404, 200, 404, 404
        ]
    );
    for (status, headers, body) in &answers {
        assert!(
            !body.contains(TOKEN),
            "{status}: the token is on a public page:\n{body}"
        );
        for (name, value) in headers {
            assert!(
                !value
                    .as_bytes()
                    .windows(TOKEN.len())
                    .any(|w| w == TOKEN.as_bytes()),
                "{status}: the token is in {name}"
            );
        }
    }
    let page = &answers[0].2;
    assert!(
        page.contains("Network meeting") && page.contains("id=\"propose\""),
        "{page}"
    );
    assert!(!page.contains("id=\"subscribe\""), "{page}");
    assert!(answers[10].2.contains("id=\"thanks\""), "{}", answers[10].2);

    // Without a token the feeds are public, and the page links to their subscribe page.
    let open = serve(base, None).await;
    let (status, _, page) = read(c.get(open.url("/meetings/m1")).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK);
    let link = page.find("id=\"subscribe\"").expect("the subscribe link");
    let href = &page[page[..link].rfind("href=").expect("href")..link];
    assert!(href.contains("convenor.example.org"), "{href}");
}

/// Browsers send the origin serialised (host lowercased, no default port): posts from the
/// site's own pages pass whatever case or port `base_url` is written with; others do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_origin_posts_pass_with_base_urls_in_capitals_or_with_the_default_port() {
    let c = client();
    for (base, browser) in [
        (
            "https://Convenor.example.org",
            "https://convenor.example.org",
        ),
        ("https://x.org:443", "https://x.org"),
        (
            "http://Convenor.example.org:80/lednet",
            "http://convenor.example.org",
        ),
    ] {
        let served = serve(base, None).await;
        let post = |url: String| {
            c.post(url)
                .header(header::ORIGIN, browser)
                .header("sec-fetch-site", "same-origin")
        };
        let (status, _, body) = read(
            post(served.url("/meetings/m1/proposals"))
                .form(&good("Bus lanes", "p1", "ada@camden.example"))
                .send()
                .await
                .expect("propose"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{base}: {body}");
        let token = served.lead_token();
        let lead = served.url(&format!("/leads/{token}/"));
        let html = get_text(&c, &lead).await;
        let csrf = csrf(&html, 1);
        let (status, _, body) = read(
            post(format!("{lead}proposals/1/accept"))
                .form(&[("csrf", &csrf)])
                .send()
                .await
                .expect("accept"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{base}: {body}");
        assert_eq!(served.proposals()[0].status.as_str(), "accepted");
        // Another origin, and the same host under another scheme or port, are still refused.
        for other in [
            "https://evil.example",
            "http://x.org",
            "https://x.org:8443",
            "null",
        ] {
            let res = c
                .post(served.url("/meetings/m1/proposals"))
                .header(header::ORIGIN, other)
                .form(&good("Other", "p1", "o@example.org"))
                .send()
                .await
                .expect("post");
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{base} vs {other}");
        }
        assert_eq!(served.proposals().len(), 1);
    }
}

/// POST/redirect/GET: a stored proposal is answered 303 to the meeting page, which confirms
/// it; posting the same form again (a reload, a double click) stores and confirms it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_is_answered_with_a_redirect_and_a_resubmission_is_stored_once() {
    let served = serve("https://convenor.example.org", None).await;
    let c = client();
    let url = served.url("/meetings/m1/proposals");
    let form = good("Bus lanes", "p1", "ada@camden.example");
    let (status, headers, _) = read(c.post(&url).form(&form).send().await.expect("post")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let to = location(&headers);
    // Path-absolute: on the origin the form was posted to.
    assert!(to.starts_with('/') && !to.starts_with("//"), "{to}");
    assert_eq!(to, "/meetings/m1?proposed=1");
    let (status, _, page) = read(c.get(served.url(&to)).send().await.expect("get")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"thanks\"") && page.contains("proposal #1"),
        "{page}"
    );
    assert_eq!(served.proposals().len(), 1);

    // The same form again: no second proposal, the same confirmation.
    let (status, headers, _) = read(c.post(&url).form(&form).send().await.expect("again")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), to);
    assert_eq!(served.proposals().len(), 1);

    // A double click: two posts of one new form at once store it once.
    let other = good("Cycle hangars", "p1", "ada@camden.example");
    let (a, b) = tokio::join!(
        c.post(&url).form(&other).send(),
        c.post(&url).form(&other).send()
    );
    let (a, b) = (read(a.expect("a")).await, read(b.expect("b")).await);
    assert_eq!((a.0, b.0), (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER));
    assert_eq!(location(&a.1), location(&b.1));
    let titles: Vec<String> = served.proposals().into_iter().map(|p| p.title).collect();
    assert_eq!(titles, ["Bus lanes", "Cycle hangars"]);

    // Another address with the same title is another proposal.
    let (status, headers, _) = read(
        c.post(&url)
            .form(&good("Bus lanes", "p1", "bo@hackney.example"))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/meetings/m1?proposed=3");

    // A number that is not one of this meeting's proposals confirms nothing.
    for path in [
        "/meetings/m1?proposed=99",
        "/meetings/m1?proposed=x",
        "/meetings/m2?proposed=1",
    ] {
        let page = get_text(&c, served.url(path)).await;
        assert!(!page.contains("id=\"thanks\""), "{path}: {page}");
    }

    // A wrong field is still answered with the form refilled, not a redirect.
    let bad = good("Bad address", "p1", "not-an-address");
    let (status, _, page) = read(c.post(&url).form(&bad).send().await.expect("post")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("email: is not a mail address") && page.contains("value=\"Bad address\""),
        "{page}"
    );
    assert_eq!(served.proposals().len(), 3);
}

/// Behind a proxy that serves convenor under `/lednet` (and strips it), every form and redirect
/// of the agenda pages stays under `/lednet`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_base_url_path_forms_and_redirects_stay_under_it() {
    let served = serve("https://convenor.example.org/lednet", None).await;
    let c = client();
    let page = get_text(&c, served.url("/meetings/m1")).await;
    assert_eq!(actions(&page), ["/lednet/meetings/m1/proposals"], "{page}");
    let (status, headers, _) = read(
        c.post(served.url("/meetings/m1/proposals"))
            .form(&good("Bus lanes", "p1", "ada@camden.example"))
            .send()
            .await
            .expect("propose"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/lednet/meetings/m1?proposed=1");

    let token = served.lead_token();
    let lead = served.url(&format!("/leads/{token}/"));
    let html = get_text(&c, &lead).await;
    let forms = actions(&html);
    assert_eq!(forms.len(), 2, "{html}");
    for action in &forms {
        assert!(
            action.starts_with(&format!("/lednet/leads/{token}/proposals/1/")),
            "{action}"
        );
    }
    let (status, headers, _) = read(
        c.post(format!("{lead}proposals/1/decline"))
            .form(&[("csrf", csrf(&html, 1))])
            .send()
            .await
            .expect("decline"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), format!("/lednet/leads/{token}/"));
    assert_eq!(served.proposals()[0].status.as_str(), "declined");
}

/// A lead link works for its lifetime and not after: issued a lifetime less a minute ago it
/// opens the page; issued a lifetime and a second ago it gets the page saying it expired and
/// where a fresh link comes from (410, never a 500), and a POST with it, with everything else
/// right (same origin, the CSRF token its page would have had), is refused the same way and
/// changes nothing. An unknown token is still 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lead_link_is_refused_with_a_page_saying_so_and_its_posts_change_nothing() {
    let served = serve("https://convenor.example.org", None).await;
    let c = client();
    let (status, _, _) = read(
        c.post(served.url("/meetings/m1/proposals"))
            .form(&good("Bus lanes", "p1", "ada@camden.example"))
            .send()
            .await
            .expect("propose"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(served.lifetime, LeadLinkLifetime::DEFAULT);
    let now = Timestamp::now();
    let lifetime = served.lifetime.duration();
    let usable = served.lead_token_issued_at(now - (lifetime - SignedDuration::from_mins(1)));
    let expired = served.lead_token_issued_at(now - (lifetime + SignedDuration::from_secs(1)));

    // The usable link: the page, with until when it works and the CSRF token computed here.
    let (status, _, page) = read(
        c.get(served.url(&format!("/leads/{usable}/")))
            .send()
            .await
            .expect("usable"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Bus lanes") && page.contains("This link works until"),
        "{page}"
    );
    assert_eq!(csrf(&page, 1), served.csrf_for(&usable, 1));

    // The expired link: 410 with what happened and what to do, and nothing of the page.
    let lead = served.url(&format!("/leads/{expired}/"));
    let (status, _, refusal) = read(c.get(&lead).send().await.expect("expired")).await;
    assert_eq!(status, StatusCode::GONE, "{refusal}");
    for said in [
        "This lead link expired on",
        "it was sent on",
        "The next mail about a new proposal brings you a fresh link",
        "ask the LEDNet team for one: Team <team@example.org>",
    ] {
        assert!(refusal.contains(said), "`{said}` not in: {refusal}");
    }
    assert!(!refusal.contains("Bus lanes"), "{refusal}");

    // Its posts, with the CSRF token its page would have had, are refused the same way.
    let posted = served.csrf_for(&expired, 1);
    for action in ["accept", "decline"] {
        let (status, _, body) = read(
            c.post(format!("{lead}proposals/1/{action}"))
                .header(header::ORIGIN, "https://convenor.example.org")
                .form(&[("csrf", &posted)])
                .send()
                .await
                .expect("post"),
        )
        .await;
        assert_eq!(status, StatusCode::GONE, "{action}: {body}");
        assert!(body.contains("This lead link expired on"), "{body}");
    }
    assert_eq!(served.proposals()[0].status.as_str(), "proposed");
    assert_eq!(served.actions(1), ["proposed"]);

    // An unknown token of the right shape is still "no such page".
    let (status, _, body) = read(
        c.get(served.url(&format!("/leads/{}/", "ab".repeat(32))))
            .send()
            .await
            .expect("unknown"),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no such page\n")
    );

    // The usable link's post goes through: the refusals above were the expiry's.
    let (status, _, _) = read(
        c.post(served.url(&format!("/leads/{usable}/proposals/1/accept")))
            .header(header::ORIGIN, "https://convenor.example.org")
            .form(&[("csrf", served.csrf_for(&usable, 1))])
            .send()
            .await
            .expect("accept"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(served.proposals()[0].status.as_str(), "accepted");
    assert_eq!(served.actions(1), ["proposed", "accepted"]);
}

/// The expired-link page says when that link expired and was sent, from the token's stored
/// expiry and issue, not the lifetime in force now: a link issued with a lifetime of 2 hours
/// (an earlier config) is refused an hour after it expired, while the config says 30 days, and
/// the page quotes its own times, never "30 days".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_page_says_when_that_link_expired_not_the_lifetime_in_force() {
    let served = serve("https://convenor.example.org", None).await;
    assert_eq!(served.lifetime, LeadLinkLifetime::DEFAULT);
    let short = LeadLinkLifetime::new(SignedDuration::from_hours(2)).expect("a lifetime");
    let issued = Timestamp::now() - SignedDuration::from_hours(3);
    let token = served.lead_token_with(short, issued);
    assert_eq!(token.expires, issued + SignedDuration::from_hours(2));
    let (status, _, refusal) = read(
        client()
            .get(served.url(&format!("/leads/{}/", token.raw)))
            .send()
            .await
            .expect("expired"),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{refusal}");
    let expired_on = convenor::agenda::local_time(&served.config, token.expires);
    let sent_on = convenor::agenda::local_time(&served.config, issued);
    for said in [
        format!("This lead link expired on {expired_on}:"),
        format!("it was sent on {sent_on} and worked until then"),
    ] {
        assert!(refusal.contains(&said), "`{said}` not in: {refusal}");
    }
    assert!(
        !refusal.contains("30 days") && !refusal.contains(&served.lifetime.to_string()),
        "{refusal}"
    );
}

/// The per-client limit: a client posting under made-up addresses (the flood that closed the
/// form for everyone) is refused after `PER_CLIENT` proposals an hour, while another client,
/// named by the loopback proxy's `X-Forwarded-For`, still proposes. Only the last entry of
/// `X-Forwarded-For` names the client: entries a client writes before it change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_over_its_limit_is_refused_while_another_client_still_proposes() {
    use convenor::http::agenda_pages::PER_CLIENT;
    let served = serve("https://convenor.example.org", None).await;
    let c = client();
    let url = served.url("/meetings/m1/proposals");
    let post = |from: &'static str, title: String, email: String| {
        c.post(&url)
            .header("x-forwarded-for", from)
            .form(&good(&title, "p1", &email))
            .send()
    };
    for i in 0..PER_CLIENT {
        let (status, _, body) = read(
            post(
                "203.0.113.7",
                format!("Spam {i}"),
                format!("bot{i}@spam.example"),
            )
            .await
            .expect("post"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{i}: {body}");
    }
    for from in ["203.0.113.7", "203.0.113.8, 203.0.113.7"] {
        let (status, headers, body) = read(
            post(from, "One more".into(), "fresh@spam.example".into())
                .await
                .expect("post"),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{from}: {body}");
        assert!(body.contains("from your network address"), "{body}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
    assert_eq!(served.proposals().len(), PER_CLIENT);

    // Another client behind the same proxy, and the proxy's own address, still propose.
    for (from, email) in [
        ("203.0.113.8", "ada@camden.example"),
        ("2001:db8::1", "bo@hackney.example"),
    ] {
        let (status, _, body) = read(
            post(from, "Bus lanes".into(), email.into())
                .await
                .expect("post"),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{from}: {body}");
    }
    let (status, _, body) = read(
        c.post(&url)
            .form(&good("Cycle hangars", "p1", "cy@islington.example"))
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(served.proposals().len(), PER_CLIENT + 3);
}

/// The three HTML pages (subscribe, meeting, lead) forbid framing and sniffing and load
/// nothing but their inline style; plain-text errors are `nosniff`; feed responses carry none
/// of these headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_pages_forbid_framing_and_sniffing_and_feeds_are_left_alone() {
    let served = serve("https://convenor.example.org", None).await;
    let c = client();
    let token = served.lead_token();
    let (status, _, _) = read(
        c.post(served.url("/meetings/m1/proposals"))
            .form(&good("Bus lanes", "p1", "ada@camden.example"))
            .send()
            .await
            .expect("propose"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let invalid =
        c.post(served.url("/meetings/m1/proposals"))
            .form(&good("X", "p1", "not-an-address"));
    for req in [
        c.get(served.url("/")),
        c.get(served.url("/meetings/m1")),
        c.get(served.url(&format!("/leads/{token}/"))),
        invalid,
    ] {
        let (status, headers, body) = read(req.send().await.expect("page")).await;
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .expect("type")
                .starts_with("text/html"),
            "{status}: {body}"
        );
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            "{status}"
        );
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{status}");
        assert_eq!(
            headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{status}"
        );
        // What the policy allows is all the pages use: no script, no file they load.
        for fetch in ["<script", "<img", "<link", "<iframe", "src="] {
            assert!(!body.contains(fetch), "{fetch} on a page: {body}");
        }
    }
    let lead = c
        .get(served.url(&format!("/leads/{token}/")))
        .send()
        .await
        .expect("lead");
    assert_eq!(lead.headers()[header::REFERRER_POLICY], "same-origin");

    for path in ["/meetings/nope", "/nope", "/leads/short/"] {
        let res = c.get(served.url(path)).send().await.expect("error");
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            res.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{path}"
        );
    }

    let feed = c
        .get(served.url("/calendar.ics"))
        .send()
        .await
        .expect("feed");
    assert_eq!(feed.status(), StatusCode::OK);
    for name in [
        header::CONTENT_SECURITY_POLICY,
        header::X_FRAME_OPTIONS,
        header::X_CONTENT_TYPE_OPTIONS,
    ] {
        assert!(!feed.headers().contains_key(&name), "{name} on a feed");
    }
}

/// A proposal that waits for the agenda store's write lock (held by another process: the CLI,
/// a backup) waits off the async workers. With one worker, the feed is served meanwhile, and
/// the proposal is stored once the lock is free. Before, the waiting handler held the only
/// worker for up to SQLite's busy timeout (10 s): no feed was served, and the proposal failed
/// (500) because the lock could only be let go after the feed's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_proposal_waiting_for_the_store_lock_does_not_hold_up_the_feed() {
    let served = serve("https://convenor.example.org", None).await;
    let other = rusqlite::Connection::open(
        served
            ._dir
            .path()
            .join(convenor::agenda::store::AGENDA_FILE),
    )
    .expect("open the agenda file");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock");
    let c = client();
    let post = tokio::spawn({
        let (c, url) = (c.clone(), served.url("/meetings/m1/proposals"));
        async move {
            let form = good("Bus lanes", "p1", "ada@camden.example");
            c.post(&url).form(&form).send().await.map(|r| r.status())
        }
    });
    // The handler is in the store (it holds the store's mutex while SQLite waits for the lock).
    let store = served.store.clone();
    tokio::task::spawn_blocking(move || {
        crate::daemon::harness::wait_for(
            "the proposal waiting in the store",
            || store.try_lock().is_err(),
            String::new,
        );
    })
    .await
    .expect("wait");
    let feed = c
        .get(served.url("/calendar.ics"))
        .send()
        .await
        .expect("the feed");
    assert_eq!(feed.status(), StatusCode::OK);
    assert!(!post.is_finished(), "the proposal still waits for the lock");
    other.execute_batch("ROLLBACK").expect("let go");
    let status = post.await.expect("join").expect("post");
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "stored once the lock was free"
    );
    assert_eq!(served.proposals().len(), 1);
}
