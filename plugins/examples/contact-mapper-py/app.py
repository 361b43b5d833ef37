"""Example plugin in Python (componentize-py): the same contact mapping as ../contact-mapper
(Rust) and ../contact-mapper-js, against the record-mapper world of wit/conduit-plugin.wit, on
the SDK's helper (plugins/sdk-py/conduit_plugin.py).

Build: componentize-py -d wit -w record-mapper componentize -p . -p ../../sdk-py app -o out.wasm
"""

import wit_world
from conduit_plugin import Batch, Output, as_text, errors_as_results, host_settings, own_settings
from wit_world.imports import types as t

_destination = None


@errors_as_results
class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _destination
        own_settings(settings, {})  # it takes no settings of its own
        destination = host_settings(settings).get("destination")
        if not isinstance(destination, str):
            raise ValueError("invalid settings: missing field `destination`")
        _destination = destination

    def map(self, phase: t.Phase, raw: t.RecordBatch) -> t.MappedBatch:
        if _destination is None:
            raise RuntimeError("map called before configure")
        batch = Batch(raw)
        out = Output()
        target = out.target("campaign", _destination, "externalId")
        for row in batch.rows:
            address = as_text(batch.get(row, "emailaddress1"))
            if address is None:
                out.skip("no emailaddress1")
            elif "@" not in address:
                out.reject(f"emailaddress1 `{address}` is not an e-mail address")
            else:
                fields = {
                    "firstName": as_text(batch.get(row, "firstname")),
                    "lastName": as_text(batch.get(row, "lastname")),
                    "email": address.lower(),
                }
                out.write(out.upsert(target, row.key, fields))
        return out.finish()
