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
    model::{Audience, Config, EmailId, EmailRule, Meeting, TemplateName, Trigger},
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
    /// Renders every template set against every meeting of `config`, for every recipient its
    /// schedule entries name (the list and each lead for a set no entry uses). Sets used by a
    /// change entry, and sets no entry uses, get a made-up previous time and place (one week
    /// earlier). Returns each distinct fault once, naming file and line and one case it broke.
    pub fn check_all(&self, config: &Config) -> Result<CheckReport, Vec<TemplateError>> {
        let mut errors: Vec<TemplateError> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut renders = 0;
        let mut sets: BTreeSet<String> = self.sets().map(str::to_owned).collect();
        sets.extend(config.emails.iter().map(|r| r.template.to_string()));
        for set in &sets {
            let Ok(name) = TemplateName::parse(set) else {
                continue; // a directory that no rule can name
            };
            let rules: Vec<EmailRule> = {
                let used: Vec<EmailRule> = config
                    .emails
                    .iter()
                    .filter(|r| r.template == name)
                    .cloned()
                    .collect();
                if used.is_empty() {
                    unused_rule(&name).into_iter().collect()
                } else {
                    used
                }
            };
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

/// A rule for a set no schedule entry uses: to the list and every lead, as a change notice.
/// (Template names and email ids share the slug grammar, so the id always parses.)
fn unused_rule(name: &TemplateName) -> Option<EmailRule> {
    Some(EmailRule {
        id: EmailId::parse(name.as_str()).ok()?,
        template: name.clone(),
        trigger: Trigger::OnChange,
        audience: Audience::Both,
        grace: jiff::SignedDuration::ZERO,
    })
}

/// The meeting as if it had been one week earlier, for rendering change notices.
fn made_up_before(meeting: &Meeting) -> Significant {
    let mut s = Significant::of(meeting);
    if let Ok(d) = meeting.date.checked_sub(Span::new().days(7)) {
        s.date = d.to_string();
    }
    s
}
