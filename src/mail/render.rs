//! Email templates (§7): `{{ name }}` placeholders rendered with minijinja. The HTML body and
//! preheader are auto-escaped; subject and text are not, and the subject is kept on one line so
//! a variable can never add a header. A variable the caller did not give renders empty and is
//! reported as a warning, because a typo in a template must not stop a confirmation mail.

use std::collections::BTreeSet;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value};
use serde::Serialize;

mod text;

pub use text::html_to_text;

/// The parts of a template as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateSource {
    pub subject: String,
    /// HTML.
    pub body: String,
    /// Plain text; derived from the rendered body when absent.
    pub text_body: Option<String>,
    /// Inbox preview text, put at the top of the HTML body as a hidden span.
    pub preheader: Option<String>,
}

/// A variable used by the template but not given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderWarning {
    pub variable: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
    pub warnings: Vec<RenderWarning>,
}

/// A template that cannot be compiled or rendered; `part` names the failing field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RenderError {
    /// `subject`, `body`, `text_body` or `preheader`.
    pub part: &'static str,
    pub message: String,
}

/// Instructions (and roughly 64-byte allocations) one part may spend: plenty for an email, and a
/// bound on what an admin-written loop can cost the mail path.
const FUEL: u64 = 250_000;

const HIDDEN: &str = "display:none!important;visibility:hidden;mso-hide:all;opacity:0;color:transparent;\
                      height:0;width:0;max-height:0;max-width:0;overflow:hidden;font-size:1px;line-height:1px";

// Environments borrow their sources for `'source`, so one is built per render; it is cheap.
fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|part| match part {
        "body" | "preheader" => AutoEscape::Html,
        _ => AutoEscape::None,
    });
    // `{{ order.number }}` without `order` renders empty instead of failing the whole mail.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_formatter(format_value);
    env.set_fuel(Some(FUEL));
    env
}

/// Like minijinja's default, but `null` prints nothing (not `none`), and `/` stays as is so
/// links stay readable in the source of the mail.
fn format_value(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    if *state.auto_escape() == AutoEscape::Html && !value.is_safe() {
        return out.write_str(&escape_html(&value.to_string())).map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

fn error(part: &'static str, e: &Error) -> RenderError {
    RenderError { part, message: e.to_string() }
}

fn parts(t: &TemplateSource) -> impl Iterator<Item = (&'static str, &str)> {
    [("subject", Some(&t.subject)), ("body", Some(&t.body)), ("text_body", t.text_body.as_ref())]
        .into_iter()
        .chain([("preheader", t.preheader.as_ref())])
        .filter_map(|(part, src)| src.map(|s| (part, s.as_str())))
}

/// Checks that every part compiles, and that a dry render uses no unknown filter, test or
/// function (those fail whatever the variables are; other runtime errors may depend on them).
pub fn check(t: &TemplateSource) -> Result<(), RenderError> {
    let env = environment();
    for (part, source) in parts(t) {
        let tmpl = env.template_from_named_str(part, source).map_err(|e| error(part, &e))?;
        if let Err(e) = tmpl.render(Value::from(())) {
            let fatal = matches!(
                e.kind(),
                ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction | ErrorKind::OutOfFuel
            );
            if fatal {
                return Err(error(part, &e));
            }
        }
    }
    Ok(())
}

/// Renders every part with `vars` (a JSON object; anything else counts as no variables).
pub fn render(t: &TemplateSource, vars: &serde_json::Value) -> Result<Rendered, RenderError> {
    let env = environment();
    let empty = serde_json::Value::Object(Default::default());
    let vars = if vars.is_object() { vars } else { &empty };
    let ctx = Value::from(Serde(vars));
    let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
    let mut missing = BTreeSet::new();
    let mut render_part = |part: &'static str, source: &str| -> Result<String, RenderError> {
        let tmpl = env.template_from_named_str(part, source).map_err(|e| error(part, &e))?;
        for path in tmpl.undeclared_variables(true) {
            let root = path.split('.').next().unwrap_or_default();
            if !globals.contains(root) && !defined(vars, &path) && !defaulted(source, &path) {
                missing.insert(path);
            }
        }
        tmpl.render(&ctx).map_err(|e| error(part, &e))
    };
    let subject = one_line(&render_part("subject", &t.subject)?);
    let body = render_part("body", &t.body)?;
    let text = match &t.text_body {
        Some(source) => render_part("text_body", source)?,
        None => html_to_text(&body),
    };
    let html = match &t.preheader {
        Some(source) => with_preheader(&body, &render_part("preheader", source)?),
        None => body,
    };
    let warnings = missing
        .into_iter()
        .map(|variable| RenderWarning {
            message: format!("`{variable}` is not among the variables; it renders empty"),
            variable,
        })
        .collect();
    Ok(Rendered { subject, html, text, warnings })
}

/// Whether the template gives the variable a fallback (`{{ name|default('friend') }}`, `|d(..)`)
/// wherever it prints it: then its absence is no surprise and not worth a warning.
fn defaulted(source: &str, path: &str) -> bool {
    let mut uses = 0;
    let mut with_default = 0;
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(at) = source[from..].find(path) {
        let start = from + at;
        let end = start + path.len();
        from = end;
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
        if (start > 0 && word(bytes[start - 1])) || bytes.get(end).is_some_and(|b| word(*b)) {
            continue;
        }
        uses += 1;
        let rest = source[end..].trim_start();
        if let Some(filter) = rest.strip_prefix('|') {
            let filter = filter.trim_start();
            if filter.starts_with("default") || filter.starts_with("d(") {
                with_default += 1;
            }
        }
    }
    uses > 0 && uses == with_default
}

/// Whether a dotted path (`order.items.0`) resolves in the variables.
fn defined(vars: &serde_json::Value, path: &str) -> bool {
    let mut at = vars;
    for segment in path.split('.') {
        let next = match at {
            serde_json::Value::Object(map) => map.get(segment),
            serde_json::Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    true
}

/// Line breaks and other control characters become spaces: a subject is one header line.
fn one_line(s: &str) -> String {
    let spaced: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn with_preheader(html: &str, preheader: &str) -> String {
    let preheader = preheader.trim();
    if preheader.is_empty() {
        return html.to_string();
    }
    let at = body_start(html).unwrap_or(0);
    format!("{}<span style=\"{HIDDEN}\">{preheader}</span>{}", &html[..at], &html[at..])
}

/// The byte offset just after the `<body ...>` tag, if there is one.
fn body_start(html: &str) -> Option<usize> {
    // ASCII lower-casing keeps byte offsets, so they index `html` too.
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("<body") {
        let at = from + found;
        let after = lower.as_bytes().get(at + 5).copied();
        if matches!(after, Some(b'>' | b' ' | b'\t' | b'\n' | b'\r' | b'/')) {
            return lower[at..].find('>').map(|end| at + end + 1);
        }
        from = at + 5;
    }
    None
}

#[cfg(test)]
mod tests;
