"""Pictures of what decides a chunk length: ``tbptt report``, ``--report PATH.html`` and
``tbptt grid compare``. Plotting needs the optional extra ``tbptt-cli[report]``.

This package's ``__init__`` and ``options`` import neither numpy nor matplotlib, so that
``tbptt --help`` stays fast.
"""
