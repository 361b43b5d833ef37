"""`{name}`: records Campaign email events as Dynamics 365 activities (an event-mapper
plugin). The [egress] switches `send`, `open`, `click` and `bounce` choose the kinds; its own
setting `entity_set` names the Dataverse entity set written."""

import wit_world
from conduit_plugin import Output, errors_as_results, host_settings, own_settings
from wit_world.imports import types as t

_plugin = None


@errors_as_results  # anything raised becomes the call's error message (dead-lettered)
class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _plugin
        own = own_settings(settings, {"entity_set": "string"})
        section = host_settings(settings)
        _plugin = {
            "entity_set": own["entity_set"],
            "on": {kind: section[kind] for kind in ("send", "open", "click", "bounce")},
        }

    def map(self, events: list[t.EmailEvent]) -> t.MappedBatch:
        out = Output()
        target = out.target("dynamics", _plugin["entity_set"], "activityid")
        for event in events:
            kind = event.kind.name.lower()
            if not _plugin["on"][kind]:
                out.skip(f"{kind} events are switched off")
            elif event.contact_key == "":
                out.reject("the event names no contact")
            else:
                fields = {
                    "subject": f"{kind} {event.delivery_name}",
                    "regardingobjectid": event.contact_key,
                }
                out.write(out.upsert(target, event.id, fields))
        return out.finish()
