//! The simulator's own reading and writing of `$batch` bodies, written from RFC 2046 §5.1
//! (`multipart/mixed`) and the OData 4.0 batch format Dataverse documents ("Execute batch
//! operations using the Web API"): a body is split into parts on delimiter *lines*
//! (`--<boundary>` at the start of a line, optional transport padding, CRLF or bare LF), ends with
//! `--<boundary>--`, may carry a preamble and an epilogue, and each `application/http` part holds
//! one HTTP request or response. Deliberately not shared with the connector: tests feed each
//! side's output to the other's reader, so a framing bug on either side shows.

use std::fmt::Write as _;

/// One MIME part: its headers (folded lines unfolded) and what follows the blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The part's content, without the line break that belongs to the next delimiter.
    pub content: String,
}

impl Part {
    /// The first header called `name`, compared case-insensitively as RFC 2045 asks.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

/// An HTTP request or response inside an `application/http` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMessage {
    /// `METHOD URL HTTP/1.1` for a request, `HTTP/1.1 <status> <reason>` for a response.
    pub start_line: String,
    /// The message's headers in order.
    pub headers: Vec<(String, String)>,
    /// The message body, trailing line breaks removed (empty when there is none).
    pub body: String,
}

fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find_map(|(key, value)| key.eq_ignore_ascii_case(name).then_some(value.as_str()))
}

/// The `boundary` parameter of a `multipart/mixed` media type (quoted or not); `None` for any
/// other media type or when the parameter is missing or empty.
pub fn boundary_param(content_type: &str) -> Option<String> {
    let (media, parameters) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !media.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    for parameter in parameters.split(';') {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("boundary") {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|inner| inner.strip_suffix('"'))
                .unwrap_or(value);
            return (!value.is_empty()).then(|| value.to_string());
        }
    }
    None
}

/// What a line of the body is, relative to the boundary.
#[derive(PartialEq, Eq)]
enum LineKind {
    Delimiter,
    Close,
    Other,
}

fn classify(line: &str, boundary: &str) -> LineKind {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(rest) = line
        .strip_prefix("--")
        .and_then(|rest| rest.strip_prefix(boundary))
    else {
        return LineKind::Other;
    };
    // RFC 2046 allows linear white space ("transport padding") after a delimiter.
    match rest.trim_end_matches([' ', '\t']) {
        "" => LineKind::Delimiter,
        "--" => LineKind::Close,
        _ => LineKind::Other,
    }
}

/// Splits a multipart body into its parts; the error says what is missing.
pub fn parts(body: &str, boundary: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    // Byte offset where the current part's content starts, once a delimiter was seen.
    let mut open: Option<usize> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let kind = classify(line, boundary);
        if kind != LineKind::Other {
            if let Some(start) = open {
                let content = &body[start..offset];
                // The line break before a delimiter is part of the delimiter.
                let content = content
                    .strip_suffix("\r\n")
                    .or_else(|| content.strip_suffix('\n'))
                    .unwrap_or(content);
                parts.push(read_part(content)?);
            }
            if kind == LineKind::Close {
                if open.is_none() {
                    return Err(format!(
                        "the closing delimiter '--{boundary}--' comes before any part"
                    ));
                }
                return Ok(parts);
            }
            open = Some(offset + line.len());
        }
        offset += line.len();
    }
    Err(match open {
        None => format!("no delimiter line '--{boundary}' was found"),
        Some(_) => format!("the body does not end with the closing delimiter '--{boundary}--'"),
    })
}

/// Reads header lines up to the first empty line (unfolding continuation lines); returns the
/// headers and the rest of the text.
fn read_head(text: &str) -> Result<(Vec<String>, &str), String> {
    let mut lines: Vec<String> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.is_empty() {
            return Ok((lines, &text[offset..]));
        }
        if bare.starts_with([' ', '\t']) {
            let Some(last) = lines.last_mut() else {
                return Err(format!("'{bare}' continues a header that is not there"));
            };
            last.push(' ');
            last.push_str(bare.trim());
        } else {
            lines.push(bare.to_string());
        }
    }
    // No blank line: headers only, no content.
    Ok((lines, ""))
}

fn header_pair(line: &str) -> Result<(String, String), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("'{line}' is not a 'Name: value' header line"))?;
    if name.trim().is_empty() {
        return Err(format!("'{line}' has an empty header name"));
    }
    Ok((name.trim().to_string(), value.trim().to_string()))
}

fn read_part(raw: &str) -> Result<Part, String> {
    let (lines, content) = read_head(raw)?;
    Ok(Part {
        headers: lines
            .iter()
            .map(|line| header_pair(line))
            .collect::<Result<_, _>>()?,
        content: content.to_string(),
    })
}

/// Reads the HTTP message carried by an `application/http` part.
pub fn read_message(content: &str) -> Result<HttpMessage, String> {
    let content = content.trim_start_matches(['\r', '\n']);
    let (lines, body) = read_head(content)?;
    let Some((start_line, header_lines)) = lines.split_first() else {
        return Err("the part carries no HTTP request line or status line".to_string());
    };
    Ok(HttpMessage {
        start_line: start_line.clone(),
        headers: header_lines
            .iter()
            .map(|line| header_pair(line))
            .collect::<Result<_, _>>()?,
        body: body.trim_end_matches(['\r', '\n']).to_string(),
    })
}

/// Appends one `application/http` part (its delimiter line first) carrying `message`.
pub fn render_part(
    out: &mut String,
    boundary: &str,
    part_headers: &[(&str, &str)],
    message: &HttpMessage,
) {
    let _ = write!(
        out,
        "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    );
    for (name, value) in part_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "\r\n{}\r\n", message.start_line);
    for (name, value) in &message.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "\r\n{}\r\n", message.body);
}

/// Appends the closing delimiter.
pub fn render_close(out: &mut String, boundary: &str) {
    let _ = write!(out, "--{boundary}--\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = "--batch_1\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
\r\n\
GET /api/data/v9.2/contacts?$top=1 HTTP/1.1\r\n\
Accept: application/json\r\n\
\r\n\
\r\n\
--batch_1\r\n\
Content-Type: multipart/mixed; boundary=\"changeset_a\"\r\n\
\r\n\
--changeset_a\r\n\
Content-Type: application/http\r\n\
Content-ID: 1\r\n\
\r\n\
POST /api/data/v9.2/contacts HTTP/1.1\r\n\
Content-Type: application/json\r\n\
\r\n\
{\"lastname\":\"--batch_1 in a value\"}\r\n\
--changeset_a--\r\n\
--batch_1--\r\n";

    #[test]
    fn reads_a_documented_batch_with_a_change_set() {
        let outer = parts(REQUEST, "batch_1").unwrap();
        assert_eq!(outer.len(), 2);
        let get = read_message(&outer[0].content).unwrap();
        assert_eq!(
            get.start_line,
            "GET /api/data/v9.2/contacts?$top=1 HTTP/1.1"
        );
        assert_eq!(get.body, "");
        let inner_boundary = boundary_param(outer[1].header("content-type").unwrap()).unwrap();
        assert_eq!(inner_boundary, "changeset_a");
        let inner = parts(&outer[1].content, &inner_boundary).unwrap();
        assert_eq!(inner[0].header("Content-ID"), Some("1"));
        let post = read_message(&inner[0].content).unwrap();
        // A boundary inside a line is content, not a delimiter.
        assert_eq!(post.body, "{\"lastname\":\"--batch_1 in a value\"}");
    }

    #[test]
    fn accepts_bare_lf_padding_preamble_and_folded_headers() {
        let body = "preamble\n--b  \nX-One: a\n b\n\nhello\n--b--\nepilogue";
        let read = parts(body, "b").unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].header("x-one"), Some("a b"));
        assert_eq!(read[0].content, "hello");
    }

    #[test]
    fn malformed_bodies_are_named() {
        assert!(parts("no parts", "b").unwrap_err().contains("no delimiter"));
        assert!(
            parts("--b\r\n\r\nx\r\n", "b")
                .unwrap_err()
                .contains("closing")
        );
        assert!(
            parts("--b\r\nnot a header\r\n\r\n--b--", "b")
                .unwrap_err()
                .contains("header")
        );
        assert_eq!(boundary_param("application/json"), None);
        assert_eq!(boundary_param("multipart/mixed"), None);
        assert_eq!(
            boundary_param("multipart/mixed;boundary=x").as_deref(),
            Some("x")
        );
    }

    #[test]
    fn a_rendered_part_reads_back() {
        let message = HttpMessage {
            start_line: "HTTP/1.1 204 No Content".into(),
            headers: vec![("OData-EntityId".into(), "http://x/contacts(1)".into())],
            body: String::new(),
        };
        let mut out = String::new();
        render_part(&mut out, "r", &[("Content-ID", "7")], &message);
        render_close(&mut out, "r");
        let read = parts(&out, "r").unwrap();
        assert_eq!(read[0].header("Content-ID"), Some("7"));
        assert_eq!(read_message(&read[0].content).unwrap(), message);
    }

    /// The connector's writer feeds this reader, and this writer feeds the connector's reader.
    #[test]
    fn agrees_with_the_connector_codec() {
        use conduit_connectors::dynamics365::multipart as connector;
        let request = connector::HttpMessage {
            start_line: "PATCH /api/data/v9.2/contacts(1) HTTP/1.1".into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: "{\"firstname\":\"Ann\"}".into(),
        };
        let mut written = String::new();
        connector::write_http_part(&mut written, "batch_x", &[("Content-ID", "3")], &request);
        connector::write_end(&mut written, "batch_x");
        let read = parts(&written, "batch_x").unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].header("Content-ID"), Some("3"));
        let message = read_message(&read[0].content).unwrap();
        assert_eq!(
            (message.start_line, message.headers, message.body),
            (request.start_line, request.headers, request.body)
        );

        let response = HttpMessage {
            start_line: "HTTP/1.1 400 Bad Request".into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: "{\"error\":{\"code\":\"0x0\",\"message\":\"m\"}}".into(),
        };
        let mut rendered = String::new();
        render_part(&mut rendered, "batchresponse_y", &[], &response);
        render_close(&mut rendered, "batchresponse_y");
        let theirs = connector::split_parts(&rendered, "batchresponse_y").unwrap();
        let message = connector::parse_http_message(&theirs[0].content).unwrap();
        assert_eq!(message.status(), Some(400));
        assert_eq!(message.body, response.body);
        assert_eq!(
            connector::boundary_of("multipart/mixed; boundary=\"q\""),
            boundary_param("multipart/mixed; boundary=\"q\"")
        );
    }
}
