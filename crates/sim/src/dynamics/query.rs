//! The OData query expressions the simulated Web API evaluates, written from the OData 4.01 URL
//! conventions and Dataverse's "Filter rows" / "Order rows" / "Join tables" pages: `$filter`
//! (comparisons `eq ne gt ge lt le`, `and` / `or` / `not`, parentheses, `contains`,
//! `startswith`, `endswith`, `null`, enum literals such as
//! `Microsoft.Dynamics.CRM.AttributeTypeCode'DateTime'`), `$orderby` (several keys, `asc` /
//! `desc`) and `$expand` items with nested options (`Attributes($select=a,b;$filter=...)`).
//! Anything outside that answers the documented `0x80060888` error naming what is unsupported.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value as Json};

use super::odata::{ApiError, parse_literal};

/// A parsed `$filter` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `left and right`.
    And(Box<Filter>, Box<Filter>),
    /// `left or right`.
    Or(Box<Filter>, Box<Filter>),
    /// `not inner`.
    Not(Box<Filter>),
    /// `property <op> literal` (a literal on the left is turned around).
    Compare {
        /// The property compared.
        property: String,
        /// The operator, as seen from the property.
        op: CompareOp,
        /// The literal.
        value: Json,
    },
    /// `contains|startswith|endswith(property, 'text')`.
    Text {
        /// Which function.
        function: TextFunction,
        /// The property searched.
        property: String,
        /// The text looked for.
        needle: String,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`.
    Eq,
    /// `ne`.
    Ne,
    /// `gt`.
    Gt,
    /// `ge`.
    Ge,
    /// `lt`.
    Lt,
    /// `le`.
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<CompareOp> {
        Some(match word {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    /// The operator with its operands swapped (`5 lt x` is `x gt 5`).
    fn flipped(self) -> CompareOp {
        match self {
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            same => same,
        }
    }
}

/// A string function of `$filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFunction {
    /// `contains`.
    Contains,
    /// `startswith`.
    StartsWith,
    /// `endswith`.
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Comma,
    Text(String),
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, ApiError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            ' ' | '\t' => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) if chars.peek().is_some_and(|(_, c)| *c == '\'') => {
                            chars.next();
                            value.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, c)) => value.push(c),
                        None => {
                            return Err(syntax(text, "a string literal is not closed"));
                        }
                    }
                }
                // `Namespace.EnumType'Member'` is an enum literal: keep the member as text.
                if let Some(Token::Word(word)) = tokens.last()
                    && word.contains('.')
                    && !text[..start].ends_with(' ')
                {
                    tokens.pop();
                }
                tokens.push(Token::Text(value));
            }
            _ => {
                let mut end = start + c.len_utf8();
                while let Some((index, next)) = chars.peek().copied() {
                    if matches!(next, ' ' | '\t' | '(' | ')' | ',' | '\'') {
                        break;
                    }
                    end = index + next.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Word(text[start..end].to_string()));
            }
        }
    }
    Ok(tokens)
}

fn syntax(filter: &str, what: &str) -> ApiError {
    ApiError::bad_request(format!("Syntax error in $filter '{filter}': {what}."))
}

/// Names an unsupported query feature in the service's error shape.
pub fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "The query option or function '{what}' is not supported by the simulated Web API."
    ))
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<Token>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn expect(&mut self, wanted: &Token, what: &str) -> Result<(), ApiError> {
        if self.next().as_ref() == Some(wanted) {
            Ok(())
        } else {
            Err(syntax(self.source, &format!("expected {what}")))
        }
    }

    fn or(&mut self) -> Result<Filter, ApiError> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.next();
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ApiError> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.next();
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ApiError> {
        if self.peek_word("not") {
            self.next();
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.next();
            let inner = self.or()?;
            self.expect(&Token::Close, "')'")?;
            return Ok(inner);
        }
        let Some(first) = self.next() else {
            return Err(syntax(self.source, "an expression is missing"));
        };
        if let Token::Word(name) = &first
            && self.peek() == Some(&Token::Open)
        {
            return self.function(name);
        }
        let Some(Token::Word(op)) = self.next() else {
            return Err(syntax(self.source, "expected a comparison operator"));
        };
        let op = match CompareOp::parse(&op) {
            Some(op) => op,
            None if matches!(
                op.as_str(),
                "has" | "in" | "add" | "sub" | "mul" | "div" | "mod"
            ) =>
            {
                return Err(unsupported(&op));
            }
            None => {
                return Err(syntax(
                    self.source,
                    &format!("'{op}' is not a comparison operator"),
                ));
            }
        };
        let Some(second) = self.next() else {
            return Err(syntax(self.source, "a comparison lacks its right operand"));
        };
        match (operand(&first)?, operand(&second)?) {
            (Operand::Property(property), Operand::Literal(value)) => Ok(Filter::Compare {
                property,
                op,
                value,
            }),
            (Operand::Literal(value), Operand::Property(property)) => Ok(Filter::Compare {
                property,
                op: op.flipped(),
                value,
            }),
            _ => Err(syntax(
                self.source,
                "a comparison needs one property and one literal",
            )),
        }
    }

    fn function(&mut self, name: &str) -> Result<Filter, ApiError> {
        let function = match name {
            "contains" => TextFunction::Contains,
            "startswith" => TextFunction::StartsWith,
            "endswith" => TextFunction::EndsWith,
            other => return Err(unsupported(other)),
        };
        self.expect(&Token::Open, "'('")?;
        let property = match self.next() {
            Some(Token::Word(word)) => property_name(&word)?,
            _ => {
                return Err(syntax(
                    self.source,
                    &format!("{name} needs a property first"),
                ));
            }
        };
        self.expect(&Token::Comma, "','")?;
        let Some(Token::Text(needle)) = self.next() else {
            return Err(syntax(
                self.source,
                &format!("{name} needs a string literal second"),
            ));
        };
        self.expect(&Token::Close, "')'")?;
        Ok(Filter::Text {
            function,
            property,
            needle,
        })
    }
}

enum Operand {
    Property(String),
    Literal(Json),
}

fn property_name(word: &str) -> Result<String, ApiError> {
    if word.contains('/') {
        return Err(unsupported(&format!(
            "{word} (a navigation path in $filter)"
        )));
    }
    if word.starts_with('@') {
        return Err(unsupported(&format!("{word} (a parameter alias)")));
    }
    Ok(word.to_string())
}

fn operand(token: &Token) -> Result<Operand, ApiError> {
    match token {
        Token::Text(text) => Ok(Operand::Literal(Json::String(text.clone()))),
        Token::Word(word) => {
            let first = word.chars().next().unwrap_or(' ');
            let literal_like = first.is_ascii_digit()
                || first == '-'
                || matches!(word.as_str(), "null" | "true" | "false")
                || uuid::Uuid::parse_str(word).is_ok();
            if literal_like {
                if let Ok(value) = parse_literal(word) {
                    return Ok(Operand::Literal(value));
                }
                // A bare date or date-time literal.
                if parse_instant(word).is_some() {
                    return Ok(Operand::Literal(Json::String(word.clone())));
                }
                return Err(ApiError::bad_request(format!(
                    "'{word}' is not a valid literal in $filter."
                )));
            }
            Ok(Operand::Property(property_name(word)?))
        }
        _ => Err(ApiError::bad_request(
            "A comparison operand is missing in $filter.",
        )),
    }
}

/// Parses a `$filter` value.
pub fn parse_filter(text: &str) -> Result<Filter, ApiError> {
    let mut parser = Parser {
        source: text,
        tokens: tokenize(text)?,
        at: 0,
    };
    let filter = parser.or()?;
    if parser.at < parser.tokens.len() {
        return Err(syntax(text, "unexpected text after the expression"));
    }
    Ok(filter)
}

impl Filter {
    /// Every property the expression reads, for checking them against the table.
    pub fn properties(&self) -> Vec<&str> {
        match self {
            Filter::And(left, right) | Filter::Or(left, right) => {
                let mut all = left.properties();
                all.extend(right.properties());
                all
            }
            Filter::Not(inner) => inner.properties(),
            Filter::Compare { property, .. } | Filter::Text { property, .. } => {
                vec![property.as_str()]
            }
        }
    }

    /// True when `object` satisfies the expression.
    pub fn matches(&self, object: &Map<String, Json>) -> bool {
        match self {
            Filter::And(left, right) => left.matches(object) && right.matches(object),
            Filter::Or(left, right) => left.matches(object) || right.matches(object),
            Filter::Not(inner) => !inner.matches(object),
            Filter::Compare {
                property,
                op,
                value,
            } => compare(object.get(property).unwrap_or(&Json::Null), *op, value),
            Filter::Text {
                function,
                property,
                needle,
            } => {
                let Some(text) = object.get(property).and_then(Json::as_str) else {
                    return false;
                };
                let (text, needle) = (text.to_lowercase(), needle.to_lowercase());
                match function {
                    TextFunction::Contains => text.contains(&needle),
                    TextFunction::StartsWith => text.starts_with(&needle),
                    TextFunction::EndsWith => text.ends_with(&needle),
                }
            }
        }
    }
}

fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|day| day.and_hms_opt(0, 0, 0))
                .map(|naive| naive.and_utc())
        })
}

/// Orders two values the way the service's SQL does: nulls first, numbers by value, date-times
/// by instant, text case-insensitively; `None` when they cannot be ordered.
fn order(left: &Json, right: &Json) -> Option<Ordering> {
    match (left, right) {
        (Json::Null, Json::Null) => Some(Ordering::Equal),
        (Json::Null, _) => Some(Ordering::Less),
        (_, Json::Null) => Some(Ordering::Greater),
        (Json::Number(a), Json::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Json::Bool(a), Json::Bool(b)) => Some(a.cmp(b)),
        (Json::String(a), Json::String(b)) => match (parse_instant(a), parse_instant(b)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        },
        _ => None,
    }
}

fn compare(actual: &Json, op: CompareOp, literal: &Json) -> bool {
    if actual.is_null() || literal.is_null() {
        // Null only equals null; ordering against null is never true.
        let both = actual.is_null() && literal.is_null();
        return match op {
            CompareOp::Eq => both,
            CompareOp::Ne => !both,
            _ => false,
        };
    }
    let Some(ordering) = order(actual, literal) else {
        return op == CompareOp::Ne;
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
    }
}

/// One `$orderby` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    /// The property.
    pub property: String,
    /// `desc` was given.
    pub descending: bool,
}

/// Parses `$orderby=a desc,b` into its keys.
pub fn parse_orderby(text: &str) -> Result<Vec<OrderKey>, ApiError> {
    let mut keys = Vec::new();
    for item in text.split(',') {
        let mut words = item.split_whitespace();
        let Some(property) = words.next() else {
            return Err(ApiError::bad_request(format!(
                "$orderby '{text}' has an empty item."
            )));
        };
        let descending = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "$orderby '{text}': '{other}' is neither asc nor desc."
                )));
            }
        };
        if words.next().is_some() {
            return Err(ApiError::bad_request(format!(
                "$orderby '{text}': items are 'property [asc|desc]' separated by commas."
            )));
        }
        keys.push(OrderKey {
            property: property_name(property)?,
            descending,
        });
    }
    Ok(keys)
}

/// Compares two rows by the `$orderby` keys.
pub fn compare_rows(
    keys: &[OrderKey],
    left: &Map<String, Json>,
    right: &Map<String, Json>,
) -> Ordering {
    for key in keys {
        let a = left.get(&key.property).unwrap_or(&Json::Null);
        let b = right.get(&key.property).unwrap_or(&Json::Null);
        let ordering = order(a, b).unwrap_or(Ordering::Equal);
        let ordering = if key.descending {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// One `$expand` item and its nested options.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandItem {
    /// The navigation property.
    pub name: String,
    /// Nested options (`$select`, `$filter`...), decoded.
    pub options: Vec<(String, String)>,
}

impl ExpandItem {
    /// The nested option called `name`.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The nested `$select` list.
    pub fn select(&self) -> Option<Vec<String>> {
        self.option("$select").map(split_list)
    }

    /// Fails naming the first nested option outside `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self
            .options
            .iter()
            .find(|(key, _)| !allowed.iter().any(|ok| key.eq_ignore_ascii_case(ok)))
        {
            Some((key, _)) => Err(unsupported(&format!("{key} inside $expand={}", self.name))),
            None => Ok(()),
        }
    }
}

/// Splits a comma list, trimming items and dropping empty ones.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

/// Splits `text` on `separator` where it is outside parentheses and quotes.
fn split_top(text: &str, separator: char) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut depth, mut quoted, mut start) = (0usize, false, 0);
    for (index, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            c if c == separator && !quoted && depth == 0 => {
                pieces.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// Parses `$expand=a($select=x,y;$filter=...),b`.
pub fn parse_expand(text: &str) -> Result<Vec<ExpandItem>, ApiError> {
    let mut items = Vec::new();
    for piece in split_top(text, ',') {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        let (name, options) = match piece.split_once('(') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(|| {
                    ApiError::bad_request(format!("$expand item '{piece}' lacks its ')'."))
                })?;
                let mut options = Vec::new();
                for option in split_top(inner, ';') {
                    let Some((key, value)) = option.split_once('=') else {
                        return Err(ApiError::bad_request(format!(
                            "$expand item '{piece}': '{option}' is not an option=value pair."
                        )));
                    };
                    options.push((key.trim().to_string(), value.trim().to_string()));
                }
                (name.trim(), options)
            }
            None => (piece, Vec::new()),
        };
        if name == "*" || name.contains('/') {
            return Err(unsupported(&format!("$expand={name}")));
        }
        items.push(ExpandItem {
            name: name.to_string(),
            options,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Json) -> Map<String, Json> {
        value.as_object().cloned().unwrap_or_default()
    }

    fn matches(filter: &str, value: Json) -> bool {
        parse_filter(filter).expect(filter).matches(&row(value))
    }

    #[test]
    fn comparisons_cover_every_operator_and_type() {
        let contact = json!({"lastname": "O'Neil", "numberofchildren": 2, "donotemail": false,
            "birthdate": "1990-05-01", "modifiedon": "2026-01-02T03:04:05Z", "middlename": null});
        assert!(matches("lastname eq 'o''neil'", contact.clone()));
        assert!(matches(
            "numberofchildren gt 1 and numberofchildren le 2",
            contact.clone()
        ));
        assert!(!matches("numberofchildren ge 3", contact.clone()));
        assert!(matches("3 gt numberofchildren", contact.clone()));
        assert!(matches("donotemail eq false", contact.clone()));
        assert!(matches(
            "modifiedon gt 2026-01-01T00:00:00Z",
            contact.clone()
        ));
        assert!(!matches("modifiedon lt 2026-01-02", contact.clone()));
        assert!(matches("birthdate lt 1990-05-02", contact.clone()));
        assert!(matches("middlename eq null", contact.clone()));
        assert!(matches("lastname ne null", contact.clone()));
        assert!(!matches("middlename gt 'a'", contact.clone()));
        assert!(!matches("lastname ne 'O''NEIL'", contact));
    }

    #[test]
    fn logic_functions_and_parentheses() {
        let contact = json!({"firstname": "Ann", "lastname": "Smith", "statecode": 0});
        assert!(matches("contains(lastname,'MIT')", contact.clone()));
        assert!(matches(
            "startswith(firstname, 'an') and endswith(lastname,'th')",
            contact.clone()
        ));
        assert!(matches("not (statecode eq 1)", contact.clone()));
        assert!(matches(
            "(firstname eq 'Bob' or firstname eq 'Ann') and statecode eq 0",
            contact.clone()
        ));
        // `and` binds tighter than `or`.
        assert!(matches(
            "firstname eq 'Ann' or firstname eq 'Bob' and statecode eq 1",
            contact.clone()
        ));
        assert!(!matches(
            "(firstname eq 'Ann' or firstname eq 'Bob') and statecode eq 1",
            contact
        ));
    }

    #[test]
    fn enum_literals_read_as_their_member() {
        let attribute = json!({"AttributeType": "DateTime"});
        assert!(matches(
            "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'DateTime'",
            attribute
        ));
    }

    #[test]
    fn unsupported_and_malformed_filters_are_named() {
        for (filter, named) in [
            (
                "Microsoft.Dynamics.CRM.In(PropertyName='x',PropertyValues=['a'])",
                "Microsoft.Dynamics.CRM.In",
            ),
            ("tolower(lastname) eq 'a'", "tolower"),
            ("parentcustomerid_account/name eq 'x'", "navigation path"),
            ("statecode in (0,1)", "'in'"),
        ] {
            let error = parse_filter(filter).expect_err(filter);
            assert_eq!(error.code, "0x80060888");
            assert!(error.message.contains(named), "{filter}: {}", error.message);
        }
        assert!(parse_filter("lastname eq 'open").is_err());
        assert!(parse_filter("lastname eq").is_err());
        assert!(parse_filter("(lastname eq 'a'").is_err());
        assert!(parse_filter("lastname eq 'a' x").is_err());
    }

    #[test]
    fn orderby_sorts_by_several_keys() {
        let keys = parse_orderby("lastname desc,firstname asc").expect("orderby");
        let mut rows = [
            row(json!({"lastname": "a", "firstname": "z"})),
            row(json!({"lastname": "B", "firstname": "y"})),
            row(json!({"lastname": "b", "firstname": "x"})),
            row(json!({"lastname": null, "firstname": "w"})),
        ];
        rows.sort_by(|a, b| compare_rows(&keys, a, b));
        let firsts: Vec<&str> = rows
            .iter()
            .map(|r| r["firstname"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(firsts, ["x", "y", "z", "w"]);
        assert!(parse_orderby("lastname sideways").is_err());
    }

    #[test]
    fn expand_items_carry_nested_options() {
        let items = parse_expand(
            "Attributes($select=LogicalName,AttributeType;$filter=AttributeType eq 'String'),Keys",
        )
        .expect("expand");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "Attributes");
        assert_eq!(
            items[0].select(),
            Some(vec!["LogicalName".to_string(), "AttributeType".to_string()])
        );
        assert_eq!(
            items[0].option("$filter"),
            Some("AttributeType eq 'String'")
        );
        assert!(items[0].only(&["$select"]).is_err());
        assert!(items[1].options.is_empty());
        assert!(parse_expand("a($select=x").is_err());
    }
}
