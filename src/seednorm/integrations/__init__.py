"""Thin adapters for other libraries, over ``seednorm.convert`` and ``seednorm.modules``.

Import the submodule you need (each imports its library): ``seednorm.integrations.transformers`` for Hugging Face
transformers, ``seednorm.integrations.timm`` for timm, ``seednorm.integrations.torchtitan`` for torchtitan,
``seednorm.integrations.olmo_core`` for OLMo-core.
"""
