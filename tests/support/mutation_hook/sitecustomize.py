"""Loaded at interpreter start when this directory is on PYTHONPATH (the soak puts it there
only for ``--mutation``): applies the mutation of tests/support/mutations.py named in the
environment to the ``syncd`` processes the soak starts."""

import os

if os.environ.get("SYNCD_TEST_MUTATION"):
    from tests.support import mutations

    mutations.apply(os.environ["SYNCD_TEST_MUTATION"])
