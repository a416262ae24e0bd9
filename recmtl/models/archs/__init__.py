"""One file per backbone architecture, each defining ``ARCH`` (``recmtl.models.architecture``);
``recmtl/models/registry.py`` lists them."""
