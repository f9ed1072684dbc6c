//! Second stage: raw TOML structs to validated domain types, collecting every problem found.
//!
//! Each check reports at the span of the value at fault. The result is either a whole
//! [`Config`] or the list of errors; warnings come with either.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use jiff::{
    SignedDuration, Span, SpanRelativeTo,
    civil::{Date, Time, Weekday},
    tz::TimeZone,
};
use lettre::message::Mailbox;

use super::{
    Environment,
    diagnostic::{Diagnostic, Locator, Severity},
    raw::*,
};
use crate::model::*;

/// The files every template set must hold.
pub const TEMPLATE_FILES: [&str; 3] = ["subject.txt", "body.txt", "body.html"];

/// Collects diagnostics while converting.
struct Checker<'a> {
    loc: Locator<'a>,
    base_dir: &'a Path,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>) {
        let d = self.loc.at(Severity::Error, span, msg);
        self.out.push(d);
    }

    fn warning(&mut self, span: std::ops::Range<usize>, msg: impl Into<String>) {
        let d = self.loc.at(Severity::Warning, span, msg);
        self.out.push(d);
    }

    /// Runs a parser on a spanned value, reporting its error at the value's span.
    fn parse<T, U>(&mut self, raw: &S<T>, f: impl FnOnce(&T) -> Result<U, String>) -> Option<U> {
        match f(raw.get_ref()) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(raw.span(), msg);
                None
            }
        }
    }

    fn text(&mut self, raw: &S<String>) -> Option<HeaderText> {
        self.parse(raw, |s| HeaderText::parse(s))
    }

    fn opt_text(&mut self, raw: &Option<S<String>>) -> Option<Option<HeaderText>> {
        match raw {
            None => Some(None),
            Some(r) => self.text(r).map(Some),
        }
    }

    fn mailbox(&mut self, raw: &S<String>) -> Option<Mailbox> {
        self.parse(raw, |s| parse_mailbox(s))
    }

    fn duration(
        &mut self,
        raw: &Option<S<String>>,
        default: SignedDuration,
    ) -> Option<SignedDuration> {
        match raw {
            None => Some(default),
            Some(r) => self.parse(r, |s| parse_duration(s)),
        }
    }

    fn path(&self, raw: &str) -> PathBuf {
        let p = Path::new(raw);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Parses an address such as `LEDNet team <team@example.org>` or `team@example.org`.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    HeaderText::parse(text)?;
    Mailbox::from_str(text.trim()).map_err(|e| format!("`{text}` is not a mail address ({e})"))
}

/// Parses a duration such as `2h`, `90s`, `1h 30m` or `3d` (a day is 24 hours here).
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let span: Span = text.parse().map_err(|_| {
        format!("`{text}` is not a duration; write for example `90s`, `2h`, `1h 30m` or `3d`")
    })?;
    let d = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| format!("`{text}` is not a duration in days, hours, minutes or seconds"))?;
    if d.is_negative() {
        return Err(format!("duration `{text}` must not be negative"));
    }
    Ok(d)
}

/// Parses a date written as a TOML date (`2023-02-24`) or a string (`"2023-02-24"`), strictly:
/// `YYYY-MM-DD` and nothing else (no time, offset or zone annotation to drop unseen).
fn parse_date(value: &toml::Value) -> Result<Date, String> {
    let date = match value {
        toml::Value::Datetime(toml::value::Datetime {
            date: Some(d),
            time: None,
            offset: None,
        }) => Date::new(
            i16::try_from(d.year).map_err(|_| format!("year {} is out of range", d.year))?,
            i8::try_from(d.month).map_err(|_| format!("{value} is not a valid date"))?,
            i8::try_from(d.day).map_err(|_| format!("{value} is not a valid date"))?,
        )
        .map_err(|_| {
            format!("{value} is not a valid date (write YYYY-MM-DD, such as 2023-02-24)")
        })?,
        toml::Value::String(s) => parse_date_text(s)?,
        other => {
            return Err(format!(
                "expected a date such as 2023-02-24, found {}",
                describe(other)
            ));
        }
    };
    if !(1000..=9999).contains(&date.year()) {
        return Err(format!("year {} is out of range", date.year()));
    }
    Ok(date)
}

/// `YYYY-MM-DD`, exactly: four, two and two ASCII digits joined by `-`, a real day.
fn parse_date_text(text: &str) -> Result<Date, String> {
    let bad = || format!("`{text}` is not a valid date (write YYYY-MM-DD, such as 2023-02-24)");
    let b = text.as_bytes();
    let shaped = |b: &[u8]| {
        b.len() >= 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b[..10]
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    };
    if !(b.len() == 10 && shaped(b)) {
        if shaped(b) {
            return Err(format!(
                "`{text}` is not a valid date: a date carries no time, offset or zone (write \
                 YYYY-MM-DD, such as 2023-02-24; the times are `start` and `end`)"
            ));
        }
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<i16>().map_err(|_| bad());
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let month = i8::try_from(month).map_err(|_| bad())?;
    let day = i8::try_from(day).map_err(|_| bad())?;
    Date::new(year, month, day).map_err(|_| bad())
}

/// Parses a local time written as a string (`"10:00"`) or a TOML time (`10:00`, or `10:00:00`
/// with no seconds or fraction to drop), strictly: the minute is what mail and
/// `revision::Significant` show, so a time with seconds, an offset, a date or a zone is refused.
fn parse_time(value: &toml::Value) -> Result<Time, String> {
    match value {
        toml::Value::Datetime(toml::value::Datetime {
            date: None,
            time: Some(t),
            offset: None,
        }) => {
            if t.second.is_some_and(|s| s != 0) || t.nanosecond.is_some_and(|n| n != 0) {
                return Err(format!(
                    "the time {value} has seconds: times are to the minute; write HH:MM, such as \
                     \"{:02}:{:02}\"",
                    t.hour, t.minute
                ));
            }
            let hour = i8::try_from(t.hour).map_err(|_| format!("{value} is not a valid time"))?;
            let minute =
                i8::try_from(t.minute).map_err(|_| format!("{value} is not a valid time"))?;
            Time::new(hour, minute, 0, 0).map_err(|_| {
                format!("{value} is not a valid time of day (write HH:MM, such as \"10:00\")")
            })
        }
        toml::Value::String(s) => parse_time_text(s),
        other => Err(format!(
            "expected a local time such as \"10:00\", found {}",
            describe(other)
        )),
    }
}

/// `HH:MM`, exactly: two and two ASCII digits joined by `:`, 00:00 to 23:59. Anything more (seconds,
/// an offset, a date, a zone) is refused rather than dropped, with a message saying why.
fn parse_time_text(text: &str) -> Result<Time, String> {
    let bad = |why: &str| {
        format!(
            "`{text}` is not a valid time of day{why} (write HH:MM, a local time in the network's \
             time zone, such as \"10:00\")"
        )
    };
    let b = text.as_bytes();
    let hh_mm = |b: &[u8]| {
        b.len() >= 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|i| b[*i].is_ascii_digit())
    };
    // `HH:MM:00` drops nothing, as the TOML time `10:00:00` does not: taken as `HH:MM` (configs
    // written for earlier versions, which took seconds, keep working).
    let b = match b {
        [head @ .., b':', b'0', b'0'] if head.len() == 5 && hh_mm(head) => head,
        _ => b,
    };
    if !(b.len() == 5 && hh_mm(b)) {
        let why = if hh_mm(b) && b.len() > 5 && b[5] == b':' {
            ": times are to the minute, without seconds"
        } else if hh_mm(b) && b.len() > 5 && matches!(b[5], b'+' | b'-' | b'Z' | b'z' | b'[') {
            ": a time carries no offset or zone, it is in the network's time zone"
        } else if text.contains('T') || text.contains('t') {
            ": a time carries no date, the meeting's date is its `date`"
        } else {
            ""
        };
        return Err(bad(why));
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<i8>().map_err(|_| bad(""));
    Time::new(number(0..2)?, number(3..5)?, 0, 0).map_err(|_| bad(""))
}

/// An `http://` URL whose host is not a loopback name or address.
fn is_public_http(url: &WebUrl) -> bool {
    let Ok(parsed) = url::Url::parse(url.as_str()) else {
        return false;
    };
    let loopback = match parsed.host() {
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => true,
    };
    parsed.scheme() == "http" && !loopback
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::Datetime(dt) => format!("the date-time {dt}"),
        other => format!("a {}", other.type_str()),
    }
}

fn one_of<'a>(text: &str, options: &[&'a str], what: &str) -> Result<&'a str, String> {
    options
        .iter()
        .find(|o| **o == text)
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown {what} `{text}`; expected one of: {}",
                options.join(", ")
            )
        })
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where templates are when the config does not say: `templates/` beside the config file (the
/// installed layout, `/etc/convenor/templates`), else `../templates` (the repository's layout).
pub fn default_templates_dir(config_dir: &Path) -> PathBuf {
    let beside = config_dir.join("templates");
    if beside.is_dir() {
        beside
    } else {
        config_dir.join("../templates")
    }
}

/// The least grace a rule may set.
const MIN_GRACE: SignedDuration = SignedDuration::from_mins(1);

/// The default grace of a timed rule: a quarter of its lead time, between 10 minutes and 3 days.
pub fn default_grace(trigger: &Trigger) -> SignedDuration {
    let lead = match trigger {
        Trigger::DaysBefore { days, .. } => SignedDuration::from_hours(24 * i64::from(*days)),
        Trigger::Before(d) => *d,
        Trigger::OnChange | Trigger::OnCancel => return SignedDuration::MAX,
    };
    (lead / 4).clamp(
        SignedDuration::from_mins(10),
        SignedDuration::from_hours(72),
    )
}

/// Where the package installs the config: a config file in this directory is the installed one.
pub const INSTALLED_CONFIG_DIR: &str = "/etc/convenor";

/// The state directory of the installed service (the unit's `StateDirectory=convenor`).
pub const INSTALLED_STATE_DIR: &str = "/var/lib/convenor";

/// The state directory when neither `[state] dir` nor `$STATE_DIRECTORY` names one: the
/// installed service's for the installed config (so `convenor release`, `plan` and `agenda`,
/// run from a shell on the server, work on the service's ledger), else `state` in the working
/// directory (a checkout: `cargo run -- serve`).
///
/// The config file is the installed one when its directory is [`INSTALLED_CONFIG_DIR`], compared
/// as an absolute path: a relative `config_file` is taken from `cwd` (the working directory) and
/// its `.` and `..` are resolved by name, so `cd /etc/convenor && convenor plan --config
/// convenor.toml` uses the service's state too. Without `cwd` a relative path is not the
/// installed config.
pub fn default_state_dir(config_file: &Path, cwd: Option<&Path>) -> PathBuf {
    let absolute = match cwd {
        _ if config_file.is_absolute() => Some(lexically_normal(config_file)),
        Some(cwd) if cwd.is_absolute() => Some(lexically_normal(&cwd.join(config_file))),
        _ => None,
    };
    let installed =
        absolute.as_deref().and_then(Path::parent) == Some(Path::new(INSTALLED_CONFIG_DIR));
    if installed {
        PathBuf::from(INSTALLED_STATE_DIR)
    } else {
        PathBuf::from("state")
    }
}

/// An absolute path with its `.` components dropped and each `..` taking off the name before it
/// (by name, not following symbolic links; `..` at the root stays at the root).
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Converts the raw file. `file` and `text` are for positions; `env` supplies what systemd sets.
pub(crate) fn validate(
    raw: RawConfig,
    file: &Path,
    text: &str,
    env: &Environment,
) -> (Option<Config>, Vec<Diagnostic>) {
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let mut c = Checker {
        loc: Locator::new(file, text),
        base_dir,
        out: Vec::new(),
    };

    let network = network(&mut c, &raw.network);
    let mail = mail(&mut c, &raw.mail);
    let http = http(&mut c, &raw.http, env);
    let scheduler = scheduler(&mut c, &raw.scheduler);
    let agenda_settings = agenda(&mut c, &raw.agenda);
    let state_dir = match (&raw.state.dir, &env.state_directory) {
        // Relative to the working directory, unlike the config's other paths: so it has always
        // been, and resolving it elsewhere would start an existing deployment on an empty
        // ledger (every mail planned, and sent, again).
        (Some(dir), _) => PathBuf::from(dir.get_ref()),
        (None, Some(systemd)) => systemd.clone(),
        (None, None) => default_state_dir(file, env.cwd.as_deref()),
    };
    let priorities = priorities(&mut c, &raw.priorities);
    let tz = network.as_ref().map(|n| n.time_zone.clone());
    let known: HashSet<PriorityId> = priorities.iter().map(|p| p.id.clone()).collect();
    let meetings = meetings(&mut c, &raw.meetings, &known, tz.as_ref());
    let templates_dir = mail.as_ref().map(|m| m.templates_dir.clone());
    let emails = emails(
        &mut c,
        &raw.emails,
        templates_dir.as_deref(),
        &meetings,
        tz.as_ref(),
    );

    let has_error = c.out.iter().any(|d| d.severity == Severity::Error);
    let config = match (network, mail, http, scheduler, agenda_settings) {
        (Some(network), Some(mail), Some(http), Some(scheduler), Some(agenda_settings))
            if !has_error =>
        {
            Some(Config {
                source: file.to_path_buf(),
                network,
                mail,
                http,
                scheduler,
                agenda_settings,
                state_dir,
                priorities,
                meetings,
                emails,
                agenda: crate::agenda::Book::default(),
            })
        }
        _ => None,
    };
    (config, c.out)
}

fn network(c: &mut Checker, raw: &S<RawNetwork>) -> Option<Network> {
    let n = raw.get_ref();
    let short_name = c.text(&n.short_name);
    if let Some(s) = &short_name
        && s.as_str().contains(',')
    {
        c.error(
            n.short_name.span(),
            "the short name is the calendar's name and must not contain a comma",
        );
    }
    let name = c.text(&n.name);
    let (time_zone_name, time_zone) = match &n.time_zone {
        None => (
            "Europe/London".to_owned(),
            TimeZone::get("Europe/London").ok(),
        ),
        Some(raw_tz) => {
            let tz = c.parse(raw_tz, |s| {
                TimeZone::get(s).map_err(|_| {
                    format!("unknown time zone `{s}`; use an IANA name such as Europe/London")
                })
            });
            (raw_tz.get_ref().clone(), tz)
        }
    };
    let base_url = c.parse(&n.base_url, |s| WebUrl::parse(s));
    if base_url.as_ref().is_some_and(is_public_http) {
        c.warning(
            n.base_url.span(),
            "base_url is plain http on a host that is not this machine: Outlook.com and \
             Microsoft 365 subscribe only to https feeds (the subscribe page's buttons for them \
             would fail), and a feed token would cross the network in clear; put a TLS proxy in \
             front and give its https URL",
        );
    }
    let contact = c.mailbox(&n.contact);
    let short_name = short_name?;
    Some(Network {
        uid_domain: crate::model::uid_domain_of(short_name.as_str()),
        short_name,
        name: name?,
        time_zone: time_zone?,
        time_zone_name,
        base_url: base_url?,
        contact: contact?,
    })
}

fn mail(c: &mut Checker, raw: &S<RawMail>) -> Option<MailSettings> {
    let m = raw.get_ref();
    let from = c.mailbox(&m.from);
    // Each address with the span it is reported at: its own, in an array.
    let list: Vec<(&str, std::ops::Range<usize>)> = match m.list.get_ref() {
        ListAddresses::One(s) => vec![(s.as_str(), m.list.span())],
        ListAddresses::Many(v) => v.iter().map(|a| (a.get_ref().as_str(), a.span())).collect(),
    };
    if list.is_empty() {
        c.error(m.list.span(), "the mailing list needs at least one address");
    }
    let mut boxes = Vec::new();
    for (addr, span) in list {
        match parse_mailbox(addr) {
            Ok(b) => boxes.push(b),
            Err(e) => c.error(span, e),
        }
    }
    let reply_to = match &m.reply_to {
        None => Some(None),
        Some(r) => c.mailbox(r).map(Some),
    };
    let templates_dir = m.templates_dir.as_ref().map_or_else(
        || default_templates_dir(c.base_dir),
        |t| c.path(t.get_ref()),
    );
    if !templates_dir.is_dir() {
        let span = m.templates_dir.as_ref().map_or(raw.span(), |t| t.span());
        c.error(
            span,
            format!(
                "templates directory {} does not exist",
                templates_dir.display()
            ),
        );
    }
    let transport = match m.transport.as_ref() {
        None => Some("file"),
        Some(t) => c.parse(t, |s| one_of(s, &["file", "smtp"], "transport")),
    };
    let transport = match (transport, &m.smtp) {
        (Some("file"), _) => Some(TransportSettings::File),
        (Some(_), Some(smtp)) => self::smtp(c, smtp).map(TransportSettings::Smtp),
        (Some(_), None) => {
            let span = m.transport.as_ref().map_or(raw.span(), |t| t.span());
            c.error(
                span,
                "transport `smtp` needs a [mail.smtp] table with at least `host`",
            );
            None
        }
        (None, _) => None,
    };
    Some(MailSettings {
        from: from?,
        list: boxes,
        reply_to: reply_to?,
        transport: transport?,
        templates_dir,
    })
}

fn smtp(c: &mut Checker, raw: &S<RawSmtp>) -> Option<SmtpSettings> {
    let s = raw.get_ref();
    let host = c.parse(&s.host, |h| {
        if h.is_empty() || h.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            Err(format!("`{h}` is not a host name"))
        } else {
            Ok(h.clone())
        }
    });
    let tls = match &s.tls {
        None => Some(TlsMode::Implicit),
        Some(t) => c
            .parse(t, |v| {
                one_of(v, &["implicit", "starttls", "plaintext"], "TLS mode")
            })
            .map(|v| match v {
                "implicit" => TlsMode::Implicit,
                "starttls" => TlsMode::StartTls,
                _ => TlsMode::Plaintext,
            }),
    };
    if let (Some(TlsMode::Plaintext), Some(h), Some(t)) = (tls, &host, &s.tls)
        && !is_loopback(h)
    {
        c.error(
            t.span(),
            format!("plaintext SMTP is only allowed to a loopback relay, not to `{h}`"),
        );
    }
    let port = match &s.port {
        None => Some(match tls {
            Some(TlsMode::StartTls) => 587,
            Some(TlsMode::Plaintext) => 25,
            _ => 465,
        }),
        Some(p) => c.parse(p, |v| {
            u16::try_from(*v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{v} is not a port number"))
        }),
    };
    let sources: Vec<(&S<String>, PasswordSource)> = [
        s.password_file
            .as_ref()
            .map(|p| (p, PasswordSource::File(c.path(p.get_ref())))),
        s.password_credential
            .as_ref()
            .map(|p| (p, PasswordSource::Credential(p.get_ref().clone()))),
        s.password_env
            .as_ref()
            .map(|p| (p, PasswordSource::Env(p.get_ref().clone()))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let password = match sources.as_slice() {
        [] => PasswordSource::None,
        [(_, one)] => one.clone(),
        [_, (second, _), ..] => {
            c.error(
                second.span(),
                "give only one of password_file, password_credential and password_env",
            );
            PasswordSource::None
        }
    };
    if password != PasswordSource::None && s.user.is_none() {
        c.error(
            raw.span(),
            "a password source is set but no `user` to authenticate as",
        );
    }
    let timeout = c.duration(&s.timeout, SignedDuration::from_secs(30));
    Some(SmtpSettings {
        host: host?,
        port: port?,
        tls: tls?,
        user: s.user.as_ref().map(|u| u.get_ref().clone()),
        password,
        ca_file: s.ca_file.as_ref().map(|p| c.path(p.get_ref())),
        timeout: timeout?,
    })
}

fn http(c: &mut Checker, h: &RawHttp, env: &Environment) -> Option<HttpSettings> {
    let listen = match &h.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
        Some(l) => c.parse(l, |s| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("`{s}` is not a listen address such as 127.0.0.1:8080 or [::]:8080")
            })
        }),
    };
    let feed_token = match (&h.feed_token, &h.feed_token_credential) {
        (None, None) => Some(None),
        (Some(t), None) => c.parse(t, |s| FeedToken::parse(s)).map(Some),
        (None, Some(name))
            if env.credentials_directory.is_none() && env.feed_token_may_be_absent =>
        {
            c.warning(
                name.span(),
                format!(
                    "the feed token is in systemd credential `{}`, which this shell does not \
                     have ($CREDENTIALS_DIRECTORY is not set): it is not read or checked here, \
                     and feed URLs this command shows hold a placeholder; the service reads it \
                     at start and at each reload",
                    name.get_ref()
                ),
            );
            Some(Some(FeedToken::placeholder()))
        }
        (None, Some(name)) => c
            .parse(name, |n| {
                feed_token_from_credential(n, env.credentials_directory.as_deref())
            })
            .map(Some),
        (Some(_), Some(second)) => {
            c.error(
                second.span(),
                "give only one of feed_token and feed_token_credential",
            );
            None
        }
    };
    let metrics_listen = match &h.metrics_listen {
        None => Some(None),
        Some(l) => c
            .parse(l, |s| {
                let addr = s.parse::<SocketAddr>().map_err(|_| {
                    format!("`{s}` is not a listen address such as 127.0.0.1:9090 or [::1]:9090")
                })?;
                // Port 0 asks the kernel for a free port each time: two of them never clash.
                if Some(addr) == listen && addr.port() != 0 {
                    return Err(format!(
                        "`{s}` is also `listen`: the second could not be bound; leave \
                         metrics_listen out to serve /metrics on `listen`"
                    ));
                }
                Ok(addr)
            })
            .map(Some),
    };
    let header_timeout = timeout(c, &h.header_timeout, SignedDuration::from_secs(10));
    let request_timeout = timeout(c, &h.request_timeout, SignedDuration::from_secs(30));
    let max_connections = match &h.max_connections {
        None => Some(256),
        Some(v) => c.parse(v, |n| {
            u32::try_from(*n)
                .ok()
                .filter(|n| (1..=100_000).contains(n))
                .ok_or_else(|| format!("{n} must be a whole number from 1 to 100000"))
        }),
    };
    let trusted_proxies = match &h.trusted_proxies {
        None => Some(ProxyNet::LOOPBACK.to_vec()),
        Some(list) => list
            .iter()
            .map(|entry| c.parse(entry, |s| ProxyNet::parse(s)))
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Option<Vec<_>>>(),
    };
    // Every value is parsed (and each problem reported) before the first `?` below, so one bad
    // value does not hide the others.
    let refresh_interval = c.duration(&h.refresh_interval, SignedDuration::from_hours(4));
    let published_ttl = c.duration(&h.published_ttl, SignedDuration::from_hours(4));
    let cache_max_age = c.duration(&h.cache_max_age, SignedDuration::from_hours(1));
    Some(HttpSettings {
        trusted_proxies: trusted_proxies?,
        metrics_listen: metrics_listen?,
        header_timeout: header_timeout?,
        request_timeout: request_timeout?,
        max_connections: max_connections?,
        listen: listen?,
        feed_token: feed_token?,
        refresh_interval: refresh_interval?,
        published_ttl: published_ttl?,
        cache_max_age: cache_max_age?,
    })
}

/// The feed token held by the systemd credential `name` (`LoadCredential=`), read from
/// `credentials_directory` (the process's `$CREDENTIALS_DIRECTORY`), its trailing newline
/// stripped. systemd sets that directory only inside a unit that loads a credential, so without
/// it the error says what to do both in the service and in a shell. The token is never quoted.
pub fn feed_token_from_credential(
    name: &str,
    credentials_directory: Option<&Path>,
) -> Result<FeedToken, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "`{name}` is not a credential name (a file name such as \"feed-token\")"
        ));
    }
    let dir = credentials_directory.ok_or_else(|| {
        format!(
            "cannot read the feed token from systemd credential `{name}`: \
             $CREDENTIALS_DIRECTORY is not set. systemd sets it only inside a unit that loads \
             the credential: for the service, LoadCredential={name}:<file> in its drop-in (see \
             the README, \"Credentials\"). A shell never has it: run the command under systemd \
             with the credential, as in `sudo systemd-run --pipe --wait --quiet -p \
             LoadCredential={name}:/etc/convenor/{name} convenor check --config \
             /etc/convenor/convenor.toml`"
        )
    })?;
    let text = std::fs::read_to_string(dir.join(name)).map_err(|e| {
        format!(
            "cannot read the feed token from systemd credential `{name}` in {}: {e}; the \
             unit (or its drop-in) needs LoadCredential={name}:<file> (see the README, \
             \"Credentials\")",
            dir.display()
        )
    })?;
    FeedToken::parse(text.trim_end_matches(['\r', '\n']))
        .map_err(|e| format!("systemd credential `{name}`: {e}"))
}

/// A server timeout: a duration of at least 100 ms, or `default`.
fn timeout(
    c: &mut Checker,
    raw: &Option<S<String>>,
    default: SignedDuration,
) -> Option<SignedDuration> {
    match raw {
        None => Some(default),
        Some(r) => c.parse(r, |text| {
            parse_duration(text).and_then(|d| {
                if d < SignedDuration::from_millis(100) {
                    Err(format!("`{text}` is too short: give at least 100ms"))
                } else {
                    Ok(d)
                }
            })
        }),
    }
}

/// The longest `[scheduler] retry_base`: the longest a retry waits (an hour, README: "at most
/// an hour"), so the first retry is never later than that.
pub const MAX_RETRY_BASE: SignedDuration = crate::scheduler::decide::MAX_BACKOFF;

fn scheduler(c: &mut Checker, s: &RawScheduler) -> Option<SchedulerSettings> {
    let max_catch_up = match &s.max_catch_up {
        None => Some(20),
        Some(v) => c.parse(v, |n| {
            u32::try_from(*n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{n} must be a whole number of at least 1"))
        }),
    };
    let retry_base = match &s.retry_base {
        None => Some(SignedDuration::from_mins(1)),
        Some(r) => c.parse(r, |text| {
            parse_duration(text).and_then(|d| {
                if d < SignedDuration::from_secs(1) {
                    Err(format!("retry_base `{text}` must be at least 1s"))
                } else if d > MAX_RETRY_BASE {
                    Err(format!(
                        "retry_base `{text}` is over an hour: a retry waits at most an hour \
                         (retry_base doubling up to that), so give 1s to 1h"
                    ))
                } else {
                    Ok(d)
                }
            })
        }),
    };
    Some(SchedulerSettings {
        max_catch_up: max_catch_up?,
        retry_base: retry_base?,
    })
}

fn agenda(c: &mut Checker, a: &RawAgenda) -> Option<AgendaSettings> {
    let lead_link_lifetime = match &a.lead_link_lifetime {
        None => Some(LeadLinkLifetime::DEFAULT),
        Some(r) => c.parse(r, |text| {
            parse_duration(text)
                .and_then(LeadLinkLifetime::new)
                .map_err(|e| format!("lead_link_lifetime `{text}`: {e}"))
        }),
    };
    Some(AgendaSettings {
        lead_link_lifetime: lead_link_lifetime?,
    })
}

fn person(c: &mut Checker, raw: &S<RawPerson>) -> Option<Person> {
    let p = raw.get_ref();
    let name = c.text(&p.name);
    let email = c.parse(&p.email, |s| {
        let b = parse_mailbox(s)?;
        Ok(b)
    });
    let organisation = c.opt_text(&p.organisation);
    Some(Person {
        email: Mailbox::new(name.as_ref().map(|n| n.as_str().to_owned()), email?.email),
        name: name?,
        organisation: organisation?,
    })
}

fn priorities(c: &mut Checker, raws: &[S<RawPriority>]) -> Vec<Priority> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in raws {
        let p = raw.get_ref();
        let id = c.parse(&p.id, |s| PriorityId::parse(s));
        if let Some(id) = &id
            && !seen.insert(id.clone())
        {
            c.error(p.id.span(), format!("duplicate priority id `{id}`"));
        }
        let name = c.text(&p.name);
        let lead = match &p.lead {
            None => {
                c.error(
                    raw.span(),
                    "this priority has no lead: add a [priority.lead] table with name and email",
                );
                None
            }
            Some(l) => person(c, l),
        };
        let deputy = match &p.deputy {
            None => Some(None),
            Some(d) => person(c, d).map(Some),
        };
        if let (Some(id), Some(name), Some(lead), Some(deputy)) = (id, name, lead, deputy) {
            out.push(Priority {
                id,
                name,
                summary: p.summary.get_ref().trim().to_owned(),
                lead,
                deputy,
            });
        }
    }
    out
}

fn meetings(
    c: &mut Checker,
    raws: &[S<RawMeeting>],
    known: &HashSet<PriorityId>,
    tz: Option<&TimeZone>,
) -> Vec<Meeting> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in raws {
        let m = raw.get_ref();
        let date = c.parse(&m.date, parse_date);
        let start = c.parse(&m.start, parse_time);
        let end = c.parse(&m.end, parse_time);
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            c.error(
                m.end.span(),
                format!("the meeting ends ({e}) before or when it starts ({s})"),
            );
        } else if let (Some(tz), Some(d), Some(s), Some(e)) = (tz, date, start, end) {
            // As the clocks go: a start in the spring gap is taken as an hour later
            // (`schedule::local_instant`), which can be at or after an end written later.
            let at = |t: Time| crate::schedule::local_instant(tz, d.to_datetime(t));
            if at(e) <= at(s) {
                let why: Vec<String> = [s, e]
                    .into_iter()
                    .filter_map(|t| taken_as(tz, d.to_datetime(t)))
                    .collect();
                c.error(
                    m.end.span(),
                    format!(
                        "the meeting ends ({e}) before or when it starts ({s}) as the clocks go \
                         on {d}: {}",
                        why.join("; ")
                    ),
                );
            }
        }
        // Required: an id that defaulted to the date changed when the date did, so moving a
        // meeting made a new one (a new calendar UID, its mail planned and sent again).
        let id = match &m.id {
            Some(id) => c.parse(id, |s| MeetingId::parse(s)),
            None => {
                c.error(raw.span(), missing_meeting_id(date));
                None
            }
        };
        if let (Some(id), Some(raw_id)) = (&id, &m.id)
            && !seen.insert(id.clone())
        {
            c.error(
                raw_id.span(),
                format!("duplicate meeting id `{id}`: give each meeting its own `id`"),
            );
        }
        let title = c.text(&m.title);
        let location = c.opt_text(&m.location);
        let join_url = match &m.join_url {
            None => Some(None),
            Some(u) => c.parse(u, |s| WebUrl::parse(s)).map(Some),
        };
        let status = match &m.status {
            None => Some(MeetingStatus::Confirmed),
            Some(s) => c
                .parse(s, |v| one_of(v, &["confirmed", "cancelled"], "status"))
                .map(|v| {
                    if v == "cancelled" {
                        MeetingStatus::Cancelled
                    } else {
                        MeetingStatus::Confirmed
                    }
                }),
        };
        let mut focus = Vec::new();
        for f in &m.focus {
            match PriorityId::parse(f.get_ref()) {
                Ok(id) if known.contains(&id) => focus.push(id),
                _ => c.error(
                    f.span(),
                    format!("focus names unknown priority `{}`", f.get_ref()),
                ),
            }
        }
        if let (Some(date), Some(tz)) = (date, tz) {
            day_warnings(c, m.date.span(), date, [("start", start), ("end", end)], tz);
        }
        let notes = m
            .notes
            .as_ref()
            .map(|n| n.get_ref().trim().to_owned())
            .filter(|n| !n.is_empty());
        if let (
            Some(id),
            Some(date),
            Some(start),
            Some(end),
            Some(title),
            Some(location),
            Some(join_url),
            Some(status),
        ) = (id, date, start, end, title, location, join_url, status)
        {
            out.push(Meeting {
                id,
                date,
                start,
                end,
                title,
                location,
                join_url,
                status,
                focus,
                notes,
            });
        }
    }
    out.sort_by(|a, b| (a.date, a.start, &a.id).cmp(&(b.date, b.start, &b.id)));
    out
}

/// The error for a `[[meeting]]` without an `id`, with the exact line to add. Until `id` was
/// required it defaulted to the date, so the date is the id the meeting has had so far: adding
/// exactly that keeps its calendar UID, its ledger rows and its agenda proposals.
fn missing_meeting_id(date: Option<Date>) -> String {
    match date {
        Some(d) => format!(
            "the meeting has no `id`: add id = \"{d}\" (its date, the id it has had so far, \
             keeps its calendar UID and its mail); the id names the meeting for good, so keep it \
             when the meeting moves"
        ),
        None => "the meeting has no `id`: add one, such as id = \"YYYY-MM-DD\" with the date \
                 it was first given (the id it has had so far, which keeps its calendar UID and \
                 its mail)"
            .to_owned(),
    }
}

/// Warns about a meeting on a weekend or on a day the clocks change. On that day, a start or end
/// the clocks skip over, or one that happens twice, is named with the time it is taken as
/// (RFC 5545, as the schedule and every calendar take it: [`crate::schedule::local_instant`]).
fn day_warnings(
    c: &mut Checker,
    span: std::ops::Range<usize>,
    date: Date,
    times: [(&str, Option<Time>); 2],
    tz: &TimeZone,
) {
    if matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) {
        c.warning(
            span.clone(),
            format!("the meeting on {date} is on a {:?}", date.weekday()),
        );
    }
    let day_start = crate::schedule::local_instant(tz, date.to_datetime(Time::midnight()));
    let next = date
        .tomorrow()
        .map(|d| crate::schedule::local_instant(tz, d.to_datetime(Time::midnight())));
    if let (Some(t), Ok(next)) = (tz.following(day_start).next(), next)
        && t.timestamp() < next
    {
        let mut message = format!(
            "the clocks change on {date} (to {}): check the meeting's time with members",
            t.abbreviation()
        );
        for (what, time) in times {
            if let Some(time) = time
                && let Some(taken) = taken_as(tz, date.to_datetime(time))
            {
                message.push_str(&format!("; its {what} {taken}"));
            }
        }
        c.warning(span, message);
    }
}

/// For a local time that does not exist in `tz` or happens twice, what it is taken as: "01:30
/// does not exist that day and is taken as 02:30 BST" (the clocks spring forward over it), or
/// "01:30 happens twice that day and is taken as the first, 01:30 BST" (they fall back over it).
/// `None` for a time that happens once.
fn taken_as(tz: &TimeZone, local: jiff::civil::DateTime) -> Option<String> {
    use jiff::tz::AmbiguousOffset;
    let taken = crate::schedule::local_instant(tz, local).to_zoned_datetime(tz.clone());
    let taken = jiff::fmt::strtime::format("%H:%M %Z", &taken)
        .unwrap_or_else(|_| format!("{} ({})", taken.time(), taken.offset()));
    let time = local.strftime("%H:%M");
    match tz.to_ambiguous_zoned_datetime(local).offset() {
        AmbiguousOffset::Unambiguous { .. } => None,
        AmbiguousOffset::Gap { .. } => Some(format!(
            "{time} does not exist that day and is taken as {taken}"
        )),
        AmbiguousOffset::Fold { .. } => Some(format!(
            "{time} happens twice that day and is taken as the first, {taken}"
        )),
    }
}

fn emails(
    c: &mut Checker,
    raws: &[S<RawEmail>],
    templates_dir: Option<&Path>,
    meetings: &[Meeting],
    tz: Option<&TimeZone>,
) -> Vec<EmailRule> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in raws {
        let e = raw.get_ref();
        let id = c.parse(&e.id, |s| EmailId::parse(s));
        if let Some(id) = &id
            && !seen.insert(id.clone())
        {
            c.error(e.id.span(), format!("duplicate email id `{id}`"));
        }
        let template = c.parse(&e.template, |s| TemplateName::parse(s));
        if let (Some(t), Some(dir)) = (&template, templates_dir) {
            let set = dir.join(t.as_str());
            let missing: Vec<&str> = TEMPLATE_FILES
                .iter()
                .copied()
                .filter(|f| !set.join(f).is_file())
                .collect();
            if !missing.is_empty() {
                c.error(
                    e.template.span(),
                    format!(
                        "template `{t}` does not exist: {} lacks {}",
                        set.display(),
                        missing.join(", ")
                    ),
                );
            }
        }
        let trigger = trigger(c, raw);
        let audience = match &e.audience {
            None => Some(Audience::List),
            Some(a) => c
                .parse(a, |v| one_of(v, &["list", "leads", "both"], "audience"))
                .map(|v| match v {
                    "leads" => Audience::Leads,
                    "both" => Audience::Both,
                    _ => Audience::List,
                }),
        };
        let grace = match (&e.grace, trigger) {
            (Some(g), _) => c.parse(g, |s| {
                parse_duration(s).and_then(|d| {
                    // A pass sends its due mails one after another, each up to the SMTP
                    // timeout, so a mail can be seen well after it falls due; `0s` skips every
                    // mail, as the loop reads the clock a moment after the due instant.
                    if d < MIN_GRACE {
                        Err(format!(
                            "a grace of `{s}` can skip the mail: it may be seen after other \
                             sends of the same pass (each up to the SMTP timeout); use at least 1m"
                        ))
                    } else {
                        Ok(d)
                    }
                })
            }),
            (None, Some(t)) => Some(default_grace(&t)),
            (None, None) => None,
        };
        if let (Some(id), Some(template), Some(trigger), Some(audience), Some(grace)) =
            (id, template, trigger, audience, grace)
        {
            let rule = EmailRule {
                id,
                template,
                trigger,
                audience,
                grace,
            };
            if let (Some(tz), Some(at)) = (tz, &e.at) {
                let late = too_late_for(&rule, meetings, tz);
                if !late.is_empty() {
                    c.warning(at.span(), too_late_message(&rule, &late));
                }
            }
            out.push(rule);
        }
    }
    out
}

/// The confirmed meetings for which a `days_before = 0` rule falls due at or after the meeting
/// starts, each with its local start time. No mail goes out once its meeting has started (its
/// deadline is capped at the start, [`crate::schedule::deadline`]), so the rule never sends for
/// them. Other rules cannot: a whole day or more before the date is before any start, and
/// `before = "0s"` is refused as an error in [`trigger`]. Compared as instants, by the rule the
/// schedule uses, so a time the clocks skip counts as where the schedule puts it.
fn too_late_for<'m>(rule: &EmailRule, meetings: &'m [Meeting], tz: &TimeZone) -> Vec<&'m Meeting> {
    if !matches!(rule.trigger, Trigger::DaysBefore { days: 0, .. }) {
        return Vec::new();
    }
    meetings
        .iter()
        .filter(|m| !m.is_cancelled())
        .filter(|m| {
            crate::schedule::due_instant(tz, m, rule).is_some_and(|due| due >= m.starts_at(tz))
        })
        .collect()
}

/// The warning for [`too_late_for`]'s meetings: which ones (the first three, then how many
/// more), and what to change.
fn too_late_message(rule: &EmailRule, late: &[&Meeting]) -> String {
    let at = match rule.trigger {
        Trigger::DaysBefore { at, .. } => at.strftime("%H:%M").to_string(),
        _ => String::new(),
    };
    let mut named: Vec<String> = late
        .iter()
        .take(3)
        .map(|m| format!("`{}` (starts {})", m.id, m.start.strftime("%H:%M")))
        .collect();
    if late.len() > 3 {
        named.push(format!("{} more", late.len() - 3));
    }
    let (which, them) = match late {
        [_] => ("meeting", "it"),
        _ => ("meetings", "them"),
    };
    format!(
        "`{}` (days_before = 0, at = \"{at}\") falls due at or after the start of {which} {}, \
         and no mail goes out once its meeting has started: it will never be sent for {them}; \
         give an earlier `at` or more `days_before`",
        rule.id,
        named.join(", ")
    )
}

fn trigger(c: &mut Checker, raw: &S<RawEmail>) -> Option<Trigger> {
    let e = raw.get_ref();
    let set = [e.days_before.is_some(), e.before.is_some(), e.on.is_some()];
    if set.iter().filter(|b| **b).count() != 1 {
        c.error(raw.span(), "say when this email goes out with exactly one of `days_before` (with `at`), `before` or `on`");
        return None;
    }
    if let Some(days) = &e.days_before {
        let days = c.parse(days, |d| {
            u16::try_from(*d)
                .ok()
                .filter(|d| *d <= 366)
                .ok_or_else(|| format!("days_before must be from 0 to 366, not {d}"))
        });
        let at = match &e.at {
            None => {
                c.error(
                    raw.span(),
                    "`days_before` needs `at`, the local time of day, such as at = \"09:00\"",
                );
                None
            }
            Some(a) => c.parse(a, parse_time),
        };
        return Some(Trigger::DaysBefore {
            days: days?,
            at: at?,
        });
    }
    if let Some(at) = &e.at {
        c.error(at.span(), "`at` only goes with `days_before`");
    }
    if let Some(before) = &e.before {
        return c
            .parse(before, |s| {
                // Due as the meeting starts, for every meeting: and no mail goes out once its
                // meeting has started, so the entry could never send.
                parse_duration(s).and_then(|d| {
                    if d.is_zero() {
                        Err(format!(
                            "before = \"{s}\" falls due as the meeting starts, and no mail goes \
                             out once its meeting has started: this entry would never send; give \
                             a lead time such as \"2h\""
                        ))
                    } else {
                        Ok(d)
                    }
                })
            })
            .map(Trigger::Before);
    }
    let on = e.on.as_ref()?;
    c.parse(on, |v| one_of(v, &["change", "cancellation"], "event"))
        .map(|v| {
            if v == "change" {
                Trigger::OnChange
            } else {
                Trigger::OnCancel
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a day the clocks change, a start or end the clocks skip over is named with the time
    /// the schedule and calendars take it for, a repeated one with its first pass; other times
    /// and other days say nothing.
    #[test]
    fn a_time_the_clocks_skip_or_repeat_says_what_it_is_taken_as() {
        let tz = TimeZone::get("Europe/London").expect("zone");
        let (t, d) = (jiff::civil::time, jiff::civil::date);
        let cases = [
            (
                d(2023, 3, 26),
                t(1, 30, 0, 0),
                Some("01:30 does not exist that day and is taken as 02:30 BST"),
            ),
            (
                d(2023, 3, 26),
                t(1, 0, 0, 0),
                Some("01:00 does not exist that day and is taken as 02:00 BST"),
            ),
            (d(2023, 3, 26), t(2, 0, 0, 0), None),
            (d(2023, 3, 26), t(0, 59, 0, 0), None),
            (
                d(2023, 10, 29),
                t(1, 30, 0, 0),
                Some("01:30 happens twice that day and is taken as the first, 01:30 BST"),
            ),
            (d(2023, 10, 29), t(2, 0, 0, 0), None),
            (d(2023, 6, 7), t(1, 30, 0, 0), None),
        ];
        for (date, time, expected) in cases {
            assert_eq!(
                taken_as(&tz, date.to_datetime(time)).as_deref(),
                expected,
                "{date} {time}"
            );
        }
    }

    #[test]
    fn the_installed_config_is_told_by_its_absolute_directory() {
        let installed = Path::new(INSTALLED_STATE_DIR);
        let local = Path::new("state");
        let etc = Some(Path::new("/etc/convenor"));
        let cases: [(&str, Option<&Path>, &Path); 11] = [
            ("/etc/convenor/convenor.toml", None, installed),
            (
                "/etc/convenor/convenor.toml",
                Some(Path::new("/home/ops")),
                installed,
            ),
            // Relative to the working directory, as `cd /etc/convenor && convenor plan
            // --config convenor.toml` gives it.
            ("convenor.toml", etc, installed),
            ("./convenor.toml", etc, installed),
            ("convenor/convenor.toml", Some(Path::new("/etc")), installed),
            ("../convenor/convenor.toml", etc, installed),
            ("/etc/convenor/../convenor/./convenor.toml", None, installed),
            // Not the installed directory.
            ("convenor.toml", Some(Path::new("/srv/convenor")), local),
            ("config/lednet.toml", etc, local),
            ("/etc/convenor/sub/convenor.toml", None, local),
            // No working directory known: a relative path is not the installed config.
            ("convenor.toml", None, local),
        ];
        for (file, cwd, want) in cases {
            assert_eq!(
                default_state_dir(Path::new(file), cwd),
                want,
                "{file} from {cwd:?}"
            );
        }
    }

    #[test]
    fn a_missing_meeting_id_names_the_date_to_add() {
        let text = missing_meeting_id(Some(jiff::civil::date(2023, 2, 24)));
        assert!(
            text.starts_with(
                "the meeting has no `id`: add id = \"2023-02-24\" (its date, the id it has had \
                 so far, keeps its calendar UID and its mail)"
            ),
            "{text}"
        );
        assert!(missing_meeting_id(None).contains("id = \"YYYY-MM-DD\""));
    }

    /// A `days_before = 0` rule is late for a meeting when its due instant is at or after the
    /// start, compared as the schedule places them: on the day the clocks spring forward
    /// (London, 2023-03-26, 01:00 to 02:00), 01:30 is placed at 02:30 BST, the start of a
    /// meeting at 02:30, though it reads earlier.
    #[test]
    fn a_same_day_rule_is_late_for_meetings_starting_at_or_before_its_time() {
        let tz = TimeZone::get("Europe/London").expect("zone");
        let meeting = |id: &str, date: Date, start: Time, status: MeetingStatus| Meeting {
            id: MeetingId::parse(id).expect("id"),
            date,
            start,
            end: jiff::civil::time(23, 0, 0, 0),
            title: HeaderText::parse("T").expect("title"),
            location: None,
            join_url: None,
            status,
            focus: Vec::new(),
            notes: None,
        };
        let rule = |days: u16, at: Time| EmailRule {
            id: EmailId::parse("same-day").expect("id"),
            template: TemplateName::parse("reminder").expect("template"),
            trigger: Trigger::DaysBefore { days, at },
            audience: Audience::List,
            grace: SignedDuration::from_mins(10),
        };
        let (t, d) = (jiff::civil::time, jiff::civil::date);
        let meetings = [
            meeting(
                "ten",
                d(2023, 6, 7),
                t(10, 0, 0, 0),
                MeetingStatus::Confirmed,
            ),
            meeting(
                "noon",
                d(2023, 6, 8),
                t(12, 0, 0, 0),
                MeetingStatus::Confirmed,
            ),
            meeting(
                "gap",
                d(2023, 3, 26),
                t(2, 30, 0, 0),
                MeetingStatus::Confirmed,
            ),
            meeting(
                "off",
                d(2023, 6, 9),
                t(9, 0, 0, 0),
                MeetingStatus::Cancelled,
            ),
        ];
        let late = |r: &EmailRule| -> Vec<&str> {
            too_late_for(r, &meetings, &tz)
                .iter()
                .map(|m| m.id.as_str())
                .collect()
        };
        assert_eq!(late(&rule(0, t(10, 0, 0, 0))), ["ten", "gap"]);
        assert_eq!(late(&rule(0, t(9, 59, 0, 0))), ["gap"]);
        assert_eq!(late(&rule(0, t(1, 30, 0, 0))), ["gap"]);
        assert!(late(&rule(0, t(1, 29, 0, 0))).is_empty());
        assert_eq!(late(&rule(0, t(18, 0, 0, 0))), ["ten", "noon", "gap"]);
        assert!(late(&rule(1, t(23, 0, 0, 0))).is_empty());
        let message = too_late_message(
            &rule(0, t(18, 0, 0, 0)),
            &too_late_for(&rule(0, t(18, 0, 0, 0)), &meetings, &tz),
        );
        assert!(
            message.starts_with(
                "`same-day` (days_before = 0, at = \"18:00\") falls due at or after the start of \
                 meetings `ten` (starts 10:00), `noon` (starts 12:00), `gap` (starts 02:30)"
            ),
            "{message}"
        );
    }

    /// The shipped config with `[http]`'s commented token line replaced by `lines`, parsed as
    /// if it stood in the repository's `config/` (so its templates are found) under `env`.
    fn shipped_with_http(lines: &str, env: &Environment) -> Result<Config, Vec<String>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lednet.toml");
        let text = std::fs::read_to_string(&path)
            .expect("the shipped config")
            .replace("# feed_token = \"a-long-random-string\"", lines);
        super::super::parse(&path, &text, env)
            .map(|l| l.config)
            .map_err(|e| e.diagnostics().iter().map(ToString::to_string).collect())
    }

    fn credentials(token_file: &str) -> (tempfile::TempDir, Environment) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("feed-token"), token_file).expect("credential");
        let env = Environment {
            credentials_directory: Some(dir.path().to_path_buf()),
            ..Environment::default()
        };
        (dir, env)
    }

    /// `feed_token_credential` reads the token from `$CREDENTIALS_DIRECTORY`, its trailing
    /// newline stripped, as an inline `feed_token` would give it.
    #[test]
    fn the_feed_token_comes_from_its_credential() {
        let token = "Cred-token-0123456789abcdef";
        let (_dir, env) = credentials(&format!("{token}\n"));
        let config = shipped_with_http("feed_token_credential = \"feed-token\"", &env)
            .expect("valid config");
        let got = config.http.feed_token.expect("a token");
        assert_eq!(got.as_str(), token);
        let inline =
            shipped_with_http(&format!("feed_token = \"{token}\""), &env).expect("valid config");
        assert_eq!(inline.http.feed_token, Some(got));
    }

    /// Both an inline token and a credential: an error at the second key, with its position.
    #[test]
    fn an_inline_token_and_a_credential_are_an_error_at_the_credential() {
        let (_dir, env) = credentials("Cred-token-0123456789abcdef\n");
        let errors = shipped_with_http(
            "feed_token = \"Inline-token-0123456789\"\nfeed_token_credential = \"feed-token\"",
            &env,
        )
        .expect_err("both is an error");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("lednet.toml:42:25")
                && errors[0].contains("give only one of feed_token and feed_token_credential"),
            "{errors:?}"
        );
    }

    /// A credential that cannot be used is an error at the key, and never quotes the file.
    #[test]
    fn a_missing_or_bad_credential_is_an_error_at_its_key() {
        let line = "feed_token_credential = \"feed-token\"";
        let at = |errors: &[String], what: &str| {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("lednet.toml:41:25") && errors[0].contains(what),
                "{errors:?}"
            );
        };
        // No $CREDENTIALS_DIRECTORY (a shell): says how to load it.
        let errors = shipped_with_http(line, &Environment::default()).expect_err("no dir");
        at(&errors, "$CREDENTIALS_DIRECTORY is not set");
        at(&errors, "LoadCredential=feed-token:");
        // The directory without the file.
        let (dir, env) = credentials("x");
        std::fs::remove_file(dir.path().join("feed-token")).expect("remove");
        let errors = shipped_with_http(line, &env).expect_err("no file");
        at(
            &errors,
            "cannot read the feed token from systemd credential `feed-token`",
        );
        // A token too short, or with a character a URL segment must not hold.
        for bad in ["short-secret\n", "Bad token with spaces 0123\n"] {
            let (_dir, env) = credentials(bad);
            let errors = shipped_with_http(line, &env).expect_err("bad token");
            at(&errors, "systemd credential `feed-token`: the feed token");
            assert!(!errors[0].contains(bad.trim_end()), "{errors:?}");
        }
        // A name that is not a file name in the directory.
        let (_dir, env) = credentials("Cred-token-0123456789abcdef");
        let errors = shipped_with_http("feed_token_credential = \"../feed-token\"", &env)
            .expect_err("a path");
        at(&errors, "is not a credential name");
    }

    /// A plain-http `base_url` is warned about at its place unless its host is this machine.
    #[test]
    fn a_public_http_base_url_is_warned_about() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lednet.toml");
        let shipped = std::fs::read_to_string(&path).expect("the shipped config");
        for (url, warned) in [
            ("http://calendar.example.org", true),
            ("http://192.0.2.7:8080/lednet", true),
            ("https://calendar.example.org", false),
            ("http://127.0.0.1:8080", false),
            ("http://localhost:8080", false),
            ("http://[::1]:8080", false),
        ] {
            let text = shipped.replace(
                "base_url = \"http://127.0.0.1:8080\"",
                &format!("base_url = \"{url}\""),
            );
            let loaded = super::super::parse(&path, &text, &Environment::default()).expect("valid");
            let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
            let found = warnings
                .iter()
                .any(|w| w.contains("lednet.toml:14:12") && w.contains("plain http"));
            assert_eq!(found, warned, "{url}: {warnings:?}");
        }
    }

    /// A command that does not serve (`check`, `plan`, `release`...), run from a shell
    /// without the credential, loads the config with a warning at the key and a placeholder
    /// token; with the credential directory but not the file, it is still an error; `serve`
    /// (the flag off) still refuses.
    #[test]
    fn commands_from_a_shell_warn_about_a_credential_they_cannot_read() {
        let line = "feed_token_credential = \"feed-token\"";
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lednet.toml");
        let text = std::fs::read_to_string(&path)
            .expect("the shipped config")
            .replace("# feed_token = \"a-long-random-string\"", line);
        let shell = Environment {
            feed_token_may_be_absent: true,
            ..Environment::default()
        };
        let loaded = super::super::parse(&path, &text, &shell).expect("loads with a warning");
        assert_eq!(
            loaded.config.http.feed_token,
            Some(crate::model::FeedToken::placeholder())
        );
        let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("lednet.toml:41:25")
                && warnings[0].contains("not read or checked here"),
            "{warnings:?}"
        );
        let (dir, env) = credentials("x");
        std::fs::remove_file(dir.path().join("feed-token")).expect("remove");
        let env = Environment {
            feed_token_may_be_absent: true,
            ..env
        };
        let errors = shipped_with_http(line, &env).expect_err("the directory without the file");
        assert!(
            errors[0].contains("LoadCredential=feed-token:"),
            "{errors:?}"
        );
        shipped_with_http(line, &Environment::default()).expect_err("serve refuses");
    }

    /// `trusted_proxies`: loopback when absent, the list when given, and each bad entry an
    /// error at its own position.
    #[test]
    fn trusted_proxies_default_to_loopback_and_bad_entries_are_errors_at_their_position() {
        let env = Environment::default();
        let absent = shipped_with_http("", &env).expect("valid");
        assert_eq!(absent.http.trusted_proxies, ProxyNet::LOOPBACK.to_vec());
        let given = shipped_with_http("trusted_proxies = [\"10.0.0.5\", \"192.168.0.0/24\"]", &env)
            .expect("valid");
        let shown: Vec<String> = given
            .http
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.5/32", "192.168.0.0/24"]);
        let errors = shipped_with_http(
            "trusted_proxies = [\"10.0.0.5\", \"proxy\", \"10.1.0.1/8\"]",
            &env,
        )
        .expect_err("bad entries");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("lednet.toml:41:32") && errors[0].contains("`proxy` is not"),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("lednet.toml:41:41") && errors[1].contains("`10.0.0.0/8`"),
            "{errors:?}"
        );
    }

    /// A value as TOML writes it (`"10:00"`, `10:00:00`, `2023-02-24`...).
    fn value(toml_text: &str) -> toml::Value {
        let table: toml::Table = toml::from_str(&format!("v = {toml_text}")).expect("TOML");
        table.get("v").cloned().expect("v")
    }

    /// Dates are `YYYY-MM-DD` and times `HH:MM` (or a TOML time with no seconds): anything
    /// else, an offset, a date, a zone or seconds in particular, is refused, never dropped.
    #[test]
    fn dates_and_times_are_parsed_strictly() {
        let (t, d) = (jiff::civil::time, jiff::civil::date);
        let times = [
            ("\"09:00\"", Ok(t(9, 0, 0, 0))),
            ("\"23:59\"", Ok(t(23, 59, 0, 0))),
            ("\"00:00\"", Ok(t(0, 0, 0, 0))),
            ("09:00", Ok(t(9, 0, 0, 0))),
            ("09:00:00", Ok(t(9, 0, 0, 0))),
            ("09:00:00.000", Ok(t(9, 0, 0, 0))),
            ("\"09:00+05:00\"", Err("carries no offset or zone")),
            ("\"09:00Z\"", Err("carries no offset or zone")),
            ("\"09:00[Europe/Paris]\"", Err("carries no offset or zone")),
            ("\"2023-03-05T18:00+01:00\"", Err("carries no date")),
            ("\"0900\"", Err("not a valid time of day (write HH:MM")),
            ("\"09\"", Err("not a valid time of day (write HH:MM")),
            ("\"9:00\"", Err("not a valid time of day (write HH:MM")),
            ("\" 09:00\"", Err("not a valid time of day (write HH:MM")),
            ("\"09:0٠\"", Err("not a valid time of day (write HH:MM")),
            ("\"24:00\"", Err("not a valid time of day (write HH:MM")),
            ("\"09:60\"", Err("not a valid time of day (write HH:MM")),
            ("\"09:00:60\"", Err("to the minute, without seconds")),
            ("\"10:45:50\"", Err("to the minute, without seconds")),
            ("\"10:45:00\"", Ok(t(10, 45, 0, 0))),
            ("\"10:45:01\"", Err("to the minute, without seconds")),
            ("10:45:50", Err("the time 10:45:50 has seconds")),
            ("10:45:00.25", Err("has seconds")),
            ("2023-02-24T10:00:00", Err("expected a local time")),
            ("2023-02-24T10:00:00+01:00", Err("expected a local time")),
            ("2023-02-24", Err("expected a local time")),
            ("900", Err("expected a local time")),
        ];
        for (text, want) in times {
            let got = parse_time(&value(text));
            match want {
                Ok(time) => assert_eq!(got, Ok(time), "{text}"),
                Err(part) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(part)),
                    "{text}: {got:?}"
                ),
            }
        }
        let dates = [
            ("2023-02-24", Ok(d(2023, 2, 24))),
            ("\"2023-02-24\"", Ok(d(2023, 2, 24))),
            ("\"2024-02-29\"", Ok(d(2024, 2, 29))),
            ("\"2023-02-29\"", Err("not a valid date (write YYYY-MM-DD")),
            ("\"2023-2-24\"", Err("not a valid date (write YYYY-MM-DD")),
            ("\"20230224\"", Err("not a valid date (write YYYY-MM-DD")),
            ("\"+2023-02-24\"", Err("not a valid date (write YYYY-MM-DD")),
            (
                "\"2023-02-24T23:30-05:00\"",
                Err("carries no time, offset or zone"),
            ),
            (
                "\"2023-02-24[Europe/Paris]\"",
                Err("carries no time, offset or zone"),
            ),
            ("\"2023-02-24 \"", Err("carries no time, offset or zone")),
            ("\"0999-02-24\"", Err("year 999 is out of range")),
            ("2023-02-24T23:30:00", Err("expected a date")),
            ("2023-02-24T23:30:00-05:00", Err("expected a date")),
            ("10:00:00", Err("expected a date")),
        ];
        for (text, want) in dates {
            let got = parse_date(&value(text));
            match want {
                Ok(date) => assert_eq!(got, Ok(date), "{text}"),
                Err(part) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(part)),
                    "{text}: {got:?}"
                ),
            }
        }
    }

    /// The shipped config with each `(from, to)` replaced once, parsed as in its place.
    fn shipped_edited(edits: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lednet.toml");
        let mut text = std::fs::read_to_string(&path).expect("the shipped config");
        for (from, to) in edits {
            assert_eq!(text.matches(from).count(), 1, "`{from}` once");
            text = text.replacen(from, to, 1);
        }
        super::super::parse(&path, &text, &Environment::default())
            .map(|l| l.config)
            .map_err(|e| e.diagnostics().iter().map(ToString::to_string).collect())
    }

    /// Every bad `[http]` value is reported, not only the first of them the settings are built
    /// from.
    #[test]
    fn every_bad_http_value_is_reported() {
        let errors = shipped_edited(&[
            ("published_ttl = \"4h\"", "published_ttl = \"soon\""),
            ("cache_max_age = \"1h\"", "cache_max_age = \"later\""),
            ("# max_connections = 256", "max_connections = 0"),
        ])
        .expect_err("bad values");
        assert_eq!(errors.len(), 3, "{errors:?}");
        for (at, what) in [
            ("lednet.toml:45:17", "`soon` is not a duration"),
            ("lednet.toml:46:17", "`later` is not a duration"),
            ("lednet.toml:49:19", "0 must be a whole number"),
        ] {
            assert!(
                errors.iter().any(|e| e.contains(at) && e.contains(what)),
                "{at} {what}: {errors:?}"
            );
        }
    }

    /// `retry_base` is 1s to 1h: a retry waits at most an hour, the first one too.
    #[test]
    fn retry_base_is_at_most_an_hour() {
        let with = |base: &str| {
            shipped_edited(&[("retry_base = \"1m\"", &format!("retry_base = \"{base}\""))])
        };
        assert_eq!(
            with("1h").expect("an hour").scheduler.retry_base,
            SignedDuration::from_hours(1)
        );
        assert_eq!(MAX_RETRY_BASE, SignedDuration::from_hours(1));
        for bad in ["1h 1s", "61m", "1000d"] {
            let errors = with(bad).expect_err("over an hour");
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("lednet.toml:62:14")
                    && errors[0].contains(&format!("retry_base `{bad}` is over an hour")),
                "{errors:?}"
            );
        }
        let errors = with("0s").expect_err("under a second");
        assert!(errors[0].contains("must be at least 1s"), "{errors:?}");
    }

    /// An IPv4-mapped network counts the 96 bits of `::ffff:` in its prefix and is its IPv4
    /// network; spaces around an entry are ignored.
    #[test]
    fn mapped_networks_are_their_ipv4_networks() {
        let p = |s: &str| ProxyNet::parse(s);
        assert_eq!(p("::ffff:10.0.0.0/120"), p("10.0.0.0/24"));
        assert_eq!(p("::ffff:10.0.0.5/128"), p("10.0.0.5"));
        assert_eq!(p("::ffff:10.0.0.5"), p("10.0.0.5/32"));
        assert_eq!(p(" 10.0.0.0/24 "), p("10.0.0.0/24"));
        assert!(p("::ffff:10.0.0.0/95").is_err_and(|e| e.contains("96 to 128")));
        assert!(p("10.0.0.0/33").is_err_and(|e| e.contains("0 to 32")));
        assert_eq!(p("::/0").map(|n| n.to_string()), Ok("::/0".to_owned()));
    }
}
