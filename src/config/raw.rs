//! The config file as written: serde structs that mirror the TOML, with spans for error positions.
//!
//! Every table denies unknown keys, so a misspelt key is an error with its position rather than a
//! setting silently ignored. Nothing here is checked beyond TOML types: see [`super::validate`].

use serde::Deserialize;
use toml::Spanned;

/// A value with its byte range in the file.
pub type S<T> = Spanned<T>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub network: S<RawNetwork>,
    pub mail: S<RawMail>,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub scheduler: RawScheduler,
    #[serde(default)]
    pub agenda: RawAgenda,
    #[serde(default, rename = "priority")]
    pub priorities: Vec<S<RawPriority>>,
    #[serde(default, rename = "meeting")]
    pub meetings: Vec<S<RawMeeting>>,
    #[serde(default, rename = "email")]
    pub emails: Vec<S<RawEmail>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub short_name: S<String>,
    pub name: S<String>,
    pub time_zone: Option<S<String>>,
    pub base_url: S<String>,
    pub contact: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMail {
    pub from: S<String>,
    pub list: S<ListAddresses>,
    pub reply_to: Option<S<String>>,
    pub transport: Option<S<String>>,
    pub templates_dir: Option<S<String>>,
    pub smtp: Option<S<RawSmtp>>,
}

/// `list = "a@x"` or `list = ["a@x", "b@y"]`, each element of the array with its own span.
///
/// Deserialized by hand rather than as an untagged enum: serde buffers an untagged enum's
/// input, which loses the elements' spans and reports any other value as "data did not match
/// any variant".
#[derive(Debug)]
pub enum ListAddresses {
    /// One address.
    One(String),
    /// An array of addresses.
    Many(Vec<S<String>>),
}

impl<'de> Deserialize<'de> for ListAddresses {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ListAddresses;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address or a list of addresses")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ListAddresses::One(v.to_owned()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(addr) = seq.next_element::<S<String>>()? {
                    out.push(addr);
                }
                Ok(ListAddresses::Many(out))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: S<String>,
    pub port: Option<S<i64>>,
    pub tls: Option<S<String>>,
    pub user: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub password_credential: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<S<String>>,
    pub feed_token: Option<S<String>>,
    pub feed_token_credential: Option<S<String>>,
    pub refresh_interval: Option<S<String>>,
    pub published_ttl: Option<S<String>>,
    pub cache_max_age: Option<S<String>>,
    pub metrics_listen: Option<S<String>>,
    pub header_timeout: Option<S<String>>,
    pub request_timeout: Option<S<String>>,
    pub max_connections: Option<S<i64>>,
    pub trusted_proxies: Option<Vec<S<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub dir: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    pub max_catch_up: Option<S<i64>>,
    pub retry_base: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgenda {
    pub lead_link_lifetime: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerson {
    pub name: S<String>,
    pub email: S<String>,
    pub organisation: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriority {
    pub id: S<String>,
    pub name: S<String>,
    pub summary: S<String>,
    pub lead: Option<S<RawPerson>>,
    pub deputy: Option<S<RawPerson>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeeting {
    pub id: Option<S<String>>,
    pub date: S<toml::Value>,
    pub start: S<toml::Value>,
    pub end: S<toml::Value>,
    pub title: S<String>,
    pub location: Option<S<String>>,
    pub join_url: Option<S<String>>,
    pub status: Option<S<String>>,
    #[serde(default)]
    pub focus: Vec<S<String>>,
    pub notes: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    pub id: S<String>,
    pub template: S<String>,
    pub days_before: Option<S<i64>>,
    pub at: Option<S<toml::Value>>,
    pub before: Option<S<String>>,
    pub on: Option<S<String>>,
    pub audience: Option<S<String>>,
    pub grace: Option<S<String>>,
}
