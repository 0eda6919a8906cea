"""Algorithm 1 as one tf.function graph (``module``), image decoding for it (``decode``), and a
local Python API/CLI over an exported model or a run directory (``detector``, ``cli``)."""
