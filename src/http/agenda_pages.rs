//! The agenda pages: the meeting page with its proposal form, and each lead's private page.
//!
//! Routes (outside any feed token: the meeting page is linked from every mail):
//! - `GET /meetings/<id>`: the meeting, its priorities and leads, the agreed agenda, and while
//!   the call is open ([`crate::agenda::model::call_open`]) the proposal form; with
//!   `?proposed=<n>` ([`PROPOSED`]) a confirmation that proposal n of this meeting is stored.
//!   The page is public, so it never shows the feed token: with `[http] feed_token` set it has
//!   no subscribe link.
//! - `POST /meetings/<id>/proposals`: a proposal, stored, then 303 See Other to
//!   `/meetings/<id>?proposed=<n>` (POST/redirect/GET: reloading the confirmation never posts
//!   again). The same proposal posted again while undecided (same address, meeting and title)
//!   is stored once and redirected to the same confirmation. Refused with a page saying why,
//!   storing nothing: a cross-site post (403), not a form (415), over [`MAX_BODY`] (413),
//!   malformed (400), the honeypot filled (400), the call closed (409), a field wrong (422,
//!   each named, the form refilled), too many proposals in the last hour (429) from one
//!   address ([`PER_ADDRESS`]), from one client ([`PER_CLIENT`], the client as
//!   [`super::client`] finds it: the TCP peer, or the last `X-Forwarded-For` entry when the
//!   peer is a loopback proxy) or for this meeting from everyone ([`PER_MEETING`]).
//! - `GET /leads/<token>/`: that priority's proposals with accept and decline buttons, and until
//!   when the link works. An unknown token is 404; a revoked one (or one issued to a lead since
//!   replaced) 410; an expired one 410 with a page saying so, when (its stored expiry, not the
//!   lifetime in force now), and where a fresh link comes from (the next proposal mail, or the
//!   team).
//! - `POST /leads/<token>/proposals/<n>/accept|decline`: the token checked as for the page
//!   first (an expired or revoked one is refused the same way and changes nothing), then a
//!   same-origin check (Origin and Sec-Fetch-Site against `[network] base_url`) and a CSRF token
//!   bound to the lead token and the proposal; the decision is recorded with the lead's name and
//!   address, then 303 to the page.
//!
//! Every HTML page carries [`super::CONTENT_SECURITY_POLICY`], `X-Frame-Options: DENY` and
//! `nosniff`; plain-text answers `nosniff`.
//!
//! Form actions and redirects start with the path of `base_url` ([`base_path`]), so behind a
//! proxy that serves convenor under `https://host/lednet` they stay under `/lednet`.
//!
//! After a decision the pages call the change hook ([`AgendaPages::new`]), with which the daemon
//! recompiles the agenda, raises SEQUENCE, re-renders the feeds and wakes the scheduler.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Extension, Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use jiff::{SignedDuration, Timestamp};
use minijinja::{Environment, context, value::Serde};
use serde::Serialize;

use super::{
    FeedState,
    client::{ClientKey, ClientLimiter, Peer},
};
use crate::{
    agenda::{
        self, AgendaStore, Proposal, ProposalForm, Status,
        model::{self, FieldError, FormRefusal},
        store::TokenRow,
        token::{self, Standing},
    },
    model::{Config, Meeting, MeetingId, PriorityId},
};

/// The largest form body accepted, in bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Proposals one address may make per [`RATE_WINDOW`].
pub const PER_ADDRESS: u32 = 5;
/// Proposals one client (an IPv4 address or an IPv6 /64, see [`super::client`]) may make per
/// [`RATE_WINDOW`], whatever addresses it types: a script cannot make up addresses to get past
/// [`PER_ADDRESS`]. Ten, not five: members behind one office or campus NAT share an IPv4
/// address, and ten fake proposals an hour from one machine mail few leads.
pub const PER_CLIENT: usize = 10;
/// Proposals everyone together may make for one meeting per [`RATE_WINDOW`]: the last bound on
/// the mail a flood sends to leads, from clients with many addresses. Per meeting, so a flood
/// against one meeting's form does not close the others' (one shared bucket let one script
/// close every form for an hour); with [`PER_CLIENT`] it takes ten clients to fill it, and a
/// meeting rarely gets a hundred genuine proposals in its whole call, let alone in an hour.
pub const PER_MEETING: u32 = 100;
/// The rate limits' window.
pub const RATE_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// The meeting page's query parameter naming the proposal just stored (`?proposed=<n>`).
pub const PROPOSED: &str = "proposed";

const MEETING_PAGE: &str = include_str!("agenda_meeting.html");
const LEAD_PAGE: &str = include_str!("agenda_lead.html");

/// What the agenda pages share: the served config, the agenda store, the change hook.
#[derive(Clone)]
pub struct AgendaPages {
    feeds: FeedState,
    store: Arc<Mutex<AgendaStore>>,
    changed: Arc<dyn Fn() + Send + Sync>,
    notify: Option<agenda::notify::Notifier>,
    /// Proposals stored per client in the last [`RATE_WINDOW`]; locked only under `store`'s
    /// lock.
    clients: Arc<Mutex<ClientLimiter>>,
}

impl std::fmt::Debug for AgendaPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgendaPages").finish_non_exhaustive()
    }
}

impl AgendaPages {
    /// Pages over `store`, reading the config from `feeds`; `changed` runs after every change of
    /// the agenda. With `notify`, each new proposal is mailed to its lead
    /// ([`crate::agenda::notify`], with the daemon's checked templates and transport).
    pub fn new(
        feeds: FeedState,
        store: Arc<Mutex<AgendaStore>>,
        changed: Arc<dyn Fn() + Send + Sync>,
        notify: Option<agenda::notify::Notifier>,
    ) -> Self {
        Self {
            feeds,
            store,
            changed,
            notify,
            clients: Arc::new(Mutex::new(ClientLimiter::new(RATE_WINDOW))),
        }
    }

    /// Runs `f` on the agenda store, off the async workers: a write waits for another writer
    /// (the CLI, a backup) up to SQLite's busy timeout, and the feeds must not wait with it.
    fn with_store<T>(&self, f: impl FnOnce(&mut AgendaStore) -> T) -> T {
        crate::sqlite_file::off_the_async_workers(|| {
            f(&mut self.store.lock().unwrap_or_else(PoisonError::into_inner))
        })
    }
}

/// The agenda routes (see the module docs).
pub fn routes(pages: AgendaPages) -> Router {
    Router::new()
        .route("/meetings/{id}", get(meeting_page))
        .route("/meetings/{id}/proposals", post(propose))
        .route("/leads/{token}/", get(lead_page))
        .route("/leads/{token}/proposals/{n}/{action}", post(decide))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(pages)
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut res = (status, format!("{}\n", text.into())).into_response();
    super::no_sniff(&mut res);
    res
}

fn failure(e: impl std::fmt::Display) -> Response {
    tracing::error!("agenda page: {e}");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "something went wrong on our side; nothing was changed",
    )
}

/// The path of a base URL without its trailing slash (`/lednet` for
/// `https://host/lednet`, empty for `https://host`): every link and redirect of these pages
/// starts with it, so behind a proxy that mounts convenor under a path they stay inside it.
/// The path comes percent-encoded from the URL parser, so it is safe in HTML and in `Location`.
pub fn base_path(base_url: &str) -> String {
    url::Url::parse(base_url)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// Refuses a request another site made: an `Origin` whose origin (scheme, host and port, as the
/// URL standard serialises them: host lowercased, a default port dropped) is not the base
/// URL's, or a `Sec-Fetch-Site` other than `same-origin` or `none`. A request with neither
/// header (an old browser, curl) passes to the CSRF check.
pub fn same_origin(base_url: &str, headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(o) = headers.get(header::ORIGIN) {
        let ours = url::Url::parse(base_url).map(|u| u.origin());
        let theirs = o
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .map(|u| u.origin());
        // Opaque origins (`null`, or a URL that does not parse) are never equal to anything.
        match (ours, theirs) {
            (Ok(ours), Some(theirs)) if ours.is_tuple() && ours == theirs => {}
            _ => return Err("this form was posted from another site"),
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err("this form was posted from another site");
    }
    Ok(())
}

/// A 303 See Other to `location` (a path under [`base_path`]), or a failure when it is not a
/// valid header value.
fn see_other(location: &str) -> Response {
    match header::HeaderValue::try_from(location) {
        Ok(value) => (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response(),
        Err(e) => failure(format!("redirect to `{location}`: {e}")),
    }
}

/// Parses an `application/x-www-form-urlencoded` body; a field posted twice is malformed.
fn parse_form(headers: &HeaderMap, body: &Bytes) -> Result<ProposalForm, (StatusCode, String)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    }) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the form as application/x-www-form-urlencoded".into(),
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed form data: {e}")))?;
    let mut fields = BTreeMap::new();
    for (k, v) in pairs {
        if fields.insert(k.clone(), v).is_some() {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("malformed form data: field `{k}` is posted twice"),
            ));
        }
    }
    Ok(ProposalForm { fields })
}

#[derive(Serialize)]
struct PriorityView {
    id: String,
    name: String,
    lead: String,
}

#[derive(Serialize)]
struct KeptView {
    id: i64,
    title: String,
    priority: String,
    status: &'static str,
}

/// What the meeting page shows besides the meeting.
#[derive(Default)]
struct FormState {
    status: Option<String>,
    errors: Vec<FieldError>,
    values: BTreeMap<String, String>,
    thanks: Option<String>,
}

fn render_meeting(
    config: &Config,
    meeting: &Meeting,
    proposals: &[Proposal],
    now: Timestamp,
    form: FormState,
) -> Result<String, minijinja::Error> {
    let book = model::compile(config, proposals);
    let agenda = book.get(&meeting.id);
    // The subscribe link carries the feed token when one is set, and this page is public: it is
    // shown only when the feeds are public too.
    let subscribe = config
        .http
        .feed_token
        .is_none()
        .then(|| crate::mail::context::links(config, meeting).subscribe);
    let (deadline, _) = crate::mail::context::deadlines(config, meeting);
    let priorities: Vec<PriorityView> = config
        .priorities_of(meeting)
        .map(|p| PriorityView {
            id: p.id.to_string(),
            name: p.name.to_string(),
            lead: match &p.lead.organisation {
                Some(o) => format!("{} ({o})", p.lead.name),
                None => p.lead.name.to_string(),
            },
        })
        .collect();
    let kept: Vec<KeptView> = proposals
        .iter()
        .filter(|p| meeting.is_cancelled() && p.meeting == meeting.id.as_str())
        .map(|p| KeptView {
            id: p.id,
            title: p.title.clone(),
            priority: p.priority.clone(),
            status: p.status.as_str(),
        })
        .collect();
    let tz = &config.network.time_zone;
    let when = meeting
        .starts_at(tz)
        .to_zoned_datetime(tz.clone())
        .strftime("%A %-d %B %Y, %H:%M %Z")
        .to_string();
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("meeting", MEETING_PAGE)?;
    env.get_template("meeting")?.render(context! {
        network => config.network.short_name.as_str(),
        network_name => config.network.name.as_str(),
        meeting => context! {
            id => meeting.id.as_str(),
            title => meeting.title.as_str(),
            when => when,
            end => meeting.end.strftime("%H:%M").to_string(),
            location => meeting.location.as_ref().map(|l| l.to_string()),
            join_url => meeting.join_url.as_ref().map(|u| u.to_string()),
            cancelled => meeting.is_cancelled(),
        },
        priorities => Serde(priorities),
        agenda => Serde(agenda),
        kept => Serde(kept),
        open => model::call_open(config, meeting, now),
        deadline => deadline.date,
        subscribe => subscribe,
        base_path => base_path(config.network.base_url.as_str()),
        form_status => form.status,
        errors => Serde(form.errors),
        values => Serde(form.values),
        thanks => form.thanks,
        honeypot => model::HONEYPOT,
        min_minutes => *model::MINUTES.start(),
        max_minutes => *model::MINUTES.end(),
    })
}

fn find_meeting<'a>(config: &'a Config, id: &str) -> Option<&'a Meeting> {
    MeetingId::parse(id).ok().and_then(|m| config.meeting(&m))
}

fn page(status: StatusCode, html: Result<String, minijinja::Error>) -> Response {
    match html {
        Ok(h) => {
            let mut res = (status, Html(h)).into_response();
            super::html_page_headers(&mut res);
            res
        }
        Err(e) => failure(e),
    }
}

async fn meeting_page(
    State(pages): State<AgendaPages>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let feeds = pages.feeds.current();
    let config = &feeds.config;
    let Some(meeting) = find_meeting(config, &id) else {
        return plain(StatusCode::NOT_FOUND, format!("no meeting `{id}`"));
    };
    let proposals = match pages.with_store(|s| s.proposals(Some(meeting.id.as_str()))) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    // `?proposed=<n>`, where the proposal form redirects to: the confirmation, when proposal n
    // is one of this meeting's (any other query is ignored).
    let proposed = query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(&q).ok())
        .and_then(|pairs| {
            pairs
                .into_iter()
                .find(|(k, _)| k == PROPOSED)
                .and_then(|(_, v)| v.parse::<i64>().ok())
        })
        .filter(|n| proposals.iter().any(|p| p.id == *n));
    page(
        StatusCode::OK,
        render_meeting(
            config,
            meeting,
            &proposals,
            Timestamp::now(),
            FormState {
                thanks: proposed.map(thanks),
                ..FormState::default()
            },
        ),
    )
}

async fn propose(
    State(pages): State<AgendaPages>,
    Path(id): Path<String>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let feeds = pages.feeds.current();
    let config = &feeds.config;
    let now = Timestamp::now();
    // A router served by something other than `server::serve` has no peer: all its requests
    // are then one client.
    let client = ClientKey::of(peer.map_or(
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        |Extension(Peer(p))| {
            super::client::client_ip(p.ip(), &headers, &config.http.trusted_proxies)
        },
    ));
    let Some(meeting) = find_meeting(config, &id) else {
        return plain(StatusCode::NOT_FOUND, format!("no meeting `{id}`"));
    };
    if let Err(why) = same_origin(config.network.base_url.as_str(), &headers) {
        return plain(StatusCode::FORBIDDEN, why);
    }
    let form = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err((status, why)) => return plain(status, why),
    };
    let respond = |status: StatusCode, state: FormState| {
        let proposals = match pages.with_store(|s| s.proposals(Some(meeting.id.as_str()))) {
            Ok(p) => p,
            Err(e) => return failure(e),
        };
        page(
            status,
            render_meeting(config, meeting, &proposals, now, state),
        )
    };
    let refill = |status: Option<String>, errors: Vec<FieldError>| FormState {
        status,
        errors,
        values: form.fields.clone(),
        thanks: None,
    };
    if !model::call_open(config, meeting, now) {
        return respond(
            StatusCode::CONFLICT,
            refill(
                Some("The call for items of this meeting is closed; nothing was stored.".into()),
                Vec::new(),
            ),
        );
    }
    let new = match model::validate(config, meeting, &form) {
        Ok(p) => p,
        Err(FormRefusal::Honeypot) => {
            return plain(StatusCode::BAD_REQUEST, "refused: the form looks automated");
        }
        Err(FormRefusal::Invalid(errors)) => {
            return respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                refill(
                    Some("Please correct the fields below; nothing was stored yet.".into()),
                    errors,
                ),
            );
        }
    };
    let since = now.checked_sub(RATE_WINDOW).unwrap_or(now);
    // Looked up and stored under one lock, so two posts of one form (a double click) store it
    // once.
    let stored = pages.with_store(|store| {
        let waiting = store.proposals(Some(meeting.id.as_str())).map(|kept| {
            kept.into_iter()
                .find(|p| is_resubmission(p, &new))
                .map(|p| p.id)
        });
        let mut clients = pages.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let from_client = clients.count(client, now);
        match (
            waiting,
            store.counts_since(&new.email, meeting.id.as_str(), since),
        ) {
            (Err(e), _) | (_, Err(e)) => Stored::Failed(e),
            (Ok(Some(pid)), _) => Stored::Again(pid),
            (Ok(None), Ok((one, _))) if one >= PER_ADDRESS => Stored::Limited(format!(
                "{PER_ADDRESS} proposals from {} in the last hour is the limit; please try later or write to the team",
                new.email
            )),
            (Ok(None), Ok(_)) if from_client >= PER_CLIENT => {
                tracing::info!(%client, meeting = %meeting.id, "proposal refused: the per-client limit");
                Stored::Limited(format!(
                    "{PER_CLIENT} proposals from your network address in the last hour is the limit; please try later or write to the team"
                ))
            }
            (Ok(None), Ok((_, all))) if all >= PER_MEETING => {
                tracing::warn!(meeting = %meeting.id, "proposal refused: the per-meeting limit");
                Stored::Limited(
                    "too many proposals for this meeting in the last hour; please try later or write to the team"
                        .to_owned(),
                )
            }
            (Ok(None), Ok(_)) => {
                let stored = store.add(
                    &new,
                    &format!("web form ({})", new.email),
                    pages.notify.is_some(),
                    now,
                );
                if stored.is_ok() {
                    clients.record(client, now);
                }
                stored.map_or_else(Stored::Failed, Stored::New)
            }
        }
    });
    let pid = match stored {
        Stored::Limited(why) => {
            return respond(
                StatusCode::TOO_MANY_REQUESTS,
                refill(Some(format!("{why}; nothing was stored.")), Vec::new()),
            );
        }
        Stored::Failed(e) => return failure(e),
        Stored::Again(pid) => {
            tracing::info!(proposal = pid, meeting = %meeting.id, "proposal posted again; kept once");
            pid
        }
        Stored::New(pid) => {
            tracing::info!(proposal = pid, meeting = %meeting.id, priority = %new.priority, "proposal stored");
            if let Some(notifier) = pages.notify.clone() {
                let store = pages.store.clone();
                tokio::spawn(agenda::notify::send_with_retries(notifier, store, pid));
            }
            pid
        }
    };
    // POST/redirect/GET: a reload of the page the browser lands on reads, it never posts again.
    see_other(&format!(
        "{}/meetings/{}?{PROPOSED}={pid}",
        base_path(config.network.base_url.as_str()),
        meeting.id
    ))
}

/// What became of a valid proposal.
enum Stored {
    /// Stored under this number.
    New(i64),
    /// The same proposal was already stored under this number (see [`is_resubmission`]).
    Again(i64),
    /// Refused by a rate limit, for this reason.
    Limited(String),
    /// The store failed.
    Failed(agenda::AgendaError),
}

/// Whether `new` is `kept` posted again: the same address, meeting and title, while `kept` is
/// still undecided. A form sent twice (a double click, the back button and Propose again) then
/// stores one proposal and mails its lead once; a member who means to change a proposal asks
/// the team or its lead.
fn is_resubmission(kept: &Proposal, new: &agenda::NewProposal) -> bool {
    kept.status == Status::Proposed
        && kept.meeting == new.meeting.as_str()
        && kept.email == new.email
        && kept.title == new.title
}

/// The confirmation shown on the meeting page after a proposal was stored (see [`PROPOSED`]):
/// only the number and what happens next, so a guessed number shows nothing of a proposal.
fn thanks(pid: i64) -> String {
    format!(
        "Thank you: your proposal #{pid} is stored as proposed. The lead of the priority you \
         chose will accept or decline it; once accepted it appears in the agenda on this page, \
         in the calendar entry and in the agenda mail."
    )
}

/// The page an expired lead link gets (410): since when (the token's stored expiry and issue,
/// never the lifetime in force now, which may have changed since), why, and where a fresh link
/// comes from. It names nothing the link opened.
fn expired(config: &Config, row: &TokenRow) -> Response {
    plain(
        StatusCode::GONE,
        format!(
            "This lead link expired on {}: it was sent on {} and worked until then, so it no \
             longer opens the page or records decisions. The next mail about a new proposal \
             brings you a fresh link; to decide before then, ask the {} team for one: {}",
            agenda::local_time(config, row.expires),
            agenda::local_time(config, row.issued),
            config.network.short_name,
            config.network.contact,
        ),
    )
}

/// The lead token of a request, checked at `now`: its row, or the response to give.
fn lead(
    pages: &AgendaPages,
    config: &Config,
    raw: &str,
    now: Timestamp,
) -> Result<TokenRow, Box<Response>> {
    let gone = || {
        plain(
            StatusCode::GONE,
            "this lead link is no longer valid; ask the team for a new one",
        )
    };
    if !token::well_formed(raw) {
        return Err(Box::new(plain(StatusCode::NOT_FOUND, "no such page")));
    }
    let row = match pages.with_store(|s| s.token(&token::hash(raw))) {
        Ok(Some(row)) => row,
        Ok(None) => return Err(Box::new(plain(StatusCode::NOT_FOUND, "no such page"))),
        Err(e) => return Err(Box::new(failure(e))),
    };
    let current = PriorityId::parse(&row.priority)
        .ok()
        .and_then(|p| config.priority(&p));
    let same_lead = current.is_some_and(|p| p.lead.email.email.to_string() == row.lead_email);
    match row.standing_at(now) {
        Standing::Usable if same_lead => Ok(row),
        Standing::Expired if same_lead => Err(Box::new(expired(config, &row))),
        Standing::Usable | Standing::Expired | Standing::Revoked => Err(Box::new(gone())),
    }
}

#[derive(Serialize)]
struct LeadItem {
    id: i64,
    meeting: String,
    meeting_note: String,
    name: String,
    organisation: String,
    email: String,
    title: String,
    summary: String,
    presents: bool,
    minutes: u32,
    status: &'static str,
    decided: Option<String>,
    csrf: String,
}

async fn lead_page(State(pages): State<AgendaPages>, Path(raw): Path<String>) -> Response {
    let feeds = pages.feeds.current();
    let config = &feeds.config;
    let row = match lead(&pages, config, &raw, Timestamp::now()) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let (proposals, secret) = match pages.with_store(|s| (s.proposals(None), s.csrf_secret())) {
        (Ok(p), Ok(k)) => (p, k),
        (Err(e), _) | (_, Err(e)) => return failure(e),
    };
    let priority = PriorityId::parse(&row.priority)
        .ok()
        .and_then(|p| config.priority(&p));
    let items: Vec<LeadItem> = proposals
        .iter()
        .filter(|p| p.priority == row.priority)
        .rev()
        .map(|p| {
            let meeting_note = match find_meeting(config, &p.meeting) {
                Some(m) if m.is_cancelled() => format!("{} (cancelled)", m.date),
                Some(m) => m.date.to_string(),
                None => format!("{} (no longer in the calendar)", p.meeting),
            };
            LeadItem {
                id: p.id,
                meeting: p.meeting.clone(),
                meeting_note,
                name: p.name.clone(),
                organisation: p.organisation.clone(),
                email: p.email.clone(),
                title: p.title.clone(),
                summary: p.summary.clone(),
                presents: p.presents,
                minutes: p.minutes,
                status: p.status.as_str(),
                decided: p
                    .decided_by
                    .as_ref()
                    .zip(p.decided_at)
                    .map(|(by, at)| format!("{by}, {at}")),
                csrf: token::csrf(&secret, &row.hash, p.id),
            }
        })
        .collect();
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    let html = env.add_template("lead", LEAD_PAGE).and_then(|()| {
        env.get_template("lead")?.render(context! {
            network => config.network.short_name.as_str(),
            priority => priority.map(|p| p.name.to_string()),
            lead => priority.map(|p| p.lead.name.to_string()),
            items => Serde(items),
            token => raw,
            expires => agenda::local_time(config, row.expires),
            base_path => base_path(config.network.base_url.as_str()),
        })
    });
    let mut res = page(StatusCode::OK, html);
    // A private page: never cached, never sent to another site as a Referer. (`no-referrer`
    // would make browsers post its forms with `Origin: null`, which the same-origin check
    // refuses: `same-origin` keeps the real Origin on our own posts.)
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("same-origin"),
    );
    res
}

async fn decide(
    State(pages): State<AgendaPages>,
    Path((raw, n, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let feeds = pages.feeds.current();
    let config = &feeds.config;
    let now = Timestamp::now();
    let row = match lead(&pages, config, &raw, now) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let status = match action.as_str() {
        "accept" => Status::Accepted,
        "decline" => Status::Declined,
        _ => return plain(StatusCode::NOT_FOUND, "no such action"),
    };
    let Ok(n) = n.parse::<i64>() else {
        return plain(StatusCode::NOT_FOUND, "no such proposal");
    };
    if let Err(why) = same_origin(config.network.base_url.as_str(), &headers) {
        return plain(StatusCode::FORBIDDEN, why);
    }
    let form = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err((status, why)) => return plain(status, why),
    };
    let posted = form.fields.get("csrf").map(String::as_str).unwrap_or("");
    // Err: the response to give instead.
    let result = pages.with_store(|s| {
        let proposal = match s.proposal(n) {
            Ok(p) if p.priority == row.priority => p,
            Ok(_) | Err(agenda::AgendaError::NoProposal(_)) => {
                return Err(Box::new(plain(StatusCode::NOT_FOUND, "no such proposal")));
            }
            Err(e) => return Err(Box::new(failure(e))),
        };
        let secret = s.csrf_secret().map_err(|e| Box::new(failure(e)))?;
        if !token::csrf_ok(&secret, &row.hash, n, posted) {
            return Err(Box::new(plain(
                StatusCode::FORBIDDEN,
                "the form's security token is missing or wrong; reload the page and try again",
            )));
        }
        let by = PriorityId::parse(&row.priority)
            .ok()
            .and_then(|p| config.priority(&p))
            .map_or_else(
                || format!("lead of {}", row.priority),
                |p| format!("{} <{}>, lead of {}", p.lead.name, p.lead.email.email, p.id),
            );
        let changed = proposal.status != status;
        s.decide(n, status, &by, now)
            .map(|()| changed)
            .map_err(|e| Box::new(failure(e)))
    });
    match result {
        Ok(changed) => {
            tracing::info!(proposal = n, decision = status.as_str(), "lead decided");
            if changed {
                (pages.changed)();
            }
            see_other(&format!(
                "{}/leads/{raw}/",
                base_path(config.network.base_url.as_str())
            ))
        }
        Err(res) => *res,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, header::HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let base = "https://convenor.example.org/lednet";
        let h = headers;
        assert!(same_origin(base, &h(&[])).is_ok());
        assert!(same_origin(base, &h(&[("origin", "https://convenor.example.org")])).is_ok());
        assert!(same_origin(base, &h(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(
            same_origin(
                "http://127.0.0.1:8080",
                &h(&[("origin", "http://127.0.0.1:8080")])
            )
            .is_ok()
        );
        for bad in [
            h(&[("origin", "https://evil.example")]),
            h(&[("origin", "null")]),
            h(&[("origin", "http://convenor.example.org")]),
            h(&[("origin", "https://convenor.example.org:8443")]),
            h(&[("origin", "https://convenor.example.org.evil.example")]),
            h(&[("sec-fetch-site", "cross-site")]),
            h(&[("sec-fetch-site", "same-site")]),
        ] {
            assert!(same_origin(base, &bad).is_err(), "{bad:?}");
        }
    }

    /// Browsers send the origin serialised: host lowercased, no default port.
    #[test]
    fn origins_are_compared_normalised() {
        for (base, browser) in [
            (
                "https://Convenor.Example.org",
                "https://convenor.example.org",
            ),
            ("https://x.org:443/lednet", "https://x.org"),
            ("http://x.org:80", "http://x.org"),
            ("HTTPS://X.ORG", "https://x.org"),
        ] {
            let origin = header::HeaderValue::from_static(browser);
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, origin);
            assert!(same_origin(base, &h).is_ok(), "{base} vs {browser}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            header::HeaderValue::from_static("https://x.org"),
        );
        assert!(same_origin("https://x.org:8443", &h).is_err());
        assert!(same_origin("http://x.org:443", &h).is_err());
    }

    #[test]
    fn base_paths() {
        assert_eq!(base_path("https://convenor.example.org/lednet"), "/lednet");
        assert_eq!(base_path("https://convenor.example.org/a/b"), "/a/b");
        assert_eq!(base_path("https://convenor.example.org"), "");
        assert_eq!(base_path("http://127.0.0.1:8080"), "");
        assert_eq!(base_path("https://h.org/with space"), "/with%20space");
    }
}
