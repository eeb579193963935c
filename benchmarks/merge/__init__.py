"""The merge benchmark runner (``crdt-sync bench merge``): see :mod:`.runner`.

Layout: ``runner`` (the parent: options, children, checks), ``workloads`` (preparing them),
``field`` and ``concurrent`` (the generated workload and the concurrent-trace schedule),
``_flat`` (the files children read), ``worker`` and ``driver`` (a Python child),
``engines/`` (one adapter per Python engine), ``node/`` (the Node child and its adapters),
``nodejs`` (installing and starting Node engines), ``report`` and ``plots`` (output).
"""
