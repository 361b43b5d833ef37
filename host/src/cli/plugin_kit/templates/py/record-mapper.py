"""`{name}`: copies the mapping's fields (`fields` in its [[ingress.mappings]] entry) from
Dynamics 365 rows onto Campaign records (a record-mapper plugin). Rows without the column
named by its own setting `required` are skipped; deletes follow `apply_deletes`."""

import wit_world
from conduit_plugin import Batch, Output, errors_as_results, host_settings, is_null, own_settings
from wit_world.imports import types as t

_plugin = None


@errors_as_results  # anything raised becomes the call's error message (dead-lettered)
class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _plugin
        # Its own settings (the entry's `settings` table), strictly: a typo is an error naming it.
        own = own_settings(settings, {"required": "string"})
        # The host's keys it reads; others are ignored.
        mapping = host_settings(settings)
        _plugin = {
            "required": own["required"],
            "destination": mapping["destination"],
            "key_field": mapping["key"]["destination"],
            "fields": mapping["fields"],
            "apply_deletes": mapping["apply_deletes"],
        }

    def map(self, phase: t.Phase, raw: t.RecordBatch) -> t.MappedBatch:
        batch = Batch(raw)
        out = Output()
        target = out.target("campaign", _plugin["destination"], _plugin["key_field"])
        for row in batch.rows:
            if row.op == t.Operation.DELETE:
                if _plugin["apply_deletes"]:
                    out.write(out.delete(target, row.key))
                else:
                    out.skip("deletes are not applied")
            elif is_null(batch.get(row, _plugin["required"])):
                out.skip(f"no {_plugin['required']}")
            else:
                fields = {f["destination"]: batch.get(row, f["source"]) for f in _plugin["fields"]}
                out.write(out.upsert(target, row.key, fields))
        return out.finish()
