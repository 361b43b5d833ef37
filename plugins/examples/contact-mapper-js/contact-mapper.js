// Example plugin in JavaScript (componentize-js): the same contact mapping as
// ../contact-mapper (Rust) and ../contact-mapper-py, against the record-mapper world of
// wit/conduit-plugin.wit, on the SDK's helper (plugins/sdk-js/conduit-plugin.js).

import { Batch, Output, asText, errorsAsResults, hostSettings, ownSettings } from "./conduit-plugin.js";

let destination = null;

function setUp(settings) {
  ownSettings(settings, {}); // it takes no settings of its own
  destination = hostSettings(settings).destination;
  if (typeof destination !== "string") throw new Error("invalid settings: missing field `destination`");
}

function mapBatch(_phase, raw) {
  if (destination === null) throw new Error("map called before configure");
  const batch = new Batch(raw);
  const out = new Output();
  const target = out.target("campaign", destination, "externalId");
  for (const row of batch.rows) {
    const address = asText(batch.get(row, "emailaddress1"));
    if (address === null) {
      out.skip("no emailaddress1");
    } else if (!address.includes("@")) {
      out.reject(`emailaddress1 \`${address}\` is not an e-mail address`);
    } else {
      out.write(out.upsert(target, row.key, {
        firstName: asText(batch.get(row, "firstname")),
        lastName: asText(batch.get(row, "lastname")),
        email: address.toLowerCase(),
      }));
    }
  }
  return out.finish();
}

export const { configure, map } = errorsAsResults({ configure: setUp, map: mapBatch });
