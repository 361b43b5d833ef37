"""`{name}`: records Campaign email events as activities on the contact's timeline in
Dynamics 365 (an event-mapper plugin). The [egress] switches `send`, `open`, `click` and
`bounce` choose the kinds; its own setting `subject_prefix` starts each activity's subject.

Each kind goes to its activity table of the Adobe Campaign solution (`adobe_emailopens` for
opens...), keyed by `activityid` = the event's id, so a re-delivered event updates its
activity instead of adding one; `regardingobjectid_contact` binds the activity to the contact
whose key (the profile's CRM ID) the event carries."""

import wit_world
from conduit_plugin import Output, Value, errors_as_results, host_settings, own_settings
from wit_world.imports import types as t

# The activity entity set and its date field, per kind.
ACTIVITIES = {
    "send": ("adobe_emailsends", "adobe_datesent"),
    "open": ("adobe_emailopens", "adobe_dateopened"),
    "click": ("adobe_emailclicks", "adobe_dateclicked"),
    "bounce": ("adobe_emailbounces", "adobe_datebounced"),
}

_plugin = None


@errors_as_results  # anything raised becomes the call's error message (dead-lettered)
class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _plugin
        own = own_settings(settings, {"subject_prefix": "string"})
        section = host_settings(settings)
        _plugin = {
            "subject_prefix": own["subject_prefix"],
            "on": {kind: section[kind] for kind in ACTIVITIES},
        }

    def map(self, events: list[t.EmailEvent]) -> t.MappedBatch:
        out = Output()
        for event in events:
            kind = event.kind.name.lower()
            if not _plugin["on"][kind]:
                out.skip(f"{kind} events are switched off")
                continue
            if event.contact_key == "":
                out.reject("the event names no contact")
                continue
            entity_set, date_field = ACTIVITIES[kind]
            target = out.target("dynamics", entity_set, "activityid")
            fields = {
                "subject": f"{_plugin['subject_prefix']} {kind}: {event.delivery_name}",
                date_field: Value.datetime(event.timestamp),
                # A lookup is bound through its navigation property, to a row of a table.
                "regardingobjectid_contact": Value.lookup("contact", event.contact_key),
            }
            if kind == "click" and event.url is not None:
                fields["adobe_trackingurl"] = event.url
            if kind == "bounce" and event.bounce is not None:
                fields["adobe_bouncereason"] = event.bounce.reason
            out.write(out.upsert(target, event.id, fields))
        return out.finish()
