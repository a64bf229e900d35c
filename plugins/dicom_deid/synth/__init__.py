"""The deterministic synthetic DICOM corpus generator, with planted PHI and an answer key.

For the demo, the tests and the benchmarks; not part of the runtime de-identification engine.
It imports only pydicom, numpy, Pillow and the standard library, nothing else of
``dicom_deid``. Entry point: :func:`generate` (``dicom-deid synth``: :func:`main_args`).
"""

from .answer_key import (
    BAD_REASONS,
    KEPT_KINDS,
    KEPT_PLACES,
    AnswerKey,
    Duplicate,
    FileRecord,
    KeptPlant,
    PlantedBadInput,
    kept_byte_patterns,
    load_answer_key,
    planted_byte_patterns,
    value_patterns,
)
from .generate import generate, main_args
from .planning import UID_ROOT
from .vocabulary import JAPANESE_NAMES

__all__ = [
    "BAD_REASONS",
    "JAPANESE_NAMES",
    "KEPT_KINDS",
    "KEPT_PLACES",
    "UID_ROOT",
    "AnswerKey",
    "Duplicate",
    "FileRecord",
    "KeptPlant",
    "PlantedBadInput",
    "generate",
    "kept_byte_patterns",
    "load_answer_key",
    "main_args",
    "planted_byte_patterns",
    "value_patterns",
]
