//! The CSV export's format: RFC 4180 lines (CRLF, fields quoted when they hold a comma, quote,
//! CR or LF), the `token_usage` contract columns in order, NULL as an empty field.
//!
//! **No cell is a live formula.** Text fields carry what end users chose — a JWT `sub`, a model
//! name, a request id — and a spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a
//! formula (`=HYPERLINK(…)`, `=cmd|' /C calc'!A0`), as it does after a tab or a carriage return.
//! As OWASP recommends against CSV injection, such a text field is written with a single quote
//! `'` before it, and quoted (embedded quotes doubled), so the spreadsheet shows it as text:
//! `=1+2` becomes `"'=1+2"`. Only text fields: the integer columns Tollgate formats itself
//! (ids, times, statuses, tokens, costs, latencies) stay plain numbers, negative ones included.

use crate::store::CallRow;

/// The CSV header: the `token_usage` contract columns, in order.
pub const COLUMNS: [&str; 19] = [
    "id",
    "request_id",
    "ts",
    "user_id",
    "provider",
    "model",
    "endpoint",
    "streamed",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_nano_usd",
    "usage_source",
    "latency_ms",
    "ttfb_ms",
    "outcome",
];

/// Append the CSV header line (CRLF-terminated, RFC 4180).
pub fn write_header(out: &mut Vec<u8>) {
    out.extend_from_slice(COLUMNS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether a spreadsheet would read a text cell starting this way as a formula: `=`, `+`,
/// `-`, `@`, tab or carriage return first (OWASP's list for CSV injection).
fn starts_like_a_formula(field: &str) -> bool {
    matches!(
        field.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// Append one text field: quoted when it holds a comma, quote, CR or LF (quotes doubled), and
/// inert — a field a spreadsheet would run as a formula gets a `'` before it, and quotes.
fn csv_field(out: &mut Vec<u8>, field: &str) {
    let formula = starts_like_a_formula(field);
    if formula || field.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        if formula {
            out.push(b'\'');
        }
        for b in field.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

fn csv_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Append one call as a CSV line in [`COLUMNS`] order; NULL is an empty field.
pub fn write_row(out: &mut Vec<u8>, row: &CallRow) {
    csv_int(out, row.id);
    out.push(b',');
    csv_field(out, &row.request_id);
    out.push(b',');
    csv_int(out, row.ts);
    out.push(b',');
    csv_field(out, &row.user_id);
    out.push(b',');
    csv_field(out, &row.provider);
    out.push(b',');
    csv_field(out, row.model.as_deref().unwrap_or(""));
    out.push(b',');
    csv_field(out, &row.endpoint);
    out.push(b',');
    csv_int(out, i64::from(row.streamed));
    for n in [
        row.status,
        row.input_tokens,
        row.cached_input_tokens,
        row.output_tokens,
        row.reasoning_tokens,
        row.total_tokens,
    ] {
        out.push(b',');
        csv_int(out, n);
    }
    out.push(b',');
    if let Some(cost) = row.cost_nano_usd {
        csv_int(out, cost);
    }
    out.push(b',');
    csv_field(out, &row.usage_source);
    out.push(b',');
    csv_int(out, row.latency_ms);
    out.push(b',');
    if let Some(ttfb) = row.ttfb_ms {
        csv_int(out, ttfb);
    }
    out.push(b',');
    csv_field(out, &row.outcome);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(field: &str) -> String {
        let mut out = Vec::new();
        csv_field(&mut out, field);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn text_cells_a_spreadsheet_would_run_are_written_as_text() {
        for (field, written) in [
            (
                "=HYPERLINK(\"http://evil\",\"x\")",
                "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"",
            ),
            ("+cmd|' /C calc'!A0", "\"'+cmd|' /C calc'!A0\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1:A9)", "\"'@SUM(A1:A9)\""),
            ("\t=1+1", "\"'\t=1+1\""),
            ("\r=1+1", "\"'\r=1+1\""),
            ("=", "\"'=\""),
            ("=a,b", "\"'=a,b\""),
        ] {
            assert_eq!(cell(field), written, "{field:?}");
        }
        // Anything else is written as before: plain, or quoted for RFC 4180 only.
        for (field, written) in [
            ("gpt-4o", "gpt-4o"),
            ("a=b", "a=b"),
            (" =1", " =1"),
            ("'=1", "'=1"),
            ("", ""),
            ("u,1", "\"u,1\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("line\nbreak", "\"line\nbreak\""),
        ] {
            assert_eq!(cell(field), written, "{field:?}");
        }
    }

    #[test]
    fn integer_columns_stay_numbers() {
        let row = CallRow {
            id: 7,
            request_id: "-req".into(),
            ts: -5,
            user_id: "@u".into(),
            provider: "openai".into(),
            model: Some("=m".into()),
            endpoint: "responses".into(),
            streamed: false,
            status: 200,
            input_tokens: 1,
            cached_input_tokens: 0,
            output_tokens: 2,
            reasoning_tokens: 0,
            total_tokens: 3,
            cost_nano_usd: Some(-4),
            usage_source: "invalid".into(),
            latency_ms: 9,
            ttfb_ms: Some(8),
            outcome: "upstream_error".into(),
        };
        let mut out = Vec::new();
        write_row(&mut out, &row);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "7,\"'-req\",-5,\"'@u\",openai,\"'=m\",responses,0,200,1,0,2,0,3,-4,invalid,9,8,upstream_error\r\n"
        );
    }

    #[test]
    fn rows_are_quoted_as_rfc_4180_asks() {
        let row = CallRow {
            id: 2,
            request_id: "req-1".into(),
            ts: 1_792_022_430_000,
            user_id: "u,1".into(),
            provider: "openai".into(),
            model: Some("my,\"model\"".into()),
            endpoint: "responses".into(),
            streamed: true,
            status: 200,
            input_tokens: 10,
            cached_input_tokens: 2,
            output_tokens: 11,
            reasoning_tokens: 2,
            total_tokens: 21,
            cost_nano_usd: None,
            usage_source: "reported".into(),
            latency_ms: 101,
            ttfb_ms: None,
            outcome: "complete".into(),
        };
        let mut out = Vec::new();
        write_header(&mut out);
        write_row(&mut out, &row);
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "id,request_id,ts,user_id,provider,model,endpoint,streamed,status,input_tokens,\
             cached_input_tokens,output_tokens,reasoning_tokens,total_tokens,cost_nano_usd,\
             usage_source,latency_ms,ttfb_ms,outcome"
        );
        assert_eq!(
            lines[1],
            "2,req-1,1792022430000,\"u,1\",openai,\"my,\"\"model\"\"\",responses,1,200,10,2,11,2,21,,reported,101,,complete"
        );
        assert_eq!(lines[2], "");
        assert_eq!(lines.len(), 3);
    }
}
