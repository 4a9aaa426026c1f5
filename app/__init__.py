"""The composition root: the ``sqal`` CLI and the demo, the only package that imports every part."""
