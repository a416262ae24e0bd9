"""The one table of backbone architectures: ``model.arch`` -> ``Architecture``.

To add one: a module under ``recmtl/modules/``, a file under ``recmtl/models/archs/`` that
builds it and declares ``ARCH``, its line below, its name in the config's ``Architecture``
choices, an example config under ``configs/models/`` and its test (docs/architectures.md).
"""

from __future__ import annotations

from recmtl.config import ARCHITECTURES as CONFIG_CHOICES
from recmtl.models.architecture import Architecture
from recmtl.models.archs import adatt, dtrn, home, infnet, mmoe, multitab, ple, shared_bottom, sparse_moe

ARCHITECTURES: dict[str, Architecture] = {
    "shared_bottom": shared_bottom.ARCH,
    "mmoe": mmoe.ARCH,
    "ple": ple.ARCH,
    "home": home.ARCH,
    "adatt": adatt.ARCH,
    "sparse_moe": sparse_moe.ARCH,
    "multitab": multitab.ARCH,
    "dtrn": dtrn.ARCH,
    "infnet": infnet.ARCH,
}
if list(ARCHITECTURES) != list(CONFIG_CHOICES):  # the loader checks model.arch against those
    raise ImportError(f"registry {list(ARCHITECTURES)} != config choices {list(CONFIG_CHOICES)} "
                      "(recmtl/config/schema.py Architecture)")
