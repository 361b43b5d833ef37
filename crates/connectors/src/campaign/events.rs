//! Reading email events from the event journal (modelled on Adobe I/O Events journaling; the
//! shape is documented in `docs/campaign-event-journal.md`): `GET <journal>?since=<position>&limit=N`
//! answers `{"events":[{"position","event"}],"_page":{"last","count"}}`, or 204 when nothing is new.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::CampaignConnector;
use super::values::rfc3339_from_campaign;
use crate::http::parse_json;
use crate::{ConnectorError, EventPage, EventSource};
use conduit_model::{BounceDetail, EmailEvent, EmailEventKind};

#[derive(Debug, Deserialize)]
struct JournalPage {
    events: Vec<JournalEntry>,
    #[serde(rename = "_page")]
    page: PageInfo,
}

#[derive(Debug, Deserialize)]
struct JournalEntry {
    position: String,
    event: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct PageInfo {
    last: Option<String>,
}

/// The event JSON as the journal carries it (camelCase, see the journal doc).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent {
    id: String,
    kind: String,
    profile_crm_id: String,
    campaign_id: String,
    campaign_name: String,
    delivery_id: String,
    delivery_name: String,
    timestamp: String,
    url: Option<String>,
    mirror_page_url: Option<String>,
    bounce_type: Option<String>,
    bounce_reason: Option<String>,
}

/// Converts one journal event to the host's model; the error says which field is wrong.
pub fn parse_journal_event(event: &serde_json::Value) -> Result<EmailEvent, String> {
    let wire: WireEvent = serde_json::from_value(event.clone())
        .map_err(|error| format!("event does not match the journal shape: {error}"))?;
    let kind = match wire.kind.as_str() {
        "send" => EmailEventKind::Send,
        "open" => EmailEventKind::Open,
        "click" => EmailEventKind::Click,
        "bounce" => EmailEventKind::Bounce,
        other => {
            return Err(format!(
                "event {}: unknown kind {other:?} (expected send, open, click or bounce)",
                wire.id
            ));
        }
    };
    for (name, value) in [
        ("id", &wire.id),
        ("profileCrmId", &wire.profile_crm_id),
        ("campaignId", &wire.campaign_id),
        ("deliveryId", &wire.delivery_id),
    ] {
        if value.trim().is_empty() {
            return Err(format!("event {}: field {name} is empty", wire.id));
        }
    }
    let timestamp = rfc3339_from_campaign(&wire.timestamp).ok_or_else(|| {
        format!(
            "event {}: timestamp {:?} is neither Campaign date text nor RFC 3339",
            wire.id, wire.timestamp
        )
    })?;
    if kind == EmailEventKind::Click && wire.url.is_none() {
        return Err(format!("event {}: a click event needs a url", wire.id));
    }
    let bounce = match (kind, wire.bounce_type.as_deref()) {
        (EmailEventKind::Bounce, Some(bounce_type)) => Some(BounceDetail {
            hard: match bounce_type {
                "hard" => true,
                "soft" => false,
                other => {
                    return Err(format!(
                        "event {}: bounceType {other:?} is not hard or soft",
                        wire.id
                    ));
                }
            },
            reason: wire.bounce_reason.unwrap_or_default(),
        }),
        (EmailEventKind::Bounce, None) => {
            return Err(format!(
                "event {}: a bounce event needs a bounceType",
                wire.id
            ));
        }
        _ => None,
    };
    Ok(EmailEvent {
        id: wire.id,
        kind,
        contact_key: wire.profile_crm_id,
        campaign_id: wire.campaign_id,
        campaign_name: wire.campaign_name,
        delivery_id: wire.delivery_id,
        delivery_name: wire.delivery_name,
        timestamp,
        url: wire.url,
        mirror_page_url: wire.mirror_page_url,
        bounce,
    })
}

#[async_trait]
impl EventSource for CampaignConnector {
    async fn read_events(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<EventPage, ConnectorError> {
        let mut url = self.settings.events_journal_url.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(position) = cursor {
                query.append_pair("since", position);
            }
            query.append_pair("limit", &limit.max(1).to_string());
        }
        let reply = self.transport.send(Method::GET, &url, None).await?;
        if reply.status == StatusCode::NO_CONTENT {
            return Ok(EventPage {
                events: Vec::new(),
                cursor: cursor.map(str::to_owned),
            });
        }
        read_journal_page(&reply.body, url.as_str(), cursor)
    }
}

/// Reads one journal page body into its events and the cursor after them (`since` when the
/// page names no position); an unconvertible event fails the page, naming its position.
pub(crate) fn read_journal_page(
    body: &[u8],
    url: &str,
    since: Option<&str>,
) -> Result<EventPage, ConnectorError> {
    let page: JournalPage = parse_json(body, url, "a journal page with `events` and `_page`")?;
    let mut events = Vec::with_capacity(page.events.len());
    for entry in &page.events {
        let event =
            parse_journal_event(&entry.event).map_err(|reason| ConnectorError::Permanent {
                message: format!(
                    "Campaign event journal {url}, position {}: {reason}",
                    entry.position
                ),
            })?;
        events.push(event);
    }
    let last = page
        .page
        .last
        .or_else(|| page.events.last().map(|entry| entry.position.clone()))
        .or_else(|| since.map(str::to_owned));
    Ok(EventPage {
        events,
        cursor: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn click() -> serde_json::Value {
        json!({
            "id": "e-1", "kind": "click", "profileCrmId": "c-1",
            "campaignId": "CMP1", "campaignName": "Spring", "deliveryId": "DM1",
            "deliveryName": "Newsletter", "timestamp": "2018-05-16 23:08:13.006Z",
            "url": "https://example.com/offer", "mirrorPageUrl": "https://m.example.com/1"
        })
    }

    #[test]
    fn a_click_event_converts_with_rfc3339_time() {
        let event = parse_journal_event(&click()).unwrap();
        assert_eq!(event.kind, EmailEventKind::Click);
        assert_eq!(event.contact_key, "c-1");
        assert_eq!(event.timestamp, "2018-05-16T23:08:13.006Z");
        assert_eq!(event.url.as_deref(), Some("https://example.com/offer"));
    }

    #[test]
    fn unknown_kind_is_a_clear_error() {
        let mut event = click();
        event["kind"] = json!("unsubscribe");
        let error = parse_journal_event(&event).unwrap_err();
        assert!(error.contains("unknown kind \"unsubscribe\""), "{error}");
    }

    #[test]
    fn missing_field_is_named() {
        let mut event = click();
        event.as_object_mut().unwrap().remove("deliveryId");
        let error = parse_journal_event(&event).unwrap_err();
        assert!(error.contains("deliveryId"), "{error}");
    }

    #[test]
    fn bounce_needs_hard_or_soft() {
        let mut event = click();
        event["kind"] = json!("bounce");
        event["bounceType"] = json!("hard");
        event["bounceReason"] = json!("User unknown");
        let bounce = parse_journal_event(&event).unwrap().bounce.unwrap();
        assert!(bounce.hard);
        assert_eq!(bounce.reason, "User unknown");
        event["bounceType"] = json!("medium");
        assert!(parse_journal_event(&event).unwrap_err().contains("medium"));
    }
}
