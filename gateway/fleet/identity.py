"""What makes a gateway the one its plan describes: its id and the hash of its effective config."""

from __future__ import annotations

import hashlib
import json

from gateway.config.loader import GatewayConfig

LOCAL_SECTIONS = frozenset({"path", "data_dir", "http", "log"})
"""Left out of the config hash: where a box keeps its data, serves its page and how it logs are the box's own
business (a replacement may differ there) and do not change what it collects or where it delivers."""


def config_hash(cfg: GatewayConfig) -> str:
    """12 hex digits of SHA-256 over the effective config (file and ``EDGEGW_*`` overrides, validated) as
    canonical JSON, without ``LOCAL_SECTIONS`` and without options left at their default: so ``1s`` and
    ``1000ms`` hash alike, and an upgrade that adds an option does not change the hash. Secrets enter only
    as "set" (pydantic masks them). The same function serves the status message and ``fleet plan``."""
    data = cfg.model_dump(mode="json", exclude=set(LOCAL_SECTIONS), exclude_defaults=True)
    for section in ("sources", "sinks"):  # a plug-in's `type` is its default: put the kind back
        for name, entry in getattr(cfg, section).items():
            data.setdefault(section, {}).setdefault(name, {})["type"] = entry.type
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
