//! The demo's traffic: three users calling through the gateway's proxy listener over HTTP, as
//! an app's clients would (the gateway's own hyper client, a JWT minted for each user as their
//! API key). Alice mostly uses OpenAI, Bob mostly Gemini, both streamed and not, with
//! embeddings; Carol, whose daily limit the demo made small, calls until she is refused.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::config::{Config, Secret};
use crate::provider::ProviderKind;

/// A made-up user of the demo.
#[derive(Clone, Copy, Debug)]
pub struct DemoUser {
    /// The JWT subject: the user's id in the gateway.
    pub id: &'static str,
    pub name: &'static str,
    pub email: &'static str,
}

/// The users the demo's traffic comes from.
pub const DEMO_USERS: [DemoUser; 3] = [
    DemoUser {
        id: "alice",
        name: "Alice Martin",
        email: "alice@example.com",
    },
    DemoUser {
        id: "bob",
        name: "Bob Okafor",
        email: "bob@example.com",
    },
    DemoUser {
        id: "carol",
        name: "Carol Nguyen",
        email: "carol@example.com",
    },
];

/// The user the demo gives a small daily limit, who calls until refused.
pub const LIMITED_USER: &str = "carol";

/// Content chunks (output tokens) the fake answers with when a call does not cap them.
pub(super) const FAKE_CHUNKS: u64 = 100;
/// Pause between two pieces of a stream: a streamed answer takes a moment, as a real one does.
pub(super) const FAKE_CHUNK_DELAY_MS: u64 = 4;
/// Pause before the fake's answer head.
pub(super) const FAKE_HEAD_DELAY_MS: u64 = 40;

/// Calls the limited user makes at most (she is refused well before).
const MAX_LIMITED_CALLS: usize = 25;
/// Longest a demo call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One call the demo made, and how it was answered.
#[derive(Clone, Debug)]
pub(super) struct Sent {
    pub user: &'static str,
    /// What the call was, e.g. `OpenAI streamed chat`.
    pub label: &'static str,
    /// The user's call number, from 1.
    pub nth: usize,
    /// The HTTP status; 0 when no answer came.
    pub status: u16,
    /// The error message of an answer that is not a success.
    pub message: String,
}

/// Every call the demo made.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub calls: Vec<Sent>,
}

impl Report {
    /// Calls of `user` refused at a limit (429).
    pub fn refused(&self, user: &str) -> usize {
        self.calls
            .iter()
            .filter(|c| c.user == user && c.status == 429)
            .count()
    }

    /// The limited user's refusal.
    pub fn refusal(&self) -> Option<&Sent> {
        self.calls
            .iter()
            .find(|c| c.user == LIMITED_USER && c.status == 429)
    }

    /// Calls answered otherwise than planned: anything but a success, except the limited
    /// user's refusal.
    pub fn failures(&self) -> impl Iterator<Item = &Sent> {
        let planned = |c: &Sent| {
            (200..300).contains(&c.status) || (c.user == LIMITED_USER && c.status == 429)
        };
        self.calls.iter().filter(move |c| !planned(c))
    }
}

/// Which API a call speaks: where its credential goes.
#[derive(Clone, Copy)]
enum Api {
    OpenAi,
    Gemini,
}

/// One scripted call: the path after the provider's prefix and the JSON body.
struct Step {
    label: &'static str,
    api: Api,
    path: &'static str,
    body: Value,
}

fn openai(label: &'static str, path: &'static str, body: Value) -> Step {
    Step {
        label,
        api: Api::OpenAi,
        path,
        body,
    }
}

fn gemini(label: &'static str, path: &'static str, body: Value) -> Step {
    Step {
        label,
        api: Api::Gemini,
        path,
        body,
    }
}

fn chat(model: &str, prompt: &str, max_tokens: u64) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt}
        ],
        "max_tokens": max_tokens
    })
}

fn chat_stream(model: &str, prompt: &str, max_tokens: u64, include_usage: bool) -> Value {
    let mut body = chat(model, prompt, max_tokens);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn generate(prompt: &str, max_output: u64) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"maxOutputTokens": max_output}
    })
}

/// Alice: a developer on OpenAI, with one Gemini call.
fn alice() -> Vec<Step> {
    vec![
        openai(
            "OpenAI chat",
            "/v1/chat/completions",
            chat(
                "gpt-4o-mini",
                "Summarise the plot of Hamlet in three sentences for a ten-year-old.",
                80,
            ),
        ),
        openai(
            "OpenAI streamed chat (include_usage)",
            "/v1/chat/completions",
            chat_stream(
                "gpt-4o-mini",
                "Write a friendly two-line reminder that the team meeting moved to Thursday.",
                60,
                true,
            ),
        ),
        openai(
            "OpenAI embeddings",
            "/v1/embeddings",
            json!({
                "model": "text-embedding-3-small",
                "input": [
                    "How do I reset my password?",
                    "Where can I download my invoices?",
                    "Can I change the email address on my account?"
                ]
            }),
        ),
        openai(
            "OpenAI streamed chat",
            "/v1/chat/completions",
            chat_stream(
                "gpt-4.1",
                "Explain the difference between a process and a thread, with one example of each.",
                90,
                false,
            ),
        ),
        gemini(
            "Gemini generateContent",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            generate(
                "Suggest three names for a bakery that also sells coffee.",
                40,
            ),
        ),
    ]
}

/// Bob: mostly Gemini, streamed both ways, with one OpenAI call.
fn bob() -> Vec<Step> {
    vec![
        gemini(
            "Gemini generateContent",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            generate(
                "Translate 'where is the train station, please?' into French, Spanish and German.",
                50,
            ),
        ),
        gemini(
            "Gemini streamGenerateContent (SSE)",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            generate(
                "Write a short poem about autumn in a city, in four lines.",
                70,
            ),
        ),
        gemini(
            "Gemini embedContent",
            "/v1beta/models/gemini-embedding-001:embedContent",
            json!({"content": {"parts": [{"text": "Tollgate meters every call it forwards."}]}}),
        ),
        gemini(
            "Gemini streamGenerateContent (JSON array)",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            generate(
                "Plan a three-day trip to Lisbon for someone who loves food and old trams.",
                100,
            ),
        ),
        openai(
            "OpenAI chat",
            "/v1/chat/completions",
            json!({
                "model": "gpt-5-mini",
                "messages": [{"role": "user", "content": "Give me a regular expression that matches an ISO date."}],
                "max_completion_tokens": 40
            }),
        ),
    ]
}

/// Carol: a call on each provider in turn, streamed and not, until her daily limit refuses one.
fn carol(n: usize) -> Step {
    const PROMPTS: [&str; 4] = [
        "Draft a polite email asking a supplier for an updated price list for next quarter.",
        "List the pros and cons of remote work for a small design studio.",
        "Rewrite this sentence to sound more confident: I think maybe we could try it.",
        "What questions should I ask when interviewing a candidate for a support role?",
    ];
    let prompt = PROMPTS[n % PROMPTS.len()];
    match n % 3 {
        0 => openai(
            "OpenAI streamed chat",
            "/v1/chat/completions",
            chat_stream("gpt-4o-mini", prompt, 100, false),
        ),
        1 => gemini(
            "Gemini generateContent",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            generate(prompt, 100),
        ),
        _ => openai(
            "OpenAI chat",
            "/v1/chat/completions",
            chat("gpt-4o-mini", prompt, 100),
        ),
    }
}

/// Everything a user's calls need.
struct Caller<'a> {
    client: &'a Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    openai_prefix: &'a str,
    gemini_prefix: &'a str,
    user: &'static str,
    token: String,
}

impl Caller<'_> {
    async fn call(&self, nth: usize, step: &Step) -> Sent {
        let prefix = match step.api {
            Api::OpenAi => self.openai_prefix,
            Api::Gemini => self.gemini_prefix,
        };
        let builder = Request::post(format!("http://{}{prefix}{}", self.proxy, step.path))
            .header(CONTENT_TYPE, "application/json");
        let builder = match step.api {
            Api::OpenAi => builder.header(AUTHORIZATION, format!("Bearer {}", self.token)),
            Api::Gemini => builder.header("x-goog-api-key", self.token.as_str()),
        };
        let sent = |status: u16, message: String| Sent {
            user: self.user,
            label: step.label,
            nth,
            status,
            message,
        };
        let request = match builder.body(Full::new(Bytes::from(step.body.to_string()))) {
            Ok(request) => request,
            Err(e) => return sent(0, format!("the request could not be built: {e}")),
        };
        let answered = tokio::time::timeout(CALL_TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await;
        match answered {
            Ok(Ok((status, _))) if (200..300).contains(&status) => sent(status, String::new()),
            Ok(Ok((status, body))) => sent(status, error_message(&body)),
            Ok(Err(e)) => sent(0, e),
            Err(_) => sent(0, format!("no answer within {}s", CALL_TIMEOUT.as_secs())),
        }
    }
}

/// The `error.message` of a provider-shaped error body, else the body itself (shortened).
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// `steps` one after another, `pause_ms` apart.
async fn scripted(caller: Caller<'_>, steps: Vec<Step>, pause_ms: u64) -> Vec<Sent> {
    let mut sent = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        sent.push(caller.call(i + 1, step).await);
    }
    sent
}

/// Drive the demo's traffic through the proxy at `proxy`, the three users at once, with short
/// pauses between calls, as `config`'s first OpenAI and Gemini providers.
pub(super) async fn drive(proxy: SocketAddr, config: &Config, secret: &Secret) -> Report {
    let prefix = |kind: ProviderKind| {
        config
            .providers
            .iter()
            .find(|p| p.kind == kind)
            .map_or("", |p| p.prefix.as_str())
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let caller = |user: &DemoUser| Caller {
        client: &client,
        proxy,
        openai_prefix: prefix(ProviderKind::Openai),
        gemini_prefix: prefix(ProviderKind::Gemini),
        user: user.id,
        token: crate::auth::mint(
            secret,
            &config.raw.auth,
            user.id,
            false,
            Duration::from_secs(3_600),
            Some(user.email),
            Some(user.name),
        )
        .unwrap_or_default(),
    };
    let [a, b, c] = DEMO_USERS.map(|u| caller(&u));
    let limited = async move {
        let mut sent = Vec::new();
        for n in 0..MAX_LIMITED_CALLS {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let answer = c.call(n + 1, &carol(n)).await;
            let refused = answer.status == 429;
            sent.push(answer);
            if refused {
                break;
            }
        }
        sent
    };
    let (a, b, c) = tokio::join!(scripted(a, alice(), 300), scripted(b, bob(), 350), limited);
    Report {
        calls: a.into_iter().chain(b).chain(c).collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_report_tells_the_refusal_from_failures() {
        let sent = |user, status| Sent {
            user,
            label: "x",
            nth: 1,
            status,
            message: String::new(),
        };
        let report = Report {
            calls: vec![
                sent("alice", 200),
                sent("carol", 200),
                sent("carol", 429),
                sent("bob", 502),
            ],
        };
        assert_eq!(report.refused("carol"), 1);
        assert_eq!(report.refused("alice"), 0);
        assert_eq!(report.refusal().unwrap().user, "carol");
        let failures: Vec<_> = report.failures().map(|s| (s.user, s.status)).collect();
        assert_eq!(failures, [("bob", 502)]);
    }

    #[test]
    fn error_messages_are_read_from_either_shape() {
        assert_eq!(
            error_message(br#"{"error":{"message":"over the limit","type":"x"}}"#),
            "over the limit"
        );
        assert_eq!(
            error_message(
                br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#
            ),
            "quota"
        );
        assert_eq!(error_message(b"plain"), "plain");
    }
}
