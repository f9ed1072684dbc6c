//! `convenor check` for templates: render every template set against every meeting, so a broken
//! template fails at check time, not at 9am on send day. Start and reload render a bounded
//! sample instead ([`Templates::check_sample`]).

use std::collections::BTreeSet;

use jiff::{Span, Timestamp};

use super::{
    compose::describe,
    context::{self, ContextInput},
    templates::{TemplateError, Templates},
};
use crate::{
    model::{Config, EmailRule, Meeting, TemplateName, Trigger},
    revision::{Significant, StoredRevision},
    schedule::{self, Recipient},
};

/// What a successful check rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Template sets checked.
    pub sets: usize,
    /// Renders done (set x meeting x recipient).
    pub renders: usize,
}

impl Templates {
    /// Renders every template set the schedule uses against every meeting of `config`, for
    /// every recipient its schedule entries name. Sets used by a change entry get a made-up
    /// previous time and place (one week earlier). A set no entry uses is never sent, so only
    /// its syntax is checked (by [`Templates::load`]): what it would be sent to is unknown.
    /// Returns each distinct fault once, naming file and line and one case it broke.
    pub fn check_all(&self, config: &Config) -> Result<CheckReport, Vec<TemplateError>> {
        self.check_meetings(config, &config.meetings.iter().collect::<Vec<_>>())
    }

    /// What `convenor serve` checks at start and on every reload: every rule, for every
    /// recipient it names, against a sample of meetings ([`sample`]) instead of all of them.
    ///
    /// The trade-off: [`Templates::check_all`] at 5,000 meetings is about 38,000 renders (most
    /// of a two-second start-up); the sample is at most a few hundred whatever the number of
    /// meetings. It renders every template set, every rule and every recipient kind (the list
    /// and every priority's lead), on meetings covering each combination of the optional
    /// fields a template can branch on (cancelled or not, with or without location, join link,
    /// notes and focus), so a template that fails for any rule, any recipient or any shape of
    /// meeting still stops the start or the reload. What only the full check catches is a
    /// fault that depends on one particular value (a filter failing on one title, a branch on
    /// one date): `convenor check`, which renders everything, is the tool to run before a
    /// reload. Past the sample, such a fault shows at send time: that one mail fails
    /// permanently, with the template's error recorded in its ledger row (`convenor plan`,
    /// `/metrics`), and every other mail still goes.
    pub fn check_sample(&self, config: &Config) -> Result<CheckReport, Vec<TemplateError>> {
        self.check_meetings(config, &sample(config))
    }

    fn check_meetings(
        &self,
        config: &Config,
        meetings: &[&Meeting],
    ) -> Result<CheckReport, Vec<TemplateError>> {
        let mut errors: Vec<TemplateError> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut renders = 0;
        let sets: BTreeSet<String> = config
            .emails
            .iter()
            .map(|r| r.template.to_string())
            .collect();
        for set in &sets {
            let Ok(name) = TemplateName::parse(set) else {
                continue; // a directory that no rule can name
            };
            let rules: Vec<&EmailRule> = config
                .emails
                .iter()
                .filter(|r| r.template == name)
                .collect();
            for meeting in meetings {
                for rule in &rules {
                    for recipient in schedule::recipients(config, meeting, rule) {
                        renders += 1;
                        if let Err(e) = self.check_one(config, meeting, rule, &recipient)
                            && seen.insert(e.without_during().to_string())
                        {
                            errors.push(e);
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(CheckReport {
                sets: sets.len(),
                renders,
            })
        } else {
            Err(errors)
        }
    }

    fn check_one(
        &self,
        config: &Config,
        meeting: &Meeting,
        rule: &EmailRule,
        recipient: &Recipient,
    ) -> Result<(), TemplateError> {
        let revision = StoredRevision {
            sequence: 0,
            last_modified: Timestamp::UNIX_EPOCH,
            significant: Significant::of(config, meeting),
            content_digest: String::new(),
            agenda_digest: String::new(),
        };
        let before =
            matches!(rule.trigger, Trigger::OnChange).then(|| made_up_before(config, meeting));
        let during = describe(meeting, rule, recipient);
        let ctx = context::build(ContextInput {
            config,
            meeting,
            rule,
            recipient,
            revision: &revision,
            change: before.as_ref(),
        })
        .map_err(|e| TemplateError::Template {
            path: self.dir().join(rule.template.as_str()),
            line: None,
            message: e.to_string(),
            during: None,
        })
        .map_err(|e| e.during(&during))?;
        self.render(&rule.template, &ctx)
            .map(|_| ())
            .map_err(|e| e.during(&during))
    }
}

/// The meetings [`Templates::check_sample`] renders, in config order: the first meeting of each
/// combination of the optional fields (cancelled, location, join link, notes, focus, a compiled
/// agenda with items), the first meeting concerning each priority (so every lead is a recipient
/// at least once), and the last meeting. At most 64 + priorities + 1 meetings, whatever the size
/// of the config.
///
/// A field added to [`Meeting`] that templates can branch on belongs in the shape here.
pub fn sample(config: &Config) -> Vec<&Meeting> {
    let mut chosen = vec![false; config.meetings.len()];
    let mut shapes = BTreeSet::new();
    let mut leads = BTreeSet::new();
    for (i, m) in config.meetings.iter().enumerate() {
        let shape = (
            m.is_cancelled(),
            m.location.is_some(),
            m.join_url.is_some(),
            m.notes.is_some(),
            m.focus.is_empty(),
            config.agenda.0.get(m.id.as_str()).is_some_and(|a| !a.empty),
        );
        if shapes.insert(shape) {
            chosen[i] = true;
        }
        for p in config.priorities_of(m) {
            if leads.insert(p.id.as_str()) {
                chosen[i] = true;
            }
        }
    }
    if let Some(last) = chosen.last_mut() {
        *last = true;
    }
    config
        .meetings
        .iter()
        .zip(chosen)
        .filter_map(|(m, c)| c.then_some(m))
        .collect()
}

/// The meeting as if it had been one week earlier, for rendering change notices.
fn made_up_before(config: &Config, meeting: &Meeting) -> Significant {
    let mut s = Significant::of(config, meeting);
    if let Ok(d) = meeting.date.checked_sub(Span::new().days(7)) {
        s.date = d.to_string();
    }
    s
}
