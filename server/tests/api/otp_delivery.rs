//! One-time code delivery: over SMTP to a sink server run by the test, 503 when a code
//! cannot be delivered, and the code never in the log (security.md line 10), checked by
//! capturing every log line of this test binary at TRACE.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use flashsale::auth::session::COOKIE_NAME;
use flashsale::config::{OtpDelivery, SmtpUrl};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::helpers::TestApp;

const PASSWORD: &str = "a long enough passphrase";
/// Largest mail the sink accepts; past it the sink refuses the message.
const SINK_MAX_MAIL_BYTES: usize = 1024 * 1024;
/// Captured log kept in memory; past it the older half is dropped.
const LOG_CAPTURE_MAX_BYTES: usize = 256 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// A minimal SMTP server that records what it is sent.

/// How the sink behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkMode {
    /// Accepts every mail.
    Accept,
    /// Refuses every sender with a permanent error.
    Reject,
    /// Accepts connections and never says a word.
    Silent,
}

/// One mail as the sink received it.
#[derive(Debug, Default, Clone)]
struct Mail {
    recipients: Vec<String>,
    data: String,
}

#[derive(Debug)]
struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    async fn start(mode: SinkMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the SMTP sink");
        let port = listener.local_addr().expect("sink address").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let recorded = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // An I/O error ends that one conversation; the client sees it as a failure.
                tokio::spawn(converse(stream, mode, recorded.clone()));
            }
        });
        Self { port, mails, task }
    }

    fn url(&self) -> SmtpUrl {
        SmtpUrl::from(format!("smtp://127.0.0.1:{}", self.port))
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One SMTP conversation: enough of RFC 5321 for lettre (no extensions, no TLS).
async fn converse(stream: TcpStream, mode: SinkMode, mails: Arc<Mutex<Vec<Mail>>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    if mode == SinkMode::Silent {
        let mut ignored = Vec::new();
        reader.read_to_end(&mut ignored).await?;
        return Ok(());
    }
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let mut mail = Mail::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = match command.split(' ').next().unwrap_or_default() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "MAIL" if mode == SinkMode::Reject => b"554 5.7.1 no mail accepted here\r\n",
            "MAIL" | "RSET" => {
                mail = Mail::default();
                b"250 ok\r\n"
            }
            "RCPT" => {
                let (_, recipient) = line.trim_end().split_once(':').unwrap_or_default();
                mail.recipients.push(recipient.to_owned());
                b"250 ok\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                match read_data(&mut reader).await? {
                    Some(data) => {
                        mail.data = data;
                        mails.lock().unwrap_or_else(PoisonError::into_inner).push(std::mem::take(&mut mail));
                        b"250 queued\r\n"
                    }
                    None => b"552 too large\r\n",
                }
            }
            "NOOP" => b"250 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The message after DATA, up to the line holding a single dot, dot-unstuffed; `None`
/// if it exceeds [`SINK_MAX_MAIL_BYTES`].
async fn read_data(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" {
            return Ok((data.len() <= SINK_MAX_MAIL_BYTES).then_some(data));
        }
        if data.len() <= SINK_MAX_MAIL_BYTES {
            data.push_str(line.strip_prefix('.').unwrap_or(&line));
        }
    }
}

/// The code in a mail: the digits after "code is ".
fn code_in(mail: &Mail) -> String {
    let (_, after) = mail.data.split_once("code is ").expect("a code in the mail");
    after.chars().take_while(char::is_ascii_digit).collect()
}

// ---------------------------------------------------------------------------------------
// Log capture: one subscriber for the whole test binary, writing into memory.

/// Everything logged since the capture was installed, minus what was dropped for room.
struct Captured {
    dropped_bytes: usize,
    bytes: Vec<u8>,
}

static CAPTURED: Mutex<Captured> = Mutex::new(Captured { dropped_bytes: 0, bytes: Vec::new() });
static CAPTURE_INSTALLED: OnceLock<bool> = OnceLock::new();

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut captured = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
        if captured.bytes.len() + buf.len() > LOG_CAPTURE_MAX_BYTES {
            let half = captured.bytes.len() / 2;
            captured.bytes.drain(..half);
            captured.dropped_bytes += half;
        }
        captured.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (once) and returns the position from which the
/// caller's logs will appear.
fn start_log_capture() -> usize {
    let installed = CAPTURE_INSTALLED.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_writer(|| CaptureWriter)
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .without_time()
            .try_init()
            .is_ok()
    });
    assert!(*installed, "another global subscriber came first: the capture would see nothing");
    let captured = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
    captured.dropped_bytes + captured.bytes.len()
}

/// The log written since `mark` (by every test running meanwhile, not only the caller).
fn log_since(mark: usize) -> String {
    let captured = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(mark >= captured.dropped_bytes, "the capture dropped this test's log for room");
    String::from_utf8_lossy(&captured.bytes[mark - captured.dropped_bytes..]).into_owned()
}

/// Whether `token` occurs in `log` as a token of its own (not inside a longer number or
/// id), which is how a leaked code would appear: `code=123456`, `"123456"`, `is 123456.`
fn contains_token(log: &str, token: &str) -> bool {
    log.match_indices(token).any(|(at, _)| {
        let before = log[..at].chars().next_back();
        let after = log[at + token.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric()) && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

// ---------------------------------------------------------------------------------------
// HTTP.

#[derive(Debug)]
struct Answer {
    status: u16,
    session: Option<String>,
    body: Value,
}

async fn call(app: &TestApp, path: &str, body: Option<Value>, session: Option<&str>, key: Option<&str>) -> Answer {
    let mut request = reqwest::Client::new().post(app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(id) = session {
        request = request.header("cookie", format!("{COOKIE_NAME}={id}"));
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|cookie| cookie.split(';').next())
        .and_then(|pair| pair.strip_prefix(&format!("{COOKIE_NAME}=")))
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let bytes = response.bytes().await.expect("body");
    Answer { status, session, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

/// Registers a fresh user and logs in: the email and the login answer.
async fn register_and_login(app: &TestApp) -> (String, Answer) {
    let email = format!("{}@example.test", Uuid::new_v4().simple());
    let credentials = json!({"email": email, "password": PASSWORD});
    assert_eq!(call(app, "/api/v1/auth/register", Some(credentials.clone()), None, None).await.status, 202);
    let login = call(app, "/api/v1/auth/login", Some(credentials), None, None).await;
    (email, login)
}

async fn verify(app: &TestApp, session: &str, code: &str) -> Answer {
    call(app, "/api/v1/auth/verify-otp", Some(json!({"code": code})), Some(session), None).await
}

async fn outbox_entries(app: &TestApp) -> Vec<(String, HashMap<String, String>)> {
    let mut conn = app.redis();
    redis::cmd("XREVRANGE")
        .arg(app.app().keys.otp_outbox())
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1_000)
        .query_async(&mut conn)
        .await
        .expect("XREVRANGE")
}

async fn outbox_code(app: &TestApp, email: &str) -> String {
    let entries = outbox_entries(app).await;
    let entry = entries.into_iter().find(|(_, fields)| fields.get("email").map(String::as_str) == Some(email));
    entry.and_then(|(_, mut fields)| fields.remove("code")).expect("a code in the outbox")
}

/// A purchase: the status and the problem type, if any.
async fn buy(app: &TestApp, session: &str, product: Uuid) -> (u16, Value) {
    let answer = call(app, &format!("/api/v1/user/buy/{product}"), None, Some(session), Some("first-click")).await;
    (answer.status, answer.body["type"].clone())
}

/// Verifies `code` for the pre-OTP `session` and checks that the new session is fully
/// signed in: the profile answers and a purchase goes through. Returns the user id.
async fn verify_and_buy(app: &TestApp, session: &str, email: &str, code: &str) -> String {
    let product = app.create_product(5, true).await;
    assert_eq!(buy(app, session, product).await, (403, json!("/problems/otp-required")));
    let verified = verify(app, session, code).await;
    assert_eq!(verified.status, 200, "verify: {}", verified.body);
    let signed_in = verified.session.expect("rotated session cookie");
    let profile = call(app, "/api/v1/user/profile", None, Some(&signed_in), None).await;
    assert_eq!((profile.status, &profile.body["email"]), (200, &json!(email)), "profile: {}", profile.body);
    let (status, problem) = buy(app, &signed_in, product).await;
    assert_eq!(status, 201, "purchase after verification: {problem}");
    verified.body["user_id"].as_str().expect("user id").to_owned()
}

async fn spawn_with_smtp(sink: &SmtpSink) -> TestApp {
    let url = sink.url();
    TestApp::spawn_with(move |config| {
        config.otp_delivery = OtpDelivery::Smtp;
        config.smtp_url = Some(url);
        config.smtp_timeout_ms = 1_000;
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn a_code_sent_over_smtp_reaches_the_users_address_and_verifies() {
    let sink = SmtpSink::start(SinkMode::Accept).await;
    let app = spawn_with_smtp(&sink).await;
    let (email, login) = register_and_login(&app).await;
    assert_eq!(login.status, 200, "login: {}", login.body);
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].recipients, vec![format!("<{email}>")]);
    assert!(mails[0].data.contains(&format!("To: {email}")), "{}", mails[0].data);
    assert!(mails[0].data.contains("From: flashsale <no-reply@localhost>"), "{}", mails[0].data);
    let code = code_in(&mails[0]);
    assert_eq!(code.len(), 6, "{}", mails[0].data);
    assert!(outbox_entries(&app).await.is_empty(), "SMTP delivery also wrote the outbox");
    verify_and_buy(&app, &login.session.expect("session cookie"), &email, &code).await;
}

#[tokio::test]
async fn a_resend_over_smtp_mails_a_new_code_that_replaces_the_old_one() {
    let sink = SmtpSink::start(SinkMode::Accept).await;
    let app = spawn_with_smtp(&sink).await;
    let (email, login) = register_and_login(&app).await;
    let session = login.session.expect("session cookie");
    assert_eq!(call(&app, "/api/v1/auth/otp", None, Some(&session), None).await.status, 200);
    let codes: Vec<String> = sink.mails().iter().map(code_in).collect();
    assert_eq!(codes.len(), 2, "{codes:?}");
    if codes[0] != codes[1] {
        assert_eq!(verify(&app, &session, &codes[0]).await.status, 401);
    }
    verify_and_buy(&app, &session, &email, &codes[1]).await;
}

#[tokio::test]
async fn a_login_answers_503_when_the_smtp_server_refuses_the_mail() {
    let sink = SmtpSink::start(SinkMode::Reject).await;
    let app = spawn_with_smtp(&sink).await;
    let (_, login) = register_and_login(&app).await;
    assert_eq!((login.status, &login.body["type"]), (503, &json!("/problems/unavailable")), "{}", login.body);
    assert_eq!(login.session, None, "a session cookie for a code that was not sent");
}

#[tokio::test]
async fn a_login_answers_503_within_the_timeout_when_the_smtp_server_does_not_answer() {
    let sink = SmtpSink::start(SinkMode::Silent).await;
    let app = spawn_with_smtp(&sink).await;
    let started = std::time::Instant::now();
    let (_, login) = register_and_login(&app).await;
    assert_eq!((login.status, &login.body["type"]), (503, &json!("/problems/unavailable")), "{}", login.body);
    // Register and login hash a password each; the rest is the 1 s SMTP bound.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_log_capture_sees_a_code_written_by_development_delivery() {
    // The control for the two tests below: when a code is logged, the capture finds it.
    let mark = start_log_capture();
    let app = TestApp::spawn_with(|config| config.otp_delivery = OtpDelivery::Log).await;
    let (email, login) = register_and_login(&app).await;
    assert_eq!(login.status, 200, "login: {}", login.body);
    let log = log_since(mark);
    let line = log.lines().find(|line| line.contains(&email) && line.contains("code=")).expect("the code line");
    let (_, after) = line.split_once("code=").expect("code field");
    // A `&str` field is written quoted: `code="123456"`.
    let code: String = after.trim_start_matches('"').chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(code.len(), 6, "{line}");
    assert!(contains_token(&log, &code));
    verify_and_buy(&app, &login.session.expect("session cookie"), &email, &code).await;
}

#[tokio::test]
async fn a_code_delivered_through_the_outbox_never_reaches_the_log() {
    let mark = start_log_capture();
    let app = TestApp::spawn().await;
    let (email, login) = register_and_login(&app).await;
    assert_eq!(login.status, 200, "login: {}", login.body);
    let code = outbox_code(&app, &email).await;
    let user_id = verify_and_buy(&app, &login.session.expect("session cookie"), &email, &code).await;
    assert_code_not_logged(mark, &user_id, &code);
}

#[tokio::test]
async fn a_code_delivered_over_smtp_never_reaches_the_log() {
    let mark = start_log_capture();
    let sink = SmtpSink::start(SinkMode::Accept).await;
    let app = spawn_with_smtp(&sink).await;
    let (email, login) = register_and_login(&app).await;
    assert_eq!(login.status, 200, "login: {}", login.body);
    let code = code_in(sink.mails().first().expect("a mail"));
    let user_id = verify_and_buy(&app, &login.session.expect("session cookie"), &email, &code).await;
    assert_code_not_logged(mark, &user_id, &code);
}

/// The capture holds this test's own server logs (so it worked), and not the code.
fn assert_code_not_logged(mark: usize, user_id: &str, code: &str) {
    let log = log_since(mark);
    assert!(log.contains(&format!("user_id={user_id}")), "the capture missed this test's login log");
    assert!(log.contains("finished processing request"), "the capture missed the request logs");
    assert!(!contains_token(&log, code), "the code {code} is in the log");
}

#[test]
fn the_leak_detector_finds_a_code_as_a_field_or_in_json_but_not_inside_a_longer_number() {
    assert!(contains_token("INFO code=123456 email=a@b.co", "123456"));
    assert!(contains_token(r#"body={"code":"123456"}"#, "123456"));
    assert!(contains_token("123456", "123456"));
    assert!(!contains_token("created_at_ms=1712345678901", "123456"));
    assert!(!contains_token("id=9f1234567a", "123456"));
}
