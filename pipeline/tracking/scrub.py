"""The one scrubber: every text the pipeline writes (to MLflow, to disk, to the console) passes through here.

Values under secret-looking config keys (``api_token``, ``password``, ``*_secret``, ...) and
``user:password@`` in URIs never reach params, tags, run names, artifacts, Hydra's output folder or
a launch file; texts are cut to MLflow's length limits. Log lines pass it too (:class:`LogScrubber`);
a secret a library saves itself (the trainer's arguments in every checkpoint) is a :class:`Secret`.
Writes nothing itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

# MLflow's limits (mlflow.utils.validation): a param value holds 6000 characters, a tag value 8000
# (kept lower here: a reason or override list longer than this is never read in full), a run name 250.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
MAX_RUN_NAME_LENGTH = 250

# A key (or its last dot part) that holds a secret: api_token, hf_token, password, secret_key, ...;
# whole words between _ . - so that e.g. ``tokenizer`` is not one.
SECRET_KEY = re.compile(
    r"(^|[_.-])(token|password|passwd|secret|api[_-]?key|credentials?|auth)([_.-]|$)", re.IGNORECASE
)
# ``user:password@`` after ``://`` (also as Hydra writes it in a logged override: ``http\://user\:pw@``)
URI_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")
# ``key: value`` / ``key=value`` in free text (an override, a YAML line of a patch, a dict in an error
# message): the value is hidden when the key looks secret, whatever the value.
ASSIGNMENT = re.compile(
    r"(?P<key>[A-Za-z0-9_.+~-]+)(?P<sep>['\"]?\s*[:=]\s*['\"]?)(?P<value>[^\s'\",}\]]+(?:,[^\s'\",}\]]+)*)"
)
HIDDEN = "***"
UNSET = ("null", "None", "~", "''", '""', HIDDEN)


class LogScrubber(logging.Filter):
    """A logging filter (``hydra.job_logging`` / ``hydra_logging``): every line passes :func:`scrub`, so
    a store URI's password or a secret override that Hydra logs (a sweep's job overrides) is hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        hidden = scrub(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


# sentence-transformers writes a cut-off as "@k" (ndcg@10, recall@1); MLflow stores it as "_at_k".
STORED_CUTOFF = re.compile(r"_at_(?=\d)")


def metric_key(name: str) -> str:
    """A metric name as MLflow stores it: MLflow refuses "@", which sentence-transformers' retrieval
    metrics hold (``ir-dev_cosine_ndcg@10`` -> ``ir-dev_cosine_ndcg_at_10``). A stored name is returned
    unchanged, so any spelling a user types finds the stored metric."""
    return name.replace("@", "_at_")


def metric_name(key: str) -> str:
    """Sentence-transformers' name of a metric, from either spelling (``ir-dev_cosine_ndcg_at_10`` ->
    ``ir-dev_cosine_ndcg@10``): the inverse of :func:`metric_key`, for messages and lookups in the
    evaluators' own results."""
    return STORED_CUTOFF.sub("@", key)


def redact(value: str) -> str:
    """Strip ``user:password@`` from URIs in a string."""
    return URI_CREDENTIALS.sub(f"{HIDDEN}@", value)


def is_secret(key: str, value: Any) -> bool:
    """A value under a secret-looking key (``api_key``, ``*_token``, ...) that is set: never logged."""
    return bool(SECRET_KEY.search(key)) and value not in (None, "", False)


def uri_passwords(text: str) -> list[str]:
    """The passwords of ``user:password@`` in URIs of ``text``: known secrets wherever else they appear
    (a dirty tree's ``git.patch``, a message quoting the password alone)."""
    return [match[0][:-1].split(":", 1)[1] for match in URI_CREDENTIALS.finditer(text) if ":" in match[0]]


def secret_values(container: Any) -> list[str]:
    """Values of secret-looking keys anywhere in a plain config container (dicts and lists), and the
    passwords of URIs in its strings."""
    found: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif SECRET_KEY.search(key) and isinstance(node, (str, int, float)) and not isinstance(node, bool):
            found.append(str(node))
        elif isinstance(node, str):
            found.extend(uri_passwords(node))

    walk(container)
    return [value for value in found if len(value) >= 4]  # shorter values cannot be told apart from other text


def redacted(node: Any, key: str = "") -> Any:
    """A config container with secret-looking values replaced by ``***`` (still valid YAML when dumped)."""
    if isinstance(node, dict):
        return {k: redacted(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [redacted(v, key) for v in node]
    if is_secret(key, node):
        return HIDDEN
    return redact(node) if isinstance(node, str) else node


def hidden_values(node: Any, key: str = "") -> dict[str, Any]:
    """Dot key -> value of each leaf :func:`redacted` hides (a secret, a URI with a password): what a
    process must be given some other way than a file (the ranks of a launched job: the environment)."""
    if isinstance(node, dict):
        return {
            f"{k}{'.' + sub if sub else ''}": value
            for k, v in node.items()
            for sub, value in hidden_values(v, str(k)).items()
        }
    if isinstance(node, list):  # a secret inside a list is hidden too, but cannot be put back by key
        return {}
    return {"": node} if redacted(node, key) != node else {}


class Secret(str):
    """A secret string that works as itself in this process but is written as ``***`` wherever it is
    pickled (``torch.save`` of the trainer's arguments into every checkpoint's ``training_args.bin``)
    or shown with ``repr``; copies stay secrets, so the trainer still pushes with the real token."""

    def __reduce__(self):
        return (str, (HIDDEN,))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:
        return self

    def __repr__(self) -> str:
        return repr(HIDDEN)


def _hide_assignment(match: re.Match) -> str:
    if not SECRET_KEY.search(match["key"].lstrip("+~")) or match["value"] in UNSET:
        return match[0]
    return f"{match['key']}{match['sep']}{HIDDEN}"


def override_secrets(overrides: Iterable[str]) -> list[str]:
    """Values of Hydra overrides on secret-looking keys (``+tracking.api_token=X`` -> ``X``), each value
    of a sweep (``a,b``) too, and URI passwords: known before the config composes, so a job that fails
    early hides them."""
    found: list[str] = []
    for override in overrides:
        key, _, value = str(override).partition("=")
        if value and SECRET_KEY.search(key.lstrip("+~")):
            found += [value, *value.split(",")]
        found += uri_passwords(value)
    return [value for value in found if len(value) >= 4]


def scrub(text: str, secrets: Iterable[str] = (), limit: int | None = None) -> str:
    """``text`` with every secret value, every value under a secret-looking key (``api_token=X``,
    ``password: X``) and URI credentials replaced by ``***``, cut to ``limit``."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    text = ASSIGNMENT.sub(_hide_assignment, redact(text))
    return text[:limit] if limit else text
