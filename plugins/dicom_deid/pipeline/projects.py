"""Research projects: each one's de-identification policy in a version-controlled file.

A project file (``projects/<name>.yaml``) says how a research project de-identifies --
its policy, key connection, destination, standing cohort, schedule and the attributes it
deliberately keeps -- so none of that is chosen when a run is triggered. Each file
becomes one DAG (``dicom_deid__<name>``); a trigger may only narrow a run
(:meth:`Project.request`: a date window inside the project's, a dry run, a priority).

Validation is strict: an unknown key, a wrong type or an unknown option, profile or DICOM
keyword raises :class:`~dicom_deid.errors.ConfigError` naming the file and the field
(``demo.yaml: policy.options[1]: unknown option 'Foo' (known: ...)``). The field
reference is ``projects/README.md``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

import yaml
from pydicom.datadict import keyword_dict, tag_for_keyword

from dicom_deid.config.declared_exceptions import expand_exceptions
from dicom_deid.config.google import config_from_options, load_config
from dicom_deid.config.model import (
    BASIC_PROFILE_ALIASES,
    CLEAN_PIXEL_DATA_ALIASES,
    DeidConfig,
    Option,
    parse_options,
    privacy_first,
)
from dicom_deid.errors import ConfigError
from dicom_deid.review.policy import ReviewPolicy

__all__ = [
    "DAG_PREFIX",
    "DEFAULT_KEY_CONN_ID",
    "DEFAULT_SCHEDULE",
    "KNOWN_OPTIONS",
    "PRIORITIES",
    "PROJECTS_DIR_ENV",
    "Policy",
    "Project",
    "RunRequest",
    "default_destination",
    "load_project",
    "load_projects",
    "project_name",
    "projects_dir",
]

#: The folder of project files (absolute); unset, the ``projects/`` folder next to ``dags/``.
PROJECTS_DIR_ENV = "DICOM_DEID_PROJECTS_DIR"
#: A run's priority, as a trigger may set it (the shards' pool weight).
PRIORITIES = ("stat", "urgent", "routine", "low")
DAG_PREFIX = "dicom_deid__"
DEFAULT_KEY_CONN_ID = "dicom_deid_key"
#: Run when ``dicom_metadata`` gets new instances (the metadata export's Asset).
DEFAULT_SCHEDULE = "dicom_metadata"
PRIVACY_FIRST = "privacy-first"
PROFILE = "profile"
SUFFIX = ".yaml"
WINDOW = ("start_date", "end_date")

_TOP_KEYS = ("name", "description", "policy", "key_conn_id", "destination", "cohort",
             "cohort_params", "schedule", "exceptions", "review", "review_timeout_hours",
             "reviewers", "vault_key_conn_id", "hold_back")
DEFAULT_VAULT_KEY_CONN_ID = "dicom_deid_vault_key"
#: Without ``review:``, a person looks at every image at risk before it is released.
DEFAULT_REVIEW = ReviewPolicy("at-risk")
DEFAULT_REVIEW_TIMEOUT_HOURS = 72.0
_USER = re.compile(r"[A-Za-z0-9_.@+-]+")
_POLICY_KEYS = ("base", "profile", "options", "config")
_NAME = re.compile(r"[a-z0-9_]+")
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]+")
_COHORT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
_PRESETS = frozenset({"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly",
                      "@quarterly", "@yearly", "@annually"})
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?#-]+")
_MAX_TOKEN = 60


def _tok(value: object) -> str:
    """A user token for a message: short strings quoted, other values by type."""
    if isinstance(value, str):
        return repr(value if len(value) <= _MAX_TOKEN else value[:_MAX_TOKEN] + "...")
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _camel(option: Option) -> str:
    """``RETAIN_UIDS`` -> ``RetainUids``: a spelling :meth:`Option.parse` accepts."""
    return "".join(part.capitalize() for part in option.name.split("_"))


KNOWN_OPTIONS = (*sorted(_camel(o) for o in Option), "CleanPixelData")
"""The option names messages suggest (any spelling :meth:`Option.parse` accepts works)."""


class _Checker:
    """Raises :class:`ConfigError` naming the project file and the field path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, path: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.file}: {path or '(top level)'}: {message}")

    def mapping(self, value: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping of {', '.join(allowed)}, got {_tok(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"unknown key {_tok(key)} (known: {', '.join(allowed)})")
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else key,
                          f"unknown key (known: {', '.join(allowed)})")
        return dict(value)

    def string(self, value: object, path: str, pattern: re.Pattern[str] | None = None,
               what: str = "") -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"expected {what or 'a non-empty string'}, got {_tok(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(path, f"{_tok(value)} is not {what}")
        return value

    def strings(self, value: object, path: str) -> list[str]:
        if not isinstance(value, list):
            self.fail(path, f"expected a list, got {_tok(value)}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            self.string(item, f"{path}[{i}]")
            if item in seen:
                self.fail(f"{path}[{i}]", f"{_tok(item)} is given twice")
            seen.add(item)
        return list(value)


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RunRequest:
    """What to de-identify and how: a project's standing policy, narrowed by a trigger.

    ``policy``: the effective de-identification config (a project's,
    :meth:`~dicom_deid.pipeline.projects.Project.deid_config`; by default the privacy-first
    one, never the bare profile by omission). ``exceptions``: DICOM keywords the project
    deliberately keeps (the verification gate does not flag their values). ``dry_run``:
    de-identify and verify, never publish or load (nor ask for a review). ``project``:
    the project's name (for the run record).
    """

    cohort: str
    cohort_params: dict[str, Any]
    policy: DeidConfig = field(default_factory=privacy_first)
    priority: str = "routine"
    exceptions: frozenset[str] = frozenset()
    dry_run: bool = False
    project: str = ""
    review: ReviewPolicy = field(default_factory=ReviewPolicy)
    """Which outputs a reviewer sees before the release (a project's ``review:``)."""
    hold_back: frozenset[str] = frozenset()
    """Content SHA-256s of landing files not to release (a project's ``hold_back:``)."""

    def __post_init__(self) -> None:
        if self.priority not in PRIORITIES:
            raise ConfigError(f"priority must be one of {PRIORITIES}")
        object.__setattr__(self, "exceptions", frozenset(self.exceptions))
        object.__setattr__(self, "hold_back", frozenset(self.hold_back))

    def deid_config(self) -> DeidConfig:
        """The effective configuration this run applies."""
        return self.policy

    def config_fingerprint(self) -> str:
        """The effective configuration's fingerprint (:meth:`DeidConfig.fingerprint`):
        the value whose first 16 hex digits every output names in DeidentificationMethod,
        so manifests, ``deid_runs`` and files can be joined."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        # Every ledger row of a release names it: computed once (0.06 ms each time).
        return self.policy.fingerprint()


@dataclass(frozen=True)
class Policy:
    """What a project file says about how to de-identify, before it is resolved.

    ``base``: ``privacy-first`` (:func:`~dicom_deid.config.model.privacy_first`, with
    ``options`` added to it), ``profile`` (the bare PS3.15 ``profile`` with exactly
    ``options``: an explicit choice to go without the default's pixel cleaning or
    sweep) or ``config`` (a Google ``DicomTagConfig`` JSON file, ``config``).
    """

    base: str = PRIVACY_FIRST
    profile: str = "basic"
    options: tuple[str, ...] = ()
    config: Path | None = None

    def deid_config(self) -> DeidConfig:
        """The :class:`DeidConfig` this policy means (reads the config file, if any)."""
        if self.base == "config" and self.config is not None:
            return load_config(self.config)
        if self.base == PROFILE:
            return config_from_options(self.profile, list(self.options))
        default = privacy_first()
        return privacy_first(options=default.options | parse_options(
            [n for n in self.options if _norm(n) not in CLEAN_PIXEL_DATA_ALIASES]))

    def describe(self) -> str:
        """One line for logs and DAG docs (no values from DICOM, only config names)."""
        if self.base == "config":
            return f"config file {self.config.name if self.config else '?'}"
        head = PRIVACY_FIRST if self.base == PRIVACY_FIRST else f"bare {self.profile} profile"
        return head + (f" + {', '.join(self.options)}" if self.options else "")


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def _parse_options(check: _Checker, raw: object, path: str) -> tuple[str, ...]:
    names = check.strings(raw, path)
    for i, name in enumerate(names):
        key = _norm(name)
        if key in BASIC_PROFILE_ALIASES:
            check.fail(f"{path}[{i}]", f"{_tok(name)} is the profile, not an option")
        if key in CLEAN_PIXEL_DATA_ALIASES:
            continue
        try:
            Option.parse(name)
        except ConfigError:
            check.fail(f"{path}[{i}]", f"unknown option {_tok(name)} "
                       f"(known: {', '.join(KNOWN_OPTIONS)})")
    try:
        parse_options([n for n in names if _norm(n) not in CLEAN_PIXEL_DATA_ALIASES])
    except ConfigError as exc:
        check.fail(path, str(exc))
    return tuple(names)


def _parse_policy(check: _Checker, raw: object, folder: Path) -> Policy:
    if raw is None or raw == PRIVACY_FIRST:
        return Policy()
    if isinstance(raw, str):
        check.fail("policy", f"expected {PRIVACY_FIRST!r} or a mapping with options, "
                   f"base: profile or config, got {_tok(raw)}")
    fields = check.mapping(raw, "policy", _POLICY_KEYS)
    if "config" in fields:
        others = sorted(set(fields) - {"config"})
        if others:
            check.fail(f"policy.{others[0]}", "a config file already holds the profile and "
                       "options: give either config or base/profile/options")
        rel = check.string(fields["config"], "policy.config", what="a path to a JSON file")
        path = Path(rel) if Path(rel).is_absolute() else folder / rel
        if not path.is_file():
            check.fail("policy.config", f"no file {rel} (relative to the project file)")
        return Policy(base="config", config=path.resolve())
    base = fields.get("base", PRIVACY_FIRST)
    if base not in (PRIVACY_FIRST, PROFILE):
        check.fail("policy.base", f"expected {PRIVACY_FIRST!r} or {PROFILE!r}, got {_tok(base)}")
    if "profile" in fields and base != PROFILE:
        check.fail("policy.profile", "the privacy-first default is the Basic Profile; to "
                   "choose another profile, also set base: profile")
    profile = check.string(fields.get("profile", "basic"), "policy.profile")
    options = _parse_options(check, fields.get("options", []), "policy.options")
    if base == PROFILE:
        try:
            config_from_options(profile, [])
        except ConfigError as exc:
            check.fail("policy.profile", str(exc).partition(": ")[2] or str(exc))
    return Policy(base=str(base), profile=profile, options=options)


# --------------------------------------------------------------------------- project


@dataclass(frozen=True)
class Project:
    """One research project's standing de-identification policy (see the module doc).

    ``destination`` None: ``<the deployment's destination>/<name>``
    (:meth:`destination_for`). ``schedule``: :data:`DEFAULT_SCHEDULE`, a cron expression
    or preset, or None (triggered by hand only). ``exceptions``: DICOM keywords whose
    original values the project keeps on purpose, or PS3.15 option names standing for
    every attribute the option keeps (the verification gate does not flag them).
    ``review``: which images a person looks at before a release (default: every image
    at risk); an unanswered review is a rejection after ``review_timeout_hours``.
    ``path``: the file it was read from.
    """

    name: str
    cohort: str
    cohort_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    policy: Policy = field(default_factory=Policy)
    key_conn_id: str = DEFAULT_KEY_CONN_ID
    vault_key_conn_id: str = DEFAULT_VAULT_KEY_CONN_ID
    """The connection holding the vault key that seals the project's mapping."""
    destination: str | None = None
    schedule: str | None = DEFAULT_SCHEDULE
    exceptions: frozenset[str] = frozenset()
    review: ReviewPolicy = DEFAULT_REVIEW
    review_timeout_hours: float = DEFAULT_REVIEW_TIMEOUT_HOURS
    reviewers: tuple[str, ...] = ()
    """Airflow user names who may answer the review (empty: anyone Airflow lets)."""
    hold_back: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Landing files this project does not release, by the SHA-256 of their content, each
    with the steward's PHI-free reason (a file the gate rejects, until its source is
    fixed): the rest of the cohort is released without them."""
    path: Path | None = None
    _config: DeidConfig | None = field(default=None, repr=False, compare=False)

    @property
    def dag_id(self) -> str:
        return f"{DAG_PREFIX}{self.name}"

    def deid_config(self) -> DeidConfig:
        """The effective de-identification config (resolved once, when loaded)."""
        return self._config if self._config is not None else self.policy.deid_config()

    def fingerprint(self) -> str:
        """The effective config's fingerprint: the one every output, manifest and
        ``deid_runs`` row records (:meth:`DeidConfig.fingerprint`)."""
        return self.deid_config().fingerprint()

    def destination_for(self, deployment_destination: str) -> str:
        """Where this project publishes: its own ``destination``, else a folder named
        after it under the deployment's (``$DICOM_DEID_DESTINATION``, else
        ``$DICOM_DEID_DATA_DIR/deid``)."""
        return self.destination or default_destination(deployment_destination, self.name)

    def request(self, *, start_date: str | date | None = None,
                end_date: str | date | None = None, dry_run: bool = False,
                priority: str | None = None) -> RunRequest:
        """The run request of one run of this project, narrowed by a trigger's params.

        ``start_date``/``end_date`` replace the cohort's window and must lie inside the
        project's (``cohort_params.start_date``/``end_date``): a wider one, or one for a
        project whose cohort_params set no such bound, is refused (:class:`ConfigError`
        naming the param). The policy, key, destination and exceptions are the project's.
        """
        params = dict(self.cohort_params)
        for key, given in zip(WINDOW, (start_date, end_date), strict=True):
            if given is None or given == "":
                continue
            value = _trigger_date(key, given)
            if key not in params:
                raise ConfigError(f"{key}: project {self.name}'s cohort_params set no "
                                  f"{key}, so a trigger cannot set one")
            bound = date.fromisoformat(str(params[key]))
            if (value < bound) if key == "start_date" else (value > bound):
                raise ConfigError(
                    f"{key}: {value.isoformat()} lies outside project {self.name}'s cohort "
                    f"window (cohort_params.{key} {bound.isoformat()}): a trigger may "
                    "narrow a run, never widen it")
            params[key] = value.isoformat()
        if all(k in params for k in WINDOW) and (
                date.fromisoformat(str(params["start_date"]))
                > date.fromisoformat(str(params["end_date"]))):
            raise ConfigError("start_date: after end_date: the window is empty")
        return RunRequest(cohort=self.cohort, cohort_params=params, policy=self.deid_config(),
                          priority=priority or "routine", exceptions=self.exceptions,
                          dry_run=bool(dry_run), project=self.name, review=self.review,
                          hold_back=frozenset(self.hold_back))


def _trigger_date(key: str, value: str | date) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: expected a date YYYY-MM-DD, got {_tok(value)}") from None


def _parse_cohort(check: _Checker, raw: object, folder: Path) -> str:
    cohort = check.string(raw, "cohort", what="a cohort name or a path to a .sql file")
    if cohort.endswith(".sql") or "/" in cohort:
        path = Path(cohort) if Path(cohort).is_absolute() else folder / cohort
        if not path.is_file():
            check.fail("cohort", f"no file {cohort} (relative to the project file)")
        return str(path.resolve())
    if not _COHORT_NAME.fullmatch(cohort):
        check.fail("cohort", f"{_tok(cohort)} is not a cohort name")
    return cohort


def _param_value(check: _Checker, value: object, path: str) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list):
        return [_param_value(check, v, f"{path}[{i}]") for i, v in enumerate(value)]
    check.fail(path, f"expected a value or a list of values, got {_tok(value)}")


def _parse_cohort_params(check: _Checker, raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        check.fail("cohort_params", f"expected a mapping of the cohort's params, got "
                   f"{_tok(raw)}")
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _PARAM_NAME.fullmatch(key):
            check.fail("cohort_params", f"{_tok(key)} is not a parameter name")
        params[key] = _param_value(check, value, f"cohort_params.{key}")
    for key in WINDOW:
        if key in params:
            try:
                params[key] = date.fromisoformat(str(params[key])).isoformat()
            except ValueError:
                check.fail(f"cohort_params.{key}", f"expected a date YYYY-MM-DD, got "
                           f"{_tok(params[key])}")
    if all(k in params for k in WINDOW) and params["start_date"] > params["end_date"]:
        check.fail("cohort_params.start_date", "after cohort_params.end_date")
    return params


def _parse_schedule(check: _Checker, fields: dict[str, Any]) -> str | None:
    if "schedule" not in fields:
        return DEFAULT_SCHEDULE
    raw = fields["schedule"]
    if raw is None:
        return None
    text = check.string(raw, "schedule", what=f"{DEFAULT_SCHEDULE!r}, a cron expression, a "
                        "preset (@daily...) or null")
    if text == DEFAULT_SCHEDULE or text in _PRESETS:
        return text
    parts = text.split()
    if len(parts) != 5 or not all(_CRON_FIELD.fullmatch(p) for p in parts):
        check.fail("schedule", f"{_tok(text)} is neither {DEFAULT_SCHEDULE!r}, a preset "
                   f"({', '.join(sorted(_PRESETS))}) nor a 5-field cron expression")
    return " ".join(parts)


def _parse_exceptions(check: _Checker, raw: object) -> frozenset[str]:
    if raw is None:
        return frozenset()
    keywords = check.strings(raw, "exceptions")
    for i, keyword in enumerate(keywords):
        if tag_for_keyword(keyword) is not None or keyword == "PersonName":
            continue
        try:  # a PS3.15 option name: every attribute that option keeps
            expand_exceptions([keyword])
        except ConfigError:
            close = difflib.get_close_matches(keyword, keyword_dict, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            check.fail(f"exceptions[{i}]", f"{_tok(keyword)} is neither a DICOM keyword nor "
                       f"a PS3.15 option name{hint}")
    return frozenset(keywords)


_SHA256 = re.compile(r"[0-9a-f]{64}")
_REASON_MAX = 200


def _parse_hold_back(check: _Checker, raw: object) -> dict[str, str]:
    """``hold_back:``, a list of ``{source_sha256, reason}``: what the run report names
    for a file the gate rejected, and why the steward holds it back (one line, no PHI:
    the file is version-controlled)."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        check.fail("hold_back", f"expected a list of {{source_sha256, reason}}, got {_tok(raw)}")
    held: dict[str, str] = {}
    for i, entry in enumerate(raw):
        fields = check.mapping(entry, f"hold_back[{i}]", ("source_sha256", "reason"))
        for required in ("source_sha256", "reason"):
            if required not in fields:
                check.fail(f"hold_back[{i}].{required}", "missing (required)")
        digest = check.string(fields["source_sha256"], f"hold_back[{i}].source_sha256",
                              _SHA256, "64 lower-case hex digits (the run report's "
                              "source sha256)")
        reason = check.string(fields["reason"], f"hold_back[{i}].reason").strip()
        if not reason or "\n" in reason or len(reason) > _REASON_MAX:
            check.fail(f"hold_back[{i}].reason", f"one line of 1 to {_REASON_MAX} "
                       "characters, without PHI (a ticket, the finding's attribute)")
        if digest in held:
            check.fail(f"hold_back[{i}].source_sha256", "given twice")
        held[digest] = reason
    return held


def _parse_review(check: _Checker, raw: object) -> ReviewPolicy:
    try:
        return ReviewPolicy.parse(raw)
    except ConfigError as exc:
        check.fail("review", str(exc))


def _parse_hours(check: _Checker, raw: object, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 24 * 90:
        check.fail(path, f"expected a number of hours above 0 and at most {24 * 90}, "
                   f"got {_tok(raw)}")
    return float(raw)


def _parse_reviewers(check: _Checker, raw: object) -> list[str]:
    if raw is None:
        return []
    names = check.strings(raw, "reviewers")
    for i, name in enumerate(names):
        check.string(name, f"reviewers[{i}]", _USER, "an Airflow user name")
    return names


def _parse_destination(check: _Checker, raw: object) -> str | None:
    if raw is None:
        return None
    text = check.string(raw, "destination", what="an absolute path or a URL")
    if not (_URL.fullmatch(text) or Path(text).is_absolute()):
        check.fail("destination", f"{_tok(text)} is neither an absolute path nor a URL: a "
                   "relative one puts de-identified data wherever a worker starts")
    return text


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last one silently, which would hide a policy line), and reading dates as text (the
    cohort takes ``YYYY-MM-DD`` text; an impossible date is refused naming its field)."""


def _timestamp_as_text(loader: _StrictLoader, node: Any) -> str:
    return str(loader.construct_scalar(node))


def _no_duplicates(loader: _StrictLoader, node: Any, deep: bool = False) -> Any:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue  # an unhashable key: the constructor below refuses it
        if duplicate:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {_tok(key)} is "
                              "given twice")
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_project(path: str | Path) -> Project:
    """Read and validate one project file (:class:`ConfigError` naming file and field)."""
    path = Path(path)
    check = _Checker(path.name)
    if path.suffix != SUFFIX:
        check.fail("", f"a project file is named <name>{SUFFIX}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        check.fail("", f"cannot read the project file ({exc.strerror})")
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no object tags
    except ConfigError as exc:
        check.fail("", str(exc))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        check.fail("", f"not valid YAML{where}")
    fields = check.mapping(raw, "", _TOP_KEYS)
    for required in ("name", "cohort"):
        if required not in fields:
            check.fail(required, "missing (required)")
    name = check.string(fields["name"], "name", _NAME, "a name of a-z, 0-9 and _")
    if name != path.stem:
        check.fail("name", f"{_tok(name)} differs from the file name: name it {name}{SUFFIX}")
    folder = path.resolve().parent
    description = fields.get("description") or ""
    if not isinstance(description, str):
        check.fail("description", f"expected text, got {_tok(description)}")
    policy = _parse_policy(check, fields.get("policy"), folder)
    try:
        config = policy.deid_config()
    except ConfigError as exc:
        check.fail("policy.config" if policy.base == "config" else "policy", str(exc))
    return Project(
        name=name,
        description=description.strip(),
        cohort=_parse_cohort(check, fields["cohort"], folder),
        cohort_params=MappingProxyType(_parse_cohort_params(check, fields.get("cohort_params"))),
        policy=policy,
        key_conn_id=check.string(fields.get("key_conn_id", DEFAULT_KEY_CONN_ID),
                                 "key_conn_id", _CONN_ID, "an Airflow connection id"),
        vault_key_conn_id=check.string(
            fields.get("vault_key_conn_id", DEFAULT_VAULT_KEY_CONN_ID), "vault_key_conn_id",
            _CONN_ID, "an Airflow connection id"),
        destination=_parse_destination(check, fields.get("destination")),
        schedule=_parse_schedule(check, fields),
        exceptions=_parse_exceptions(check, fields.get("exceptions")),
        review=_parse_review(check, fields.get("review", str(DEFAULT_REVIEW))),
        review_timeout_hours=_parse_hours(check, fields.get(
            "review_timeout_hours", DEFAULT_REVIEW_TIMEOUT_HOURS), "review_timeout_hours"),
        reviewers=tuple(_parse_reviewers(check, fields.get("reviewers"))),
        hold_back=MappingProxyType(_parse_hold_back(check, fields.get("hold_back"))),
        path=path.resolve(),
        _config=config,
    )


def load_projects(folder: str | Path) -> list[Project]:
    """Every project file (``*.yaml``) in ``folder``, by name; the first invalid one raises.

    A missing folder, or a ``*.yml`` file (which would otherwise be skipped without a
    word), is a :class:`ConfigError` too: a project must never silently vanish.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of project files (${PROJECTS_DIR_ENV})")
    misnamed = sorted(p.name for p in folder.glob("*.yml"))
    if misnamed:
        raise ConfigError(f"{misnamed[0]}: project files end in {SUFFIX}: rename it")
    return [load_project(p) for p in sorted(folder.glob(f"*{SUFFIX}"))]


def projects_dir(default: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The project folder: ``$DICOM_DEID_PROJECTS_DIR`` (absolute), else ``default``."""
    env = os.environ if environ is None else environ
    text = env.get(PROJECTS_DIR_ENV, "")
    if not text:
        return default
    if not Path(text).is_absolute():
        raise ConfigError(f"${PROJECTS_DIR_ENV} must be an absolute path, not {text!r}")
    return Path(text)


def default_destination(deployment_destination: str, name: str) -> str:
    """Where project ``name`` publishes unless its file says: a folder named after it
    under the deployment's destination (a path or a URL)."""
    return f"{deployment_destination.rstrip('/')}/{name}"


def project_name(dag_id: str) -> str:
    """The project a DAG runs: ``dicom_deid__<name>`` -> ``<name>``."""
    if not dag_id.startswith(DAG_PREFIX) or not _NAME.fullmatch(dag_id[len(DAG_PREFIX):]):
        raise ConfigError(f"DAG {dag_id!r} is not a project's ({DAG_PREFIX}<name>)")
    return dag_id[len(DAG_PREFIX):]

