//! A small SMTP server for tests, and parsing of what it receives. The server records every
//! accepted message, rejects recipients whose address contains "reject" with a 550, and can be
//! switched into an outage (connections are dropped without a greeting, open sessions die at
//! their next command) and back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use storecrm::mail::OutgoingMail;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
}

#[derive(Default)]
struct State {
    messages: Mutex<Vec<Received>>,
    down: AtomicBool,
    dropped: AtomicUsize,
    rejected: AtomicUsize,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, accept_state.clone()));
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// Connections or sessions cut short by an outage.
    pub fn dropped(&self) -> usize {
        self.state.dropped.load(Ordering::SeqCst)
    }

    /// Recipients refused with 550.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn session(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if state.down.load(Ordering::SeqCst) {
        state.dropped.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let (mut mail_from, mut rcpt_to) = (String::new(), Vec::new());
    while let Some(line) = next_line(&mut read).await? {
        if state.down.load(Ordering::SeqCst) {
            state.dropped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command.split([' ', ':']).next().unwrap_or_default().to_ascii_uppercase();
        let reply = match verb.as_str() {
            "EHLO" => "250-sink greets you\r\n250 SMTPUTF8".to_string(),
            "HELO" | "NOOP" => "250 ok".into(),
            "RSET" => {
                (mail_from, rcpt_to) = (String::new(), Vec::new());
                "250 ok".into()
            }
            "MAIL" => {
                mail_from = angle(&command);
                rcpt_to.clear();
                "250 ok".into()
            }
            "RCPT" if command.to_ascii_lowercase().contains("reject") => {
                state.rejected.fetch_add(1, Ordering::SeqCst);
                "550 5.1.1 mailbox unavailable".into()
            }
            "RCPT" => {
                rcpt_to.push(angle(&command));
                "250 ok".into()
            }
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    let Some(line) = next_line(&mut read).await? else { return Ok(()) };
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let received = Received { mail_from: mail_from.clone(), rcpt_to: rcpt_to.clone(), data };
                state.messages.lock().unwrap().push(received);
                "250 queued".into()
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => "500 unknown command".into(),
        };
        write.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
    Ok(())
}

async fn next_line(read: &mut (impl AsyncBufReadExt + Unpin)) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(30), read.read_until(b'\n', &mut buf)).await??;
    Ok((n > 0).then(|| String::from_utf8_lossy(&buf).into_owned()))
}

fn angle(command: &str) -> String {
    let start = command.find('<').map(|i| i + 1).unwrap_or(0);
    let end = command[start..].find('>').map(|i| start + i).unwrap_or(command.len());
    command[start..end].to_string()
}

/// A parsed RFC 5322 message: unfolded headers and the raw body.
pub struct Parsed {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Parsed {
    pub fn new(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("a continuation line follows a header");
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        Self { headers, body: body.to_string() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The parts of a multipart body, each parsed, with bodies transfer-decoded.
    pub fn parts(&self) -> Vec<Parsed> {
        let content_type = self.header("Content-Type").expect("Content-Type");
        let boundary = content_type.split("boundary=").nth(1).expect("a boundary").trim_matches('"');
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        for chunk in self.body.split(delimiter.as_str()).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            let mut part = Parsed::new(chunk.trim_start_matches("\r\n"));
            part.body = decode(part.header("Content-Transfer-Encoding"), part.body.trim_end_matches("\r\n"));
            parts.push(part);
        }
        parts
    }
}

fn decode(encoding: Option<&str>, body: &str) -> String {
    match encoding.map(|e| e.to_ascii_lowercase()).as_deref() {
        None | Some("7bit") | Some("8bit") => body.to_string(),
        Some("quoted-printable") => {
            let joined = body.replace("=\r\n", "");
            let bytes = joined.as_bytes();
            let (mut out, mut i) = (Vec::new(), 0);
            while i < bytes.len() {
                if bytes[i] == b'=' && i + 2 < bytes.len() {
                    out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).expect("a QP escape"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        }
        Some("base64") => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(body.replace("\r\n", "")).unwrap();
            String::from_utf8(bytes).unwrap()
        }
        Some(other) => panic!("unexpected transfer encoding {other}"),
    }
}

/// Checks a delivered raw message against what was sent (the fixtures' headers included).
#[track_caller]
pub fn assert_is_mail(raw: &str, sent: &OutgoingMail) {
    let m = Parsed::new(raw);
    assert_eq!(m.header("Subject"), Some(sent.subject.as_str()), "{raw}");
    assert!(m.header("From").unwrap().contains("<shop@example.com>"), "{raw}");
    let reply_to = m.header("Reply-To").unwrap();
    assert!(reply_to.contains("Help desk") && reply_to.ends_with("<help@example.com>"), "{raw}");
    assert_eq!(m.header("List-Unsubscribe"), Some(sent.headers[0].1.as_str()), "{raw}");
    assert_eq!(m.header("X-Campaign"), Some("spring"), "{raw}");
    assert!(m.header("Message-ID").is_some() && m.header("Date").is_some(), "{raw}");
    assert!(m.header("Content-Type").unwrap().starts_with("multipart/alternative"), "{raw}");
    let parts = m.parts();
    assert_eq!(parts.len(), 2, "{raw}");
    assert!(parts[0].header("Content-Type").unwrap().starts_with("text/plain"), "{raw}");
    assert_eq!(parts[0].body, sent.text);
    assert!(parts[1].header("Content-Type").unwrap().starts_with("text/html"), "{raw}");
    assert_eq!(parts[1].body, sent.html);
}

/// Delivered subjects → how many times each arrived.
pub fn tally(sink: &SmtpSink) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for m in sink.messages() {
        *seen.entry(Parsed::new(&m.data).header("Subject").unwrap().to_string()).or_default() += 1;
    }
    seen
}
