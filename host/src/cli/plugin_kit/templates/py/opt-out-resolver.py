"""`{name}`: keeps opt-out flags in step between Dynamics 365 contacts and Campaign profiles
(an opt-out-resolver plugin). The [optinout] keys `direction` and `pairs` say what is copied
which way; its own setting `key_field` names the Campaign profile field holding the contact's
key (the CRM ID, `externalId` unless a custom identification key is used).

Every direction is handled: `disabled` moves nothing, `dynamics-to-campaign` and
`campaign-to-dynamics` copy one side's value to the other, and `bidirectional` applies the
conflict rule: Campaign's value wins when its attribute changed after the contact, else an
opt-out (true) on either side wins. Only a side whose value differs is written, as an update
(an opt-out never creates a contact or a profile)."""

from datetime import datetime, timezone

import wit_world
from conduit_plugin import Output, errors_as_results, host_settings, own_settings
from wit_world.imports import types as t

DIRECTIONS = ("disabled", "dynamics-to-campaign", "campaign-to-dynamics", "bidirectional")

_plugin = None


def _instant(value):
    """The instant of an RFC 3339 text (UTC when it names no offset), or None when absent."""
    if value.changed_at is None:
        return None
    try:
        at = datetime.fromisoformat(value.changed_at.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value.changed_at}' is not an RFC 3339 datetime") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def _campaign_is_newer(dynamics, campaign) -> bool:
    """True when Campaign's attribute changed strictly after the contact; an unknown Campaign
    time is never newer, and a known one beats an unknown contact time."""
    d, c = _instant(dynamics), _instant(campaign)
    if c is None:
        return False
    return d is None or c > d


def _wanted(direction, dynamics, campaign):
    """The value both sides should hold, or None when there is nothing to copy."""
    if direction == "dynamics-to-campaign":
        return dynamics.value if dynamics else None
    if direction == "campaign-to-dynamics":
        return campaign.value if campaign else None
    if direction == "bidirectional":
        if dynamics and campaign:
            if _campaign_is_newer(dynamics, campaign):
                return campaign.value
            return dynamics.value or campaign.value
        known = dynamics or campaign
        return known.value if known else None
    return None


def _resolve_one(out, targets, contact) -> None:
    direction = _plugin["direction"]
    if direction == "disabled":
        return out.skip("opt-out synchronization is disabled")
    if contact.contact_key == "":
        return out.reject("the contact has no key")
    to_dynamics, to_campaign = {}, {}
    for pair in _plugin["pairs"]:
        d = next((v for v in contact.dynamics if v.attribute == pair["dynamics"]), None)
        c = next((v for v in contact.campaign if v.attribute == pair["campaign"]), None)
        try:
            value = _wanted(direction, d, c)
        except ValueError as error:
            return out.reject(f"{pair['dynamics']} / {pair['campaign']}: {error}")
        if value is None:
            continue
        if direction != "dynamics-to-campaign" and (d is None or d.value != value):
            to_dynamics[pair["dynamics"]] = value
        if direction != "campaign-to-dynamics" and (c is None or c.value != value):
            to_campaign[pair["campaign"]] = value
    records = []
    if to_dynamics:
        records.append(out.update(targets["dynamics"], contact.contact_key, to_dynamics))
    if to_campaign:
        records.append(out.update(targets["campaign"], contact.contact_key, to_campaign))
    if not records:
        return out.skip("already equal")
    return out.write(*records)


@errors_as_results  # anything raised becomes the call's error message (dead-lettered)
class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _plugin
        own = own_settings(settings, {"key_field": "string"})
        section = host_settings(settings)
        if section["direction"] not in DIRECTIONS:
            raise ValueError(f"unknown direction `{section['direction']}`")
        _plugin = {
            "key_field": own["key_field"],
            "direction": section["direction"],
            "pairs": section["pairs"],
        }

    def resolve(self, contacts: list[t.ContactOptOut]) -> t.MappedBatch:
        out = Output()
        targets = {
            "dynamics": out.target("dynamics", "contacts", "contactid"),
            "campaign": out.target("campaign", "profile", _plugin["key_field"]),
        }
        for contact in contacts:
            _resolve_one(out, targets, contact)
        return out.finish()
