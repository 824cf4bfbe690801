//! The plain-text part derived from a rendered HTML body, for templates without `text_body`.
//! Not an HTML parser: enough for mail bodies (paragraphs, breaks, lists, tables, links).

use std::borrow::Cow;

struct Tag<'a> {
    /// Lower-cased; empty for comments, doctypes and processing instructions.
    name: String,
    closing: bool,
    attrs: &'a str,
    /// Bytes of the source the tag spans.
    len: usize,
}

pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    // Where each open link's text starts in `out`, and its target.
    let mut links: Vec<(usize, Option<String>)> = vec![];
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(tag) = parse_tag(rest) else {
            push_text(&mut out, "<");
            rest = &rest[1..];
            continue;
        };
        rest = &rest[tag.len..];
        match (tag.name.as_str(), tag.closing) {
            ("head" | "style" | "script" | "title", false) => rest = skip_element(rest, &tag.name),
            ("br", _) => {
                out.truncate(out.trim_end_matches(' ').len());
                out.push('\n');
            }
            (
                "p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "ul" | "ol" | "blockquote" | "hr" | "pre",
                _,
            ) => block(&mut out, 2),
            ("div" | "tr" | "li" | "section" | "article" | "header" | "footer" | "center", _) => {
                block(&mut out, 1);
                if tag.name == "li" && !tag.closing {
                    out.push_str("- ");
                }
            }
            ("td" | "th", true) => out.push(' '),
            ("a", false) => links.push((out.len(), attr(tag.attrs, "href"))),
            ("a", true) => {
                if let Some((start, Some(href))) = links.pop() {
                    link_target(&mut out, start, &href);
                }
            }
            _ => {}
        }
    }
    push_text(&mut out, rest);
    tidy(&out)
}

/// Ends the current line, and leaves `lines - 1` blank lines, unless that is already so.
fn block(out: &mut String, lines: usize) {
    out.truncate(out.trim_end_matches(' ').len());
    if out.is_empty() {
        return;
    }
    let have = out.len() - out.trim_end_matches('\n').len();
    for _ in have..lines {
        out.push('\n');
    }
}

/// Source whitespace collapses to one space; line structure comes from tags only.
fn push_text(out: &mut String, raw: &str) {
    for c in decode_entities(raw).chars() {
        if c.is_whitespace() {
            if !(out.is_empty() || out.ends_with(' ') || out.ends_with('\n')) {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
}

/// `text (url)`, unless the text already is the url or the link goes nowhere useful.
fn link_target(out: &mut String, start: usize, href: &str) {
    let href = href.trim();
    if href.is_empty() || href.starts_with('#') || href.to_ascii_lowercase().starts_with("javascript:") {
        return;
    }
    let text = out.get(start..).unwrap_or_default().trim();
    let bare = href.strip_prefix("mailto:").or_else(|| href.strip_prefix("tel:")).unwrap_or(href);
    if text == href || text == bare {
        return;
    }
    if text.is_empty() {
        if !(out.is_empty() || out.ends_with([' ', '\n'])) {
            out.push(' ');
        }
        out.push_str(href);
    } else {
        out.truncate(out.trim_end().len());
        out.push_str(&format!(" ({href})"));
    }
}

fn parse_tag(s: &str) -> Option<Tag<'_>> {
    let bytes = s.as_bytes();
    let mut i = 1;
    if matches!(bytes.get(1), Some(b'!' | b'?')) {
        let len = s.find('>').map_or(s.len(), |end| end + 1);
        return Some(Tag { name: String::new(), closing: false, attrs: "", len });
    }
    let closing = bytes.get(1) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
        i += 1;
    }
    if i == name_start {
        return None;
    }
    let name = s[name_start..i].to_ascii_lowercase();
    let attrs_start = i;
    let mut quote = None;
    while let Some(&b) = bytes.get(i) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => break,
            None => {}
        }
        i += 1;
    }
    let attrs = &s[attrs_start..i.min(s.len())];
    Some(Tag { name, closing, attrs, len: (i + 1).min(s.len()) })
}

/// The decoded value of an attribute.
fn attr(attrs: &str, wanted: &str) -> Option<String> {
    let mut rest = attrs;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            return None;
        }
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '/').unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let mut value = "";
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (v, remaining) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let inner = &after[1..];
                    let end = inner.find(q).unwrap_or(inner.len());
                    (&inner[..end], inner.get(end + 1..).unwrap_or_default())
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            value = v;
            rest = remaining;
        }
        if name.eq_ignore_ascii_case(wanted) {
            return Some(decode_entities(value).into_owned());
        }
    }
}

/// What follows the element's closing tag (or nothing, if it is never closed).
fn skip_element<'a>(rest: &'a str, name: &str) -> &'a str {
    let needle = format!("</{name}");
    let lower = rest.to_ascii_lowercase();
    match lower.find(&needle) {
        Some(at) => rest[at..].find('>').map_or("", |end| &rest[at + end + 1..]),
        None => "",
    }
}

fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Entity names are short; `;` is ASCII, so its byte position is a char boundary.
        let semi = rest.bytes().take(12).position(|b| b == b';');
        match semi.and_then(|end| entity(&rest[1..end]).map(|c| (c, end))) {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code).filter(|c| !c.is_control() || c.is_whitespace());
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        _ => return None,
    })
}

/// Trims every line and keeps at most one blank line between blocks.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = false;
    for line in s.split('\n').map(|l| l.trim_matches(' ')) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        out.push_str(line);
        blank = false;
    }
    out
}
