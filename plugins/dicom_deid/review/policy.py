"""Which images a project's reviewer sees before a release: ``review:`` in its file.

``none`` (nobody looks), ``sample <percent>`` (a fixed share of the images, chosen by a
hash of the output's pseudonymous path, so a rerun selects the same ones), ``at-risk``
(every image that may carry burned-in text, by the privacy-first rule the gate uses) or
``all``. Only images (outputs with pixel data) are ever selected.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from dicom_deid.errors import ConfigError

RULES = ("none", "sample", "at-risk", "all")
_SAMPLE = re.compile(r"sample\s+(\d+(?:\.\d+)?)\s*%?")


@dataclass(frozen=True)
class ReviewPolicy:
    """A project's review rule; ``percent`` only for ``sample``."""

    rule: str = "none"
    percent: float = 0.0

    @classmethod
    def parse(cls, text: object) -> ReviewPolicy:
        """``none``, ``sample <percent>`` (0 < percent <= 100), ``at-risk`` or ``all``."""
        if not isinstance(text, str):
            raise ConfigError(f"must be one of none, 'sample <percent>', at-risk, all "
                              f"(got a {type(text).__name__})")
        spelled = " ".join(text.strip().lower().split())
        if spelled in ("none", "at-risk", "all"):
            return cls(spelled)
        m = _SAMPLE.fullmatch(spelled)
        if m is None:
            raise ConfigError(f"unknown review rule {text!r}: one of none, "
                              "'sample <percent>' (e.g. 'sample 5'), at-risk, all")
        percent = float(m.group(1))
        if not 0 < percent <= 100:
            raise ConfigError(f"a review sample is more than 0 and at most 100 percent "
                              f"(got {m.group(1)})")
        return cls("sample", percent)

    @property
    def waits(self) -> bool:
        """Whether a run waits for a reviewer's answer before it publishes."""
        return self.rule != "none"

    def select(self, output_path: str, at_risk: bool) -> str | None:
        """Why an image (an output with pixel data) is shown: the rule's name, or None."""
        if self.rule == "all" or (self.rule == "at-risk" and at_risk):
            return self.rule
        if self.rule == "sample" and _share(output_path) < self.percent / 100:
            return "sample"
        return None

    def __str__(self) -> str:
        return f"sample {self.percent:g}%" if self.rule == "sample" else self.rule


def _share(output_path: str) -> float:
    """A fixed number in [0, 1) for an output path (its pseudonymous UIDs are already
    keyed, so this is as unpredictable as they are and stable across reruns)."""
    digest = hashlib.sha256(output_path.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
