"""What a run decided for its model, in one vocabulary, and the figures it decided on: a leaf (pydantic only).

decide, approval, push, the outcome, the history artifact, the event and the flow run's final state (the word
capitalised) all say what happened in the words of `Decision`; nothing translates one into another.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from embedforge.figures import Interval


class CurrentRelease(BaseModel):
    """The published release a run matches: nothing to train."""

    release: str
    headline: str
    value: float
    location: str


Decision = Literal["published", "already published", "champion kept", "up to date", "rejected", "trained", "failed"]


class Approval(BaseModel):
    """A person's sign-off of a release (`push.approval: required`), or its absence when the wait timed out."""

    approved: bool
    by: str = Field(description="Who answered, as they gave their name in the form; 'timeout' when nobody did.")
    reason: str = ""
    at: str = Field(description="When, UTC, ISO 8601.")

    @property
    def line(self) -> str:
        said = f": {self.reason}" if self.reason else ""
        if self.by == "timeout":
            return f"not approved in time{said}"
        return f"{'approved' if self.approved else 'not approved'} by {self.by}{said}"


class ReleaseDecision(BaseModel):
    """What decide settled for a model that passed its gate, and the figures it compared; push fills in location.

    `decision` is what the run will have decided once push has done its part: `published` means push publishes.
    """

    decision: Literal["published", "already published", "champion kept", "trained", "rejected"]
    reason: str
    release: str
    headline: str
    challenger: float
    champion: float | None = None
    difference: Interval | None = Field(None, description="Challenger minus champion, query by query: its interval.")
    target: str | None = None
    location: str | None = Field(None, description="Where the release already is (decision 'already published').")
    approval: Approval | None = Field(None, description="The sign-off, when push.approval is required.")

    @property
    def publish(self) -> bool:
        return self.decision == "published"

    @property
    def already(self) -> bool:  # a resumed run whose release is out: nothing is written
        return self.decision == "already published"

    @property
    def pushed(self) -> bool:  # the release is out, published by this run or before it
        return self.publish or self.already


class Outcome(BaseModel):
    """What a run decided for its model, and the headline figures it decided on."""

    recipe: str
    run_id: str
    decision: Decision
    reason: str
    headline: str | None = None
    base: float | None = None
    finetuned: float | None = None
    champion: float | None = None
    release: str | None = None
    location: str | None = None
    data_fingerprint: str | None = None

    @property
    def state_name(self) -> str:
        """The flow run's final state: the dashboard's run list reads as what happened."""
        return self.decision.capitalize()
