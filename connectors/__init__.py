"""Calendar providers behind one small interface (see :mod:`connectors.base`)."""
