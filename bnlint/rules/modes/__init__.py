"""The train/eval mode of the models a script uses, read from its source (BN003, BN004).

The script is parsed, never imported or run. The parts, each readable alone:

* ``vocabulary``: which calls mean inference, an export, a mode switch, a training step;
* ``state``: the abstract state (the modes a model may be in, and where each was set) and
  its join;
* ``parsed``, ``project``: one file's names, and the files of the script's own project that
  its imports name, with what their classes are (modules? holding BatchNorm?);
* ``interpreter`` (with ``calls`` and ``frames``): walks the script and emits
  ``events.Use``s (inference, training steps);
* ``summaries``: what a function of another file does to the modules it is given;
* ``verify``: the rules' problems, and fixes kept only when the fixed script checks clean.

The rules themselves (``inference_in_train``, ``training_in_eval``) hold their messages and
fixes. Precision comes first: a mode bnlint cannot know stays unknown and is never reported.
"""
