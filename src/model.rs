//! Validated domain types: a value of one of these types is valid by construction.
//!
//! Nothing here reads a file, a socket or the clock. [`crate::config`] is the only place that
//! builds a [`Config`] from text; every other module takes these types as given.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use jiff::{
    SignedDuration, Timestamp,
    civil::{Date, DateTime, Time},
    tz::TimeZone,
};
use lettre::message::Mailbox;

/// Defines a string newtype that can only hold a slug: lowercase ASCII letters, digits and `-`,
/// starting with a letter or digit, at most 64 bytes.
macro_rules! slug_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Parses a slug, saying what is wrong with it when it is not one.
            pub fn parse(text: &str) -> Result<Self, String> {
                parse_slug(text).map(|s| Self(s.to_owned()))
            }

            /// The slug as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn parse_slug(text: &str) -> Result<&str, String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if text.is_empty() {
        Err("an id must not be empty".into())
    } else if text.len() > 64 {
        Err(format!("id `{text}` is longer than 64 characters"))
    } else if !text.chars().all(ok_char) || text.starts_with('-') {
        Err(format!(
            "id `{text}` must be a slug: lowercase letters, digits and `-`, not starting with `-`"
        ))
    } else {
        Ok(text)
    }
}

slug_type!(
    /// The stable id of a meeting, required in the config (`[[meeting]] id`); it never changes,
    /// even when the meeting moves, because the feed's UIDs and the ledger's keys are derived
    /// from it.
    MeetingId
);
slug_type!(
    /// The stable id of a strategic priority, used in feed paths such as `/priorities/<id>.ics`.
    PriorityId
);
slug_type!(
    /// The id of one entry in the mail schedule (`[[email]]`), a key of the ledger.
    EmailId
);
slug_type!(
    /// The name of a template set: a directory under the templates directory.
    TemplateName
);

/// Text that is safe in a mail header: one line, no CR, LF or other control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderText(String);

impl HeaderText {
    /// Accepts one line of text, refusing CR, LF and other control characters (header injection).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            let what = match c {
                '\r' => "a carriage return (CR)".to_owned(),
                '\n' => "a line feed (LF)".to_owned(),
                other => format!("the control character U+{:04X}", other as u32),
            };
            return Err(format!(
                "this value ends up in a mail header and must be one line, but it contains {what}"
            ));
        }
        if text.trim().is_empty() {
            return Err("this value must not be empty".into());
        }
        Ok(Self(text.trim().to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute `http` or `https` URL, without whitespace or control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WebUrl(String);

impl WebUrl {
    /// Accepts an absolute http(s) URL with a host.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| format!("`{text}` is not an absolute http:// or https:// URL"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("URL `{text}` has no host"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "URL `{text}` contains whitespace or a control character"
            ));
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }

    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The network that meets: its names, its time zone, where it publishes and who runs it.
#[derive(Clone, Debug)]
pub struct Network {
    /// Short name, such as `LEDNet`: used in subjects, the calendar name and UIDs.
    pub short_name: HeaderText,
    /// Full name, such as "London Environment Directors' Network".
    pub name: HeaderText,
    /// The IANA zone all local dates and times are in.
    pub time_zone: TimeZone,
    /// The IANA name of [`Network::time_zone`], such as `Europe/London`.
    pub time_zone_name: String,
    /// The public base URL of this convenor instance (subscribe page and feeds live under it).
    pub base_url: WebUrl,
    /// The team's contact address: ORGANIZER in the feed, named in every mail.
    pub contact: Mailbox,
    /// What follows the `@` of every calendar UID (`lednet.convenor`). Loading a config makes
    /// it from the short name ([`uid_domain_of`]); the service then takes the one its ledger
    /// pinned at the first start instead ([`crate::ledger::Store::pin_uid_domain`]), so
    /// renaming the network never changes a UID (a changed UID is a duplicate and an orphan in
    /// every subscriber's calendar).
    pub uid_domain: String,
}

/// The UID domain a network gets at its first start: its short name as lowercase ASCII
/// letters, digits and `-` (`network` if none is left), then `.convenor`.
pub fn uid_domain_of(short_name: &str) -> String {
    let slug: String = short_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    format!(
        "{}.convenor",
        if slug.is_empty() { "network" } else { slug }
    )
}

// By hand because jiff's `TimeZone` has no `Hash`. The zone is hashed by its IANA name and by
// its rules: jiff reads the system's tz database (/usr/share/zoneinfo, updated by the tzdata
// package) before the copy bundled in the binary, so the same name can come to mean other
// offsets, and the plan stamp and the feed cache must then not be trusted. The destructuring
// makes a new field a compile error here, so the config digest (crate::digest) can never miss
// one.
impl std::hash::Hash for Network {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let Self {
            short_name,
            name,
            time_zone,
            time_zone_name,
            base_url,
            contact,
            uid_domain,
        } = self;
        (
            short_name,
            name,
            time_zone_name,
            base_url,
            contact,
            uid_domain,
        )
            .hash(state);
        hash_zone_rules(time_zone, state);
    }
}

/// The instants between which a zone's rules are hashed: wider than any meeting's date.
const ZONE_RULES_FROM: Timestamp = Timestamp::constant(-2_208_988_800, 0); // 1900-01-01
const ZONE_RULES_UNTIL: Timestamp = Timestamp::constant(7_258_118_400, 0); // 2200-01-01

/// Hashes what `zone` says between [`ZONE_RULES_FROM`] and [`ZONE_RULES_UNTIL`]: the offset at
/// the start and every transition after it (instant, offset, abbreviation, DST or not).
fn hash_zone_rules<H: std::hash::Hasher>(zone: &TimeZone, state: &mut H) {
    use std::hash::Hash as _;
    zone.to_offset(ZONE_RULES_FROM).seconds().hash(state);
    for transition in zone
        .following(ZONE_RULES_FROM)
        .take_while(|t| t.timestamp() < ZONE_RULES_UNTIL)
    {
        (
            transition.timestamp().as_second(),
            transition.offset().seconds(),
            transition.abbreviation(),
            transition.dst().is_dst(),
        )
            .hash(state);
    }
}

/// A person who leads (or deputises for) a priority.
#[derive(Clone, Debug, Hash)]
pub struct Person {
    /// Display name.
    pub name: HeaderText,
    /// Mail address.
    pub email: Mailbox,
    /// The person's organisation (borough, agency).
    pub organisation: Option<HeaderText>,
}

/// One of the network's strategic priorities.
#[derive(Clone, Debug, Hash)]
pub struct Priority {
    /// Stable id.
    pub id: PriorityId,
    /// Display name, such as "Finance and Investment".
    pub name: HeaderText,
    /// What the priority is about (may span lines; never used in a header).
    pub summary: String,
    /// The designated lead.
    pub lead: Person,
    /// An optional deputy.
    pub deputy: Option<Person>,
}

/// Whether a meeting goes ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MeetingStatus {
    /// The meeting takes place.
    Confirmed,
    /// The meeting was called off; it stays in the feed, marked cancelled.
    Cancelled,
}

impl MeetingStatus {
    /// The config and ledger spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One meeting of the network, in the network's local time.
#[derive(Clone, Debug, Hash)]
pub struct Meeting {
    /// Stable id, given in the config (the shipped meetings use their first date, `2023-02-24`).
    pub id: MeetingId,
    /// Local date.
    pub date: Date,
    /// Local start time.
    pub start: Time,
    /// Local end time, after [`Meeting::start`] on the same day.
    pub end: Time,
    /// Title, such as "LEDNet meeting".
    pub title: HeaderText,
    /// Where it is held, if in person.
    pub location: Option<HeaderText>,
    /// Online join link, if any.
    pub join_url: Option<WebUrl>,
    /// Confirmed or cancelled.
    pub status: MeetingStatus,
    /// Priorities in focus, each known to the config.
    pub focus: Vec<PriorityId>,
    /// Free notes for members (may span lines).
    pub notes: Option<String>,
}

impl Meeting {
    /// True when `priority` is in this meeting's focus (every priority is when none is named).
    pub fn has_in_focus(&self, priority: &PriorityId) -> bool {
        self.focus.is_empty() || self.focus.contains(priority)
    }

    /// The local start as a civil date-time.
    pub fn local_start(&self) -> DateTime {
        self.date.to_datetime(self.start)
    }

    /// The local end as a civil date-time.
    pub fn local_end(&self) -> DateTime {
        self.date.to_datetime(self.end)
    }

    /// The instant the meeting starts, by the RFC 5545 rule (see [`crate::schedule::local_instant`]).
    pub fn starts_at(&self, tz: &TimeZone) -> Timestamp {
        crate::schedule::local_instant(tz, self.local_start())
    }

    /// The instant the meeting ends, by the RFC 5545 rule.
    pub fn ends_at(&self, tz: &TimeZone) -> Timestamp {
        crate::schedule::local_instant(tz, self.local_end())
    }

    /// True when the meeting is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.status == MeetingStatus::Cancelled
    }
}

/// When a scheduled email becomes due, relative to its meeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// Whole days before the meeting's date, at a local time of day.
    DaysBefore {
        /// Days before the meeting's date (0 is the meeting day itself).
        days: u16,
        /// Local time of day.
        at: Time,
    },
    /// A fixed duration before the meeting's start instant.
    Before(SignedDuration),
    /// Sent once whenever the meeting's time or place changes.
    OnChange,
    /// Sent once when the meeting is cancelled.
    OnCancel,
}

/// Who receives a scheduled email.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    /// The mailing list(s).
    List,
    /// Each lead of the priorities concerned, one message per lead.
    Leads,
    /// Both the list and each lead.
    Both,
}

impl Audience {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Leads => "leads",
            Self::Both => "both",
        }
    }
}

/// One entry of the mail schedule: which template goes to whom, when.
#[derive(Clone, Debug, Hash)]
pub struct EmailRule {
    /// Stable id, a ledger key.
    pub id: EmailId,
    /// The template set to render.
    pub template: TemplateName,
    /// When it becomes due.
    pub trigger: Trigger,
    /// Who receives it.
    pub audience: Audience,
    /// How late it may still go out after its due instant (never after the meeting starts).
    pub grace: SignedDuration,
}

/// How mail leaves convenor.
#[derive(Clone, Debug, Hash)]
pub enum TransportSettings {
    /// Write each message as an `.eml` file under `<state_dir>/outbox`.
    File,
    /// Deliver through an SMTP server.
    Smtp(SmtpSettings),
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit,
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    StartTls,
    /// No TLS at all; only accepted for a loopback relay, and only when the config says so.
    Plaintext,
}

/// Where the SMTP password comes from; it is never in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PasswordSource {
    /// No authentication.
    None,
    /// Read from this file (trailing newline stripped).
    File(PathBuf),
    /// Read from `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`).
    Credential(String),
    /// Read from this environment variable (for development).
    Env(String),
}

/// SMTP relay settings.
#[derive(Clone, Debug, Hash)]
pub struct SmtpSettings {
    /// Relay host name (also the name its certificate must carry).
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// User name for AUTH, if any.
    pub user: Option<String>,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// An extra PEM CA certificate to trust (for a private relay).
    pub ca_file: Option<PathBuf>,
    /// Bound on every send, connection included.
    pub timeout: SignedDuration,
}

/// Mail settings shared by every message.
#[derive(Clone, Debug, Hash)]
pub struct MailSettings {
    /// The From mailbox.
    pub from: Mailbox,
    /// The mailing list address(es): To of every list mail.
    pub list: Vec<Mailbox>,
    /// Reply-To, if replies should go somewhere else than From.
    pub reply_to: Option<Mailbox>,
    /// The transport.
    pub transport: TransportSettings,
    /// The directory holding one sub-directory per template set.
    pub templates_dir: PathBuf,
}

/// A secret path segment that hides the feeds: `/<token>/calendar.ics`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FeedToken(String);

impl FeedToken {
    /// Accepts a token of at least 16 URL-safe characters (`A-Z a-z 0-9 - _`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if text.len() < 16 {
            return Err("the feed token must be at least 16 characters long".into());
        }
        if !text.chars().all(ok) {
            return Err("the feed token may only hold A-Z, a-z, 0-9, `-` and `_`".into());
        }
        Ok(Self(text.to_owned()))
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What stands in for a token kept in a systemd credential when a command runs without it
    /// (see [`crate::config::Environment::feed_token_may_be_absent`]): feed URLs such a command
    /// prints show this, never a real token.
    pub fn placeholder() -> Self {
        Self("FEED-TOKEN-NOT-READ-HERE".to_owned())
    }
}

impl fmt::Debug for FeedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeedToken(<redacted>)")
    }
}

/// A trusted proxy: an address or a CIDR network (`10.0.0.5`, `192.168.0.0/24`, `fd00::/8`)
/// whose `X-Forwarded-For` is believed (`[http] trusted_proxies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProxyNet {
    /// The network's address, with no bit set past the prefix.
    addr: IpAddr,
    /// The prefix length: up to 32 for IPv4, 128 for IPv6.
    prefix: u8,
}

impl ProxyNet {
    /// The loopback networks (`127.0.0.0/8`, `::1/128`): the trusted proxies when the config
    /// names none.
    pub const LOOPBACK: [Self; 2] = [
        Self {
            addr: IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        Self {
            addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ];

    /// Accepts `addr` or `addr/prefix` (spaces around it ignored); an IPv4-mapped IPv6
    /// address or network (`::ffff:10.0.0.0/120`) is taken as its IPv4 one (`10.0.0.0/24`),
    /// as peers are matched, and a network with bits set past its prefix is refused (a likely
    /// typo). An IPv6 network never holds IPv4 peers: `::/0` is not `0.0.0.0/0`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let written = addr_text.parse::<IpAddr>().map_err(|_| {
            format!("`{text}` is not an address or network such as 10.0.0.5 or 192.168.0.0/24")
        })?;
        let addr = written.to_canonical();
        // An IPv4-mapped network's prefix counts the 96 bits of `::ffff:` too.
        let (max, offset): (u8, u8) = match (written.is_ipv4(), addr.is_ipv4()) {
            (true, _) => (32, 0),
            (false, true) => (128, 96),
            (false, false) => (128, 0),
        };
        let prefix = match prefix_text {
            None => max - offset,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| (offset..=max).contains(p))
                .map(|p| p - offset)
                .ok_or_else(|| format!("`{text}`: the prefix length must be {offset} to {max}"))?,
        };
        let net = Self { addr, prefix };
        if net.masked(addr) != addr {
            return Err(format!(
                "`{text}` has bits set past its /{prefix}: the network is `{}/{prefix}`",
                net.masked(addr)
            ));
        }
        Ok(net)
    }

    /// `ip` with every bit past this network's prefix cleared (`ip` of the same family).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// Whether `ip` (taken canonically: an IPv4-mapped address as IPv4) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl fmt::Display for ProxyNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// HTTP server and feed settings.
#[derive(Clone, Debug, Hash)]
pub struct HttpSettings {
    /// Address the server binds.
    pub listen: SocketAddr,
    /// Optional secret path segment for the feeds.
    pub feed_token: Option<FeedToken>,
    /// `REFRESH-INTERVAL` advertised in the feed.
    pub refresh_interval: SignedDuration,
    /// `X-PUBLISHED-TTL` advertised in the feed.
    pub published_ttl: SignedDuration,
    /// `Cache-Control: max-age` on the feeds.
    pub cache_max_age: SignedDuration,
    /// Where `/metrics` and `/healthz` are served instead of `listen`, if set.
    pub metrics_listen: Option<SocketAddr>,
    /// A client must send a request's headers within this (else the connection is closed).
    pub header_timeout: SignedDuration,
    /// The most a request may take from its headers to its response (else 503), and the
    /// longest a response's writing may wait on a client that reads nothing (else the
    /// connection is closed; never less than `http::server::MIN_WRITE_STALL`).
    pub request_timeout: SignedDuration,
    /// At most this many connections at once; more wait in the listen backlog.
    pub max_connections: u32,
    /// Peers whose `X-Forwarded-For` names the client ([`ProxyNet::LOOPBACK`] by default).
    pub trusted_proxies: Vec<ProxyNet>,
}

/// Scheduler settings.
#[derive(Clone, Debug, Hash)]
pub struct SchedulerSettings {
    /// More mails than this becoming due at once is treated as a clock jump: none is sent until
    /// an operator releases them.
    pub max_catch_up: u32,
    /// The wait before the first retry after a transient failure; each further retry waits
    /// twice as long (capped at an hour), with jitter. Config key `retry_base`, default 1m.
    pub retry_base: SignedDuration,
}

/// How long a lead link works after it is issued (config key `[agenda] lead_link_lifetime`):
/// from [`LeadLinkLifetime::MIN`] to [`LeadLinkLifetime::MAX`] by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeadLinkLifetime(SignedDuration);

impl LeadLinkLifetime {
    /// The shortest: a link should survive the time its mail takes to be read.
    pub const MIN: Self = Self(SignedDuration::from_hours(1));
    /// The longest: a year. A link meant to work longer defeats the expiry.
    pub const MAX: Self = Self(SignedDuration::from_hours(365 * 24));
    /// The default, 30 days: a proposal that comes in just before the call closes (22 days
    /// before the meeting, by the shipped schedule) is still open to its lead until the agenda
    /// pack goes out (3 days before), and a mail forwarded or leaked stops opening the page
    /// within a month.
    pub const DEFAULT: Self = Self(SignedDuration::from_hours(30 * 24));

    /// The lifetime `duration`, or why it is out of range.
    pub fn new(duration: SignedDuration) -> Result<Self, String> {
        if duration < Self::MIN.0 {
            Err(format!(
                "a lead link lifetime under {} lets links expire before their mail is read",
                Self::MIN
            ))
        } else if duration > Self::MAX.0 {
            Err(format!(
                "a lead link lifetime over {} defeats the expiry; give at most 365d",
                Self::MAX
            ))
        } else {
            Ok(Self(duration))
        }
    }

    /// The duration.
    pub fn duration(self) -> SignedDuration {
        self.0
    }

    /// When a link issued at `issued` stops working.
    pub fn expiry(self, issued: Timestamp) -> Timestamp {
        issued.checked_add(self.0).unwrap_or(Timestamp::MAX)
    }
}

/// Written for people: `30 days`, `12 hours`, `90 minutes` (whole seconds).
impl fmt::Display for LeadLinkLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (n, unit) = if secs % 86_400 == 0 {
            (secs / 86_400, "day")
        } else if secs % 3_600 == 0 {
            (secs / 3_600, "hour")
        } else if secs % 60 == 0 {
            (secs / 60, "minute")
        } else {
            (secs, "second")
        };
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// Agenda settings (the `[agenda]` table).
#[derive(Clone, Debug, Hash)]
pub struct AgendaSettings {
    /// How long a lead link works after it is issued.
    pub lead_link_lifetime: LeadLinkLifetime,
}

/// The whole validated configuration.
#[derive(Clone, Debug, Hash)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    /// The network.
    pub network: Network,
    /// Mail settings.
    pub mail: MailSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// Scheduler settings.
    pub scheduler: SchedulerSettings,
    /// Agenda settings (the `[agenda]` table; [`Config::agenda`] is the compiled agenda).
    pub agenda_settings: AgendaSettings,
    /// The state directory (ledger, outbox, lock).
    pub state_dir: PathBuf,
    /// Priorities, in config order, ids unique.
    pub priorities: Vec<Priority>,
    /// Meetings, sorted by start, ids unique.
    pub meetings: Vec<Meeting>,
    /// The mail schedule, in config order, ids unique.
    pub emails: Vec<EmailRule>,
    /// The compiled agendas: not from the TOML but from the agenda store, attached after every
    /// load by [`crate::agenda::attach`] (empty until then).
    pub agenda: crate::agenda::Book,
}

impl Config {
    /// The priority with this id.
    pub fn priority(&self, id: &PriorityId) -> Option<&Priority> {
        self.priorities.iter().find(|p| &p.id == id)
    }

    /// The meeting with this id.
    pub fn meeting(&self, id: &MeetingId) -> Option<&Meeting> {
        self.meetings.iter().find(|m| &m.id == id)
    }

    /// The schedule entry with this id.
    pub fn email(&self, id: &EmailId) -> Option<&EmailRule> {
        self.emails.iter().find(|e| &e.id == id)
    }

    /// The priorities a meeting concerns: those in its focus, or every priority when it names none.
    pub fn priorities_of<'a>(&'a self, meeting: &'a Meeting) -> impl Iterator<Item = &'a Priority> {
        self.priorities
            .iter()
            .filter(move |p| meeting.has_in_focus(&p.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_link_lifetimes_are_bounded_and_read_as_people_write_them() {
        let h = SignedDuration::from_hours;
        for (duration, ok, shown) in [
            (SignedDuration::from_mins(59), false, ""),
            (h(1), true, "1 hour"),
            (h(36), true, "36 hours"),
            (SignedDuration::from_mins(90), true, "90 minutes"),
            (SignedDuration::from_secs(3_601), true, "3601 seconds"),
            (h(24), true, "1 day"),
            (h(30 * 24), true, "30 days"),
            (h(365 * 24), true, "365 days"),
            (h(365 * 24 + 1), false, ""),
            (-h(2), false, ""),
        ] {
            let lifetime = LeadLinkLifetime::new(duration);
            assert_eq!(lifetime.is_ok(), ok, "{duration:?}");
            if let Ok(l) = lifetime {
                assert_eq!(l.to_string(), shown);
                assert_eq!(l.duration(), duration);
            }
        }
        assert_eq!(LeadLinkLifetime::DEFAULT.to_string(), "30 days");
        let t: Timestamp = "2026-01-10T10:00:00Z".parse().expect("instant");
        assert_eq!(
            LeadLinkLifetime::DEFAULT.expiry(t).to_string(),
            "2026-02-09T10:00:00Z"
        );
        assert_eq!(LeadLinkLifetime::MAX.expiry(Timestamp::MAX), Timestamp::MAX);
    }
}
