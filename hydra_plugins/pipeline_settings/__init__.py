"""The pipeline's declared defaults as a config Hydra composes first: ``pipeline_defaults``, the first
entry of ``conf/config.yaml``'s defaults list. Each setting's default is written once, beside its type,
range and help (``pipeline/stages/settings.py``); config files and overrides set only what differs.

Hydra imports every ``hydra_plugins`` module when it starts (its plugin discovery), before it composes
any config, in every command and in ``hydra.compose``.
"""

from hydra.core.config_store import ConfigStore

from pipeline.stages.settings import declared_defaults

ConfigStore.instance().store(name="pipeline_defaults", node=declared_defaults())
