//! One call's record, from its first byte to its row, and the one place where a call ends.
//!
//! A [`Call`] is created when a request arrives and moves whole: the phases of
//! [`Proxy::handle`](super::Proxy::handle) move its [`Stage`] forward (who calls, what they ask,
//! what they hold, whether it was sent, what the upstream answered), then it moves into the
//! streamed body as the body's end. Each stage carries exactly what is known by then, so a
//! reservation without a caller, or an answer without a request, cannot be written.
//!
//! [`Call::finish`] is the only way a call ends, exactly once, whichever way it ends — a
//! refusal, the upstream failing before its head, the client leaving before the head (the call
//! is dropped: `Drop` finishes it), or the body's end. It picks the usage and where it came
//! from (a provider's report only when it is plausible — no field above
//! `usage::MAX_TOKENS_PER_CALL` — else the estimate, flagged `invalid`), prices it with the
//! configuration the call started on, settles the reservation and hands the row to the store
//! without waiting.
//!
//! Three amounts are easy to confuse, and have distinct names: the request's *prompt estimate*
//! (`RequestInfo::prompt_tokens_estimate`, text at ~4 characters per token), the *hold* a call
//! reserves at admission ([`held`]: prompt estimate + output cap, priced), and an *estimated
//! usage* recorded when a call ends without the provider's report (`provider::estimated_usage`, the
//! prompt estimate plus the relayed output).

use std::sync::Arc;
use std::time::Instant;

use crate::auth::Caller;
use crate::config::Config;
use crate::error::GatewayError;
use crate::meter::{BodyEnd, OnEnd};
use crate::metrics::InFlight;
use crate::plan::Plan;
use crate::provider::{self, Endpoint, ProviderKind, RequestInfo, TapReport};
use crate::quota::{Basis, Hold, Reservation};
use crate::store::{OpenCall, RowSlot, Store, UsageRow};
use crate::usage::{MAX_TOKENS_PER_CALL, Outcome, Usage, UsageSource};

use super::Runtime;

/// A call in flight. See the module doc.
pub struct Call {
    store: Arc<dyn Store>,
    /// The configuration this call started with; it keeps it to the end (its prices price it).
    rt: Arc<Runtime>,
    /// Counts the call in flight until it is dropped.
    _in_flight: InFlight,
    /// The call's place among its user's calls in flight (`server.max_in_flight_per_user`),
    /// from authentication until the call is dropped.
    pass: Option<super::gate::Pass>,
    /// Room in the store's queue for this call's row, reserved before it was forwarded.
    slot: Option<RowSlot>,
    /// The call's entry in the store's call journal, written before it was forwarded.
    journal_id: Option<u64>,
    /// The call's span: request id, then provider, user, model and status as they are known.
    span: tracing::Span,
    request_id: Arc<str>,
    started: Instant,
    /// Unix ms when the call arrived; its row's `ts` unless it was admitted (then admission's).
    arrived_ms: i64,
    stage: Stage,
}

/// What is known about a call so far.
enum Stage {
    /// Before the caller is known: no row is written for it.
    Anonymous { kind: Option<ProviderKind> },
    /// Authenticated; the body is being read.
    Identified { who: Who },
    /// The request is read and described, and not admitted (yet).
    Inspected { who: Who, info: RequestInfo },
    /// Admitted: it holds a reservation; not sent yet.
    Admitted {
        who: Who,
        info: RequestInfo,
        reservation: Reservation,
    },
    /// Handed to the upstream: it may be billed from now on.
    Sent {
        who: Who,
        info: RequestInfo,
        reservation: Reservation,
    },
    /// The upstream's answer head arrived and went to the client: the status is final.
    Answered {
        who: Who,
        info: RequestInfo,
        reservation: Reservation,
        status: u16,
        ttfb_ms: u64,
    },
    /// The row is written.
    Finished,
}

/// Who calls, through which provider, on which plan.
struct Who {
    kind: ProviderKind,
    provider: Arc<str>,
    caller: Caller,
    /// The plan the caller's token put them on (`None`: no plan, `[limits]` alone).
    plan: Option<Arc<Plan>>,
    /// `[limits]` with the plan's limits on top, worked out once for the admission and the
    /// answer's quota headers.
    basis: Basis,
}

/// How a call ended, as [`Call::finish`] is told.
pub enum End<'a> {
    /// Tollgate answered the call itself (a refusal, or the upstream failing before its head).
    Refused(&'a GatewayError),
    /// The client went away before the answer's head (the call was dropped).
    ClientGoneEarly,
    /// The answer's body ended.
    Body { how: BodyEnd, report: TapReport },
}

/// What the row of a call says, as [`settle`] decides it.
struct Settled {
    status: u16,
    usage: Usage,
    source: UsageSource,
    /// The provider's report when it was refused as impossible (`source` is `Invalid`).
    refused_report: Option<Usage>,
    outcome: Outcome,
    /// The model the upstream named in its answer, when it did.
    response_model: Option<String>,
    ttfb_ms: Option<u64>,
}

impl Call {
    pub(super) fn start(
        store: Arc<dyn Store>,
        rt: Arc<Runtime>,
        in_flight: InFlight,
        span: tracing::Span,
        request_id: Arc<str>,
    ) -> Call {
        Call {
            store,
            rt,
            _in_flight: in_flight,
            pass: None,
            slot: None,
            journal_id: None,
            span,
            request_id,
            started: Instant::now(),
            arrived_ms: unix_ms(),
            stage: Stage::Anonymous { kind: None },
        }
    }

    /// The runtime the call started on (one `Arc` clone).
    pub fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.rt)
    }

    pub fn request_id(&self) -> &Arc<str> {
        &self.request_id
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The provider whose error shape refusals take, once routed.
    pub fn kind(&self) -> Option<ProviderKind> {
        match &self.stage {
            Stage::Anonymous { kind } => *kind,
            Stage::Identified { who }
            | Stage::Inspected { who, .. }
            | Stage::Admitted { who, .. }
            | Stage::Sent { who, .. }
            | Stage::Answered { who, .. } => Some(who.kind),
            Stage::Finished => None,
        }
    }

    /// The caller's user id, once authenticated.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.who().map(|who| &who.caller.user_id)
    }

    /// The plan the caller is on, once authenticated.
    pub fn plan(&self) -> Option<&Arc<Plan>> {
        self.who().and_then(|who| who.plan.as_ref())
    }

    /// Who calls, once authenticated.
    fn who(&self) -> Option<&Who> {
        match &self.stage {
            Stage::Identified { who }
            | Stage::Inspected { who, .. }
            | Stage::Admitted { who, .. }
            | Stage::Sent { who, .. }
            | Stage::Answered { who, .. } => Some(who),
            Stage::Anonymous { .. } | Stage::Finished => None,
        }
    }

    /// The caller's limits before their overrides (the plan's on `[limits]`), once
    /// authenticated.
    pub fn basis(&self) -> Option<&Basis> {
        self.who().map(|who| &who.basis)
    }

    /// The request, once inspected.
    pub fn info(&self) -> Option<&RequestInfo> {
        match &self.stage {
            Stage::Inspected { info, .. }
            | Stage::Admitted { info, .. }
            | Stage::Sent { info, .. }
            | Stage::Answered { info, .. } => Some(info),
            Stage::Anonymous { .. } | Stage::Identified { .. } | Stage::Finished => None,
        }
    }

    // === the stages, in order ===

    /// Phase 1 found the provider.
    pub(super) fn routed(&mut self, kind: ProviderKind, provider: &str) {
        if let Stage::Anonymous { kind: k } = &mut self.stage {
            *k = Some(kind);
        }
        self.span.record("provider", provider);
    }

    /// Phase 2 verified the caller.
    pub(super) fn identified(
        &mut self,
        provider: Arc<str>,
        caller: Caller,
        plan: Option<Arc<Plan>>,
    ) {
        self.span.record("user", &*caller.user_id);
        if let Stage::Anonymous { kind: Some(kind) } = self.stage {
            let basis = Basis::new(&self.rt.config.raw.limits, plan.as_deref());
            self.stage = Stage::Identified {
                who: Who {
                    kind,
                    provider,
                    caller,
                    plan,
                    basis,
                },
            };
        }
    }

    /// Phase 2b let it in at the door: it holds a place among its user's calls in flight.
    pub(super) fn entered(&mut self, pass: super::gate::Pass) {
        self.pass = Some(pass);
    }

    /// Phase 4b reserved room in the store's queue for its row.
    pub(super) fn row_reserved(&mut self, slot: RowSlot) {
        self.slot = Some(slot);
    }

    /// Phase 4 described the request.
    pub(super) fn inspected(&mut self, info: RequestInfo) {
        if let Some(model) = &info.model {
            self.span.record("model", model.as_str());
        }
        self.stage = match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::Identified { who } => Stage::Inspected { who, info },
            other => other,
        };
    }

    /// Phase 4b admitted it.
    pub(super) fn admitted(&mut self, reservation: Reservation) {
        self.stage = match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::Inspected { who, info } => Stage::Admitted {
                who,
                info,
                reservation,
            },
            other => other,
        };
    }

    /// The call journal's entry for an admitted call, under `journal_id` (which its row will
    /// carry from now on): who, what, and the reservation (`held`, as the call was admitted
    /// with) as usage.
    pub(super) fn journal_entry(&mut self, journal_id: u64, held: &Held) -> Option<OpenCall> {
        let Stage::Admitted {
            who,
            info,
            reservation,
        } = &self.stage
        else {
            return None;
        };
        self.journal_id = Some(journal_id);
        Some(OpenCall {
            journal_id,
            request_id: self.request_id.to_string(),
            ts_ms: reservation.admitted_at().as_millisecond(),
            user_id: Arc::clone(&who.caller.user_id),
            user_email: who.caller.email.clone(),
            user_name: who.caller.name.clone(),
            provider: Arc::clone(&who.provider),
            model: info.model.clone(),
            endpoint: info.endpoint.as_str(),
            streamed: info.stream,
            hold: held.usage,
            hold_cost_nano_usd: held.cost_nano_usd,
        })
    }

    /// Phase 6 hands it to the upstream.
    pub(super) fn sent(&mut self) {
        self.stage = match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::Admitted {
                who,
                info,
                reservation,
            } => Stage::Sent {
                who,
                info,
                reservation,
            },
            other => other,
        };
    }

    /// Phase 7: the answer's head goes to the client with `status`.
    pub(super) fn answered(&mut self, status: u16, ttfb_ms: u64) {
        self.stage = match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::Sent {
                who,
                info,
                reservation,
            } => Stage::Answered {
                who,
                info,
                reservation,
                status,
                ttfb_ms,
            },
            other => other,
        };
    }

    // === the end ===

    /// End the call: its usage, price, settlement and row — once; later calls do nothing.
    pub fn finish(&mut self, end: End<'_>) {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        let span = self.span.clone();
        let _in_span = span.enter();
        let (who, info, reservation, answered) = match stage {
            Stage::Finished => return,
            Stage::Anonymous { .. } => {
                if let End::Refused(e) = end {
                    tracing::info!(status = e.status().as_u16(), error = %e, "refused");
                }
                return;
            }
            Stage::Identified { who } => (who, None, None, None),
            Stage::Inspected { who, info } => (who, Some(info), None, None),
            Stage::Admitted {
                who,
                info,
                reservation,
            } => (who, Some(info), Some(reservation), None),
            Stage::Sent {
                who,
                info,
                reservation,
            } => (who, Some(info), Some(reservation), Some(None)),
            Stage::Answered {
                who,
                info,
                reservation,
                status,
                ttfb_ms,
            } => (
                who,
                Some(info),
                Some(reservation),
                Some(Some((status, ttfb_ms))),
            ),
        };
        let sent = answered.is_some();
        let settled = settle(info.as_ref(), sent, answered.flatten(), end);
        let model = settled
            .response_model
            .clone()
            .or_else(|| info.as_ref().and_then(|i| i.model.clone()));
        let cost = cost(&self.rt.config, model.as_deref(), &settled.usage);
        // A reservation settles in the windows it was admitted in; the row's `ts` says the same.
        let ts_ms = reservation
            .as_ref()
            .map_or(self.arrived_ms, |r| r.admitted_at().as_millisecond());
        if let Some(r) = reservation {
            // A call that consumed nothing releases its hold.
            r.settle(
                settled.usage.total(),
                cost.map_or(0, |c| u64::try_from(c).unwrap_or(0)),
            );
        }
        let latency_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let endpoint = info.as_ref().map_or("other", |i| i.endpoint.as_str());
        if let Some(reported) = &settled.refused_report {
            // Numbers only: never the answer's text.
            tracing::warn!(
                request_id = %self.request_id,
                provider = &*who.provider,
                model = model.as_deref().unwrap_or("-"),
                reported_input_tokens = reported.input_tokens,
                reported_cached_input_tokens = reported.cached_input_tokens,
                reported_output_tokens = reported.output_tokens,
                reported_reasoning_tokens = reported.reasoning_tokens,
                max_tokens_per_call = MAX_TOKENS_PER_CALL,
                estimated_input_tokens = settled.usage.input_tokens,
                estimated_output_tokens = settled.usage.output_tokens,
                "the upstream reported an impossible token usage: recorded as usage_source = \
                 'invalid' with the estimated usage"
            );
        }
        // The call's line is the access log's, written from the row by the store's writer.
        tracing::Span::current().record("status", settled.status);
        let row = UsageRow {
            request_id: self.request_id.to_string(),
            ts_ms,
            user_id: who.caller.user_id,
            user_email: who.caller.email,
            user_name: who.caller.name,
            provider: who.provider,
            model,
            endpoint,
            streamed: info.as_ref().is_some_and(|i| i.stream),
            status: settled.status,
            usage: settled.usage,
            cost_nano_usd: cost,
            usage_source: settled.source,
            latency_ms,
            ttfb_ms: settled.ttfb_ms,
            outcome: settled.outcome,
            journal_id: self.journal_id,
            plan: who.plan.map(|p| Arc::clone(&p.name)),
        };
        let queued = match self.slot.take() {
            Some(slot) => self.store.record_reserved(slot, row),
            None => self.store.record(row),
        };
        if !queued {
            tracing::error!(request_id = %self.request_id, "usage row dropped: the store queue is full or closing");
        }
    }
}

impl Drop for Call {
    /// The client went away while Tollgate was still reading its body, waiting for admission or
    /// for the upstream's answer: hyper dropped the call's future. Record it (status 499,
    /// nginx's "client closed request"), estimated if the upstream may already be working on it.
    fn drop(&mut self) {
        self.finish(End::ClientGoneEarly);
    }
}

impl OnEnd for Call {
    fn on_end(mut self, how: BodyEnd, report: TapReport) {
        self.finish(End::Body { how, report });
    }
}

/// The usage, source, status and outcome of a call that ends with `end`. `sent`: the request
/// reached the upstream (it may be billed); `answer`: the status and time to the head the client
/// got, when the upstream answered.
fn settle(
    info: Option<&RequestInfo>,
    sent: bool,
    answer: Option<(u16, u64)>,
    end: End<'_>,
) -> Settled {
    let none = (Usage::default(), UsageSource::None);
    let estimated = |info: &RequestInfo, report: &TapReport| {
        (
            provider::estimated_usage(info, report),
            UsageSource::Estimated,
        )
    };
    let consumes = info.is_some_and(|i| i.endpoint.consumes());
    // Once the head went out, a call that is dropped ended like a body the client left.
    let end = match (end, answer) {
        (End::ClientGoneEarly, Some(_)) => End::Body {
            how: BodyEnd::ClientGone,
            report: TapReport::default(),
        },
        (end, _) => end,
    };
    match (end, answer) {
        (End::Body { how, report }, Some((status, ttfb_ms))) => {
            let success = (200..300).contains(&status);
            let mut refused_report = None;
            let (usage, source) = match (&report.usage, info) {
                (Some(usage), _) if usage.is_plausible() => (*usage, UsageSource::Reported),
                // A report no call can have (a field above MAX_TOKENS_PER_CALL) is not stored as
                // tokens: the row and the quota get the estimate, flagged `invalid`.
                (Some(usage), info) => {
                    refused_report = Some(*usage);
                    let estimate =
                        info.map_or_else(Usage::default, |i| provider::estimated_usage(i, &report));
                    (estimate, UsageSource::Invalid)
                }
                // The provider bills nothing for an error answer it completed.
                (None, _) if !success && how == BodyEnd::Complete => none,
                (None, Some(info)) if consumes => estimated(info, &report),
                (None, _) => none,
            };
            let stream = info.is_some_and(|i| i.stream);
            let error_status = status >= 400;
            let outcome = match how {
                // An error answer relayed whole: the upstream said no, whatever the request
                // (a streaming request answered with a JSON error included).
                BodyEnd::Complete if error_status => Outcome::UpstreamError,
                BodyEnd::Complete if report.error_seen => Outcome::StreamError,
                BodyEnd::Complete if stream && !report.complete => Outcome::StreamTruncated,
                BodyEnd::Complete => Outcome::Complete,
                BodyEnd::UpstreamError => Outcome::UpstreamError,
                BodyEnd::IdleTimeout => Outcome::IdleTimeout,
                // The answer's natural end (`[DONE]`, the last chunk) was relayed and only the
                // upstream's end of body was still to come: an SDK that stops reading at the
                // final event (the openai SDK closes the response there) got the whole answer.
                BodyEnd::ClientGone if report.complete && !report.error_seen && !error_status => {
                    Outcome::Complete
                }
                BodyEnd::ClientGone => Outcome::ClientGone,
            };
            Settled {
                status,
                usage,
                source,
                refused_report,
                outcome,
                response_model: report.model,
                ttfb_ms: Some(ttfb_ms),
            }
        }
        (End::Refused(e), _) => {
            // A request that reached the upstream but got no answer in time may still be billed:
            // estimate it. Everything else consumed nothing.
            let (usage, source) = match (e, info) {
                (GatewayError::UpstreamTimeout, Some(info)) if consumes && sent => {
                    estimated(info, &TapReport::default())
                }
                _ => none,
            };
            Settled {
                status: e.status().as_u16(),
                usage,
                source,
                refused_report: None,
                outcome: e.outcome().unwrap_or(Outcome::InternalError),
                response_model: None,
                ttfb_ms: None,
            }
        }
        // The client left before the answer's head (a body cannot end without one): estimated
        // if the upstream may be working on it.
        (End::ClientGoneEarly | End::Body { .. }, _) => {
            let (usage, source) = match info {
                Some(info) if sent && consumes => estimated(info, &TapReport::default()),
                _ => none,
            };
            Settled {
                status: 499,
                usage,
                source,
                refused_report: None,
                outcome: Outcome::ClientGone,
                response_model: None,
                ttfb_ms: None,
            }
        }
    }
}

/// What an admitted call may cost at most, as usage (the prompt estimate in, the rest of the
/// output cap out) and its price at `config`'s prices (`None` when the model has none): worked
/// out once per call, reserved by the ledger ([`Held::hold`]) and kept by the call journal as a
/// lost call's estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub usage: Usage,
    pub cost_nano_usd: Option<i64>,
}

impl Held {
    /// The ledger's reservation: tokens and cost (0 USD when unpriced).
    pub fn hold(&self) -> Hold {
        Hold {
            tokens: self.usage.total(),
            cost_nano_usd: self
                .cost_nano_usd
                .map_or(0, |c| u64::try_from(c).unwrap_or(0)),
        }
    }
}

/// What a call described by `info` may cost at most (see [`Held`]), on `plan` (whose
/// `default_max_output_tokens`, when it sets one, replaces `[limits]`'s).
pub fn held(config: &Config, info: &RequestInfo, plan: Option<&Plan>) -> Held {
    let limits = &config.raw.limits;
    let default_max_output = plan
        .and_then(|p| p.settings.default_max_output_tokens)
        .unwrap_or(limits.default_max_output_tokens);
    let tokens = hold_tokens(info, default_max_output, limits.media_part_tokens);
    let input = info
        .prompt_tokens_with(limits.media_part_tokens)
        .min(tokens);
    let usage = Usage {
        input_tokens: input,
        output_tokens: tokens - input,
        ..Usage::default()
    };
    let cost_nano_usd = info
        .model
        .as_deref()
        .and_then(|m| config.prices.cost_nano_usd(m, &usage));
    Held {
        usage,
        cost_nano_usd,
    }
}

/// The tokens a call may consume: the prompt estimate plus the request's own cap on output
/// (`max_tokens`, `max_output_tokens`, `maxOutputTokens`), or `default_max_output`
/// (`limits.default_max_output_tokens`) when it sets none. Embeddings produce no output;
/// endpoints that consume nothing (`countTokens`, unknown paths) hold 0. Each inline image or
/// audio part of the prompt counts `media_part_tokens` (`limits.media_part_tokens`), never the
/// bytes of its base64 data.
pub fn hold_tokens(info: &RequestInfo, default_max_output: u64, media_part_tokens: u64) -> u64 {
    let output = match info.endpoint {
        Endpoint::CountTokens | Endpoint::Other => return 0,
        Endpoint::Embeddings | Endpoint::EmbedContent | Endpoint::BatchEmbedContents => 0,
        Endpoint::ChatCompletions
        | Endpoint::Responses
        | Endpoint::Completions
        | Endpoint::GenerateContent
        | Endpoint::StreamGenerateContent => info.max_output_tokens.unwrap_or(default_max_output),
    };
    info.prompt_tokens_with(media_part_tokens)
        .saturating_add(output)
}

/// The cost of `usage` on `model` in nano-USD at `config`'s prices; `None` when it has no price
/// (the access log warns about such a model, throttled; `metrics` counts the calls).
fn cost(config: &Config, model: Option<&str>, usage: &Usage) -> Option<i64> {
    if usage.total() == 0 {
        return Some(0);
    }
    model.and_then(|m| config.prices.cost_nano_usd(m, usage))
}

fn unix_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(endpoint: Endpoint, prompt: u64, max_output: Option<u64>) -> RequestInfo {
        RequestInfo {
            endpoint,
            model: Some("gpt-4o-mini".into()),
            stream: false,
            max_output_tokens: max_output,
            prompt_tokens_estimate: prompt,
            media_parts: 0,
            usage_injected: false,
            sse: false,
            model_ambiguous: false,
        }
    }

    #[test]
    fn inline_media_parts_count_the_configured_tokens_not_their_bytes() {
        // Two screenshots and 40 tokens of text, as `inspect` describes them.
        let mut screenshots = info(
            Endpoint::ChatCompletions,
            40 + 2 * crate::provider::MEDIA_PART_TOKENS,
            Some(500),
        );
        screenshots.media_parts = 2;
        assert_eq!(hold_tokens(&screenshots, 4_096, 1_000), 40 + 2_000 + 500);
        assert_eq!(hold_tokens(&screenshots, 4_096, 1_500), 40 + 3_000 + 500);
        assert_eq!(hold_tokens(&screenshots, 4_096, 0), 40 + 500);
    }

    #[test]
    fn the_hold_is_the_prompt_plus_the_requests_max_output_or_the_default() {
        assert_eq!(
            hold_tokens(
                &info(Endpoint::ChatCompletions, 120, Some(300)),
                4_096,
                1_000
            ),
            420
        );
        assert_eq!(
            hold_tokens(
                &info(Endpoint::StreamGenerateContent, 120, None),
                4_096,
                1_000
            ),
            4_216
        );
        assert_eq!(
            hold_tokens(&info(Endpoint::Responses, u64::MAX, None), 4_096, 1_000),
            u64::MAX,
            "saturates"
        );
    }

    #[test]
    fn embeddings_hold_only_their_input_and_count_tokens_holds_nothing() {
        assert_eq!(
            hold_tokens(&info(Endpoint::Embeddings, 800, None), 4_096, 1_000),
            800
        );
        assert_eq!(
            hold_tokens(&info(Endpoint::BatchEmbedContents, 800, None), 4_096, 1_000),
            800
        );
        assert_eq!(
            hold_tokens(&info(Endpoint::CountTokens, 800, None), 4_096, 1_000),
            0
        );
        assert_eq!(
            hold_tokens(&info(Endpoint::Other, 800, None), 4_096, 1_000),
            0
        );
    }

    #[test]
    fn how_a_call_ends_decides_its_usage_source_and_outcome() {
        let chat = info(Endpoint::ChatCompletions, 100, Some(50));
        let stream = RequestInfo {
            stream: true,
            ..chat.clone()
        };
        let reported = TapReport {
            usage: Some(Usage {
                input_tokens: 90,
                output_tokens: 10,
                ..Usage::default()
            }),
            complete: true,
            ..TapReport::default()
        };
        let s = settle(
            Some(&chat),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::Complete,
                report: reported.clone(),
            },
        );
        assert_eq!(
            (s.status, s.source, s.outcome, s.usage.total(), s.ttfb_ms),
            (200, UsageSource::Reported, Outcome::Complete, 100, Some(5))
        );
        // An error answer the upstream completed consumed nothing.
        let s = settle(
            Some(&chat),
            true,
            Some((400, 5)),
            End::Body {
                how: BodyEnd::Complete,
                report: TapReport::default(),
            },
        );
        assert_eq!(
            (s.source, s.outcome, s.usage.total()),
            (UsageSource::None, Outcome::UpstreamError, 0)
        );
        // So did one answered to a streaming request, and one whose body the tap flagged as an
        // error (the tap flags every error status): the upstream said no, not the stream.
        let flagged = TapReport {
            error_seen: true,
            complete: true,
            ..TapReport::default()
        };
        for (request, status) in [(&chat, 400), (&stream, 400), (&stream, 503)] {
            let s = settle(
                Some(request),
                true,
                Some((status, 5)),
                End::Body {
                    how: BodyEnd::Complete,
                    report: flagged.clone(),
                },
            );
            assert_eq!(
                (s.status, s.source, s.outcome),
                (status, UsageSource::None, Outcome::UpstreamError)
            );
        }
        // A 200 whose body carries an error is still a stream error.
        let s = settle(
            Some(&stream),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::Complete,
                report: flagged,
            },
        );
        assert_eq!(s.outcome, Outcome::StreamError);
        // A stream cut by the client is estimated.
        let s = settle(
            Some(&stream),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::ClientGone,
                report: TapReport::default(),
            },
        );
        assert_eq!(
            (s.source, s.outcome, s.usage.input_tokens),
            (UsageSource::Estimated, Outcome::ClientGone, 100)
        );
        // A client that closes once it has the final event (and the usage) got it all.
        let whole = TapReport {
            usage: Some(Usage {
                input_tokens: 7,
                output_tokens: 3,
                ..Usage::default()
            }),
            complete: true,
            ..TapReport::default()
        };
        let s = settle(
            Some(&stream),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::ClientGone,
                report: whole.clone(),
            },
        );
        assert_eq!(
            (s.source, s.outcome, s.usage.input_tokens),
            (UsageSource::Reported, Outcome::Complete, 7)
        );
        // Not when the stream carried an error.
        let s = settle(
            Some(&stream),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::ClientGone,
                report: TapReport {
                    error_seen: true,
                    ..whole
                },
            },
        );
        assert_eq!(s.outcome, Outcome::ClientGone);
        // A clean end without the final event is a truncated stream.
        let s = settle(
            Some(&stream),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::Complete,
                report: TapReport::default(),
            },
        );
        assert_eq!(s.outcome, Outcome::StreamTruncated);
        // Refused before forwarding: nothing consumed; a timeout after sending is estimated.
        let s = settle(
            Some(&chat),
            false,
            None,
            End::Refused(&GatewayError::UpstreamTimeout),
        );
        assert_eq!((s.status, s.source), (504, UsageSource::None));
        let s = settle(
            Some(&chat),
            true,
            None,
            End::Refused(&GatewayError::UpstreamTimeout),
        );
        assert_eq!(
            (s.status, s.source, s.outcome),
            (504, UsageSource::Estimated, Outcome::UpstreamTimeout)
        );
        // The client left before the head: 499, estimated only if it was sent.
        let s = settle(Some(&chat), true, None, End::ClientGoneEarly);
        assert_eq!(
            (s.status, s.source, s.outcome),
            (499, UsageSource::Estimated, Outcome::ClientGone)
        );
        let s = settle(Some(&chat), false, None, End::ClientGoneEarly);
        assert_eq!((s.status, s.source), (499, UsageSource::None));
        let count = info(Endpoint::CountTokens, 100, None);
        let s = settle(Some(&count), true, None, End::ClientGoneEarly);
        assert_eq!(s.source, UsageSource::None);
    }

    #[test]
    fn an_impossible_report_is_recorded_as_invalid_with_the_estimate() {
        let chat = info(Endpoint::ChatCompletions, 100, Some(50));
        let absurd = |input_tokens| TapReport {
            usage: Some(Usage {
                input_tokens,
                output_tokens: 7,
                ..Usage::default()
            }),
            output_chars: 40,
            complete: true,
            ..TapReport::default()
        };
        for input in [u64::MAX, MAX_TOKENS_PER_CALL + 1] {
            let report = absurd(input);
            let s = settle(
                Some(&chat),
                true,
                Some((200, 5)),
                End::Body {
                    how: BodyEnd::Complete,
                    report: report.clone(),
                },
            );
            assert_eq!(
                (s.status, s.source, s.outcome),
                (200, UsageSource::Invalid, Outcome::Complete)
            );
            assert_eq!(
                s.usage,
                provider::estimated_usage(&chat, &report),
                "the estimate, not the report"
            );
            assert_eq!((s.usage.input_tokens, s.usage.output_tokens), (100, 10));
            assert_eq!(s.refused_report, report.usage);
        }
        // At the ceiling it is believed.
        let s = settle(
            Some(&chat),
            true,
            Some((200, 5)),
            End::Body {
                how: BodyEnd::Complete,
                report: absurd(MAX_TOKENS_PER_CALL),
            },
        );
        assert_eq!(
            (s.source, s.usage.input_tokens, s.refused_report),
            (UsageSource::Reported, MAX_TOKENS_PER_CALL, None)
        );
    }
}
