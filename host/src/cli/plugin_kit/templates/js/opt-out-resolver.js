// `{name}`: keeps opt-out flags in step between Dynamics 365 contacts and Campaign profiles
// (an opt-out-resolver plugin). The [optinout] keys `direction` and `pairs` say what is copied
// which way; its own setting `key_field` names the Campaign profile field holding the contact's
// key (the CRM ID, `externalId` unless a custom identification key is used).
//
// Every direction is handled: `disabled` moves nothing, `dynamics-to-campaign` and
// `campaign-to-dynamics` copy one side's value to the other, and `bidirectional` applies the
// conflict rule: Campaign's value wins when its attribute changed after the contact, else an
// opt-out (true) on either side wins. Only a side whose value differs is written, as an update
// (an opt-out never creates a contact or a profile).

import { Output, errorsAsResults, hostSettings, ownSettings } from "./conduit-plugin.js";

const DIRECTIONS = ["disabled", "dynamics-to-campaign", "campaign-to-dynamics", "bidirectional"];

let plugin = null;

function setUp(json) {
  const { key_field: keyField } = ownSettings(json, { key_field: "string" });
  const { direction, pairs } = hostSettings(json);
  if (!DIRECTIONS.includes(direction)) throw new Error(`unknown direction \`${direction}\``);
  plugin = { keyField, direction, pairs };
}

// The instant of an RFC 3339 text, or null when absent.
function instant(value) {
  if (value.changedAt == null) return null;
  const at = Date.parse(value.changedAt);
  if (Number.isNaN(at)) throw new Error(`'${value.changedAt}' is not an RFC 3339 datetime`);
  return at;
}

// True when Campaign's attribute changed strictly after the contact; an unknown Campaign time
// is never newer, and a known one beats an unknown contact time.
function campaignIsNewer(dynamics, campaign) {
  const [d, c] = [instant(dynamics), instant(campaign)];
  if (c === null) return false;
  return d === null || c > d;
}

// The value both sides should hold, or null when there is nothing to copy.
function wanted(dynamics, campaign) {
  switch (plugin.direction) {
    case "dynamics-to-campaign": return dynamics ? dynamics.value : null;
    case "campaign-to-dynamics": return campaign ? campaign.value : null;
    case "bidirectional":
      if (dynamics && campaign) {
        return campaignIsNewer(dynamics, campaign) ? campaign.value : dynamics.value || campaign.value;
      }
      return (dynamics ?? campaign)?.value ?? null;
    default: return null;
  }
}

function resolveOne(out, targets, contact) {
  if (plugin.direction === "disabled") return out.skip("opt-out synchronization is disabled");
  if (contact.contactKey === "") return out.reject("the contact has no key");
  const toDynamics = {};
  const toCampaign = {};
  for (const pair of plugin.pairs) {
    const d = contact.dynamics.find((v) => v.attribute === pair.dynamics);
    const c = contact.campaign.find((v) => v.attribute === pair.campaign);
    let value;
    try {
      value = wanted(d, c);
    } catch (error) {
      return out.reject(`${pair.dynamics} / ${pair.campaign}: ${error.message}`);
    }
    if (value === null) continue;
    if (plugin.direction !== "dynamics-to-campaign" && d?.value !== value) toDynamics[pair.dynamics] = value;
    if (plugin.direction !== "campaign-to-dynamics" && c?.value !== value) toCampaign[pair.campaign] = value;
  }
  const records = [];
  if (Object.keys(toDynamics).length > 0) records.push(out.update(targets.dynamics, contact.contactKey, toDynamics));
  if (Object.keys(toCampaign).length > 0) records.push(out.update(targets.campaign, contact.contactKey, toCampaign));
  if (records.length === 0) return out.skip("already equal");
  return out.write(...records);
}

function resolveContacts(contacts) {
  const out = new Output();
  const targets = {
    dynamics: out.target("dynamics", "contacts", "contactid"),
    campaign: out.target("campaign", "profile", plugin.keyField),
  };
  for (const contact of contacts) resolveOne(out, targets, contact);
  return out.finish();
}

// Anything thrown becomes the call's error message (reported by the host, dead-lettered).
export const { configure, resolve } = errorsAsResults({ configure: setUp, resolve: resolveContacts });
