//! Where the feeds and the subscribe page live: paths and absolute URLs from the config.
//!
//! Without a feed token the feeds are `/calendar.ics` and `/priorities/<id>.ics` and the page is
//! `/`; with one, all three live under `/<token>/` only, so the page never shows the token to
//! someone who does not already have it.

use crate::model::{Config, Priority};

/// Which meetings a feed holds.
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// Every meeting.
    All,
    /// The meetings with this priority in focus (a meeting without focus concerns every priority).
    Priority(&'a Priority),
}

/// The path prefix the feeds and page live under: empty, or `/<token>`.
pub fn prefix(config: &Config) -> String {
    match &config.http.feed_token {
        Some(token) => format!("/{}", token.as_str()),
        None => String::new(),
    }
}

/// The path of a feed below the prefix: `/calendar.ics`, `/priorities/<id>.ics` (what logs and
/// warnings name a feed by: never the token).
pub fn relative_path(selection: Selection<'_>) -> String {
    match selection {
        Selection::All => "/calendar.ics".to_owned(),
        Selection::Priority(p) => format!("/priorities/{}.ics", p.id),
    }
}

/// The path of a feed, prefix included: `/calendar.ics`, `/<token>/priorities/<id>.ics`.
pub fn feed_path(config: &Config, selection: Selection<'_>) -> String {
    format!("{}{}", prefix(config), relative_path(selection))
}

/// The absolute URL of a feed (on `network.base_url`).
pub fn feed_url(config: &Config, selection: Selection<'_>) -> String {
    format!(
        "{}{}",
        config.network.base_url,
        feed_path(config, selection)
    )
}

/// The absolute URL of the subscribe page (ends with `/`).
pub fn page_url(config: &Config) -> String {
    format!("{}{}/", config.network.base_url, prefix(config))
}

/// The `webcal://` form of an http(s) URL, for Apple Calendar and classic Outlook.
pub fn webcal(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    format!("webcal://{rest}")
}
