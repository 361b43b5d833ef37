// `{name}`: records Campaign email events as Dynamics 365 activities (an event-mapper
// plugin). The [egress] switches `send`, `open`, `click` and `bounce` choose the kinds; its
// own setting `entity_set` names the Dataverse entity set written.

import { Output, errorsAsResults, hostSettings, ownSettings } from "./conduit-plugin.js";

let plugin = null;

function setUp(json) {
  const { entity_set: entitySet } = ownSettings(json, { entity_set: "string" });
  const { send, open, click, bounce } = hostSettings(json);
  plugin = { entitySet, on: { send, open, click, bounce } };
}

function mapEvents(events) {
  const out = new Output();
  const target = out.target("dynamics", plugin.entitySet, "activityid");
  for (const event of events) {
    if (!plugin.on[event.kind]) {
      out.skip(`${event.kind} events are switched off`);
    } else if (event.contactKey === "") {
      out.reject("the event names no contact");
    } else {
      out.write(out.upsert(target, event.id, {
        subject: `${event.kind} ${event.deliveryName}`,
        regardingobjectid: event.contactKey,
      }));
    }
  }
  return out.finish();
}

// Anything thrown becomes the call's error message (reported by the host, dead-lettered).
export const { configure, map } = errorsAsResults({ configure: setUp, map: mapEvents });
