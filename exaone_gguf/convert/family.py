"""The family registry moved to exaone_gguf.families (one module per family); these names stay importable."""

from __future__ import annotations

from exaone_gguf.families import Family, TensorMapping, TensorNames, families, family_for

__all__ = ["Family", "TensorMapping", "TensorNames", "families", "family_for"]
