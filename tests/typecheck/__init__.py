"""Downstream-style code checked by ``mypy --strict`` (``make typecheck``), never run.

Each module uses the public API the way a project does and pins, with
``typing.assert_type``, what the user gets back. A line that must *not* type-check carries
a ``# type: ignore[code]``: strict mode warns about unused ignores, so if the API loosens
and the line starts to pass, the check fails as surely as when an ``assert_type`` breaks.

No module here is named ``test_*``, so pytest does not collect them; importing one only
defines classes and functions.
"""
