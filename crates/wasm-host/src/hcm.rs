//! Envoy's HTTP connection manager and router around the filter: the headers they add,
//! local replies, gRPC trailers-only replies. Measured with Envoy 1.40 (default HCM
//! settings, router last; `tests/fixtures/fidelity/MEASURED.md`, gaps 2 and 6).

use std::time::Duration;

use crate::envoy::HeaderMap;
use crate::state::LocalReply;

/// Whether a request is gRPC: its `content-type` starts with `application/grpc`.
pub(crate) fn is_grpc(request: Option<&HeaderMap>) -> bool {
    request
        .and_then(|h| h.get("content-type"))
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// What the HCM adds before the first filter, when absent: `:scheme` (after the other
/// pseudo-headers, following `x-forwarded-proto`), then `x-forwarded-proto`
/// (`https` over TLS, else `http`) and `x-request-id` appended in that order.
/// Client-supplied values are kept.
pub(crate) fn add_request_headers(
    headers: &mut HeaderMap,
    tls: bool,
    request_id: impl FnOnce() -> String,
) {
    let proto = headers
        .get("x-forwarded-proto")
        .map(str::to_owned)
        .unwrap_or_else(|| if tls { "https" } else { "http" }.to_owned());
    if headers.get(":scheme").is_none() {
        let at = headers
            .pairs()
            .iter()
            .rposition(|(k, _)| k.starts_with(':'))
            .map_or(0, |i| i + 1);
        headers.insert(at, ":scheme", &proto);
    }
    if headers.get("x-forwarded-proto").is_none() {
        headers.add("x-forwarded-proto", &proto);
    }
    if headers.get("x-request-id").is_none() {
        headers.add("x-request-id", &request_id());
    }
}

/// A UUID version 4 (as Envoy's `x-request-id`) from 16 deterministic bytes.
pub(crate) fn uuid4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What the client gets after the filter: `server: envoy` (an upstream's value is
/// overwritten in place) and a `date` (an upstream's is kept), appended.
pub(crate) fn finish_client_headers(headers: &mut HeaderMap, now: Duration) {
    if headers.get("date").is_none() {
        headers.add("date", &http_date(now));
    }
    if headers.get("server").is_some() {
        headers.set_in_place("server", "envoy");
    } else {
        headers.add("server", "envoy");
    }
}

/// The `:status`, headers and body of a local reply as the filter's response callbacks
/// see them, and whether the headers end the stream.
///
/// Plain request: `:status`, the filter's headers in its order (duplicates kept), then
/// `content-length` and `content-type: text/plain` unless the filter set them, only for a
/// non-empty body. gRPC request: a trailers-only reply: `:status: 200`, the filter's
/// headers with `content-type: application/grpc` (a filter's value replaced in place),
/// `grpc-status` (the filter's, else mapped from the HTTP status), `grpc-message` (the
/// body, when not empty); no body.
pub(crate) fn local_reply(reply: &LocalReply, grpc: bool) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::default();
    if grpc {
        headers.add(":status", "200");
        for (k, v) in &reply.headers {
            headers.add(k, v);
        }
        if headers.get("content-type").is_some() {
            headers.set_in_place("content-type", "application/grpc");
        } else {
            headers.add("content-type", "application/grpc");
        }
        let code = reply
            .grpc_status
            .map_or_else(|| grpc_status_of_http(reply.status), |c| c as u32);
        headers.add("grpc-status", &code.to_string());
        if !reply.body.is_empty() {
            headers.add("grpc-message", &String::from_utf8_lossy(&reply.body));
        }
        return (headers, Vec::new());
    }
    headers.add(":status", &reply.status.to_string());
    for (k, v) in &reply.headers {
        headers.add(k, v);
    }
    if !reply.body.is_empty() {
        if headers.get("content-length").is_none() {
            headers.add("content-length", &reply.body.len().to_string());
        }
        if headers.get("content-type").is_none() {
            headers.add("content-type", "text/plain");
        }
    }
    (headers, reply.body.clone())
}

/// What the downstream codec adds to the client's response headers, after everything
/// else (measured in Envoy 1.40 with curl 7.88 and the Go SDK corpus):
/// - HTTP/1.x: `connection: close` when the response goes out before the request was
///   fully received (a local reply or direct response to a POST whose body had not all
///   arrived, a gRPC request refused at its headers); then `content-length: 0` for a
///   response that ends with its headers and has no `content-length` (gRPC trailers-only
///   replies too), or `transfer-encoding: chunked` for one with a body and none.
/// - HTTP/2 and HTTP/3: nothing (an empty reply has no `content-length`).
pub(crate) fn add_codec_framing(
    headers: &mut HeaderMap,
    http1: bool,
    headers_only: bool,
    request_complete: bool,
) {
    if !http1 {
        return;
    }
    if !request_complete && headers.get("connection").is_none() {
        headers.add("connection", "close");
    }
    if headers.get("content-length").is_none() && headers.get("transfer-encoding").is_none() {
        if headers_only {
            headers.add("content-length", "0");
        } else {
            headers.add("transfer-encoding", "chunked");
        }
    }
}

/// Envoy's `Grpc::Utility::httpToGrpcStatus` (measured: 401 -> 16, 500 -> 2, 503 -> 14).
pub(crate) fn grpc_status_of_http(status: u32) -> u32 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// Envoy's details sanitizing: whitespace becomes `_` (`denied by policy` ->
/// `denied_by_policy` in the access log).
pub(crate) fn sanitize_details(details: &str) -> String {
    details
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// An IMF-fixdate (`Thu, 01 Jan 2026 00:00:00 GMT`) for `since_epoch`.
pub(crate) fn http_date(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)];
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!("{weekday}, {day:02} {month_name} {year} {h:02}:{m:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        assert_eq!(
            http_date(Duration::from_secs(1_767_225_600)),
            "Thu, 01 Jan 2026 00:00:00 GMT"
        );
        assert_eq!(
            http_date(Duration::from_secs(951_782_400 + 3661)),
            "Tue, 29 Feb 2000 01:01:01 GMT"
        );
    }

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = uuid4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
