//! Loading and rendering the mail templates (minijinja), and checking them all up front.
//!
//! Each template set is a directory under `mail.templates_dir` holding `subject.txt`,
//! `body.txt` and `body.html`. Undefined variables are errors (`UndefinedBehavior::Strict`),
//! `.html` templates are HTML-autoescaped, and every error names the template file and line.
//! Loading reads the files (the edge); rendering is pure.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, syntax::SyntaxConfig};

use super::context::Context;
use crate::model::TemplateName;

/// The files every template set must have.
pub const FILES: [&str; 3] = ["subject.txt", "body.txt", "body.html"];

/// A template problem, naming the file (and the line when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The templates directory or a template file could not be read.
    #[error("{}: cannot read: {message}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A template set the config names has no directory.
    #[error("{}: no such template set `{name}`", dir.display())]
    UnknownSet {
        /// The templates directory.
        dir: PathBuf,
        /// The set's name.
        name: String,
    },
    /// A template failed to parse or render.
    #[error("{}{}: {message}{}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), during.as_ref().map(|d| format!(" (rendering {d})")).unwrap_or_default())]
    Template {
        /// The template file.
        path: PathBuf,
        /// The line, when minijinja knows it.
        line: Option<usize>,
        /// What went wrong.
        message: String,
        /// What was being rendered (meeting, email, recipient), if anything.
        during: Option<String>,
    },
    /// The subject rendered to something that cannot be a header.
    #[error("{}: the subject {message}{}", path.display(), during.as_ref().map(|d| format!(" (rendering {d})")).unwrap_or_default())]
    Subject {
        /// The subject template.
        path: PathBuf,
        /// What is wrong.
        message: String,
        /// What was being rendered.
        during: Option<String>,
    },
}

impl TemplateError {
    /// The same error with what was being rendered attached.
    pub fn during(mut self, what: impl fmt::Display) -> Self {
        match &mut self {
            Self::Template { during, .. } | Self::Subject { during, .. } => {
                *during = Some(what.to_string());
            }
            Self::Read { .. } | Self::UnknownSet { .. } => {}
        }
        self
    }

    /// The same error without the rendering detail (to group repeats of one fault).
    pub fn without_during(&self) -> Self {
        let mut e = self.clone();
        if let Self::Template { during, .. } | Self::Subject { during, .. } = &mut e {
            *during = None;
        }
        e
    }
}

/// One rendered mail: subject, text body and HTML body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, one line, trimmed.
    pub subject: String,
    /// The text/plain body.
    pub text: String,
    /// The text/html body.
    pub html: String,
}

/// Every template set of a templates directory, parsed.
pub struct Templates {
    dir: PathBuf,
    sets: BTreeSet<String>,
    env: Environment<'static>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("dir", &self.dir)
            .field("sets", &self.sets)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Reads and parses every template set (every sub-directory, or symbolic link to one) of
    /// `dir`.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let read_err = |path: &Path, e: std::io::Error| TemplateError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut sets = BTreeSet::new();
        let mut sources = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| read_err(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| read_err(dir, e))?;
            // Links followed, as `config::validate` follows them when it checks that a set's
            // files exist: a set may be a symbolic link to a directory. A link that cannot be
            // followed (dangling, looping, or to a place this user may not read) is no set, as
            // links were none before (the config's check names the files a set it uses lacks).
            let is_dir = match std::fs::metadata(entry.path()) {
                Ok(meta) => meta.is_dir(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) if entry.file_type().is_ok_and(|t| t.is_symlink()) => {
                    tracing::warn!(
                        "{}: a link that cannot be followed ({e}); not a template set",
                        entry.path().display()
                    );
                    false
                }
                Err(e) => return Err(read_err(&entry.path(), e)),
            };
            if !is_dir {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            for file in FILES {
                let path = entry.path().join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
                sources.push((format!("{name}/{file}"), text));
            }
            sets.insert(name);
        }
        Self::from_sources(dir, sets, sources)
    }

    fn from_sources(
        dir: &Path,
        sets: BTreeSet<String>,
        sources: Vec<(String, String)>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let mut syntax = SyntaxConfig::builder();
        syntax.trim_blocks(true).lstrip_blocks(true);
        // The builder only fails on conflicting custom delimiters, which are not set here.
        if let Ok(s) = syntax.build() {
            env.set_syntax(s);
        }
        let mut out = Self {
            dir: dir.to_path_buf(),
            sets,
            env,
        };
        for (name, text) in sources {
            out.env
                .add_template_owned(name, text)
                .map_err(|e| out.error(&e))?;
        }
        Ok(out)
    }

    /// The templates directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the template sets found.
    pub fn sets(&self) -> impl Iterator<Item = &str> {
        self.sets.iter().map(String::as_str)
    }

    /// True when a template set of this name was loaded.
    pub fn has(&self, set: &TemplateName) -> bool {
        self.sets.contains(set.as_str())
    }

    /// Renders a template set against a context. The subject is trimmed and must be one
    /// non-empty line: a subject that renders a line break is refused, never sanitised, so a
    /// value can never add a header.
    pub fn render(&self, set: &TemplateName, ctx: &Context) -> Result<Rendered, TemplateError> {
        if !self.has(set) {
            return Err(TemplateError::UnknownSet {
                dir: self.dir.clone(),
                name: set.to_string(),
            });
        }
        // The context made a template value once for the three templates (handed to each as
        // `Serde(ctx)`, it was serialised again for each).
        let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
        let one = |file: &str| -> Result<String, TemplateError> {
            let name = format!("{set}/{file}");
            let t = self.env.get_template(&name).map_err(|e| self.error(&e))?;
            t.render(ctx.clone()).map_err(|e| self.error(&e))
        };
        let subject = one("subject.txt")?;
        let subject = subject.trim();
        let path = self.dir.join(set.as_str()).join("subject.txt");
        if let Some(c) = subject.chars().find(|c| c.is_control()) {
            return Err(TemplateError::Subject {
                path,
                message: format!(
                    "must be one line but renders the control character U+{:04X}",
                    c as u32
                ),
                during: None,
            });
        }
        if subject.is_empty() {
            return Err(TemplateError::Subject {
                path,
                message: "renders empty".into(),
                during: None,
            });
        }
        let mut text = one("body.txt")?;
        let mut html = one("body.html")?;
        for body in [&mut text, &mut html] {
            if !body.ends_with('\n') {
                body.push('\n');
            }
        }
        Ok(Rendered {
            subject: subject.to_owned(),
            text,
            html,
        })
    }

    /// A minijinja error as a [`TemplateError`] naming the file and line.
    fn error(&self, e: &minijinja::Error) -> TemplateError {
        let path = e
            .name()
            .map_or_else(|| self.dir.clone(), |n| self.dir.join(n));
        let mut message = e.kind().to_string();
        if let Some(detail) = e.detail() {
            message = format!("{message}: {detail}");
        }
        TemplateError::Template {
            path,
            line: e.line(),
            message,
            during: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds templates from inline sources for one set `t`.
    pub(crate) fn inline(
        subject: &str,
        text: &str,
        html: &str,
    ) -> Result<Templates, TemplateError> {
        Templates::from_sources(
            Path::new("/tpl"),
            BTreeSet::from(["t".to_owned()]),
            vec![
                ("t/subject.txt".into(), subject.into()),
                ("t/body.txt".into(), text.into()),
                ("t/body.html".into(), html.into()),
            ],
        )
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let err = inline("ok", "line one\n{{ oops(", "<p></p>").expect_err("syntax error");
        let text = err.to_string();
        assert!(text.starts_with("/tpl/t/body.txt:2: "), "{text}");
    }

    /// A set that is a symbolic link to a directory is loaded, as the config's check (which
    /// follows links to the set's files) accepts it; a dangling or looping link is no set.
    #[test]
    fn a_set_linked_to_a_directory_is_loaded() {
        let root = tempfile::tempdir().expect("tempdir");
        let shared = root.path().join("shared/reminder");
        std::fs::create_dir_all(&shared).expect("shared set");
        for file in FILES {
            std::fs::write(shared.join(file), "{{ meeting.title }}").expect("template");
        }
        let dir = root.path().join("templates");
        std::fs::create_dir(&dir).expect("templates dir");
        std::os::unix::fs::symlink(&shared, dir.join("linked")).expect("symlink");
        std::os::unix::fs::symlink(root.path().join("gone"), dir.join("dangling"))
            .expect("dangling symlink");
        std::os::unix::fs::symlink(dir.join("looping"), dir.join("looping"))
            .expect("looping symlink");
        let linked = TemplateName::parse("linked").expect("slug");
        assert!(
            FILES.iter().all(|f| dir.join("linked").join(f).is_file()),
            "the config's check sees the set's files"
        );
        let t = Templates::load(&dir).expect("loads");
        assert!(t.has(&linked), "{t:?}");
        assert_eq!(t.sets().collect::<Vec<_>>(), ["linked"]);
        let rendered = t.render(&linked, &context()).expect("renders");
        assert!(rendered.subject.starts_with("Budget"), "{rendered:?}");
    }

    fn context() -> Context {
        let path = Path::new("config/lednet.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let text = text.replacen(
            "title = \"LEDNet meeting\"",
            "title = \"Budget <script>alert('x')</script> & more\"",
            1,
        );
        let c = crate::config::parse(path, &text, &crate::config::Environment::default())
            .expect("valid")
            .config;
        let m = &c.meetings[0];
        let (rev, _) = crate::revision::next_revision(None, &c, m, jiff::Timestamp::UNIX_EPOCH);
        super::super::context::build(super::super::context::ContextInput {
            config: &c,
            meeting: m,
            rule: &c.emails[0],
            recipient: &crate::schedule::Recipient::List,
            revision: &rev,
            change: None,
        })
        .expect("context")
    }

    fn set() -> TemplateName {
        TemplateName::parse("t").expect("slug")
    }

    #[test]
    fn html_is_autoescaped_and_text_is_not() {
        let t = inline(
            "{{ meeting.title }}",
            "{{ meeting.title }}",
            "<h1>{{ meeting.title }}</h1>",
        )
        .expect("parse");
        let r = t.render(&set(), &context()).expect("render");
        assert_eq!(
            r.html,
            "<h1>Budget &lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; more</h1>\n"
        );
        assert_eq!(r.text, "Budget <script>alert('x')</script> & more\n");
        assert_eq!(r.subject, "Budget <script>alert('x')</script> & more");
    }

    #[test]
    fn an_undefined_variable_is_an_error_naming_the_template() {
        let t = inline("ok", "Hello\n{{ meeting.venue }}", "<p></p>").expect("parse");
        let err = t.render(&set(), &context()).expect_err("undefined");
        let text = err.to_string();
        assert!(
            text.starts_with("/tpl/t/body.txt:2: undefined value"),
            "{text}"
        );
        // Strict: even a top-level unknown name and iteration over one fail.
        let t = inline("ok", "{% for x in nothing %}{% endfor %}", "<p></p>").expect("parse");
        assert!(t.render(&set(), &context()).is_err());
    }

    #[test]
    fn a_subject_must_be_one_nonempty_line() {
        let t = inline("A{{ '\\n' }}Bcc: x@y", "b", "h").expect("parse");
        let err = t.render(&set(), &context()).expect_err("newline");
        assert!(err.to_string().contains("must be one line"), "{err}");
        let t = inline("  {{ '' }}\n", "b", "h").expect("parse");
        let err = t.render(&set(), &context()).expect_err("empty");
        assert!(err.to_string().contains("renders empty"), "{err}");
        let t = inline("  Fine subject \n", "b", "h").expect("parse");
        assert_eq!(
            t.render(&set(), &context()).expect("ok").subject,
            "Fine subject"
        );
    }
}
