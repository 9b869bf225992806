"""Subcommands of the ``convloc`` command line, one module per area.

A module here may define any of:
  ``register(sub)``        add top-level commands (``sub`` is the argparse subparsers object);
  ``register_train(sub)``  add model kinds under ``convloc train`` (``convloc train fcn ...``);
  ``register_data(sub)``   add dataset makers under ``convloc data`` (``convloc data make-shapes ...``).
Each parser sets ``func`` (called with the parsed args, returns an exit code).
"""
