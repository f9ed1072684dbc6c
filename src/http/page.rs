//! The subscribe page: plain HTML and CSS, the upcoming meetings, the priorities with their
//! leads, and per feed the add-by-URL link of each calendar client.
//!
//! Link formats (see the calendar facts): Outlook.com and Microsoft 365 take the https URL in
//! `addfromweb?url=..&name=..`, Google takes the webcal URL in `?cid=`, Apple and classic Outlook
//! open a `webcal://` link, and the plain https URL is there to copy (Thunderbird and the rest).

use jiff::Timestamp;
use minijinja::{Environment, Value, context, value::Serde};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::{
    feed::{self, Selection, urls},
    model::Config,
};

/// Everything but RFC 3986 unreserved characters is encoded in a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const TEMPLATE: &str = include_str!("subscribe.html");
const LINKS: &str = include_str!("links.html");

/// The links to subscribe to one feed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FeedLinks {
    /// What the feed holds ("All meetings", a priority's name).
    pub label: String,
    /// The calendar name clients show.
    pub name: String,
    /// The plain URL (http or https, as `base_url` says).
    pub https: String,
    /// `webcal://` for Apple Calendar and classic Outlook.
    pub webcal: String,
    /// Outlook.com add-by-URL.
    pub outlook_com: String,
    /// Microsoft 365 (Outlook on the web for work or school) add-by-URL.
    pub microsoft_365: String,
    /// Google Calendar add-by-URL.
    pub google: String,
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, QUERY_VALUE).to_string()
}

/// The subscribe links of a feed.
pub fn feed_links(config: &Config, selection: Selection<'_>) -> FeedLinks {
    let https = urls::feed_url(config, selection);
    let webcal = urls::webcal(&https);
    let name = feed::calendar_name(config, selection);
    let add_from_web = |host: &str| {
        format!(
            "https://{host}/calendar/0/addfromweb?url={}&name={}",
            encode(&https),
            encode(&name)
        )
    };
    FeedLinks {
        label: match selection {
            Selection::All => "All meetings".to_owned(),
            Selection::Priority(p) => p.name.to_string(),
        },
        outlook_com: add_from_web("outlook.live.com"),
        microsoft_365: add_from_web("outlook.office.com"),
        google: format!(
            "https://calendar.google.com/calendar/r?cid={}",
            encode(&webcal)
        ),
        name,
        https,
        webcal,
    }
}

#[derive(Serialize)]
struct MeetingView {
    title: String,
    when: String,
    datetime: String,
    location: Option<String>,
    cancelled: bool,
    focus: Vec<String>,
}

#[derive(Serialize)]
struct PriorityView {
    name: String,
    summary: String,
    lead: String,
    organisation: Option<String>,
    email: String,
    links: FeedLinks,
}

fn hours(d: jiff::SignedDuration) -> String {
    let h = d.as_secs() as f64 / 3600.0;
    if h >= 1.0 {
        format!(
            "{} hour{}",
            h.round(),
            if h.round() == 1.0 { "" } else { "s" }
        )
    } else {
        format!("{} minutes", (d.as_secs() / 60).max(1))
    }
}

/// Renders the page for `now` (meetings that ended before `now` are left out).
pub fn render(config: &Config, now: Timestamp) -> Result<String, minijinja::Error> {
    let tz = &config.network.time_zone;
    let meetings: Vec<MeetingView> = config
        .meetings
        .iter()
        .filter(|m| m.ends_at(tz) > now)
        .map(|m| MeetingView {
            title: m.title.to_string(),
            when: format!(
                "{} {}–{}",
                m.date.strftime("%A %-d %B %Y"),
                m.start.strftime("%H:%M"),
                m.end.strftime("%H:%M")
            ),
            datetime: m.local_start().strftime("%Y-%m-%dT%H:%M").to_string(),
            location: m.location.as_ref().map(ToString::to_string),
            cancelled: m.is_cancelled(),
            focus: if m.focus.is_empty() {
                vec!["all priorities".to_owned()]
            } else {
                config
                    .priorities_of(m)
                    .map(|p| p.name.to_string())
                    .collect()
            },
        })
        .collect();
    let priorities: Vec<PriorityView> = config
        .priorities
        .iter()
        .map(|p| PriorityView {
            name: p.name.to_string(),
            summary: p.summary.trim().to_owned(),
            lead: p.lead.name.to_string(),
            organisation: p.lead.organisation.as_ref().map(ToString::to_string),
            email: p.lead.email.email.to_string(),
            links: feed_links(config, Selection::Priority(p)),
        })
        .collect();
    let mut env = Environment::new();
    env.add_template("subscribe.html", TEMPLATE)?;
    env.add_template("links.html", LINKS)?;
    env.get_template("subscribe.html")?.render(context! {
        short_name => config.network.short_name.as_str(),
        name => config.network.name.as_str(),
        time_zone => config.network.time_zone_name.as_str(),
        contact => config.network.contact.to_string(),
        contact_email => config.network.contact.email.to_string(),
        all => Value::from(Serde(feed_links(config, Selection::All))),
        meetings => Value::from(Serde(&meetings)),
        priorities => Value::from(Serde(&priorities)),
        published_ttl => hours(config.http.published_ttl),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, parse};

    fn config() -> Config {
        let text = std::fs::read_to_string("config/lednet.toml").expect("example config");
        let text = text.replacen(
            "date = 2023-09-29\n",
            "date = 2023-09-29\nstatus = \"cancelled\"\n",
            1,
        );
        let text = text.replace("London (venue to be confirmed)", "<b>Room & Hall</b>");
        parse(
            std::path::Path::new("config/lednet.toml"),
            &text,
            &Environment::default(),
        )
        .expect("valid")
        .config
    }

    #[test]
    fn lists_upcoming_meetings_escapes_text_and_marks_cancellations() {
        let now: Timestamp = "2023-06-07T11:00:00Z".parse().expect("now");
        let html = render(&config(), now).expect("render");
        // 7 June ends at 11:30Z, so it is still upcoming; April is past.
        assert!(html.contains("Wednesday 7 June 2023 10:00–12:30"), "{html}");
        assert!(!html.contains("19 April 2023"));
        assert!(html.contains("Cancelled: LEDNet meeting"));
        assert!(
            html.contains("&lt;b&gt;Room &amp; Hall&lt;&#x2f;b&gt;")
                || html.contains("&lt;b&gt;Room &amp; Hall&lt;/b&gt;"),
            "escaped"
        );
        assert!(!html.contains("<b>Room"));
        assert!(!html.contains("<script"));
        let after: Timestamp = "2024-01-01T00:00:00Z".parse().expect("after");
        assert!(
            render(&config(), after)
                .expect("render")
                .contains("No upcoming meetings")
        );
    }
}
