//! A real SMTP server on loopback for the e-mail tests: Debian's
//! `python3-aiosmtpd` (`apt-get install python3-aiosmtpd`, run by
//! `/usr/bin/python3`), keeping what it receives in a maildir of its own.
//! Its handler is aiosmtpd's `Mailbox`, except that it refuses any
//! recipient whose address starts with `refuse` with a permanent `550`
//! (to test a permanent refusal). The messages are read back through
//! Python's `email` package, so the tests assert on decoded text.
#![allow(clippy::unwrap_used)] // test support: a failed step should stop the test loudly

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

/// The Python with Debian's packages (the one on `PATH` may lack them).
pub const PYTHON: &str = "/usr/bin/python3";

/// How long the server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(20);

const HANDLER: &str = r#"
from aiosmtpd.handlers import Mailbox

class Refusing(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"
"#;

/// Prints the maildir's messages as JSON, decoded.
const READ: &str = r#"
import email, email.policy, json, os, sys
out = []
for sub in ("new", "cur"):
    d = os.path.join(sys.argv[1], sub)
    if not os.path.isdir(d):
        continue
    paths = [os.path.join(d, name) for name in os.listdir(d)]
    for path in sorted(paths, key=lambda p: (os.stat(p).st_mtime_ns, p)):
        with open(path, "rb") as f:
            raw = f.read()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        def part(kind):
            p = msg.get_body(preferencelist=(kind,))
            return None if p is None else p.get_content()
        out.append({
            "raw": raw.decode("utf-8", "replace"),
            "headers": [[k, str(v)] for k, v in msg.items()],
            "content_type": msg.get_content_type(),
            "text": part("plain"),
            "html": part("html"),
        })
print(json.dumps(out))
"#;

/// One message the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// As stored, still encoded.
    pub raw: String,
    /// Decoded, in order (the server adds `X-Peer`, `X-MailFrom`, `X-RcptTo`).
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    /// The decoded `text/plain` part.
    pub text: Option<String>,
    /// The decoded `text/html` part.
    pub html: Option<String>,
}

impl Received {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn subject(&self) -> &str {
        self.header("Subject").unwrap_or_default()
    }

    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or_default()
    }

    pub fn html(&self) -> &str {
        self.html.as_deref().unwrap_or_default()
    }

    /// Every part of the message except the headers named in `except`:
    /// raw, decoded headers, text and HTML.
    pub fn everything_except(&self, except: &[&str]) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| !except.iter().any(|e| n.eq_ignore_ascii_case(e)))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        let raw: Vec<&str> = self
            .raw
            .lines()
            .filter(|line| {
                !except.iter().any(|e| {
                    line.len() > e.len()
                        && line.as_bytes()[e.len()] == b':'
                        && line[..e.len()].eq_ignore_ascii_case(e)
                })
            })
            .collect();
        format!(
            "{}\n{}\n{}\n{}",
            raw.join("\n"),
            headers.join("\n"),
            self.text(),
            self.html()
        )
    }
}

/// An aiosmtpd server on a port of its own; stopped (killed) on drop.
#[derive(Debug)]
pub struct SmtpServer {
    pub port: u16,
    /// Holds the handler module, the maildir and the server's log.
    dir: PathBuf,
    child: Option<Child>,
}

impl SmtpServer {
    /// A server listening on a free port.
    pub async fn start() -> Self {
        let mut server = Self::down();
        server.resume().await;
        server
    }

    /// A free port nothing listens on yet (an SMTP server that is down),
    /// for [`resume`](Self::resume) to start the server on later.
    pub fn down() -> Self {
        assert_aiosmtpd_installed();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port on loopback");
        let dir = std::env::temp_dir().join(format!(
            "idv-smtp-{}-{}",
            crate::run_tag(),
            crate::unique_suffix()
        ));
        // Not the maildir itself: aiosmtpd creates it (with tmp/, new/, cur/).
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::write(dir.join("idv_smtp_handlers.py"), HANDLER).expect("the handler module");
        Self {
            port,
            dir,
            child: None,
        }
    }

    /// `SMTP_URL` for this server.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it accepts
    /// connections.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "the SMTP server is already running");
        let log = std::fs::File::create(self.dir.join("server.log")).expect("the server's log");
        let mut child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "idv_smtp_handlers.Refusing"])
            .arg(self.maildir())
            .env("PYTHONPATH", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {PYTHON}: {error}"));
        let until = tokio::time::Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("the server's status") {
                panic!(
                    "aiosmtpd exited ({status}) before listening on port {}: {}",
                    self.port,
                    std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "aiosmtpd did not listen on port {} within {START_DEADLINE:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.child = Some(child);
    }

    /// Stops the server; its port refuses connections until [`resume`](Self::resume).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    fn maildir(&self) -> PathBuf {
        self.dir.join("maildir")
    }

    /// The messages received so far, oldest first.
    pub async fn messages(&self) -> Vec<Received> {
        read_maildir(&self.maildir()).await
    }

    /// Waits until at least `count` messages arrived, and returns them all.
    pub async fn wait_for(&self, count: usize, deadline: Duration) -> Vec<Received> {
        crate::wait::eventually_some(deadline, &format!("{count} e-mail(s)"), || async {
            let messages = self.messages().await;
            (messages.len() >= count).then_some(messages)
        })
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails the test with what to install when aiosmtpd is missing.
fn assert_aiosmtpd_installed() {
    let found = std::process::Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "the e-mail tests need an SMTP server: `apt-get install python3-aiosmtpd` \
         (for {PYTHON}; deploy/services.sh installs it)"
    );
}

async fn read_maildir(maildir: &Path) -> Vec<Received> {
    let output = Command::new(PYTHON)
        .args(["-c", READ])
        .arg(maildir)
        .output()
        .await
        .expect("python3 reads the maildir");
    assert!(
        output.status.success(),
        "reading the maildir failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let messages: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    messages
        .into_iter()
        .map(|m| Received {
            raw: m["raw"].as_str().unwrap_or_default().to_owned(),
            headers: m["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap_or_default().to_owned(),
                        pair[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            content_type: m["content_type"].as_str().unwrap_or_default().to_owned(),
            text: m["text"].as_str().map(str::to_owned),
            html: m["html"].as_str().map(str::to_owned),
        })
        .collect()
}
