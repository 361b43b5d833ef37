// `{name}`: copies Dynamics 365 opt-outs to Campaign profiles (an opt-out-resolver plugin).
// The [optinout] keys `direction` and `pairs` say what is copied; its own setting `key_field`
// names the Campaign profile field holding the contact's key.

import { Output, errorsAsResults, hostSettings, ownSettings } from "./conduit-plugin.js";

let plugin = null;

function setUp(json) {
  const { key_field: keyField } = ownSettings(json, { key_field: "string" });
  const { direction, pairs } = hostSettings(json);
  plugin = { keyField, direction, pairs };
}

function resolveContacts(contacts) {
  const out = new Output();
  const target = out.target("campaign", "profile", plugin.keyField);
  for (const contact of contacts) {
    if (plugin.direction !== "dynamics-to-campaign") {
      out.skip(`direction ${plugin.direction} is not handled by this plugin`);
      continue;
    }
    const fields = {};
    for (const pair of plugin.pairs) {
      const wanted = contact.dynamics.find((v) => v.attribute === pair.dynamics);
      const current = contact.campaign.find((v) => v.attribute === pair.campaign);
      if (wanted && current?.value !== wanted.value) fields[pair.campaign] = wanted.value;
    }
    if (Object.keys(fields).length > 0) out.write(out.update(target, contact.contactKey, fields));
    else out.skip("already equal");
  }
  return out.finish();
}

// Anything thrown becomes the call's error message (reported by the host, dead-lettered).
export const { configure, resolve } = errorsAsResults({ configure: setUp, resolve: resolveContacts });
