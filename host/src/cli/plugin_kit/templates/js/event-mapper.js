// `{name}`: records Campaign email events as activities on the contact's timeline in
// Dynamics 365 (an event-mapper plugin). The [egress] switches `send`, `open`, `click` and
// `bounce` choose the kinds; its own setting `subject_prefix` starts each activity's subject.
//
// Each kind goes to its activity table of the Adobe Campaign solution (`adobe_emailopens` for
// opens...), keyed by `activityid` = the event's id, so a re-delivered event updates its
// activity instead of adding one; `regardingobjectid_contact` binds the activity to the
// contact whose key (the profile's CRM ID) the event carries.

import { Output, Value, errorsAsResults, hostSettings, ownSettings } from "./conduit-plugin.js";

// The activity entity set and its date field, per kind.
const ACTIVITIES = {
  send: ["adobe_emailsends", "adobe_datesent"],
  open: ["adobe_emailopens", "adobe_dateopened"],
  click: ["adobe_emailclicks", "adobe_dateclicked"],
  bounce: ["adobe_emailbounces", "adobe_datebounced"],
};

let plugin = null;

function setUp(json) {
  const { subject_prefix: subjectPrefix } = ownSettings(json, { subject_prefix: "string" });
  const { send, open, click, bounce } = hostSettings(json);
  plugin = { subjectPrefix, on: { send, open, click, bounce } };
}

function mapEvents(events) {
  const out = new Output();
  for (const event of events) {
    const kind = event.kind;
    if (!plugin.on[kind]) {
      out.skip(`${kind} events are switched off`);
      continue;
    }
    if (event.contactKey === "") {
      out.reject("the event names no contact");
      continue;
    }
    const [entitySet, dateField] = ACTIVITIES[kind];
    const target = out.target("dynamics", entitySet, "activityid");
    const fields = {
      subject: `${plugin.subjectPrefix} ${kind}: ${event.deliveryName}`,
      [dateField]: Value.datetime(event.timestamp),
      // A lookup is bound through its navigation property, to a row of a table.
      regardingobjectid_contact: Value.lookup("contact", event.contactKey),
    };
    if (kind === "click" && event.url != null) fields.adobe_trackingurl = event.url;
    if (kind === "bounce" && event.bounce != null) fields.adobe_bouncereason = event.bounce.reason;
    out.write(out.upsert(target, event.id, fields));
  }
  return out.finish();
}

// Anything thrown becomes the call's error message (reported by the host, dead-lettered).
export const { configure, map } = errorsAsResults({ configure: setUp, map: mapEvents });
