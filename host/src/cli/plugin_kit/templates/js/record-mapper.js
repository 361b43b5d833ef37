// `{name}`: copies the mapping's fields (`fields` in its [[ingress.mappings]] entry) from
// Dynamics 365 rows onto Campaign records (a record-mapper plugin). Rows without the column
// named by its own setting `required` are skipped; deletes follow `apply_deletes`.

import { Batch, Output, errorsAsResults, hostSettings, isNull, ownSettings } from "./conduit-plugin.js";

let plugin = null;

function setUp(json) {
  // Its own settings (the entry's `settings` table), strictly: a typo is an error naming it.
  const { required } = ownSettings(json, { required: "string" });
  // The host's keys it reads; others are ignored.
  const { destination, key, fields, apply_deletes: applyDeletes } = hostSettings(json);
  plugin = { required, destination, keyField: key.destination, fields, applyDeletes };
}

function mapBatch(_phase, raw) {
  const batch = new Batch(raw);
  const out = new Output();
  const target = out.target("campaign", plugin.destination, plugin.keyField);
  for (const row of batch.rows) {
    if (row.op === "delete") {
      if (plugin.applyDeletes) out.write(out.delete(target, row.key));
      else out.skip("deletes are not applied");
    } else if (isNull(batch.get(row, plugin.required))) {
      out.skip(`no ${plugin.required}`);
    } else {
      const fields = {};
      for (const field of plugin.fields) fields[field.destination] = batch.get(row, field.source);
      out.write(out.upsert(target, row.key, fields));
    }
  }
  return out.finish();
}

// Anything thrown becomes the call's error message (reported by the host, dead-lettered).
export const { configure, map } = errorsAsResults({ configure: setUp, map: mapBatch });
