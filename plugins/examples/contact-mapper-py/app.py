"""Example plugin in Python (componentize-py): the same contact mapping as ../contact-mapper
(Rust) and ../contact-mapper-js, against the record-mapper world of wit/conduit-plugin.wit.

Build: componentize-py -d wit -w record-mapper componentize app -o contact_mapper_py.wasm
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types as t

_destination = None


def _text(value):
    if isinstance(value, (t.Value_Text, t.Value_Datetime, t.Value_Guid)):
        return value.value
    return None


def _text_value(string):
    return t.Value_Null() if string is None else t.Value_Text(string)


class WitWorld(wit_world.WitWorld):
    def configure(self, settings: str) -> None:
        global _destination
        parsed = json.loads(settings)
        for key in parsed:
            if key != "destination":
                raise Err(f"invalid setting `{key}`: unknown field")
        if not isinstance(parsed.get("destination"), str):
            raise Err("invalid settings: missing field `destination`")
        _destination = parsed["destination"]

    def map(self, phase: t.Phase, batch: t.RecordBatch) -> t.MappedBatch:
        if _destination is None:
            raise Err("map called before configure")
        index = {name: i for i, name in enumerate(batch.columns)}

        def at(row, name):
            i = index.get(name)
            return None if i is None or i >= len(row.values) else _text(row.values[i])

        outcomes = []
        for row in batch.rows:
            address = at(row, "emailaddress1")
            if address is None:
                outcomes.append(t.Outcome_Skip("no emailaddress1"))
            elif "@" not in address:
                outcomes.append(
                    t.Outcome_Reject(f"emailaddress1 `{address}` is not an e-mail address")
                )
            else:
                fields = [
                    (0, _text_value(at(row, "firstname"))),
                    (1, _text_value(at(row, "lastname"))),
                    (2, _text_value(address.lower())),
                ]
                record = t.OutputRecord(0, row.key, t.Operation.UPSERT, fields)
                outcomes.append(t.Outcome_Write([record]))
        return t.MappedBatch(
            [t.Target(t.System.CAMPAIGN, _destination, "externalId")],
            ["firstName", "lastName", "email"],
            outcomes,
        )
