//! `convenor check` for templates: render every template set against every meeting, so a broken
//! template fails at check time, not at 9am on send day.

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
            for meeting in &config.meetings {
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
            significant: Significant::of(meeting),
            content_digest: String::new(),
            agenda_digest: String::new(),
        };
        let before = matches!(rule.trigger, Trigger::OnChange).then(|| made_up_before(meeting));
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

/// The meeting as if it had been one week earlier, for rendering change notices.
fn made_up_before(meeting: &Meeting) -> Significant {
    let mut s = Significant::of(meeting);
    if let Ok(d) = meeting.date.checked_sub(Span::new().days(7)) {
        s.date = d.to_string();
    }
    s
}
