//! What a call consumed and how it ended — the vocabulary of a usage row, independent of any
//! provider's wire format and of how rows are stored.
//!
//! [`Usage`] is one call's tokens in the one convention every provider is mapped to; [`UsageSource`]
//! says where those numbers came from; [`Outcome`] says how the call ended; [`Totals`] sums many
//! calls (the rollups the dashboard reads, the admin API's figures).
//!
//! **Figures from outside are bounded.** A provider's report is believed only when every field is
//! at most [`MAX_TOKENS_PER_CALL`] ([`Usage::is_plausible`]); a call's cost is at most
//! [`MAX_COST_NANO_USD_PER_CALL`]. So one call adds at most a few billion to any sum, and the sums
//! (saturating here and in the store) stay integers.
//!
//! This module imports nothing else of the crate and no database crate: `provider` produces
//! these values, `proxy` decides them, `store` persists them, `admin` shows them.

/// The most tokens one call may report in any field of its [`Usage`] (input, cached input,
/// output, reasoning): 10⁹, a thousand times the largest context window of any model. A report
/// above it is not a count but a bug (or an attack) upstream: the call is recorded with
/// [`UsageSource::Invalid`] and its estimated usage instead.
pub const MAX_TOKENS_PER_CALL: u64 = 1_000_000_000;

/// The most one call may cost, in nano-USD: 10¹⁵, one million USD. Far above any real call (the
/// priciest models cost a few hundred USD for a call that fills their context); pricing clamps a
/// cost above it, which only an absurd price in `[pricing]` can reach.
pub const MAX_COST_NANO_USD_PER_CALL: i64 = 1_000_000_000_000_000;

/// Token usage in the one convention every provider is mapped to: input includes cached input,
/// output includes reasoning, and `input + output = total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// `input + output`, the figure limits are counted in.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Whether every field is at most [`MAX_TOKENS_PER_CALL`]: a report that may be believed.
    pub fn is_plausible(&self) -> bool {
        [
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.reasoning_tokens,
        ]
        .iter()
        .all(|&n| n <= MAX_TOKENS_PER_CALL)
    }
}

/// Where a row's token counts came from (`token_usage.usage_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageSource {
    /// The provider's own report.
    Reported,
    /// The call ended before the provider reported usage; estimated from the request and the
    /// text relayed so far.
    Estimated,
    /// Nothing was consumed (a refusal) or the endpoint reports no usage.
    None,
    /// The provider reported a usage that cannot be true (a field above
    /// [`MAX_TOKENS_PER_CALL`]): the row holds the estimate instead, as for `Estimated`.
    Invalid,
}

impl UsageSource {
    /// Every source, for documentation and tests.
    pub const ALL: [UsageSource; 4] = [
        UsageSource::Reported,
        UsageSource::Estimated,
        UsageSource::None,
        UsageSource::Invalid,
    ];

    /// The value stored in `token_usage.usage_source`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Estimated => "estimated",
            UsageSource::None => "none",
            UsageSource::Invalid => "invalid",
        }
    }

    /// The source stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<UsageSource> {
        UsageSource::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// Whether the row's tokens are Tollgate's estimate rather than the provider's report
    /// (`estimated`, and `invalid`, whose report was replaced by the estimate): what
    /// [`Totals::estimated_calls`] counts.
    pub fn is_estimate(self) -> bool {
        matches!(self, UsageSource::Estimated | UsageSource::Invalid)
    }
}

/// How a call ended (`token_usage.outcome`). Every value the gateway writes is here; the
/// strings are part of the store's contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The answer reached the client whole.
    Complete,
    /// The client went away before the answer ended (or before its head).
    ClientGone,
    /// The upstream answered with an error status (4xx/5xx), relayed to the client as it came;
    /// or the upstream connection failed mid-answer and the client's stream was aborted. The
    /// row's status tells the two apart.
    UpstreamError,
    /// The upstream sent nothing for `server.idle_timeout`; the client's stream was aborted.
    IdleTimeout,
    /// A successful (2xx) answer ended cleanly but carried an error event, element or object.
    StreamError,
    /// A stream ended cleanly without its final event.
    StreamTruncated,
    /// Refused before forwarding: the body was over `server.max_request_bytes`.
    RefusedBodyTooLarge,
    /// Refused before forwarding: the body could not be read.
    RefusedBodyUnreadable,
    /// Refused before forwarding: the body did not arrive within
    /// `server.request_body_timeout_ms`.
    RefusedBodyTimeout,
    /// Refused before forwarding: more calls in flight than `server.max_in_flight`.
    RefusedOverloaded,
    /// Refused before forwarding: the store's queue had no room for the call's row.
    RefusedStoreFull,
    /// Refused before forwarding: the path or body could be read two ways (400).
    RefusedInvalidRequest,
    /// Refused before forwarding: an endpoint not in the table, with `unknown_endpoints =
    /// "refuse"` (404).
    RefusedUnknownEndpoint,
    /// Refused before forwarding: the operator blocked the user.
    RefusedBlocked,
    /// Refused before forwarding: a daily or monthly limit or budget is used up.
    RefusedQuota,
    /// Refused before forwarding: over the request rate.
    RefusedRate,
    /// Refused before forwarding: over the cap on calls in flight.
    RefusedConcurrency,
    /// Refused before forwarding: the caller's plan does not allow the model, or the output the
    /// request asks for (403).
    RefusedPlan,
    /// The upstream could not be reached (502).
    UpstreamUnreachable,
    /// No answer head from the upstream in time (504).
    UpstreamTimeout,
    /// The upstream refused the gateway's own provider key (502).
    UpstreamRejectedKey,
    /// A state the gateway cannot be in (500).
    InternalError,
    /// The gateway stopped (killed, power cut) while the call was in flight; recorded at the
    /// next start from the call journal, with its reservation as the estimate and status 0.
    Recovered,
}

impl Outcome {
    /// Every outcome, for documentation and tests.
    pub const ALL: [Outcome; 23] = [
        Outcome::Complete,
        Outcome::ClientGone,
        Outcome::UpstreamError,
        Outcome::IdleTimeout,
        Outcome::StreamError,
        Outcome::StreamTruncated,
        Outcome::RefusedBodyTooLarge,
        Outcome::RefusedBodyUnreadable,
        Outcome::RefusedBodyTimeout,
        Outcome::RefusedOverloaded,
        Outcome::RefusedStoreFull,
        Outcome::RefusedInvalidRequest,
        Outcome::RefusedUnknownEndpoint,
        Outcome::RefusedBlocked,
        Outcome::RefusedQuota,
        Outcome::RefusedRate,
        Outcome::RefusedConcurrency,
        Outcome::RefusedPlan,
        Outcome::UpstreamUnreachable,
        Outcome::UpstreamTimeout,
        Outcome::UpstreamRejectedKey,
        Outcome::InternalError,
        Outcome::Recovered,
    ];

    /// The value stored in `token_usage.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientGone => "client_gone",
            Outcome::UpstreamError => "upstream_error",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::StreamError => "stream_error",
            Outcome::StreamTruncated => "stream_truncated",
            Outcome::RefusedBodyTooLarge => "refused_body_too_large",
            Outcome::RefusedBodyUnreadable => "refused_body_unreadable",
            Outcome::RefusedBodyTimeout => "refused_body_timeout",
            Outcome::RefusedOverloaded => "refused_overloaded",
            Outcome::RefusedStoreFull => "refused_store_full",
            Outcome::RefusedInvalidRequest => "refused_invalid_request",
            Outcome::RefusedUnknownEndpoint => "refused_unknown_endpoint",
            Outcome::RefusedBlocked => "refused_blocked",
            Outcome::RefusedQuota => "refused_quota",
            Outcome::RefusedRate => "refused_rate",
            Outcome::RefusedConcurrency => "refused_concurrency",
            Outcome::RefusedPlan => "refused_plan",
            Outcome::UpstreamUnreachable => "upstream_unreachable",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamRejectedKey => "upstream_rejected_key",
            Outcome::InternalError => "internal_error",
            Outcome::Recovered => "recovered",
        }
    }

    /// The outcome stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Sums over a set of calls: what the rollups keep and the admin API reports. Saturating, so a
/// sum can never leave the integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: i64,
    pub input_tokens: i64,
    /// Included in `input_tokens`.
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    /// Included in `output_tokens`.
    pub reasoning_tokens: i64,
    /// input + output, the figure token limits count.
    pub total_tokens: i64,
    /// Priced calls only (see `unpriced_calls`); 1e-9 USD.
    pub cost_nano_usd: i64,
    /// Calls whose tokens are estimated (`usage_source` `estimated` or `invalid`, see
    /// [`UsageSource::is_estimate`]).
    pub estimated_calls: i64,
    /// Calls of a model without a price (their cost is not in `cost_nano_usd`).
    pub unpriced_calls: i64,
    /// Calls answered with a status >= 400.
    pub errors: i64,
    /// Sum of the calls' latencies: mean latency = `latency_ms_sum / calls`.
    pub latency_ms_sum: i64,
}

/// One call as it adds to [`Totals`].
#[derive(Clone, Copy, Debug)]
pub struct CallFigures<'a> {
    pub usage: &'a Usage,
    pub source: UsageSource,
    /// The HTTP status the client received.
    pub status: u16,
    /// `None` when the model has no price.
    pub cost_nano_usd: Option<i64>,
    pub latency_ms: u64,
}

/// A count as a stored integer: past `i64::MAX` it is `i64::MAX`.
pub fn stored_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Totals {
    /// Add one call.
    pub fn add_call(&mut self, call: CallFigures<'_>) {
        let u = call.usage;
        self.calls = self.calls.saturating_add(1);
        self.errors = self.errors.saturating_add(i64::from(call.status >= 400));
        self.input_tokens = self.input_tokens.saturating_add(stored_int(u.input_tokens));
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(stored_int(u.cached_input_tokens));
        self.output_tokens = self
            .output_tokens
            .saturating_add(stored_int(u.output_tokens));
        self.reasoning_tokens = self
            .reasoning_tokens
            .saturating_add(stored_int(u.reasoning_tokens));
        self.total_tokens = self.total_tokens.saturating_add(stored_int(u.total()));
        match call.cost_nano_usd {
            Some(cost) => self.cost_nano_usd = self.cost_nano_usd.saturating_add(cost),
            None => self.unpriced_calls = self.unpriced_calls.saturating_add(1),
        }
        self.estimated_calls = self
            .estimated_calls
            .saturating_add(i64::from(call.source.is_estimate()));
        self.latency_ms_sum = self
            .latency_ms_sum
            .saturating_add(stored_int(call.latency_ms));
    }

    /// Add `other` into `self`.
    pub fn add(&mut self, other: &Totals) {
        self.calls = self.calls.saturating_add(other.calls);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(other.reasoning_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.cost_nano_usd = self.cost_nano_usd.saturating_add(other.cost_nano_usd);
        self.estimated_calls = self.estimated_calls.saturating_add(other.estimated_calls);
        self.unpriced_calls = self.unpriced_calls.saturating_add(other.unpriced_calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
    }

    /// Take `other` out of `self` (the inverse of [`Totals::add`] short of saturation).
    pub fn sub(&mut self, other: &Totals) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_sub(other.cached_input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_sub(other.reasoning_tokens);
        self.total_tokens = self.total_tokens.saturating_sub(other.total_tokens);
        self.cost_nano_usd = self.cost_nano_usd.saturating_sub(other.cost_nano_usd);
        self.estimated_calls = self.estimated_calls.saturating_sub(other.estimated_calls);
        self.unpriced_calls = self.unpriced_calls.saturating_sub(other.unpriced_calls);
        self.errors = self.errors.saturating_sub(other.errors);
        self.latency_ms_sum = self.latency_ms_sum.saturating_sub(other.latency_ms_sum);
    }

    /// `estimated_calls / calls`, 0 without calls.
    #[expect(clippy::cast_precision_loss, reason = "a share for display")]
    pub fn estimated_share(&self) -> f64 {
        if self.calls <= 0 {
            0.0
        } else {
            self.estimated_calls as f64 / self.calls as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_are_distinct() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        let mut names: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
        assert_eq!(Outcome::parse("refused"), None);
    }

    #[test]
    fn sources_round_trip_and_invalid_counts_as_estimated() {
        for u in UsageSource::ALL {
            assert_eq!(UsageSource::parse(u.as_str()), Some(u));
        }
        assert_eq!(UsageSource::parse("bogus"), None);
        assert_eq!(
            UsageSource::ALL.map(UsageSource::is_estimate),
            [false, true, false, true]
        );
        let mut t = Totals::default();
        for source in UsageSource::ALL {
            t.add_call(CallFigures {
                usage: &Usage::default(),
                source,
                status: 200,
                cost_nano_usd: Some(0),
                latency_ms: 1,
            });
        }
        assert_eq!((t.calls, t.estimated_calls), (4, 2));
    }

    #[test]
    fn a_usage_is_plausible_up_to_the_ceiling_in_every_field() {
        let at = Usage {
            input_tokens: MAX_TOKENS_PER_CALL,
            cached_input_tokens: MAX_TOKENS_PER_CALL,
            output_tokens: MAX_TOKENS_PER_CALL,
            reasoning_tokens: MAX_TOKENS_PER_CALL,
        };
        assert!(at.is_plausible());
        assert!(Usage::default().is_plausible());
        let over = MAX_TOKENS_PER_CALL + 1;
        for usage in [
            Usage {
                input_tokens: over,
                ..at
            },
            Usage {
                cached_input_tokens: over,
                ..at
            },
            Usage {
                output_tokens: over,
                ..at
            },
            Usage {
                reasoning_tokens: u64::MAX,
                ..at
            },
        ] {
            assert!(!usage.is_plausible(), "{usage:?}");
        }
    }

    #[test]
    fn totals_add_calls_and_saturate() {
        let mut t = Totals::default();
        let usage = Usage {
            input_tokens: 10,
            cached_input_tokens: 2,
            output_tokens: 5,
            reasoning_tokens: 1,
        };
        t.add_call(CallFigures {
            usage: &usage,
            source: UsageSource::Estimated,
            status: 200,
            cost_nano_usd: None,
            latency_ms: 7,
        });
        t.add_call(CallFigures {
            usage: &usage,
            source: UsageSource::Reported,
            status: 502,
            cost_nano_usd: Some(40),
            latency_ms: 3,
        });
        assert_eq!(t.calls, 2);
        assert_eq!(t.total_tokens, 30);
        assert_eq!(t.cached_input_tokens, 4);
        assert_eq!((t.errors, t.unpriced_calls, t.estimated_calls), (1, 1, 1));
        assert_eq!((t.cost_nano_usd, t.latency_ms_sum), (40, 10));
        assert!((t.estimated_share() - 0.5).abs() < f64::EPSILON);

        let huge = Usage {
            input_tokens: u64::MAX,
            ..Usage::default()
        };
        t.add_call(CallFigures {
            usage: &huge,
            source: UsageSource::Reported,
            status: 200,
            cost_nano_usd: Some(i64::MAX),
            latency_ms: u64::MAX,
        });
        assert_eq!(t.total_tokens, i64::MAX);
        assert_eq!(t.cost_nano_usd, i64::MAX);
        let mut sum = t;
        sum.add(&t);
        assert_eq!(sum.input_tokens, i64::MAX);
        assert_eq!(sum.calls, 6);
    }
}
