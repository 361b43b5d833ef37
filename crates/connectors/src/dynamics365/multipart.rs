//! The `multipart/mixed` framing of Dataverse `$batch` requests and responses: splitting a body
//! on its boundary, reading the HTTP message inside each `application/http` part, and writing
//! parts. Shared by the connector (which writes requests and reads responses) and the simulator
//! (which does the reverse); it knows nothing of entities or JSON.

use std::fmt::Write as _;

/// One MIME part: its own headers and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimePart {
    /// The part's headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// Everything after the blank line that ends the headers.
    pub content: String,
}

impl MimePart {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// An HTTP request or response carried inside an `application/http` part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMessage {
    /// The request line (`PATCH /api/data/v9.2/x HTTP/1.1`) or status line (`HTTP/1.1 204 No Content`).
    pub start_line: String,
    /// The message's headers.
    pub headers: Vec<(String, String)>,
    /// The message body (empty when there is none).
    pub body: String,
}

impl HttpMessage {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The status code of a response's status line.
    pub fn status(&self) -> Option<u16> {
        let mut words = self.start_line.split_whitespace();
        let version = words.next()?;
        if !version.starts_with("HTTP/") {
            return None;
        }
        words.next()?.parse().ok()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// The `boundary` parameter of a `multipart/mixed` content type, unquoted.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    let media = pieces.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    pieces.find_map(|piece| {
        let (key, value) = piece.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
            .filter(|boundary| !boundary.is_empty())
    })
}

/// Splits a multipart body into its parts; fails naming what is missing.
pub fn split_parts(body: &str, boundary: &str) -> Result<Vec<MimePart>, String> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = match body.find(&delimiter) {
        Some(start) => &body[start + delimiter.len()..],
        None => return Err(format!("the body has no boundary line '--{boundary}'")),
    };
    loop {
        if rest.starts_with("--") {
            return Ok(parts);
        }
        let rest_after_line = skip_line(rest);
        let Some(end) = rest_after_line.find(&delimiter) else {
            return Err(format!(
                "the multipart body is not terminated by '--{boundary}--'"
            ));
        };
        let raw = &rest_after_line[..end];
        // The CRLF before a delimiter belongs to the delimiter.
        let raw = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(raw);
        parts.push(parse_part(raw)?);
        rest = &rest_after_line[end + delimiter.len()..];
    }
}

fn skip_line(text: &str) -> &str {
    match text.find('\n') {
        Some(newline) => &text[newline + 1..],
        None => "",
    }
}

/// Splits `text` into header lines and what follows the first blank line.
fn split_head(text: &str) -> (Vec<&str>, &str) {
    let mut lines = Vec::new();
    let mut rest = text;
    loop {
        let (line, after) = match rest.find('\n') {
            Some(newline) => (&rest[..newline], &rest[newline + 1..]),
            None => (rest, ""),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return (lines, after);
        }
        lines.push(line);
        if after.is_empty() {
            return (lines, after);
        }
        rest = after;
    }
}

fn parse_headers(lines: &[&str]) -> Result<Vec<(String, String)>, String> {
    lines
        .iter()
        .map(|line| {
            line.split_once(':')
                .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
                .ok_or_else(|| format!("'{line}' is not a header line"))
        })
        .collect()
}

fn parse_part(raw: &str) -> Result<MimePart, String> {
    let (lines, content) = split_head(raw);
    Ok(MimePart {
        headers: parse_headers(&lines)?,
        content: content.to_string(),
    })
}

/// Reads the HTTP message inside an `application/http` part.
pub fn parse_http_message(content: &str) -> Result<HttpMessage, String> {
    let content = content.trim_start_matches(['\r', '\n']);
    let (lines, body) = split_head(content);
    let Some((start_line, header_lines)) = lines.split_first() else {
        return Err("the part holds no HTTP request or status line".to_string());
    };
    Ok(HttpMessage {
        start_line: start_line.to_string(),
        headers: parse_headers(header_lines)?,
        body: body.trim_end_matches(['\r', '\n']).to_string(),
    })
}

/// Writes one `application/http` part (delimiter included) carrying `message`.
pub fn write_http_part(
    out: &mut String,
    boundary: &str,
    part_headers: &[(&str, &str)],
    message: &HttpMessage,
) {
    let _ = write!(out, "--{boundary}\r\n");
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    for (name, value) in part_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    write_message(out, message);
    out.push_str("\r\n");
}

/// Writes the start line, headers, blank line and body of an HTTP message.
pub fn write_message(out: &mut String, message: &HttpMessage) {
    let _ = write!(out, "{}\r\n", message.start_line);
    for (name, value) in &message.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&message.body);
}

/// Writes the closing delimiter.
pub fn write_end(out: &mut String, boundary: &str) {
    let _ = write!(out, "--{boundary}--\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_is_read_quoted_or_not() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=\"batch_1\"").as_deref(),
            Some("batch_1")
        );
        assert_eq!(
            boundary_of("multipart/mixed;boundary=batchresponse_x").as_deref(),
            Some("batchresponse_x")
        );
        assert_eq!(boundary_of("application/json"), None);
    }

    #[test]
    fn written_parts_split_back_into_the_same_messages() {
        let message = HttpMessage {
            start_line: "PATCH /api/data/v9.2/contacts(1) HTTP/1.1".to_string(),
            headers: vec![(
                "Content-Type".to_string(),
                "application/json; type=entry".to_string(),
            )],
            body: "{\"firstname\":\"Ann\"}".to_string(),
        };
        let mut body = String::new();
        write_http_part(&mut body, "batch_a", &[("Content-ID", "1")], &message);
        write_http_part(&mut body, "batch_a", &[], &message);
        write_end(&mut body, "batch_a");
        let parts = split_parts(&body, "batch_a").expect("well-formed");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].header("content-id"), Some("1"));
        let parsed = parse_http_message(&parts[1].content).expect("an HTTP message");
        assert_eq!(parsed, message);
    }

    #[test]
    fn status_line_gives_the_status() {
        let parsed = parse_http_message("HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\n\r\n")
            .expect("a response");
        assert_eq!(parsed.status(), Some(204));
        assert_eq!(parsed.header("odata-version"), Some("4.0"));
        assert_eq!(parsed.body, "");
    }

    #[test]
    fn unterminated_body_is_an_error() {
        let error = split_parts("--b\r\nContent-Type: application/http\r\n\r\nGET x", "b")
            .expect_err("no closing delimiter");
        assert!(error.contains("not terminated"), "{error}");
    }
}
