//! The agenda pages: the meeting page with its proposal form, and each lead's private page.
//!
//! Routes (outside any feed token: the meeting page is linked from every mail):
//! - `GET /meetings/<id>`: the meeting, its priorities and leads, the agreed agenda, and while
//!   the call is open ([`crate::agenda::model::call_open`]) the proposal form.
//! - `POST /meetings/<id>/proposals`: a proposal. Refused with a page saying why, storing
//!   nothing: a cross-site post (403), not a form (415), over [`MAX_BODY`] (413), malformed
//!   (400), the honeypot filled (400), the call closed (409), a field wrong (422, each named,
//!   the form refilled), too many proposals from one address or from everyone (429).
//! - `GET /leads/<token>/`: that priority's proposals with accept and decline buttons. An
//!   unknown token is 404, a revoked one (or one issued to a lead since replaced) 410.
//! - `POST /leads/<token>/proposals/<n>/accept|decline`: same-origin check (Origin and
//!   Sec-Fetch-Site against `[network] base_url`) and a CSRF token bound to the lead token and the
//!   proposal; the decision is recorded with the lead's name and address, then 303 to the page.
//!
//! After a decision the pages call the change hook ([`AgendaPages::new`]), with which the daemon
//! recompiles the agenda, raises SEQUENCE, re-renders the feeds and wakes the scheduler.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use jiff::{SignedDuration, Timestamp};
use minijinja::{Environment, context, value::Serde};
use serde::Serialize;

use super::FeedState;
use crate::{
    agenda::{
        self, AgendaStore, Proposal, ProposalForm, Status,
        model::{self, FieldError, FormRefusal},
        store::TokenRow,
        token,
    },
    model::{Config, Meeting, MeetingId, PriorityId},
};

/// The largest form body accepted, in bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// Proposals one address may make per [`RATE_WINDOW`].
pub const PER_ADDRESS: u32 = 5;
/// Proposals everyone together may make per [`RATE_WINDOW`].
pub const PER_WINDOW: u32 = 100;
/// The rate limits' window.
pub const RATE_WINDOW: SignedDuration = SignedDuration::from_hours(1);

const MEETING_PAGE: &str = include_str!("agenda_meeting.html");
const LEAD_PAGE: &str = include_str!("agenda_lead.html");

/// What the agenda pages share: the served config, the agenda store, the change hook.
#[derive(Clone)]
pub struct AgendaPages {
    feeds: FeedState,
    store: Arc<Mutex<AgendaStore>>,
    changed: Arc<dyn Fn() + Send + Sync>,
    notify: bool,
}

impl std::fmt::Debug for AgendaPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgendaPages").finish_non_exhaustive()
    }
}

impl AgendaPages {
    /// Pages over `store`, reading the config from `feeds`; `changed` runs after every change of
    /// the agenda. With `notify`, each new proposal is mailed to its lead
    /// ([`crate::agenda::notify`]).
    pub fn new(
        feeds: FeedState,
        store: Arc<Mutex<AgendaStore>>,
        changed: Arc<dyn Fn() + Send + Sync>,
        notify: bool,
    ) -> Self {
        Self {
            feeds,
            store,
            changed,
            notify,
        }
    }

    fn store(&self) -> MutexGuard<'_, AgendaStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
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
    (status, format!("{}\n", text.into())).into_response()
}

fn failure(e: impl std::fmt::Display) -> Response {
    tracing::error!("agenda page: {e}");
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "something went wrong on our side; nothing was changed",
    )
}

/// The origin (`scheme://host[:port]`) of a base URL.
fn origin(base_url: &str) -> &str {
    let after = base_url.find("://").map_or(0, |i| i + 3);
    match base_url[after..].find('/') {
        Some(i) => &base_url[..after + i],
        None => base_url,
    }
}

/// Refuses a request another site made: an `Origin` other than the base URL's, or a
/// `Sec-Fetch-Site` other than `same-origin` or `none`. A request with neither header (an old
/// browser, curl) passes to the CSRF check.
pub fn same_origin(base_url: &str, headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(o) = headers.get(header::ORIGIN)
        && o.as_bytes() != origin(base_url).as_bytes()
    {
        return Err("this form was posted from another site");
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err("this form was posted from another site");
    }
    Ok(())
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
    let mail = crate::mail::context::links(config, meeting);
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
        subscribe => mail.subscribe,
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
        Ok(h) => (status, Html(h)).into_response(),
        Err(e) => failure(e),
    }
}

async fn meeting_page(State(pages): State<AgendaPages>, Path(id): Path<String>) -> Response {
    let feeds = pages.feeds.current();
    let config = &feeds.config;
    let Some(meeting) = find_meeting(config, &id) else {
        return plain(StatusCode::NOT_FOUND, format!("no meeting `{id}`"));
    };
    let proposals = match pages.store().proposals(Some(meeting.id.as_str())) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    page(
        StatusCode::OK,
        render_meeting(
            config,
            meeting,
            &proposals,
            Timestamp::now(),
            FormState::default(),
        ),
    )
}

async fn propose(
    State(pages): State<AgendaPages>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let feeds = pages.feeds.current();
    let config = &feeds.config;
    let now = Timestamp::now();
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
        let proposals = match pages.store().proposals(Some(meeting.id.as_str())) {
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
    let stored = {
        let mut store = pages.store();
        match store.counts_since(&new.email, since) {
            Ok((one, _)) if one >= PER_ADDRESS => Err(format!(
                "{PER_ADDRESS} proposals from {} in the last hour is the limit; please try later or write to the team",
                new.email
            )),
            Ok((_, all)) if all >= PER_WINDOW => {
                Err("too many proposals in the last hour; please try later".to_owned())
            }
            Ok(_) => Ok(store.add(
                &new,
                &format!("web form ({})", new.email),
                pages.notify,
                now,
            )),
            Err(e) => Ok(Err(e)),
        }
    };
    let pid = match stored {
        Err(why) => {
            return respond(
                StatusCode::TOO_MANY_REQUESTS,
                refill(Some(format!("{why}; nothing was stored.")), Vec::new()),
            );
        }
        Ok(Err(e)) => return failure(e),
        Ok(Ok(pid)) => pid,
    };
    tracing::info!(proposal = pid, meeting = %meeting.id, priority = %new.priority, "proposal stored");
    if pages.notify {
        let config = Arc::clone(config);
        let store = pages.store.clone();
        tokio::spawn(async move {
            agenda::notify::send_with_retries(config, store, pid).await;
        });
    }
    let lead = PriorityId::parse(&new.priority)
        .ok()
        .and_then(|p| config.priority(&p))
        .map(|p| format!("{}, lead of {}", p.lead.name, p.name))
        .unwrap_or_default();
    respond(
        StatusCode::CREATED,
        FormState {
            thanks: Some(format!(
                "Thank you: your proposal #{pid} \u{201c}{}\u{201d} is stored as proposed. {lead}, \
                 has been sent it and will accept or decline it; once accepted it appears in the \
                 agenda on this page, in the calendar entry and in the agenda mail.",
                new.title
            )),
            ..FormState::default()
        },
    )
}

/// The lead token of a request, checked: its row, or the response to give.
fn lead(pages: &AgendaPages, config: &Config, raw: &str) -> Result<TokenRow, Box<Response>> {
    let gone = || {
        plain(
            StatusCode::GONE,
            "this lead link is no longer valid; ask the team for a new one",
        )
    };
    if !token::well_formed(raw) {
        return Err(Box::new(plain(StatusCode::NOT_FOUND, "no such page")));
    }
    let row = match pages.store().token(&token::hash(raw)) {
        Ok(Some(row)) => row,
        Ok(None) => return Err(Box::new(plain(StatusCode::NOT_FOUND, "no such page"))),
        Err(e) => return Err(Box::new(failure(e))),
    };
    let current = PriorityId::parse(&row.priority)
        .ok()
        .and_then(|p| config.priority(&p));
    match current {
        Some(p) if row.revoked.is_none() && p.lead.email.email.to_string() == row.lead_email => {
            Ok(row)
        }
        _ => Err(Box::new(gone())),
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
    let row = match lead(&pages, config, &raw) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let (proposals, secret) = {
        let mut s = pages.store();
        match (s.proposals(None), s.csrf_secret()) {
            (Ok(p), Ok(k)) => (p, k),
            (Err(e), _) | (_, Err(e)) => return failure(e),
        }
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
    let row = match lead(&pages, config, &raw) {
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
    let result = {
        let mut s = pages.store();
        let proposal = match s.proposal(n) {
            Ok(p) if p.priority == row.priority => p,
            Ok(_) | Err(agenda::AgendaError::NoProposal(_)) => {
                return plain(StatusCode::NOT_FOUND, "no such proposal");
            }
            Err(e) => return failure(e),
        };
        let secret = match s.csrf_secret() {
            Ok(k) => k,
            Err(e) => return failure(e),
        };
        if !token::csrf_ok(&secret, &row.hash, n, posted) {
            return plain(
                StatusCode::FORBIDDEN,
                "the form's security token is missing or wrong; reload the page and try again",
            );
        }
        let by = PriorityId::parse(&row.priority)
            .ok()
            .and_then(|p| config.priority(&p))
            .map_or_else(
                || format!("lead of {}", row.priority),
                |p| format!("{} <{}>, lead of {}", p.lead.name, p.lead.email.email, p.id),
            );
        let changed = proposal.status != status;
        s.decide(n, status, &by, Timestamp::now()).map(|()| changed)
    };
    match result {
        Ok(changed) => {
            tracing::info!(proposal = n, decision = status.as_str(), "lead decided");
            if changed {
                (pages.changed)();
            }
            Redirect::to(&format!("/leads/{raw}/")).into_response()
        }
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_posts_pass() {
        let base = "https://convenor.example.org/lednet";
        assert_eq!(origin(base), "https://convenor.example.org");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, header::HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(base, &h(&[])).is_ok());
        assert!(same_origin(base, &h(&[("origin", "https://convenor.example.org")])).is_ok());
        assert!(same_origin(base, &h(&[("sec-fetch-site", "same-origin")])).is_ok());
        for bad in [
            h(&[("origin", "https://evil.example")]),
            h(&[("origin", "null")]),
            h(&[("origin", "http://convenor.example.org")]),
            h(&[("sec-fetch-site", "cross-site")]),
            h(&[("sec-fetch-site", "same-site")]),
        ] {
            assert!(same_origin(base, &bad).is_err(), "{bad:?}");
        }
    }
}
