use serde_json::json;

use super::*;

fn source(subject: &str, body: &str) -> TemplateSource {
    TemplateSource { subject: subject.into(), body: body.into(), text_body: None, preheader: None }
}

#[test]
fn html_is_escaped_subject_and_text_are_not() {
    let mut t = source("Hi {{ name }}", "<p>Hi {{ name }}</p>");
    t.text_body = Some("Hi {{ name }}".into());
    let r = render(&t, &json!({"name": "<script>alert('x')</script> & co"})).unwrap();
    assert_eq!(r.html, "<p>Hi &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</p>");
    assert_eq!(r.subject, "Hi <script>alert('x')</script> & co");
    assert_eq!(r.text, "Hi <script>alert('x')</script> & co");
    assert!(r.warnings.is_empty());
}

#[test]
fn links_keep_their_slashes_and_safe_opts_out() {
    let t = source("s", "<a href=\"{{ url }}\">go</a>{{ snippet|safe }}");
    let r = render(&t, &json!({"url": "https://shop.example/c?t=1&u=2", "snippet": "<b>x</b>"})).unwrap();
    assert_eq!(r.html, "<a href=\"https://shop.example/c?t=1&amp;u=2\">go</a><b>x</b>");
    assert_eq!(r.text, "go (https://shop.example/c?t=1&u=2)x");
}

#[test]
fn undefined_variables_render_empty_with_a_warning() {
    let t = source(
        "{{ greeting }} {{ name }}",
        "<p>{{ order.number }}{{ name }}{% for i in items %}{{ i }}{% endfor %}</p>",
    );
    let r = render(&t, &json!({"name": "Ann", "items": [1, 2], "order": {}})).unwrap();
    assert_eq!(r.subject, "Ann");
    let loops = source("{% set n = 1 %}{{ n }}", "{% for i in items %}{{ loop.index }}{{ i.x }}{% endfor %}");
    assert_eq!(render(&loops, &json!({"items": [{"x": "a"}]})).unwrap().warnings, []);
    assert_eq!(r.html, "<p>Ann12</p>");
    let names: Vec<&str> = r.warnings.iter().map(|w| w.variable.as_str()).collect();
    assert_eq!(names, ["greeting", "order.number"]);
    assert!(r.warnings[0].message.contains("greeting"));
}

#[test]
fn null_renders_empty_and_globals_are_not_warned_about() {
    let t = source("{{ nothing }}x", "{% for i in range(2) %}{{ i }}{% endfor %}{{ missing.deep.path|upper }}");
    let r = render(&t, &json!({"nothing": null})).unwrap();
    assert_eq!((r.subject.as_str(), r.html.as_str()), ("x", "01"));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
}

#[test]
fn syntax_errors_name_the_part() {
    let err = render(&source("Hi {{ name", "<p>ok</p>"), &json!({})).unwrap_err();
    assert_eq!(err.part, "subject");
    assert!(err.message.contains("syntax error"), "{}", err.message);
    let mut t = source("ok", "<p>{% if x %}</p>");
    assert_eq!(check(&t).unwrap_err().part, "body");
    t.body = "fine".into();
    t.text_body = Some("{{ x | no_such_filter }}".into());
    let err = check(&t).unwrap_err();
    assert_eq!(err.part, "text_body");
    assert!(err.message.contains("unknown filter"), "{}", err.message);
    t.text_body = None;
    t.preheader = Some("{% endfor %}".into());
    assert_eq!(check(&t).unwrap_err().part, "preheader");
    t.preheader = Some("{{ count + 1 }} {{ a.b.c }}".into());
    assert_eq!(check(&t), Ok(()));
}

#[test]
fn runaway_loops_run_out_of_fuel() {
    let t = source("s", "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}");
    assert!(check(&t).unwrap_err().message.contains("fuel"));
}

#[test]
fn subject_never_spans_lines() {
    let t = source("Hello {{ name }}\r\n", "b");
    let r = render(&t, &json!({"name": "Ann\r\nBcc: evil@example.com\n\tX"})).unwrap();
    assert_eq!(r.subject, "Hello Ann Bcc: evil@example.com X");
    assert!(!r.subject.contains(['\r', '\n']));
}

#[test]
fn preheader_is_a_hidden_span_at_the_top_of_the_body() {
    let mut t = source("s", "<html><BODY class=\"x\"><p>Hi</p></BODY></html>");
    t.preheader = Some("Your code: {{ code }} <3".into());
    let r = render(&t, &json!({"code": "<1>"})).unwrap();
    let expected = format!("<html><BODY class=\"x\"><span style=\"{HIDDEN}\">Your code: &lt;1&gt; <3</span><p>Hi</p>");
    assert!(r.html.starts_with(&expected), "{}", r.html);
    assert_eq!(r.text, "Hi", "the hidden preheader stays out of the text part");
    t.body = "<p>no body tag</p>".into();
    assert!(render(&t, &json!({})).unwrap().html.starts_with("<span style="));
    t.preheader = Some("  ".into());
    assert_eq!(render(&t, &json!({})).unwrap().html, "<p>no body tag</p>");
}

#[test]
fn text_is_derived_from_the_html() {
    let html = "<!doctype html><html><head><title>T</title><style>p { color: red }</style></head>\
        <body><!-- note --><h1>Welcome,\n   Ann</h1><p>Line one<br>line&nbsp;two &amp; more</p>\
        <p>Visit <a href=\"https://shop.example/?a=1&amp;b=2\">our   shop</a> or \
        <a href='mailto:help@shop.example'>help@shop.example</a>. <a href=\"#top\">Top</a></p>\
        <ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>\
        <div>x &lt; y &#8212; &#x2F; &bogus; 5 &gt 3</div><script>var a = '<p>';</script></body></html>";
    assert_eq!(
        html_to_text(html),
        "Welcome, Ann\n\nLine one\nline two & more\n\n\
         Visit our shop (https://shop.example/?a=1&b=2) or help@shop.example. Top\n\n\
         - one\n- two\n\na b\n\nx < y — / &bogus; 5 &gt 3"
    );
}

#[test]
fn text_derivation_survives_odd_markup() {
    assert_eq!(html_to_text("a < b and c > d"), "a < b and c > d");
    assert_eq!(
        html_to_text("<p title=\"a > b\">x</p><a href=\"https://x.example\"><img src=y></a>"),
        "x\n\nhttps://x.example"
    );
    assert_eq!(html_to_text("<p>unclosed <b"), "unclosed");
    assert_eq!(html_to_text("<style>never closed"), "");
    assert_eq!(
        html_to_text("é&eacute;ü &#0; <a href=https://u.example>https://u.example</a>"),
        "é&eacute;ü &#0; https://u.example"
    );
    assert_eq!(html_to_text(""), "");
}

#[test]
fn a_variable_with_a_default_is_not_warned_about() {
    let t = TemplateSource {
        subject: "Hi {{ first_name|default('friend') }}".into(),
        body: "<p>{{ first_name | d('friend') }} {{ city }} {{ city|default('x') }}</p>".into(),
        text_body: None,
        preheader: None,
    };
    let r = render(&t, &serde_json::json!({})).unwrap();
    assert_eq!(r.subject, "Hi friend");
    let warned: Vec<&str> = r.warnings.iter().map(|w| w.variable.as_str()).collect();
    assert_eq!(warned, ["city"], "city is printed once without a default");
}
