"""The ``centermask`` command (:mod:`centermask.cli.main`) and the code of the ``tools/`` scripts:
one module per command. The top layer of the package: nothing else imports it."""
