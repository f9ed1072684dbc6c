//! `convenor check` for templates: render every template set against every meeting, and once
//! against made-up cases of what a real mail can carry that the config does not show (the state
//! before a change, an agenda with items), so a broken template fails at check time, not at 9am
//! on send day. Start and reload render a bounded sample instead ([`Templates::check_sample`]).

use std::{borrow::Cow, collections::BTreeSet};

use jiff::{Span, Timestamp};

use super::{
    compose::describe,
    context::{self, ContextInput},
    templates::{TemplateError, Templates},
};
use crate::{
    agenda::{
        Agenda,
        model::{AgendaGroup, AgendaItem},
    },
    model::{Config, EmailRule, HeaderText, Meeting, MeetingStatus, TemplateName, Trigger, WebUrl},
    revision::{Significant, StoredRevision},
    schedule::{self, Recipient},
};

/// What a successful check rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Template sets checked.
    pub sets: usize,
    /// Renders done (set x meeting x recipient, and the made-up cases).
    pub renders: usize,
}

impl Templates {
    /// Renders every template set the schedule uses against every meeting of `config`, for
    /// every recipient its schedule entries name, and then the made-up cases once (see
    /// [`Templates::check_sample`]). Change and cancellation notices get a `change` as the
    /// outbox gives them one: a change notice a made-up previous time (one week earlier), a
    /// cancellation notice the meeting as it was before it was called off. A set no entry uses
    /// is never sent, so only its syntax is checked (by [`Templates::load`]): what it would be
    /// sent to is unknown. Returns each distinct fault once, naming file and line and one case
    /// it broke.
    pub fn check_all(&self, config: &Config) -> Result<CheckReport, Vec<TemplateError>> {
        self.check_meetings(config, &config.meetings.iter().collect::<Vec<_>>())
    }

    /// What `convenor serve` checks at start and on every reload: every rule, for every
    /// recipient it names, against a sample of meetings ([`sample`]) instead of all of them,
    /// and the made-up cases ([`made_up_cases`]) once.
    ///
    /// The trade-off: [`Templates::check_all`] at 5,000 meetings is about 38,000 renders (most
    /// of a two-second start-up); the sample is at most a few hundred whatever the number of
    /// meetings. It renders every template set, every rule and every recipient kind (the list
    /// and every priority's lead), on meetings covering each combination of the optional
    /// fields a template can branch on (cancelled or not, with or without location, join link,
    /// notes and focus), so a template that fails for any rule, any recipient or any shape of
    /// meeting still stops the start or the reload.
    ///
    /// What a mail carries beyond the config is made up, and rendered once per rule and
    /// recipient of one meeting, not per meeting of the sample: every rule with a made-up
    /// agenda holding items (two groups, an item with a presenter and a summary on two lines,
    /// one without) and with an empty one, so a fault in an agenda item fails before a lead
    /// accepts one (an agenda decision on the web then renders nothing new); change and
    /// cancellation notices with every kind of "before" a real change can have (nothing
    /// shown changed, the time, the place changed, added or removed, the join link changed,
    /// added or removed, all at once) on the meeting with and without a place and a join
    /// link, so each branch on `change` is rendered.
    ///
    /// What only the full check catches is a fault that depends on one particular value (a
    /// filter failing on one title, a branch on one date): `convenor check`, which renders
    /// everything, is the tool to run before a reload. Past the sample, such a fault shows at
    /// send time: that one mail fails permanently, with the template's error recorded in its
    /// ledger row (`convenor plan`, `/metrics`), and every other mail still goes.
    pub fn check_sample(&self, config: &Config) -> Result<CheckReport, Vec<TemplateError>> {
        self.check_meetings(config, &sample(config))
    }

    /// [`Templates::check_sample`] with the sample already drawn (`sample(config)`), for a
    /// caller that checks other templates against the same meetings.
    pub fn check_sample_of(
        &self,
        config: &Config,
        sample: &[&Meeting],
    ) -> Result<CheckReport, Vec<TemplateError>> {
        self.check_meetings(config, sample)
    }

    fn check_meetings(
        &self,
        config: &Config,
        meetings: &[&Meeting],
    ) -> Result<CheckReport, Vec<TemplateError>> {
        let mut errors: Vec<TemplateError> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut renders = 0;
        let mut outcome = |result: Result<(), TemplateError>| {
            renders += 1;
            if let Err(e) = result
                && seen.insert(e.without_during().to_string())
            {
                errors.push(e);
            }
        };
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
                        let case = Case::of(config, meeting, rule);
                        outcome(self.check_one(config, rule, &recipient, &case));
                    }
                }
            }
        }
        // The made-up cases, once per rule: on the first meeting that rule mails anyone about.
        for rule in &config.emails {
            let Some((meeting, recipients)) = meetings.iter().find_map(|m| {
                let r = schedule::recipients(config, m, rule);
                (!r.is_empty()).then_some((*m, r))
            }) else {
                continue;
            };
            for case in made_up_cases(config, meeting, rule) {
                for recipient in &recipients {
                    outcome(self.check_one(config, rule, recipient, &case));
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
        rule: &EmailRule,
        recipient: &Recipient,
        case: &Case<'_>,
    ) -> Result<(), TemplateError> {
        let meeting: &Meeting = &case.meeting;
        let revision = StoredRevision {
            sequence: 0,
            last_modified: Timestamp::UNIX_EPOCH,
            significant: Significant::of(config, meeting),
            content_digest: String::new(),
            agenda_digest: String::new(),
        };
        let during = match &case.made_up {
            Some(what) => format!("{}, made up: {what}", describe(meeting, rule, recipient)),
            None => describe(meeting, rule, recipient),
        };
        let mut ctx = context::build(ContextInput {
            config,
            meeting,
            rule,
            recipient,
            revision: &revision,
            change: case.before.as_ref(),
        })
        .map_err(|e| TemplateError::Template {
            path: self.dir().join(rule.template.as_str()),
            line: None,
            message: e.to_string(),
            during: None,
        })
        .map_err(|e| e.during(&during))?;
        if let Some(agenda) = &case.agenda {
            ctx.agenda = agenda.clone();
        }
        self.render(&rule.template, &ctx)
            .map(|_| ())
            .map_err(|e| e.during(&during))
    }
}

/// One way a rule's mail is rendered: the meeting (the config's, or a made-up shape of it), the
/// state before for a notice, and an agenda in place of the meeting's own.
#[derive(Clone, Debug)]
pub struct Case<'a> {
    /// The meeting as the mail shows it.
    pub meeting: Cow<'a, Meeting>,
    /// The `change` "before" state (change and cancellation notices only).
    pub before: Option<Significant>,
    /// An agenda shown instead of the meeting's compiled one.
    pub agenda: Option<Agenda>,
    /// What was made up, for the error message; `None` for the config's own meeting.
    pub made_up: Option<String>,
}

impl<'a> Case<'a> {
    /// The meeting as configured, with the "before" a notice of `rule` gets by default.
    fn of(config: &Config, meeting: &'a Meeting, rule: &EmailRule) -> Self {
        Self {
            meeting: Cow::Borrowed(meeting),
            before: default_before(config, meeting, rule),
            agenda: None,
            made_up: None,
        }
    }
}

/// Whether mails of `rule` carry `change` (the state before): change and cancellation notices,
/// as the outbox sends them ([`crate::scheduler::outbox`]).
pub fn carries_change(rule: &EmailRule) -> bool {
    matches!(rule.trigger, Trigger::OnChange | Trigger::OnCancel)
}

/// The "before" a notice is checked with against every meeting: for a change notice the meeting
/// one week earlier, for a cancellation notice the meeting as it was (confirmed).
fn default_before(config: &Config, meeting: &Meeting, rule: &EmailRule) -> Option<Significant> {
    match rule.trigger {
        Trigger::OnChange => Some(week_earlier(Significant::of(config, meeting))),
        Trigger::OnCancel => Some(Significant {
            status: MeetingStatus::Confirmed.as_str().to_owned(),
            ..Significant::of(config, meeting)
        }),
        Trigger::DaysBefore { .. } | Trigger::Before(_) => None,
    }
}

fn week_earlier(mut s: Significant) -> Significant {
    if let Ok(d) = s
        .date
        .parse::<jiff::civil::Date>()
        .and_then(|d| d.checked_sub(Span::new().days(7)))
    {
        s.date = d.to_string();
    }
    s
}

/// A place and a join link no meeting has, for the made-up shapes and "before" states.
const MADE_UP_PLACE: &str = "Made-up place, Room 1";
const MADE_UP_LINK: &str = "https://meet.example.org/made-up";
const EARLIER_PLACE: &str = "Earlier made-up place, Room 2";
const EARLIER_LINK: &str = "https://meet.example.org/earlier-made-up";

/// The made-up cases a rule's templates are rendered in once, on `meeting` (see
/// [`Templates::check_sample`]): every rule with [`made_up_agenda`] and with an empty agenda;
/// a change or cancellation notice, on `meeting` with and without a place and a join link,
/// with each "before" a real change can have (nothing shown changed, as when a cancelled
/// meeting is called on again; the time; the place changed, added or removed; the join link
/// changed, added or removed; all of them).
pub fn made_up_cases<'a>(config: &Config, meeting: &'a Meeting, rule: &EmailRule) -> Vec<Case<'a>> {
    let mut cases = Vec::new();
    for (agenda, what) in [
        (made_up_agenda(config, meeting), "an agenda with items"),
        (
            Agenda {
                empty: true,
                ..Agenda::default()
            },
            "an empty agenda",
        ),
    ] {
        cases.push(Case {
            agenda: Some(agenda),
            made_up: Some(what.to_owned()),
            ..Case::of(config, meeting, rule)
        });
    }
    if !carries_change(rule) {
        return cases;
    }
    let place = HeaderText::parse(MADE_UP_PLACE).ok();
    let link = WebUrl::parse(MADE_UP_LINK).ok();
    let status = match rule.trigger {
        Trigger::OnCancel => MeetingStatus::Cancelled,
        _ => MeetingStatus::Confirmed,
    };
    for (location, join_url) in [
        (None, None),
        (place.clone(), None),
        (None, link.clone()),
        (place, link),
    ] {
        let shape = Meeting {
            location,
            join_url,
            status,
            ..meeting.clone()
        };
        // Before a change or a cancellation the meeting was on; a change that shows nothing
        // changed calls a cancelled meeting on again.
        let was = Significant {
            status: MeetingStatus::Confirmed.as_str().to_owned(),
            ..Significant::of(config, &shape)
        };
        let unchanged = Significant {
            status: match status {
                MeetingStatus::Cancelled => MeetingStatus::Confirmed,
                MeetingStatus::Confirmed => MeetingStatus::Cancelled,
            }
            .as_str()
            .to_owned(),
            ..was.clone()
        };
        let other_place = Some(EARLIER_PLACE.to_owned());
        let other_link = Some(EARLIER_LINK.to_owned());
        let befores = [
            ("nothing shown changed", unchanged),
            ("the time changed", week_earlier(was.clone())),
            (
                "the place changed or removed",
                Significant {
                    location: other_place.clone(),
                    ..was.clone()
                },
            ),
            (
                "the place added",
                Significant {
                    location: None,
                    ..was.clone()
                },
            ),
            (
                "the join link changed or removed",
                Significant {
                    join_url: other_link.clone(),
                    ..was.clone()
                },
            ),
            (
                "the join link added",
                Significant {
                    join_url: None,
                    ..was.clone()
                },
            ),
            (
                "time, place and join link changed",
                Significant {
                    location: other_place,
                    join_url: other_link,
                    ..week_earlier(was.clone())
                },
            ),
        ];
        // What a template can tell apart: "added" to a meeting without it is "nothing changed".
        let mut done = BTreeSet::new();
        for (what, before) in befores {
            if !done.insert((
                before.date.clone(),
                before.location.clone(),
                before.join_url.clone(),
            )) {
                continue;
            }
            let shown = match (&shape.location, &shape.join_url) {
                (None, None) => "no place, no join link",
                (Some(_), None) => "a place, no join link",
                (None, Some(_)) => "no place, a join link",
                (Some(_), Some(_)) => "a place and a join link",
            };
            cases.push(Case {
                meeting: Cow::Owned(shape.clone()),
                before: Some(before),
                agenda: None,
                made_up: Some(format!("{what}, now {shown}")),
            });
        }
    }
    cases
}

/// A made-up agenda with items for `meeting`, in the shape [`crate::agenda::model::compile`] gives
/// one: two groups (the config's first two priorities, or made-up ones), an item with a
/// presenter and a summary on two lines, one without a presenter.
pub fn made_up_agenda(config: &Config, meeting: &Meeting) -> Agenda {
    let mut names = config
        .priorities
        .iter()
        .map(|p| (p.id.as_str().to_owned(), p.name.as_str().to_owned()))
        .chain([
            ("made-up-1".to_owned(), "Made-up priority 1".to_owned()),
            ("made-up-2".to_owned(), "Made-up priority 2".to_owned()),
        ]);
    let start = meeting.start.strftime("%H:%M").to_string();
    let item = |id: i64, presenter: Option<&str>, summary: &str| AgendaItem {
        id,
        title: format!("Made-up item {id}"),
        summary: summary.to_owned(),
        presenter: presenter.map(str::to_owned),
        proposer: "Sample Person (Sample Borough)".to_owned(),
        minutes: 15,
        start: start.clone(),
        end: start.clone(),
    };
    let mut groups = Vec::new();
    for items in [
        vec![
            item(
                1,
                Some("Sample Person (Sample Borough)"),
                "A summary.\nOn two lines.",
            ),
            item(2, None, "One line."),
        ],
        vec![item(3, None, "One line.")],
    ] {
        let Some((priority, name)) = names.next() else {
            break;
        };
        groups.push(AgendaGroup {
            priority,
            name,
            items,
        });
    }
    Agenda {
        groups,
        minutes: 45,
        empty: false,
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
        // Once every lead is covered, no meeting is chosen for its leads any more.
        if leads.len() < config.priorities.len() {
            for p in config.priorities_of(m) {
                if leads.insert(p.id.as_str()) {
                    chosen[i] = true;
                }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Environment, parse};

    /// The shipped config with a copy of the shipped templates in `dir` whose `file` is edited
    /// by `edit` (the edit must change it), and its state in `dir`.
    fn shipped_with(dir: &Path, file: &str, edit: impl Fn(&str) -> String) -> Config {
        let to = dir.join("templates");
        for set in std::fs::read_dir("templates").expect("templates") {
            let set = set.expect("entry").path();
            let dest = to.join(set.file_name().expect("name"));
            std::fs::create_dir_all(&dest).expect("mkdir");
            for f in std::fs::read_dir(&set).expect("set") {
                let f = f.expect("entry").path();
                std::fs::copy(&f, dest.join(f.file_name().expect("name"))).expect("copy");
            }
        }
        let path = to.join(file);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_ne!(edit(&text), text, "the edit changed nothing in {file}");
        std::fs::write(&path, edit(&text)).expect("write");
        let config = std::fs::read_to_string("config/lednet.toml").expect("example config");
        let config = config.replace(
            "# templates_dir = \"templates\"",
            &format!("templates_dir = {:?}", to.display().to_string()),
        );
        let config = format!(
            "{config}\n[state]\ndir = {:?}\n",
            dir.join("state").display().to_string()
        );
        parse(
            Path::new("config/lednet.toml"),
            &config,
            &Environment::default(),
        )
        .expect("valid")
        .config
    }

    /// The reviewer's reproductions: a fault in a branch that only a real change, a real
    /// cancellation or an accepted item takes. Each fails `convenor check` (every meeting), the
    /// start and the reload (`daemon::mail_parts`: the sample), naming the file and line.
    #[test]
    fn a_fault_in_a_branch_only_real_mail_takes_fails_check_start_and_reload() {
        /// A template file, its edit, and the line of the fault.
        type Case<'a> = (&'a str, &'a dyn Fn(&str) -> String, usize);
        let cases: [Case<'_>; 5] = [
            (
                "change-notice/body.txt",
                &|t| {
                    t.replace(
                        "{{ change.before.location or \"not set\" }}",
                        "{{ change.before.locaton }}",
                    )
                },
                11,
            ),
            (
                "change-notice/body.txt",
                &|t| {
                    t.replace(
                        "{{ change.before.join_url or \"none\" }}",
                        "{{ change.before.joinurl }}",
                    )
                },
                16,
            ),
            (
                "cancellation-notice/body.txt",
                &|t| format!("{t}{{% if change %}}{{{{ change.before.whenn }}}}{{% endif %}}"),
                24,
            ),
            (
                "agenda-pack/body.txt",
                &|t| t.replace("{{ i.title }}", "{{ i.titel }}"),
                23,
            ),
            (
                "reminder/body.html",
                &|t| t.replace("{{ i.title }}", "{{ i.titel }}"),
                32,
            ),
        ];
        for (file, edit, line) in cases {
            let dir = tempfile::tempdir().expect("tmp");
            let config = shipped_with(dir.path(), file, edit);
            let templates = Templates::load(&config.mail.templates_dir).expect("syntax is fine");
            let want = format!("{file}:{line}: undefined value");
            for (what, result) in [
                ("check", templates.check_all(&config)),
                ("sample", templates.check_sample(&config)),
            ] {
                let errors = result.expect_err(what);
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                assert!(
                    text.iter().any(|e| e.contains(&want)),
                    "{what}: {want} in {text:?}"
                );
            }
            let Err(e) = crate::daemon::mail_parts(&config) else {
                panic!("{file}: start and reload go ahead");
            };
            assert!(e.to_string().contains(&want), "{want} in {e}");
        }
    }

    /// The mail to a lead about a proposal sees the agenda too: an item's fault fails before
    /// any item is accepted.
    #[test]
    fn an_agenda_item_fault_in_the_proposal_mail_fails_start_and_reload() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = shipped_with(dir.path(), "proposal-received/body.txt", |t| {
            format!(
                "{t}{{% for g in agenda.groups %}}{{% for i in g.items %}}{{{{ i.titel }}}}{{% endfor %}}{{% endfor %}}"
            )
        });
        let templates = Templates::load(&config.mail.templates_dir).expect("syntax is fine");
        let every: Vec<&Meeting> = config.meetings.iter().collect();
        for meetings in [every, sample(&config)] {
            let e = crate::agenda::notify::check(&config, &templates, &meetings)
                .expect_err("the made-up agenda is rendered");
            assert!(e.to_string().contains("undefined value"), "{e}");
        }
        assert!(crate::daemon::mail_parts(&config).is_err());
    }

    /// The made-up cases of a change or cancellation notice take every branch a real change
    /// can: nothing shown changed, each of time, place and join link alone (a place and a link
    /// changed, added and removed) and all three.
    #[test]
    fn made_up_notices_take_every_kind_of_change() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = shipped_with(dir.path(), "reminder/subject.txt", |t| format!("{t} "));
        for email in ["change-notice", "cancellation-notice"] {
            let rule = config
                .emails
                .iter()
                .find(|r| r.id.as_str() == email)
                .expect("rule");
            let mut seen = BTreeSet::new();
            let mut agendas = BTreeSet::new();
            for meeting in &config.meetings {
                for case in made_up_cases(&config, meeting, rule) {
                    let m: &Meeting = &case.meeting;
                    let (rev, _) =
                        crate::revision::next_revision(None, &config, m, Timestamp::UNIX_EPOCH);
                    let ctx = context::build(ContextInput {
                        config: &config,
                        meeting: m,
                        rule,
                        recipient: &Recipient::List,
                        revision: &rev,
                        change: case.before.as_ref(),
                    })
                    .expect("context");
                    if let Some(a) = &case.agenda {
                        agendas.insert((
                            a.empty,
                            a.groups.iter().map(|g| g.items.len()).sum::<usize>(),
                        ));
                    }
                    let ch = ctx.change.expect("a notice carries change");
                    if case.agenda.is_none() {
                        assert_eq!(m.is_cancelled(), email == "cancellation-notice");
                    }
                    let presence = |b: &Option<String>, a: &Option<String>| match (b, a) {
                        (None, None) => "none",
                        (Some(_), None) => "removed",
                        (None, Some(_)) => "added",
                        (Some(x), Some(y)) if x == y => "same",
                        (Some(_), Some(_)) => "changed",
                    };
                    seen.insert((
                        ch.time_changed,
                        presence(&ch.before.location, &ch.after.location),
                        presence(&ch.before.join_url, &ch.after.join_url),
                    ));
                }
            }
            assert_eq!(agendas, BTreeSet::from([(false, 3), (true, 0)]), "{email}");
            for want in [
                (false, "none", "none"),
                (true, "none", "none"),
                (false, "changed", "none"),
                (false, "added", "none"),
                (false, "removed", "none"),
                (false, "none", "changed"),
                (false, "none", "added"),
                (false, "none", "removed"),
                (true, "changed", "changed"),
            ] {
                assert!(seen.contains(&want), "{email}: {want:?} not in {seen:?}");
            }
        }
    }

    /// The made-up cases are rendered once per rule and recipient, not per meeting: the sample
    /// of a config with many more meetings renders as many of them.
    #[test]
    fn the_made_up_cases_cost_the_same_whatever_the_number_of_meetings() {
        let dir = tempfile::tempdir().expect("tmp");
        let few = shipped_with(dir.path(), "reminder/subject.txt", |t| format!("{t} "));
        let templates = Templates::load(&few.mail.templates_dir).expect("templates");
        let rendered = |c: &Config| -> usize {
            c.emails
                .iter()
                .map(|rule| {
                    let first = c
                        .meetings
                        .iter()
                        .find(|m| !schedule::recipients(c, m, rule).is_empty())
                        .expect("a meeting");
                    made_up_cases(c, first, rule).len() * schedule::recipients(c, first, rule).len()
                })
                .sum()
        };
        let per_meeting = |c: &Config| -> usize {
            let s = sample(c);
            c.emails
                .iter()
                .map(|rule| {
                    s.iter()
                        .map(|m| schedule::recipients(c, m, rule).len())
                        .sum::<usize>()
                })
                .sum()
        };
        let report = templates.check_sample(&few).expect("renders");
        assert_eq!(report.renders, per_meeting(&few) + rendered(&few));
        let all = templates.check_all(&few).expect("renders");
        let every: usize = few
            .emails
            .iter()
            .map(|rule| {
                few.meetings
                    .iter()
                    .map(|m| schedule::recipients(&few, m, rule).len())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(all.renders, every + rendered(&few));
    }
}
