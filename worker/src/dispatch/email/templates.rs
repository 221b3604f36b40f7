//! The e-mails' templates: for each outcome, a plain-text file whose first
//! line is `Subject: …` and an HTML file, with `{{name}}` variables
//! substituted (HTML-escaped in the HTML part). The built-in ones are in
//! `worker/templates/email/`; a file of the same name in
//! `EMAIL_TEMPLATES_DIR` replaces one, read and checked at start-up.
//!
//! No template engine: a template is parsed once into text and variables,
//! so an unknown variable is an error at start-up, and rendering cannot
//! fail.

use std::fmt;
use std::path::Path;

use anyhow::{Context as _, bail};

/// A value a template can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `verified`, `requires_input` or `manual_review`.
    Outcome,
    /// Counted failed submissions of the person, capped at the limit.
    FailedAttempts,
    /// Submissions the person has left before manual review.
    AttemptsLeft,
    /// `IDV_MAX_FAILED_ATTEMPTS`.
    MaxAttempts,
    /// The failure's `last_error.code` (`requires_input` only).
    Code,
    /// The code in plain words (`requires_input` only).
    WhatWentWrong,
}

impl Var {
    pub const ALL: [Self; 6] = [
        Self::Outcome,
        Self::FailedAttempts,
        Self::AttemptsLeft,
        Self::MaxAttempts,
        Self::Code,
        Self::WhatWentWrong,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Outcome => "outcome",
            Self::FailedAttempts => "failed_attempts",
            Self::AttemptsLeft => "attempts_left",
            Self::MaxAttempts => "max_attempts",
            Self::Code => "code",
            Self::WhatWentWrong => "what_went_wrong",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|var| var.name() == name)
    }
}

/// Which e-mail: one per outcome the person is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Verified,
    RequiresInput,
    ManualReview,
}

impl Which {
    pub const ALL: [Self; 3] = [Self::Verified, Self::RequiresInput, Self::ManualReview];

    /// The templates' file name without extension, and the outcome.
    pub fn stem(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::RequiresInput => "requires_input",
            Self::ManualReview => "manual_review",
        }
    }

    /// Whether this e-mail's templates may use `var`: the failure's code
    /// and its words only in `requires_input`.
    fn allows(self, var: Var) -> bool {
        match var {
            Var::Code | Var::WhatWentWrong => self == Self::RequiresInput,
            _ => true,
        }
    }

    fn built_in(self) -> (&'static str, &'static str) {
        match self {
            Self::Verified => (
                include_str!("../../../templates/email/verified.txt"),
                include_str!("../../../templates/email/verified.html"),
            ),
            Self::RequiresInput => (
                include_str!("../../../templates/email/requires_input.txt"),
                include_str!("../../../templates/email/requires_input.html"),
            ),
            Self::ManualReview => (
                include_str!("../../../templates/email/manual_review.txt"),
                include_str!("../../../templates/email/manual_review.html"),
            ),
        }
    }
}

/// The values of one e-mail's variables. None is personal data: counts,
/// the outcome, a code and fixed words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    pub outcome: String,
    pub failed_attempts: i32,
    pub attempts_left: i32,
    pub max_attempts: i32,
    pub code: String,
    pub what_went_wrong: String,
}

impl Values {
    fn get(&self, var: Var) -> String {
        match var {
            Var::Outcome => self.outcome.clone(),
            Var::FailedAttempts => self.failed_attempts.to_string(),
            Var::AttemptsLeft => self.attempts_left.to_string(),
            Var::MaxAttempts => self.max_attempts.to_string(),
            Var::Code => self.code.clone(),
            Var::WhatWentWrong => self.what_went_wrong.clone(),
        }
    }
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable {{{{{0}}}}} (known: {known})", known = known_names())]
    Unknown(String),
    #[error("{{{{{0}}}}} is only available in the requires_input templates")]
    NotHere(&'static str),
    #[error("a {{{{ with no }}}} after it")]
    Unclosed,
    #[error("the first line must be `Subject: …` with a subject")]
    NoSubject,
}

fn known_names() -> String {
    Var::ALL.map(Var::name).join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// How values are written into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (plain text, the subject).
    None,
    /// `&`, `<`, `>`, `"` and `'` as entities.
    Html,
}

impl Template {
    /// Parses `source`, whose variables must be ones `which` allows.
    pub fn parse(source: &str, which: Which) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
            let name = after[..end].trim();
            let var = Var::parse(name).ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
            if !which.allows(var) {
                return Err(TemplateError::NotHere(var.name()));
            }
            segments.push(Segment::Var(var));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    pub fn render(&self, values: &Values, escape: Escape) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Var(var) => {
                    let value = values.get(*var);
                    match escape {
                        Escape::None => out.push_str(&value),
                        Escape::Html => out.push_str(&html_escape(&value)),
                    }
                }
            }
        }
        out
    }
}

/// `value` safe to place in HTML text or a quoted attribute.
pub fn html_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One e-mail's subject, text and HTML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailTemplate {
    subject: Template,
    text: Template,
    html: Template,
}

/// An e-mail ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl EmailTemplate {
    /// From the `.txt` (`Subject: …`, then the body) and `.html` sources.
    pub fn parse(
        which: Which,
        txt: &str,
        html: &str,
    ) -> Result<Self, (&'static str, TemplateError)> {
        let (first, body) = txt.split_once('\n').unwrap_or((txt, ""));
        let subject = first
            .trim_end_matches('\r')
            .strip_prefix("Subject:")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(("txt", TemplateError::NoSubject))?;
        // The blank line after the subject, as in a message, is not body.
        let body = body
            .strip_prefix("\r\n")
            .or_else(|| body.strip_prefix('\n'))
            .unwrap_or(body);
        Ok(Self {
            subject: Template::parse(subject, which).map_err(|e| ("txt", e))?,
            text: Template::parse(body, which).map_err(|e| ("txt", e))?,
            html: Template::parse(html, which).map_err(|e| ("html", e))?,
        })
    }

    pub fn render(&self, values: &Values) -> Rendered {
        Rendered {
            // One line, whatever a value holds.
            subject: self
                .subject
                .render(values, Escape::None)
                .replace(['\r', '\n'], " "),
            text: self.text.render(values, Escape::None),
            html: self.html.render(values, Escape::Html),
        }
    }
}

/// Every e-mail's templates, built in or from `EMAIL_TEMPLATES_DIR`.
#[derive(Clone, PartialEq, Eq)]
pub struct Templates {
    verified: EmailTemplate,
    requires_input: EmailTemplate,
    manual_review: EmailTemplate,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates").finish_non_exhaustive()
    }
}

impl Templates {
    /// The built-in templates, each replaced by its file in `dir` when
    /// there is one there. A `dir` that cannot be read, a `.txt` or
    /// `.html` file there that is not a template's, or a template that
    /// does not parse is an error naming `EMAIL_TEMPLATES_DIR` and the file.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = dir {
            check_dir(dir)?;
        }
        let one = |which: Which| -> anyhow::Result<EmailTemplate> {
            let (built_in_txt, built_in_html) = which.built_in();
            let read = |ext: &str, built_in: &str| -> anyhow::Result<String> {
                let Some(dir) = dir else {
                    return Ok(built_in.to_owned());
                };
                let path = dir.join(format!("{}.{ext}", which.stem()));
                if !path.exists() {
                    return Ok(built_in.to_owned());
                }
                std::fs::read_to_string(&path)
                    .with_context(|| format!("EMAIL_TEMPLATES_DIR: cannot read {}", path.display()))
            };
            let txt = read("txt", built_in_txt)?;
            let html = read("html", built_in_html)?;
            EmailTemplate::parse(which, &txt, &html).map_err(|(ext, error)| {
                let file = format!("{}.{ext}", which.stem());
                match dir {
                    Some(dir) if dir.join(&file).exists() => anyhow::anyhow!(
                        "EMAIL_TEMPLATES_DIR: {}: {error}",
                        dir.join(&file).display()
                    ),
                    _ => anyhow::anyhow!("the built-in e-mail template {file}: {error}"),
                }
            })
        };
        Ok(Self {
            verified: one(Which::Verified)?,
            requires_input: one(Which::RequiresInput)?,
            manual_review: one(Which::ManualReview)?,
        })
    }

    pub fn get(&self, which: Which) -> &EmailTemplate {
        match which {
            Which::Verified => &self.verified,
            Which::RequiresInput => &self.requires_input,
            Which::ManualReview => &self.manual_review,
        }
    }
}

/// `dir` is readable and holds no `.txt` or `.html` file that is not a
/// template's (a misspelt name would otherwise be silently ignored).
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "EMAIL_TEMPLATES_DIR: cannot read the directory {}",
            dir.display()
        )
    })?;
    let known: Vec<String> = Which::ALL
        .iter()
        .flat_map(|w| [format!("{}.txt", w.stem()), format!("{}.html", w.stem())])
        .collect();
    for entry in entries {
        let entry = entry.with_context(|| {
            format!(
                "EMAIL_TEMPLATES_DIR: cannot read the directory {}",
                dir.display()
            )
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let template_like = name.ends_with(".txt") || name.ends_with(".html");
        if template_like && !known.contains(&name) {
            bail!(
                "EMAIL_TEMPLATES_DIR: {} is not a template's file (expected any of {})",
                entry.path().display(),
                known.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            outcome: "requires_input".to_owned(),
            failed_attempts: 1,
            attempts_left: 2,
            max_attempts: 3,
            code: "document_expired".to_owned(),
            what_went_wrong: "It's <expired> & \"old\".".to_owned(),
        }
    }

    #[test]
    fn variables_are_substituted_and_escaped_only_in_html() {
        let template = Template::parse(
            "{{attempts_left}} of {{ max_attempts }}: {{what_went_wrong}}!",
            Which::RequiresInput,
        )
        .unwrap();
        assert_eq!(
            template.render(&values(), Escape::None),
            "2 of 3: It's <expired> & \"old\".!"
        );
        assert_eq!(
            template.render(&values(), Escape::Html),
            "2 of 3: It&#39;s &lt;expired&gt; &amp; &quot;old&quot;.!"
        );
        // The template's own markup is left alone.
        let html = Template::parse("<b>{{code}}</b> &amp;", Which::RequiresInput).unwrap();
        assert_eq!(
            html.render(&values(), Escape::Html),
            "<b>document_expired</b> &amp;"
        );
    }

    #[test]
    fn text_without_variables_and_adjacent_variables_render() {
        let plain = Template::parse("no variables { here }", Which::Verified).unwrap();
        assert_eq!(
            plain.render(&values(), Escape::Html),
            "no variables { here }"
        );
        let adjacent =
            Template::parse("{{failed_attempts}}{{attempts_left}}", Which::Verified).unwrap();
        assert_eq!(adjacent.render(&values(), Escape::None), "12");
    }

    #[test]
    fn unknown_misplaced_or_unclosed_variables_are_errors() {
        assert_eq!(
            Template::parse("Dear {{first_name}}", Which::Verified),
            Err(TemplateError::Unknown("first_name".to_owned()))
        );
        assert_eq!(
            Template::parse("{{code}}", Which::Verified),
            Err(TemplateError::NotHere("code"))
        );
        assert_eq!(
            Template::parse("{{code}}", Which::ManualReview),
            Err(TemplateError::NotHere("code"))
        );
        assert_eq!(
            Template::parse("{{outcome", Which::Verified),
            Err(TemplateError::Unclosed)
        );
        let message = TemplateError::Unknown("x".to_owned()).to_string();
        assert!(
            message.starts_with("unknown variable {{x}} (known: outcome,"),
            "{message}"
        );
    }

    #[test]
    fn the_subject_is_the_first_line_and_stays_one_line() {
        let email = EmailTemplate::parse(
            Which::RequiresInput,
            "Subject: Try again ({{attempts_left}} left)\n\nBody {{code}}\n",
            "<p>{{code}}</p>",
        )
        .unwrap();
        let rendered = email.render(&values());
        assert_eq!(rendered.subject, "Try again (2 left)");
        assert_eq!(rendered.text, "Body document_expired\n");
        assert_eq!(rendered.html, "<p>document_expired</p>");
        let mut two_lines = values();
        two_lines.outcome = "a\r\nBcc: x@example.com".to_owned();
        let email = EmailTemplate::parse(Which::Verified, "Subject: {{outcome}}\n", "").unwrap();
        assert_eq!(email.render(&two_lines).subject, "a  Bcc: x@example.com");
        assert!(matches!(
            EmailTemplate::parse(Which::Verified, "Hello\n\nBody", ""),
            Err(("txt", TemplateError::NoSubject))
        ));
    }

    #[test]
    fn the_built_in_templates_parse() {
        let templates = Templates::load(None).unwrap();
        for which in Which::ALL {
            let rendered = templates.get(which).render(&values());
            assert!(!rendered.subject.is_empty());
            assert!(!rendered.text.contains("{{"), "{which:?}");
            assert!(!rendered.html.contains("{{"), "{which:?}");
        }
        let retry = templates.get(Which::RequiresInput).render(&values());
        assert!(
            retry.text.contains("Attempts left: 2 of 3"),
            "{}",
            retry.text
        );
    }

    #[test]
    fn an_override_directory_replaces_files_and_bad_ones_name_the_variable_and_file() {
        let dir = std::env::temp_dir().join(format!("idv-email-templates-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("verified.txt"), "Subject: Done\n\nAll good.\n").unwrap();
        let templates = Templates::load(Some(&dir)).unwrap();
        let verified = templates.get(Which::Verified).render(&values());
        assert_eq!(
            (verified.subject.as_str(), verified.text.as_str()),
            ("Done", "All good.\n")
        );
        assert!(
            verified.html.contains("You are verified"),
            "the built-in HTML stays"
        );

        std::fs::write(dir.join("manual_review.html"), "<p>{{name}}</p>").unwrap();
        let error = Templates::load(Some(&dir)).unwrap_err().to_string();
        assert!(error.contains("EMAIL_TEMPLATES_DIR"), "{error}");
        assert!(error.contains("manual_review.html"), "{error}");
        assert!(error.contains("{{name}}"), "{error}");
        std::fs::remove_file(dir.join("manual_review.html")).unwrap();

        std::fs::write(dir.join("verifed.txt"), "Subject: x\n").unwrap();
        let error = Templates::load(Some(&dir)).unwrap_err().to_string();
        assert!(
            error.contains("EMAIL_TEMPLATES_DIR") && error.contains("verifed.txt"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        let error = Templates::load(Some(&dir)).unwrap_err().to_string();
        assert!(
            error.contains("EMAIL_TEMPLATES_DIR") && error.contains("cannot read"),
            "{error}"
        );
    }
}
