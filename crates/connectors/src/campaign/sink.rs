//! Writing to Campaign: the `RecordSink` implementation, resource metadata (`describe`) and
//! paged listing.
//!
//! A write costs one call on the common path. A record whose href an earlier write returned
//! (handed back by the engine, which keeps it in its store) is PATCHed or DELETEd there
//! directly; a key with no known href is POSTed, since the identification key is unique and
//! Campaign refuses a second record with it. The fallback is the lookup by key
//! (`by<Key>?<key>_parameter=`) followed by PATCH, POST or DELETE: taken when a known href
//! answers 404 (deleted behind our back), when a POST answers that the key exists, and on every
//! retry of an uncertain create. The connector itself keeps no hrefs: it only returns what each
//! write taught ([`Learnt`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::ser::{SerializeMap, Serializer as _};
use url::Url;

use super::values::campaign_json;
use super::{CampaignConnector, FieldKinds, ResourceWrites};
use crate::http::parse_json;
use crate::{
    ConnectorError, FieldInfo, FieldKind, Learnt, ProfileOptOutPage, ProfileOptOutSource,
    ProfileOptOuts, RecordSink, WriteOutcome,
};
use conduit_model::{Operation, System, WriteRecord};

/// One page of a Campaign list response.
#[derive(Debug, Deserialize)]
struct ListPage {
    content: Vec<serde_json::Value>,
    next: Option<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    href: String,
}

/// What Campaign answers to a PATCH or POST: the written record's primary key (and its href).
/// Checking for the key tells the service's answer from a gateway's `200` page, which wrote
/// nothing; the href (or the key) is where the next write of the record goes.
#[derive(Debug, Deserialize)]
struct WriteConfirmation {
    #[serde(rename = "PKey")]
    pkey: serde_json::Value,
    #[serde(default)]
    href: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ResourceMetadata {
    content: serde_json::Map<String, serde_json::Value>,
}

/// How one lookup-then-write attempt failed.
enum Attempt {
    /// A POST failed in a way that may hide a created record: look the key up again.
    UncertainCreate(ConnectorError),
    /// Anything else: the transport already retried what was worth retrying.
    Failed(ConnectorError),
}

impl From<ConnectorError> for Attempt {
    fn from(error: ConnectorError) -> Attempt {
        Attempt::Failed(error)
    }
}

/// The record a key lookup found: where to PATCH or DELETE it.
struct Found {
    url: Url,
}

impl CampaignConnector {
    /// Lists every record of a resource, following `next.href` with `page_size` rows per page.
    pub async fn list_all(
        &self,
        resource: &str,
        page_size: u32,
    ) -> Result<Vec<serde_json::Value>, ConnectorError> {
        check_resource_name(resource)?;
        let mut url = self.api_url(&["profileAndServicesExt", resource]);
        url.query_pairs_mut()
            .append_pair("_lineCount", &page_size.max(1).to_string());
        let mut records = Vec::new();
        loop {
            let reply = self.transport.send(Method::GET, &url, None).await?;
            let (content, next) = read_list_page(&reply.body, url.as_str())?;
            records.extend(content);
            match next {
                Some(href) => url = self.same_origin_url(&href)?,
                None => return Ok(records),
            }
        }
    }

    /// Reads one page of `resource` (`cursor`: a `next.href` from the previous page).
    pub async fn list_page(
        &self,
        resource: &str,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<(Vec<serde_json::Value>, Option<String>), ConnectorError> {
        check_resource_name(resource)?;
        let url = match cursor {
            Some(href) => self.same_origin_url(href)?,
            None => {
                let mut url = self.api_url(&["profileAndServicesExt", resource]);
                url.query_pairs_mut()
                    .append_pair("_lineCount", &page_size.max(1).to_string());
                url
            }
        };
        let reply = self.transport.send(Method::GET, &url, None).await?;
        read_list_page(&reply.body, url.as_str())
    }

    /// Reads a resource's fields from `resourceType` metadata.
    pub async fn describe_resource(
        &self,
        resource: &str,
    ) -> Result<Vec<FieldInfo>, ConnectorError> {
        check_resource_name(resource)?;
        let url = self.api_url(&["profileAndServicesExt", "resourceType", resource]);
        let reply = self.transport.send(Method::GET, &url, None).await?;
        let fields = read_resource_fields(&reply.body, url.as_str(), resource)?;
        let writes = self.resource_writes_from(
            resource,
            fields
                .iter()
                .map(|field| (field.name.clone(), field.kind.clone()))
                .collect(),
        );
        if let Ok(mut cache) = self.metadata.lock() {
            cache.insert(resource.to_owned(), writes);
        }
        Ok(fields)
    }

    /// What the writes of `resource` share, read once and shared by every write of it.
    async fn resource_writes(&self, resource: &str) -> Result<Arc<ResourceWrites>, ConnectorError> {
        let cached = self
            .metadata
            .lock()
            .ok()
            .and_then(|cache| cache.get(resource).cloned());
        if let Some(writes) = cached {
            return Ok(writes);
        }
        let fields = self.describe_resource(resource).await?;
        Ok(self.resource_writes_from(
            resource,
            fields
                .into_iter()
                .map(|field| (field.name, field.kind))
                .collect(),
        ))
    }

    /// The shared part of `resource`'s writes, from its field kinds.
    fn resource_writes_from(&self, resource: &str, kinds: FieldKinds) -> Arc<ResourceWrites> {
        Arc::new(ResourceWrites {
            kinds,
            collection: self.api_url(&["profileAndServicesExt", resource]),
        })
    }

    /// Resolves an href from the service, refusing any other origin: our bearer token must only
    /// ever go to the configured Campaign instance.
    fn same_origin_url(&self, href: &str) -> Result<Url, ConnectorError> {
        let url = self
            .settings
            .api_base
            .join(href)
            .map_err(|error| ConnectorError::Permanent {
                message: format!("Campaign returned an unreadable href {href:?}: {error}"),
            })?;
        if url.origin() != self.settings.api_base.origin() {
            return Err(ConnectorError::Permanent {
                message: format!(
                    "Campaign returned href {url} outside the configured API base {}; refusing to follow it",
                    self.settings.api_base
                ),
            });
        }
        Ok(url)
    }

    /// Where a confirmed write's record lives: its href when it is one of ours, else its
    /// PKey under its resource; nothing when the answer has neither in a usable form.
    fn confirmed_location(&self, resource: &str, confirmation: &WriteConfirmation) -> Learnt {
        let href = confirmation
            .href
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(|href| {
                // An absolute href under the API base is ours as it is: no parse needed (the
                // base's path begins after its host and port, so the prefix fixes the origin).
                if href.starts_with(self.settings.api_base.as_str()) {
                    return Some(href.to_owned());
                }
                self.same_origin_url(href).ok().map(String::from)
            });
        let by_pkey = || {
            confirmation
                .pkey
                .as_str()
                .filter(|pkey| !pkey.is_empty())
                .map(|pkey| self.api_url(&["profileAndServicesExt", resource, pkey]))
        };
        match href.or_else(|| by_pkey().map(String::from)) {
            Some(url) => Learnt::At(url),
            None => Learnt::Nothing,
        }
    }

    async fn find(&self, record: &WriteRecord) -> Result<Option<Found>, ConnectorError> {
        let resource = &record.target.table;
        let key_field = &record.target.key_field;
        let mut url = self.api_url(&["profileAndServicesExt", resource, &filter_name(key_field)]);
        url.query_pairs_mut()
            .append_pair(&format!("{key_field}_parameter"), &record.key);
        let reply = self.transport.send(Method::GET, &url, None).await?;
        let found = match read_lookup(&reply.body, url.as_str(), record)? {
            None => return Ok(None),
            Some(FoundAt::Href(href)) => self.same_origin_url(&href)?,
            Some(FoundAt::PKey(pkey)) => self.api_url(&["profileAndServicesExt", resource, &pkey]),
        };
        Ok(Some(Found { url: found }))
    }

    /// Writes one record (`known`: its href from an earlier write) and says what the write
    /// taught. The transport never resends a failed POST (it may have created the record), so
    /// such a failure repeats the write through the lookup: a record created by a lost
    /// response is then found and patched instead of duplicated.
    async fn write_one(
        &self,
        record: &WriteRecord,
        known: Option<&str>,
    ) -> Result<Learnt, ConnectorError> {
        check_target(record)?;
        let policy = self.transport.retry_policy();
        let attempts = policy.max_attempts;
        let mut attempt = 1;
        loop {
            let result = if attempt == 1 {
                self.write_direct(record, known).await
            } else {
                self.write_after_lookup(record).await
            };
            match result {
                Ok(learnt) => return Ok(learnt),
                Err(Attempt::UncertainCreate(error)) if attempt < attempts => {
                    tracing::debug!(%error, key = %record.key, "create uncertain; looking the key up again");
                    tokio::time::sleep(policy.delay(attempt, None)).await;
                    attempt += 1;
                }
                Err(Attempt::UncertainCreate(error) | Attempt::Failed(error)) => return Err(error),
            }
        }
    }

    /// One call on the common path: PATCH or DELETE at the known href, POST an upsert whose
    /// href is not known. Falls back to [`CampaignConnector::write_after_lookup`] when the href
    /// is stale (404) or Campaign answers that the key exists.
    async fn write_direct(
        &self,
        record: &WriteRecord,
        known: Option<&str>,
    ) -> Result<Learnt, Attempt> {
        let known = known.and_then(|href| self.same_origin_url(href).ok());
        match (known, record.op) {
            (Some(url), Operation::Delete) => {
                let reply = self
                    .transport
                    .send_tolerating(Method::DELETE, &url, None, &[StatusCode::NOT_FOUND])
                    .await?;
                if reply.status != StatusCode::NOT_FOUND {
                    confirm_delete(&reply.body, url.as_str())?;
                    return Ok(Learnt::Gone);
                }
                // Gone from its href, but the key may live on under another (recreated).
                self.write_after_lookup(record).await
            }
            (Some(url), _) => {
                let writes = self.resource_writes(&record.target.table).await?;
                let body = write_body(record, &writes.kinds, false)?;
                let reply = self
                    .transport
                    .send_tolerating(Method::PATCH, &url, Some(body), &[StatusCode::NOT_FOUND])
                    .await?;
                if reply.status == StatusCode::NOT_FOUND {
                    tracing::debug!(key = %record.key, "known href is gone; looking the key up");
                    return self.write_after_lookup(record).await;
                }
                let confirmation: WriteConfirmation =
                    reply.json(url.as_str(), CONFIRMATION_EXPECTED)?;
                Ok(self.confirmed_location(&record.target.table, &confirmation))
            }
            (None, Operation::Upsert) => match self.create(record).await? {
                Created::At(learnt) => Ok(learnt),
                Created::KeyExists => {
                    tracing::debug!(key = %record.key, "the key exists; looking it up to update it");
                    self.write_after_lookup(record).await
                }
            },
            (None, _) => self.write_after_lookup(record).await,
        }
    }

    /// POSTs a new record with its key. A failure that may hide a created record is
    /// [`Attempt::UncertainCreate`]; Campaign refusing the key as a duplicate is
    /// [`Created::KeyExists`].
    async fn create(&self, record: &WriteRecord) -> Result<Created, Attempt> {
        let resource = &record.target.table;
        let writes = self.resource_writes(resource).await?;
        let body = write_body(record, &writes.kinds, true)?;
        let url = &writes.collection;
        let uncertain = |error| match error {
            ConnectorError::Transient {
                retry_after: None, ..
            } => Attempt::UncertainCreate(error),
            error => Attempt::Failed(error),
        };
        let reply = self
            .transport
            .send_tolerating(Method::POST, url, Some(body), DUPLICATE_STATUSES)
            .await
            .map_err(uncertain)?;
        if DUPLICATE_STATUSES.contains(&reply.status) && says_key_exists(&reply.body) {
            return Ok(Created::KeyExists);
        }
        let reply = reply
            .into_success(format_args!("Campaign POST {url}"))
            .map_err(uncertain)?;
        let confirmation = reply
            .json::<WriteConfirmation>(url.as_str(), CONFIRMATION_EXPECTED)
            .map_err(uncertain)?;
        Ok(Created::At(
            self.confirmed_location(resource, &confirmation),
        ))
    }

    /// The fallback: finds the key's record, then PATCHes, POSTs or DELETEs it.
    async fn write_after_lookup(&self, record: &WriteRecord) -> Result<Learnt, Attempt> {
        let resource = &record.target.table;
        let key_field = &record.target.key_field;
        if record.op == Operation::Delete {
            if let Some(found) = self.find(record).await? {
                // Gone between lookup and delete is as good as deleted.
                let reply = self
                    .transport
                    .send_tolerating(Method::DELETE, &found.url, None, &[StatusCode::NOT_FOUND])
                    .await?;
                confirm_delete(&reply.body, found.url.as_str())?;
            }
            return Ok(Learnt::Gone);
        }
        match (self.find(record).await?, record.op) {
            (Some(found), _) => {
                let writes = self.resource_writes(resource).await?;
                let body = write_body(record, &writes.kinds, false)?;
                let reply = self
                    .transport
                    .send(Method::PATCH, &found.url, Some(body))
                    .await?;
                let confirmation: WriteConfirmation =
                    reply.json(found.url.as_str(), CONFIRMATION_EXPECTED)?;
                match self.confirmed_location(resource, &confirmation) {
                    Learnt::At(href) => Ok(Learnt::At(href)),
                    _ => Ok(Learnt::At(found.url.into())),
                }
            }
            (None, Operation::Upsert) => match self.create(record).await? {
                Created::At(learnt) => Ok(learnt),
                // Created by someone else between our lookup and our POST: the next try
                // looks it up again and updates it.
                Created::KeyExists => Err(Attempt::UncertainCreate(ConnectorError::Transient {
                    message: format!(
                        "{resource} with {key_field} {:?} was created by someone else while it was written",
                        record.key
                    ),
                    retry_after: None,
                })),
            },
            (None, _) => Err(ConnectorError::Missing {
                message: format!(
                    "no {resource} with {key_field} {:?} to update (update-only write)",
                    record.key
                ),
            }
            .into()),
        }
    }
}

/// How a POST ended when it did not fail.
enum Created {
    /// Created; where the record now lives.
    At(Learnt),
    /// Campaign refused it because a record with the key exists.
    KeyExists,
}

/// The statuses Campaign answers a duplicate identification key with (a PostgreSQL unique
/// violation, `PGS-220000`, surfaced as a client error).
const DUPLICATE_STATUSES: &[StatusCode] = &[StatusCode::BAD_REQUEST, StatusCode::CONFLICT];

/// Whether an error body says the key already exists (Campaign's `PGS-220000` unique
/// violation, in any of the wordings a gateway or version may use).
fn says_key_exists(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("pgs-220000") || text.contains("duplicate key") || text.contains("already exists")
}

/// What a PATCH or POST must answer for the write to count as done.
const CONFIRMATION_EXPECTED: &str = "the written record as JSON with its PKey";

/// A DELETE answers `200` with no body (or JSON); any other body came from something in front
/// of Campaign, so the delete is unconfirmed and retried (a repeated delete is harmless).
fn confirm_delete(body: &[u8], url: &str) -> Result<(), ConnectorError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    crate::http::parse_json::<serde_json::Value>(body, url, "an empty or JSON answer to DELETE")
        .map(drop)
}

#[async_trait]
impl ProfileOptOutSource for CampaignConnector {
    async fn read_profile_opt_outs(
        &self,
        key_field: &str,
        attributes: &[String],
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<ProfileOptOutPage, ConnectorError> {
        let (content, next) = self.list_page("profile", cursor, page_size).await?;
        let profiles = content
            .iter()
            .filter_map(|profile| {
                let key = profile.get(key_field)?.as_str()?.trim();
                if key.is_empty() {
                    return None;
                }
                let values = attributes
                    .iter()
                    .filter_map(|attribute| {
                        let flag = profile.get(attribute)?.as_bool()?;
                        Some((attribute.clone(), flag))
                    })
                    .collect();
                Some(ProfileOptOuts {
                    contact_key: key.to_string(),
                    values,
                })
            })
            .collect();
        Ok(ProfileOptOutPage { profiles, next })
    }
}

#[async_trait]
impl RecordSink for CampaignConnector {
    async fn write(&self, records: &[WriteRecord]) -> Vec<WriteOutcome> {
        self.write_located(records, &[])
            .await
            .into_iter()
            .map(|(outcome, _)| outcome)
            .collect()
    }

    fn location_scope(&self) -> Option<String> {
        Some(format!("campaign {}", self.settings.api_base))
    }

    async fn write_located(
        &self,
        records: &[WriteRecord],
        known: &[Option<String>],
    ) -> Vec<(WriteOutcome, Learnt)> {
        // Records with the same key form one chain written in order; chains run concurrently.
        let mut chains: Vec<Vec<usize>> = Vec::new();
        let mut chain_of_key: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for (index, record) in records.iter().enumerate() {
            let key = (
                record.target.table.as_str(),
                record.target.key_field.as_str(),
                record.key.as_str(),
            );
            let chain = *chain_of_key.entry(key).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            });
            chains[chain].push(index);
        }
        let results: Vec<Vec<(usize, (WriteOutcome, Learnt))>> = futures_util::stream::iter(chains)
            .map(|chain| async move {
                let mut outcomes = Vec::with_capacity(chain.len());
                // What an earlier write of the chain taught goes to the next one.
                let mut learnt: Option<Learnt> = None;
                for index in chain {
                    let at = match &learnt {
                        Some(Learnt::At(href)) => Some(href.as_str()),
                        Some(Learnt::Gone) => None,
                        Some(Learnt::Nothing) | None => {
                            known.get(index).and_then(|known| known.as_deref())
                        }
                    };
                    let outcome = match self.write_one(&records[index], at).await {
                        Ok(taught) => {
                            if taught != Learnt::Nothing {
                                learnt = Some(taught.clone());
                            }
                            (WriteOutcome::Written, taught)
                        }
                        Err(error) => (WriteOutcome::Failed(error), Learnt::Nothing),
                    };
                    outcomes.push((index, outcome));
                }
                outcomes
            })
            .buffer_unordered(self.settings.max_concurrency)
            .collect()
            .await;
        let mut outcomes: Vec<Option<(WriteOutcome, Learnt)>> = vec![None; records.len()];
        for (index, outcome) in results.into_iter().flatten() {
            outcomes[index] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    let error = ConnectorError::Permanent {
                        message: "internal error: the write produced no outcome".into(),
                    };
                    (WriteOutcome::Failed(error), Learnt::Nothing)
                })
            })
            .collect()
    }

    async fn describe(&self, table: &str) -> Result<Vec<FieldInfo>, ConnectorError> {
        self.describe_resource(table).await
    }

    async fn check(&self) -> Result<(), ConnectorError> {
        self.transport.authenticate().await?;
        let mut url = self.api_url(&["profileAndServicesExt", "profile"]);
        url.query_pairs_mut().append_pair("_lineCount", "1");
        let reply = self.transport.send(Method::GET, &url, None).await?;
        reply.json::<ListPage>(url.as_str(), "a list with `content`")?;
        Ok(())
    }
}

/// A PATCH or POST body in Campaign's JSON, encoded straight from the record: its fields
/// (the key field left out, and a field named twice with its last value, as a JSON object
/// built field by field would hold it), then the key when `with_key` (a POST's).
fn write_body(
    record: &WriteRecord,
    kinds: &FieldKinds,
    with_key: bool,
) -> Result<bytes::Bytes, ConnectorError> {
    let key_field = &record.target.key_field;
    let encoding = |error: serde_json::Error| ConnectorError::Permanent {
        message: format!("cannot encode the body of {}: {error}", record.key),
    };
    let mut body = Vec::with_capacity(64 + 48 * record.fields.len());
    let mut serializer = serde_json::Serializer::new(&mut body);
    let mut object = serializer.serialize_map(None).map_err(encoding)?;
    for (index, (field, value)) in record.fields.iter().enumerate() {
        let named_again = record.fields[index + 1..]
            .iter()
            .any(|(later, _)| later == field);
        if field == key_field || named_again {
            continue;
        }
        let json = campaign_json(field, value, kinds.get(field))
            .map_err(|message| ConnectorError::Permanent { message })?;
        object.serialize_entry(field, &json).map_err(encoding)?;
    }
    if with_key {
        object
            .serialize_entry(key_field, &record.key)
            .map_err(encoding)?;
    }
    SerializeMap::end(object).map_err(encoding)?;
    Ok(bytes::Bytes::from(body))
}

/// Where a key lookup found its record: the href it gave, or its PKey when it gave none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FoundAt {
    /// The record's href (still to be checked against the API base).
    Href(String),
    /// The record's PKey, to address it under its resource.
    PKey(String),
}

/// Reads one list page body: its records, and the `next.href` to follow (none after an empty
/// page, so a service that keeps linking never loops us forever).
pub(crate) fn read_list_page(
    body: &[u8],
    url: &str,
) -> Result<(Vec<serde_json::Value>, Option<String>), ConnectorError> {
    let page: ListPage = parse_json(body, url, "a list with `content`")?;
    let next = page
        .next
        .filter(|_| !page.content.is_empty())
        .map(|link| link.href);
    Ok((page.content, next))
}

/// Reads a key lookup's answer: nothing, one record (by href or PKey) or an error when the key
/// matched several records or the one found cannot be addressed.
pub(crate) fn read_lookup(
    body: &[u8],
    url: &str,
    record: &WriteRecord,
) -> Result<Option<FoundAt>, ConnectorError> {
    let resource = &record.target.table;
    let key_field = &record.target.key_field;
    let page: ListPage = parse_json(body, url, "a list with `content`")?;
    match page.content.as_slice() {
        [] => Ok(None),
        [found] => {
            let href = found.get("href").and_then(|value| value.as_str());
            let pkey = found.get("PKey").and_then(|value| value.as_str());
            match (href, pkey) {
                (Some(href), _) => Ok(Some(FoundAt::Href(href.to_owned()))),
                (None, Some(pkey)) => Ok(Some(FoundAt::PKey(pkey.to_owned()))),
                (None, None) => Err(ConnectorError::Permanent {
                    message: format!(
                        "Campaign GET {url}: expected the found {resource} to carry an href or PKey"
                    ),
                }),
            }
        }
        many => Err(ConnectorError::Permanent {
            message: format!(
                "{} {resource} records have {key_field} {:?}; the key must be unique",
                many.len(),
                record.key
            ),
        }),
    }
}

/// Reads a `resourceType` metadata body into the resource's fields and their kinds.
pub(crate) fn read_resource_fields(
    body: &[u8],
    url: &str,
    resource: &str,
) -> Result<Vec<FieldInfo>, ConnectorError> {
    let metadata: ResourceMetadata = parse_json(body, url, "resourceType metadata with `content`")?;
    let mut fields = Vec::with_capacity(metadata.content.len());
    for (name, field) in &metadata.content {
        let api_name = field
            .get("apiName")
            .and_then(|value| value.as_str())
            .unwrap_or(name);
        let kind = field
            .get("type")
            .and_then(|value| value.as_str())
            .ok_or_else(|| ConnectorError::Permanent {
                message: format!(
                    "Campaign GET {url}: field {name:?} of {resource} has no `type` in its metadata"
                ),
            })?;
        fields.push(FieldInfo {
            name: api_name.to_owned(),
            kind: field_kind(kind),
        });
    }
    Ok(fields)
}

/// `externalId` -> `byExternalId`: Campaign's filter name for an identification key.
pub fn filter_name(key_field: &str) -> String {
    let mut chars = key_field.chars();
    match chars.next() {
        Some(first) => format!("by{}{}", first.to_uppercase(), chars.as_str()),
        None => "by".to_owned(),
    }
}

fn check_resource_name(resource: &str) -> Result<(), ConnectorError> {
    let valid_chars = !resource.is_empty() && resource.chars().all(|c| c.is_ascii_alphanumeric());
    if valid_chars && (resource == "profile" || resource.starts_with("cus")) {
        Ok(())
    } else {
        Err(ConnectorError::Permanent {
            message: format!(
                "Campaign resource {resource:?} is not `profile` or a `cus*` custom resource"
            ),
        })
    }
}

fn check_target(record: &WriteRecord) -> Result<(), ConnectorError> {
    if record.target.system != System::Campaign {
        return Err(ConnectorError::Permanent {
            message: format!(
                "a write for {:?} table {} reached the Campaign sink",
                record.target.system, record.target.table
            ),
        });
    }
    check_resource_name(&record.target.table)?;
    let key_field = &record.target.key_field;
    if key_field.is_empty() || !key_field.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ConnectorError::Permanent {
            message: format!(
                "Campaign key field {key_field:?} of {} is not a field name",
                record.target.table
            ),
        });
    }
    if record.key.is_empty() {
        return Err(ConnectorError::Permanent {
            message: format!("a {} write has an empty {key_field}", record.target.table),
        });
    }
    Ok(())
}

/// Maps Campaign's metadata type names to field kinds.
pub fn field_kind(campaign_type: &str) -> FieldKind {
    match campaign_type {
        "string" | "memo" | "text" | "html" | "email" => FieldKind::Text,
        "long" | "int" | "int64" | "short" | "byte" | "integer" => FieldKind::Integer,
        "float" | "double" | "decimal" | "number" | "money" => FieldKind::Decimal,
        "boolean" => FieldKind::Boolean,
        "date" => FieldKind::Date,
        "datetime" | "timestamp" | "datetimetz" | "datetimenotz" => FieldKind::Datetime,
        "enumeration" => FieldKind::Picklist,
        "uuid" => FieldKind::Guid,
        "link" => FieldKind::Lookup,
        other => FieldKind::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_name_upper_cases_the_key_fields_first_letter() {
        assert_eq!(filter_name("externalId"), "byExternalId");
        assert_eq!(filter_name("cusCrmId"), "byCusCrmId");
    }

    #[test]
    fn only_profile_and_custom_resources_are_writable() {
        assert!(check_resource_name("profile").is_ok());
        assert!(check_resource_name("cusVehicle").is_ok());
        assert!(check_resource_name("service").is_err());
        assert!(check_resource_name("cus/../x").is_err());
    }

    fn connector() -> CampaignConnector {
        let url = |text: &str| Url::parse(text).unwrap();
        CampaignConnector::new(super::super::CampaignSettings {
            api_base: url("https://mc.adobe.io/ORG/campaign"),
            ims_token_url: url("https://ims-na1.adobelogin.com/ims/token/v3"),
            client_id: "id".into(),
            client_secret: crate::http::Secret::new("secret"),
            scopes: vec!["campaign_sdk".into()],
            max_concurrency: 4,
            events_journal_url: url("https://events.example.com/journal"),
            opt_out_drop_root: std::env::temp_dir(),
            extra_ca_pem: None,
            retry: crate::http::RetryPolicy::default(),
            request_timeout: std::time::Duration::from_secs(5),
        })
        .unwrap()
    }

    #[test]
    fn hrefs_outside_the_api_base_are_refused() {
        let connector = connector();
        let inside = connector
            .same_origin_url("https://mc.adobe.io/ORG/campaign/profileAndServicesExt/profile/@x")
            .unwrap();
        assert_eq!(
            inside.path(),
            "/ORG/campaign/profileAndServicesExt/profile/@x"
        );
        let error = connector
            .same_origin_url("https://attacker.example.com/steal")
            .unwrap_err();
        assert!(error.to_string().contains("refusing to follow"), "{error}");
    }

    #[test]
    fn unusable_settings_are_named() {
        let mut settings = connector().settings().clone();
        settings.max_concurrency = 0;
        let error = CampaignConnector::new(settings.clone()).err().unwrap();
        assert!(error.to_string().contains("max_concurrency"), "{error}");
        settings.max_concurrency = 1;
        let mut unsendable = settings.clone();
        unsendable.client_id = "conduit\r\nX-Injected: 1".into();
        let error = CampaignConnector::new(unsendable).err().unwrap();
        assert!(error.to_string().contains("client_id"), "{error}");
        settings.extra_ca_pem = Some("/nonexistent/ca.pem".into());
        let error = CampaignConnector::new(settings).err().unwrap();
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn api_urls_percent_encode_their_segments() {
        let url = connector().api_url(&["profileAndServicesExt", "profile", "by Key?"]);
        assert_eq!(
            url.as_str(),
            "https://mc.adobe.io/ORG/campaign/profileAndServicesExt/profile/by%20Key%3F"
        );
    }

    #[test]
    fn metadata_types_map_to_field_kinds() {
        assert_eq!(field_kind("long"), FieldKind::Integer);
        assert_eq!(field_kind("date"), FieldKind::Date);
        assert_eq!(field_kind("datetime"), FieldKind::Datetime);
        assert_eq!(field_kind("enumeration"), FieldKind::Picklist);
        assert_eq!(field_kind("blob"), FieldKind::Other("blob".into()));
    }
}
