"""What every recipe section is: a strict model whose JSON form, the way it leaves the process, is redacted.

A section is JSON wherever it leaves: a flow or subflow run's parameters in Prefect's database, a deployment's
parameters, the recipe copy beside a run and in the card. None of them may carry a credential a user wrote into
a URL or a job variable, whichever section a flow or task is handed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SerializationInfo, model_serializer

from embedforge.redact import redact_data


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_serializer(mode="wrap")
    def _redacted_json(self, handler, info: SerializationInfo):
        data = handler(self)
        return redact_data(data) if info.mode_is_json() else data
