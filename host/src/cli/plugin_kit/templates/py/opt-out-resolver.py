"""`{name}`: copies Dynamics 365 opt-outs to Campaign profiles (an opt-out-resolver plugin).
The [optinout] keys `direction` and `pairs` say what is copied; its own setting `key_field`
names the Campaign profile field holding the contact's key."""

import wit_world
from conduit_plugin import Output, errors_as_results, host_settings, own_settings
from wit_world.imports import types as t

_plugin = None


@errors_as_results  # anything raised becomes the call's error message (dead-lettered)
class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _plugin
        own = own_settings(settings, {"key_field": "string"})
        section = host_settings(settings)
        _plugin = {
            "key_field": own["key_field"],
            "direction": section["direction"],
            "pairs": section["pairs"],
        }

    def resolve(self, contacts: list[t.ContactOptOut]) -> t.MappedBatch:
        out = Output()
        target = out.target("campaign", "profile", _plugin["key_field"])
        for contact in contacts:
            if _plugin["direction"] != "dynamics-to-campaign":
                out.skip(f"direction {_plugin['direction']} is not handled by this plugin")
                continue
            fields = {}
            for pair in _plugin["pairs"]:
                wanted = next((v for v in contact.dynamics if v.attribute == pair["dynamics"]), None)
                current = next((v for v in contact.campaign if v.attribute == pair["campaign"]), None)
                if wanted is not None and (current is None or current.value != wanted.value):
                    fields[pair["campaign"]] = wanted.value
            if fields:
                out.write(out.update(target, contact.contact_key, fields))
            else:
                out.skip("already equal")
        return out.finish()
